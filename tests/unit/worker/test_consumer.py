"""The worker's consumer never reads inputs past without processing them, without a broker: the
faust consumer of a worker's app with its aiokafka thread replaced by a fake that behaves as
aiokafka does (an empty partition set means every partition; a seek to committed offsets moves
only partitions committed above 0)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from pipeline.config import Settings
from pipeline.worker.consumer import Consumer
from pipeline.worker.faust_app import make_app
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)
PDUS = "roomstream.pdus"
CHANGELOG = "roomstream-processors-rooms-changelog"


class Thread:
    """aiokafka behind faust's consumer thread: records fetched per partition, positions."""

    def __init__(self, fetched: dict[Any, list[int]], committed: dict[Any, int | None]):
        self.fetched = fetched
        self.committed = committed
        self.position: dict[Any, int] = {}
        # A fetch waits for records until this is set (aiokafka waits up to its timeout).
        self.records_arrive = asyncio.Event()
        self.records_arrive.set()

    async def getmany(self, active_partitions: Any, timeout: float) -> Any:
        await self.records_arrive.wait()
        # aiokafka's fetched_records: ``if partitions and tp not in partitions: continue``.
        drained = {
            tp: offsets
            for tp, offsets in self.fetched.items()
            if not active_partitions or tp in active_partitions
        }
        for tp, offsets in drained.items():
            self.position[tp] = offsets[-1] + 1
        return drained

    async def seek_to_committed(self) -> dict[Any, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.position[tp] = offset
        return dict(self.committed)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.position[tp] = 0


def _consumer(tmp_path: Path, thread: Thread) -> Consumer:
    app = make_app(Settings(), tmp_path, "w1", ONE)
    app.Table("rooms", default=None, partitions=2)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    consumer._thread.thread_loop.close()  # the real thread's loop, never started
    consumer._thread = thread
    return consumer


def test_no_record_of_an_inactive_partition_is_handed_over(tmp_path: Path) -> None:
    # Every assignment pauses the worker's partitions until its tables are restored: faust then
    # wants the records of no partition, which aiokafka would take for all of them.
    p0, p1 = TopicPartition(PDUS, 0), TopicPartition(PDUS, 1)
    thread = Thread({p0: [0, 1, 2], p1: [5, 6]}, {})
    consumer = _consumer(tmp_path, thread)
    assert asyncio.run(consumer._getmany(active_partitions=set(), timeout=1.0)) == {}
    assert asyncio.run(consumer._getmany(active_partitions={p1}, timeout=1.0)) == {p1: [5, 6]}
    assert thread.position == {p1: 7}, "a partition was read past"


def test_partitions_paused_while_a_fetch_waits_are_not_read_past(tmp_path: Path) -> None:
    # faust hands over its live set and pauses partitions while the fetch waits for records
    # (a rebalance, a restore): records of then inactive partitions came back and were dropped.
    p0, p1 = TopicPartition(PDUS, 0), TopicPartition(PDUS, 1)
    thread = Thread({p0: [0, 1, 2], p1: [0, 1]}, {})
    consumer = _consumer(tmp_path, thread)
    active = {p0}

    async def main() -> Any:
        thread.records_arrive.clear()
        fetch = asyncio.ensure_future(consumer._getmany(active_partitions=active, timeout=1.0))
        await asyncio.sleep(0)
        active.clear()  # faust pauses every partition
        thread.records_arrive.set()
        return await fetch

    assert asyncio.run(main()) == {}
    assert thread.position == {}, "a partition was read past"


def test_an_input_partition_never_committed_goes_back_to_its_beginning(tmp_path: Path) -> None:
    never, zero, committed = (TopicPartition(PDUS, p) for p in range(3))
    changelog = TopicPartition(CHANGELOG, 0)
    thread = Thread({}, {never: None, zero: 0, committed: 7, changelog: None})
    thread.position = {never: 5, zero: 3, committed: 9, changelog: 4}
    consumer = _consumer(tmp_path, thread)
    offsets = asyncio.run(consumer.seek_to_committed())
    assert offsets == {never: None, zero: 0, committed: 7, changelog: None}
    # A changelog partition stays where the table's restore put it.
    assert thread.position == {never: 0, zero: 0, committed: 7, changelog: 4}


def _drain_until(consumer: Consumer, delivered: list[int], stop: int) -> Any:
    """One pass of faust's drainer over one fetch: a record below the last offset read is
    dropped as already read, the rest are handed over and become the last offset read."""

    async def drain() -> None:
        async for tp, message in consumer.getmany(timeout=1.0):
            r_offset = consumer._read_offset.get(tp)
            if r_offset is None or message.offset >= r_offset:
                delivered.append(message.offset)
                if message.offset == stop:
                    # faust hands the record to the stream and waits: the restore ends meanwhile
                    # and seeks the partition back to its committed offset.
                    await consumer.perform_seek()
                consumer._read_offset[tp] = message.offset

    return drain()


def test_records_fetched_before_a_seek_do_not_outlive_it(tmp_path: Path) -> None:
    # Offsets 10..20 were fetched before the last rebalance and dropped by it, uncommitted (the
    # committed offset is 10), but the partition's position stayed past them. When the restore
    # ends faust resumes the partitions, seeks them to their committed offsets and resumes the
    # flow, in that order: a fetch made meanwhile, from the old position, handed over 21.. and
    # its last offset became the partition's last offset read, after the seek had set it back
    # to 10. Read again from 10, offsets 10..20 were then dropped as already read: lost.
    p0 = TP(PDUS, 0)
    thread = Thread({p0: [21, 22, 23, 24]}, {p0: 10})
    thread.highwater = lambda tp: 25  # type: ignore[attr-defined]
    consumer = _consumer(tmp_path, thread)
    consumer._active_partitions = {p0}
    consumer._to_message = lambda tp, offset: type("M", (), {"offset": offset, "tp": tp})
    delivered: list[int] = []

    asyncio.run(_drain_until(consumer, delivered, stop=22))
    assert delivered == [21, 22], "records of a fetch from before the seek were handed over"
    assert consumer._read_offset[p0] == 10, "the seek's offset was overwritten"

    thread.fetched = {p0: list(range(10, 25))}
    asyncio.run(_drain_until(consumer, delivered, stop=-1))
    assert delivered[2:] == list(range(10, 25)), "records after the committed offset were lost"


def test_records_fetched_after_a_seek_are_handed_over(tmp_path: Path) -> None:
    # A fetch asked for before the seek but answered after it holds records from the positions
    # the seek set: aiokafka has moved past them, so they are the only copy to be handed over.
    p0 = TP(PDUS, 0)
    thread = Thread({p0: [0, 1, 2]}, {p0: None})
    thread.highwater = lambda tp: 3  # type: ignore[attr-defined]
    consumer = _consumer(tmp_path, thread)
    consumer._active_partitions = {p0}
    consumer._to_message = lambda tp, offset: type("M", (), {"offset": offset, "tp": tp})
    delivered: list[int] = []

    async def main() -> None:
        thread.records_arrive.clear()
        drain = asyncio.ensure_future(_drain_until(consumer, delivered, stop=-1))
        await asyncio.sleep(0.01)  # the fetch waits for records
        await consumer.perform_seek()
        thread.records_arrive.set()
        await drain

    asyncio.run(main())
    assert delivered == [0, 1, 2], "records fetched from the sought positions were dropped"
