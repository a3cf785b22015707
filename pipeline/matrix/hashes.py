"""Content hashes, reference hashes, event IDs and (room version 12) room IDs.

* The content hash covers the whole event as sent: sha256 over the canonical JSON of the event
  without ``unsigned``, ``signatures`` and ``hashes`` (and three legacy keys, see below). It
  travels in ``hashes.sha256``.
* The reference hash covers the essential fields: the event is redacted, ``signatures`` and
  ``unsigned`` are removed, and the canonical JSON is hashed with sha256.
* Event IDs: format V1 (rooms v1, v2) carries its ID in the ``event_id`` field; V2 (v3) is "$" +
  unpadded standard base64 of the reference hash; V3 and V4 (v4+) use URL-safe unpadded base64.
* Room IDs of room version 12 are the create event's ID with "!" for "$" (MSC4291).

Hashing always uses the lenient canonical encoding: for values valid in strict rooms it writes the
same bytes, and it also hashes the floats that old rooms may carry as their senders did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.matrix.canonical_json import encode_canonical_json
from pipeline.matrix.errors import InvalidPdu
from pipeline.matrix.redaction import redacted_view
from pipeline.matrix.room_versions import (
    DEFAULT_ROOM_VERSION,
    EventFormat,
    RoomVersion,
)
from pipeline.matrix.room_versions import room_version as lookup_room_version

_STD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def encode_unpadded_base64(data: bytes, *, urlsafe: bool = False) -> str:
    """Unpadded base64 (RFC 4648 without "="); ``urlsafe`` uses "-" and "_" for "+" and "/"."""
    enc = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return enc.rstrip(b"=").decode("ascii")


def decode_base64(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding ("implementations SHOULD
    accept input with or without padding characters"). Raises ValueError on anything else."""
    if _STD_B64.fullmatch(text):
        altchars = None
    elif _URLSAFE_B64.fullmatch(text):
        altchars = b"-_"
    else:
        raise ValueError(f"{text!r} is not base64")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise ValueError(f"{text!r} has an impossible base64 length")
    padded = body + "=" * (-len(body) % 4)
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except binascii.Error as e:
        raise ValueError(f"{text!r} is not base64: {e}") from None


# "any existing unsigned, signatures, and hashes properties are removed". The legacy top-level
# age_ts, outlier and destinations that early homeservers put on events were never part of the
# hash they computed either, so events carrying them are checked as they were hashed.
_NOT_IN_CONTENT_HASH = frozenset(
    {"unsigned", "signatures", "hashes", "age_ts", "outlier", "destinations"}
)


def content_hash(pdu: Mapping[str, Any]) -> bytes:
    """The sha256 content hash of ``pdu`` (raw 32 bytes)."""
    stripped = {k: v for k, v in pdu.items() if k not in _NOT_IN_CONTENT_HASH}
    return hashlib.sha256(encode_canonical_json(stripped, strict=False)).digest()


def add_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``pdu`` whose ``hashes.sha256`` holds its content hash (for building
    events: workload generators, tests)."""
    out = dict(pdu)
    out["hashes"] = {"sha256": encode_unpadded_base64(content_hash(pdu))}
    return out


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether ``hashes.sha256`` of ``pdu`` is its content hash.

    False when the hash is missing, not a string, not base64, or different: "If the hash check
    fails, then it is assumed that this is because we have only been given a redacted version".
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return False
    try:
        expected = decode_base64(claimed)
    except ValueError:
        return False
    return expected == content_hash(pdu)


def reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The sha256 reference hash of ``pdu`` (raw 32 bytes).

    1. The event is put through the redaction algorithm. 2. ``signatures`` and ``unsigned`` are
    removed (and the legacy top-level ``age_ts``, which redaction already strips).
    3. Canonical JSON. 4. sha256.
    """
    redacted = redacted_view(pdu, room_version)
    for key in ("signatures", "unsigned", "age_ts"):
        redacted.pop(key, None)
    return hashlib.sha256(encode_canonical_json(redacted, strict=False)).digest()


def event_id_field(value: object, reason: Callable[[], str]) -> str:
    """``value``, a PDU's ``event_id`` field, which must be a string; otherwise InvalidPdu
    with ``reason()`` (built only then)."""
    if not isinstance(value, str):
        raise InvalidPdu(reason(), "event_id")
    return value


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID of ``pdu`` in ``room_version``.

    Format V1 (rooms v1, v2): the sender chose the ID and it is the ``event_id`` field (raises
    InvalidPdu when that is missing). V2: "$" + unpadded base64 of the reference hash. V3, V4:
    "$" + URL-safe unpadded base64 of the reference hash.
    """
    fmt = room_version.event_format
    if fmt == EventFormat.V1:
        return event_id_field(
            pdu.get("event_id"),
            lambda: f"room version {room_version.identifier} events carry their ID in event_id",
        )
    digest = reference_hash(pdu, room_version)
    return "$" + encode_unpadded_base64(digest, urlsafe=fmt != EventFormat.V2)


def room_id_from_create_event(
    pdu: Mapping[str, Any], room_version: RoomVersion | None = None
) -> str:
    """The room ID a v12 ``m.room.create`` event founds: its event ID with "!" instead of "$".

    ``room_version`` defaults to the one the create event names in ``content.room_version``.
    Raises ValueError when that room version does not derive room IDs from the create event, and
    UnknownRoomVersion for an unknown version.
    """
    if room_version is None:
        content = pdu.get("content")
        rv_id = (
            content.get("room_version", DEFAULT_ROOM_VERSION)
            if isinstance(content, Mapping)
            else None
        )
        room_version = lookup_room_version(rv_id)
    if not room_version.room_id_is_create_event_hash:
        raise ValueError(
            f"room version {room_version.identifier} room IDs are chosen by the creating server,"
            " not derived from the create event"
        )
    return "!" + compute_event_id(pdu, room_version)[1:]
