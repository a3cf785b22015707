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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Container, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["Active", "Consumer"]


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
    # Counts seeks begun and ended; a batch handed over under another count may be from
    # positions a seek has moved since.
    _seeks = 0
    _batch_seeks = 0

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for tp, message in super().getmany(timeout):
            if self._seeks != self._batch_seeks:
                await self._seek_again()
                return
            yield tp, message
            if self._seeks != self._batch_seeks:
                await self._seek_again()
                return

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
        self._seeking = tuple(committed)
        never = [
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        ]
        if never:
            await self._thread.seek_to_beginning(*never)
        return committed
