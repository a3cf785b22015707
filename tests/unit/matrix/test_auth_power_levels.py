"""Rule 10 (v6–v11: rule 9): m.room.power_levels events, and the power level helpers of
``pipeline.matrix.power_levels`` (defaults, stringy and floaty values, creators).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.matrix.events import Event
from pipeline.matrix.power_levels import (
    CREATOR_POWER_LEVEL,
    PowerLevels,
    get_power_level_for_sender,
    parse_level,
    room_creators,
    user_power_level,
    user_power_level_in_state,
)
from pipeline.matrix.room_versions import room_version
from tests.unit.matrix.auth_fixtures import ALICE, BOB, CAROL, DAVE, Room, rejection, versions
from tests.unit.matrix.auth_tables import ALL, ALLOWED, REJECTED, assert_outcome, table


def creator_users(version: str, **extra: int) -> dict[str, Any]:
    users: dict[str, Any] = {} if version == "12" else {ALICE: 100}
    users.update({f"@{k}:{k[0]}.org": v for k, v in extra.items()})
    return users


def pl_event(room: Room, sender: str = ALICE, **content: Any) -> Event:
    return room.new("m.room.power_levels", sender, content, state_key="")


# --- parse_level -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50, 50),
        ("50", 50),
        ("000100", 100),
        ("+100", 100),
        ("-100", -100),
        (" 100 ", 100),
        (" +100 ", 100),
        ("1.5", None),
        ("abc", None),
        ("", None),
        ("1_000", None),
        (True, None),
        (None, None),
        ([1], None),
    ],
)
@pytest.mark.parametrize("version", versions(1, 9))
def test_stringy_power_levels_accepted_before_v10(version: str, value: Any, expected: Any) -> None:
    assert parse_level(value, room_version(version)) == expected


@pytest.mark.parametrize("value", ["50", 50.0, True])
@pytest.mark.parametrize("version", versions(10, 12))
def test_power_levels_must_be_integers_from_v10(version: str, value: Any) -> None:
    assert parse_level(value, room_version(version)) is None
    assert parse_level(50, room_version(version)) == 50


@pytest.mark.parametrize(("value", "expected"), [(50.57, 50), (5.114698e4, 51146), (-1.9, -1)])
@pytest.mark.parametrize("version", versions(1, 5))
def test_floaty_power_levels_truncated_before_v6(version: str, value: float, expected: int) -> None:
    assert parse_level(value, room_version(version)) == expected


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("version", versions(1, 5))
def test_non_finite_float_power_levels_rejected(version: str, value: float) -> None:
    assert parse_level(value, room_version(version)) is None


@pytest.mark.parametrize("version", versions(6, 9))
def test_float_power_levels_rejected_from_v6(version: str) -> None:
    assert parse_level(50.0, room_version(version)) is None


# --- defaults and user levels ---------------------------------------------------------------


def test_power_levels_defaults_without_event() -> None:
    levels = PowerLevels.from_event(None, room_version("10"))
    assert (levels.users_default, levels.events_default, levels.state_default) == (0, 0, 50)
    assert (levels.invite, levels.kick, levels.ban, levels.redact) == (0, 50, 50, 50)
    assert levels.required_level("m.room.name", is_state=True) == 50
    assert levels.required_level("m.room.message", is_state=False) == 0


@pytest.mark.parametrize("version", versions())
def test_user_level_from_users_then_users_default(version: str) -> None:
    room = Room(version)
    room.power_levels(users=creator_users(version, bob=30), users_default=5)
    assert user_power_level_in_state(BOB, room.state) == 30
    assert user_power_level_in_state(CAROL, room.state) == 5


@pytest.mark.parametrize("version", versions(1, 11))
def test_creator_level_without_power_levels_event(version: str) -> None:
    room = Room(version)
    state = room.without(("m.room.power_levels", ""))
    assert user_power_level_in_state(ALICE, state) == 100
    assert user_power_level_in_state(BOB, state) == 0


@pytest.mark.parametrize("version", versions(1, 10))
def test_creator_is_content_creator_before_v11(version: str) -> None:
    room = Room(version, bare=True, create_content={"creator": BOB})
    assert room_creators(room.create) == {BOB}
    assert user_power_level(BOB, None, room.create) == 100
    assert user_power_level(ALICE, None, room.create) == 0


@pytest.mark.parametrize("version", versions(11, 11))
def test_creator_is_create_sender_in_v11(version: str) -> None:
    room = Room(version, bare=True, create_content={"creator": BOB, "additional_creators": [BOB]})
    assert room_creators(room.create) == {ALICE}
    assert user_power_level(ALICE, None, room.create) == 100


@pytest.mark.parametrize("version", versions(12, 12))
def test_v12_creators_are_sender_and_additional_creators_with_infinite_power(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    assert room_creators(room.create) == {ALICE, BOB}
    assert user_power_level_in_state(ALICE, room.state) == CREATOR_POWER_LEVEL
    assert user_power_level_in_state(BOB, room.state) == math.inf
    assert user_power_level_in_state(CAROL, room.state) == 0
    state = room.without(("m.room.power_levels", ""))
    assert user_power_level_in_state(ALICE, state) == math.inf


@pytest.mark.parametrize("version", versions(1, 9))
def test_stringy_user_level_read(version: str) -> None:
    room = Room(version)
    room.power_levels(users={ALICE: "100", BOB: " 42 "}, users_default="7")
    assert user_power_level_in_state(BOB, room.state) == 42
    assert user_power_level_in_state(CAROL, room.state) == 7


@pytest.mark.parametrize("version", versions())
def test_power_level_for_sender_reads_auth_events(version: str) -> None:
    room = Room(version)
    pl = room.power_levels(users=creator_users(version, bob=25))
    auth = [pl.event_id]
    if version != "12":
        auth.append(room.create.event_id)
    ev = room.new("m.room.message", BOB, {}, extra={"auth_events": auth})
    by_id = {e.event_id: e for e in room.state.values()}
    assert get_power_level_for_sender(ev, by_id.get) == 25
    ev_alice = room.new("m.room.message", ALICE, {}, extra={"auth_events": auth})
    expected = math.inf if version == "12" else 100
    assert get_power_level_for_sender(ev_alice, by_id.get) == expected


@pytest.mark.parametrize("version", versions())
def test_power_level_for_sender_without_power_levels_auth_event(version: str) -> None:
    room = Room(version)
    auth = [] if version == "12" else [room.create.event_id]
    by_id = {e.event_id: e for e in room.state.values()}
    ev = room.new("m.room.message", ALICE, {}, extra={"auth_events": auth})
    assert get_power_level_for_sender(ev, by_id.get) == (math.inf if version == "12" else 100)


@pytest.mark.parametrize("version", versions())
def test_power_level_for_sender_of_create_event_is_zero(version: str) -> None:
    # The create event has no auth events to read a level from (Synapse agrees).
    room = Room(version, bare=True)
    assert get_power_level_for_sender(room.create, room.events().get) == 0


def test_power_level_for_sender_raises_missing_events() -> None:
    from pipeline.matrix.errors import MissingEvents

    room = Room("10")
    ev = room.new("m.room.message", ALICE, {}, extra={"auth_events": ["$gone"]})
    with pytest.raises(MissingEvents) as info:
        get_power_level_for_sender(ev, lambda _eid: None)
    assert info.value.event_ids == {"$gone"}


# --- 10.1–10.3 content shape -------------------------------------------------------------------


NAMED_LEVELS = [
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
]


# (name, room versions lo..hi, power levels content beside the creator's users entry, the outcome)
@pytest.mark.parametrize(
    ("version", "content", "reason"),
    table(
        # 10.1. named levels: integers (before v10 also numeric strings)
        *[(f"{key}-as-string", (10, 12), {key: "50"}, key) for key in NAMED_LEVELS],
        *[
            (f"{key}-as-string", (1, 9), {key: "50"}, ALLOWED)
            for key in ("users_default", "ban", "invite")
        ],
        ("unreadable-level", ALL, {"ban": "high"}, REJECTED),
        # 10.2. events and notifications: objects of integers (v6+: notifications checked)
        *[
            (f"string-in-{key}", (10, 12), {key: {"m.room.name": "50"}}, key)
            for key in ("events", "notifications")
        ],
        *[
            (f"{key}-not-object", (6, 12), {key: [1]}, "not an object")
            for key in ("events", "notifications", "users")
        ],
        ("notifications-unchecked", (1, 5), {"notifications": {"room": 1000}}, ALLOWED),
        # 10.3. users: user IDs to integers (before v10 also numeric strings, before v6 floats)
        ("users-stringy", (1, 9), {"users": {ALICE: "100", BOB: "10"}}, ALLOWED),
        ("users-stringy", (10, 12), {"users": {BOB: "10"}}, "users"),
        *[
            (f"users-key-{i}", ALL, {"users": {bad: 10}}, "not a valid user ID")
            for i, bad in enumerate(["bob", "@bob", "#room:b.org", "@bob:bad_host!"])
        ],
        ("users-float", (1, 5), {"users": {ALICE: 100, BOB: 50.57}}, ALLOWED),
    ),
)
def test_power_levels_content_shape(
    version: str, content: dict[str, Any], reason: str | None
) -> None:
    room = Room(version)
    given = content.get("users", {})
    users = {**creator_users(version), **given} if isinstance(given, dict) else given
    assert_outcome(rejection(pl_event(room, **{**content, "users": users}), room.state), reason)


@pytest.mark.parametrize(
    "content",
    [
        {"notifications": {"room": None}},
        {"users": {ALICE: []}},
        {"users_default": {}},
        {"events": {"m.room.name": 1.5}},
        {"ban": None},
    ],
    ids=["null-notification", "list-user-level", "object-users-default", "float-event", "null-ban"],
)
@pytest.mark.parametrize("version", versions(10, 12))
def test_power_levels_non_integer_json_values_rejected_from_v10(
    version: str, content: dict[str, Any]
) -> None:
    room = Room(version)
    state = room.without(("m.room.power_levels", ""))
    assert rejection(pl_event(room, **content), state) is not None


@pytest.mark.parametrize("version", versions(1, 9))
def test_stringy_state_default_governs_required_level(version: str) -> None:
    room = Room(version)
    room.power_levels(state_default="30", users={ALICE: "100", BOB: "29", CAROL: "30"})
    room.join(BOB, CAROL)
    assert rejection(room.new("m.room.topic", BOB, {}, state_key=""), room.state) is not None
    assert rejection(room.new("m.room.topic", CAROL, {}, state_key=""), room.state) is None


# --- 10.4 (v12) creators not in users ---------------------------------------------------------


@pytest.mark.parametrize("version", versions(12, 12))
def test_power_levels_listing_the_creator_rejected_in_v12(version: str) -> None:
    room = Room(version)
    reason = rejection(pl_event(room, users={ALICE: 100}), room.state)
    assert reason is not None and "room creators" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_power_levels_listing_an_additional_creator_rejected_in_v12(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    reason = rejection(pl_event(room, users={BOB: 0}), room.state)
    assert reason is not None and BOB in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_power_levels_listing_creator_rejected_even_as_first_event_in_v12(version: str) -> None:
    room = Room(version)
    state = room.without(("m.room.power_levels", ""))
    assert rejection(pl_event(room, users={ALICE: 100}), state) is not None


# --- 10.5 first power levels event ------------------------------------------------------------


@pytest.mark.parametrize("version", versions(1, 11))
def test_first_power_levels_allowed_from_creator_with_any_values(version: str) -> None:
    room = Room(version)
    state = room.without(("m.room.power_levels", ""))
    ev = pl_event(room, users={ALICE: 100, BOB: 9000}, ban=9000)
    assert rejection(ev, state) is None


@pytest.mark.parametrize("version", versions(1, 11))
def test_first_power_levels_rejected_from_non_creator(version: str) -> None:
    # Rule 8 still applies: without power levels, state_default is 50 and Bob has 0.
    room = Room(version)
    room.join(BOB)
    state = room.without(("m.room.power_levels", ""))
    assert rejection(pl_event(room, BOB, users={BOB: 100}), state) is not None


# --- 10.6–10.10 changes -----------------------------------------------------------------------


def changed_room(version: str) -> Room:
    """Bob (50) may send power levels (events[m.room.power_levels] = 50); Carol has 50, Dave 20."""
    room = Room(version)
    room.power_levels(
        users=creator_users(version, bob=50, carol=50, dave=20),
        events={"m.room.power_levels": 50, "m.room.topic": 60},
        kick=50,
        notifications={"room": 50},
    )
    room.join(BOB, CAROL, DAVE)
    return room


def bob_changes(room: Room, version: str, **changes: Any) -> Event:
    content: dict[str, Any] = dict(room.state[("m.room.power_levels", "")].content)
    for key, value in changes.items():
        if value is None:
            content.pop(key, None)
        else:
            content[key] = value
    return pl_event(room, BOB, **content)


EVE = "@eve:e.org"


# (name, room versions lo..hi, what Bob changes in changed_room's power levels, the outcome:
# ALLOWED, or a part of the rejection's reason). A users map is given beside the creator's entry.
@pytest.mark.parametrize(
    ("version", "changes", "reason"),
    table(
        ("unchanged-resend", ALL, {}, ALLOWED),
        # 10.6. named levels: neither the current nor the new value above the sender's
        ("named-level-raised-above-sender", ALL, {"kick": 51}, "change kick: new value 51"),
        ("named-levels-up-to-sender", ALL, {"kick": 40, "ban": 50}, ALLOWED),
        # Adding state_default: 60 when absent (default 50) is a change above Bob's 50.
        ("named-level-added-above-sender", ALL, {"state_default": 60}, REJECTED),
        ("users-default-up-to-sender", ALL, {"users_default": 50}, ALLOWED),
        ("users-default-above-sender", ALL, {"users_default": 51}, REJECTED),
        # 10.7/10.8. events (v6+: and notifications): changed or removed from at most the
        # sender's level, added or changed to at most it
        (
            "event-level-above-sender-changed",
            ALL,
            {"events": {"m.room.power_levels": 50, "m.room.topic": 10}},
            "events['m.room.topic']",
        ),
        (
            "event-level-above-sender-added",
            ALL,
            {"events": {"m.room.power_levels": 50, "m.room.topic": 60, "m.room.name": 51}},
            REJECTED,
        ),
        (
            "event-level-up-to-sender-added",
            ALL,
            {"events": {"m.room.power_levels": 50, "m.room.topic": 60, "m.room.name": 50}},
            ALLOWED,
        ),
        ("notifications-above-sender", (6, 12), {"notifications": {"room": 51}}, "notifications"),
        ("notifications-unchecked-before-v6", (1, 5), {"notifications": {"room": 99}}, ALLOWED),
        # 10.9. users other than the sender: changed or removed only from below the sender
        ("equal-user-lowered", ALL, {"users": {BOB: 50, CAROL: 0, DAVE: 20}}, CAROL),
        ("equal-user-removed", ALL, {"users": {BOB: 50, DAVE: 20}}, REJECTED),
        ("lower-user-changed", ALL, {"users": {BOB: 50, CAROL: 50, DAVE: 49}}, ALLOWED),
        ("own-level-lowered", ALL, {"users": {BOB: 10, CAROL: 50, DAVE: 20}}, ALLOWED),
        # Carol's 50 written as "50" is the same level: not a change Bob would need to outrank.
        ("stringy-equal-value", (1, 9), {"users": {BOB: 50, CAROL: "50", DAVE: 20}}, ALLOWED),
        # 10.10. users added or changed: to at most the sender's level
        (
            "user-raised-above-sender",
            ALL,
            {"users": {BOB: 50, CAROL: 50, DAVE: 51}},
            "new value 51",
        ),
        ("own-level-raised", ALL, {"users": {BOB: 51, CAROL: 50, DAVE: 20}}, REJECTED),
        (
            "user-added-at-sender-level",
            ALL,
            {"users": {BOB: 50, CAROL: 50, DAVE: 20, EVE: 50}},
            ALLOWED,
        ),
    ),
)
def test_power_levels_changes(version: str, changes: dict[str, Any], reason: str | None) -> None:
    room = changed_room(version)
    if "users" in changes:
        changes = {**changes, "users": {**creator_users(version), **changes["users"]}}
    assert_outcome(rejection(bob_changes(room, version, **changes), room.state), reason)


@pytest.mark.parametrize("version", versions())
def test_power_levels_named_level_above_sender_cannot_be_removed(version: str) -> None:
    room = changed_room(version)
    room.power_levels(**{**room.state[("m.room.power_levels", "")].content, "ban": 70})
    reason = rejection(bob_changes(room, version, ban=None), room.state)
    assert reason is not None and "current value 70" in reason


@pytest.mark.parametrize("version", versions(1, 11))
def test_power_levels_creator_can_be_demoted_by_higher_user_before_v12(version: str) -> None:
    room = Room(version)
    room.power_levels(users={ALICE: 50, DAVE: 100})
    room.join(DAVE)
    assert rejection(pl_event(room, DAVE, users={ALICE: 0, DAVE: 100}), room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_power_levels_creator_may_set_any_level_in_v12(version: str) -> None:
    room = changed_room(version)
    ev = pl_event(room, ALICE, users={DAVE: 2**53 - 1}, ban=2**53 - 1)
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_user_at_maximum_level_cannot_ban_additional_creator_in_v12(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    room.power_levels(users={DAVE: 2**53 - 1})
    room.join(DAVE)
    assert rejection(room.member(BOB, "ban", sender=DAVE), room.state) is not None


@pytest.mark.parametrize("version", versions(1, 2))
def test_parsed_power_levels_never_shared_between_events_with_one_id(version: str) -> None:
    # v1/v2 event IDs are chosen by servers: two different events may claim the same ID.
    first, second = Room(version), Room(version)
    first.power_levels(users={ALICE: 100, BOB: 10})
    second.power_levels(users={ALICE: 100, BOB: 90})
    pl_first = first.state[("m.room.power_levels", "")]
    pl_second = second.state[("m.room.power_levels", "")]
    assert pl_first.event_id == pl_second.event_id
    assert user_power_level_in_state(BOB, first.state) == 10
    assert user_power_level_in_state(BOB, second.state) == 90
    assert user_power_level_in_state(BOB, first.state) == 10


@pytest.mark.parametrize("version", versions())
def test_negative_power_levels_are_levels(version: str) -> None:
    room = Room(version)
    low = -(2**53) + 2
    users = {} if version == "12" else {ALICE: 100}
    room.power_levels(users=users, users_default=low, events_default=low, state_default=low)
    room.join(BOB)
    assert rejection(room.new("m.room.message", BOB, {}), room.state) is None
    assert rejection(room.new("m.room.topic", BOB, {}, state_key=""), room.state) is None
    room.power_levels(users=users, users_default=low - 1, events_default=low)
    assert rejection(room.new("m.room.message", BOB, {}), room.state) is not None
