"""Well-formed PDUs of every room version, for the event format tests.

``make_pdu(rv, **overrides)`` returns a federation PDU that ``parse_pdu`` accepts, with its content
hash filled in after the overrides (pass ``DROP`` to remove a key). ``rehash=False`` keeps the
hash of the PDU before the overrides, to build events whose content hash does not match.
"""

from __future__ import annotations

from typing import Any

from pipeline.matrix.hashes import add_content_hash
from pipeline.matrix.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion

ALL_VERSIONS: list[RoomVersion] = list(KNOWN_ROOM_VERSIONS.values())
VERSION_IDS: list[str] = [rv.identifier for rv in ALL_VERSIONS]

DROP: Any = object()

SERVER = "example.org"
ALICE = "@alice:example.org"
# 43 characters each: the shape of an unpadded base64 sha256.
_STD_HASH = "AbCd+/0123456789abcdefghijklmnopqrstuvwxyzA"
_URLSAFE_HASH = "AbCd-_0123456789abcdefghijklmnopqrstuvwxyzA"
V12_ROOM_ID = "!" + _URLSAFE_HASH


def event_ref(rv: RoomVersion, n: int = 0) -> Any:
    """A reference to a (fictional) event, in ``rv``'s prev_events/auth_events form."""
    if rv.event_format == EventFormat.V1:
        return [f"$ev{n}:{SERVER}", {"sha256": "aGFzaA"}]
    base = _STD_HASH if rv.event_format == EventFormat.V2 else _URLSAFE_HASH
    return "$" + base[:-2] + f"{n:02d}"


def ref_id(rv: RoomVersion, n: int = 0) -> str:
    ref = event_ref(rv, n)
    return ref[0] if isinstance(ref, list) else str(ref)


def room_id_for(rv: RoomVersion) -> str:
    return V12_ROOM_ID if rv.room_id_is_create_event_hash else f"!room:{SERVER}"


def make_pdu(rv: RoomVersion, *, rehash: bool = True, **overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": ALICE,
        "room_id": room_id_for(rv),
        "content": {"msgtype": "m.text", "body": "hello"},
        "depth": 5,
        "origin": SERVER,
        "origin_server_ts": 1_700_000_000_000,
        "prev_events": [event_ref(rv, 1)],
        "auth_events": [event_ref(rv, 2), event_ref(rv, 3)],
        "signatures": {SERVER: {"ed25519:1": "c2lnbmF0dXJl"}},
        "unsigned": {"age": 10},
    }
    if rv.event_format == EventFormat.V1:
        pdu["event_id"] = f"$msg1:{SERVER}"
    before = add_content_hash(pdu)
    pdu = {key: value for key, value in {**pdu, **overrides}.items() if value is not DROP}
    result = add_content_hash(pdu) if rehash else {**pdu, "hashes": before["hashes"]}
    if "hashes" in overrides:
        # An explicit hashes override wins over the computed one.
        if overrides["hashes"] is DROP:
            del result["hashes"]
        else:
            result["hashes"] = overrides["hashes"]
    return result


def make_create(rv: RoomVersion, **content: Any) -> dict[str, Any]:
    """An ``m.room.create`` PDU founding a room of version ``rv`` (v12: without room_id)."""
    fields: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "content": {"room_version": rv.identifier, **content},
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    }
    if rv.room_id_is_create_event_hash:
        fields["room_id"] = DROP
    return make_pdu(rv, **fields)
