"""Turning a PDU from the outside world into an Event, or saying precisely why not.

This is check 1 of "Checks performed on receipt of a PDU" ("Is a valid event, otherwise it is
dropped") and check 3 ("Passes hash checks, otherwise it is redacted before being processed
further"). Signature checks (check 2) belong to ``pipeline.matrix.signing``; the authorization
rules (checks 4–6) come after.

Every violation raises ``InvalidPdu`` with ``field`` naming the offending field as a dotted path
(``prev_events[3]``, ``content.body``); an event ID that breaks the room version's rule raises its
subclass ``EventIdMismatch``. A content hash that does not match is not a violation: the event is
kept in its redacted form and marked ``redacted_on_receipt``.

Identifier checks follow the appendix's grammars, accepting the historical user ID localparts the
spec says servers MUST accept (anything but ":" and NUL). The 255 limits on identifiers, type and
state_key count UTF-8 bytes as the spec says from room version 11; in older rooms they count code
points, as the servers that built those rooms did, so events every other server accepted are not
dropped here (``RoomVersion.strict_event_byte_limits``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pipeline.matrix.canonical_json import (
    CanonicalJsonError,
    copy_json,
    encode_pdu_json,
    parse_json,
)
from pipeline.matrix.errors import EventIdMismatch, InvalidPdu
from pipeline.matrix.events import Event
from pipeline.matrix.hashes import (
    check_content_hash,
    compute_event_id,
    decode_base64,
    event_id_field,
    room_id_from_create_event,
)
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import (
    DEFAULT_ROOM_VERSION,
    EventFormat,
    RoomVersion,
    room_version,
)

# "The complete event MUST NOT be larger than 65536 bytes, when formatted with the federation
# event format, including any signatures, and encoded as Canonical JSON."
MAX_PDU_BYTES = 65536
# sender, room_id, event_id, state_key and type: "MUST NOT exceed 255 bytes".
MAX_ID_BYTES = 255
# prev_events "Must contain less than or equal to 20 events"; auth_events "... 10 events".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
# depth "Must be less than the maximum value for an integer": 2**63 - 1 in v1–v5; from v6 the
# canonical JSON range caps it at 2**53 - 1.
MAX_DEPTH_V1 = 2**63 - 1
MAX_DEPTH_V6 = 2**53 - 1
# origin_server_ts is an int64 ("format: int64").
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Objects and arrays a PDU may nest, the PDU itself counting as one. The spec sets no limit; orjson,
# which writes the chunk, the stored JSON and the room record, refuses 255 levels, and those
# envelopes wrap a PDU in up to four more. Real events nest a handful of levels; 200 leaves the
# envelopes room to grow.
MAX_PDU_NESTING = 200

Raw = bytes | bytearray | memoryview | str | Mapping[str, Any]

# server_name = hostname [ ":" port ]; hostname = IPv4address / "[" IPv6address "]" / dns-name.
# A DNS name is dot-separated labels of alphanumerics and hyphens (which also covers IPv4).
_SERVER_NAME = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)(?::[0-9]{1,5})?"
)
# user_id_char = DIGIT / %x61-7A / "-" / "." / "=" / "_" / "/" / "+"
_USER_LOCALPART = re.compile(r"[a-z0-9\-.=_/+]+")
# 32-byte reference hashes as 43 unpadded base64 characters.
_EVENT_ID_V2 = re.compile(r"\$[A-Za-z0-9+/]{43}")
_EVENT_ID_V3 = re.compile(r"\$[A-Za-z0-9_-]{43}")
_ROOM_ID_V12 = re.compile(r"![A-Za-z0-9_-]{43}")


# --- identifiers -------------------------------------------------------------------------------


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def id_length(value: str, room_version: RoomVersion) -> int:
    """The length the 255 limit applies to: UTF-8 bytes from v11 (``strict_event_byte_limits``),
    code points before, as the servers that wrote those rooms counted."""
    return _utf8_len(value) if room_version.strict_event_byte_limits else len(value)


def is_valid_server_name(name: str) -> bool:
    """Whether ``name`` follows the appendix's server name grammar."""
    if not _SERVER_NAME.fullmatch(name):
        return False
    host = name.rsplit(":", 1)[0] if not name.endswith("]") else name
    return len(host) <= 255


