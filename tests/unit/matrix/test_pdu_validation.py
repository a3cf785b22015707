"""PDU validation on receipt: each violation of the event format is an InvalidPdu naming the field;
a content hash mismatch keeps the event, redacted."""

from __future__ import annotations

import contextlib
import json
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.matrix.canonical_json import encode_canonical_json
from pipeline.matrix.errors import EventIdMismatch, InvalidPdu, UnknownRoomVersion
from pipeline.matrix.hashes import compute_event_id
from pipeline.matrix.pdu import (
    MAX_PDU_BYTES,
    is_valid_server_name,
    is_valid_user_id,
    parse_create_event_room_version,
    parse_pdu,
    peek_room_id,
)
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import EventFormat, RoomVersion, room_version
from tests.unit.matrix.json_strategies import json_documents
from tests.unit.matrix.pdu_factory import (
    ALICE,
    ALL_VERSIONS,
    DROP,
    V12_ROOM_ID,
    VERSION_IDS,
    event_ref,
    make_create,
    make_pdu,
    ref_id,
)

LEGACY = [rv for rv in ALL_VERSIONS if not rv.strict_canonical_json]  # v1-v5
STRICT = [rv for rv in ALL_VERSIONS if rv.strict_canonical_json]  # v6+
HASH_IDS = [rv for rv in ALL_VERSIONS if rv.event_format != EventFormat.V1]  # v3+


def ids(rvs: list[RoomVersion]) -> list[str]:
    return [f"v{rv.identifier}" for rv in rvs]


def assert_invalid(pdu: Any, rv: RoomVersion, field: str, **kwargs: Any) -> InvalidPdu:
    with pytest.raises(InvalidPdu) as exc:
        parse_pdu(pdu, rv, **kwargs)
    assert exc.value.field == field, exc.value
    return exc.value


# --- valid events ------------------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_a_well_formed_pdu_parses_into_its_event(rv: RoomVersion) -> None:
    pdu = make_pdu(rv, state_key="", type="m.room.topic", content={"topic": "t"})
    event = parse_pdu(json.dumps(pdu).encode(), rv)
    assert event.type == "m.room.topic"
    assert event.state_key == ""
    assert event.sender == ALICE
    assert event.room_id == pdu["room_id"]
    assert event.content == {"topic": "t"}
    # v1/v2 [event_id, hashes] pairs are normalised to IDs.
    assert event.prev_event_ids == (ref_id(rv, 1),)
    assert event.auth_event_ids == (ref_id(rv, 2), ref_id(rv, 3))
    assert event.depth == 5
    assert event.origin_server_ts == pdu["origin_server_ts"]
    assert event.room_version is rv
    assert event.pdu == pdu
    assert not event.redacted_on_receipt
    if rv.event_format == EventFormat.V1:
        assert event.event_id == pdu["event_id"]
    else:
        assert event.event_id == compute_event_id(pdu, rv)


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_text_bytes_and_mappings_parse_alike_and_the_input_is_not_kept(rv: RoomVersion) -> None:
    pdu = make_pdu(rv)
    from_bytes = parse_pdu(json.dumps(pdu).encode(), rv)
    from_text = parse_pdu(json.dumps(pdu), rv)
    from_mapping = parse_pdu(types.MappingProxyType(pdu), rv)
    assert from_bytes.event_id == from_text.event_id == from_mapping.event_id
    assert from_mapping.pdu == pdu
    assert from_mapping.pdu is not pdu


# --- the violation table -----------------------------------------------------------------------

_LONG = "x" * 256
_LONG_MULTIBYTE = "é" * 128  # 128 characters, 256 bytes: the limits count bytes


# The keys every PDU has (pdu_base and the room versions' schemas).
REQUIRED_KEYS = (
    "type",
    "sender",
    "room_id",
    "content",
    "depth",
    "origin_server_ts",
    "prev_events",
    "auth_events",
    "hashes",
    "signatures",
)


