"""The worker's ``Recall``: a room's dropped event index entries, read from PostgreSQL.

A worker bounds each room's event index to ``ROOMSTREAM_WORKER_KNOWN_EVENTS`` entries, and its
state groups to ``ROOMSTREAM_WORKER_STATE_ROWS`` rows (``RoomProcessor.release_committed``, told
the room's committed chunk high-water); an entry or a group's rows read again are recalled from
the rows the committer stored (``db.recall``), over one connection per
processing thread, as ``high_water`` reads the marks. Unlike the marks, a recall cannot be
skipped (the decision waits on it): it is retried a few times, then raises ``RecallFailed``,
which stops the worker with its inputs unacked (``processing``), to retry once PostgreSQL is
back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg2

from db.recall import recall_events, recall_group_rows, recall_redactions
from pipeline import metrics
from pipeline.config import Settings
from pipeline.room.chunk import StateRow
from pipeline.room.known_events import Recalled, RecallFailed
from pipeline.worker.high_water import ATTEMPTS, thread_reads

__all__ = ["PgRecall"]

T = TypeVar("T")

log = logging.getLogger("roomstream.worker")


class PgRecall:
    """``Recall`` over ``events``, ``event_json`` and ``event_to_state_groups``."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.reads = thread_reads(settings, sleep)

    def __call__(self, room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        what = f"{len(event_ids)} event(s)"
        found = self._read(what, room_id, lambda cur: recall_events(cur, room_id, event_ids))
        metrics.RECALLED_EVENTS.inc(len(found))
        return found

    def groups(self, room_id: str, group_ids: Sequence[int]) -> Mapping[int, tuple[StateRow, ...]]:
        """A ``GroupRecall``: the rows of the room's state groups ``group_ids``."""
        what = f"the rows of {len(group_ids)} state group(s)"
        found = self._read(what, room_id, lambda cur: recall_group_rows(cur, room_id, group_ids))
        metrics.RECALLED_GROUPS.inc(len(found))
        return found

    def redactions(self, room_id: str, targets: Sequence[str]) -> Mapping[str, Sequence[str]]:
        """A ``RedactionRecall``: the stored redactions of ``targets``, in stream order."""
        what = f"the redactions of {len(targets)} event(s)"
        return self._read(what, room_id, lambda cur: recall_redactions(cur, room_id, targets))

    def _read(self, what: str, room_id: str, read: Callable[[Any], T]) -> T:
        def once() -> T:
            with self.reads.conn().cursor() as cur:
                return read(cur)

        def retrying(e: BaseException, n: int) -> None:
            metrics.WORKER_RETRIES.labels("recall").inc()
            if n < ATTEMPTS:
                log.info("recalling %s of room %s failed (%s); retrying", what, room_id, e)

        try:
            return self.reads.read(once, retrying)
        except psycopg2.Error as e:
            raise RecallFailed(
                f"recalling {what} of room {room_id} from PostgreSQL failed {ATTEMPTS} "
                f"times, last with {type(e).__name__}: {str(e).strip()}; the room's "
                "events cannot be decided without them (check that PostgreSQL is "
                "reachable)"
            ) from e