def _split_sigil_id(s: str, sigil: str) -> tuple[str, str] | None:
    """(localpart, domain) of ``sigil localpart ":" domain``; None if it has no such shape."""
    if not s.startswith(sigil) or ":" not in s:
        return None
    localpart, domain = s[1:].split(":", 1)
    if "\x00" in localpart:
        return None
    return localpart, domain


def is_valid_user_id(user_id: str, *, historical: bool = True) -> bool:
    """Whether ``user_id`` is ``@localpart:server_name`` of at most 255 bytes.

    With ``historical`` (the default for events) the localpart may be any code points but ":"
    and NUL, even empty: "clients and servers MUST accept user IDs with localparts consisting of
    any legal non-surrogate Unicode code points except for : and NUL". Without it, the localpart
    must use the current grammar (a-z, 0-9 and ``.=_-/+``).
    """
    return _utf8_len(user_id) <= MAX_ID_BYTES and _is_user_id_shape(user_id, historical)


def _is_user_id_shape(user_id: str, historical: bool = True) -> bool:
    parts = _split_sigil_id(user_id, "@")
    if parts is None:
        return False
    localpart, domain = parts
    if not historical and not _USER_LOCALPART.fullmatch(localpart):
        return False
    return is_valid_server_name(domain)


def is_valid_room_id(room_id: str, room_version: RoomVersion) -> bool:
    """Whether ``room_id`` is a room ID of ``room_version``'s form.

    v12: the create event's ID with sigil "!" (43 URL-safe base64 characters). Before:
    ``!localpart:server_name`` of at most 255 (see ``id_length``), the localpart anything but ":"
    and NUL.
    """
    if room_version.room_id_is_create_event_hash:
        return _ROOM_ID_V12.fullmatch(room_id) is not None
    parts = _split_sigil_id(room_id, "!")
    if parts is None or id_length(room_id, room_version) > MAX_ID_BYTES:
        return False
    return is_valid_server_name(parts[1])


def is_valid_event_id(event_id: str, room_version: RoomVersion) -> bool:
    """Whether ``event_id`` is an event ID of ``room_version``'s format.

    V1 (rooms v1, v2): ``$opaque_id:domain`` of at most 255 code points (see ``id_length``).
    V2 (v3): "$" and 43 standard base64 characters. V3, V4 (v4+): "$" and 43 URL-safe base64
    characters.
    """
    fmt = room_version.event_format
    if fmt == EventFormat.V1:
        parts = _split_sigil_id(event_id, "$")
        if parts is None or id_length(event_id, room_version) > MAX_ID_BYTES:
            return False
        return is_valid_server_name(parts[1])
    pattern = _EVENT_ID_V2 if fmt == EventFormat.V2 else _EVENT_ID_V3
    return pattern.fullmatch(event_id) is not None


# --- helpers for the shell ---------------------------------------------------------------------


def parse_create_event_room_version(pdu: Mapping[str, Any]) -> RoomVersion:
    """The room version an ``m.room.create`` PDU founds: ``content.room_version``, "1" if absent.

    Raises UnknownRoomVersion for a version Roomstream does not know (or a non-string one), and
    InvalidPdu when ``content`` is not an object.
    """
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        raise InvalidPdu("content must be an object", "content")
    return room_version(content.get("room_version", DEFAULT_ROOM_VERSION))


def peek_room_id(raw: Raw) -> str | None:
    """The room a raw PDU belongs to, without validating it; None when that cannot be told.

    A room version 12 ``m.room.create`` event carries no ``room_id``: its room ID is derived from
    its reference hash. Never raises.
    """
    try:
        obj = raw if isinstance(raw, Mapping) else parse_json(raw)
        if not isinstance(obj, Mapping):
            return None
        rid = obj.get("room_id")
        if isinstance(rid, str):
            return rid
        if rid is None and obj.get("type") == "m.room.create":
            rv = parse_create_event_room_version(obj)
            if rv.room_id_is_create_event_hash:
                return room_id_from_create_event(obj, rv)
    except (ValueError, TypeError, RecursionError):
        # Every MatrixError raised on the way (InvalidPdu, UnknownRoomVersion,
        # CanonicalJsonError) is a ValueError.
        return None
    return None


