"""The worker's consumer never reads inputs past without processing them, without a broker: the
faust consumer of a worker's app with its aiokafka thread replaced by a fake that behaves as
aiokafka does (an empty partition set means every partition; a seek to committed offsets moves
only partitions committed above 0)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from prometheus_client import REGISTRY

from pipeline.config import Settings
from pipeline.worker.consumer import Consumer
from pipeline.worker.faust_app import make_app
from pipeline.worker.progress import Progress
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)


def _read_again(reason: str) -> float:
    """``roomstream_worker_partitions_read_again_total{reason}`` so far."""
    value = REGISTRY.get_sample_value(
        "roomstream_worker_partitions_read_again_total", {"reason": reason}
    )
    return value or 0.0


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

    def seek(self, tp: Any, offset: int) -> None:
        self.position[tp] = offset

    def assignment(self) -> set[Any]:
        return set(self.committed)


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


# ---------------------------------------------------------------------- what may be committed


def _message(tp: Any, offset: int) -> Any:
    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


def _handed_over(consumer: Consumer, tp: Any, offsets: list[int]) -> list[Any]:
    """Records of ``tp`` fetched and handed over by the consumer, as faust's drainer takes them."""
    thread = consumer._thread
    thread.fetched = {tp: offsets}
    consumer._active_partitions = {tp}
    consumer._to_message = _message

    async def drain() -> list[Any]:
        return [m async for _, m in consumer.getmany(timeout=1.0)]

    return asyncio.run(drain())


def _commits_to(consumer: Consumer, tp: Any) -> int | None:
    return consumer._filter_committable_offsets({tp}).get(tp)


def _sought(tmp_path: Path, tp: Any, committed: int | None) -> Consumer:
    """A consumer whose partition ``tp`` was sought to ``committed``, acks of it counted."""
    consumer = _consumer(tmp_path, Thread({}, {tp: committed}))
    consumer._thread.highwater = lambda tp: 100
    consumer.app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    asyncio.run(consumer.perform_seek())
    return consumer


def test_a_record_faust_skipped_and_acked_is_not_committed_past(tmp_path: Path) -> None:
    # A partition nobody committed yet, kept by a worker through a rebalance: the record fetched
    # when the rebalance began reached faust's stream while its flow was suspended, and the stream
    # skipped it and acked it. The worker then acked the records after it, once processed; faust
    # committed their run and the skipped record (a room's create event) was never read again.
    p0 = TP(PDUS, 0)
    consumer = _sought(tmp_path, p0, None)
    first, *rest = _handed_over(consumer, p0, [0, 1, 2])
    first.ack(consumer)  # faust's stream, skipping it
    with consumer.worker_acks():
        for m in rest:
            m.ack(consumer)
    assert _commits_to(consumer, p0) is None, "committed past a record the worker never acked"
    with consumer.worker_acks():
        _message(p0, 0).ack(consumer)  # read again and processed
    assert _commits_to(consumer, p0) == 3


def test_an_ack_one_past_the_committed_offset_does_not_commit_past_it(tmp_path: Path) -> None:
    # faust let a run of acked offsets start one past the committed offset (the next to read):
    # the room of offset 10, slower than the room of offset 11, lost its input on a restart.
    p0 = TP(PDUS, 0)
    consumer = _sought(tmp_path, p0, 10)
    ten, eleven = _handed_over(consumer, p0, [10, 11])
    with consumer.worker_acks():
        eleven.ack(consumer)
    assert _commits_to(consumer, p0) is None, "committed past offset 10, never acked"
    with consumer.worker_acks():
        ten.ack(consumer)
    assert _commits_to(consumer, p0) == 12


def test_offsets_that_hold_no_record_do_not_hold_commits_back(tmp_path: Path) -> None:
    # A transactional producer's markers take offsets that no record is handed over at.
    p0 = TP(PDUS, 0)
    consumer = _sought(tmp_path, p0, 10)
    with consumer.worker_acks():
        for m in _handed_over(consumer, p0, [11, 12, 14, 17]):
            m.ack(consumer)
    assert _commits_to(consumer, p0) == 18


@pytest.mark.parametrize(
    ("sought", "handed", "acked", "commits"),
    [
        # Never committed: from the first record read since the seek to the beginning.
        (None, [0, 1, 2, 3], [1, 2, 3], None),
        (None, [0, 1, 2, 3], [0, 1, 3], 2),
        (None, [5, 6], [5, 6], 7),  # the records below 5 went with retention
        # Committed: from the committed offset, the next to read.
        (10, [10, 11], [11], None),
        (10, [10, 11], [10, 11], 12),
        (10, [10, 11, 12], [10, 12], 11),
        # Offsets that hold no record are passed over, before the first record and between two.
        (10, [13, 14], [13, 14], 15),
        (10, [10, 12, 15], [10, 12, 15], 16),
        (10, [10, 12, 15], [10, 15], 12),
        # Nothing acked, or only below the committed offset (a record read again).
        (10, [10], [], None),
    ],
)
def test_progress_commits_no_further_than_the_first_record_not_acked(
    sought: int | None, handed: list[int], acked: list[int], commits: int | None
) -> None:
    progress = Progress()
    progress.sought("tp", sought)
    for offset in handed:
        progress.handed("tp", offset)
    assert progress.committable("tp", sought, acked) == commits


def test_progress_forgets_what_it_knew_of_a_partition_when_it_is_sought() -> None:
    progress = Progress()
    progress.sought("tp", 10)
    for offset in (10, 20):
        progress.handed("tp", offset)
    progress.sought("tp", 10)  # a rebalance: read again from 10, where 11..19 now hold records
    progress.handed("tp", 10)
    assert progress.committable("tp", 10, [10, 20]) == 11


