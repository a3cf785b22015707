"""The bulk writer: one batch of room chunks into PostgreSQL, inside the caller's transaction.

``write_batch`` checks the caller's fencing generation, assigns stream orderings (contiguous, in
commit order, from the locked ``stream_positions`` row), writes every table of DESIGN.md's
schema with one bulk statement per table, never one per row (``db.bulk``): ``COPY`` for rows
that cannot conflict (those of events stored now), ``unnest`` of one array per column for
upserts and deletes. It reads chunks as the committer does (``topics.chunk.CommitChunk``): the
PDU fields it needs, and the JSON text event_json stores. It raises the rooms' chunk high-water
marks, records the consumed offsets and ONE invalidation message for the whole batch (several
outbox rows when the message is split into parts). The caller commits.

Replays are harmless: a chunk at or below its room's high-water was committed before and is
skipped whole when its content is the same (a divergence is reported when it is not), and an
event already stored (by another chunk) is skipped and gets no stream ordering, so orderings
stay contiguous. A chunk's changes are net changes; within a batch they apply in chunk order, so
the last chunk to touch a current-state key or forward extremity wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from db.bulk import (
    NULL,
    Statement,
    array_literal,
    copy_in,
    copy_line,
    copy_statement,
    copy_text,
    execute_all,
    unnest_statement,
)
from db.chunk_marks import (
    Committed,
    Divergence,
    Mark,
    chunk_digest,
    chunk_seq,
    content_digest,
    marks_statement,
)
from db.fence import Fenced
from db.outbox import OutboxRow, mark_sent_statement, offsets_statement, outbox_copy
from pipeline.errors import SchemaError
from pipeline.matrix.room_versions import EventFormat, room_version
from pipeline.room.chunk import Chunk
from topics.chunk import CommitChunk, for_commit

__all__ = [
    "BatchResult",
    "CommittedChunk",
    "Fence",
    "MessageBuilder",
    "Plan",
    "PositionMoved",
    "Reads",
    "build_batch",
    "execute_batch",
    "read_state",
    "write_batch",
]

Change = tuple[CommitChunk, Mapping[str, int]]
MessageBuilder = Callable[[Sequence[Change], int, int], list[bytes]]
"""(chunks with the orderings of their events stored now, position, prev_position) -> the
encoded parts of the batch's invalidation message."""


@dataclass(frozen=True, slots=True)
class Fence:
    lock_key: int
    generation: int


@dataclass(slots=True)  # one per chunk: not frozen, which costs a third of a µs more
class CommittedChunk:
    chunk: CommitChunk
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


class PositionMoved(Fenced):
    """The stream position is not where this committer's last commit left it: another writer
    committed in between, so whatever was built from what this one read is void."""

    def __init__(self, lock_key: int, generation: int, expected: int, found: int) -> None:
        super().__init__(lock_key, generation)
        self.args = (
            f"the stream position is {found}, not {expected} where this committer's last commit "
            "left it: another writer committed in between; this one stands by again",
        )


@dataclass(slots=True)
class Reads:
    """What a batch is built from: the database's state before it, as far as its chunks go."""

    position: int  # the stream position
    marks: dict[str, Mark]  # the chunks' rooms' high-water marks
    stored: set[str]  # those of the chunks' events stored already
    # committed_chunks' records of the chunks at or below their room's high-water
    digests: dict[str, Committed]


@dataclass(slots=True)
class Plan:
    """A batch built (``build_batch``) and ready to execute: every COPY's statement and data,
    then the other statements, and what the batch changes of ``Reads``."""

    result: BatchResult
    position: int  # the stream position the batch was built on
    copies: list[tuple[str, bytes]]
    statements: list[Statement | None]
    new_marks: dict[str, tuple[int, Committed]]
    fresh: set[str]  # the events it stores
    in_batch: dict[str, Committed]  # what it commits under each new chunk id
    sent: list[Any] = field(default_factory=list)  # the caller's record of what it marks sent

    def after(self, reads: Reads) -> Reads:
        """``reads`` taken before this batch, as they read once it is committed."""
        marks = dict(reads.marks)
        for room, (n, committed) in self.new_marks.items():
            marks[room] = Mark(n, committed)
        return Reads(
            self.result.last_stream_ordering,
            marks,
            reads.stored | self.fresh,
            {**reads.digests, **self.in_batch},
        )