# --- parsing -----------------------------------------------------------------------------------


def parse_pdu(raw: Raw, room_version: RoomVersion, *, event_id: str | None = None) -> Event:
    """Validate a PDU of ``room_version`` and build its Event.

    ``raw`` is the federation JSON as bytes, text or an already parsed object (copied, never
    kept). ``event_id``, when the caller knows the ID the PDU was sent under, must be the one the
    room version's rule gives, else EventIdMismatch. A v3+ PDU may carry its ID in an
    ``event_id`` field as a convenience copy: it is removed before anything is measured or
    hashed, and must equal the reference-hash ID, else EventIdMismatch naming both.

    Raises InvalidPdu (or EventIdMismatch) naming the field. A content hash that does not match
    yields the redacted event with ``redacted_on_receipt`` set.
    """
    rv = room_version
    pdu = _load(raw, rv)
    _strip_unsigned(pdu)
    copied_id = _take_event_id_copy(pdu, rv)
    _check_json_and_size(pdu, rv)
    _check_fields(pdu, rv)
    eid = _event_id(pdu, rv, event_id, copied_id)

    redacted_on_receipt = False
    # 3. "Passes hash checks, otherwise it is redacted before being processed further."
    if not check_content_hash(pdu):
        pdu = redact(pdu, rv)
        redacted_on_receipt = True

    room_id = pdu.get("room_id")
    if room_id is None:
        # v12 create event (the only PDU _check_fields lets through without room_id): "The room
        # ID is the event ID of the event with sigil ! instead of $."
        room_id = "!" + eid[1:]
    content: Mapping[str, Any] = pdu["content"]
    return Event(
        event_id=eid,
        room_id=room_id,
        type=pdu["type"],
        state_key=pdu.get("state_key"),
        sender=pdu["sender"],
        content=content,
        prev_event_ids=_reference_ids(pdu["prev_events"]),
        auth_event_ids=_reference_ids(pdu["auth_events"]),
        depth=pdu["depth"],
        origin_server_ts=pdu["origin_server_ts"],
        room_version=rv,
        pdu=pdu,
        redacted_on_receipt=redacted_on_receipt,
    )


def _load(raw: object, rv: RoomVersion) -> dict[str, Any]:
    try:
        if isinstance(raw, Mapping):
            obj = copy_json(raw)
        elif isinstance(raw, (bytes, bytearray, memoryview, str)):
            obj = parse_json(raw, exact_numbers=not rv.strict_canonical_json)
        else:
            raise InvalidPdu(f"a PDU is JSON bytes, text or an object, not {type(raw).__name__}")
    except CanonicalJsonError as e:
        raise InvalidPdu(e.reason, e.path) from None
    if not isinstance(obj, dict):
        raise InvalidPdu(f"a PDU must be a JSON object, not {_json_type(obj)}")
    return obj


# The unsigned keys a remote server may tell us; the reference implementation keeps the same.
_UNSIGNED_KEYS = frozenset({"age"})
_UNSIGNED_MEMBER_KEYS = frozenset({"age", "invite_room_state", "knock_room_state"})


def _strip_unsigned(pdu: dict[str, Any]) -> None:
    """Keep only the ``unsigned`` keys the protocol defines for received events.

    ``unsigned`` is covered by neither hashes nor signatures ("Additional data added by the origin
    server but not covered by the signatures"): any server relaying the event may have changed
    it, so it never makes an event invalid. Anything else in it, or an ``unsigned`` that is not an
    object, is dropped before the event is validated and stored.
    """
    if "unsigned" not in pdu:
        return
    unsigned = pdu["unsigned"]
    if not isinstance(unsigned, dict):
        del pdu["unsigned"]
        return
    keep = _UNSIGNED_MEMBER_KEYS if pdu.get("type") == "m.room.member" else _UNSIGNED_KEYS
    pdu["unsigned"] = {k: v for k, v in unsigned.items() if k in keep}


