"""What a room processor's event index held for events it dropped, read back from PostgreSQL.

A room processor bounds its event index (``pipeline.room.known_events``): entries of events the
committer has stored may be dropped, and are recalled when read. Everything an entry holds is in
the rows the committer wrote for the event: its outcome (``events.rejection_reason`` and
``soft_failed``), its state group (``event_to_state_groups``; for a rejected event the state
before it), and its JSON as received (``event_json``), from which the fingerprint, the
prev_events and, for a state event, the kept JSON follow as they did when it was decided.
One query per batch of IDs, however many.

The redactions of an event that were pending (it was not known yet) and dropped are read back
from ``redactions``, in the order they were stored. The rows of a state group whose rows were
dropped (``pipeline.room.state_groups``) are read back from ``state_groups_state`` the same
way: one query per batch of group ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.matrix.events import Event
from pipeline.matrix.room_versions import room_version
from pipeline.room.chunk import StateRow
from pipeline.room.known_events import ACCEPTED, REJECTED, SOFT_FAILED, Recalled, recalled

__all__ = [
    "GROUP_ROWS_SQL",
    "RECALL_SQL",
    "REDACTIONS_SQL",
    "recall_events",
    "recall_group_rows",
    "recall_redactions",
]

RECALL_SQL = (
    "SELECT e.event_id, j.json, e.rejection_reason, e.soft_failed, g.state_group,"
    " r.room_version"
    " FROM events AS e JOIN event_json AS j USING (event_id)"
    " JOIN rooms AS r ON r.room_id = e.room_id"
    " LEFT JOIN event_to_state_groups AS g USING (event_id)"
    " WHERE e.room_id = %s AND e.event_id = ANY(%s)"
)


def recall_events(cur: Any, room_id: str, event_ids: Sequence[str]) -> dict[str, Recalled]:
    """The index entries of those of ``event_ids`` that room ``room_id`` has stored."""
    cur.execute(RECALL_SQL, (room_id, list(event_ids)))
    out: dict[str, Recalled] = {}
    for eid, text, rejected, soft_failed, sg, version in cur.fetchall():
        status = REJECTED if rejected is not None else SOFT_FAILED if soft_failed else ACCEPTED
        event = Event.from_trusted(orjson.loads(text), room_version(version), eid)
        out[eid] = recalled(event, status, None if sg is None else int(sg))
    return out


# A group without rows is one line of NULLs: it is stored, with nothing over its base.
GROUP_ROWS_SQL = (
    "SELECT g.id, s.type, s.state_key, s.event_id"
    " FROM state_groups AS g LEFT JOIN state_groups_state AS s ON s.state_group = g.id"
    " WHERE g.room_id = %s AND g.id = ANY(%s)"
)


def recall_group_rows(
    cur: Any, room_id: str, group_ids: Sequence[int]
) -> dict[int, tuple[StateRow, ...]]:
    """The rows of those of ``group_ids`` that room ``room_id`` has stored, sorted."""
    cur.execute(GROUP_ROWS_SQL, (room_id, list(group_ids)))
    rows: dict[int, list[StateRow]] = {}
    for sg, etype, skey, eid in cur.fetchall():
        group = rows.setdefault(int(sg), [])
        if etype is not None:
            group.append((etype, skey, eid))
    return {sg: tuple(sorted(r)) for sg, r in rows.items()}


REDACTIONS_SQL = (
    "SELECT r.redacts, r.event_id FROM redactions AS r JOIN events AS e USING (event_id)"
    " WHERE e.room_id = %s AND r.redacts = ANY(%s) ORDER BY e.stream_ordering"
)


def recall_redactions(cur: Any, room_id: str, targets: Sequence[str]) -> dict[str, list[str]]:
    """The stored redactions of each of ``targets`` in room ``room_id``, in stream order."""
    cur.execute(REDACTIONS_SQL, (room_id, list(targets)))
    out: dict[str, list[str]] = {}
    for target, redaction in cur.fetchall():
        out.setdefault(target, []).append(redaction)
    return out
