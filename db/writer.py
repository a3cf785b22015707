"""The bulk writer: one batch of room chunks into PostgreSQL, inside the caller's transaction.

``write_batch`` checks the caller's fencing generation, assigns stream orderings (contiguous, in
commit order, from the locked ``stream_positions`` row), writes every table of DESIGN.md's
schema with one bulk statement per table, never one per row: ``COPY`` for rows that cannot
conflict (those of events stored now), ``execute_values`` for upserts and deletes. It raises
the rooms' chunk high-water marks, records the consumed offsets and ONE invalidation message
for the whole batch (several outbox rows when the message is split into parts). The caller
commits.

Replays are harmless: a chunk at or below its room's high-water was committed before and is
skipped whole when its content is the same (a divergence is reported when it is not), and an
event already stored (by another chunk) is skipped and gets no stream ordering, so orderings
stay contiguous. A chunk's changes are net changes; within a batch they apply in chunk order, so
the last chunk to touch a current-state key or forward extremity wins.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg2.extras import execute_values

from db.chunk_marks import (
    Committed,
    Divergence,
    chunk_digest,
    chunk_seq,
    load_marks,
    store_marks,
    stored_digests,
)
from db.fence import check_generation
from db.outbox import OutboxRow, store_offsets
from pipeline.errors import SchemaError
from pipeline.matrix.events import Event
from pipeline.matrix.room_versions import room_version
from pipeline.room.chunk import Chunk

__all__ = ["BatchResult", "CommittedChunk", "Fence", "MessageBuilder", "write_batch"]

Change = tuple[Chunk, Mapping[str, int]]
MessageBuilder = Callable[[Sequence[Change], int, int], list[bytes]]
"""(chunks with the orderings of their events stored now, position, prev_position) -> the
encoded parts of the batch's invalidation message."""

PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Fence:
    lock_key: int
    generation: int


@dataclass(frozen=True, slots=True)
class CommittedChunk:
    chunk: Chunk
    stream_orderings: dict[str, int]  # the events stored now; others were stored before
    position: int | None  # highest stream ordering; None when no event was stored
    prev_position: int


@dataclass(slots=True)
class BatchResult:
    committed: list[CommittedChunk] = field(default_factory=list)
    skipped_chunk_ids: list[str] = field(default_factory=list)
    unverified_chunk_ids: list[str] = field(default_factory=list)  # skipped, digest pruned
    divergences: list[Divergence] = field(default_factory=list)
    # New chunks that start past their room's high-water + 1: (chunk id, high-water before).
    gaps: list[tuple[str, int]] = field(default_factory=list)
    skipped_event_ids: list[str] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    last_stream_ordering: int = 0


def _values(cur: Any, sql: str, rows: Sequence[tuple[Any, ...]], fetch: bool = False) -> Any:
    if not rows:
        return []
    return execute_values(cur, sql, rows, page_size=PAGE_SIZE, fetch=fetch)


def _copy_field(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, str):
        # Most text needs no escape: test for each special character (a C scan) rather than
        # translating every string.
        text: str = v
        if "\\" in text:
            text = text.replace("\\", "\\\\")
        if "\t" in text:
            text = text.replace("\t", "\\t")
        if "\n" in text:
            text = text.replace("\n", "\\n")
        if "\r" in text:
            text = text.replace("\r", "\\r")
        if "\x00" in text:
            # COPY would cut the value short; refuse it as an INSERT would.
            raise ValueError(f"text value contains a NUL character: {text[:40]!r}")
        return text
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return "\\\\x" + v.hex()
    return str(v)


