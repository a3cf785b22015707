"""One log line per connection state change: connected, lost, reconnected after N s.

Both Kafka client libraries log every failed attempt while a broker is away (librdkafka and
aiokafka retry every 50–100 ms), which buried everything else in a broker outage. Here each
peer has a state, and only its changes are logged:

    connected to Kafka broker 127.0.0.1:9092
    lost Kafka broker 127.0.0.1:9092: Connection refused
    reconnected to Kafka broker 127.0.0.1:9092 after 6.1 s (57 failed attempts)

``ConnectionStates`` is the state machine, usable for any connection (the committer's
PostgreSQL connection too: ``down(peer, reason)`` on every failure, ``up(peer)`` on success).
``LibrdkafkaLog`` plugs it into confluent-kafka (``logger`` and ``stats_cb``, set by
``pipeline.kafka_clients.confluent_config``); ``quiet_aiokafka`` into aiokafka's loggers.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

__all__ = ["ConnectionStates", "LibrdkafkaLog", "quiet_aiokafka"]

log = logging.getLogger("roomstream.connections")


class ConnectionStates:
    """Peers and whether each is connected; logs a line when that changes, never per retry."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what  # "Kafka broker", "PostgreSQL", ...
        self.logger = logger
        self._lock = threading.Lock()
        self._up: dict[str, bool] = {}
        self._since: dict[str, float] = {}  # when a peer went down
        self._failures: dict[str, int] = {}

    def up(self, peer: str) -> None:
        with self._lock:
            before = self._up.get(peer)
            self._up[peer] = True
            if before is None:
                self.logger.info("connected to %s %s", self.what, peer)
            elif before is False:
                down_s = time.monotonic() - self._since.pop(peer, time.monotonic())
                failures = self._failures.pop(peer, 0)
                self.logger.warning(
                    "reconnected to %s %s after %.1f s (%d failed attempt%s)",
                    self.what,
                    peer,
                    down_s,
                    failures,
                    "" if failures == 1 else "s",
                )

    def down(self, peer: str, reason: str) -> bool:
        """Record a failure; True when it is news (the peer was up or never seen)."""
        with self._lock:
            self._failures[peer] = self._failures.get(peer, 0) + 1
            if self._up.get(peer) is False:
                return False
            self._up[peer] = False
            self._since[peer] = time.monotonic()
        self.logger.warning("lost %s %s: %s", self.what, peer, reason)
        return True

    def is_down(self, peer: str) -> bool:
        with self._lock:
            return self._up.get(peer) is False

    def any_down(self) -> bool:
        with self._lock:
            return any(v is False for v in self._up.values())


# librdkafka's connection failures: "127.0.0.1:9092/1: Connect to ipv4#... failed: Connection
# refused (after 0ms in state CONNECT)", "GroupCoordinator: 127.0.0.1:9092: Disconnected ...".
_RD_PEER = re.compile(r"(?:^|\s)(\[?[\w.:-]+\]?:\d+)(?:/\w+)?:\s+(.*)$")
_RD_DETAIL = re.compile(r"\s*\((?:after|\d+ identical).*\)\s*$")


