"""The redaction algorithm, room version by room version: which keys survive."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import room_version
from tests.unit.matrix.json_strategies import json_documents
from tests.unit.matrix.pdu_factory import VERSION_IDS

V1_TO_5 = {"1", "2", "3", "4", "5"}
V1_TO_7 = V1_TO_5 | {"6", "7"}
V1_TO_8 = V1_TO_7 | {"8"}
V1_TO_10 = V1_TO_8 | {"9", "10"}
ALL = set(VERSION_IDS)

NONE: set[str] = set()

# (top-level key, a value, the room versions whose redaction keeps it)
TOP_LEVEL_TABLE: list[tuple[str, Any, set[str]]] = [
    ("event_id", "$e:example.org", ALL),
    ("type", "m.room.message", ALL),
    ("room_id", "!r:example.org", ALL),
    ("sender", "@a:example.org", ALL),
    ("state_key", "", ALL),
    ("content", {}, ALL),
    ("hashes", {"sha256": "abc"}, ALL),
    ("signatures", {"example.org": {"ed25519:1": "sig"}}, ALL),
    ("depth", 3, ALL),
    ("prev_events", ["$p"], ALL),
    ("auth_events", ["$a"], ALL),
    ("origin_server_ts", 1, ALL),
    # v11 (MSC2176) drops origin, membership and prev_state.
    ("prev_state", [], V1_TO_10),
    ("origin", "example.org", V1_TO_10),
    ("membership", "join", V1_TO_10),
    # unsigned, age_ts, custom keys and the top-level redacts never survive.
    ("unsigned", {"age_ts": 1}, NONE),
    ("age_ts", 1, NONE),
    ("redacts", "$x", NONE),
    ("custom", 1, NONE),
]
TOP_LEVEL: dict[str, Any] = {key: value for key, value, _ in TOP_LEVEL_TABLE}


@pytest.mark.parametrize("version", VERSION_IDS)
def test_top_level_keys_kept_and_v11_drops_origin_membership_prev_state(version: str) -> None:
    expected = {key for key, _, kept_in in TOP_LEVEL_TABLE if version in kept_in}
    assert set(redact(TOP_LEVEL, room_version(version))) == expected


_SIGNED = {"mxid": "@b:example.org", "token": "t", "signatures": {"s": {"k": "v"}}}
_POWER_LEVELS = {
    "ban": 50,
    "events": {"m.room.name": 100},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@a:example.org": 100},
    "users_default": 0,
    "notifications": {"room": 50},
    "custom": 1,
}
_PL_V1 = {k: v for k, v in _POWER_LEVELS.items() if k not in ("invite", "notifications", "custom")}

# (event type, content, [(versions, content kept)]) — each version must appear exactly once.
CONTENT_TABLE: list[tuple[str, dict[str, Any], list[tuple[set[str], dict[str, Any]]]]] = [
    (
        "m.room.member",
        {
            "membership": "join",
            "displayname": "A",
            "join_authorised_via_users_server": "@b:example.org",
            "third_party_invite": {"display_name": "b", "signed": _SIGNED},
        },
        [
            (V1_TO_8, {"membership": "join"}),
            (
                {"9", "10"},
                {"membership": "join", "join_authorised_via_users_server": "@b:example.org"},
            ),
            (
                {"11", "12"},
                {
                    "membership": "join",
                    "join_authorised_via_users_server": "@b:example.org",
                    "third_party_invite": {"signed": _SIGNED},
                },
            ),
        ],
    ),
    (
        "m.room.create",
        {"creator": "@a:example.org", "room_version": "9", "m.federate": False, "predecessor": {}},
        [
            (V1_TO_10, {"creator": "@a:example.org"}),
            (
                {"11", "12"},
                {
                    "creator": "@a:example.org",
                    "room_version": "9",
                    "m.federate": False,
                    "predecessor": {},
                },
            ),
        ],
    ),
    (
        "m.room.join_rules",
        {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "other": 1},
        [
            (V1_TO_7, {"join_rule": "restricted"}),
            (ALL - V1_TO_7, {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}),
        ],
    ),
    (
        "m.room.power_levels",
        _POWER_LEVELS,
        [(V1_TO_10, _PL_V1), ({"11", "12"}, {**_PL_V1, "invite": 0})],
    ),
    (
        "m.room.aliases",
        {"aliases": ["#a:example.org"], "other": 1},
        [(V1_TO_5, {"aliases": ["#a:example.org"]}), (ALL - V1_TO_5, {})],
    ),
    (
        "m.room.history_visibility",
        {"history_visibility": "shared", "other": 1},
        [(ALL, {"history_visibility": "shared"})],
    ),
    (
        "m.room.redaction",
        {"redacts": "$x", "reason": "spam"},
        [(V1_TO_10, {}), ({"11", "12"}, {"redacts": "$x"})],
    ),
    ("m.room.message", {"body": "hi", "msgtype": "m.text"}, [(ALL, {})]),
    ("m.room.name", {"name": "Room"}, [(ALL, {})]),
    ("m.room.topic", {"topic": "t"}, [(ALL, {})]),
]

CONTENT_CASES = [
    pytest.param(event_type, content, version, kept, id=f"{event_type}-v{version}")
    for event_type, content, rows in CONTENT_TABLE
    for versions, kept in rows
    for version in sorted(versions, key=int)
]


def test_content_table_covers_every_version_once_per_type() -> None:
    for event_type, _, rows in CONTENT_TABLE:
        seen = [v for versions, _ in rows for v in versions]
        assert sorted(seen, key=int) == sorted(VERSION_IDS, key=int), event_type


@pytest.mark.parametrize(("event_type", "content", "version", "kept"), CONTENT_CASES)
def test_content_keys_survive_redaction_per_room_version(
    event_type: str, content: dict[str, Any], version: str, kept: dict[str, Any]
) -> None:
    pdu = {**TOP_LEVEL, "type": event_type, "content": content}
    assert redact(pdu, room_version(version))["content"] == kept


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_member_third_party_invite_without_signed_keeps_an_empty_object(version: str) -> None:
    pdu = {**TOP_LEVEL, "type": "m.room.member", "content": {"third_party_invite": {"x": 1}}}
    assert redact(pdu, room_version(version))["content"] == {"third_party_invite": {}}
    pdu["content"] = {"third_party_invite": "not an object"}
    assert redact(pdu, room_version(version))["content"] == {}


@pytest.mark.parametrize("version", VERSION_IDS)
def test_content_that_is_not_an_object_redacts_to_empty(version: str) -> None:
    assert redact({**TOP_LEVEL, "content": ["x"]}, room_version(version))["content"] == {}
    assert redact({"type": 5, "custom": 1}, room_version(version)) == {"type": 5, "content": {}}


@pytest.mark.parametrize("version", VERSION_IDS)
def test_redact_copies_and_never_mutates_its_input(version: str) -> None:
    pdu = {**TOP_LEVEL, "type": "m.room.power_levels", "content": copy.deepcopy(_POWER_LEVELS)}
    before = copy.deepcopy(pdu)
    out = redact(pdu, room_version(version))
    out["content"]["users"]["@evil:example.org"] = 100
    out["signatures"]["x"] = {}
    assert pdu == before


_json = json_documents(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=5),
    keys=st.text(max_size=5),
)
_event_types = st.sampled_from(
    [
        "m.room.member",
        "m.room.create",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.aliases",
        "m.room.history_visibility",
        "m.room.redaction",
        "m.room.message",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from(VERSION_IDS),
    event_type=_event_types,
    top=st.dictionaries(st.sampled_from(sorted(TOP_LEVEL)), _json, max_size=6),
    content=st.dictionaries(
        st.sampled_from(
            ["membership", "third_party_invite", "allow", "join_rule", "redacts", "body", "users"]
        ),
        _json,
        max_size=5,
    ),
)
def test_redaction_is_idempotent(
    version: str, event_type: str, top: dict[str, Any], content: dict[str, Any]
) -> None:
    rv = room_version(version)
    pdu = {**top, "type": event_type, "content": content}
    once = redact(pdu, rv)
    assert redact(once, rv) == once