def _sort_out(
    chunks: Sequence[CommitChunk],
    reads: Reads,
    sources: Sequence[int | None],
    result: BatchResult,
) -> tuple[list[CommitChunk], dict[str, tuple[int, Committed]], dict[str, Committed]]:
    """The chunks not committed before, in order, the rooms' new high-water marks, and what each
    new chunk commits under its id.

    A chunk at or below its room's high-water was committed before: the same range of event
    sequence numbers with the same digest is a replay, and so is another range ending there (a
    replay batched otherwise: every event it holds is stored), both in
    ``result.skipped_chunk_ids``; the same range with another digest is a divergence
    (``result.divergences``); one whose record was pruned goes to ``unverified_chunk_ids``. A new
    chunk that starts past the high-water + 1 leaves a gap (``result.gaps``). A new chunk is
    recorded with the digest it carries; one committed before is compared by the digest of its
    content, computed here.
    """
    marks, before = reads.marks, reads.digests
    seqs = [chunk_seq(c) for c in chunks]
    new_marks: dict[str, tuple[int, Committed]] = {}
    in_batch: dict[str, Committed] = {}
    fresh: list[CommitChunk] = []
    for c, n, src in zip(chunks, seqs, sources, strict=True):
        first = c.seq[0] if c.digest else None
        mark = marks.get(c.room_id)
        high = new_marks[c.room_id][0] if c.room_id in new_marks else (mark.last_seq if mark else 0)
        if n > high:
            if first is not None and high and first > high + 1:
                result.gaps.append((c.chunk_id, high))
            now = Committed(first, chunk_digest(c))
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
        if stored.first is not None and first is not None and stored.first != first:
            result.skipped_chunk_ids.append(c.chunk_id)  # a replay batched otherwise
            continue
        digest = content_digest(c)
        if stored.digest is None or stored.digest == digest:
            result.skipped_chunk_ids.append(c.chunk_id)
        else:
            result.divergences.append(Divergence(c, stored.digest, digest, src))
    return fresh, new_marks, in_batch