def _cases() -> list[Any]:
    cases: list[Any] = []

    def add(name: str, field: str, rvs: list[RoomVersion], **overrides: Any) -> None:
        for rv in rvs:
            cases.append(pytest.param(rv, overrides, field, id=f"{name}-v{rv.identifier}"))

    every = ALL_VERSIONS
    for key in REQUIRED_KEYS:
        add(f"missing-{key}", key, every, **{key: DROP})
    # Types.
    add("type-not-string", "type", every, type=5)
    add("sender-not-string", "sender", every, sender=["@a:b"])
    add("room_id-not-string", "room_id", every, room_id=None)
    add("state_key-not-string", "state_key", every, state_key=0)
    add("content-not-object", "content", every, content=["x"])
    add("depth-string", "depth", every, depth="5")
    add("depth-bool", "depth", every, depth=True)
    add("ts-string", "origin_server_ts", every, origin_server_ts="1")
    add("ts-float", "origin_server_ts", every, origin_server_ts=1.5)
    add("prev_events-not-array", "prev_events", every, prev_events={"a": 1})
    add("hashes-not-object", "hashes", every, hashes="abc")
    add("sha256-missing", "hashes.sha256", every, hashes={"sha512": "abc"})
    add("sha256-not-string", "hashes.sha256", every, hashes={"sha256": 1})
    add("sha256-not-base64", "hashes.sha256", every, hashes={"sha256": "no such base64!"})
    add("signatures-not-object", "signatures", every, signatures=[])
    add(
        "signatures-server-not-object",
        "signatures.example.org",
        every,
        signatures={"example.org": "s"},
    )
    add(
        "signature-not-string",
        "signatures.example.org.ed25519:1",
        every,
        signatures={"example.org": {"ed25519:1": 1}},
    )
    add(
        "redacts-not-string",
        "redacts",
        [rv for rv in every if not rv.updated_redaction_rules],
        redacts=5,
    )
    # Sizes: "MUST NOT exceed 255 bytes".
    add("type-too-long", "type", every, type=_LONG)
    byte_limits = [rv for rv in every if rv.strict_event_byte_limits]
    add("type-too-many-bytes", "type", byte_limits, type=_LONG_MULTIBYTE)
    add("state_key-too-long", "state_key", every, state_key=_LONG)
    add("state_key-too-many-bytes", "state_key", byte_limits, state_key=_LONG_MULTIBYTE)
    add("sender-too-many-bytes", "sender", byte_limits, sender="@" + "é" * 122 + ":example.org")
    add("sender-too-long", "sender", every, sender="@" + "a" * 250 + ":example.org")
    add(
        "room_id-too-long",
        "room_id",
        [rv for rv in every if not rv.room_id_is_create_event_hash],
        room_id="!" + "r" * 250 + ":example.org",
    )
    # Identifier grammar.
    for i, bad in enumerate(
        [
            "alice",
            "@alice",
            "@alice:",
            "@alice:bad_host",
            "@al\x00ice:example.org",
            "#a:example.org",
        ]
    ):
        add(f"sender-malformed-{i}", "sender", every, sender=bad)
    pre12 = [rv for rv in every if not rv.room_id_is_create_event_hash]
    for i, bad in enumerate(["room", "!room", "!room:", "!room:exa mple.org", V12_ROOM_ID]):
        add(f"room_id-malformed-{i}", "room_id", pre12, room_id=bad)
    v12 = [rv for rv in every if rv.room_id_is_create_event_hash]
    for i, bad in enumerate(
        ["!room:example.org", V12_ROOM_ID[:-1], V12_ROOM_ID + "A", "!" + "+" * 43]
    ):
        add(f"room_id-malformed-v12-{i}", "room_id", v12, room_id=bad)
    # depth range: 0 .. 2**63-1 (v1-v5), 0 .. 2**53-1 (v6+).
    add("depth-negative", "depth", every, depth=-1)
    add("depth-over-int64", "depth", LEGACY, depth=2**63)
    add("depth-over-canonical", "depth", STRICT, depth=2**53)
    add("ts-over-int64", "origin_server_ts", LEGACY, origin_server_ts=2**63)
    # Reference counts: at most 20 prev events and 10 auth events.
    for key, too_many in (("prev_events", 21), ("auth_events", 11)):
        for rv in every:
            refs = [event_ref(rv, i) for i in range(too_many)]
            add(f"{too_many}-{key.partition('_')[0]}", key, [rv], **{key: refs})
    # Reference shapes per event format.
    v1 = [rv for rv in every if rv.event_format == EventFormat.V1]
    add("v1-ref-plain-id", "prev_events[0]", v1, prev_events=["$ev:example.org"])
    add("v1-ref-short-pair", "auth_events[0]", v1, auth_events=[["$ev:example.org"]])
    add("v1-ref-hashes-not-object", "prev_events[0]", v1, prev_events=[["$ev:example.org", "h"]])
    add("v1-ref-bad-id", "prev_events[0][0]", v1, prev_events=[["ev:example.org", {}]])
    add("v3-ref-pair", "prev_events[0]", HASH_IDS, prev_events=[["$ev:example.org", {}]])
    for rv in HASH_IDS:
        cases.append(
            pytest.param(
                rv,
                {"auth_events": [ref_id(rv), "$short"]},
                "auth_events[1]",
                id=f"v3-ref-short-v{rv.identifier}",
            )
        )
    v2 = [rv for rv in every if rv.event_format == EventFormat.V2]
    v3plus = [rv for rv in every if rv.event_format in (EventFormat.V3, EventFormat.V4)]
    add("v3-ref-urlsafe", "prev_events[0]", v2, prev_events=["$" + "-" * 43])
    add("v4-ref-standard", "prev_events[0]", v3plus, prev_events=["$" + "+" * 43])
    # Strict canonical JSON from v6: floats and out-of-range integers anywhere.
    add("float-in-content", "content.n", STRICT, content={"n": 1.0})
    add("big-int-in-content", "content.a[1]", STRICT, content={"a": [0, 2**53]})
    add("float-in-unsigned", "unsigned.age", STRICT, unsigned={"age": 0.5})
    return cases


