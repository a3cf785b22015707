"""The committer: room chunks from Kafka into PostgreSQL, then invalidations out to Kafka.

One committer is active; any other is a hot standby. The active one holds a session-level
PostgreSQL advisory lock on the very connection it writes through, so if it dies (or its
connection does) the lock goes with it, and a standby, polling ``pg_try_advisory_lock`` every
second, takes over within seconds. On taking the lock it takes the next fencing generation
(db.fence), which every commit transaction checks: a committer that lost the lock without
noticing cannot commit. The server ends a silent committer's session (pipeline.committer.
connection), so a cut-off or paused committer releases the lock within ``IDLE_SESSION_S``.
The chunks topic's one partition is assigned directly, not through a consumer group: the lock
alone decides who consumes, and the read position comes from PostgreSQL ("storing offsets
outside Kafka"). The lock key derives from the topic prefix.

Each batch is committed in these steps (docs/committer.md says what a crash between each pair
means):

1. Poll up to ``commit_batch_max`` chunks and ``commit_batch_bytes`` (read_committed) from the
   offset stored in PostgreSQL and decode them (pipeline.committer.reader). A chunk that does
   not decode goes to the dead-letter topic (flushed before step 2).
2. In ONE transaction: check the fencing generation, hand out contiguous stream orderings, write
   every row of the batch, raise the rooms' chunk high-water marks, record the next offset to
   read, and the batch's ONE invalidation message (as numbered parts when it is too large for
   one record) in the outbox, then COMMIT. A chunk committed before is skipped when its content
   is the same and reported as a divergence (and dead-lettered) when it is not. If the database
   refuses the batch's data, the batch is rolled back and its chunks go through steps 2–4 one at
   a time; the chunk refused alone is dead-lettered with the database's reason.
3. Publish the outbox rows, in (position, part) order, with an idempotent producer, and go on
   to the next batch without waiting for the broker's acknowledgement.
4. Once they are acknowledged, mark them sent: in the next batch's transaction (the wait for
   the acknowledgement comes just before its COMMIT, so it overlaps that batch's work; a failed
   delivery rolls that batch back), or in a transaction of their own when no batch follows
   within the poll timeout.
5. Tell Kafka the consumed offset too (asynchronously), for lag monitoring only.

Errors: the input's (a chunk that does not decode or that the database refuses) are
dead-lettered and the committer goes on; the system's that may pass (a lost connection, a
broker away) are retried, for at most ``give_up_s`` seconds without progress; those retrying
cannot fix (an unknown schema, a message the topic refuses, a permission) stop the process
with ``CommitterStopped``: a log line saying what to do, ``roomstream_committer_stopped_total``
and exit status 2.

Tests make the process crash at a named point with ``ROOMSTREAM_CRASH_AT=<point>`` (the
process exits with ``os._exit(137)`` there): ``after_poll``, ``before_commit``,
``after_commit``, ``after_publish``, ``after_mark_sent``, and ``after_resend`` (in the restart
resend, between publishing and marking sent).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from types import FrameType

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

from db.chunk_marks import (
    divergences_statement,
    prune_committed_statement,
    record_divergences,
)
from db.fence import Fenced, take_generation
from db.migrate import check_schema
from db.outbox import OutboxRow, load_offsets, mark_sent, prune_sent_statement, unsent_outbox
from db.writer import BatchResult, Change, Fence, Plan, Reads, build_batch, read_state, write_batch
from pipeline import health, metrics
from pipeline.committer.batch_writer import BatchWriter, Job
from pipeline.committer.connection import APPLICATION_NAME, PING_S, PgConnection, connect
from pipeline.committer.dead_letter import dead_letter_value
from pipeline.committer.errors import CommitterStopped, PublishError
from pipeline.committer.reader import Batch, ChunkReader
from pipeline.config import Settings
from pipeline.connection_log import ConnectionStates
from pipeline.errors import SchemaError
from pipeline.gc_tuning import tune_gc
from pipeline.invalidations import build_message
from pipeline.kafka_clients import consumer_config, producer_config
from topics.chunk import CommitChunk
from topics.definitions import Topic
from topics.invalidation import encode_parts

__all__ = [
    "APPLICATION_NAME",
    "CRASH_POINTS",
    "Committer",
    "CommitterStopped",
    "PublishError",
    "main",
    "run_committer",
]

log = logging.getLogger(__name__)
# PostgreSQL going and coming, told once per change rather than once per retry.
_DATABASE = ConnectionStates("PostgreSQL")

CRASH_ENV = "ROOMSTREAM_CRASH_AT"
CRASH_POINTS = (
    "after_poll",
    "before_commit",
    "after_commit",
    "after_publish",
    "after_mark_sent",
    "after_resend",
)
OUTBOX_KEEP = 100_000  # positions of sent outbox rows kept for operators to look at
PRUNE_EVERY = 100  # batches between prunings of the outbox and the committed-chunks window
GIVE_UP_S = 300.0  # retrying without progress for this long stops the process
# How long a thread holding the interpreter lock keeps the other waiting: the writer thread needs
# it for a moment after each statement, and should not wait 5 ms (Python's default) for the
# committer's thread to finish building the next batch.
SWITCH_INTERVAL_S = 0.0005
# What the database (or psycopg2, before sending) raises for a chunk it cannot store: data it
# refuses (a NUL character, a constraint), or a chunk whose fields have the wrong shape.
_UNWRITABLE = (
    psycopg2.IntegrityError,
    psycopg2.DataError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
)
# Delivery errors that resending the same bytes cannot fix.
_PERMANENT_DELIVERY = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.INVALID_MSG,
    KafkaError._INVALID_ARG,
}


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
    divergences: int = 0
    dead_lettered: int = 0
    resent: int = 0
    fenced: int = 0
    last_position: int = 0


@dataclass(eq=False)
class _InFlight:
    """Outbox rows handed to the producer, and their deliveries reported so far."""

    rows: list[OutboxRow]
    producer: Producer | None = None
    failures: list[KafkaError] = field(default_factory=list)
    reported: int = 0
    counted: bool = False

    def delivered(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        self.reported += 1
        if err is not None:
            self.failures.append(err)

    def delivered_all(self) -> bool:
        return self.reported >= len(self.rows)


def build_parts(changes: Sequence[Change], position: int, prev_position: int) -> list[bytes]:
    """The batch's invalidation message, encoded, in parts under the record size limit."""
    return encode_parts(build_message(changes, position, prev_position))