def _copy(cur: Any, table: str, columns: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into ``table``: the fastest bulk path, for rows that cannot conflict."""
    if not rows:
        return
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(map(_copy_field, row)))
        buf.write("\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)


def _sort_out(
    cur: Any, chunks: Sequence[Chunk], sources: Sequence[int | None], result: BatchResult
) -> tuple[list[Chunk], dict[str, tuple[int, Committed]], dict[str, Committed]]:
    """The chunks not committed before, in order, the rooms' new high-water marks, and what
    each new chunk commits under its id.

    A chunk at or below its room's high-water was committed before: the same range of event
    sequence numbers with the same digest is a replay, and so is another range ending there (a
    replay batched otherwise: every event it holds is stored), both in
    ``result.skipped_chunk_ids``; the same range with another digest is a divergence
    (``result.divergences``); one whose record was pruned goes to ``unverified_chunk_ids``. A new
    chunk that starts past the high-water + 1 leaves a gap (``result.gaps``).
    """
    marks = load_marks(cur, {c.room_id for c in chunks})
    seqs = [chunk_seq(c) for c in chunks]
    older = [
        c.chunk_id
        for c, n in zip(chunks, seqs, strict=True)
        if c.room_id in marks and n <= marks[c.room_id].last_seq
    ]
    before = stored_digests(cur, older)
    new_marks: dict[str, tuple[int, Committed]] = {}
    in_batch: dict[str, Committed] = {}
    fresh: list[Chunk] = []
    for c, n, src in zip(chunks, seqs, sources, strict=True):
        digest = chunk_digest(c)
        now = Committed(c.seq[0] if c.digest else None, digest)
        mark = marks.get(c.room_id)
        high = new_marks[c.room_id][0] if c.room_id in new_marks else (mark.last_seq if mark else 0)
        if n > high:
            if now.first is not None and high and now.first > high + 1:
                result.gaps.append((c.chunk_id, high))
            new_marks[c.room_id] = (n, now)
            in_batch[c.chunk_id] = now
            fresh.append(c)
            continue
        if c.chunk_id in in_batch:
            stored = in_batch[c.chunk_id]
        elif c.chunk_id in before:
            stored = before[c.chunk_id]
        elif mark is not None and n == mark.last_seq:
            stored = mark.last
        else:
            result.unverified_chunk_ids.append(c.chunk_id)
            continue
        if (
            stored.digest is None
            or stored.digest == digest
            or (stored.first is not None and now.first is not None and stored.first != now.first)
        ):
            result.skipped_chunk_ids.append(c.chunk_id)
        else:
            result.divergences.append(Divergence(c, stored.digest, digest, src))
    return fresh, new_marks, in_batch


def write_batch(
    cur: Any,
    chunks: Sequence[Chunk],
    offsets: Mapping[tuple[str, int], int],
    build_message: MessageBuilder | None = None,
    *,
    fence: Fence | None = None,
    sources: Sequence[int | None] | None = None,
) -> BatchResult:
    """Write ``chunks`` in order and record ``offsets`` ((topic, partition) -> next offset).

    With ``fence``, raise ``Fenced`` (before writing anything) unless its generation is current.
    With ``build_message``, a batch that stored at least one event gets its outbox row(s).
    ``sources`` are the chunks' offsets on the chunks topic, for divergence reports. A chunk
    id not of the form ``<room_id>/<n>`` raises ValueError.
    """
    if fence is not None:
        check_generation(cur, fence.lock_key, fence.generation)
    result = BatchResult()
    new_chunks, new_marks, digests = _sort_out(
        cur, chunks, sources if sources is not None else [None] * len(chunks), result
    )
    event_ids = [e.event_id for c in new_chunks for e in c.events]
    stored: set[str] = set()
    if event_ids:
        cur.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)", (event_ids,))
        stored = {r[0] for r in cur.fetchall()}
    fresh: list[list[str]] = []  # per chunk, its events stored now, in order
    for c in new_chunks:
        ids_now: list[str] = []
        for e in c.events:
            if e.event_id in stored:
                result.skipped_event_ids.append(e.event_id)
            else:
                stored.add(e.event_id)
                ids_now.append(e.event_id)
        fresh.append(ids_now)

    # The row lock on stream_positions serialises committers: orderings are handed out in
    # commit order, and nobody else can hand out the same range before this one commits.
    total = sum(len(f) for f in fresh)
    cur.execute(
        "UPDATE stream_positions SET stream_id = stream_id + %s "
        "WHERE stream_name = 'events' RETURNING stream_id",
        (total,),
    )
    row = cur.fetchone()
    if row is None:
        raise SchemaError(
            "table stream_positions has no 'events' row: the schema is incomplete; "
            "recreate the database and run `roomstream db migrate`"
        )
    last = int(row[0])
    result.last_stream_ordering = last
    next_so = last - total + 1
    prev_position = last - total

    rows = _Rows()
    changes: list[Change] = []
    for c, ids_now in zip(new_chunks, fresh, strict=True):
        orderings = {eid: next_so + i for i, eid in enumerate(ids_now)}
        next_so += len(ids_now)
        rows.add_chunk(c, orderings)
        position = next_so - 1 if ids_now else None
        result.committed.append(CommittedChunk(c, orderings, position, prev_position))
        committed = digests[c.chunk_id]
        rows.committed_chunks.append(
            (c.chunk_id, position, committed.first, committed.digest, last)
        )
        if ids_now:
            changes.append((c, orderings))
    if changes and build_message is not None:
        parts = build_message(changes, last, prev_position)
        rooms = {c.room_id for c, _ in changes}
        key = next(iter(rooms)) if len(rooms) == 1 else None
        result.outbox.extend(
            OutboxRow(last, prev_position, key, data, i, len(parts)) for i, data in enumerate(parts)
        )

    rows.write(cur)
    store_marks(cur, new_marks)
    _copy(
        cur,
        "invalidation_outbox",
        "position, prev_position, room_id, message, part, parts",
        [
            (o.position, o.prev_position, o.room_id, o.message, o.part, o.parts)
            for o in result.outbox
        ],
    )
    store_offsets(cur, offsets)
    return result


class _Rows:
    """The rows of one batch, table by table, folded so that no key repeats in a statement."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.event_json: list[tuple[Any, ...]] = []
        self.event_edges: list[tuple[Any, ...]] = []
        self.event_auth: list[tuple[Any, ...]] = []
        self.event_to_state_groups: list[tuple[Any, ...]] = []
        self.state_groups: list[tuple[Any, ...]] = []
        self.state_groups_state: list[tuple[Any, ...]] = []
        self.state_group_edges: list[tuple[Any, ...]] = []
        self.memberships: dict[str, tuple[Any, ...]] = {}  # by event_id
        self.redactions: dict[str, tuple[Any, ...]] = {}  # by event_id
        self._group_ids: set[int] = set()
        self.committed_chunks: list[tuple[Any, ...]] = []
        # (room, type, state_key) -> (event_id, membership), or None when removed
        self.current_state: dict[tuple[str, str, str], tuple[str, str | None] | None] = {}
        # (room, event_id) -> is a forward extremity
        self.extremities: dict[tuple[str, str], bool] = {}
        # room -> (room_version, creator, has its create event)
        self.rooms: dict[str, tuple[str, str | None, bool]] = {}

    def add_chunk(self, c: Chunk, orderings: Mapping[str, int]) -> None:
        rv = room_version(c.room_version)
        room = c.room_id
        creator = c.creator
        has_create = False
        for ce in c.events:
            so = orderings.get(ce.event_id)
            if so is None:
                continue
            ev = Event.from_trusted(ce.pdu, rv, ce.event_id)
            self.events.append(
                (
                    so,
                    ev.depth,
                    ev.event_id,
                    room,
                    ev.type,
                    ev.state_key,
                    ev.sender,
                    ev.origin_server_ts,
                    ce.received_ts,
                    int(ce.format_version),
                    ce.rejected,
                    ce.soft_failed,
                    ce.outlier,
                )
            )
            json_text = orjson.dumps(ce.pdu).decode()
            self.event_json.append((ev.event_id, room, int(ce.format_version), json_text))
            self.event_edges.extend((ev.event_id, p) for p in dict.fromkeys(ev.prev_event_ids))
            self.event_auth.extend((ev.event_id, a, room) for a in dict.fromkeys(ev.auth_event_ids))
            if ce.state_group is not None:
                self.event_to_state_groups.append((ev.event_id, ce.state_group))
            if ev.type == "m.room.create" and ev.state_key == "" and ce.rejected is None:
                has_create = True
                if creator is None:
                    # Since v11 the creator is the create event's sender; before, a content key.
                    raw = ev.sender if rv.implicit_room_creator else ev.content.get("creator")
                    creator = raw if isinstance(raw, str) else ev.sender
        for g in c.state_groups:
            if g.id in self._group_ids:
                continue
            self._group_ids.add(g.id)
            self.state_groups.append((g.id, room, g.event_id))
            if g.prev_group is not None:
                self.state_group_edges.append((g.id, g.prev_group))
            self.state_groups_state.extend((g.id, room, t, sk, eid) for t, sk, eid in g.delta)
        for m in c.memberships:
            so = orderings.get(m.event_id)
            if so is not None:
                row = (m.event_id, m.user_id, m.sender, room, m.membership, so)
                self.memberships[m.event_id] = row
        for r in c.redactions:
            if r.event_id in orderings:
                self.redactions[r.event_id] = (r.event_id, r.redacts)
        for t, sk in c.current_state_removed:
            self.current_state[(room, t, sk)] = None
        for cs in c.current_state_set:
            self.current_state[(room, cs.type, cs.state_key)] = (cs.event_id, cs.membership)
        for eid in c.forward_extremities_added:
            self.extremities[(room, eid)] = True
        for eid in c.forward_extremities_removed:
            self.extremities[(room, eid)] = False
        if has_create or room not in self.rooms:
            self.rooms[room] = (c.room_version, creator, has_create)

    def write(self, cur: Any) -> None:
        rooms_create = [(r, v, c) for r, (v, c, has) in self.rooms.items() if has]
        rooms_other = [(r, v, c) for r, (v, c, has) in self.rooms.items() if not has]
        # The create event in the batch is the authority on the room's version and creator.
        _values(
            cur,
            "INSERT INTO rooms (room_id, room_version, creator) VALUES %s ON CONFLICT (room_id) "
            "DO UPDATE SET room_version = EXCLUDED.room_version, creator = EXCLUDED.creator",
            rooms_create,
        )
        _values(
            cur,
            "INSERT INTO rooms (room_id, room_version, creator) VALUES %s "
            "ON CONFLICT (room_id) DO NOTHING",
            rooms_other,
        )
        # The rows of events stored now cannot conflict with stored rows (those events were
        # filtered out above), so they go in by COPY.
        _copy(
            cur,
            "events",
            "stream_ordering, topological_ordering, event_id, room_id, type, state_key, sender,"
            " origin_server_ts, received_ts, format_version, rejection_reason, soft_failed,"
            " outlier",
            self.events,
        )
        _copy(cur, "event_json", "event_id, room_id, format_version, json", self.event_json)
        _copy(cur, "event_edges", "event_id, prev_event_id", self.event_edges)
        _copy(cur, "event_auth", "event_id, auth_id, room_id", self.event_auth)
        # A state group already stored (a replay under another chunk id) keeps its rows.
        new_groups = {
            r[0]
            for r in _values(
                cur,
                "INSERT INTO state_groups (id, room_id, event_id) VALUES %s "
                "ON CONFLICT (id) DO NOTHING RETURNING id",
                self.state_groups,
                fetch=True,
            )
        }
        _copy(
            cur,
            "state_group_edges",
            "state_group, prev_state_group",
            [e for e in self.state_group_edges if e[0] in new_groups],
        )
        _copy(
            cur,
            "state_groups_state",
            "state_group, room_id, type, state_key, event_id",
            [r for r in self.state_groups_state if r[0] in new_groups],
        )
        _copy(cur, "event_to_state_groups", "event_id, state_group", self.event_to_state_groups)
        _copy(
            cur,
            "room_memberships",
            "event_id, user_id, sender, room_id, membership, event_stream_ordering",
            list(self.memberships.values()),
        )
        _copy(cur, "redactions", "event_id, redacts", list(self.redactions.values()))
        _values(
            cur,
            "DELETE FROM current_state_events AS c USING (VALUES %s) AS d(room_id, type, state_key)"
            " WHERE c.room_id = d.room_id AND c.type = d.type AND c.state_key = d.state_key",
            [k for k, v in self.current_state.items() if v is None],
        )
        _values(
            cur,
            "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
            " VALUES %s ON CONFLICT (room_id, type, state_key) DO UPDATE"
            " SET event_id = EXCLUDED.event_id, membership = EXCLUDED.membership",
            [(*k, *v) for k, v in self.current_state.items() if v is not None],
        )
        _values(
            cur,
            "DELETE FROM event_forward_extremities AS f USING (VALUES %s) AS d(room_id, event_id)"
            " WHERE f.room_id = d.room_id AND f.event_id = d.event_id",
            [k for k, added in self.extremities.items() if not added],
        )
        _values(
            cur,
            "INSERT INTO event_forward_extremities (room_id, event_id) VALUES %s"
            " ON CONFLICT DO NOTHING",
            [k for k, added in self.extremities.items() if added],
        )
        _copy(
            cur,
            "committed_chunks",
            "chunk_id, position, seq_first, digest, committed_at",
            self.committed_chunks,
        )