def _take_event_id_copy(pdu: dict[str, Any], rv: RoomVersion) -> str | None:
    """Remove a v3+ PDU's ``event_id`` field and return it (None when absent).

    From v3 the event ID is the reference hash and no ``event_id`` field is part of the event;
    redaction would keep one, so left in it would change the hash. Producers that annotate PDUs
    with their ID lose nothing: the copy is compared with the computed ID in ``_event_id``.
    """
    if rv.event_format == EventFormat.V1 or "event_id" not in pdu:
        return None
    copied = pdu.pop("event_id")
    return event_id_field(
        copied,
        lambda: f"event_id must be a string (a copy of the event ID), not {_json_type(copied)}",
    )


def _check_json_and_size(pdu: dict[str, Any], rv: RoomVersion) -> None:
    # One scan: v6+ "Servers MUST strictly enforce the JSON format specified in the appendices
    # ... discarding of events over federation", and for every version what the later stages
    # could not write (nesting, integers past 64 bits); the bytes it yields are the size.
    try:
        size = len(
            encode_pdu_json(pdu, strict_wire=rv.strict_canonical_json, max_nesting=MAX_PDU_NESTING)
        )
    except CanonicalJsonError as e:
        raise InvalidPdu(e.reason, e.path) from None
    if size > MAX_PDU_BYTES:
        raise InvalidPdu(
            f"the PDU is {size} bytes as canonical JSON; events MUST NOT be larger than "
            f"{MAX_PDU_BYTES} bytes"
        )


def _check_fields(pdu: dict[str, Any], rv: RoomVersion) -> None:
    event_type = _require(pdu, "type", str)
    _check_length(event_type, "type", rv)
    _check_no_nul(event_type, "type")

    sender = _require(pdu, "sender", str)
    if not _is_user_id_shape(sender):
        raise InvalidPdu(f"sender {sender!r} is not a user ID (@localpart:server_name)", "sender")
    _check_length(sender, "sender", rv)

    if "room_id" in pdu or not (rv.room_id_is_create_event_hash and event_type == "m.room.create"):
        # v12: room_id is "Omitted from m.room.create events"; required everywhere else.
        room_id = _require(pdu, "room_id", str)
        if not is_valid_room_id(room_id, rv):
            form = (
                "'!' and the create event's URL-safe base64 reference hash"
                if rv.room_id_is_create_event_hash
                else "!localpart:server_name, at most 255 long"
            )
            raise InvalidPdu(
                f"room_id {room_id!r} is not a room ID of room version {rv.identifier} ({form})",
                "room_id",
            )

    if "state_key" in pdu:
        state_key = _require(pdu, "state_key", str)
        _check_length(state_key, "state_key", rv)
        _check_no_nul(state_key, "state_key")

    _require(pdu, "content", dict)

    depth = _require_int(pdu, "depth")
    max_depth = MAX_DEPTH_V6 if rv.strict_canonical_json else MAX_DEPTH_V1
    if not 0 <= depth <= max_depth:
        raise InvalidPdu(f"depth {depth} is outside [0, {max_depth}]", "depth")

    ts = _require_int(pdu, "origin_server_ts")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise InvalidPdu(f"origin_server_ts {ts} does not fit in 64 bits", "origin_server_ts")

    _check_references(pdu, "prev_events", MAX_PREV_EVENTS, rv)
    _check_references(pdu, "auth_events", MAX_AUTH_EVENTS, rv)

    hashes = _require(pdu, "hashes", dict)
    sha256 = hashes.get("sha256")
    if not isinstance(sha256, str):
        raise InvalidPdu(
            f"hashes.sha256 must be a string, not {_json_type(sha256)}", "hashes.sha256"
        )
    try:
        decode_base64(sha256)
    except ValueError:
        raise InvalidPdu(f"hashes.sha256 {sha256!r} is not base64", "hashes.sha256") from None

    signatures = _require(pdu, "signatures", dict)
    for server, by_key in signatures.items():
        path = f"signatures.{server}"
        if not isinstance(by_key, dict):
            raise InvalidPdu(
                f"{path} must map key IDs to signatures, not be {_json_type(by_key)}", path
            )
        for key_id, sig in by_key.items():
            if not isinstance(sig, str):
                raise InvalidPdu("a signature must be a string", f"{path}.{key_id}")

    if not rv.updated_redaction_rules and "redacts" in pdu:
        # Before v11 "redacts" is a top-level string; from v11 it lives in content.
        _check_no_nul(_require(pdu, "redacts", str), "redacts")
    if event_type == "m.room.redaction" and rv.updated_redaction_rules:
        redacts = pdu["content"].get("redacts")
        if isinstance(redacts, str):
            # Stored in the redactions table when the redaction is accepted.
            _check_no_nul(redacts, "content.redacts")


