"""The wire format of ``<prefix>.missing-events``: requests to fetch events a room lacks.

DESIGN.md ('Topics', 'Input policy'): an event whose prev or auth events (or its room's create
event) are unknown is parked, and one request per missing set goes to this topic, keyed by room,
for federation front ends to fetch those events and produce them to ``<prefix>.pdus``. The policy
(when a request is opened, shared and closed) is ``pipeline.room.missing``'s.

A record names the room, the missing event IDs (sorted, at least one), the event that needs them
(``needed_by``; null only when the room's create event is unknown and the waiting PDU carries no
``event_id``, since its ID cannot be computed before the room version is known), and when the
request was first seen (``first_seen_ts``, the room's logical clock in ms: the largest
``received_ts`` of its inputs). ``status`` is ``open`` when the request is made, then once
``answered`` (the events arrived and the waiting events went on) or ``expired`` (the waiting
events expired to the dead-letter topic), with ``closed_ts``. A request is identified by
(``room_id``, ``missing``): folding the topic by that pair, the last record wins, gives the open
requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from pipeline.errors import MalformedMessage
from pipeline.room.missing import MissingRequest
from topics import _msgspec

__all__ = ["MissingEventsRequest", "decode", "encode", "encode_request"]

WIRE_FORMAT = "missing-events"


class MissingEventsRequest(msgspec.Struct, frozen=True, kw_only=True):
    room_id: str
    missing: tuple[str, ...]
    needed_by: str | None
    first_seen_ts: int
    status: Literal["open", "answered", "expired"] = "open"
    closed_ts: int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MissingEventsRequest)


def encode(
    room_id: str,
    missing: Iterable[str],
    needed_by: str | None,
    first_seen_ts: int,
    *,
    status: Literal["open", "answered", "expired"] = "open",
    closed_ts: int | None = None,
) -> bytes:
    """The request for the events ``missing`` that ``needed_by`` of ``room_id`` refers to."""
    request = MissingEventsRequest(
        room_id=room_id,
        missing=tuple(sorted(set(missing))),
        needed_by=needed_by,
        first_seen_ts=first_seen_ts,
        status=status,
        closed_ts=closed_ts,
    )
    reason = _fault(request)
    if reason is not None:
        raise ValueError(f"not a missing-events request: {reason}")
    return _encoder.encode(request)


def encode_request(request: MissingRequest) -> bytes:
    """The record of a room processor's request (``BatchResult.missing_requests``)."""
    return encode(
        request.room_id,
        request.missing,
        request.needed_by,
        request.first_seen_ts,
        status=request.status,
        closed_ts=request.closed_ts,
    )


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
    for event_id in r.missing if r.needed_by is None else (*r.missing, r.needed_by):
        if not event_id.startswith("$"):
            return f"{event_id!r} is not an event ID"
    if r.needed_by in r.missing:
        return f"`needed_by` {r.needed_by!r} is among the events it needs"
    if (r.status == "open") != (r.closed_ts is None):
        return (
            f"a request of status {r.status!r} must {'not ' * (r.status == 'open')}have `closed_ts`"
        )
    return None
