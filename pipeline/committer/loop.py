"""The committer: room chunks from Kafka into PostgreSQL, then invalidations out to Kafka.

One committer is active; any other is a hot standby. The active one holds a session-level
PostgreSQL advisory lock on the very connection it writes through, so if it dies (or its
connection does) the lock goes with it, and a standby, polling ``pg_try_advisory_lock`` every
second, takes over within seconds. The chunks topic's one partition is assigned directly, not
through a consumer group: the lock alone decides who consumes, and the read position comes from
PostgreSQL ("storing offsets outside Kafka"), so there is no rebalance to wait for and no
second source of truth. The lock key derives from the topic prefix: committers of different
prefixes do not stand by for each other.

Each batch is committed in these steps:

1. Poll up to ``commit_batch_max`` chunks (read_committed) from the offset stored in PostgreSQL.
   A chunk that does not parse goes to the dead-letter topic (flushed before step 2).
   Crash after 1: nothing was written; the next active committer polls the same chunks again.
2. In ONE transaction: lock the stream position row and hand out contiguous stream orderings,
   write every row of the batch, record the chunks as committed, the next offset to read, and
   one outbox row per chunk (its invalidation message), then COMMIT.
   Crash before the COMMIT: the transaction is rolled back; as after 1.
   If the database refuses the batch's data (a constraint, a NUL character), the batch is
   rolled back and its chunks go through steps 2–4 one at a time; the chunk refused alone is
   dead-lettered with the database's reason and its offset committed, so the partition goes on.
3. Publish the batch's outbox rows, in position order, to the invalidations topic with an
   idempotent producer, and flush.
   Crash between 2 and 3: rows are visible but not announced; the next active committer first
   publishes every unsent outbox row (same position, same bytes), then goes on.
4. Mark the outbox rows sent and COMMIT.
   Crash between 3 and 4: the messages go out again at restart; consumers drop them, as a
   message at or below their position is a duplicate.
5. Tell Kafka the consumed offset too (asynchronously), for lag monitoring only.
   Crash between 4 and 5: the Kafka-side offset lags; PostgreSQL's is the one that counts.

Tests make the process crash at a named point with ``ROOMSTREAM_CRASH_AT=<point>`` (the
process exits with ``os._exit(137)`` there): ``after_poll``, ``before_commit``,
``after_commit``, ``after_publish``, ``after_mark_sent``, and ``after_resend`` (in the restart
resend, between publishing and marking sent).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
import psycopg2
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage

from db.migrate import check_schema
from db.outbox import OutboxRow, load_offsets, mark_sent, prune_sent, unsent_outbox
from db.writer import BatchResult, write_batch
from pipeline import metrics
from pipeline.config import Settings
from pipeline.invalidations import build_invalidation, encode_invalidation
from pipeline.matrix.errors import RoomstreamError, UnknownRoomVersion
from pipeline.matrix.room_versions import room_version
from pipeline.room.chunk import Chunk

__all__ = ["CRASH_POINTS", "Committer", "PublishError", "main", "run_committer"]

log = logging.getLogger(__name__)

CRASH_ENV = "ROOMSTREAM_CRASH_AT"
CRASH_POINTS = (
    "after_poll",
    "before_commit",
    "after_commit",
    "after_publish",
    "after_mark_sent",
    "after_resend",
)
APPLICATION_NAME = "roomstream-committer"  # how operators find it in pg_stat_activity
OUTBOX_KEEP = 10_000  # sent outbox rows kept for operators to look at
IDLE_PING_S = 5.0  # how often an idle active committer checks its connection (and lock)
# What the database (or psycopg2, before sending) raises for a chunk it cannot store: data it
# refuses (a NUL character, a constraint), not a lost connection.
_UNWRITABLE = (
    psycopg2.IntegrityError,
    psycopg2.DataError,
    ValueError,
    KeyError,
    TypeError,
)


class PublishError(RoomstreamError, RuntimeError):
    """Invalidation messages could not be delivered; they stay unsent in the outbox."""


def lock_key(topic_prefix: str) -> int:
    """The advisory lock key of the committers of one topic prefix (a signed 64-bit int)."""
    digest = hashlib.sha256(f"roomstream.committer:{topic_prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _crash_from_env(point: str) -> None:
    if os.environ.get(CRASH_ENV) == point:
        log.warning("crashing at %s (%s is set)", point, CRASH_ENV)
        os._exit(137)


@dataclass
class CommitterStats:
    batches: int = 0
    chunks: int = 0
    events: int = 0
    skipped_chunks: int = 0
    dead_lettered: int = 0
    resent: int = 0
    last_position: int = 0


class Committer:
    """Runs steps 1–5 above in a loop until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        *,
        poll_timeout: float = 0.2,
        standby_interval: float = 1.0,
        crash_hook: Callable[[str], None] = _crash_from_env,
        on_active: Callable[[], None] | None = None,
        on_standby: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.poll_timeout = poll_timeout
        self.standby_interval = standby_interval
        self.crash = crash_hook
        self.on_active = on_active  # called once consuming, with the lock held
        self.on_standby = on_standby  # called when the lock is found taken
        self.chunks_topic = settings.topic("chunks")
        self.invalidations_topic = settings.topic("invalidations")
        self.dead_letter_topic = settings.topic("dead-letter")
        self.lock_key = lock_key(settings.topic_prefix)
        self.active = False
        self.stats = CommitterStats()

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Wait for the lock, then commit batches; on a lost connection go back to waiting.

        A SchemaError (unknown or outdated schema) is raised at once: the committer refuses to
        write to a database it does not understand.
        """
        while not self.stop.is_set():
            conn = None
            try:
                conn = psycopg2.connect(
                    self.settings.database_url, application_name=APPLICATION_NAME
                )
                check_schema(conn)
                conn.rollback()
                if not self._wait_for_lock(conn):
                    return
                check_schema(conn)  # it may have been migrated while we waited
                conn.commit()
                self._run_active(conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError, KafkaException) as exc:
                log.warning("committer lost its connection (%s); retrying in 1 s", exc)
                self.stop.wait(self.standby_interval)
            except PublishError as exc:
                log.warning("%s; retrying in 1 s", exc)
                self.stop.wait(self.standby_interval)
            finally:
                self.active = False
                if conn is not None:
                    conn.close()  # releases the advisory lock, if held

    def _wait_for_lock(self, conn: Any) -> bool:
        waited = False
        while not self.stop.is_set():
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
                row = cur.fetchone()
            conn.commit()
            if row is not None and row[0]:
                log.info("committer is active%s", " (took over)" if waited else "")
                return True
            if not waited:
                log.info("another committer is active; standing by")
                waited = True
                if self.on_standby is not None:
                    self.on_standby()
            self.stop.wait(self.standby_interval)
        return False

    def _run_active(self, conn: Any) -> None:
        self.active = True
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        consumer: Any = None
        try:
            self._resend_unsent(conn, producer)
            with conn.cursor() as cur:
                offsets = load_offsets(cur, self.chunks_topic)
            conn.commit()
            consumer = Consumer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "group.id": f"{self.settings.topic_prefix}.committer",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
            start = offsets.get(0, OFFSET_BEGINNING)
            consumer.assign([TopicPartition(self.chunks_topic, 0, start)])
            if self.on_active is not None:
                self.on_active()
            last_activity = time.monotonic()
            while not self.stop.is_set():
                records = _take_batch(consumer, self.settings.commit_batch_max, self.poll_timeout)
                if records:
                    self._commit_batch(conn, producer, consumer, records)
                    last_activity = time.monotonic()
                elif time.monotonic() - last_activity > IDLE_PING_S:
                    # A dead connection means the lock is gone too: find out while idle.
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                    conn.commit()
                    last_activity = time.monotonic()
        finally:
            if consumer is not None:
                consumer.close()
            producer.flush(5)

    # ------------------------------------------------------------------ one batch

    def _commit_batch(
        self, conn: Any, producer: Any, consumer: Any, records: Sequence[KafkaMessage]
    ) -> None:
        # Step 1: parse; what does not parse goes to the dead-letter topic.
        items: list[tuple[KafkaMessage, Chunk | None]] = []
        next_offsets: dict[tuple[str, int], int] = {}
        dead = 0
        for rec in records:
            err = rec.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("chunks consumer: %s", err)
                continue
            topic, partition, offset = rec.topic(), rec.partition(), rec.offset()
            if topic is None or partition is None or offset is None:
                continue  # only error records lack these, and those were skipped above
            next_offsets[(topic, partition)] = offset + 1
            chunk: Chunk | None = None
            try:
                parsed = Chunk.from_json(rec.value() or b"")
                room_version(parsed.room_version)
                chunk = parsed
            except (ValueError, KeyError, TypeError, IndexError, UnknownRoomVersion) as exc:
                self._dead_letter(producer, rec, f"chunk could not be read: {exc!r}")
                dead += 1
            items.append((rec, chunk))
        if dead:
            self._flush(producer, "dead letters")
            self.stats.dead_lettered += dead
            metrics.DEAD_LETTERED.inc(dead)
        if not next_offsets:
            return
        self.crash("after_poll")

        # Step 2: one transaction.
        chunks = [c for _, c in items if c is not None]
        started = time.perf_counter()
        try:
            with conn.cursor() as cur:
                result = write_batch(cur, chunks, next_offsets, _message_bytes)
        except _UNWRITABLE as exc:
            conn.rollback()
            log.warning(
                "batch of %d chunk(s) failed (%s); writing them one by one", len(chunks), exc
            )
            self._commit_one_by_one(conn, producer, items)
            return
        self.crash("before_commit")
        conn.commit()
        self.crash("after_commit")
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_CHUNKS.observe(len(chunks))
        self._count(result)

        # Steps 3 and 4.
        self._publish(producer, result.outbox)
        self.crash("after_publish")
        self._mark_sent(conn, result.outbox)
        self.crash("after_mark_sent")

        # Step 5: informational only.
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=True,
        )
        for (t, p), o in next_offsets.items():
            _, high = consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            if high is not None and high >= 0:
                metrics.CONSUMER_LAG.labels("committer", str(p)).set(max(0, high - o))

    def _count(self, result: BatchResult) -> None:
        events = sum(len(c.stream_orderings) for c in result.committed)
        metrics.COMMITTED_EVENTS.inc(events)
        metrics.POSITION.set(result.last_stream_ordering)
        self.stats.batches += 1
        self.stats.chunks += len(result.committed)
        self.stats.events += events
        self.stats.skipped_chunks += len(result.skipped_chunk_ids)
        if result.skipped_chunk_ids:
            log.info("skipped %d chunk(s) committed before", len(result.skipped_chunk_ids))

    def _commit_one_by_one(
        self, conn: Any, producer: Any, items: Sequence[tuple[KafkaMessage, Chunk | None]]
    ) -> None:
        """Steps 2–4 per chunk, so that one chunk the database refuses does not stop the rest.

        Invariant 7: the refused chunk goes to the dead-letter topic with the database's reason,
        and its offset is committed with the next chunk (or alone), like any other.
        """
        for rec, chunk in items:
            offsets = {(str(rec.topic()), int(rec.partition() or 0)): int(rec.offset() or 0) + 1}
            result: BatchResult | None = None
            if chunk is not None:
                try:
                    with conn.cursor() as cur:
                        result = write_batch(cur, [chunk], offsets, _message_bytes)
                except _UNWRITABLE as exc:
                    conn.rollback()
                    self._dead_letter(producer, rec, f"the database refused chunk: {exc!r}")
                    self._flush(producer, "dead letters")
                    self.stats.dead_lettered += 1
                    metrics.DEAD_LETTERED.inc()
            if result is None:
                with conn.cursor() as cur:
                    write_batch(cur, [], offsets)
            conn.commit()
            if result is not None:
                self._count(result)
                self._publish(producer, result.outbox)
                self._mark_sent(conn, result.outbox)

    def _resend_unsent(self, conn: Any, producer: Any) -> None:
        with conn.cursor() as cur:
            rows = unsent_outbox(cur)
        conn.commit()
        if not rows:
            return
        log.info(
            "re-sending %d unsent invalidation message(s), positions %d–%d",
            len(rows),
            rows[0].position,
            rows[-1].position,
        )
        self._publish(producer, rows)
        self.crash("after_resend")
        self._mark_sent(conn, rows)
        self.stats.resent += len(rows)

    def _publish(self, producer: Any, rows: Sequence[OutboxRow]) -> None:
        failures: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for row in rows:
            producer.produce(
                self.invalidations_topic,
                key=row.room_id.encode(),
                value=row.message,
                on_delivery=delivered,
            )
            producer.poll(0)
        self._flush(producer, "invalidation messages")
        if failures:
            raise PublishError(
                f"{len(failures)} invalidation message(s) to {self.invalidations_topic} failed "
                f"({failures[0]}); they stay in the outbox and are re-sent"
            )
        if rows:
            self.stats.last_position = rows[-1].position
            metrics.INVALIDATIONS_SENT.inc(len(rows))

    def _flush(self, producer: Any, what: str) -> None:
        left = producer.flush(30)
        if left:
            raise PublishError(f"{left} {what} still undelivered after 30 s")

    def _mark_sent(self, conn: Any, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        with conn.cursor() as cur:
            mark_sent(cur, [r.position for r in rows])
            prune_sent(cur, OUTBOX_KEEP)
        conn.commit()

    def _dead_letter(self, producer: Any, rec: KafkaMessage, reason: str) -> None:
        value = rec.value() or b""
        key = rec.key()
        doc: dict[str, Any] = {
            "reason": reason,
            "source": {"topic": rec.topic(), "partition": rec.partition(), "offset": rec.offset()},
            "key": key.decode("utf-8", "replace") if key is not None else None,
        }
        try:
            doc["value"] = value.decode("utf-8")
        except UnicodeDecodeError:
            doc["value_b64"] = base64.b64encode(value).decode()
        log.error("dead-lettering offset %d of %s: %s", rec.offset(), rec.topic(), reason)
        producer.produce(self.dead_letter_topic, key=key, value=orjson.dumps(doc))


def _take_batch(consumer: Any, most: int, timeout: float) -> list[KafkaMessage]:
    """Wait up to ``timeout`` for one record, then take what else is already fetched.

    A batch never waits to fill: under load records pile up while the previous batch commits,
    so batches grow by themselves, and a lone chunk is committed at once.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    rest: list[KafkaMessage] = (
        consumer.consume(num_messages=most - 1, timeout=0) if most > 1 else []
    )
    return [first, *rest]


def _message_bytes(chunk: Chunk, orderings: Any, position: int, prev_position: int) -> bytes:
    return encode_invalidation(build_invalidation(chunk, orderings, position, prev_position))


def run_committer(settings: Settings, stop: threading.Event) -> None:
    Committer(settings, stop).run()


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream committer``: run until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics.serve(settings.metrics_port)
    run_committer(settings, stop)
    return 0
