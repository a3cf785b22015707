"""The room chunk: what a room processor hands the committer (contract: DESIGN.md, 'Messages').

A chunk is one room's processed events, in order, with every change they make to the room's
stored state. It carries no stream orderings: the committer assigns those at commit time.
``chunk_id`` is ``<room_id>/<n>`` for the room's n-th chunk, so replaying the same input in the
same order yields the same ids (the committer uses it to drop a chunk it already committed).
Its bytes on the chunks topic are ``topics.chunk``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

StateRow = tuple[str, str, str]
"""(type, state_key, event_id)."""


@dataclass(frozen=True, slots=True)
class ChunkEvent:
    event_id: str
    format_version: int
    pdu: dict[str, Any]
    rejected: str | None  # the reason, or None when accepted
    soft_failed: bool
    state_group: int | None  # state *before* a rejected event; state after any other state event
    received_ts: int | None = None
    outlier: bool = False


@dataclass(frozen=True, slots=True)
class StateGroup:
    id: int
    event_id: str  # the event whose state this group is
    prev_group: int | None  # None: ``delta`` is the whole state
    delta: tuple[StateRow, ...]


@dataclass(frozen=True, slots=True)
class CurrentStateRow:
    type: str
    state_key: str
    event_id: str
    membership: str | None


@dataclass(frozen=True, slots=True)
class Membership:
    event_id: str
    user_id: str
    sender: str
    membership: str


@dataclass(frozen=True, slots=True)
class Redaction:
    event_id: str
    redacts: str


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    room_id: str
    room_version: str
    events: tuple[ChunkEvent, ...]
    state_groups: tuple[StateGroup, ...] = ()
    forward_extremities_added: tuple[str, ...] = ()
    forward_extremities_removed: tuple[str, ...] = ()
    current_state_set: tuple[CurrentStateRow, ...] = ()
    current_state_removed: tuple[tuple[str, str], ...] = ()
    memberships: tuple[Membership, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    creator: str | None = None  # set on the chunk that holds the create event
    meta: dict[str, Any] = field(default_factory=dict)
