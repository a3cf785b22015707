"""A room job in a processing thread: the pure room processor over the job's inputs, its outputs
serialised, and the room's state to store when the job asks for it.

All the inputs of a job go to the processor as one batch: one chunk (more only when over the
chunk size budget), one send. Only the inputs' own data reach the processor: the PDU, its
``received_ts`` (the producer's header, else the record's timestamp) and where it was read.
Never the time of processing, so a replay after a crash decides what the first run decided.

A room's first job after partitions were assigned checks its state against what PostgreSQL and
the chunks in flight hold, before any input: a state behind them is rebuilt from them
(``rebuild``) and stored whole by that job, and the parked events of the state it replaces are
taken over.

A room whose event index holds more than ``ProcessorConfig.known_limit`` entries after a job is
told its committed chunk high-water (one read of PostgreSQL), and drops the oldest committed
entries (``RoomProcessor.release_committed``) before it is stored: its memory and its stored
state stay bounded however long it lives.

An exception here is not the input's fault (the processor turns every fault of an input into a
dead letter with a reason): it is a bug or a broken environment, so it stops the worker
(``faults.WorkerStopped``) with its inputs unacked, rather than dead-lettering valid events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import metrics
from pipeline.room import storage
from pipeline.room.batch import BatchResult, ProcessorConfig
from pipeline.room.parking import ParkingBudget
from pipeline.room.processor import Incoming, RoomProcessor
from pipeline.worker import dead_letters
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.high_water import HighWaters
from pipeline.worker.rebuild import RoomSource
from pipeline.worker.scheduling import Input, Job
from topics import chunk as chunk_codec
from topics import missing_events

__all__ = ["Processed", "Processing", "Work"]

log = logging.getLogger("roomstream.worker")

# Metric children looked up once: labels() costs a lookup under a lock per call.
_ACCEPTED = metrics.EVENTS.labels("accepted")
_REJECTED = metrics.EVENTS.labels("rejected")
_SOFT_FAILED = metrics.EVENTS.labels("soft_failed")
_DUPLICATE = metrics.EVENTS.labels("duplicate")


@dataclass(slots=True)
class Work:
    """A job with the room's processor, or the stored state to rebuild it from."""

    job: Job
    proc: RoomProcessor | None
    stored: bytes | None
    segments: dict[bytes, bytes | None] = field(default_factory=dict)
    # The room's first job since partitions were assigned: check its state against PostgreSQL
    # and the chunks in flight before its first input.
    check: bool = False


@dataclass(slots=True)
class Processed:
    proc: RoomProcessor
    writes: list[tuple[bytes, bytes]] | None  # the room's state as table writes, if asked
    outputs: list[tuple[str, bytes]]  # (topic, value) in the order a replay would emit them
    checked: bool  # the room's state was checked against PostgreSQL
    rebuilt: bool = False  # and rebuilt from it


