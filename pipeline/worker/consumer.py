"""The worker's Kafka consumer: faust's aiokafka consumer, without the way it read inputs past
and lost them around a rebalance or a table restore.

faust asks aiokafka for the records of the partitions it wants to process by handing it its own
set of active partitions, which it keeps changing meanwhile: every assignment pauses them all
until the tables are restored. aiokafka reads an empty set as "every partition", so a fetch that
waited while the set emptied handed over what it had fetched for all partitions, moving their
positions past it, and faust dropped those records, none of their partitions being active. When
the restore ended, faust sought each partition back to its committed offset, which undid that,
except for a partition whose offset was never committed (a new topic, a partition first written
since the last commit): aiokafka moves only to a committed offset above 0, so those records were
never read again, and once a later input of the partition was acked, faust committed past them.
They were lost with nothing said (``tests/integration/test_worker_kill.py``, the workers joining
and leaving while rooms are created; a worker's log showed a fetch asked for 12 partitions
return the records of 9 others, from offset 0, all dropped).

Here aiokafka gets the same live set behind a wrapper that is never empty to it, so it hands over
records of the active partitions only, and when faust seeks to the committed offsets, a partition
of the input without one goes back to its beginning, where the group's ``auto.offset.reset``
(earliest) starts a partition nobody has consumed. A changelog partition is left where the
restore put it.

When a restore ends faust resumes the input partitions, seeks them to their committed offsets and
only then resumes the flow, with the flow already running since the restore began. A fetch made
before the seek, from a position past records the rebalance had dropped, went on handing records
over after it, and its last offset overwrote the one the seek had set: the partition, read again
from its committed offset, then dropped the records below it as read already, and they were lost.
Here a batch of records handed over by aiokafka before or while a seek ran is not handed on
after it: the partitions are sought to their committed offsets again, with no fetch in flight, so
the next batch follows on from what was processed. A record handed on just before the seek may
be read again, a duplicate the worker drops.

faust also dropped records on their way to the worker, and committed past what the worker had
not acked. Its stream skips a record that arrives while its flow control is suspended or after
its generation ended (its pure-Python stream also acks it), and its commit takes the first run of
acked offsets it finds: from anywhere in a partition never committed, and from one past the
committed offset in any other. Together they lost inputs that nothing read again: in a worker
that kept a partition through a rebalance, a room's first event, fetched as the restore ended,
was skipped, and committed past once the room's later events were acked, so the room waited for
its create event for ever (the same test, one run in three). Here only the worker's own acks
count (``worker_acks``), and ``Progress`` commits a partition from its committed offset (or the
first record read since it was sought to its beginning) over acked offsets and offsets that hold
no record, stopping at the first that is neither. And a record handed over that never reached
the worker is read again: the worker says which input it takes (``taken``). faust's stream hands
records on in the order they were handed over, whatever their partition, so when an input
arrives while records handed over before it did not, those never will, and each of their
partitions is sought back to the first of them. The last records handed over may have nothing
after them (a warm-up produced while workers join, then a quiet room): once the worker has waited
for input with none on its way for longer than an input takes to reach it, the records still not
taken are read again too (``read_again_overdue``).

Once inputs come often, its fetches wait at the broker for more of them (``Fetching``): when
events trickle in, each one otherwise costs a fetch of its own and its own way through faust and
aiokafka, several times what the room logic costs; gathered, they share that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Container, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline import metrics
from pipeline.worker.progress import Progress

log = logging.getLogger("roomstream.worker")

__all__ = ["Active", "Consumer", "Fetching", "FetchingThread", "Gathering"]


@dataclass(frozen=True)
class Fetching:
    """When and how the worker's fetches gather inputs that trickle in.

    Once inputs come at ``from_rate`` events/s or more (over the last second), the broker holds
    each fetch until ``min_bytes`` of records are there or ``wait_ms`` have passed: under load a
    fetch fills at once and nothing waits; at a steady trickle, the inputs of ``wait_ms`` go
    together, each waiting at most that long. Below that rate the worker is mostly idle and the
    CPU an input costs limits nothing, so a fetch is answered with its first record, as faust
    has it. ``wait_ms`` 0 never gathers.
    """

    wait_ms: int
    min_bytes: int
    from_rate: float


# The wait faust gives the worker's aiokafka consumer (its fetches then answer at the first record).
FAUST_FETCH_WAIT_MS = 1500


class Gathering:
    """Whether fetches gather now, from the count of records each fetch brought and a clock."""

    # The rate is counted over windows this long.
    WINDOW_S = 1.0

    def __init__(
        self,
        fetching: Fetching,
        clock: Callable[[], float] = time.monotonic,
        *,
        idle_wait_ms: int = FAUST_FETCH_WAIT_MS,
    ) -> None:
        self.fetching = fetching
        self.clock = clock
        # The wait the fetcher had before any gathering: restored when gathering stops, or an
        # idle worker would ask the broker again every ``wait_ms``.
        self.idle_wait_ms = idle_wait_ms
        self.on = False
        self._since = clock()
        self._records = 0

    def note(self, records: int) -> bool:
        """Count a fetch's ``records``; True when gathering has just turned on or off."""
        self._records += records
        now = self.clock()
        elapsed = now - self._since
        if elapsed < self.WINDOW_S:
            return False
        rate = self._records / elapsed
        self._since, self._records = now, 0
        on = self.fetching.wait_ms > 0 and rate >= self.fetching.from_rate
        changed, self.on = on != self.on, on
        return changed

    def apply(self, fetcher: Any) -> None:
        """Set ``fetcher``'s wait and size for its next fetch request (aiokafka reads them as it
        builds each one)."""
        if self.on:
            fetcher._fetch_max_wait_ms = self.fetching.wait_ms
            fetcher._fetch_min_bytes = self.fetching.min_bytes
        else:
            fetcher._fetch_max_wait_ms = self.idle_wait_ms
            fetcher._fetch_min_bytes = 1