@pytest.mark.parametrize(("rv", "overrides", "field"), _cases())
def test_each_violation_is_an_invalid_pdu_naming_the_field(
    rv: RoomVersion, overrides: dict[str, Any], field: str
) -> None:
    assert_invalid(make_pdu(rv, **overrides), rv, field)


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_limits_themselves_are_allowed(rv: RoomVersion) -> None:
    pdu = make_pdu(
        rv,
        type="t" * 255,
        state_key="é" * 127,
        prev_events=[event_ref(rv, i) for i in range(20)],
        auth_events=[event_ref(rv, i) for i in range(10)],
        depth=2**53 - 1 if rv.strict_canonical_json else 2**63 - 1,
        content={"n": 2**53 - 1, "m": -(2**53) + 1},
    )
    assert parse_pdu(pdu, rv).depth == pdu["depth"]


CODE_POINT_LIMITS = [rv for rv in ALL_VERSIONS if not rv.strict_event_byte_limits]


@pytest.mark.parametrize("rv", CODE_POINT_LIMITS, ids=ids(CODE_POINT_LIMITS))
def test_before_v11_the_255_limits_count_code_points_as_deployed_servers_did(
    rv: RoomVersion,
) -> None:
    pdu = make_pdu(
        rv, type=_LONG_MULTIBYTE, state_key=_LONG_MULTIBYTE, sender="@" + "é" * 122 + ":example.org"
    )
    event = parse_pdu(pdu, rv)
    assert event.type == _LONG_MULTIBYTE
    assert_invalid(make_pdu(rv, type="é" * 256), rv, "type")