def read_state(
    cur: Any,
    fence: Fence | None,
    chunks: Sequence[CommitChunk],
    *,
    expect_position: int | None = None,
) -> Reads:
    """One statement, the first of a batch's transaction: row-lock the fence (raising Fenced
    unless the generation is ``fence``'s) and the stream position (raising PositionMoved unless
    it is ``expect_position``, when given), and read what ``chunks`` are built from.

    The row lock on stream_positions serialises committers: orderings are handed out in commit
    order, and nobody else can hand out the same range before this transaction ends. ``chunks``
    may be the next batch's, read ahead: their state before this batch, for ``Plan.after``.
    """
    cur.execute(
        "WITH fence AS (SELECT generation FROM committer_fence WHERE lock_key = %s FOR UPDATE),"
        " position AS ("
        "  SELECT stream_id FROM stream_positions WHERE stream_name = 'events' FOR UPDATE)"
        " SELECT 'p', NULL, (SELECT generation FROM fence), (SELECT stream_id FROM position),"
        "  NULL::bytea"
        " UNION ALL SELECT 'm', room_id, last_seq, last_first, last_digest"
        "  FROM room_chunk_marks WHERE room_id = ANY(%s::text[])"
        # One index probe per event, whatever the planner believes of the table's size: right
        # after a burst of writes, before the statistics catch up, it would scan it whole.
        " UNION ALL SELECT 'e', e.event_id, NULL, NULL, NULL FROM unnest(%s::text[]) AS x(id)"
        "  CROSS JOIN LATERAL (SELECT event_id FROM events WHERE event_id = x.id OFFSET 0) AS e"
        # The records of chunks at or below their room's high-water (delivered again).
        " UNION ALL SELECT 'd', c.chunk_id, c.seq_first, NULL, c.digest"
        "  FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS y(id, room, n)"
        "  JOIN room_chunk_marks AS m ON m.room_id = y.room AND y.n <= m.last_seq"
        "  CROSS JOIN LATERAL (SELECT chunk_id, seq_first, digest FROM committed_chunks"
        "   WHERE chunk_id = y.id OFFSET 0) AS c",
        (
            fence.lock_key if fence is not None else None,
            array_literal({c.room_id for c in chunks}),
            array_literal(e.event_id for c in chunks for e in c.events),
            array_literal(c.chunk_id for c in chunks),
            array_literal(c.room_id for c in chunks),
            array_literal((chunk_seq(c) for c in chunks), "bigint"),
        ),
    )
    marks: dict[str, Mark] = {}
    stored: set[str] = set()
    digests: dict[str, Committed] = {}
    position: int | None = None
    generation: int | None = None
    for kind, key, a, b, digest in cur.fetchall():
        if kind == "e":
            stored.add(key)
        elif kind == "m":
            marks[key] = Mark(int(a), Committed(b, None if digest is None else bytes(digest)))
        elif kind == "d":
            digests[key] = Committed(a, None if digest is None else bytes(digest))
        else:
            generation, position = a, b
    if fence is not None and generation != fence.generation:
        raise Fenced(fence.lock_key, fence.generation)
    if position is None:
        raise SchemaError(
            "table stream_positions has no 'events' row: the schema is incomplete; "
            "recreate the database and run `roomstream db migrate`"
        )
    if expect_position is not None and position != expect_position:
        key, generation = (fence.lock_key, fence.generation) if fence else (0, 0)
        raise PositionMoved(key, generation, expect_position, int(position))
    return Reads(int(position), marks, stored, digests)


def write_batch(
    cur: Any,
    chunks: Sequence[CommitChunk | Chunk],
    offsets: Mapping[tuple[str, int], int],
    build_message: MessageBuilder | None = None,
    *,
    fence: Fence | None = None,
    sources: Sequence[int | None] | None = None,
    sent: Sequence[int] = (),
) -> BatchResult:
    """Write ``chunks`` in order and record ``offsets`` ((topic, partition) -> next offset).

    With ``fence``, raise ``Fenced`` (before writing anything) unless its generation is current.
    With ``build_message``, a batch that stored at least one event gets its outbox row(s).
    ``sources`` are the chunks' offsets on the chunks topic, for divergence reports; ``sent``
    the positions of outbox messages published since they were written, to mark. A chunk
    id not of the form ``<room_id>/<n>`` raises ValueError. Core chunks are read as the
    committer reads them off the wire (``topics.chunk.for_commit``).

    ``read_state``, ``build_batch`` and ``execute_batch`` in a row; a committer may run them
    apart, building the next batch while the database executes this one.
    """
    views = [c if isinstance(c, CommitChunk) else for_commit(c) for c in chunks]
    reads = read_state(cur, fence, views)
    plan = build_batch(views, offsets, reads, build_message, sources=sources, sent=sent)
    execute_batch(cur, plan)
    return plan.result


def execute_batch(cur: Any, plan: Plan) -> None:
    """Send a built batch: its COPYs, then its other statements in one round trip."""
    for statement, data in plan.copies:
        copy_in(cur, statement, data)
    execute_all(cur, plan.statements)


