"""A room as the committer stored it, as plain rows: what a room processor is rebuilt from.

PostgreSQL is the source of truth (DESIGN.md invariant 8): a worker that lost a room's stored
processing state (its changelog deleted, truncated or overwritten; a local store restored from
an old copy) rebuilds it from the rows the committer wrote, plus the room's chunks still in
flight (sent to ``<prefix>.chunks``, not committed yet), applied as the committer will apply
them. ``RoomProcessor.from_database_rows`` builds the processor; this module holds the rows and
the folding of the chunks in flight, with no SQL (``db.read.load_room_rows`` reads the rows).

What the rows hold and where each part of the processor's state comes from:

* ``events``: every stored event of the room in commit order (stream ordering), with its PDU
  as stored, its outcome (rejection reason, soft-failed), its state group and received_ts. The
  known-events index, the state events, the create event, the redactions and the logical clock
  are rebuilt from them; a fingerprint is recomputed from the PDU.
* ``state_groups``: every state group of the room (id, event, prev group, delta). Group ids are
  ``state_group_id(room_id, n)`` for the room's n-th group, so the order they were made in, and
  the counter the next group takes, follow from the ids (``group_order``).
* ``forward_extremities``, ``current_state``: as stored.
* ``high_water``: the room's last event sequence number committed (``room_chunk_marks``): the
  chunk numbering goes on from there.

What no row holds, so a rebuilt processor lacks (docs/faults.md, 'Lost or stale stored state'):
parked events and their open requests (a shell may carry them over from the stale state), the
input sequence number (set to the event sequence number; it names chunks' input ranges in
reports only) and the logical clock beyond the largest stored ``received_ts``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.events import StateKey
from pipeline.room.chunk import Chunk, StateGroup
from pipeline.room.state_groups import state_group_id

__all__ = ["EventRow", "GroupOrderError", "RoomRows", "fold_chunks", "group_order"]

COUNTER_SLACK = 10_000
"""Group numbers tried past the number of groups found before the ids are called corrupt: a
group made for a decision that then failed (an input dead-lettered for an internal error) takes
a number without being stored."""


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event: ``events`` + ``event_json`` + ``event_to_state_groups``."""

    event_id: str
    pdu: Mapping[str, Any]
    rejected: str | None  # the rejection reason, None when not rejected
    soft_failed: bool
    state_group: int | None  # after the event; before it for a rejected one
    received_ts: int | None = None


@dataclass(slots=True)
class RoomRows:
    """One room's stored rows. ``events`` may be a one-pass iterator (a database cursor); an
    event ID seen twice keeps its first row, as the committer keeps the first one stored."""

    room_id: str
    room_version: str | None
    high_water: int
    events: Iterable[EventRow]
    state_groups: list[StateGroup] = field(default_factory=list)
    forward_extremities: set[str] = field(default_factory=set)
    current_state: dict[StateKey, str] = field(default_factory=dict)
    chunks_folded: int = 0  # chunks in flight applied over the stored rows


class GroupOrderError(ValueError):
    """A state group id of the room is not one of the ids the room's processor makes: the rows
    are not this room's, or are corrupt. Rebuilding would number new groups wrongly."""


def group_order(room_id: str, groups: Iterable[StateGroup]) -> tuple[list[StateGroup], int]:
    """``groups`` in the order the room's processor made them, and its group counter (the
    number of the last one made).

    Raises ``GroupOrderError`` when some id is not ``state_group_id(room_id, n)`` for any n up
    to the number of groups plus ``COUNTER_SLACK``.
    """
    by_id = {g.id: g for g in groups}
    ordered: list[StateGroup] = []
    n = 0
    limit = len(by_id) + COUNTER_SLACK
    while len(ordered) < len(by_id):
        n += 1
        if n > limit:
            unknown = sorted(set(by_id) - {g.id for g in ordered})[:5]
            raise GroupOrderError(
                f"state groups {unknown} of room {room_id} are not the room's own group ids "
                f"(none of its first {limit}); check the state_groups rows of the room"
            )
        group = by_id.get(state_group_id(room_id, n))
        if group is not None:
            ordered.append(group)
    return ordered, n


def fold_chunks(rows: RoomRows, chunks: Iterable[Chunk]) -> RoomRows:
    """``rows`` with the room's ``chunks`` (in flight, in topic order) applied as the committer
    applies them (``pipeline.room.chunk``): a chunk whose last event sequence number is at or
    below the high-water so far was committed before (a replay, or a divergence the committer
    refuses) and changes nothing; any other is applied: its events not stored yet, its state
    groups not stored yet, its forward extremity and current-state changes (absolute for the
    keys they name), and the high-water moves to its last number.
    """
    high = rows.high_water
    extremities = set(rows.forward_extremities)
    current = dict(rows.current_state)
    groups = list(rows.state_groups)
    group_ids = {g.id for g in groups}
    room_version = rows.room_version
    added: list[list[EventRow]] = []
    folded = 0
    for chunk in chunks:
        if chunk.room_id != rows.room_id:
            raise ValueError(f"chunk {chunk.chunk_id} is not of room {rows.room_id}")
        last = chunk.seq[1]
        if last <= high:
            continue
        folded += 1
        room_version = chunk.room_version
        added.append(
            [
                EventRow(e.event_id, e.pdu, e.rejected, e.soft_failed, e.state_group, e.received_ts)
                for e in chunk.events
            ]
        )
        for g in chunk.state_groups:
            if g.id not in group_ids:
                group_ids.add(g.id)
                groups.append(g)
        extremities.difference_update(chunk.forward_extremities_removed)
        extremities.update(chunk.forward_extremities_added)
        for key in chunk.current_state_removed:
            current.pop((key[0], key[1]), None)
        for row in chunk.current_state_set:
            current[(row.type, row.state_key)] = row.event_id
        high = last
    events: Iterator[EventRow] = itertools.chain(rows.events, *added)
    return RoomRows(
        room_id=rows.room_id,
        room_version=room_version,
        high_water=high,
        events=events,
        state_groups=groups,
        forward_extremities=extremities,
        current_state=current,
        chunks_folded=rows.chunks_folded + folded,
    )
