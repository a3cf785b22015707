"""The input policy of docs/input-policy.md, at parse time and in the auth rules.

Each table row is one rule of the policy: a PDU that breaks it is an InvalidPdu naming the field
(the shell dead-letters it with the message as the reason); one just inside it is accepted.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from pipeline.matrix.auth import check_auth_events
from pipeline.matrix.canonical_json import MAX_NESTING, encode_canonical_json
from pipeline.matrix.errors import EventIdMismatch, EventRejected, InvalidPdu
from pipeline.matrix.events import Event
from pipeline.matrix.explain import auth_events_read
from pipeline.matrix.hashes import compute_event_id
from pipeline.matrix.pdu import MAX_PDU_BYTES, MAX_PDU_NESTING, parse_pdu
from pipeline.matrix.room_versions import EventFormat, RoomVersion
from tests.unit.matrix.auth_fixtures import BOB, Room, explained, versions
from tests.unit.matrix.pdu_factory import ALL_VERSIONS, make_pdu

HASH_IDS = [rv for rv in ALL_VERSIONS if rv.event_format != EventFormat.V1]  # v3+
NAMED_IDS = [rv for rv in ALL_VERSIONS if rv.event_format == EventFormat.V1]  # v1, v2
LEGACY = [rv for rv in ALL_VERSIONS if not rv.strict_canonical_json]  # v1-v5
STRICT = [rv for rv in ALL_VERSIONS if rv.strict_canonical_json]  # v6+
BEFORE_V11 = [rv for rv in ALL_VERSIONS if not rv.updated_redaction_rules]
FROM_V11 = [rv for rv in ALL_VERSIONS if rv.updated_redaction_rules]
BEFORE_V12 = [rv for rv in ALL_VERSIONS if not rv.room_id_is_create_event_hash]


def ids(rvs: list[RoomVersion]) -> list[str]:
    return [f"v{rv.identifier}" for rv in rvs]


def refused(raw: Any, rv: RoomVersion) -> InvalidPdu:
    with pytest.raises(InvalidPdu) as exc:
        parse_pdu(raw, rv)
    return exc.value


def without_unsigned(pdu: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pdu.items() if k != "unsigned"}


# --- an event_id field in a v3+ PDU is a convenience copy ------------------------------------


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
@pytest.mark.parametrize("as_bytes", [False, True], ids=["object", "bytes"])
def test_v3_plus_event_id_copy_equal_to_the_reference_hash_is_removed_before_hashing(
    rv: RoomVersion, as_bytes: bool
) -> None:
    pdu = make_pdu(rv)
    eid = compute_event_id(pdu, rv)
    annotated = {**pdu, "event_id": eid}
    event = parse_pdu(orjson.dumps(annotated) if as_bytes else annotated, rv)
    assert event.event_id == eid
    assert not event.redacted_on_receipt
    # Stored as Synapse stores a v3+ event: without the field (the same PDU as unannotated).
    assert "event_id" not in event.pdu
    assert event.pdu == parse_pdu(pdu, rv).pdu


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
def test_v3_plus_event_id_copy_that_differs_is_refused_naming_both_ids(rv: RoomVersion) -> None:
    pdu = make_pdu(rv)
    eid = compute_event_id(pdu, rv)
    other = compute_event_id(make_pdu(rv, depth=6), rv)
    err = refused({**pdu, "event_id": other}, rv)
    assert isinstance(err, EventIdMismatch)
    assert err.field == "event_id"
    assert other in err.reason and eid in err.reason


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
@pytest.mark.parametrize("copy", [None, 5, ["$x"]], ids=["null", "number", "array"])
def test_v3_plus_event_id_copy_must_be_a_string(rv: RoomVersion, copy: Any) -> None:
    err = refused({**make_pdu(rv), "event_id": copy}, rv)
    assert err.field == "event_id" and "must be a string" in err.reason


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
def test_v3_plus_size_limit_applies_to_the_pdu_without_the_copy(rv: RoomVersion) -> None:
    pdu = sized_pdu(rv, MAX_PDU_BYTES)
    event = parse_pdu({**pdu, "event_id": compute_event_id(pdu, rv)}, rv)
    assert len(encode_canonical_json(event.pdu)) == MAX_PDU_BYTES


@pytest.mark.parametrize("rv", NAMED_IDS, ids=ids(NAMED_IDS))
def test_v1_v2_event_id_field_is_the_event_id_and_is_kept(rv: RoomVersion) -> None:
    pdu = make_pdu(rv)
    event = parse_pdu(pdu, rv)
    assert event.event_id == pdu["event_id"] == event.pdu["event_id"]


# --- sizes: 65,536 bytes of canonical JSON ---------------------------------------------------


def sized_pdu(rv: RoomVersion, size: int) -> dict[str, Any]:
    overhead = len(encode_canonical_json(make_pdu(rv, content={"body": ""})))
    pdu = make_pdu(rv, content={"body": "x" * (size - overhead)})
    assert len(encode_canonical_json(pdu)) == size
    return pdu


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize(("size", "accepted"), [(MAX_PDU_BYTES, True), (MAX_PDU_BYTES + 1, False)])
def test_size_limit_counts_canonical_json_not_the_bytes_received(
    rv: RoomVersion, size: int, accepted: bool
) -> None:
    # Indented, the input is far larger than its canonical form; only the canonical form counts.
    raw = json.dumps(sized_pdu(rv, size), indent=8).encode()
    assert len(raw) > MAX_PDU_BYTES + 100
    if accepted:
        parse_pdu(raw, rv)
    else:
        assert str(size) in refused(raw, rv).reason


# --- nesting: what orjson (and so every later stage) can write -------------------------------


def nested_pdu(rv: RoomVersion, levels: int) -> dict[str, Any]:
    """A PDU whose deepest path crosses ``levels`` objects and arrays (the PDU, content, and
    ``levels - 2`` arrays)."""
    value: Any = 1
    for _ in range(levels - 2):
        value = [value]
    # Past what canonical JSON can write, the content hash is the unnested PDU's: parsing refuses
    # such a PDU before it checks hashes.
    return make_pdu(rv, rehash=levels <= MAX_NESTING, content={"n": value})


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
@pytest.mark.parametrize(
    ("levels", "accepted"),
    [(MAX_PDU_NESTING, True), (MAX_PDU_NESTING + 1, False), (250, False), (300, False)],
)
def test_nesting_deeper_than_the_limit_is_refused_at_parse(
    rv: RoomVersion, levels: int, accepted: bool
) -> None:
    pdu = nested_pdu(rv, levels)
    # The stdlib writes any nesting (orjson stops at 254), as a producer might.
    raw = json.dumps(pdu).encode()
    if accepted:
        event = parse_pdu(raw, rv)
        assert event.content == pdu["content"]
    else:
        err = refused(raw, rv)
        assert err.field.startswith("content.n[0]")
        assert len(err.field) < 80  # where it starts, not 200 levels of "[0]"
        assert f"deeper than {MAX_PDU_NESTING} levels" in err.reason


def test_the_deepest_accepted_pdu_still_leaves_orjson_room_for_envelopes() -> None:
    # orjson refuses 255 levels; the chunk wraps a PDU in three (chunk, events, event) and the
    # room record's parked inputs in four.
    deepest = nested_pdu(ALL_VERSIONS[-1], MAX_PDU_NESTING)
    orjson.dumps({"a": [{"b": [{"pdu": deepest}]}]})


# --- NUL: PostgreSQL text columns cannot hold U+0000 -----------------------------------------

_NUL_ID = "$" + "A" * 42 + "\x00"

NUL_REFUSED: list[tuple[str, list[RoomVersion], dict[str, Any], str]] = [
    ("type", ALL_VERSIONS, {"type": "m.room.mess\x00age"}, "type"),
    ("state_key", ALL_VERSIONS, {"state_key": "@bob\x00:example.org"}, "state_key"),
    ("sender", ALL_VERSIONS, {"sender": "@al\x00ice:example.org"}, "sender"),
    ("room_id", BEFORE_V12, {"room_id": "!ro\x00om:example.org"}, "room_id"),
    ("prev_events", HASH_IDS, {"prev_events": [_NUL_ID]}, "prev_events[0]"),
    ("auth_events", HASH_IDS, {"auth_events": [_NUL_ID]}, "auth_events[0]"),
    (
        "v1 prev_events",
        NAMED_IDS,
        {"prev_events": [["$a\x00b:example.org", {"sha256": "aGFzaA"}]]},
        "prev_events[0][0]",
    ),
    ("v1 event_id", NAMED_IDS, {"event_id": "$ev\x00:example.org"}, "event_id"),
    (
        "redacts before v11",
        BEFORE_V11,
        {"type": "m.room.redaction", "redacts": "$ev\x00:example.org"},
        "redacts",
    ),
    (
        "content.redacts from v11",
        FROM_V11,
        {"type": "m.room.redaction", "content": {"redacts": _NUL_ID}},
        "content.redacts",
    ),
]


@pytest.mark.parametrize(
    ("rv", "overrides", "field"),
    [
        pytest.param(rv, overrides, field, id=f"{name}-v{rv.identifier}")
        for name, rvs, overrides, field in NUL_REFUSED
        for rv in rvs
    ],
)
def test_nul_in_a_field_stored_in_a_text_column_is_refused(
    rv: RoomVersion, overrides: dict[str, Any], field: str
) -> None:
    err = refused(make_pdu(rv, **overrides), rv)
    assert err.field == field


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_nul_inside_content_is_kept_as_synapse_keeps_it(rv: RoomVersion) -> None:
    # Content is stored as JSON text, where U+0000 is the escape \u0000, never a raw NUL.
    content = {"body": "a\x00b", "k\x00": ["\x00"], "membership": "join"}
    event = parse_pdu(orjson.dumps(make_pdu(rv, content=content)), rv)
    assert event.content == content
    assert b"\x00" not in orjson.dumps(event.pdu)


def test_nul_reasons_say_what_was_wrong_and_that_it_cannot_be_stored() -> None:
    rv = ALL_VERSIONS[-1]
    err = refused(make_pdu(rv, type="m.room.mess\x00age"), rv)
    assert "U+0000" in err.reason and "cannot be stored" in err.reason
    assert "\x00" not in err.reason  # the reason itself goes into JSON and logs


# --- integers: what BIGINT columns and orjson hold -------------------------------------------

INTEGERS: list[tuple[str, list[RoomVersion], str, int, bool]] = [
    # field, room versions, where, value, accepted
    ("depth at the int64 maximum", LEGACY, "depth", 2**63 - 1, True),
    ("depth past int64", LEGACY, "depth", 2**63, False),
    ("depth past 64 bits", LEGACY, "depth", 2**64, False),
    ("depth at the canonical maximum", STRICT, "depth", 2**53 - 1, True),
    ("depth past the canonical range", STRICT, "depth", 2**53, False),
    ("origin_server_ts at the int64 maximum", LEGACY, "origin_server_ts", 2**63 - 1, True),
    ("origin_server_ts at the int64 minimum", LEGACY, "origin_server_ts", -(2**63), True),
    ("origin_server_ts past int64", LEGACY, "origin_server_ts", 2**63, False),
    ("origin_server_ts below int64", LEGACY, "origin_server_ts", -(2**63) - 1, False),
    ("origin_server_ts past the canonical range", STRICT, "origin_server_ts", 2**53, False),
    ("content integer at the 64-bit maximum", LEGACY, "content.n", 2**64 - 1, True),
    ("content integer past 64 bits", LEGACY, "content.n", 2**64, False),
    ("content integer below 64 bits", LEGACY, "content.n", -(2**63) - 1, False),
    ("content integer at the canonical maximum", STRICT, "content.n", 2**53 - 1, True),
    ("content integer past the canonical range", STRICT, "content.n", 2**53, False),
]


@pytest.mark.parametrize(
    ("rv", "where", "value", "accepted"),
    [
        pytest.param(rv, where, value, accepted, id=f"{name}-v{rv.identifier}")
        for name, rvs, where, value, accepted in INTEGERS
        for rv in rvs
    ],
)
def test_integers_outside_what_the_database_and_orjson_hold_are_refused(
    rv: RoomVersion, where: str, value: int, accepted: bool
) -> None:
    pdu = make_pdu(rv, content={"n": value}) if where == "content.n" else make_pdu(rv)
    if where != "content.n":
        pdu = make_pdu(rv, **{where: value})
    raw = json.dumps(pdu).encode()  # the stdlib writes any integer, as a producer might
    if accepted:
        event = parse_pdu(raw, rv)
        orjson.dumps(event.pdu)  # what the chunk and the committer write
    else:
        assert refused(raw, rv).field == where


# --- an auth event from another room: rejected, as Synapse does -----------------------------


def _foreign_member(version: str) -> Event:
    other = Room(version)
    other.room_id = "!elsewhere:a.org"
    eid = "$foreign:a.org" if other.rv.event_format == EventFormat.V1 else "$foreign"
    return other.new("m.room.member", BOB, {"membership": "join"}, state_key=BOB, event_id=eid)


@pytest.mark.parametrize("version", versions())
@pytest.mark.parametrize(
    "also",
    ["nothing else", "a duplicate of a selected entry", "an entry the selection does not want"],
)
def test_auth_event_from_another_room_rejects_and_the_reason_names_that_room(
    version: str, also: str
) -> None:
    # Synapse checks each auth event's room before the other rules on it
    # (check_state_independent_auth_rules), so whatever else is wrong, the reason is the room.
    room = Room(version)
    room.join(BOB)
    foreign = _foreign_member(version)
    if also == "an entry the selection does not want":
        foreign = Event.from_trusted(
            {**foreign.pdu, "type": "m.room.topic", "state_key": ""}, room.rv
        )
    ev = room.with_auth(room.new("m.room.message", BOB, {}))
    # Bob's own join is selected already, so the foreign join is also a duplicate entry; listed
    # last, the duplicate rule would see it first if it ran before the room rule.
    auth = [*ev.auth_event_ids, foreign.event_id]
    if also == "nothing else":
        own = room.state[("m.room.member", BOB)].event_id
        auth = [i for i in auth if i != own]
    ev = Event.from_trusted({**ev.pdu, "auth_events": auth}, room.rv)
    store = {**room.events(), foreign.event_id: foreign}
    with pytest.raises(EventRejected) as exc:
        check_auth_events(ev, store.get)
    assert explained(exc.value, ev, auth_events_read(ev, store.get))["rule"] == (
        "3.5" if version == "12" else "3.5 of room version 12"
    )
    assert exc.value.reason == (
        f"{ev.event_id} in room {room.room_id} has an auth event {foreign.event_id} "
        "from room !elsewhere:a.org"
    )