def build_batch(
    chunks: Sequence[CommitChunk],
    offsets: Mapping[tuple[str, int], int],
    reads: Reads,
    build_message: MessageBuilder | None = None,
    *,
    sources: Sequence[int | None] | None = None,
    sent: Sequence[int] = (),
    statements: Sequence[Statement] = (),
) -> Plan:
    """The batch of ``chunks`` on top of ``reads``, every row and statement made: no database
    is touched. ``statements`` run last (in the batch's transaction). Arguments as
    ``write_batch``'s."""
    result = BatchResult()
    new_chunks, new_marks, digests = _sort_out(
        chunks, reads, sources if sources is not None else [None] * len(chunks), result
    )
    stored = set(reads.stored)
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

    position = reads.position
    total = sum(len(f) for f in fresh)
    prev_position = position
    last = position + total
    result.last_stream_ordering = last
    next_so = position + 1

    rows = _Rows()
    changes: list[Change] = []
    for c, ids_now in zip(new_chunks, fresh, strict=True):
        orderings = dict(zip(ids_now, range(next_so, next_so + len(ids_now)), strict=True))
        next_so += len(ids_now)
        rows.add_chunk(c, orderings)
        at = next_so - 1 if ids_now else None
        result.committed.append(CommittedChunk(c, orderings, at, prev_position))
        committed = digests[c.chunk_id]
        rows.committed_chunks.append((c.chunk_id, at, committed.first, committed.digest, last))
        if ids_now:
            changes.append((c, orderings))
    if changes and build_message is not None:
        parts = build_message(changes, last, prev_position)
        rooms = {c.room_id for c, _ in changes}
        key = next(iter(rooms)) if len(rooms) == 1 else None
        result.outbox.extend(
            OutboxRow(last, prev_position, key, data, i, len(parts)) for i, data in enumerate(parts)
        )

    copies, rest = rows.prepare(set(reads.marks))
    outbox = outbox_copy(result.outbox)
    if outbox is not None:
        copies.append(outbox)
    rest += [
        ("UPDATE stream_positions SET stream_id = %s WHERE stream_name = 'events'", [last])
        if total
        else None,
        marks_statement(new_marks),
        offsets_statement(offsets),
        mark_sent_statement(sent),
        *statements,
    ]
    return Plan(result, position, copies, rest, new_marks, rows.fresh, digests)


