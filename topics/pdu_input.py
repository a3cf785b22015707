"""The wire format of ``<prefix>.pdus``: one PDU a message, keyed by its room (DESIGN.md, 'Topics').

The value is the PDU's federation JSON; the key is the room ID (UTF-8), which producers set so a
room's events share a partition; producers may add the headers ``origin`` (the server the PDU
came from) and ``received_ts`` (ms since the epoch, when a front end received it).

``decode`` is what a worker does with a message before anything else: it parses the value once
and tells which room it belongs to, so the input can be routed to the room's one owner. It does
not validate the PDU; that is the room processor's, against the room's version. A value that names
no room is refused (the worker dead-letters it with the reason). A ``received_ts`` header that
is not a 64-bit integer is ignored rather than refused: it is advisory (the broker's timestamp
stands in), and a valid event is not dead-lettered over it; ``header_problem`` says why it was
ignored, for the worker to log.

``encode`` is the producers' side: the key, the value as given and the headers. A line that names
no room is produced all the same, without a key, for the workers to dead-letter with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import MalformedMessage
from pipeline.matrix.canonical_json import parse_json
from pipeline.matrix.pdu import peek_room_id
from pipeline.room.headers import InvalidHeader, parse_received_ts
from pipeline.room.routing import room_id_of
from topics.headers import Headers, header_items

__all__ = ["PduInput", "PduRecord", "decode", "encode", "received_ts_of"]

WIRE_FORMAT = "pdu"
ORIGIN = "origin"
RECEIVED_TS = "received_ts"


@dataclass(frozen=True, slots=True)
class PduInput:
    """An input as the worker routes it: its room, its bytes and what its headers say."""

    room_id: str
    value: bytes
    origin: str | None = None
    received_ts: int | None = None
    header_problem: str | None = None  # why a header was ignored


@dataclass(frozen=True, slots=True)
class PduRecord:
    """A message to produce to ``<prefix>.pdus``."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def decode(value: bytes | None, headers: Headers = None) -> PduInput:
    """The input in a message; MalformedMessage says why it cannot be routed to a room."""
    if value is None:
        raise MalformedMessage(
            WIRE_FORMAT, "the message has no value (a tombstone); a PDU was expected"
        )
    try:
        # Only the room is read here: numbers need not be exact (the processor parses the PDU
        # again by its room version's rules), so the stdlib's second pass for floats and large
        # integers is skipped. A room ID computed from a create event's hash differs only for a
        # create event with such numbers, which its (strict) room version refuses anyway.
        pdu = parse_json(value, exact_numbers=False)
    except ValueError as e:
        raise MalformedMessage(
            WIRE_FORMAT,
            f"the value is not valid JSON ({e}); produce one PDU as a JSON object per message",
        ) from None
    room_id = _room_of(pdu)
    items = header_items(headers)
    try:
        received_ts = _received_ts(items)
    except InvalidHeader as e:
        return PduInput(room_id, value, _origin(items), None, str(e))
    return PduInput(room_id, value, _origin(items), received_ts)


def received_ts_of(headers: Headers) -> int | None:
    """What the ``received_ts`` header says, if it says a 64-bit integer."""
    try:
        return _received_ts(header_items(headers))
    except InvalidHeader:
        return None


def _origin(items: list[tuple[str, bytes | None]]) -> str | None:
    for name, raw in items:
        if name == ORIGIN and raw is not None:
            return raw.decode("utf-8", errors="replace")
    return None


def _received_ts(items: list[tuple[str, bytes | None]]) -> int | None:
    for name, raw in items:
        if name == RECEIVED_TS and raw is not None:
            return parse_received_ts(raw)
    return None


def encode(value: bytes, *, received_ts: int | None = None, origin: str | None = None) -> PduRecord:
    """The message for one PDU line, keyed by its room when it names one."""
    room_id = room_id_of(value)
    headers: list[tuple[str, str | bytes | None]] = []
    if origin is not None:
        headers.append((ORIGIN, origin.encode()))
    if received_ts is not None:
        headers.append((RECEIVED_TS, str(received_ts).encode()))
    return PduRecord(room_id.encode() if room_id is not None else None, value, headers)


def _room_of(pdu: Any) -> str:
    if not isinstance(pdu, Mapping):
        raise MalformedMessage(
            WIRE_FORMAT,
            f"the value is JSON {type(pdu).__name__}, not an object; a PDU is a JSON object",
        )
    room_id = peek_room_id(pdu)
    if room_id is not None:
        return room_id
    if "room_id" not in pdu:
        raise MalformedMessage(
            WIRE_FORMAT, "the PDU has no room_id (only a room version 12 create event may omit it)"
        )
    raise MalformedMessage(
        WIRE_FORMAT, f"the PDU's room_id {pdu.get('room_id')!r} is not a room ID"
    )