@pytest.mark.parametrize("rv", LEGACY, ids=ids(LEGACY))
def test_room_versions_1_to_5_accept_json_strict_rooms_refuse(rv: RoomVersion) -> None:
    # "Servers SHOULD be capable of handling JSON which is considered invalid by these
    # restrictions": floats and big integers (up to the 64 bits Roomstream can store), hashed as
    # their senders wrote them.
    content = {"f": 1.5, "big": 2**60, "huge": 2**64 - 1, "low": -(2**63), "exp": 1e100}
    pdu = make_pdu(rv, content=content)
    raw = json.dumps(pdu).encode()
    event = parse_pdu(raw, rv)
    assert not event.redacted_on_receipt
    assert event.content == content


def _sized_pdu(rv: RoomVersion, size: int) -> dict[str, Any]:
    base = make_pdu(rv, content={"body": ""})
    overhead = len(encode_canonical_json(base))
    pdu = make_pdu(rv, content={"body": "x" * (size - overhead)})
    assert len(encode_canonical_json(pdu)) == size
    return pdu


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_pdu_over_65536_canonical_bytes_is_invalid_and_65536_is_not(rv: RoomVersion) -> None:
    assert parse_pdu(_sized_pdu(rv, MAX_PDU_BYTES), rv)
    err = assert_invalid(_sized_pdu(rv, MAX_PDU_BYTES + 1), rv, "")
    assert "65536" in err.reason


def test_size_is_measured_on_canonical_json_not_the_bytes_received() -> None:
    rv = room_version("10")
    pdu = _sized_pdu(rv, MAX_PDU_BYTES)
    padded = json.dumps(pdu, indent=4, ensure_ascii=True).encode()
    assert len(padded) > MAX_PDU_BYTES
    assert parse_pdu(padded, rv)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'"pdu"', b"\xff\xfe", b"", "{} {}", b'{"a": NaN}', 42],
)
def test_input_that_is_not_a_json_object_is_invalid(raw: Any) -> None:
    for rv in (room_version("1"), room_version("12")):
        assert_invalid(raw, rv, "")


def test_mapping_input_with_non_json_values_is_invalid_naming_the_path() -> None:
    rv = room_version("10")
    assert_invalid({**make_pdu(rv), "content": {"x": object()}}, rv, "content.x")
    assert_invalid({**make_pdu(rv), 5: "x"}, rv, "")


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_unsigned_is_not_covered_so_it_never_invalidates_and_only_known_keys_are_kept(
    rv: RoomVersion,
) -> None:
    for unsigned in ("x", [1], None):
        event = parse_pdu(make_pdu(rv, unsigned=unsigned), rv)
        assert "unsigned" not in event.pdu
        assert not event.redacted_on_receipt
    event = parse_pdu(make_pdu(rv, unsigned={"age": 5, "f": 1.5, "replaces_state": "$x"}), rv)
    assert event.pdu["unsigned"] == {"age": 5}
    member = make_pdu(
        rv,
        type="m.room.member",
        state_key=ALICE,
        content={"membership": "invite"},
        unsigned={"invite_room_state": [{"type": "m.room.name"}], "other": 1},
    )
    assert parse_pdu(member, rv).pdu["unsigned"] == {"invite_room_state": [{"type": "m.room.name"}]}


# --- event IDs ---------------------------------------------------------------------------------

V1_VERSIONS = [rv for rv in ALL_VERSIONS if rv.event_format == EventFormat.V1]


@pytest.mark.parametrize("rv", V1_VERSIONS, ids=ids(V1_VERSIONS))
def test_v1_event_id_field_is_required_and_well_formed(rv: RoomVersion) -> None:
    err = assert_invalid(make_pdu(rv, event_id=DROP), rv, "event_id")
    assert not isinstance(err, EventIdMismatch)
    for bad in ("$nodomain", "ev:example.org", "$ev:bad host", "$" + "e" * 250 + ":example.org"):
        err = assert_invalid(make_pdu(rv, event_id=bad), rv, "event_id")
        assert isinstance(err, EventIdMismatch)
    pdu = make_pdu(rv)
    assert parse_pdu(pdu, rv, event_id=pdu["event_id"]).event_id == pdu["event_id"]
    err = assert_invalid(pdu, rv, "event_id", event_id="$other:example.org")
    assert isinstance(err, EventIdMismatch)


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
def test_hash_format_event_ids_must_match_the_reference_hash(rv: RoomVersion) -> None:
    # (An event_id field in the PDU is a convenience copy: tests/unit/matrix/test_input_policy.py.)
    pdu = make_pdu(rv)
    eid = compute_event_id(pdu, rv)
    err = assert_invalid(pdu, rv, "event_id", event_id=ref_id(rv, 9))
    assert isinstance(err, EventIdMismatch)
    assert parse_pdu(pdu, rv, event_id=eid).event_id == eid


