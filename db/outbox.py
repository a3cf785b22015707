"""The committer's bookkeeping tables: consumed offsets, stream position, invalidation outbox.

An outbox row is one encoded invalidation message, or one part of a split message: rows are
keyed (position, part). Every function runs on a cursor inside the caller's transaction; none
commits.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db.bulk import Statement, array_literal

__all__ = [
    "CommitterProgress",
    "OutboxRow",
    "committer_progress",
    "last_stream_ordering",
    "load_offsets",
    "mark_sent",
    "mark_sent_statement",
    "offsets_statement",
    "outbox_copy",
    "prune_sent",
    "prune_sent_statement",
    "store_offsets",
    "store_outbox",
    "unsent_outbox",
]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    prev_position: int
    room_id: str | None  # the message's room when it covers one; the record's key
    message: bytes  # the exact bytes to publish
    part: int = 0
    parts: int = 1


# COPY's binary format: its signature, flags and header extension length, and the end marker.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_BINARY_TRAILER = struct.pack("!h", -1)


def store_outbox(cur: Any, rows: Sequence[OutboxRow]) -> None:
    """Write outbox rows (by ``outbox_copy``)."""
    copy = outbox_copy(rows)
    if copy is not None:
        cur.copy_expert(copy[0], io.BytesIO(copy[1]))


def outbox_copy(rows: Sequence[OutboxRow]) -> tuple[str, bytes] | None:
    """The COPY statement and data that write ``rows`` (None when there is none), in COPY's
    binary format: a message travels as its bytes, not as twice as many hex digits for the
    server to decode."""
    if not rows:
        return None
    out = [_BINARY_HEADER]
    for r in rows:
        out.append(struct.pack("!hiqiq", 6, 8, r.position, 8, r.prev_position))
        if r.room_id is None:
            out.append(struct.pack("!i", -1))
        else:
            room = r.room_id.encode()
            out += [struct.pack("!i", len(room)), room]
        out += [struct.pack("!i", len(r.message)), r.message]
        out.append(struct.pack("!iiii", 4, r.part, 4, r.parts))
    out.append(_BINARY_TRAILER)
    return (
        "COPY invalidation_outbox (position, prev_position, room_id, message, part, parts)"
        " FROM STDIN WITH (FORMAT binary)",
        b"".join(out),
    )


def load_offsets(cur: Any, topic: str) -> dict[int, int]:
    """partition -> next offset to read, for the partitions of ``topic`` consumed so far."""
    cur.execute("SELECT partition, next_offset FROM committer_offsets WHERE topic = %s", (topic,))
    return {int(p): int(o) for p, o in cur.fetchall()}


def store_offsets(cur: Any, offsets: Mapping[tuple[str, int], int]) -> None:
    """Record (topic, partition) -> next offset; the caller commits it with the rows it produced."""
    statement = offsets_statement(offsets)
    if statement is not None:
        cur.execute(*statement)


def offsets_statement(offsets: Mapping[tuple[str, int], int]) -> Statement | None:
    """``store_offsets``'s statement (None when there is no offset)."""
    if not offsets:
        return None
    ordered = sorted(offsets.items())
    return (
        "INSERT INTO committer_offsets (topic, partition, next_offset) "
        "SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
        "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        [
            array_literal(t for (t, _), _ in ordered),
            array_literal((p for (_, p), _ in ordered), "int"),
            array_literal((o for _, o in ordered), "bigint"),
        ],
    )


def last_stream_ordering(cur: Any) -> int:
    """The highest stream ordering handed out so far (0 before the first event)."""
    cur.execute("SELECT stream_id FROM stream_positions WHERE stream_name = 'events'")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def unsent_outbox(cur: Any) -> list[OutboxRow]:
    """Outbox rows not yet published, oldest first."""
    cur.execute(
        "SELECT position, prev_position, room_id, message, part, parts FROM invalidation_outbox "
        "WHERE NOT sent ORDER BY position, part"
    )
    return [
        OutboxRow(int(p), int(pp), r, bytes(m), int(pt), int(n))
        for p, pp, r, m, pt, n in cur.fetchall()
    ]


def mark_sent(cur: Any, positions: Iterable[int]) -> None:
    """Mark every part of the messages at ``positions`` sent."""
    statement = mark_sent_statement(positions)
    if statement is not None:
        cur.execute(*statement)


def mark_sent_statement(positions: Iterable[int]) -> Statement | None:
    """``mark_sent``'s statement (None when there is no position)."""
    ps = sorted(set(positions))
    if not ps:
        return None
    # Published rows are always a run of whole messages: one range covers them.
    return (
        "UPDATE invalidation_outbox SET sent = TRUE WHERE position BETWEEN %s AND %s "
        "AND position = ANY(%s::bigint[]) AND NOT sent",
        [ps[0], ps[-1], array_literal(ps, "bigint")],
    )


def prune_sent(cur: Any, keep: int) -> None:
    """Delete sent messages more than ``keep`` positions old (kept for operators to inspect)."""
    cur.execute(*prune_sent_statement(keep))


def prune_sent_statement(keep: int) -> Statement:
    return (
        "DELETE FROM invalidation_outbox WHERE sent AND position < ("
        " SELECT stream_id FROM stream_positions WHERE stream_name = 'events') - %s",
        [keep],
    )


@dataclass(frozen=True, slots=True)
class CommitterProgress:
    """What ``roomstream status`` shows of the committer."""

    next_offset: int | None  # the next chunks offset to read; None before the first commit
    last_stream_ordering: int
    last_sent_position: int | None  # of the newest invalidation message published
    unsent_messages: int
    divergences: int = 0  # chunks delivered again with other content than committed
    last_divergence: str | None = None  # the newest such chunk's id


def committer_progress(cur: Any, chunks_topic: str) -> CommitterProgress:
    cur.execute(
        "SELECT"
        " (SELECT next_offset FROM committer_offsets WHERE topic = %s AND partition = 0),"
        " (SELECT stream_id FROM stream_positions WHERE stream_name = 'events'),"
        " (SELECT max(position) FROM invalidation_outbox WHERE sent),"
        " (SELECT count(*) FROM invalidation_outbox WHERE NOT sent),"
        " (SELECT count(*) FROM chunk_divergences),"
        " (SELECT chunk_id FROM chunk_divergences ORDER BY id DESC LIMIT 1)",
        (chunks_topic,),
    )
    offset, last, sent, unsent, diverged, last_diverged = cur.fetchone()
    return CommitterProgress(
        None if offset is None else int(offset),
        int(last or 0),
        None if sent is None else int(sent),
        int(unsent),
        int(diverged),
        last_diverged,
    )
