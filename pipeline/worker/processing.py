"""A room job in a processing thread: the pure room processor over the job's inputs, its outputs
serialised, and the room's state to store when the job asks for it.

Only the inputs' own data reach the processor: the PDU, its ``received_ts`` (the producer's
header, else the record's timestamp) and where it was read. Never the time of processing, so a
replay after a crash decides exactly what the first run decided.

An exception here is not the input's fault (the processor turns every fault of an input into a
dead letter with a reason): it is a bug or a broken environment, so it stops the worker
(``faults.WorkerStopped``) with its inputs unacked, rather than dead-lettering valid events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
        high_waters: HighWaters | None = None,
    ) -> None:
        self.config = config
        self.budget = budget
        self.pdus_topic = pdus_topic
        self.chunks_topic = chunks_topic
        self.dead_letter_topic = dead_letter_topic
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
        for item in job.inputs:
            if (
                not checked
                and work.horizon is not None
                and self.high_waters is not None
                and item.offset >= work.horizon
            ):
                high_water.check(proc, job.room_id, self.high_waters)
                checked = True
            self._one(proc, item, outputs)
        writes = storage.save(proc, work.stored) if job.store else None
        return Processed(proc, writes, outputs, checked)

    def _one(self, proc: RoomProcessor, item: Input, outputs: list[tuple[str, bytes]]) -> None:
        received_ts = item.pdu.received_ts
        if received_ts is None:
            received_ts = item.timestamp_ms
        incoming = Incoming(
            item.pdu.value,
            received_ts=received_ts,
            source={"partition": item.partition, "offset": item.offset},
        )
        started = time.perf_counter()
        # The input's own time is the room's clock: a replay decides what this run decides.
        result = proc.process([incoming], now=received_ts or 0)
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        if result.chunk is not None:
            outputs.append((self.chunks_topic, chunk_codec.encode(result.chunk)))
            metrics.CHUNK_EVENTS.observe(len(result.chunk.events))
            for ce in result.chunk.events:
                if ce.rejected:
                    _REJECTED.inc()
                elif ce.soft_failed:
                    _SOFT_FAILED.inc()
                else:
                    _ACCEPTED.inc()
        for dl in result.dead_letters:
            body = dead_letters.refused(
                proc.room_id,
                dl,
                self.pdus_topic,
                partition=item.partition,
                offset=item.offset,
                headers=item.headers,
            )
            outputs.append((self.dead_letter_topic, body))
            metrics.DEAD_LETTERED.inc()
        if result.duplicates:
            _DUPLICATE.inc(result.duplicates)