# --- room version 12 create events --------------------------------------------------------------


def test_v12_create_event_has_no_room_id_and_gets_the_derived_one() -> None:
    rv = room_version("12")
    event = parse_pdu(make_create(rv), rv)
    assert event.room_id == "!" + event.event_id[1:]


def test_v12_events_other_than_create_need_a_room_id() -> None:
    rv = room_version("12")
    assert_invalid(make_pdu(rv, room_id=DROP), rv, "room_id")


@pytest.mark.parametrize("version", ["1", "3", "11"])
def test_create_events_before_v12_need_a_room_id(version: str) -> None:
    rv = room_version(version)
    assert_invalid(make_pdu(rv, type="m.room.create", state_key="", room_id=DROP), rv, "room_id")


# --- content hash mismatch ----------------------------------------------------------------------


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=ids(ALL_VERSIONS))
def test_content_hash_mismatch_keeps_the_event_in_its_redacted_form(rv: RoomVersion) -> None:
    original = make_pdu(rv, type="m.room.member", state_key=ALICE, content={"membership": "join"})
    tampered = make_pdu(
        rv,
        rehash=False,
        type="m.room.member",
        state_key=ALICE,
        content={"membership": "join", "displayname": "Mallory"},
    )
    assert (
        tampered["hashes"]
        != make_pdu(rv, **{k: tampered[k] for k in ("type", "state_key", "content")})["hashes"]
    )
    event = parse_pdu(tampered, rv)
    assert event.redacted_on_receipt
    assert event.pdu == redact(tampered, rv)
    assert event.content == {"membership": "join"}
    assert event.membership == "join"
    assert "unsigned" not in event.pdu
    # The event ID is the reference hash, which redaction does not change.
    expected_id = (
        original["event_id"]
        if rv.event_format == EventFormat.V1
        else compute_event_id(tampered, rv)
    )
    assert event.event_id == expected_id


@pytest.mark.parametrize("rv", HASH_IDS, ids=ids(HASH_IDS))
def test_a_redacted_copy_of_a_valid_event_has_the_same_event_id(rv: RoomVersion) -> None:
    pdu = make_pdu(rv, content={"body": "to be redacted", "msgtype": "m.text"})
    full = parse_pdu(pdu, rv)
    stripped = parse_pdu(redact(pdu, rv), rv)
    assert stripped.redacted_on_receipt
    assert stripped.event_id == full.event_id
    assert stripped.content == {}


# --- helpers for the shell ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [({}, "1"), ({"room_version": "12"}, "12"), ({"room_version": "6", "creator": ALICE}, "6")],
)
def test_create_event_room_version_defaults_to_1(content: dict[str, Any], expected: str) -> None:
    assert parse_create_event_room_version({"content": content}).identifier == expected


@pytest.mark.parametrize("value", ["13", "org.example.custom", 12, None])
def test_create_event_naming_an_unknown_room_version_raises_unknown_room_version(
    value: Any,
) -> None:
    with pytest.raises(UnknownRoomVersion):
        parse_create_event_room_version({"content": {"room_version": value}})


