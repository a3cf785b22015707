"""The immutable event object every other module works on.

``Event`` holds the fields the auth rules and state resolution read, normalised across event
formats (v1 ``[id, hashes]`` pairs become ids), plus the federation JSON it came from (``pdu``),
which is what gets stored and hashed. Build one with ``pipeline.matrix.pdu.parse_pdu`` for input
from the outside world (it validates), or ``Event.from_trusted`` for events already validated or
for test data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.matrix.room_versions import EventFormat, RoomVersion

StateKey = tuple[str, str]
"""(event type, state_key)."""

StateMap = Mapping[StateKey, str]
"""Room state: (type, state_key) -> event ID."""


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    content: Mapping[str, Any]
    prev_event_ids: tuple[str, ...]
    auth_event_ids: tuple[str, ...]
    depth: int
    origin_server_ts: int
    room_version: RoomVersion
    # The federation JSON as accepted (redacted if its content hash did not match).
    pdu: Mapping[str, Any] = field(repr=False)
    # Set when the content hash did not match and ``pdu`` is the redacted form.
    redacted_on_receipt: bool = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def __hash__(self) -> int:
        return hash(self.event_id)

    @property
    def format_version(self) -> EventFormat:
        return self.room_version.event_format

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """(type, state_key); only for state events."""
        assert self.state_key is not None, f"{self.event_id} is not a state event"
        return (self.type, self.state_key)

    @property
    def redacts(self) -> str | None:
        """The event this one redacts: in content since v11, top level before (both accepted)."""
        if self.type != "m.room.redaction":
            return None
        r = self.content.get("redacts") if self.room_version.updated_redaction_rules else None
        if r is None:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def membership(self) -> str | None:
        if self.type != "m.room.member":
            return None
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @classmethod
    def from_trusted(
        cls,
        pdu: Mapping[str, Any],
        room_version: RoomVersion,
        event_id: str | None = None,
    ) -> Event:
        """Build an event from JSON that is already known to be well-formed.

        ``event_id`` is taken from the argument, else from the PDU's own ``event_id`` field (test
        data and v1/v2 events carry one). No validation and no hashing: use ``parse_pdu`` for input.
        """
        eid = event_id if event_id is not None else pdu.get("event_id")
        if not isinstance(eid, str):
            raise ValueError("from_trusted needs an event_id (argument or field)")
        room_id = pdu.get("room_id")
        if room_id is None and pdu.get("type") == "m.room.create" and pdu.get("state_key") == "":
            # v12: the create event has no room_id; the room ID is its event ID with '!'.
            room_id = "!" + eid[1:]
        return cls(
            event_id=eid,
            room_id=str(room_id),
            type=pdu["type"],
            state_key=pdu.get("state_key"),
            sender=pdu["sender"],
            content=pdu.get("content", {}),
            prev_event_ids=_ids(pdu.get("prev_events", ())),
            auth_event_ids=_ids(pdu.get("auth_events", ())),
            depth=int(pdu.get("depth", 0)),
            origin_server_ts=int(pdu.get("origin_server_ts", 0)),
            room_version=room_version,
            pdu=pdu,
        )


def _ids(refs: Any) -> tuple[str, ...]:
    """Event references as ids: v1/v2 use [event_id, {hashes}] pairs, later versions plain ids."""
    return tuple(r[0] if isinstance(r, (list, tuple)) else r for r in refs)


class EventFetcher(Protocol):
    """Fetch an event by ID; None when it is not known."""

    def __call__(self, event_id: str, /) -> Event | None: ...


class StateFetcher(Protocol):
    """Fetch the state event at (type, state_key) in some given state; None when absent."""

    def __call__(self, event_type: str, state_key: str, /) -> Event | None: ...