class _Rows:
    """The rows of one batch, table by table, folded so that no key repeats in a statement."""

    def __init__(self) -> None:
        # The tables with a row (or several) per event, as COPY text lines: formatted at once,
        # without escaping when the chunk holds nothing to escape (CommitChunk.plain).
        self.events: list[str] = []
        self.event_json: list[bytes] = []
        self.event_edges: list[str] = []
        self.event_auth: list[str] = []
        self.event_to_state_groups: list[str] = []
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
        self.fresh: set[str] = set()  # the events stored now
        # room -> (room_version, creator, has its create event)
        self.rooms: dict[str, tuple[str, str | None, bool]] = {}

    def add_chunk(self, c: CommitChunk, orderings: Mapping[str, int]) -> None:
        rv = room_version(c.room_version)
        pairs = rv.event_format == EventFormat.V1  # references are [event_id, hashes] pairs
        room = c.room_id
        creator = c.creator
        has_create = False
        events, event_json = self.events.append, self.event_json.append
        edges, auth = self.event_edges.append, self.event_auth.append
        to_group = self.event_to_state_groups.append
        plain = c.plain
        # The PDUs were validated by the room processor: the fields are read straight from
        # them (as Event.from_trusted would, without building an Event per row), and the JSON
        # text they arrived as is what event_json stores.
        for i, (ce, pdu) in enumerate(zip(c.events, c.pdus, strict=True)):
            eid = ce.event_id
            so = orderings.get(eid)
            if so is None:
                continue
            etype = pdu.type
            state_key = pdu.state_key
            fmt = ce.format_version
            prevs = pdu.prev_events
            auths = pdu.auth_events
            if pairs:
                prevs = [r[0] for r in prevs]
                auths = [r[0] for r in auths]
            if len(prevs) > 1:
                prevs = list(dict.fromkeys(prevs))
            if plain:
                rejected, received = ce.rejected, ce.received_ts
                events(
                    f"{so}\t{pdu.depth}\t{eid}\t{room}\t{etype}\t"
                    f"{NULL if state_key is None else state_key}\t{pdu.sender}\t"
                    f"{pdu.origin_server_ts}\t{NULL if received is None else received}\t"
                    f"{fmt}\t{NULL if rejected is None else rejected}\t"
                    f"{'t' if ce.soft_failed else 'f'}\t{'t' if ce.outlier else 'f'}\n"
                )
                event_json(b"%b\t%b\t%d\t%b\n" % (eid.encode(), room.encode(), fmt, ce.pdu))
                for p in prevs:
                    edges(f"{eid}\t{p}\n")
                for a in dict.fromkeys(auths):
                    auth(f"{eid}\t{a}\t{room}\n")
                if ce.state_group is not None:
                    to_group(f"{eid}\t{ce.state_group}\n")
            else:
                events(
                    copy_line(
                        so,
                        pdu.depth,
                        eid,
                        room,
                        etype,
                        state_key,
                        pdu.sender,
                        pdu.origin_server_ts,
                        ce.received_ts,
                        fmt,
                        ce.rejected,
                        ce.soft_failed,
                        ce.outlier,
                    )
                )
                event_json(copy_line(eid, room, fmt, str(ce.pdu, "utf-8")).encode())
                for p in prevs:
                    edges(copy_line(eid, p))
                for a in dict.fromkeys(auths):
                    auth(copy_line(eid, a, room))
                if ce.state_group is not None:
                    to_group(copy_line(eid, ce.state_group))
            if etype == "m.room.create" and state_key == "" and ce.rejected is None:
                # The chunk of the room's first create event names the creator; a later one
                # (rooms v1–v11 accept one without prev events, as Synapse does) changes
                # neither the room's version nor its creator.
                has_create = has_create or c.creator is not None
                if creator is None:
                    # Since v11 the creator is the create event's sender; before, a content key.
                    raw = pdu.sender if rv.implicit_room_creator else c.content(i).get("creator")
                    creator = raw if isinstance(raw, str) else pdu.sender
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
        for t, sk in c.current_state.removed:
            self.current_state[(room, t, sk)] = None
        for t, sk, eid, membership in c.current_state.set:
            self.current_state[(room, t, sk)] = (eid, membership)
        self.fresh.update(orderings)
        for eid in c.forward_extremities.added:
            self.extremities[(room, eid)] = True
        for eid in c.forward_extremities.removed:
            self.extremities[(room, eid)] = False
        if has_create or room not in self.rooms:
            self.rooms[room] = (c.room_version, creator, has_create)

    def prepare(
        self, marked_rooms: set[str]
    ) -> tuple[list[tuple[str, bytes]], list[Statement | None]]:
        """Every row: a COPY (statement, data) per table with rows per event, and the other
        statements. ``marked_rooms`` have their rooms row already (a room's first mark is
        written in the transaction that writes its row)."""
        fresh = self.fresh
        rooms_create = [(r, v, c) for r, (v, c, has) in self.rooms.items() if has]
        rooms_other = [
            (r, v, c) for r, (v, c, has) in self.rooms.items() if not has and r not in marked_rooms
        ]
        # The rows of events stored now cannot conflict with stored rows (those events were
        # filtered out above), so they go in by COPY.
        tables = [
            (
                "events",
                "stream_ordering, topological_ordering, event_id, room_id, type, state_key,"
                " sender, origin_server_ts, received_ts, format_version, rejection_reason,"
                " soft_failed, outlier",
                "".join(self.events).encode(),
            ),
            ("event_json", "event_id, room_id, format_version, json", b"".join(self.event_json)),
            ("event_edges", "event_id, prev_event_id", "".join(self.event_edges).encode()),
            ("event_auth", "event_id, auth_id, room_id", "".join(self.event_auth).encode()),
            (
                "event_to_state_groups",
                "event_id, state_group",
                "".join(self.event_to_state_groups).encode(),
            ),
            (
                "committed_chunks",
                "chunk_id, position, seq_first, digest, committed_at",
                copy_text(self.committed_chunks),
            ),
            (
                "room_memberships",
                "event_id, user_id, sender, room_id, membership, event_stream_ordering",
                copy_text(list(self.memberships.values())),
            ),
            (
                "event_forward_extremities",
                "room_id, event_id",
                copy_text([k for k, added in self.extremities.items() if added and k[1] in fresh]),
            ),
        ]
        rest = [
            # The create event in the batch is the authority on the room's version and creator.
            unnest_statement(
                "INSERT INTO rooms (room_id, room_version, creator) SELECT * FROM {rows} "
                "ON CONFLICT (room_id) "
                "DO UPDATE SET room_version = EXCLUDED.room_version, creator = EXCLUDED.creator",
                "text, text, text",
                rooms_create,
            ),
            unnest_statement(
                "INSERT INTO rooms (room_id, room_version, creator) SELECT * FROM {rows} "
                "ON CONFLICT (room_id) DO NOTHING",
                "text, text, text",
                rooms_other,
            ),
            self._state_groups_statement(),
            unnest_statement(
                "INSERT INTO redactions (event_id, redacts) SELECT * FROM {rows}",
                "text, text",
                list(self.redactions.values()),
            ),
            unnest_statement(
                "DELETE FROM current_state_events AS c USING {rows} AS d(room_id, type, state_key)"
                " WHERE c.room_id = d.room_id AND c.type = d.type AND c.state_key = d.state_key",
                "text, text, text",
                [k for k, v in self.current_state.items() if v is None],
            ),
            unnest_statement(
                "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
                " SELECT * FROM {rows} ON CONFLICT (room_id, type, state_key) DO UPDATE"
                " SET event_id = EXCLUDED.event_id, membership = EXCLUDED.membership",
                "text, text, text, text, text",
                [(*k, *v) for k, v in self.current_state.items() if v is not None],
            ),
            # A row of an event stored now cannot exist (a row is only ever written with its
            # event): nothing to delete, and it is added by COPY; other rows are upserted.
            unnest_statement(
                "DELETE FROM event_forward_extremities AS f USING {rows} AS d(room_id, event_id)"
                " WHERE f.room_id = d.room_id AND f.event_id = d.event_id",
                "text, text",
                [k for k, added in self.extremities.items() if not added and k[1] not in fresh],
            ),
            unnest_statement(
                "INSERT INTO event_forward_extremities (room_id, event_id) SELECT * FROM {rows}"
                " ON CONFLICT DO NOTHING",
                "text, text",
                [k for k, added in self.extremities.items() if added and k[1] not in fresh],
            ),
        ]
        copies = [(copy_statement(table, columns), data) for table, columns, data in tables if data]
        return copies, rest

    def _state_groups_statement(self) -> Statement | None:
        """The new state groups with their edges and rows; a group already stored (a replay
        under another chunk id) keeps its own."""
        if not self.state_groups:
            return None
        groups = zip(*self.state_groups, strict=True)
        edges = zip(*self.state_group_edges, strict=True) if self.state_group_edges else ((), ())
        rows = zip(*self.state_groups_state, strict=True) if self.state_groups_state else [()] * 5
        return (
            "WITH new AS (INSERT INTO state_groups (id, room_id, event_id)"
            "  SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])"
            "  ON CONFLICT (id) DO NOTHING RETURNING id),"
            " edges AS (INSERT INTO state_group_edges (state_group, prev_state_group)"
            "  SELECT e.g, e.p FROM unnest(%s::bigint[], %s::bigint[]) AS e(g, p)"
            "  WHERE e.g IN (SELECT id FROM new))"
            " INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
            "  AS s(g, r, t, k, e) WHERE s.g IN (SELECT id FROM new)",
            [
                *(
                    array_literal(col, k)
                    for col, k in zip(groups, ("bigint", "text", "text"), strict=True)
                ),
                *(array_literal(col, "bigint") for col in edges),
                *(
                    array_literal(col, k)
                    for col, k in zip(rows, ("bigint", "text", "text", "text", "text"), strict=True)
                ),
            ],
        )