# aiokafka's own names for a fetch's wait and size; checked at the worker's first fetch, so that an
# aiokafka that renamed them fails the start rather than never gathering.
FETCHER_ATTRIBUTES = ("_fetch_max_wait_ms", "_fetch_min_bytes")


def check_fetcher(fetcher: Any) -> None:
    for name in FETCHER_ATTRIBUTES:
        if not hasattr(fetcher, name):
            raise RuntimeError(
                f"this aiokafka's fetcher has no {name}: the worker's fetch settings "
                "(ROOMSTREAM_WORKER_FETCH_WAIT_MS, _MIN_BYTES) cannot be applied; install the "
                "aiokafka version pyproject.toml names"
            )


class FetchingThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """faust's consumer thread, whose fetches gather inputs as its ``Fetching`` says."""

    fetching: ClassVar[Fetching | None] = None
    _gathering: Gathering | None = None

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        if self.fetching is not None:
            if self._gathering is None:
                check_fetcher(consumer._fetcher)
                self._gathering = Gathering(
                    self.fetching, idle_wait_ms=consumer._fetcher._fetch_max_wait_ms
                )
            if self._gathering.note(sum(len(batch) for batch in records.values())):
                self._gathering.apply(consumer._fetcher)
                log.debug("fetches %s", "gather inputs" if self._gathering.on else "do not wait")
        return records


