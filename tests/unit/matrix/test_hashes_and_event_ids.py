"""Content hashes, reference hashes, event IDs of each format, and room version 12 room IDs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.matrix.errors import InvalidPdu, UnknownRoomVersion
from pipeline.matrix.hashes import (
    add_content_hash,
    check_content_hash,
    compute_event_id,
    content_hash,
    decode_base64,
    encode_unpadded_base64,
    reference_hash,
    room_id_from_create_event,
)
from pipeline.matrix.pdu import is_valid_event_id, parse_pdu, peek_room_id
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import EventFormat, room_version
from tests.unit.matrix.pdu_factory import ALL_VERSIONS, VERSION_IDS, make_create, make_pdu

# --- base64 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
    ],
)
def test_unpadded_base64_matches_the_appendix_examples(raw: bytes, encoded: str) -> None:
    assert encode_unpadded_base64(raw) == encoded
    assert decode_base64(encoded) == raw


def test_url_safe_base64_uses_minus_and_underscore_for_62_and_63() -> None:
    data = bytes([0xFB, 0xFF, 0xBF])
    assert encode_unpadded_base64(data) == "+/+/"
    assert encode_unpadded_base64(data, urlsafe=True) == "-_-_"
    assert decode_base64("-_-_") == data


@pytest.mark.parametrize("text", ["Zm9vYg==", "Zm9vYg"])
def test_decoding_accepts_input_with_or_without_padding(text: str) -> None:
    assert decode_base64(text) == b"foob"


@pytest.mark.parametrize("text", ["Zm9v!", "Z", "+/-_", "Zm 9v", "Zg==="])
def test_decoding_refuses_what_is_not_base64(text: str) -> None:
    with pytest.raises(ValueError):
        decode_base64(text)


# --- content hashes: the appendix's "Event Signing" test vectors ---------------------------------

MINIMAL_EVENT: dict[str, Any] = {
    "room_id": "!x:domain",
    "sender": "@a:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "signatures": {},
    "hashes": {},
    "type": "X",
    "content": {},
    "prev_events": [],
    "auth_events": [],
    "depth": 3,
    "unsigned": {"age_ts": 1000000},
}
REDACTABLE_EVENT: dict[str, Any] = {
    "content": {"body": "Here is the message content"},
    "event_id": "$0:domain",
    "origin": "domain",
    "origin_server_ts": 1000000,
    "type": "m.room.message",
    "room_id": "!r:domain",
    "sender": "@u:domain",
    "signatures": {},
    "unsigned": {"age_ts": 1000000},
}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (MINIMAL_EVENT, "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"),
        (REDACTABLE_EVENT, "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"),
    ],
)
def test_content_hash_matches_the_appendix_event_signing_vectors(
    event: dict[str, Any], expected: str
) -> None:
    assert encode_unpadded_base64(content_hash(event)) == expected
    hashed = add_content_hash(event)
    assert hashed["hashes"] == {"sha256": expected}
    assert check_content_hash(hashed)


def test_content_hash_excludes_unsigned_signatures_and_hashes_but_covers_everything_else() -> None:
    base = content_hash(REDACTABLE_EVENT)
    for key, value in [
        ("unsigned", {"age": 5}),
        ("signatures", {"x": {}}),
        ("hashes", {"a": 1}),
        # Legacy top-level keys early homeservers left out of the hash.
        ("age_ts", 5),
        ("outlier", True),
        ("destinations", ["a"]),
    ]:
        assert content_hash({**REDACTABLE_EVENT, key: value}) == base
    for key, value in [("content", {"body": "other"}), ("origin", "elsewhere"), ("extra", 1)]:
        assert content_hash({**REDACTABLE_EVENT, key: value}) != base


@pytest.mark.parametrize(
    "hashes",
    [None, {}, {"sha256": 5}, {"sha256": "not base64!"}, {"sha256": "AAAA"}, {"md5": "x"}],
)
def test_check_content_hash_is_false_for_missing_malformed_or_wrong_hashes(hashes: Any) -> None:
    event = dict(REDACTABLE_EVENT)
    if hashes is not None:
        event["hashes"] = hashes
    assert not check_content_hash(event)


# --- event IDs ----------------------------------------------------------------------------------

# A create event from a public room, with the event ID it is known by in a v3 room; the same
# reference hash in URL-safe base64 is its ID in v4-v10 rooms.
PUBLIC_CREATE_EVENT = json.loads(
    '{"auth_events": [], "prev_events": [], "type": "m.room.create",'
    ' "room_id": "!uXDCzlYgCTHtiWCkEx:jki.re", "sender": "@erikj:jki.re",'
    ' "content": {"room_version": "5", "predecessor": {"room_id":'
    ' "!gdRMqOrTFdOCYHNwOo:half-shot.uk", "event_id":'
    ' "$LP7ROBc4b+cMc1UE9haIz8q5AK2AIW4eJ90FfKLvyZI"}, "creator": "@erikj:jki.re"},'
    ' "depth": 1, "prev_state": [], "state_key": "", "origin": "jki.re",'
    ' "origin_server_ts": 1560284621137,'
    ' "hashes": {"sha256": "IX6zuNiJpJPNf70BLleL3HSCpjKeq9Uhu7uUpyDjBmc"},'
    ' "signatures": {"jki.re": {"ed25519:auto": "O4IyFfF2PPtGp5uaDm8t57dZbdh8vc8Q64LgCwvzYRVI'
    'tAMI0uisfiAFaxkVT7MRpzh6N2QNN5NMRXZKmgPYDA"}}, "unsigned": {"age": 1321650}}'
)
PUBLIC_CREATE_ID_V3 = "$RrGxF28UrHLmoASHndYb9Jb/1SFww2ptmtur9INS438"
PUBLIC_CREATE_ID_V4 = "$RrGxF28UrHLmoASHndYb9Jb_1SFww2ptmtur9INS438"


def test_format_v2_event_id_is_standard_unpadded_base64_of_the_reference_hash() -> None:
    assert compute_event_id(PUBLIC_CREATE_EVENT, room_version("3")) == PUBLIC_CREATE_ID_V3


@pytest.mark.parametrize("version", ["4", "5", "6", "7", "8", "9", "10"])
def test_format_v3_event_id_is_url_safe_unpadded_base64_of_the_reference_hash(
    version: str,
) -> None:
    rv = room_version(version)
    assert compute_event_id(PUBLIC_CREATE_EVENT, rv) == PUBLIC_CREATE_ID_V4
    event = parse_pdu(json.dumps(PUBLIC_CREATE_EVENT), rv, event_id=PUBLIC_CREATE_ID_V4)
    assert event.event_id == PUBLIC_CREATE_ID_V4
    assert not event.redacted_on_receipt


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_reference_hash_no_longer_covers_origin_and_prev_state(version: str) -> None:
    rv = room_version(version)
    without = {k: v for k, v in PUBLIC_CREATE_EVENT.items() if k not in ("origin", "prev_state")}
    assert compute_event_id(PUBLIC_CREATE_EVENT, rv) != PUBLIC_CREATE_ID_V4
    assert compute_event_id(PUBLIC_CREATE_EVENT, rv) == compute_event_id(without, rv)
    assert compute_event_id(without, room_version("10")) != PUBLIC_CREATE_ID_V4


# A room version 1 event as a homeserver sent it: [event_id, hashes] references, prev_state, and
# a content hash that must verify.
PUBLIC_V1_EVENT = (
    '{"auth_events":[["$oXL79cT7fFxR7dPH:localhost",{"sha256":'
    '"abjkiDSg1RkuZrbj2jZoGMlQaaj1Ue3Jhi7I7NlKfXY"}],["$IVUsaSkm1LBAZYYh:localhost",{"sha256":'
    '"X7RUj46hM/8sUHNBIFkStbOauPvbDzjSdH4NibYWnko"}],["$VS2QT0EeArZYi8wf:localhost",{"sha256":'
    '"k9eM6utkCH8vhLW9/oRsH74jOBS/6RVK42iGDFbylno"}]],"content":{"name":"test3"},"depth":7,'
    '"event_id":"$yvN1b43rlmcOs5fY:localhost","hashes":{"sha256":'
    '"Oh1mwI1jEqZ3tgJ+V1Dmu5nOEGpCE4RFUqyJv2gQXKs"},"origin":"localhost",'
    '"origin_server_ts":1510854416361,"prev_events":[["$FqI6TVvWpcbcnJ97:localhost",{"sha256":'
    '"upCsBqUhNUgT2/+zkzg8TbqdQpWWKQnZpGJc6KcbUC4"}]],"prev_state":[],'
    '"room_id":"!19Mp0U9hjajeIiw1:localhost","sender":"@test:localhost","signatures":'
    '{"localhost":{"ed25519:u9kP":"5IzSuRXkxvbTp0vZhhXYZeOe+619iG3AybJXr7zfNn/4vHz4TH7qSJVQXSaHHv'
    'cTcDodAKHnTG1WDulgO5okAQ"}},"state_key":"","type":"m.room.name"}'
)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_real_v1_event_verifies_and_keeps_its_event_id(version: str) -> None:
    rv = room_version(version)
    assert check_content_hash(json.loads(PUBLIC_V1_EVENT))
    event = parse_pdu(PUBLIC_V1_EVENT, rv, event_id="$yvN1b43rlmcOs5fY:localhost")
    assert event.event_id == "$yvN1b43rlmcOs5fY:localhost"
    assert not event.redacted_on_receipt
    assert event.prev_event_ids == ("$FqI6TVvWpcbcnJ97:localhost",)
    assert len(event.auth_event_ids) == 3


@pytest.mark.parametrize("version", ["1", "2"])
def test_format_v1_event_id_is_the_event_id_field(version: str) -> None:
    rv = room_version(version)
    assert compute_event_id(REDACTABLE_EVENT, rv) == "$0:domain"
    with pytest.raises(InvalidPdu) as exc:
        compute_event_id(MINIMAL_EVENT, rv)
    assert exc.value.field == "event_id"


@pytest.mark.parametrize("rv", [rv for rv in ALL_VERSIONS if rv.event_format != EventFormat.V1])
def test_event_id_survives_redaction_and_ignores_signatures_and_unsigned(rv: Any) -> None:
    pdu = make_pdu(rv, content={"body": "secret", "msgtype": "m.text"})
    eid = compute_event_id(pdu, rv)
    assert is_valid_event_id(eid, rv)
    assert compute_event_id(redact(pdu, rv), rv) == eid
    assert (
        compute_event_id({**pdu, "signatures": {"b": {"k": "s"}}, "unsigned": {"x": 1}}, rv) == eid
    )
    # A different content gives a different content hash, and the hash is covered.
    other = make_pdu(rv, content={"body": "other", "msgtype": "m.text"})
    assert compute_event_id(other, rv) != eid


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=VERSION_IDS)
def test_reference_hash_is_sha256_sized_and_changes_with_protected_fields(rv: Any) -> None:
    pdu = make_pdu(rv)
    digest = reference_hash(pdu, rv)
    assert len(digest) == 32
    assert reference_hash({**pdu, "depth": 6}, rv) != digest


@pytest.mark.parametrize("rv", [rv for rv in ALL_VERSIONS if rv.event_format != EventFormat.V1])
def test_computed_event_id_round_trips_through_parse_pdu(rv: Any) -> None:
    pdu = make_pdu(rv)
    eid = compute_event_id(pdu, rv)
    assert parse_pdu(pdu, rv, event_id=eid).event_id == eid
    assert parse_pdu(json.dumps(pdu).encode(), rv).event_id == eid


# --- room version 12 room IDs -------------------------------------------------------------------


def test_v12_room_id_is_the_create_event_id_with_a_bang() -> None:
    rv = room_version("12")
    create = make_create(rv)
    assert "room_id" not in create
    room_id = room_id_from_create_event(create)
    eid = compute_event_id(create, rv)
    assert room_id == "!" + eid[1:]
    assert len(room_id) == 44
    assert room_id_from_create_event(create, rv) == room_id

    event = parse_pdu(create, rv)
    assert event.room_id == room_id
    assert event.event_id == eid
    assert peek_room_id(json.dumps(create)) == room_id

    # An event of that room names it, and parses.
    message = make_pdu(rv, room_id=room_id, auth_events=[eid], prev_events=[eid])
    assert parse_pdu(message, rv).room_id == room_id
    assert peek_room_id(message) == room_id


def test_v12_room_id_depends_on_the_whole_create_content() -> None:
    rv = room_version("12")
    a = room_id_from_create_event(make_create(rv))
    b = room_id_from_create_event(make_create(rv, additional_creators=["@bob:example.org"]))
    assert a != b


@pytest.mark.parametrize("version", ["1", "3", "10", "11"])
def test_room_id_from_create_event_refuses_versions_whose_room_ids_are_chosen(version: str) -> None:
    create = make_create(room_version(version))
    with pytest.raises(ValueError):
        room_id_from_create_event(create)


def test_room_id_from_create_event_refuses_unknown_versions() -> None:
    with pytest.raises(UnknownRoomVersion):
        room_id_from_create_event({"type": "m.room.create", "content": {"room_version": "99"}})
