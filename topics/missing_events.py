"""The wire format of ``<prefix>.missing-events``: a request to fetch events a room lacks.

DESIGN.md ('Topics', 'Input policy'): an event whose prev or auth events (or its room's create
event) are unknown is parked, and one request per missing set goes to this topic, keyed by room,
for federation front ends to fetch those events and produce them to ``<prefix>.pdus``. A request
names the room, the missing event IDs (sorted, at least one), the event that needs them, and
when that event was first seen (``first_seen_ts``, ms since the epoch).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from pipeline.errors import MalformedMessage
from topics import _msgspec

__all__ = ["MissingEventsRequest", "decode", "encode"]

WIRE_FORMAT = "missing-events"


class MissingEventsRequest(msgspec.Struct, frozen=True, kw_only=True):
    room_id: str
    missing: tuple[str, ...]
    needed_by: str
    first_seen_ts: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MissingEventsRequest)


def encode(room_id: str, missing: Iterable[str], needed_by: str, first_seen_ts: int) -> bytes:
    """The request for the events ``missing`` that ``needed_by`` of ``room_id`` refers to."""
    request = MissingEventsRequest(
        room_id=room_id,
        missing=tuple(sorted(set(missing))),
        needed_by=needed_by,
        first_seen_ts=first_seen_ts,
    )
    reason = _fault(request)
    if reason is not None:
        raise ValueError(f"not a missing-events request: {reason}")
    return _encoder.encode(request)


def decode(value: bytes | str | None) -> MissingEventsRequest:
    """The request in a message value; MalformedMessage names the field that does not fit."""
    request = _msgspec.decode(_decoder, value, WIRE_FORMAT)
    reason = _fault(request)
    if reason is not None:
        raise MalformedMessage(WIRE_FORMAT, reason)
    return request


def _fault(r: MissingEventsRequest) -> str | None:
    if not r.room_id.startswith("!"):
        return f"`room_id` {r.room_id!r} is not a room ID"
    if not r.missing:
        return "`missing` is empty; a request names at least one event"
    for event_id in (*r.missing, r.needed_by):
        if not event_id.startswith("$"):
            return f"{event_id!r} is not an event ID"
    if r.needed_by in r.missing:
        return f"`needed_by` {r.needed_by!r} is among the events it needs"
    return None
