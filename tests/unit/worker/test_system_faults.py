"""Failure sequence 3 of the worker shell: errors that are not the input's never dead-letter a
valid event. A broken resolution pool is replaced and the resolution done inline (the same
answer); after a bound the worker is told to stop. Processing that raises stops the worker
with its inputs unacked, instead of a dead letter."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
import pytest

from pipeline.dev.workload import slow_resolution_room
from pipeline.room.batch import ProcessorConfig
from pipeline.room.parking import ParkingBudget
from pipeline.room.processor import RoomProcessor
from pipeline.room.replay import replay
from pipeline.worker import resolve_pool
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.processing import Processing, Work
from pipeline.worker.resolve_pool import ResolvePool, pooled_resolver
from pipeline.worker.scheduling import Job
from topics import chunk as chunk_codec

from .fakes import an_input


class BrokenPool(ResolvePool):
    """A pool whose every resolution fails as a killed child makes it fail."""

    def __init__(self) -> None:
        super().__init__(1)
        self.started = 1

    def _start(self) -> Any:
        self.started = getattr(self, "started", 0) + 1
        return super()._start()

    def resolve(self, *args: Any, **kwargs: Any) -> Any:
        raise BrokenProcessPool("a child process terminated abruptly")


def test_a_broken_resolution_pool_dead_letters_nothing_and_stops_the_worker_after_a_bound() -> None:
    workload = slow_resolution_room(40)
    (room_id,) = workload.rooms
    pool = BrokenPool()
    faults: list[WorkerStopped] = []
    try:
        config = ProcessorConfig(resolver=pooled_resolver(pool, on_broken=faults.append))
        # Every resolution goes to the pool, as a large one does.
        resolve_pool_threshold = resolve_pool.OFFLOAD_CONFLICTED
        resolve_pool.OFFLOAD_CONFLICTED = 0
        try:
            proc = RoomProcessor(room_id, config=config)
            dead = []
            for line in workload.lines:
                dead += proc.process([line]).dead_letters
        finally:
            resolve_pool.OFFLOAD_CONFLICTED = resolve_pool_threshold
    finally:
        pool.close()
    assert dead == []
    expected = replay(workload.lines)["rooms"][room_id]
    assert (
        sorted([t, k, e] for (t, k), e in proc.current_state.items()) == (expected["current_state"])
    )
    assert pool.started > 1  # replaced after each failure
    assert faults and faults[0].reason == "resolve_pool"
    assert f"{resolve_pool.MAX_FAILURES} times in a row" in str(faults[0])


def _processing() -> Processing:
    return Processing(
        config=ProcessorConfig(),
        budget=ParkingBudget(10),
        pdus_topic="t.pdus",
        chunks_topic="t.chunks",
        dead_letter_topic="t.dead-letter",
        missing_topic="t.missing-events",
    )


def test_processing_that_raises_stops_the_worker_instead_of_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unserialisable(chunk: Any) -> bytes:
        raise orjson.JSONEncodeError("Recursion limit reached")

    monkeypatch.setattr(chunk_codec, "encode", unserialisable)
    workload = slow_resolution_room(2)
    (room_id,) = workload.rooms
    item = an_input(room_id, 41, partition=2)
    item.pdu = type(item.pdu)(room_id, workload.lines[0])
    with pytest.raises(WorkerStopped, match="partition 2 offset 41") as e:
        _processing()(Work(Job(room_id, [item], 1, store=False), None, None))
    assert e.value.reason == "processing"
    assert "nothing was dead-lettered" in str(e.value)