@dataclass(eq=False, repr=False, kw_only=True)
class Processing:
    """``work -> processed``, run in a processing thread."""

    config: ProcessorConfig
    budget: ParkingBudget
    pdus_topic: str
    chunks_topic: str
    dead_letter_topic: str
    missing_topic: str
    rooms: RoomSource | None = None
    committed: HighWaters | None = None

    def __call__(self, work: Work) -> Processed:
        room_id = work.job.room_id
        try:
            return self._process(work)
        except WorkerStopped:
            raise
        except Exception as e:
            first = work.job.inputs[0] if work.job.inputs else None
            where = (
                f" (inputs from partition {first.partition} offset {first.offset} on)"
                if first is not None
                else ""
            )
            raise WorkerStopped(
                "processing",
                f"processing room {room_id}{where} raised {type(e).__name__}: {e}. This is a "
                "bug, not a fault of the input: nothing was dead-lettered, the inputs stay "
                "unacked and are processed again after a restart; report it with this line",
            ) from e

    def _process(self, work: Work) -> Processed:
        job = work.job
        proc = work.proc
        check = work.check
        if proc is None:
            proc, lost = self._load(work)
            check = check or lost
        outputs: list[tuple[str, bytes]] = []
        checked = rebuilt = False
        if check and job.inputs and self.rooms is not None:
            proc, rebuilt = self._check(proc, job.room_id, outputs)
            checked = True
        if job.inputs:
            self._batch(proc, job.inputs, outputs)
        self._bound(proc)
        if rebuilt:
            # Whole: the stored record's segment marks are the replaced state's.
            writes: list[tuple[bytes, bytes]] | None = storage.save(proc, None)
        else:
            writes = storage.save(proc, work.stored) if job.store else None
        return Processed(proc, writes, outputs, checked, rebuilt)

    def _bound(self, proc: RoomProcessor) -> None:
        """Drop the oldest committed entries of a room's event index over its bound; a mark
        that cannot be read leaves them (they are dropped after a later job)."""
        if self.committed is None or not proc.over_known_limit:
            return
        mark = self.committed(proc.room_id)
        if mark is not None:
            metrics.DROPPED_EVENTS.inc(proc.release_committed(mark))

    def _load(self, work: Work) -> tuple[RoomProcessor, bool]:
        """The room's processor from its stored state (a new one when none is stored), and
        whether a stored state was found broken (a segment missing: the changelog truncated),
        so a new processor stands in and must be checked."""
        room_id = work.job.room_id
        if work.stored is None:
            return RoomProcessor(room_id, config=self.config, budget=self.budget), False
        try:
            return storage.load(
                work.stored, work.segments.get, config=self.config, budget=self.budget
            ), False
        except LookupError as e:
            if self.rooms is None:
                raise
            log.warning("room %s: %s; it is rebuilt from PostgreSQL", room_id, e)
            return RoomProcessor(room_id, config=self.config, budget=self.budget), True

    def _check(
        self, proc: RoomProcessor, room_id: str, outputs: list[tuple[str, bytes]]
    ) -> tuple[RoomProcessor, bool]:
        """The room's processor: ``proc``, or rebuilt when ``proc`` is behind what PostgreSQL
        and the chunks in flight hold (its outputs, from the parked events it took over, added
        to ``outputs``); and whether it was rebuilt."""
        assert self.rooms is not None
        high = self.rooms.high_water(room_id)
        if high is None or high <= proc.event_seq:
            return proc, False
        metrics.STALE_ROOMS.inc()
        started = time.perf_counter()
        config, budget = self.config, self.budget
        rebuilt = self.rooms.rebuild(
            room_id,
            lambda rows: RoomProcessor.from_database_rows(rows, config=config, budget=budget),
        )
        fresh = rebuilt.proc
        parked = len(proc.parked())
        if parked:
            self._collect(fresh, fresh.adopt_parked(proc), outputs, {})
        elapsed = time.perf_counter() - started
        metrics.ROOMS_REBUILT.inc()
        metrics.REBUILD_SECONDS.observe(elapsed)
        events, state_events, groups = fresh.append_marks()
        log.warning(
            "room %s: its stored state was at event %d, behind event %d (%d committed, the "
            "rest in flight): a changelog lost, truncated or overwritten, or a crash before the "
            "state was stored. Rebuilt from PostgreSQL in %.3f s: %d events (%d state events), "
            "%d state groups, %d chunks in flight applied, %d parked events taken over; its "
            "next chunk is numbered %d",
            room_id,
            proc.event_seq,
            high,
            rebuilt.committed,
            elapsed,
            events,
            state_events,
            groups,
            rebuilt.chunks_folded,
            parked,
            fresh.event_seq + 1,
        )
        return fresh, True

    def _batch(
        self, proc: RoomProcessor, items: list[Input], outputs: list[tuple[str, bytes]]
    ) -> None:
        """Every waiting input of the room at once: one chunk (more only over the chunk size
        budget), one send, one store."""
        incoming = []
        headers: dict[tuple[Any, Any], Any] = {}
        for item in items:
            received_ts = item.pdu.received_ts
            if received_ts is None:
                received_ts = item.timestamp_ms
            incoming.append(
                Incoming(
                    item.pdu.value,
                    received_ts=received_ts,
                    source={"partition": item.partition, "offset": item.offset},
                )
            )
            if item.headers:
                headers[(item.partition, item.offset)] = item.headers
        started = time.perf_counter()
        result = proc.process(incoming)
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        self._collect(proc, result, outputs, headers)

    def _collect(
        self,
        proc: RoomProcessor,
        result: BatchResult,
        outputs: list[tuple[str, bytes]],
        headers: Mapping[tuple[Any, Any], Any],
    ) -> None:
        """``result``'s chunks, dead letters and requests as records, in order, into ``outputs``."""
        for chunk in result.chunks:
            outputs.append((self.chunks_topic, chunk_codec.encode(chunk)))
            metrics.CHUNK_EVENTS.observe(len(chunk.events))
            for ce in chunk.events:
                if ce.rejected:
                    _REJECTED.inc()
                elif ce.soft_failed:
                    _SOFT_FAILED.inc()
                else:
                    _ACCEPTED.inc()
        for dl in result.dead_letters:
            src = dl.source or {}
            where = (src.get("partition"), src.get("offset"))
            body = dead_letters.refused(proc.room_id, dl, self.pdus_topic, headers.get(where))
            outputs.append((self.dead_letter_topic, body))
            metrics.DEAD_LETTERED.inc()
        if result.duplicates:
            _DUPLICATE.inc(result.duplicates)
        outputs.extend(
            (self.missing_topic, missing_events.encode_request(request))
            for request in result.missing_requests
        )