def test_create_event_room_version_needs_object_content() -> None:
    with pytest.raises(InvalidPdu):
        parse_create_event_room_version({"content": "x"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"room_id": "!r:example.org"}', "!r:example.org"),
        ({"room_id": "!r:example.org"}, "!r:example.org"),
        (b'{"room_id": 5}', None),
        (b"[]", None),
        (b"{", None),
        (b'{"type": "m.room.message"}', None),
        (b'{"type": "m.room.create", "content": {"room_version": "11"}}', None),
        (b'{"type": "m.room.create", "content": {"room_version": "99"}}', None),
        (b'{"type": "m.room.create", "content": []}', None),
    ],
)
def test_peek_room_id_reads_the_room_without_validating(raw: Any, expected: str | None) -> None:
    assert peek_room_id(raw) == expected


# --- identifier grammar -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        # The appendix's examples of valid server names.
        ("matrix.org", True),
        ("matrix.org:8888", True),
        ("1.2.3.4", True),
        ("1.2.3.4:1234", True),
        ("[1234:5678::abcd]", True),
        ("[1234:5678::abcd]:5678", True),
        ("localhost", True),
        ("MATRIX.ORG", True),
        ("", False),
        (":8448", False),
        ("matrix.org:", False),
        ("matrix.org:123456", False),
        ("matrix.org:80a", False),
        ("exa mple.org", False),
        ("under_score.org", False),
        ("a..b", False),
        (".matrix.org", False),
        ("[1234:5678::abcd", False),
        ("[g::1]", False),
        ("ünicode.org", False),
        ("a" * 256, False),
    ],
)
def test_server_name_grammar(name: str, valid: bool) -> None:
    assert is_valid_server_name(name) is valid


@pytest.mark.parametrize(
    ("user_id", "historical", "current"),
    [
        ("@alice:example.org", True, True),
        ("@a.b_c=d-e/f+g:example.org:8448", True, True),
        # Historical localparts: "MUST accept ... any legal non-surrogate Unicode code points
        # except for : and NUL, including other control characters and the empty string".
        ("@Alice:example.org", True, False),
        ("@ü ber\x01:example.org", True, False),
        ("@:example.org", True, False),
        ("@al\x00ice:example.org", False, False),
        ("alice:example.org", False, False),
        ("@alice", False, False),
        ("@alice:", False, False),
        ("@" + "a" * 242 + ":example.org", True, True),  # 255 bytes
        ("@" + "a" * 243 + ":example.org", False, False),  # 256 bytes
    ],
)
def test_user_id_grammar(user_id: str, historical: bool, current: bool) -> None:
    assert is_valid_user_id(user_id) is historical
    assert is_valid_user_id(user_id, historical=False) is current


# --- never anything but InvalidPdu ---------------------------------------------------------------

_json = json_documents(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    keys=st.text(max_size=8),
    max_leaves=12,
)
_pdu_keys = st.sampled_from([*REQUIRED_KEYS, "state_key", "unsigned", "event_id", "redacts"])


def _parse_or_invalid(raw: Any, rv: RoomVersion) -> None:
    with contextlib.suppress(InvalidPdu, UnknownRoomVersion):
        parse_pdu(raw, rv)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(VERSION_IDS),
    obj=st.dictionaries(_pdu_keys | st.text(max_size=6), _json, max_size=10),
)
def test_parse_pdu_raises_only_invalid_pdu_on_arbitrary_json_objects(
    version: str, obj: dict[str, Any]
) -> None:
    rv = room_version(version)
    _parse_or_invalid(obj, rv)
    _parse_or_invalid(json.dumps(obj), rv)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(VERSION_IDS),
    changes=st.dictionaries(_pdu_keys, _json | st.just(DROP), min_size=1, max_size=3),
    rehash=st.booleans(),
)
def test_parse_pdu_raises_only_invalid_pdu_on_mutated_valid_pdus(
    version: str, changes: dict[str, Any], rehash: bool
) -> None:
    rv = room_version(version)
    _parse_or_invalid(make_pdu(rv, rehash=rehash, **changes), rv)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_parse_pdu_raises_only_invalid_pdu_on_arbitrary_bytes(raw: bytes | str) -> None:
    _parse_or_invalid(raw, room_version("12"))
