"""Fencing the committer: a generation number taken with the lock, checked in every commit.

The advisory lock decides who is active, but a committer can lose it without noticing (its
session ended by the server while the process was paused or cut off). ``take_generation``,
called right after the lock is acquired, advances the generation of the lock's key; the first
statement of every commit transaction (``db.writer``'s, or ``check_generation``) row-locks it
and refuses to go on unless it is still the caller's. So a stale committer that resumes cannot
commit, whatever it believes, and a commit in flight when a new committer takes over finishes
before the new generation is taken.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import RoomstreamError

__all__ = ["Fenced", "check_generation", "take_generation"]


class Fenced(RoomstreamError):
    """Another committer took over since this one became active; it must not write."""

    def __init__(self, lock_key: int, generation: int) -> None:
        self.lock_key = lock_key
        self.generation = generation
        super().__init__(
            f"committer generation {generation} (lock key {lock_key}) is no longer current: "
            "another committer took over; this one stands by again"
        )


def take_generation(cur: Any, lock_key: int) -> int:
    """The next generation of ``lock_key``, recorded; the caller commits it at once."""
    cur.execute(
        "INSERT INTO committer_fence (lock_key, generation) VALUES (%s, 1) "
        "ON CONFLICT (lock_key) DO UPDATE SET generation = committer_fence.generation + 1 "
        "RETURNING generation",
        (lock_key,),
    )
    row = cur.fetchone()
    return int(row[0])


def check_generation(cur: Any, lock_key: int, generation: int) -> None:
    """Row-lock the fence and raise Fenced unless ``generation`` is still the current one."""
    cur.execute(
        "SELECT generation FROM committer_fence WHERE lock_key = %s FOR UPDATE", (lock_key,)
    )
    row = cur.fetchone()
    if row is None or int(row[0]) != generation:
        raise Fenced(lock_key, generation)
