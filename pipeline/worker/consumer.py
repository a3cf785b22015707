"""The worker's Kafka consumer: faust's aiokafka consumer, without the way it read inputs past
and lost them around a rebalance or a table restore.

faust asks aiokafka for the records of the partitions it wants to process, as a set. While its
partitions are paused (every assignment pauses them until the tables are restored) that set is
empty, and aiokafka reads an empty set as "every partition": it hands over what it fetched for
all of them, moving their positions past it, and faust drops those records, since none of their
partitions is active. When the restore ends, faust seeks each partition back to its committed
offset, which undoes that, except for a partition whose offset was never committed (a new
topic, a partition that got its first records since the last commit): aiokafka moves only to a
committed offset above 0, so those records were never read again, and once a later input of the
partition was acked, faust committed past them. They were lost with nothing said
(``tests/integration/test_worker_kill.py``).

Here, nothing is asked for while no partition is active, and when faust seeks to the committed
offsets, a partition of the input without one goes back to its beginning, where the group's
``auto.offset.reset`` (earliest) starts a partition nobody has consumed. A changelog partition
is left where the restore put it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["IDLE_S", "Consumer"]

# How long a fetch with no partition active waits before it looks again.
IDLE_S = 0.05


class Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # faust ships no types for it
    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        if active_partitions is not None and not active_partitions:
            await asyncio.sleep(min(timeout, IDLE_S))
            return {}
        return await super()._getmany(active_partitions=active_partitions, timeout=timeout)

    async def seek_to_committed(self) -> Mapping[Any, int | None]:
        committed: Mapping[Any, int | None] = await super().seek_to_committed()
        never = [
            tp for tp, offset in committed.items() if not offset and not self._is_changelog_tp(tp)
        ]
        if never:
            await self._thread.seek_to_beginning(*never)
        return committed
