"""Which chunks were committed: a per-room high-water plus a window of recent chunk digests.

Chunk ids are ``<room_id>/<n>`` with ``n`` increasing per room, so the highest ``n`` committed
per room (``room_chunk_marks``) says whether a chunk was committed, in bounded space. Each
chunk's content digest is kept with it: the room's last one in the mark, recent ones in
``committed_chunks`` (pruned to a window of stream positions). A chunk delivered again is
compared with what was committed: the same content is a replay and is skipped; other content is
a divergence, recorded in ``chunk_divergences`` and reported, never skipped silently.

The digest is the one the room processor gives the chunk (``Chunk.compute_digest``: its events
with their outcome, state groups, current state, extremities, memberships and redactions). A new
chunk is recorded with the digest it carries, unchecked; a chunk delivered again is compared by
the digest of its content, computed then (``content_digest``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db.bulk import Statement, array_literal
from pipeline.room.chunk import Chunk
from topics.chunk import CommitChunk

__all__ = [
    "COMMITTED_WINDOW",
    "Committed",
    "Divergence",
    "Mark",
    "chunk_digest",
    "chunk_seq",
    "content_digest",
    "divergences_statement",
    "load_marks",
    "marks_statement",
    "prune_committed",
    "prune_committed_statement",
    "record_divergences",
    "store_marks",
    "stored_digests",
]

COMMITTED_WINDOW = 1_000_000  # stream positions of committed_chunks kept for comparison


@dataclass(slots=True)  # one per chunk committed: not frozen, which costs a third of a µs more
class Committed:
    """What was committed under a chunk id: the chunk's first event sequence number (None for a
    chunk from before chunks carried one) and its digest."""

    first: int | None
    digest: bytes | None


@dataclass(slots=True)
class Mark:
    last_seq: int
    last: Committed


@dataclass(frozen=True, slots=True)
class Divergence:
    chunk: CommitChunk
    stored_digest: bytes | None
    new_digest: bytes
    source_offset: int | None


def chunk_seq(chunk: Chunk | CommitChunk) -> int:
    """The ``n`` of chunk id ``<room_id>/<n>``; ValueError when the id is not of that form."""
    if isinstance(chunk, CommitChunk):
        return chunk.number  # checked when it was read
    room, sep, n = chunk.chunk_id.rpartition("/")
    if not sep or room != chunk.room_id or not n.isdigit():
        raise ValueError(
            f"chunk id {chunk.chunk_id!r} is not <room_id>/<n> for room {chunk.room_id!r}"
        )
    return int(n)


def chunk_digest(chunk: CommitChunk) -> bytes:
    """The digest a new chunk is recorded with: the one it carries (the room processor computed
    it from the content it encoded), or, for a chunk from before chunks carried one, computed."""
    return bytes.fromhex(chunk.digest or chunk.content_digest())


def content_digest(chunk: CommitChunk) -> bytes:
    """The digest of the chunk's content, computed, whatever it carries: what a chunk delivered
    again is compared by, so a carried digest that is not its content's cannot make other
    content pass for what was committed."""
    return bytes.fromhex(chunk.content_digest())


def load_marks(cur: Any, rooms: Iterable[str]) -> dict[str, Mark]:
    cur.execute(
        "SELECT room_id, last_seq, last_first, last_digest FROM room_chunk_marks"
        " WHERE room_id = ANY(%s::text[])",
        (array_literal(rooms),),
    )
    return {r: Mark(int(s), _committed(f, d)) for r, s, f, d in cur.fetchall()}


def _committed(first: int | None, digest: Any) -> Committed:
    return Committed(
        None if first is None else int(first), None if digest is None else bytes(digest)
    )


def stored_digests(cur: Any, chunk_ids: Sequence[str]) -> dict[str, Committed]:
    """What was committed under those of ``chunk_ids`` still in the window of recent chunks."""
    if not chunk_ids:
        return {}
    cur.execute(
        "SELECT chunk_id, seq_first, digest FROM committed_chunks WHERE chunk_id = ANY(%s::text[])",
        (array_literal(chunk_ids),),
    )
    return {c: _committed(f, d) for c, f, d in cur.fetchall()}


def store_marks(cur: Any, marks: Mapping[str, tuple[int, Committed]]) -> None:
    """Raise each room's high-water to (seq, what was committed there)."""
    statement = marks_statement(marks)
    if statement is not None:
        cur.execute(*statement)


def marks_statement(marks: Mapping[str, tuple[int, Committed]]) -> Statement | None:
    """``store_marks``'s statement (None when there is no mark)."""
    if not marks:
        return None
    # One array per column: one statement whatever the number of rooms.
    return (
        "INSERT INTO room_chunk_marks (room_id, last_seq, last_first, last_digest) "
        "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bytea[]) "
        "ON CONFLICT (room_id) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
        "last_first = EXCLUDED.last_first, last_digest = EXCLUDED.last_digest "
        "WHERE room_chunk_marks.last_seq < EXCLUDED.last_seq",
        [
            array_literal(marks),
            array_literal((s for s, _ in marks.values()), "bigint"),
            array_literal((c.first for _, c in marks.values()), "bigint"),
            array_literal((c.digest for _, c in marks.values()), "bytea"),
        ],
    )


def record_divergences(cur: Any, found: Sequence[Divergence]) -> None:
    statement = divergences_statement(found)
    if statement is not None:
        cur.execute(*statement)


def divergences_statement(found: Sequence[Divergence]) -> Statement | None:
    """``record_divergences``'s statement (None when there is none)."""
    if not found:
        return None
    return (
        "INSERT INTO chunk_divergences "
        "(chunk_id, room_id, stored_digest, new_digest, source_offset) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[], %s::bigint[])",
        [
            array_literal(d.chunk.chunk_id for d in found),
            array_literal(d.chunk.room_id for d in found),
            array_literal((d.stored_digest for d in found), "bytea"),
            array_literal((d.new_digest for d in found), "bytea"),
            array_literal((d.source_offset for d in found), "bigint"),
        ],
    )


def prune_committed(cur: Any, window: int = COMMITTED_WINDOW) -> int:
    """Drop committed_chunks rows older than ``window`` stream positions; the count dropped."""
    cur.execute(*prune_committed_statement(window))
    return int(cur.rowcount)


def prune_committed_statement(window: int = COMMITTED_WINDOW) -> Statement:
    return (
        "DELETE FROM committed_chunks WHERE committed_at <= ("
        " SELECT stream_id FROM stream_positions WHERE stream_name = 'events') - %s",
        [window],
    )
