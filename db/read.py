"""The read API over the stored room data: events, current state, forward extremities, state.

Every ``RoomStore`` method is one SQL query. ``get_state_ids_for_events`` in particular fetches
the state of many events, with or without a type filter, in ONE query (invariant 6): a
recursive CTE walks ``state_group_edges`` from each event's state group back along its delta
chain, and for each (type, state_key) the value from the nearest group wins.

``load_room_rows`` reads what a room processor is rebuilt from (invariant 8,
``pipeline.room.rebuild``): one room's events, state groups, forward extremities, current
state, chunk high-water and the committer's offset, in five queries over one snapshot, the
events streamed from a server-side cursor so a long history is never held whole.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import room_version
from pipeline.room.chunk import StateGroup
from pipeline.room.rebuild import EventRow, RoomRows

__all__ = [
    "ROWS_PER_FETCH",
    "RoomStore",
    "RoomWithStreamOrdering",
    "StoredEvent",
    "TypeFilter",
    "load_room_rows",
]

ROWS_PER_FETCH = 2000
"""Events fetched at a time by ``load_room_rows``'s cursor."""

TypeFilter = Collection[tuple[str, str | None]]
"""(type, state_key) pairs; a None state_key means every state_key of that type."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: Event
    format_version: int
    stream_ordering: int
    rejection_reason: str | None
    soft_failed: bool
    outlier: bool


@dataclass(frozen=True, slots=True)
class RoomWithStreamOrdering:
    room_id: str
    stream_ordering: int  # of the user's join event


_STATE_SQL = """
WITH RECURSIVE chain(event_id, state_group, hops) AS (
    SELECT event_id, state_group, 0 FROM event_to_state_groups WHERE event_id = ANY(%(ids)s)
  UNION ALL
    SELECT chain.event_id, e.prev_state_group, chain.hops + 1
    FROM chain JOIN state_group_edges AS e ON e.state_group = chain.state_group
)
SELECT DISTINCT ON (chain.event_id, s.type, s.state_key)
    chain.event_id, s.type, s.state_key, s.event_id
FROM chain
LEFT JOIN state_groups_state AS s ON s.state_group = chain.state_group {filter}
ORDER BY chain.event_id, s.type, s.state_key, chain.hops
"""

# Pairs as two parallel arrays, because psycopg2 cannot pass an array of composite values.
_TYPE_FILTER_SQL = """
    AND (s.type = ANY(%(any_key_types)s)
         OR (s.type, s.state_key) IN (SELECT * FROM unnest(%(types)s::text[], %(keys)s::text[])))
"""


class RoomStore:
    """Reads over one psycopg2 connection; the caller owns the connection and its transactions."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _rows(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows

    def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """The stored events among ``event_ids``, parsed with their room's version."""
        rows = self._rows(
            "SELECT j.event_id, j.format_version, j.json, r.room_version, e.stream_ordering,"
            " e.rejection_reason, e.soft_failed, e.outlier"
            " FROM event_json AS j JOIN events AS e USING (event_id)"
            " JOIN rooms AS r ON r.room_id = j.room_id"
            " WHERE j.event_id = ANY(%s)",
            (list(event_ids),),
        )
        out: dict[str, StoredEvent] = {}
        for eid, fmt, text, rv_id, so, reason, soft_failed, outlier in rows:
            rv = room_version(rv_id)
            if int(fmt) != int(rv.event_format):
                raise ValueError(
                    f"event {eid} is stored with format version {fmt}, but its room's version "
                    f"{rv_id} uses format {int(rv.event_format)}; the stored row is corrupt"
                )
            event = Event.from_trusted(orjson.loads(text), rv, eid)
            out[eid] = StoredEvent(event, int(fmt), int(so), reason, bool(soft_failed), outlier)
        return out

    def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        rows = self._rows(
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
            (room_id,),
        )
        return {(t, sk): eid for t, sk, eid in rows}

    def get_forward_extremities(self, room_id: str) -> frozenset[str]:
        rows = self._rows(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,)
        )
        return frozenset(r[0] for r in rows)

    def get_rooms_for_user_with_stream_ordering(
        self, user_id: str
    ) -> frozenset[RoomWithStreamOrdering]:
        """The rooms ``user_id`` is joined to now, each with the stream ordering of the join."""
        rows = self._rows(
            "SELECT c.room_id, e.stream_ordering FROM current_state_events AS c"
            " JOIN events AS e ON e.event_id = c.event_id"
            " WHERE c.type = 'm.room.member' AND c.state_key = %s AND c.membership = 'join'",
            (user_id,),
        )
        return frozenset(RoomWithStreamOrdering(r, int(so)) for r, so in rows)

    def get_state_ids_for_events(
        self, event_ids: Iterable[str], types: TypeFilter | None = None
    ) -> dict[str, dict[StateKey, str]]:
        """The state of each event's state group (for a rejected event: the state before it).

        Events without a state group are absent from the result. ``types`` keeps only the
        given (type, state_key) pairs, members and non-members alike.
        """
        params: dict[str, Any] = {"ids": list(event_ids)}
        sql_filter = ""
        if types is not None:
            pairs = [(t, sk) for t, sk in types if sk is not None]
            params["any_key_types"] = sorted({t for t, sk in types if sk is None})
            params["types"] = [t for t, _ in pairs]
            params["keys"] = [sk for _, sk in pairs]
            sql_filter = _TYPE_FILTER_SQL
        out: dict[str, dict[StateKey, str]] = {}
        for eid, t, sk, state_eid in self._rows(_STATE_SQL.format(filter=sql_filter), params):
            state = out.setdefault(eid, {})
            if t is not None:  # the LEFT JOIN's placeholder row for an empty (filtered) state
                state[(t, sk)] = state_eid
        return out


