"""A room's processing state rebuilt from PostgreSQL and the chunks in flight (invariant 8).

The worker's stored room state (the changelogged ``rooms`` table) is a cache. What a room's
processor has decided is in PostgreSQL (committed) or on ``<prefix>.chunks`` past the
committer's offset (in flight: sent, not committed yet). Before a room's first input after
partitions were assigned is processed, its stored event sequence number is compared with the
highest of both (``RoomSource.high_water``); a state behind it was lost or is stale (a changelog
deleted, truncated or overwritten, a local store restored from an old copy, or a crash between
sending a room's chunks and storing its state) and is rebuilt (``RoomSource.rebuild``): the
room's rows are read in one snapshot (``db.read.load_room_rows``), its chunks in flight past the
snapshot's committer offset are applied over them as the committer will apply them
(``pipeline.room.rebuild.fold_chunks``), and the processor is built from the result
(``RoomProcessor.from_database_rows``).

The chunks in flight are read once per assignment of partitions (``InFlight``), in a thread of
their own while faust restores the tables: from the committer's offset to the end of the topic,
keeping the chunks of the rooms this worker owns.
Nothing else sends chunks of those rooms until this worker does, and it checks a room before it
sends any, so that one read serves every room's check. It holds those chunks in memory until the
next assignment: as much as the committer lags behind, for this worker's share of the rooms.

Reading the high-water is a safety net, as it was before rebuilds: when PostgreSQL or Kafka
cannot be read it is retried a few times, then the room goes unchecked with a warning. A rebuild
once a room is known to be behind must not be skipped (its stored state would decide the room's
next events wrongly): it is retried, then the worker stops (``WorkerStopped``, exit 3) with its
inputs unacked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import psycopg2
from confluent_kafka import Consumer, KafkaException, TopicPartition

from db.read import load_room_rows
from pipeline import metrics, pg
from pipeline.config import Settings
from pipeline.kafka_clients import consumer_config
from pipeline.room.chunk import Chunk
from pipeline.room.processor import RoomProcessor
from pipeline.room.rebuild import RoomRows, fold_chunks
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.high_water import ATTEMPTS, CONNECT_TIMEOUT_S, HighWaters, thread_reads
from topics import chunk as chunk_codec
from topics.definitions import Topic

__all__ = ["ATTEMPTS", "InFlight", "Rebuilt", "RoomSource", "StoredRooms"]

log = logging.getLogger("roomstream.worker")

READ_TIMEOUT_S = 60.0
# What a rebuild retries: the database or the broker away for a moment.
_PASSING = (psycopg2.Error, KafkaException, OSError, TimeoutError)

Build = Callable[[RoomRows], RoomProcessor]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rebuilt:
    proc: RoomProcessor
    committed: int  # the room's committed high-water in the snapshot read
    chunks_folded: int  # chunks in flight applied over the rows


class RoomSource(Protocol):
    def high_water(self, room_id: str) -> int | None:
        """The last event sequence number of the room's chunks, committed or in flight; 0 when
        there are none; None when it cannot be read (the room goes unchecked)."""
        ...

    def rebuild(self, room_id: str, build: Build) -> Rebuilt:
        """The room as PostgreSQL and the chunks in flight hold it, built by ``build`` from its
        rows; raises ``WorkerStopped`` when they cannot be read."""
        ...


@dataclass(slots=True)
class _Scan:
    start: int  # the committer's offset when the chunks were read
    by_room: dict[str, list[tuple[int, Chunk]]] = field(default_factory=dict)


class InFlight:
    """The chunks of this worker's rooms on ``<prefix>.chunks`` past the committer's offset,
    read once per assignment (``reset``): ahead of time in a thread of their own (``prefetch``,
    while faust restores the tables), or when first asked for."""

    def __init__(
        self,
        read_offset: Callable[[], int | None],
        read_chunks: Callable[[int | None], list[tuple[int, bytes | None, bytes | None]]],
    ) -> None:
        self.read_offset = read_offset
        self.read_chunks = read_chunks
        self._state = threading.Lock()  # held briefly: the loop takes it on an assignment
        self._reading = threading.Lock()  # held while the topic is read
        self._generation = 0
        self._mine: Callable[[str], bool] = lambda room_id: True
        self._scan: _Scan | None = None

    def reset(self, mine: Callable[[str], bool]) -> None:
        """Partitions were assigned: the rooms of ``mine`` are this worker's; read again."""
        with self._state:
            self._generation += 1
            self._mine = mine
            self._scan = None

    def prefetch(self) -> None:
        """Read the chunks in a thread of their own, so the first room's check need not wait;
        a failure is left for that check to meet again (and retry)."""
        threading.Thread(target=self._prefetch, name="in-flight-chunks", daemon=True).start()

    def _prefetch(self) -> None:
        try:
            self._read()
        except Exception as e:
            log.info(
                "reading the chunks in flight ahead of time failed (%s); retried when needed", e
            )

    def _read(self) -> _Scan:
        with self._reading:
            with self._state:
                if self._scan is not None:
                    return self._scan
                generation, mine = self._generation, self._mine
            start = self.read_offset()
            scan = _Scan(start if start is not None else 0)
            for offset, key, value in self.read_chunks(start):
                room_id = key.decode("utf-8", "replace") if key is not None else ""
                if value is None or not mine(room_id):
                    continue
                try:
                    chunk = chunk_codec.decode(value)
                except Exception:  # the committer dead-letters it; it changes nothing
                    continue
                scan.by_room.setdefault(chunk.room_id, []).append((offset, chunk))
            with self._state:
                if self._generation == generation:
                    self._scan = scan
            return scan

    def ensure(self) -> None:
        """Read the chunks now if they were not read since the last assignment."""
        self._read()

    def high_water(self, room_id: str) -> int:
        """The last event sequence number of the room's chunks in flight (0: none)."""
        chunks = self._read().by_room.get(room_id, ())
        return max((c.seq[1] for _, c in chunks), default=0)

    def chunks(self, room_id: str, from_offset: int | None) -> list[Chunk]:
        """The room's chunks at or past ``from_offset`` (the committer's offset in a later
        snapshot: those before it are in the rows already), in topic order."""
        scan = self._read()
        if from_offset is not None and from_offset < scan.start:
            raise RuntimeError(
                f"the committer's offset went back from {scan.start} to {from_offset}"
            )
        floor = from_offset if from_offset is not None else -1
        return [c for off, c in scan.by_room.get(room_id, ()) if off >= floor]


