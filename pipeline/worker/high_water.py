"""The committed chunk high-water of a room, read from PostgreSQL, and what a worker makes of it.

PostgreSQL is the source of truth (DESIGN.md invariant 8); the worker's stored room state is a
cache of it. The committer keeps, per room, the highest chunk number it committed
(``room_chunk_marks``, ``db.chunk_marks``). When a room's first input that is new to the
partition (at or above the partition's end offset when it was assigned) is processed, every
earlier input of the room has been processed again, so the room's own chunk counter must have
reached that high-water. If it has not, the stored state is stale or missing (a changelog lost,
truncated, or overwritten): the worker says so (ERROR, ``roomstream_worker_stale_rooms_total``)
and moves its counter past the high-water, so it never sends a chunk under a number already
committed for other content.

Reading the mark is a safety check: when PostgreSQL cannot be reached it is retried a few times
and then skipped for that room with a warning, rather than stopping the rooms' processing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg2

from db.chunk_marks import load_marks
from pipeline import metrics
from pipeline.room.processor import RoomProcessor

__all__ = ["HighWaters", "PgHighWaters", "chunk_counter", "skip_to"]

log = logging.getLogger("roomstream.worker")

CONNECT_TIMEOUT_S = 5
ATTEMPTS = 3


class HighWaters(Protocol):
    def __call__(self, room_id: str) -> int | None:
        """The room's committed chunk high-water; 0 when none; None when it cannot be read."""
        ...


class PgHighWaters:
    """Reads ``room_chunk_marks`` over one connection per processing thread."""

    def __init__(self, database_url: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.database_url = database_url
        self.sleep = sleep
        self._local = threading.local()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.database_url, connect_timeout=CONNECT_TIMEOUT_S)
            conn.autocommit = True
            self._local.conn = conn
        return conn

    def __call__(self, room_id: str) -> int | None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._conn().cursor() as cur:
                    mark = load_marks(cur, [room_id]).get(room_id)
                return 0 if mark is None else mark.last_seq
            except psycopg2.Error as e:
                self._local.conn = None
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


def chunk_counter(proc: RoomProcessor) -> int:
    """The number of the room's last chunk (the n of ``<room_id>/<n>``: its event sequence)."""
    return proc.event_seq


def skip_to(proc: RoomProcessor, high_water: int) -> None:
    """Move the room's chunk counter to ``high_water``: its next chunk is numbered above it."""
    proc.event_seq = max(proc.event_seq, high_water)


def check(proc: RoomProcessor, room_id: str, high_waters: HighWaters) -> bool:
    """Whether the room's state was found stale (and its counter moved past the high-water)."""
    high = high_waters(room_id)
    if high is None:
        return False
    counter = chunk_counter(proc)
    if high <= counter:
        return False
    metrics.STALE_ROOMS.inc()
    log.error(
        "room %s: PostgreSQL committed its chunks up to %d, but its stored state is at chunk "
        "%d: the worker's changelog was lost, truncated or overwritten. Its next chunk is "
        "numbered %d; events that need the missing history are parked and requested again "
        "on the missing-events topic",
        room_id,
        high,
        counter,
        high + 1,
    )
    skip_to(proc, high)
    return True