def load_room_rows(conn: Any, room_id: str, chunks_topic: str) -> tuple[RoomRows, int | None]:
    """Room ``room_id`` as the committer stored it, and the committer's next offset on
    partition 0 of ``chunks_topic`` (None before its first commit): the chunks from there on
    are in flight, not in these rows.

    Call it at the start of a transaction of ``conn`` (not in autocommit): it makes the
    transaction REPEATABLE READ and READ ONLY, so every query, and the offset, see one
    snapshot. ``events`` is read from a server-side cursor as it is iterated: consume it
    before the transaction ends.
    """
    if conn.autocommit:
        raise ValueError("load_room_rows needs a transaction: turn the connection's autocommit off")
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.execute(
            "SELECT (SELECT room_version FROM rooms WHERE room_id = %(room)s),"
            " (SELECT last_seq FROM room_chunk_marks WHERE room_id = %(room)s),"
            " (SELECT next_offset FROM committer_offsets"
            "  WHERE topic = %(topic)s AND partition = 0)",
            {"room": room_id, "topic": chunks_topic},
        )
        version, high_water, offset = cur.fetchone()
        # A group's rows, one line each (a group without rows, one line of NULLs).
        cur.execute(
            "SELECT g.id, g.event_id, e.prev_state_group, s.type, s.state_key, s.event_id"
            " FROM state_groups AS g"
            " LEFT JOIN state_group_edges AS e ON e.state_group = g.id"
            " LEFT JOIN state_groups_state AS s ON s.state_group = g.id"
            " WHERE g.room_id = %s",
            (room_id,),
        )
        groups: dict[int, tuple[str, int | None, list[tuple[str, str, str]]]] = {}
        for sg, event_id, prev, etype, skey, eid in cur.fetchall():
            group = groups.setdefault(int(sg), (event_id, prev, []))
            if etype is not None:
                group[2].append((etype, skey, eid))
        cur.execute("SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,))
        extremities = {r[0] for r in cur.fetchall()}
        cur.execute(
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
            (room_id,),
        )
        current = {(t, k): e for t, k, e in cur.fetchall()}
    rows = RoomRows(
        room_id=room_id,
        room_version=version,
        high_water=int(high_water) if high_water is not None else 0,
        events=_stored_events(conn, room_id),
        state_groups=[
            StateGroup(sg, event_id, None if prev is None else int(prev), tuple(delta))
            for sg, (event_id, prev, delta) in groups.items()
        ],
        forward_extremities=extremities,
        current_state=current,
    )
    return rows, None if offset is None else int(offset)


def _stored_events(conn: Any, room_id: str) -> Iterator[EventRow]:
    """The room's events in commit order, fetched ``ROWS_PER_FETCH`` at a time."""
    with conn.cursor(name=f"room_rows_{abs(hash(room_id))}") as cur:
        cur.itersize = ROWS_PER_FETCH
        cur.execute(
            "SELECT e.event_id, j.json, e.rejection_reason, e.soft_failed, g.state_group,"
            " e.received_ts"
            " FROM events AS e JOIN event_json AS j USING (event_id)"
            " LEFT JOIN event_to_state_groups AS g USING (event_id)"
            " WHERE e.room_id = %s ORDER BY e.stream_ordering",
            (room_id,),
        )
        for eid, text, rejected, soft_failed, sg, received_ts in cur:
            yield EventRow(
                eid,
                orjson.loads(text),
                rejected,
                bool(soft_failed),
                None if sg is None else int(sg),
                None if received_ts is None else int(received_ts),
            )
