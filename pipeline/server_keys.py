"""The workers' key ring: ``<prefix>.server-keys`` folded into the keys signature checks use.

* ``KeyRing`` folds the topic's records (``topics.server_keys``): the latest record of a
  ``server_name/key_id`` wins, a tombstone forgets the key, a malformed record is skipped and
  counted. It is a ``KeyProvider`` (``pipeline.matrix.signing``), safe to call from any thread.
* ``ServerKeysReader`` reads the topic from its beginning on a thread of its own and keeps
  reading; ``sync(timeout)`` waits until every record produced before the call is folded.
* ``SyncingKeys`` is the provider a worker gives its checker: when none of the keys an event
  was signed with is known, it syncs once (bounded by ``wait_s``) before answering, so an event
  that races the record of its server's new key is not refused for it. It syncs at most once per
  server every ``retry_s``, so a server whose keys nobody publishes costs no wait per event.
* ``signature_checker(settings)`` builds all that when ``ROOMSTREAM_VERIFY_SIGNATURES`` is on,
  and nothing (checks off) when it is not.

The ring is not a room's input: which events pass depends on the keys known when they are
processed. A replay with the same keys decides the same; an event refused for want of a key
goes to the dead-letter topic and may be produced again once the key is published.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from pipeline.config import Settings
from pipeline.errors import ConfigError, MalformedMessage
from pipeline.matrix.signing import Ed25519SignatureChecker, ServerKey, SignatureChecker
from topics import server_keys
from topics.definitions import Topic

__all__ = ["KeyRing", "ServerKeysReader", "SyncingKeys", "signature_checker"]

log = logging.getLogger("roomstream.server_keys")


class KeyRing:
    """The verify keys known, by server and key ID."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[str, ServerKey]] = {}
        self._lock = threading.Lock()
        self.malformed = 0

    def __len__(self) -> int:
        with self._lock:
            return sum(len(k) for k in self._keys.values())

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Fold one record; the reason it was skipped, or None."""
        if value is None:
            server, sep, key_id = (key or b"").decode("utf-8", "replace").partition("/")
            if sep:
                with self._lock:
                    self._keys.get(server, {}).pop(key_id, None)
            return None
        try:
            record = server_keys.decode(key, value)
        except MalformedMessage as e:
            self.malformed += 1
            return e.reason
        with self._lock:
            self._keys.setdefault(record.server_name, {})[record.key_id] = record.server_key()
        return None

    def __call__(self, server_name: str, key_ids: frozenset[str], /) -> Mapping[str, ServerKey]:
        with self._lock:
            known = self._keys.get(server_name, {})
            return {k: known[k] for k in key_ids if k in known}


class ServerKeysReader:
    """Reads ``<prefix>.server-keys`` into a ``KeyRing`` on a thread, from the beginning."""

    def __init__(self, settings: Settings, ring: KeyRing, *, poll_s: float = 0.2) -> None:
        self.topic = settings.topic(Topic.SERVER_KEYS)
        self.ring = ring
        self.poll_s = poll_s
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"roomstream-server-keys-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self._requests: queue.SimpleQueue[threading.Event] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-keys", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> ServerKeysReader:
        md = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if md is None or md.error is not None or not md.partitions:
            raise ConfigError(
                f"signature checks read verify keys from {self.topic}, which does not exist; "
                "create it with `roomstream topics apply`"
            )
        self._partitions = sorted(md.partitions)
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )
        self._thread.start()
        return self

    def sync(self, timeout: float) -> bool:
        """Wait until every record produced before this call is folded; False on timeout."""
        if self.error is not None or not self._thread.is_alive():
            return False
        done = threading.Event()
        self._requests.put(done)
        return done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        positions: dict[int, int] = {}
        waiting: list[tuple[dict[int, int], threading.Event]] = []
        try:
            while not self._stop.is_set():
                while not self._requests.empty():
                    waiting.append((self._ends(), self._requests.get()))
                msg = self._consumer.poll(self.poll_s)
                if msg is not None:
                    self._take(msg, positions)
                waiting = [(ends, ev) for ends, ev in waiting if not _reached(positions, ends, ev)]
        except BaseException as e:  # the worker's checks fall back to "no key known"
            self.error = e
            log.exception(
                "reading %s failed; events signed with keys not read yet are refused", self.topic
            )
        finally:
            for _, ev in waiting:
                ev.set()
            self._consumer.close()

    def _ends(self) -> dict[int, int]:
        ends = {}
        for p in self._partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=10
            )
            ends[p] = high if high > low else -1  # -1: empty, nothing to wait for
        return ends

    def _take(self, msg: Any, positions: dict[int, int]) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                positions[msg.partition()] = max(positions.get(msg.partition(), 0), msg.offset())
                return
            raise RuntimeError(f"reading {self.topic} failed: {err}")
        problem = self.ring.apply(msg.key(), msg.value())
        if problem is not None:
            log.warning("skipped record at offset %d of %s: %s", msg.offset(), self.topic, problem)
        positions[msg.partition()] = msg.offset() + 1


def _reached(positions: Mapping[int, int], ends: Mapping[int, int], done: threading.Event) -> bool:
    if all(end < 0 or positions.get(p, 0) >= end for p, end in ends.items()):
        done.set()
        return True
    return False


class SyncingKeys:
    """A ``KeyProvider``: the ring, synced with the topic when none of an event's keys is known."""

    def __init__(
        self, ring: KeyRing, reader: ServerKeysReader, *, wait_s: float = 5.0, retry_s: float = 30.0
    ) -> None:
        self.ring = ring
        self.reader = reader
        self.wait_s = wait_s
        self.retry_s = retry_s
        self._synced_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, server_name: str, key_ids: frozenset[str], /) -> Mapping[str, ServerKey]:
        found = self.ring(server_name, key_ids)
        if found:
            return found
        now = time.monotonic()
        with self._lock:
            last = self._synced_at.get(server_name)
            if last is not None and now - last < self.retry_s:
                return found
            self._synced_at[server_name] = now
        self.reader.sync(self.wait_s)
        return self.ring(server_name, key_ids)


def signature_checker(
    settings: Settings, *, startup_timeout_s: float = 60.0
) -> tuple[SignatureChecker | None, ServerKeysReader | None]:
    """The checker a worker puts in ``ProcessorConfig.signatures``, and the reader to stop when
    the worker stops; (None, None) when signature checks are off. Blocks until the keys
    published so far are read; raises ``ConfigError`` if that takes over ``startup_timeout_s``."""
    if not settings.verify_signatures:
        return None, None
    ring = KeyRing()
    reader = ServerKeysReader(settings, ring).start()
    if not reader.sync(startup_timeout_s):
        reader.stop()
        raise ConfigError(
            f"ROOMSTREAM_VERIFY_SIGNATURES is on but {reader.topic} could not be read within "
            f"{startup_timeout_s:.0f} s; check Kafka, or turn signature checks off"
        )
    log.info("signature checks on: %d verify keys read from %s", len(ring), reader.topic)
    return Ed25519SignatureChecker(
        SyncingKeys(ring, reader, wait_s=settings.server_keys_wait_s)
    ), reader
