"""The committer's bookkeeping tables: consumed offsets, stream position, invalidation outbox.

Every function runs on a cursor inside the caller's transaction; none commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values

__all__ = [
    "CommitterProgress",
    "OutboxRow",
    "committer_progress",
    "last_stream_ordering",
    "load_offsets",
    "mark_sent",
    "prune_sent",
    "store_offsets",
    "unsent_outbox",
]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    prev_position: int
    room_id: str
    message: bytes  # the exact bytes to publish


def load_offsets(cur: Any, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for the partitions of ``topic`` consumed so far."""
    cur.execute("SELECT partition, next_offset FROM committer_offsets WHERE topic = %s", (topic,))
    return {int(p): int(o) for p, o in cur.fetchall()}


def store_offsets(cur: Any, offsets: Mapping[tuple[str, int], int]) -> None:
    """Record (topic, partition) -> next offset; the caller commits it with the rows it produced."""
    if not offsets:
        return
    execute_values(
        cur,
        "INSERT INTO committer_offsets (topic, partition, next_offset) VALUES %s "
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        [(t, p, o) for (t, p), o in sorted(offsets.items())],
    )


def last_stream_ordering(cur: Any) -> int:
    """The highest stream ordering handed out so far (0 before the first event)."""
    cur.execute("SELECT stream_id FROM stream_positions WHERE stream_name = 'events'")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def unsent_outbox(cur: Any) -> list[OutboxRow]:
    """Outbox rows not yet published, oldest first."""
    cur.execute(
        "SELECT position, prev_position, room_id, message FROM invalidation_outbox "
        "WHERE NOT sent ORDER BY position"
    )
    return [OutboxRow(int(p), int(pp), r, bytes(m)) for p, pp, r, m in cur.fetchall()]


def mark_sent(cur: Any, positions: Iterable[int]) -> None:
    ps = list(positions)
    if ps:
        cur.execute("UPDATE invalidation_outbox SET sent = TRUE WHERE position = ANY(%s)", (ps,))


def prune_sent(cur: Any, keep: int) -> None:
    """Delete sent rows except the newest ``keep`` (kept for operators to inspect)."""
    cur.execute(
        "DELETE FROM invalidation_outbox WHERE sent AND position < ("
        " SELECT min(position) FROM ("
        "  SELECT position FROM invalidation_outbox ORDER BY position DESC LIMIT %s) AS newest)",
        (keep,),
    )


@dataclass(frozen=True, slots=True)
class CommitterProgress:
    """What ``roomstream status`` shows of the committer."""

    next_offset: int | None  # the next chunks offset to read; None before the first commit
    last_stream_ordering: int
    last_sent_position: int | None  # of the newest invalidation message published
    unsent_messages: int


def committer_progress(cur: Any, chunks_topic: str) -> CommitterProgress:
    cur.execute(
        "SELECT"
        " (SELECT next_offset FROM committer_offsets WHERE topic = %s AND partition = 0),"
        " (SELECT stream_id FROM stream_positions WHERE stream_name = 'events'),"
        " (SELECT max(position) FROM invalidation_outbox WHERE sent),"
        " (SELECT count(*) FROM invalidation_outbox WHERE NOT sent)",
        (chunks_topic,),
    )
    offset, last, sent, unsent = cur.fetchone()
    return CommitterProgress(
        None if offset is None else int(offset),
        int(last or 0),
        None if sent is None else int(sent),
        int(unsent),
    )
