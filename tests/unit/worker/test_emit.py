"""Failure sequence 2 and 3 of the worker shell, without a broker: an input is acked only after
the broker acknowledged its chunks and the changelog records of the state that covers it; a
worker paused past its session writes nothing more; a send the broker refuses is retried with
a bound and then stops the worker, and nothing valid is dead-lettered on the way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.room.processor import RoomProcessor
from pipeline.worker.emit import Outputs, Sender
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.lifecycle import EXIT_STOPPED, Lifecycle
from pipeline.worker.processing import Processed, Work
from pipeline.worker.scheduling import Job, Scheduler

from .fakes import Clock, Producer, an_input

CHANGELOG = "t-rooms-changelog"


class States:
    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.offsets: list[tuple[int, int]] = []
        self.kept: dict[str, Any] = {}

    def put(self, writes: list[tuple[bytes, bytes]], partition: int) -> None:
        self.table.update(writes)

    def persisted(self, changelog: str, partition: int, offset: int) -> None:
        self.offsets.append((partition, offset))

    def keep(self, room_id: str, proc: Any) -> None:
        self.kept[room_id] = proc


async def _no_sleep(_: float) -> None:
    return None


def _parts(producer: Producer, life: Lifecycle | None = None) -> tuple[Outputs, Scheduler, States]:
    life = life or Lifecycle("w", pause_limit_s=5.0)
    sender = Sender(lambda: producer, life.check_owner, retry_sleep=_no_sleep)
    scheduler = Scheduler(clock=Clock(), generation=lambda: 1, hurry=lambda: True)
    states = States()
    outputs = Outputs(
        sender,
        states,
        scheduler,
        owner=lambda room: 3,
        changelog=lambda: CHANGELOG,
        submit=lambda job: None,
        checked=set(),
    )
    return outputs, scheduler, states


def _processed(job: Job) -> tuple[Work, Processed]:
    proc = RoomProcessor(job.room_id)
    writes = [(b"!a\x000", b"segment"), (b"!a", b"record")] if job.store else None
    return Work(job, None, None), Processed(proc, writes, [("t.chunks", b"chunk")], False)


def test_inputs_are_not_acked_before_the_changelog_write_is_acknowledged() -> None:
    async def main() -> None:
        producer = Producer(auto_ack={"t.chunks"})
        outputs, scheduler, states = _parts(producer)
        job = scheduler.add("!a", an_input("!a", 7))
        assert job is not None and job.store
        emitting = asyncio.ensure_future(outputs.emit([_processed(job)]))
        await asyncio.sleep(0.01)
        assert [s.partition for s in producer.to(CHANGELOG)] == [3, 3]
        assert not job.inputs[0].event.acked  # type: ignore[attr-defined]
        assert states.table == {}
        producer.ack_all(CHANGELOG)
        await emitting
        assert job.inputs[0].event.acked  # type: ignore[attr-defined]
        assert states.table[b"!a"] == b"record"
        assert states.offsets  # RocksDB learns how far the changelog holds our writes

    asyncio.run(main())


def test_a_paused_worker_writes_nothing_more_and_exits_non_zero() -> None:
    async def main() -> None:
        clock = Clock()
        life = Lifecycle("w", pause_limit_s=5.0, clock=clock)
        producer = Producer(auto_ack={"t.chunks", CHANGELOG})
        outputs, scheduler, _ = _parts(producer, life)
        job = scheduler.add("!a", an_input("!a", 7))
        assert job is not None
        life.tick()  # the loop runs
        clock.advance(6.0)  # SIGSTOP for longer than half the session, then SIGCONT
        with pytest.raises(WorkerStopped, match=r"paused for 6\.0 s"):
            await outputs.emit([_processed(job)])
        assert producer.sent == []
        assert not job.inputs[0].event.acked  # type: ignore[attr-defined]
        assert life.exit_code() == EXIT_STOPPED and not life.ready

    asyncio.run(main())


def test_a_running_worker_is_not_fenced() -> None:
    clock = Clock()
    life = Lifecycle("w", pause_limit_s=5.0, clock=clock)
    for _ in range(100):
        clock.advance(0.05)
        life.tick()
        life.check_owner("a write")
    assert life.fault is None


def test_a_slow_start_is_not_a_pause() -> None:
    # A worker restarted on a busy machine took longer than half its session to start (imports,
    # connections, a large cluster's metadata) and stopped itself as "paused" right after it
    # joined its group: the fence counts from the loop's first tick.
    clock = Clock()
    life = Lifecycle("w", pause_limit_s=5.0, clock=clock)
    clock.advance(7.5)
    life.check_owner("a write")
    life.tick()
    clock.advance(0.05)
    life.tick()
    life.check_owner("a write")
    assert life.fault is None
    clock.advance(6.0)
    life.tick()
    assert life.fault is not None and life.fault.reason == "paused"


def test_a_refused_hand_over_is_retried_then_stops_the_worker() -> None:
    async def main() -> None:
        producer = Producer(auto_ack={"t.chunks", CHANGELOG}, refuse=2)
        outputs, scheduler, _ = _parts(producer)
        job = scheduler.add("!a", an_input("!a", 7))
        assert job is not None
        await outputs.emit([_processed(job)])  # two refusals, then it goes through
        assert job.inputs[0].event.acked  # type: ignore[attr-defined]

        producer.refuse = 100
        job2 = scheduler.add("!a", an_input("!a", 8))
        assert job2 is not None
        with pytest.raises(WorkerStopped, match="failed 5 times") as e:
            await outputs.emit([_processed(job2)])
        assert e.value.reason == "send"
        assert not job2.inputs[0].event.acked  # type: ignore[attr-defined]

    asyncio.run(main())


def test_a_failed_delivery_stops_the_worker_without_dead_letters_or_acks() -> None:
    async def main() -> None:
        producer = Producer()
        outputs, scheduler, _ = _parts(producer)
        job = scheduler.add("!a", an_input("!a", 7))
        assert job is not None
        emitting = asyncio.ensure_future(outputs.emit([_processed(job)]))
        await asyncio.sleep(0.01)
        producer.sent[0].future.set_exception(TimeoutError("request timed out"))
        with pytest.raises(WorkerStopped, match="did not take") as e:
            await emitting
        assert e.value.reason == "delivery"
        assert [s.topic for s in producer.sent] == ["t.chunks"]  # no dead letter, no store
        assert not job.inputs[0].event.acked  # type: ignore[attr-defined]

    asyncio.run(main())
