"""The worker's consumer never reads inputs past without processing them, without a broker: the
faust consumer of a worker's app with its aiokafka thread replaced by a fake that behaves as
aiokafka does (an empty partition set means every partition; a seek to committed offsets moves
only partitions committed above 0)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from pipeline.config import Settings
from pipeline.worker.consumer import Consumer
from pipeline.worker.faust_app import make_app
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)
PDUS = "roomstream.pdus"
CHANGELOG = "roomstream-processors-rooms-changelog"


class Thread:
    """aiokafka behind faust's consumer thread: records fetched per partition, positions."""

    def __init__(self, fetched: dict[TopicPartition, list[int]], committed: dict[Any, int | None]):
        self.fetched = fetched
        self.committed = committed
        self.position: dict[TopicPartition, int] = {}
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