def test_records_that_never_reached_the_worker_are_read_again(tmp_path: Path) -> None:
    # faust's stream dropped the first record fetched after a restore (a room's create event):
    # the worker took the records after it, and nothing read it again. Now the partition is
    # sought back to it as soon as the worker takes a later record.
    p0 = TP(PDUS, 0)
    thread = Thread({}, {p0: 3})
    thread.highwater = lambda tp: 6  # type: ignore[attr-defined]
    consumer = _consumer(tmp_path, thread)
    consumer.input_topic = PDUS  # type: ignore[misc]
    consumer.app.rebalancing = False

    async def main() -> None:
        await consumer.perform_seek()
        three, _, five = await _handed_over_in(consumer, p0, [3, 4, 5])
        consumer.taken(three)  # taken in order: nothing to do
        await asyncio.sleep(0)
        assert thread.position[p0] == 6
        consumer.taken(five)  # four never arrived
        for _ in range(3):
            await asyncio.sleep(0)
        assert thread.position[p0] == 4, "the record the worker never took is not read again"
        # Read again from 4: taken in order, nothing more to do.
        for m in await _handed_over_in(consumer, p0, [4, 5]):
            consumer.taken(m)
        await asyncio.sleep(0)
        assert thread.position[p0] == 6

    asyncio.run(main())


async def _handed_over_in(consumer: Consumer, tp: Any, offsets: list[int]) -> list[Any]:
    """``_handed_over`` inside a running loop."""
    consumer._thread.fetched = {tp: offsets}
    consumer._active_partitions = {tp}
    consumer._to_message = _message
    return [m async for _, m in consumer.getmany(timeout=1.0)]


def _handing_over(
    tmp_path: Path, committed: dict[Any, int]
) -> tuple[Consumer, Thread, list[float]]:
    """A consumer of the input topic, sought to ``committed``, outside any rebalance, and its
    clock (``now[0]``)."""
    thread = Thread({}, dict(committed))
    thread.highwater = lambda tp: 100  # type: ignore[attr-defined]
    consumer = _consumer(tmp_path, thread)
    consumer.input_topic = PDUS  # type: ignore[misc]
    consumer.app.rebalancing = False
    now = [100.0]
    consumer.clock = lambda: now[0]  # type: ignore[method-assign]
    return consumer, thread, now


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_record_dropped_before_records_of_other_partitions_is_read_again(
    tmp_path: Path,
) -> None:
    # faust's stream hands records on in the order they were handed over, whatever their
    # partition: once the worker takes a record of one partition, a record of another handed
    # over before it will never come. Its partition may get no later record for a long time (a
    # quiet room), so waiting for one would leave the room waiting too.
    p0, p1 = TP(PDUS, 0), TP(PDUS, 1)
    consumer, thread, _ = _handing_over(tmp_path, {p0: 3, p1: 7})

    before = _read_again("overtaken")

    async def main() -> None:
        await consumer.perform_seek()
        await _handed_over_in(consumer, p0, [3])
        (seven,) = await _handed_over_in(consumer, p1, [7])
        assert thread.position == {p0: 4, p1: 8}
        consumer.taken(seven)  # three never arrived
        await _settle()
        assert thread.position[p0] == 3, "the record dropped before another partition's stays lost"
        assert thread.position[p1] == 8
        (again,) = await _handed_over_in(consumer, p0, [3])
        consumer.taken(again)
        await _settle()
        assert thread.position[p0] == 4

    asyncio.run(main())
    assert _read_again("overtaken") == before + 1


def test_a_record_never_taken_while_the_worker_waits_for_input_is_read_again(
    tmp_path: Path,
) -> None:
    # The last records fetched as a restore ends, dropped by faust's stream, with nothing fetched
    # after them: no later record shows they were dropped. Once the worker has waited for input
    # with nothing on its way for longer than a record takes to reach it, they are read again.
    p0, p1 = TP(PDUS, 0), TP(PDUS, 1)
    consumer, thread, now = _handing_over(tmp_path, {p0: 3, p1: 7})

    async def main() -> None:
        await consumer.perform_seek()
        await _handed_over_in(consumer, p0, [3, 4])
        now[0] += 0.5
        await _handed_over_in(consumer, p1, [7])
        consumer.read_again_overdue(after_s=1.0)  # nothing waited long enough yet
        await _settle()
        assert thread.position == {p0: 5, p1: 8}
        now[0] += 0.7  # p0's records waited 1.2 s, p1's 0.7 s
        consumer.read_again_overdue(after_s=1.0)
        await _settle()
        assert thread.position == {p0: 3, p1: 8}, "records never taken are not read again"
        now[0] += 0.5
        consumer.read_again_overdue(after_s=1.0)
        await _settle()
        assert thread.position == {p0: 3, p1: 7}

    before = _read_again("waited")
    asyncio.run(main())
    assert _read_again("waited") == before + 2


def test_records_taken_in_order_are_not_read_again(tmp_path: Path) -> None:
    p0, p1 = TP(PDUS, 0), TP(PDUS, 1)
    consumer, thread, now = _handing_over(tmp_path, {p0: 3, p1: 7})

    async def main() -> None:
        await consumer.perform_seek()
        handed = await _handed_over_in(consumer, p0, [3, 4])
        handed += await _handed_over_in(consumer, p1, [7])
        for m in handed:
            consumer.taken(m)
        now[0] += 60
        consumer.read_again_overdue(after_s=1.0)
        await _settle()
        assert thread.position == {p0: 5, p1: 8}

    asyncio.run(main())