def _check_references(pdu: dict[str, Any], key: str, limit: int, rv: RoomVersion) -> None:
    refs = _require(pdu, key, list)
    if len(refs) > limit:
        raise InvalidPdu(f"{key} has {len(refs)} entries; at most {limit} are allowed", key)
    v1 = rv.event_format == EventFormat.V1
    for i, entry in enumerate(refs):
        path = f"{key}[{i}]"
        ref = entry
        if v1:
            # v1, v2: "Event IDs and reference hashes": [event_id, {"sha256": ...}] pairs.
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
                raise InvalidPdu(f"{path} must be an [event ID, hashes] pair", path)
            ref = entry[0]
            path += "[0]"
        if not isinstance(ref, str) or not is_valid_event_id(ref, rv):
            raise InvalidPdu(
                f"{path} {ref!r} is not an event ID of room version {rv.identifier}", path
            )


def _event_id(pdu: dict[str, Any], rv: RoomVersion, claimed: str | None, copied: str | None) -> str:
    if rv.event_format == EventFormat.V1:
        # v1, v2: the event_id field is required and names the ID: "$opaque_id:domain".
        eid = _require(pdu, "event_id", str)
        if not is_valid_event_id(eid, rv):
            raise EventIdMismatch(
                f"event_id {eid!r} is not $opaque_id:server_name of at most 255", "event_id"
            )
    else:
        # v3+: the event ID is the reference hash (of the PDU without the copy, removed above).
        eid = compute_event_id(pdu, rv)
        if copied is not None and copied != eid:
            raise EventIdMismatch(
                f"the PDU's event_id field is {copied!r} but its reference hash gives "
                f"{eid!r}; in room version {rv.identifier} the event ID is the reference hash, "
                "so the field must be that ID or absent",
                "event_id",
            )
    if claimed is not None and claimed != eid:
        raise EventIdMismatch(
            f"the PDU was sent as {claimed!r} but its event ID is {eid!r}", "event_id"
        )
    return eid


def _reference_ids(refs: list[Any]) -> tuple[str, ...]:
    return tuple(r[0] if isinstance(r, list) else r for r in refs)


_T = TypeVar("_T")

_TYPE_NAMES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _require(pdu: dict[str, Any], key: str, kind: type[_T]) -> _T:
    if key not in pdu:
        raise InvalidPdu(f"{key} is required", key)
    value = pdu[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidPdu(
            f"{key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, not {_json_type(value)}",
            key,
        )
    return value


def _require_int(pdu: dict[str, Any], key: str) -> int:
    return _require(pdu, key, int)


def _check_no_nul(value: str, key: str) -> None:
    # Identifiers, type, state_key and redacts are stored in PostgreSQL text columns, which cannot
    # hold U+0000; refused here rather than failing the committer's transaction later. (Sender,
    # room and event IDs refuse NUL through their grammars; content is stored as JSON text, in
    # which NUL is the escape \u0000 and is kept.)
    if "\x00" in value:
        raise InvalidPdu(
            f"{key} {value!r} contains U+0000 (NUL), which cannot be stored; no event with a NUL "
            f"in its {key} can be accepted",
            key,
        )


def _check_length(value: str, key: str, rv: RoomVersion) -> None:
    # sender, room_id, event_id, type, state_key: "MUST NOT exceed 255 bytes"; counted in code
    # points before v11 (see id_length).
    n = id_length(value, rv)
    if n > MAX_ID_BYTES:
        unit = "bytes" if rv.strict_event_byte_limits else "code points"
        raise InvalidPdu(f"{key} is {n} {unit}; it MUST NOT exceed {MAX_ID_BYTES}", key)
