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
        self.asked: list[set[Any] | None] = []

    async def getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        self.asked.append(active_partitions)
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


def test_nothing_is_read_while_no_partition_is_active(tmp_path: Path) -> None:
    # Every assignment pauses the worker's partitions until its tables are restored: faust then
    # asks for the records of no partition, which aiokafka would take for all of them.
    p0 = TopicPartition(PDUS, 0)
    thread = Thread({p0: [0, 1, 2]}, {})
    consumer = _consumer(tmp_path, thread)
    assert asyncio.run(consumer._getmany(active_partitions=set(), timeout=1.0)) == {}
    assert p0 not in thread.position, "the partition was read past"
    got = asyncio.run(consumer._getmany(active_partitions={p0}, timeout=1.0))
    assert got == {p0: [0, 1, 2]}
    assert thread.asked == [{p0}]


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