class Active:
    """faust's live set of active partitions as aiokafka reads it: membership as the set has it
    at each look, and never empty (aiokafka takes an empty set for every partition)."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: Container[Any]) -> None:
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.partitions


class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # faust ships no types for it
    # The thread class that builds the aiokafka consumer (``make_app`` gives it the settings).
    thread_class: ClassVar[type[FetchingThread]] = FetchingThread

    # Counts seeks begun and ended; a batch handed over under another count may be from
    # positions a seek has moved since.
    _seeks = 0
    _batch_seeks = 0
    # The topic whose records the worker takes (``taken``); set by ``make_app``.
    input_topic: ClassVar[str | None] = None
    # True while the worker acks its inputs: the only acks counted.
    _worker_acking = False
    _progress: Progress | None = None
    # The input records handed over since their partitions were last sought that the worker has
    # not taken yet, in the order they were handed over, each with the time it was.
    _waiting: deque[tuple[Any, float]] | None = None
    clock: Callable[[], float] = staticmethod(time.monotonic)
    # Partitions being sought back to records that never reached the worker.
    _reading_again: set[Any] | None = None

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress()
        return self._progress

    @contextmanager
    def worker_acks(self) -> Iterator[None]:
        """Acks made inside are the worker's: its inputs processed and stored, forwarded or
        dead-lettered. faust's own acks (of records its stream skipped) are not counted."""
        self._worker_acking = True
        try:
            yield
        finally:
            self._worker_acking = False

    def ack(self, message: Any) -> bool:
        if not self._worker_acking:
            # faust's stream acks a record it skips (a rebalance began, or the record is of an
            # earlier generation): nothing processed it, so nothing may commit past it.
            return False
        acked: bool = super().ack(message)
        return acked

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        offset = self.progress.committable(tp, self._committed_offset.get(tp), acked)
        if offset is None:
            return None
        # As faust does with the acked offsets it commits: forget them.
        done = [o for o in acked if o < offset]
        acked[:] = [o for o in acked if o >= offset]
        self._acked_index[tp].difference_update(done)
        gap = self._gap.get(tp)
        if gap:
            gap.chop(0, offset)
        return offset

    def _new_consumer_thread(self) -> FetchingThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        handed = self.progress.handed
        if self._waiting is None:
            self._waiting = deque()
        waiting = self._waiting
        input_topic = self.input_topic
        clock = self.clock
        async for tp, message in super().getmany(timeout):
            if self._seeks != self._batch_seeks:
                await self._seek_again()
                return
            handed(tp, message.offset)
            if tp.topic == input_topic:
                waiting.append((message, clock()))
            yield tp, message
            if self._seeks != self._batch_seeks:
                await self._seek_again()
                return

    def taken(self, message: Any) -> None:
        """The worker took ``message`` (a record of the input topic) off its stream."""
        waiting = self._waiting
        if not waiting:
            return
        if waiting[0][0] is message:
            waiting.popleft()
            return
        if not any(m is message for m, _ in waiting):
            return  # handed over before its partition was last sought
        self._read_again_until(
            lambda w: w[0] is message,
            "overtaken",
            f"the worker took {message.tp.topic}[{message.tp.partition}] offset "
            f"{message.offset}, handed over after them",
        )
        waiting.popleft()

    def read_again_overdue(self, after_s: float) -> None:
        """Read again the records handed over more than ``after_s`` ago that the worker has not
        taken. For the worker to call while it waits for input and faust's stream holds none:
        then nothing handed over is still on its way to it."""
        if not self._waiting:
            return
        now = self.clock()
        self._read_again_until(
            lambda w: now - w[1] < after_s,
            "waited",
            f"the worker has waited {after_s:g} s for input with none on its way",
        )

    def _read_again_until(
        self, stop: Callable[[tuple[Any, float]], bool], reason: str, how: str
    ) -> None:
        """Read again each partition of the records waiting before the first for which ``stop``
        is true, from the first of them: they never reached the worker and never will."""
        assert self._waiting is not None
        waiting = self._waiting
        dropped: dict[Any, int] = {}
        while waiting and not stop(waiting[0]):
            m = waiting.popleft()[0]
            dropped.setdefault(m.tp, m.offset)
        for tp, offset in dropped.items():
            self._read_again(tp, offset, reason, how)

    def _read_again(self, tp: Any, offset: int, reason: str, how: str) -> None:
        if self._reading_again is None:
            self._reading_again = set()
        if tp in self._reading_again:
            return
        metrics.READ_AGAIN.labels(reason=reason).inc()
        log.info(
            "records of %s[%d] from offset %d were handed over and never reached the worker "
            "(%s; faust drops records as a rebalance or a restore ends); the partition is read "
            "again from offset %d",
            tp.topic,
            tp.partition,
            offset,
            how,
            offset,
        )
        self._reading_again.add(tp)
        task = asyncio.ensure_future(self._seek_back(tp, offset))
        task.add_done_callback(lambda done: self._sought_back(tp, offset, done))

    def _sought_back(self, tp: Any, offset: int, done: asyncio.Future[None]) -> None:
        assert self._reading_again is not None
        self._reading_again.discard(tp)
        error = None if done.cancelled() else done.exception()
        if error is not None:
            log.warning(
                "%s[%d] could not be sought back to offset %d (%s: %s); nothing is committed "
                "past it, and it is read again from there at the next rebalance or "
                "restart",
                tp.topic,
                tp.partition,
                offset,
                type(error).__name__,
                error,
            )

    async def _seek_back(self, tp: Any, offset: int) -> None:
        # A rebalance seeks every partition to its committed offset, which is not past it.
        if self.app.rebalancing or tp not in self.assignment():
            return
        self._seeks += 1
        try:
            await self.seek(tp, offset)
        finally:
            self._seeks += 1

    async def _seek_again(self) -> None:
        # Whether each record of the batch was fetched before or after its partition's seek is
        # not known; seeking again to the committed offsets, with no fetch in flight now, makes
        # what is read next follow on from what was processed, whatever was handed over.
        await self.perform_seek()
        self._batch_seeks = self._seeks

    async def perform_seek(self) -> None:
        self._seeks += 1
        try:
            await super().perform_seek()
        finally:
            self._seeks += 1

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        # None is faust's "every partition" (a client-only app), kept as it is.
        wanted = None if active_partitions is None else Active(active_partitions)
        records = await super()._getmany(active_partitions=wanted, timeout=timeout)
        self._batch_seeks = self._seeks
        return records

    async def seek_to_committed(self) -> Mapping[Any, int | None]:
        committed: Mapping[Any, int | None] = await super().seek_to_committed()
        never = [
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        ]
        if never:
            await self._thread.seek_to_beginning(*never)
        if self._waiting is not None:
            self._waiting.clear()
        for tp, offset in committed.items():
            self.progress.sought(tp, offset or None)
        return committed

    async def _seek(self, partition: Any, offset: int) -> None:
        await super()._seek(partition, offset)
        self.progress.sought(partition, offset)
        waiting = self._waiting
        if waiting:
            kept = [w for w in waiting if w[0].tp != partition]
            waiting.clear()
            waiting.extend(kept)