class StoredRooms:
    """``RoomSource`` over PostgreSQL (one connection per processing thread) and Kafka."""

    def __init__(
        self,
        settings: Settings,
        high_waters: HighWaters,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.chunks_topic = settings.topic(Topic.CHUNKS)
        self.committed = high_waters
        self.reads = thread_reads(settings, sleep, autocommit=False)
        self.in_flight = InFlight(self._committer_offset, self._read_chunks)

    # ------------------------------------------------------------------ checking

    def high_water(self, room_id: str) -> int | None:
        committed = self.committed(room_id)
        if committed is None:
            return None
        try:
            flying = self._attempts(
                f"reading the chunks in flight on {self.chunks_topic}",
                lambda: self.in_flight.high_water(room_id),
            )
        except _Failed as e:
            log.warning(
                "%s; room %s's stored state is checked against what PostgreSQL committed only",
                e,
                room_id,
            )
            return committed
        return max(committed, flying)

    # ------------------------------------------------------------------ rebuilding

    def rebuild(self, room_id: str, build: Build) -> Rebuilt:
        try:
            return self._attempts(
                f"rebuilding room {room_id} from PostgreSQL", lambda: self._rebuild(room_id, build)
            )
        except _Failed as e:
            raise WorkerStopped(
                "rebuild",
                f"{e}. Its stored state is behind what was committed, so processing it would "
                "decide its events wrongly: the worker stops with its inputs unacked, to rebuild "
                "the room once it is restarted (check that PostgreSQL and Kafka are reachable)",
            ) from e.__cause__

    def _rebuild(self, room_id: str, build: Build) -> Rebuilt:
        self.in_flight.ensure()
        conn = self.reads.conn()
        try:
            rows, offset = load_room_rows(conn, room_id, self.chunks_topic)
            folded = fold_chunks(rows, self.in_flight.chunks(room_id, offset))
            proc = build(folded)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return Rebuilt(proc, rows.high_water, folded.chunks_folded)

    # ------------------------------------------------------------------ I/O

    def _attempts(self, what: str, attempt: Callable[[], T]) -> T:
        try:
            return self.reads.read(
                attempt, lambda _e, _n: metrics.WORKER_RETRIES.labels("rebuild").inc(), _PASSING
            )
        except _PASSING as e:
            raise _Failed(
                f"{what} failed {ATTEMPTS} times, last with {type(e).__name__}: {str(e).strip()}"
            ) from e

    def _committer_offset(self) -> int | None:
        # Once per assignment, maybe from a thread of its own: a connection of its own.
        connection = pg.connect(self.settings, connect_timeout=CONNECT_TIMEOUT_S)
        with closing(connection) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT next_offset FROM committer_offsets WHERE topic = %s AND partition = 0",
                (self.chunks_topic,),
            )
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def _read_chunks(self, start: int | None) -> list[tuple[int, bytes | None, bytes | None]]:
        """(offset, key, value) of the chunks from ``start`` (None: the beginning) to the end."""
        consumer = Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.topic_prefix}.rebuild",
                **{"enable.auto.commit": False, "enable.auto.offset.store": False},
            )
        )
        out: list[tuple[int, bytes | None, bytes | None]] = []
        try:
            tp = TopicPartition(self.chunks_topic, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            begin = low if start is None else start
            if begin < low:
                log.warning(
                    "%s holds offsets from %d, but the committer has read up to %d only: "
                    "chunks in between were deleted by the topic's retention before they "
                    "were committed",
                    self.chunks_topic,
                    low,
                    begin,
                )
                begin = low
            if begin >= high:
                return out
            consumer.assign([TopicPartition(self.chunks_topic, 0, begin)])
            deadline = time.monotonic() + READ_TIMEOUT_S
            last = begin - 1
            while last < high - 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"reading {self.chunks_topic} from {begin} to {high} took over "
                        f"{READ_TIMEOUT_S:.0f} s (at {last + 1})"
                    )
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                offset = msg.offset()
                if offset is None:
                    continue
                last = offset
                if offset < high:
                    out.append((offset, msg.key(), msg.value()))
        finally:
            consumer.close()
        return out


class _Failed(Exception):
    """An operation failed ``ATTEMPTS`` times; the message says which and how."""
