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
from typing import Protocol

import psycopg2

from db.chunk_marks import load_marks
from pipeline import metrics
from pipeline.config import Settings
from pipeline.pg import RetriedReads

__all__ = ["HighWaters", "PgHighWaters"]

log = logging.getLogger("roomstream.worker")

CONNECT_TIMEOUT_S = 5
ATTEMPTS = 3


def thread_reads(
    settings: Settings, sleep: Callable[[float], None], *, autocommit: bool = True
) -> RetriedReads:
    """The worker's reads of PostgreSQL from its processing threads: one connection per thread,
    ``ATTEMPTS`` tries each."""
    return RetriedReads(
        settings,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        attempts=ATTEMPTS,
        sleep=sleep,
    )


class HighWaters(Protocol):
    def __call__(self, room_id: str) -> int | None:
        """The room's committed chunk high-water; 0 when none; None when it cannot be read."""
        ...


class PgHighWaters:
    """Reads ``room_chunk_marks`` over one connection per processing thread."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.reads = thread_reads(settings, sleep)

    def __call__(self, room_id: str) -> int | None:
        def read() -> int:
            with self.reads.conn().cursor() as cur:
                mark = load_marks(cur, [room_id]).get(room_id)
            return 0 if mark is None else mark.last_seq

        try:
            return self.reads.read(read, _count_retry)
        except psycopg2.Error as e:
            log.warning(
                "cannot read room %s's committed chunk high-water (%s); its stored "
                "state is used unchecked",
                room_id,
                str(e).strip(),
            )
            return None


def _count_retry(_error: BaseException, _attempt: int) -> None:
    metrics.WORKER_RETRIES.labels("marks").inc()
