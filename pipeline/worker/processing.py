"""A room job in a processing thread: the pure room processor over the job's inputs, its outputs
serialised, and the room's state to store when the job asks for it.

All the inputs of a job go to the processor as one batch: one chunk (more only when over the
chunk size budget), one send. Only the inputs' own data reach the processor: the PDU, its
``received_ts`` (the producer's header, else the record's timestamp) and where it was read.
Never the time of processing, so a replay after a crash decides what the first run decided.

An exception here is not the input's fault (the processor turns every fault of an input into a
dead letter with a reason): it is a bug or a broken environment, so it stops the worker
(``faults.WorkerStopped``) with its inputs unacked, rather than dead-lettering valid events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline import metrics
from pipeline.room import storage
from pipeline.room.batch import ProcessorConfig
from pipeline.room.parking import ParkingBudget
from pipeline.room.processor import Incoming, RoomProcessor
from pipeline.worker import dead_letters, high_water
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.high_water import HighWaters
from pipeline.worker.scheduling import Input, Job
from topics import chunk as chunk_codec
from topics import missing_events

__all__ = ["Processed", "Processing", "Work"]

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
    # Inputs at or above this offset of their partition are new to it (never processed by any
    # worker): the first of them checks the room's state against PostgreSQL. None: no check.
    horizon: int | None = None


@dataclass(slots=True)
class Processed:
    proc: RoomProcessor
    writes: list[tuple[bytes, bytes]] | None  # the room's state as table writes, if asked
    outputs: list[tuple[str, bytes]]  # (topic, value) in the order a replay would emit them
    checked: bool  # the room's state was checked against PostgreSQL


class Processing:
    """``work -> processed``, run in a processing thread."""

    def __init__(
        self,
        *,
        config: ProcessorConfig,
        budget: ParkingBudget,
        pdus_topic: str,
        chunks_topic: str,
        dead_letter_topic: str,
        missing_topic: str,
        high_waters: HighWaters | None = None,
    ) -> None:
        self.config = config
        self.budget = budget
        self.pdus_topic = pdus_topic
        self.chunks_topic = chunks_topic
        self.dead_letter_topic = dead_letter_topic
        self.missing_topic = missing_topic
        self.high_waters = high_waters

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
        if proc is None:
            if work.stored is None:
                proc = RoomProcessor(job.room_id, config=self.config, budget=self.budget)
            else:
                proc = storage.load(
                    work.stored, work.segments.get, config=self.config, budget=self.budget
                )
        outputs: list[tuple[str, bytes]] = []
        checked = False
        inputs = job.inputs
        split = len(inputs)
        if work.horizon is not None and self.high_waters is not None:
            # Inputs below the horizon are replays; the first new one checks the room's
            # state, once every earlier input of the room was processed again.
            split = next((i for i, item in enumerate(inputs) if item.offset >= work.horizon), split)
        for part in (inputs[:split], inputs[split:]):
            if part is inputs[split:] and part and self.high_waters is not None:
                high_water.check(proc, job.room_id, self.high_waters)
                checked = True
            if part:
                self._batch(proc, part, outputs)
        writes = storage.save(proc, work.stored) if job.store else None
        return Processed(proc, writes, outputs, checked)

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