@dataclass(eq=False, repr=False)
class Committer:
    """Runs steps 1–5 above in a loop until ``stop`` is set; see the module docstring."""

    settings: Settings
    stop: threading.Event
    _: KW_ONLY
    poll_timeout: float = 0.2
    standby_interval: float = 1.0
    give_up_s: float = GIVE_UP_S
    idle_session_s: int | None = None
    crash_hook: Callable[[str], None] = _crash_from_env
    on_active: Callable[[], None] | None = None  # called once consuming, with the lock held
    on_standby: Callable[[], None] | None = None  # called when the lock is found taken
    chunks_topic: str = field(init=False)
    invalidations_topic: str = field(init=False)
    dead_letter_topic: str = field(init=False)
    lock_key: int = field(init=False)
    active: bool = field(init=False, default=False)
    fence: Fence | None = field(init=False, default=None)
    stats: CommitterStats = field(init=False, default_factory=CommitterStats)
    _progress_at: float = field(init=False, default_factory=time.monotonic)
    # The reason of the retries under way, if any.
    _retrying: str | None = field(init=False, default=None)
    _in_flight: list[_InFlight] = field(init=False, default_factory=list)  # not yet marked sent

    def __post_init__(self) -> None:
        self.chunks_topic = self.settings.topic(Topic.CHUNKS)
        self.invalidations_topic = self.settings.topic(Topic.INVALIDATIONS)
        self.dead_letter_topic = self.settings.topic(Topic.DEAD_LETTER)
        self.lock_key = lock_key(self.settings.topic_prefix)

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Wait for the lock, then commit batches; on a lost connection go back to waiting.

        Raises CommitterStopped for what retrying cannot fix (see the module docstring).
        """
        while not self.stop.is_set():
            conn: PgConnection | None = None
            try:
                conn = self._connect()
                if not self._wait_for_lock(conn):
                    return
                self._run_active(conn)
            except SchemaError as exc:
                self._stopped("schema", str(exc))
                raise
            except psycopg2.ProgrammingError as exc:
                raise self._stopped(
                    "database",
                    f"the database refused the committer's own statements ({exc}); check the "
                    "role's privileges and that `roomstream db migrate` ran",
                ) from exc
            except Fenced as exc:
                self.stats.fenced += 1
                metrics.COMMITTER_RETRIES.labels("fenced").inc()
                log.warning("%s", exc)
                self._progress_at = time.monotonic()  # another committer is making progress
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self._retry("database", f"committer lost its database connection ({exc})")
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.fatal():
                    raise self._stopped("kafka", f"Kafka client failed for good: {err}") from exc
                self._retry("kafka", f"Kafka error ({exc})")
            except PublishError as exc:
                if exc.permanent:
                    raise self._stopped("publish", str(exc)) from exc
                self._retry("publish", str(exc))
            finally:
                self.active = False
                self.fence = None
                if conn is not None:
                    conn.close()  # releases the advisory lock, if held

    def _connect(self) -> PgConnection:
        try:
            if self.idle_session_s is None:
                conn = connect(self.settings)
            else:
                conn = connect(self.settings, idle_session_s=self.idle_session_s)
        except psycopg2.OperationalError as exc:
            _DATABASE.down("database", str(exc).strip())
            health.COMMITTER.lost(f"database connection lost: {str(exc).strip()}")
            raise
        _DATABASE.up("database")
        self._retrying = None
        check_schema(conn)
        conn.rollback()
        return conn

    def _retry(self, reason: str, what: str) -> None:
        """Wait before the next attempt; stop once there was no progress for ``give_up_s``."""
        metrics.COMMITTER_RETRIES.labels(reason).inc()
        stalled = time.monotonic() - self._progress_at
        if stalled > self.give_up_s:
            raise self._stopped(
                reason,
                f"{what}; no progress for {stalled:.0f} s of retrying, giving up: fix the "
                "cause and start the committer again",
            )
        # One line when retrying starts (or its reason changes), not one per attempt.
        if reason != self._retrying:
            log.warning("%s; retrying every %.0f s", what, self.standby_interval)
            self._retrying = reason
        else:
            log.debug("%s; retrying in %.0f s", what, self.standby_interval)
        self.stop.wait(self.standby_interval)

    def _stopped(self, reason: str, message: str) -> CommitterStopped:
        metrics.COMMITTER_STOPPED.labels(reason).inc()
        log.critical("committer stops: %s", message)
        return CommitterStopped(reason, message)

    def _wait_for_lock(self, conn: PgConnection) -> bool:
        waited = False
        while not self.stop.is_set():
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
                row = cur.fetchone()
            conn.commit()
            # A standby waiting is progress too: it must not give up while the active one works.
            self._progress_at = time.monotonic()
            if row is not None and row[0]:
                check_schema(conn)  # it may have been migrated while we waited
                with conn.cursor() as cur:
                    generation = take_generation(cur, self.lock_key)
                conn.commit()
                self.fence = Fence(self.lock_key, generation)
                metrics.COMMITTER_GENERATION.set(generation)
                log.info(
                    "committer is active%s, generation %d",
                    " (took over)" if waited else "",
                    generation,
                )
                return True
            if not waited:
                log.info("another committer is active; standing by")
                waited = True
                if self.on_standby is not None:
                    self.on_standby()
            self.stop.wait(self.standby_interval)
        return False

    def _run_active(self, conn: PgConnection) -> None:
        self.active = True
        producer = Producer(producer_config(self.settings))
        consumer: Consumer | None = None
        try:
            self._resend_unsent(conn, producer)
            with conn.cursor() as cur:
                offsets = load_offsets(cur, self.chunks_topic)
            conn.commit()
            consumer = Consumer(
                consumer_config(
                    self.settings,
                    f"{self.settings.topic_prefix}.committer",
                    **{
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                        "auto.offset.reset": "earliest",
                    },
                )
            )
            start = offsets.get(0, OFFSET_BEGINNING)
            consumer.assign([TopicPartition(self.chunks_topic, 0, start)])
            reader = ChunkReader(
                consumer,
                most=self.settings.commit_batch_max,
                max_bytes=self.settings.commit_batch_bytes,
                poll_timeout=self.poll_timeout,
            )
            if self.on_active is not None:
                self.on_active()
            self._run_batches(conn, producer, reader)
        finally:
            self._in_flight = []
            if consumer is not None:
                consumer.close()
            producer.flush(5)

    # ------------------------------------------------------------------ one batch

    def _run_batches(self, conn: PgConnection, producer: Producer, reader: ChunkReader) -> None:
        """Steps 1–5, batch after batch, until ``stop`` is set: the writer thread executes one
        batch while this thread builds the next from the state read ahead in the batch's first
        statement and carried over it (pipeline.committer.batch_writer)."""
        writer = BatchWriter(conn, self.fence, self.crash_hook)
        writer.start()
        job: Job | None = None  # in the writer's hands
        job_batch: Batch | None = None
        taken: deque[Batch] = deque()  # read and decoded, not yet handed over
        reads: Reads | None = None  # what taken[0] is built from, when carried over the job
        last_activity = time.monotonic()
        try:
            while not self.stop.is_set():
                if not taken:
                    first = self._take(reader, producer, wait=job is None)
                    if first is not None:
                        taken.append(first)
                if not taken:
                    if job is not None:
                        self._finish(conn, producer, reader, job, job_batch)
                        job = None
                    elif self._in_flight:
                        self._settle(conn, producer)
                    elif time.monotonic() - last_activity > PING_S:
                        # The server ends a silent session (and with it the lock): keep
                        # talking, and find out while idle if the connection is gone.
                        with conn.cursor() as cur:
                            cur.execute("SELECT 1")
                        conn.commit()
                    else:
                        continue
                    last_activity = self._progress_at = time.monotonic()
                    continue
                batch = taken[0]
                verify = reads is not None
                if reads is None:
                    if job is not None:  # the connection is the writer's until it is done
                        if not self._finish(conn, producer, reader, job, job_batch):
                            reads = None
                        job = None
                        continue
                    with conn.cursor() as cur:
                        reads = read_state(cur, self.fence, [c for _, c in batch.chunks])
                self.crash_hook("after_poll")
                try:
                    plan = self._build(producer, batch, reads)
                except _UNWRITABLE as exc:
                    if job is not None:
                        self._finish(conn, producer, reader, job, job_batch)
                        job = None
                    conn.rollback()
                    log.warning(
                        "batch of %d chunk(s) failed (%s); writing them one by one",
                        len(batch.items),
                        exc,
                    )
                    self._commit_one_by_one(conn, producer, batch)
                    reader.committed(batch.next_offsets)
                    taken.popleft()
                    reads = None
                    continue
                if len(taken) < 2:
                    ahead = self._take(reader, producer, wait=False)
                    if ahead is not None:
                        taken.append(ahead)
                if job is not None:
                    done = self._finish(conn, producer, reader, job, job_batch)
                    job = None
                    if not done:  # the plan was built on state carried over that batch
                        reads = None
                        continue
                nxt = [c for _, c in taken[1].chunks] if len(taken) > 1 else []
                job = writer.submit(plan, verify=verify, ahead=nxt, marks_sent=bool(plan.sent))
                job_batch = taken.popleft()
                reads = None
                if nxt:
                    state = job.wait_ahead()
                    reads = plan.after(state) if state is not None else None
                last_activity = self._progress_at = time.monotonic()
            if job is not None:
                self._finish(conn, producer, reader, job, job_batch)
                job = None
            self._settle(conn, producer)
        finally:
            writer.close()

    def _take(self, reader: ChunkReader, producer: Producer, *, wait: bool) -> Batch | None:
        """Step 1: the next batch; what did not decode goes to the dead-letter topic at once."""
        batch = reader.next_batch(None if wait else 0)
        if batch is None:
            return None
        unreadable = batch.unreadable
        for rec, reason in unreadable:
            self._dead_letter(producer, rec, reason)
        if unreadable:
            self._flush(producer, "dead letters")
        return batch if batch.next_offsets else None

    def _build(self, producer: Producer, batch: Batch, reads: Reads) -> Plan:
        """Step 2's Python half. It also marks the messages published and confirmed since they
        were written (step 4), and dead-letters the divergences it records."""
        pairs = batch.chunks
        statements = []
        if self.stats.batches % PRUNE_EVERY == 0:
            statements += [prune_committed_statement(), prune_sent_statement(OUTBOX_KEEP)]
        sent = self._confirmed()
        plan = build_batch(
            [c for _, c in pairs],
            batch.next_offsets,
            reads,
            build_parts,
            sources=[rec.offset() for rec, _ in pairs],
            sent=[r.position for f in sent for r in f.rows],
            statements=statements,
        )
        plan.sent = sent
        divergences = divergences_statement(plan.result.divergences)
        if divergences is not None:
            plan.statements.append(divergences)
            self._report_divergences(producer, plan.result, pairs)
        return plan

    def _finish(
        self,
        conn: PgConnection,
        producer: Producer,
        reader: ChunkReader,
        job: Job,
        batch: Batch | None,
    ) -> bool:
        """Wait for the job's COMMIT, then publish its messages (step 3) and tell Kafka (step
        5). When the database refused its data, it is rolled back and its chunks written one
        by one: False (anything built on it is void)."""
        started = time.perf_counter()
        try:
            job.wait()
        except _UNWRITABLE as exc:
            conn.rollback()
            assert batch is not None
            log.warning(
                "batch of %d chunk(s) failed (%s); writing them one by one", len(batch.items), exc
            )
            self._settle(conn, producer)
            self._commit_one_by_one(conn, producer, batch)
            reader.committed(batch.next_offsets)
            return False
        plan = job.plan
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_CHUNKS.observe(len(plan.result.committed))
        for marked in plan.sent:
            if marked in self._in_flight:
                self._in_flight.remove(marked)
        self._count(plan.result)
        # Step 3: published now; confirmed, and marked sent, with a later batch or when idle.
        sent = self._send(producer, plan.result.outbox)
        if sent is not None:
            self._in_flight.append(sent)
        self.crash_hook("after_publish")
        if batch is not None:
            reader.committed(batch.next_offsets)
        return True

    def _confirmed(self) -> list[_InFlight]:
        """The messages in flight, once the broker acknowledged them all (PublishError if a
        delivery failed): a batch built now marks them sent."""
        for in_flight in self._in_flight:
            self._confirm_delivery(in_flight)
        return list(self._in_flight)

    def _settle(self, conn: PgConnection, producer: Producer) -> None:
        """Confirm the delivery of the messages in flight and mark them sent (step 4) in a
        transaction of their own."""
        if not self._in_flight:
            return
        confirmed = self._confirmed()
        self._mark_sent(conn, [r for f in confirmed for r in f.rows])
        self._in_flight = []
        self.crash_hook("after_mark_sent")

    def _report_divergences(
        self,
        producer: Producer,
        result: BatchResult,
        pairs: Sequence[tuple[KafkaMessage, CommitChunk]],
    ) -> None:
        """Log, count and dead-letter each chunk that diverged from the one committed (the
        batch records them in chunk_divergences).

        The dead letters are flushed before the transaction commits, so a crash cannot lose
        them: at worst they go out twice.
        """
        if not result.divergences:
            return
        by_offset = {rec.offset(): rec for rec, _ in pairs}
        for d in result.divergences:
            stored = d.stored_digest.hex()[:16] if d.stored_digest else "?"
            reason = (
                f"divergence: chunk {d.chunk.chunk_id} was committed before with other content "
                f"(digest {stored}…, now {d.new_digest.hex()[:16]}…); it was not committed "
                "again: the room processor's replay differs from its first run"
            )
            log.error("%s (offset %s of %s)", reason, d.source_offset, self.chunks_topic)
            rec = by_offset.get(d.source_offset)
            if rec is not None:
                self._dead_letter(producer, rec, reason)
        metrics.DIVERGENCES.inc(len(result.divergences))
        self.stats.divergences += len(result.divergences)
        self._flush(producer, "dead letters")

    def _count(self, result: BatchResult) -> None:
        metrics.LAST_COMMIT.set_to_current_time()
        events = sum(len(c.stream_orderings) for c in result.committed)
        metrics.COMMITTED_EVENTS.inc(events)
        metrics.POSITION.set(result.last_stream_ordering)
        self.stats.batches += 1
        self.stats.chunks += len(result.committed)
        self.stats.events += events
        skipped = len(result.skipped_chunk_ids) + len(result.unverified_chunk_ids)
        self.stats.skipped_chunks += skipped
        if skipped:
            metrics.SKIPPED_CHUNKS.inc(skipped)
            log.info("skipped %d chunk(s) committed before", skipped)
        if result.gaps:
            metrics.CHUNK_GAPS.inc(len(result.gaps))
            log.warning(
                "%d chunk(s) start past their room's committed high-water + 1, so chunks of "
                "those rooms are missing before them (chunk id, high-water): %s",
                len(result.gaps),
                ", ".join(f"{cid} after {high}" for cid, high in result.gaps[:5]),
            )
        if result.unverified_chunk_ids:
            log.warning(
                "%d chunk(s) at or below their room's high-water are older than the window of "
                "kept digests and were skipped unchecked: %s",
                len(result.unverified_chunk_ids),
                ", ".join(result.unverified_chunk_ids[:5]),
            )

    def _commit_one_by_one(self, conn: PgConnection, producer: Producer, batch: Batch) -> None:
        """Steps 2–4 per chunk, so that one chunk the database refuses does not stop the rest.

        Invariant 7: the refused chunk goes to the dead-letter topic with the database's reason,
        and its offset is committed with the next chunk (or alone), like any other.
        """
        for rec, chunk, _ in batch.items:
            offsets = {(str(rec.topic()), int(rec.partition() or 0)): int(rec.offset() or 0) + 1}
            result: BatchResult | None = None
            if chunk is not None:
                try:
                    with conn.cursor() as cur:
                        result = write_batch(
                            cur,
                            [chunk],
                            offsets,
                            build_parts,
                            fence=self.fence,
                            sources=[rec.offset()],
                        )
                        record_divergences(cur, result.divergences)
                        self._report_divergences(producer, result, [(rec, chunk)])
                except _UNWRITABLE as exc:
                    conn.rollback()
                    self._dead_letter(producer, rec, f"the database refused chunk: {exc!r}")
                    self._flush(producer, "dead letters")
            if result is None:
                with conn.cursor() as cur:
                    write_batch(cur, [], offsets, fence=self.fence)
            conn.commit()
            if result is not None:
                self._count(result)
                self._publish(producer, result.outbox)
                self._mark_sent(conn, result.outbox)

    def _resend_unsent(self, conn: PgConnection, producer: Producer) -> None:
        with conn.cursor() as cur:
            rows = unsent_outbox(cur)
        conn.commit()
        if not rows:
            return
        log.info(
            "re-sending %d unsent invalidation record(s), positions %d–%d",
            len(rows),
            rows[0].position,
            rows[-1].position,
        )
        self._publish(producer, rows)
        self.crash_hook("after_resend")
        self._mark_sent(conn, rows)
        self.stats.resent += len(rows)

    def _publish(self, producer: Producer, rows: Sequence[OutboxRow]) -> None:
        """Publish ``rows`` and wait until the broker acknowledged them."""
        self._confirm(producer, self._send(producer, rows))

    def _send(self, producer: Producer, rows: Sequence[OutboxRow]) -> _InFlight | None:
        """Hand ``rows`` to the producer, in order; ``_confirm`` waits for their delivery."""
        if not rows:
            return None
        in_flight = _InFlight(list(rows), producer=producer)
        for row in rows:
            try:
                producer.produce(
                    self.invalidations_topic,
                    key=row.room_id.encode() if row.room_id is not None else None,
                    value=row.message,
                    on_delivery=in_flight.delivered,
                )
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                permanent = isinstance(err, KafkaError) and err.code() in _PERMANENT_DELIVERY
                raise PublishError(
                    f"invalidation message at position {row.position} (part {row.part} of "
                    f"{row.parts}, {len(row.message)} B) was refused by the producer: {exc}",
                    permanent=permanent,
                ) from exc
            producer.poll(0)
        return in_flight

    def _confirm(self, producer: Producer, in_flight: _InFlight | None) -> None:
        """Wait until the rows ``_send`` handed over are delivered; PublishError if not."""
        if in_flight is None:
            return
        self._flush(producer, "invalidation messages")
        self._confirm_delivery(in_flight)

    def _confirm_delivery(self, in_flight: _InFlight) -> None:
        """PublishError unless every row of ``in_flight`` is delivered (flushing if needed)."""
        if in_flight.producer is not None and not in_flight.delivered_all():
            self._flush(in_flight.producer, "invalidation messages")
        failures = in_flight.failures
        if failures:
            permanent = any(f.code() in _PERMANENT_DELIVERY or f.fatal() for f in failures)
            raise PublishError(
                f"{len(failures)} invalidation record(s) to {self.invalidations_topic} failed "
                f"({failures[0]})"
                + (
                    ": resending cannot succeed; check the topic's settings "
                    "(`roomstream topics apply`) and the client's permissions"
                    if permanent
                    else "; they stay in the outbox and are re-sent"
                ),
                permanent=permanent,
            )
        if not in_flight.counted:
            in_flight.counted = True
            self.stats.last_position = in_flight.rows[-1].position
            metrics.INVALIDATIONS_SENT.inc(len(in_flight.rows))

    def _flush(self, producer: Producer, what: str) -> None:
        left = producer.flush(30)
        if left:
            raise PublishError(f"{left} {what} still undelivered after 30 s")

    def _mark_sent(self, conn: PgConnection, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        with conn.cursor() as cur:
            # Losing this mark (a database crash before its WAL is flushed) only means the rows
            # are sent again, and consumers drop what they have seen: the commit need not
            # wait for the flush.
            cur.execute("SET LOCAL synchronous_commit TO OFF")
            mark_sent(cur, [r.position for r in rows])
        conn.commit()

    def _dead_letter(self, producer: Producer, rec: KafkaMessage, reason: str) -> None:
        log.error("dead-lettering offset %d of %s: %s", rec.offset(), rec.topic(), reason)
        producer.produce(
            self.dead_letter_topic, key=rec.key(), value=dead_letter_value(rec, reason)
        )
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERED.inc()


def run_committer(settings: Settings, stop: threading.Event) -> None:
    committer = Committer(
        settings, stop, on_active=health.COMMITTER.active, on_standby=health.COMMITTER.standby
    )
    try:
        committer.run()
    finally:
        st = committer.stats
        log.info(
            "committed %d event(s) of %d chunk(s) in %d batch(es); %d dead-lettered, "
            "%d skipped, %d divergence(s)",
            st.events,
            st.chunks,
            st.batches,
            st.dead_lettered,
            st.skipped_chunks,
            st.divergences,
        )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream committer``: run until SIGTERM or SIGINT; 2 when it had to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health.serve(settings.metrics_port, settings.metrics_addr, health.COMMITTER)
    tune_gc()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        run_committer(settings, stop)
    except (CommitterStopped, SchemaError) as exc:
        print(f"roomstream committer: {exc}", flush=True)
        return 2
    return 0
