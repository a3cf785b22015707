"""The committed chunk high-water of a room, read from PostgreSQL.

PostgreSQL is the source of truth (DESIGN.md invariant 8); the worker's stored room state is a
cache of it. The committer keeps, per room, the highest chunk number it committed
(``room_chunk_marks``, ``db.chunk_marks``): the last event sequence number of the room's
committed chunks. ``rebuild`` compares a room's stored state with it (and with the chunks in
flight) before the room's first input after an assignment, and rebuilds a state that is behind.

Reading the mark is a safety check: when PostgreSQL cannot be reached it is retried a few times
and then skipped for that room with a warning, rather than stopping the rooms' processing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg2

from db.chunk_marks import load_marks
from pipeline import metrics
from pipeline.config import Settings
from pipeline.pg import ThreadConnections

__all__ = ["HighWaters", "PgHighWaters"]

log = logging.getLogger("roomstream.worker")

CONNECT_TIMEOUT_S = 5
ATTEMPTS = 3


class HighWaters(Protocol):
    def __call__(self, room_id: str) -> int | None:
        """The room's committed chunk high-water; 0 when none; None when it cannot be read."""
        ...


class PgHighWaters:
    """Reads ``room_chunk_marks`` over one connection per processing thread."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep
        self._conns = ThreadConnections(
            settings, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )

    def _conn(self) -> Any:
        return self._conns.get()

    def __call__(self, room_id: str) -> int | None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._conn().cursor() as cur:
                    mark = load_marks(cur, [room_id]).get(room_id)
                return 0 if mark is None else mark.last_seq
            except psycopg2.Error as e:
                self._conns.drop()
                metrics.WORKER_RETRIES.labels("marks").inc()
                if attempt == ATTEMPTS:
                    log.warning(
                        "cannot read room %s's committed chunk high-water (%s); its stored "
                        "state is used unchecked",
                        room_id,
                        str(e).strip(),
                    )
                    return None
                self.sleep(0.2 * attempt)
        return None  # pragma: no cover
