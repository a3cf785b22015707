"""Connection state changes are logged once each, whatever the clients retry."""

from __future__ import annotations

import json
import logging
import time

import pytest

from pipeline import connection_log
from pipeline.connection_log import ConnectionStates, LibrdkafkaLog, quiet_aiokafka

# What librdkafka's log_cb hands over during an outage, as confluent-kafka passes it on.
RD_FAILS = [
    "127.0.0.1:29100/1: Disconnected: connection closed by peer: receive 0 after POLLIN "
    "(after 4051ms in state UP)",
    "GroupCoordinator: 127.0.0.1:29100: Disconnected: connection reset by peer (after 3896ms "
    "in state UP)",
    *[
        "GroupCoordinator: 127.0.0.1:29100: Connect to ipv4#127.0.0.1:29100 failed: Connection "
        "refused (after 0ms in state CONNECT)"
    ]
    * 40,
    "127.0.0.1:29100/1: Connect to ipv4#127.0.0.1:29100 failed: Connection refused (after 0ms "
    "in state CONNECT, 1 identical error(s) suppressed)",
]


def _stats(state: str) -> str:
    return json.dumps(
        {
            "brokers": {
                "127.0.0.1:29100/1": {"nodename": "127.0.0.1:29100", "nodeid": 1, "state": state},
                "127.0.0.1:29100/bootstrap": {
                    "nodename": "127.0.0.1:29100",
                    "nodeid": -1,
                    "state": "INIT",
                },
            }
        }
    )


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "roomstream.connections"]


def test_a_librdkafka_outage_logs_connected_lost_and_reconnected_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    rd = LibrdkafkaLog(ConnectionStates("Kafka broker"))
    rd.stats(_stats("UP"))
    for line in RD_FAILS:
        rd.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-2", line)
    rd.log(logging.ERROR, "%s [%s] %s", "ERROR", "rdkafka#consumer-2", "1/1 brokers are down")
    rd.stats(_stats("DOWN"))
    rd.stats(_stats("UP"))
    rd.stats(_stats("UP"))
    lines = _lines(caplog)
    assert lines[0] == "connected to Kafka broker 127.0.0.1:29100"
    assert lines[1] == (
        "lost Kafka broker 127.0.0.1:29100: Disconnected: connection closed by peer: "
        "receive 0 after POLLIN"
    )
    assert lines[2].startswith("reconnected to Kafka broker 127.0.0.1:29100 after ")
    assert lines[2].endswith(f"({len(RD_FAILS)} failed attempts)")
    assert len(lines) == 3
    assert not [r for r in caplog.records if r.name == "roomstream.kafka"]


def test_librdkafka_lines_other_than_failures_pass_through_at_their_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    LibrdkafkaLog(ConnectionStates("Kafka broker")).log(
        logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1", "Coordinator load"
    )
    [record] = [r for r in caplog.records if r.name == "roomstream.kafka"]
    assert record.levelno == logging.WARNING and "GETPID" in record.getMessage()


def test_aiokafka_retries_collapse_and_a_settled_attempt_is_a_reconnection(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_log, "_SETTLE_S", 0.05)
    caplog.set_level(logging.INFO)
    states = quiet_aiokafka(ConnectionStates("Kafka"))
    client = logging.getLogger("aiokafka")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    for _ in range(30):
        client.debug("Initiating connection to node %s at %s:%s", 2, "127.0.0.1", 29102)
        client.error("Unable connect to node with id %s: %s", 2, "Connect call failed")
        fetcher.error("Failed fetch messages from %s: %s", 2, "NodeNotReadyError")
    time.sleep(0.2)  # every attempt failed: nothing settles
    assert states.is_down("node 2")
    client.debug("Initiating connection to node %s at %s:%s", 2, "127.0.0.1", 29102)
    time.sleep(0.3)
    lines = _lines(caplog)
    assert lines[0] == "lost Kafka node 2: Connect call failed"
    assert lines[1].startswith("reconnected to Kafka node 2 after ")
    assert lines[1].endswith("(60 failed attempts)")
    assert len(lines) == 2
    assert not [r for r in caplog.records if r.name.startswith("aiokafka")]
    # Only the client's own logger takes debug records; a connection's stay as they were.
    assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