class LibrdkafkaLog:
    """confluent-kafka's ``logger`` (librdkafka's log lines) and ``stats_cb`` (broker states).

    A ``FAIL`` line marks its broker down (once); the statistics, every second, mark a broker
    up when librdkafka reports it ``UP``. Every other line goes to the ``roomstream.kafka``
    logger at its level.
    """

    STATS_INTERVAL_MS = 1000

    def __init__(self, states: ConnectionStates | None = None) -> None:
        self.states = states or ConnectionStates("Kafka broker")
        self.passthrough = logging.getLogger("roomstream.kafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility, name, message = [*args, "", "", ""][:3] if args else ("", "", fmt)
        if facility == "FAIL":
            found = _RD_PEER.search(str(message))
            if found:
                peer, reason = found.group(1), _RD_DETAIL.sub("", found.group(2))
                self.states.down(peer, reason)
                return
        if facility in ("FAIL", "ERROR") and self.states.any_down():
            return  # "all brokers are down" and its kind: the lost lines said so
        self.passthrough.log(level, "%s [%s] %s", facility, name, message)

    def stats(self, raw: str) -> None:
        try:
            brokers = json.loads(raw).get("brokers", {})
        except ValueError:
            return
        for b in brokers.values():
            if int(b.get("nodeid", -1)) < 0:
                continue  # bootstrap and coordinator entries duplicate a real broker
            if b.get("state") == "UP":
                self.states.up(str(b.get("nodename", "")))

    def config(self) -> dict[str, Any]:
        """The librdkafka settings that route its logs and statistics here."""
        return {
            "logger": self,
            "stats_cb": self.stats,
            "statistics.interval.ms": self.STATS_INTERVAL_MS,
        }


# aiokafka's per-attempt lines, and the node each names.
_AIO_FAILURES = {
    "Unable connect to node with id %s: %s": 0,
    "Failed fetch messages from %s: %s": 0,
    'Unable connect to "%s:%s": %s': None,
}
# Lines that only repeat, per attempt, that a broker is away (dropped while one is known down).
_AIO_SYMPTOMS = (
    "Got error produce response: %s",
    "Group Coordinator Request failed: %s",
    "Heartbeat send request failed: %s. Will retry.",
    "Error sending %s to node %s [%s] -- marking coordinator dead",
)
_AIO_CONNECTING = "Initiating connection to node %s at %s:%s"
_SETTLE_S = 3.0  # a connection attempt not followed by a failure this long has worked


def _not_connected(args: tuple[object, ...]) -> bool:
    # NodeNotReadyError: the request waited for a connection that the failure lines of the
    # connection attempts report (once, as a state change).
    return any(type(arg).__name__ == "NodeNotReadyError" for arg in args)


class _AiokafkaFilter(logging.Filter):
    def __init__(self, states: ConnectionStates) -> None:
        super().__init__()
        self.states = states
        self._attempt: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        msg, args = record.msg, record.args if isinstance(record.args, tuple) else ()
        if msg in _AIO_FAILURES:
            index = _AIO_FAILURES[msg]
            peer = f"node {args[0]}" if index == 0 else f"{args[0]}:{args[1]}"
            self._bump(peer)
            self.states.down(peer, str(args[-1]))
            return False
        if msg in _AIO_SYMPTOMS and (self.states.any_down() or _not_connected(args)):
            return False
        if msg == _AIO_CONNECTING and args:
            self._settle(f"node {args[0]}")
        return record.levelno > logging.DEBUG

    def _bump(self, peer: str) -> int:
        with self._lock:
            self._attempt[peer] = self._attempt.get(peer, 0) + 1
            return self._attempt[peer]

    def _settle(self, peer: str) -> None:
        """Mark ``peer`` up unless a failure follows this attempt within ``_SETTLE_S``."""
        with self._lock:
            attempt = self._attempt.get(peer, 0)

        def check() -> None:
            with self._lock:
                failed = self._attempt.get(peer, 0) != attempt
            if not failed:
                self.states.up(peer)

        timer = threading.Timer(_SETTLE_S, check)
        timer.daemon = True
        timer.start()


def quiet_aiokafka(states: ConnectionStates | None = None) -> ConnectionStates:
    """Collapse aiokafka's per-attempt connection lines into state changes (call once)."""
    states = states or ConnectionStates("Kafka")
    flt = _AiokafkaFilter(states)
    # aiokafka's client logs as "aiokafka". Its debug line announcing each connection attempt
    # is how a reconnection shows, so that logger alone takes debug records (the filter reads
    # and drops them); its sub-loggers keep the level they had (one debug line per request).
    level = logging.getLogger("aiokafka").getEffectiveLevel()
    for name, logger in list(logging.root.manager.loggerDict.items()):
        pinned = isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
        if name.startswith("aiokafka.") and isinstance(logger, logging.Logger) and not pinned:
            logger.setLevel(level)
    for name in ("aiokafka.conn", "aiokafka.consumer", "aiokafka.producer", "aiokafka.cluster"):
        sub = logging.getLogger(name)
        if sub.level == logging.NOTSET:
            sub.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG)
    for name in (
        "aiokafka",
        "aiokafka.consumer.fetcher",
        "aiokafka.consumer.group_coordinator",
        "aiokafka.producer.sender",
    ):
        logging.getLogger(name).addFilter(flt)
    return states
