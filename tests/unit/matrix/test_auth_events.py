"""The auth events selection (``auth_types_for_event``), the rules on an event's own
``auth_events`` (``check_auth_events``: v12 rules 2 and 3, v1–v11 rule 2) and power events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pipeline.matrix.auth import (
    auth_event_selection,
    auth_types_for_event,
    check_auth_events,
    is_power_event,
)
from pipeline.matrix.errors import EventRejected, MissingEvents
from pipeline.matrix.events import Event
from pipeline.matrix.explain import auth_events_read
from pipeline.matrix.room_versions import room_version
from tests.unit.matrix.auth_fixtures import ALICE, BOB, CAROL, Room, explained, versions
from tests.unit.matrix.auth_tables import ALL, REJECTED, assert_outcome, table

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def member_key(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


def auth_rejection(
    room: Room, event: Event, *, also: Sequence[Event] = (), **kwargs: Any
) -> str | None:
    """Why ``check_auth_events`` rejects ``event``, fetching from the room's state events and
    ``also``; None when it does not."""
    store = {**room.events(), **{e.event_id: e for e in also}}
    try:
        check_auth_events(event, store.get, **kwargs)
    except EventRejected as e:
        explained(e, event, auth_events_read(event, store.get))
        return e.reason
    return None


# --- auth_types_for_event -----------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_auth_types_of_create_event_are_empty(version: str) -> None:
    room = Room(version, bare=True)
    assert auth_types_for_event(room.create) == set()


@pytest.mark.parametrize("version", versions())
def test_auth_types_of_message(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", BOB, {})
    assert auth_types_for_event(ev) == {CREATE, PL, member_key(BOB)}


@pytest.mark.parametrize(
    ("membership", "join_rules"),
    [("join", True), ("invite", True), ("knock", True), ("leave", False), ("ban", False)],
)
@pytest.mark.parametrize("version", versions())
def test_auth_types_of_membership(version: str, membership: str, join_rules: bool) -> None:
    room = Room(version)
    ev = room.member(CAROL, membership, sender=BOB)
    expected = {CREATE, PL, member_key(BOB), member_key(CAROL)} | ({JR} if join_rules else set())
    assert auth_types_for_event(ev) == expected


@pytest.mark.parametrize("version", versions())
def test_auth_types_of_third_party_invite_include_token(version: str) -> None:
    room = Room(version)
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    ev = room.new("m.room.member", BOB, content, state_key=CAROL)
    assert ("m.room.third_party_invite", "tok") in auth_types_for_event(ev)


@pytest.mark.parametrize("version", versions(8, 12))
def test_auth_types_of_restricted_join_include_authoriser(version: str) -> None:
    room = Room(version)
    ev = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    assert member_key(CAROL) in auth_types_for_event(ev)


@pytest.mark.parametrize("version", versions(1, 7))
def test_auth_types_ignore_authoriser_before_v8(version: str) -> None:
    room = Room(version)
    ev = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    assert member_key(CAROL) not in auth_types_for_event(ev)


@pytest.mark.parametrize(
    ("version", "selecting", "read"),
    [("10", "1", False), ("10", "7", False), ("10", "8", True), ("7", "10", True)],
)
def test_auth_types_read_the_authoriser_as_the_selecting_version_does(
    version: str, selecting: str, read: bool
) -> None:
    # A resolution by the version a second create event named selects the state it reads as
    # that version does (Synapse's auth_types_for_event(room_version, event)).
    room = Room(version)
    ev = room.member(BOB, "join", join_authorised_via_users_server=CAROL)
    assert (member_key(CAROL) in auth_types_for_event(ev, room_version(selecting))) is read


@pytest.mark.parametrize("version", versions(8, 12))
def test_auth_types_ignore_authoriser_on_non_join(version: str) -> None:
    room = Room(version)
    ev = room.member(BOB, "leave", join_authorised_via_users_server=CAROL)
    assert member_key(CAROL) not in auth_types_for_event(ev)


@pytest.mark.parametrize("version", versions())
def test_auth_event_selection_has_create_except_v12(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", BOB, {})
    assert (CREATE in auth_event_selection(ev)) == (version != "12")


# --- is_power_event -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "state_key", "sender", "membership", "expected"),
    [
        ("m.room.power_levels", "", ALICE, None, True),
        ("m.room.join_rules", "", ALICE, None, True),
        ("m.room.create", "", ALICE, None, True),
        ("m.room.power_levels", "x", ALICE, None, False),
        ("m.room.name", "", ALICE, None, False),
        ("m.room.member", BOB, ALICE, "leave", True),
        ("m.room.member", BOB, ALICE, "ban", True),
        ("m.room.member", BOB, BOB, "leave", False),
        ("m.room.member", BOB, ALICE, "invite", False),
        ("m.room.member", BOB, BOB, "join", False),
        ("m.room.message", None, ALICE, None, False),
    ],
)
def test_is_power_event(
    type_: str, state_key: str | None, sender: str, membership: str | None, expected: bool
) -> None:
    room = Room("10")
    content = {"membership": membership} if membership else {}
    assert is_power_event(room.new(type_, sender, content, state_key=state_key)) is expected


# --- check_auth_events ----------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_auth_events_allowed_with_selected_auth_events(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    assert auth_rejection(room, room.with_auth(room.new("m.room.message", BOB, {}))) is None


@pytest.mark.parametrize("version", versions())
def test_auth_events_of_create_event_are_not_considered(version: str) -> None:
    room = Room(version, bare=True)
    assert auth_rejection(room, room.create) is None


@pytest.mark.parametrize("version", versions())
def test_auth_events_missing_raise_missing_events(version: str) -> None:
    room = Room(version)
    ev = room.with_auth(room.new("m.room.message", ALICE, {}), extra=["$unknown1", "$unknown2"])
    with pytest.raises(MissingEvents) as info:
        check_auth_events(ev, room.events().get)
    assert info.value.event_ids == {"$unknown1", "$unknown2"}


@pytest.mark.parametrize("version", versions(12, 12))
def test_auth_events_v12_missing_create_raises_missing_events(version: str) -> None:
    room = Room(version)
    ev = room.with_auth(room.new("m.room.message", ALICE, {}))
    store = room.events()
    del store[room.create.event_id]
    with pytest.raises(MissingEvents) as info:
        check_auth_events(ev, store.get)
    assert info.value.event_ids == {room.create.event_id}


def replaced_power_levels(room: Room) -> Event:
    old = room.state[PL]
    room.power_levels(users={} if room.rv.privileged_creators else {ALICE: 100}, ban=60)
    return old


def join_rules(room: Room) -> Event:
    return room.state[JR]  # not selected for a message


def another_users_membership(room: Room) -> Event:
    room.join(BOB)
    return room.state[member_key(BOB)]


def create_event(room: Room) -> Event:
    return room.create


def a_message(room: Room) -> Event:
    return room.new("m.room.message", ALICE, {})


# (name, room versions lo..hi, the extra entry in the auth events of Alice's message, outcome)
@pytest.mark.parametrize(
    ("version", "entry", "reason"),
    table(
        ("duplicate-type-and-state-key", ALL, replaced_power_levels, "two auth events"),
        ("unneeded", ALL, join_rules, "does not need"),
        ("another-users-membership", ALL, another_users_membership, REJECTED),
        ("create-event-in-v12", (12, 12), create_event, "does not need"),
        ("non-state", ALL, a_message, "non-state"),
    ),
)
def test_auth_events_rejected_with_an_extra_entry(
    version: str, entry: Callable[[Room], Event], reason: str
) -> None:
    room = Room(version)
    extra = entry(room)
    ev = room.with_auth(room.new("m.room.message", ALICE, {}), extra=[extra.event_id])
    assert_outcome(auth_rejection(room, ev, also=[extra]), reason)


@pytest.mark.parametrize("version", versions())
def test_auth_events_rejected_when_an_entry_was_rejected(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    ev = room.with_auth(room.new("m.room.message", BOB, {}))
    bad = room.state[member_key(BOB)].event_id
    reason = auth_rejection(room, ev, is_rejected=lambda eid: eid == bad)
    assert reason is not None and "rejected auth event" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_auth_events_rejected_when_v12_create_event_was_rejected(version: str) -> None:
    room = Room(version)
    ev = room.with_auth(room.new("m.room.message", ALICE, {}))
    reason = auth_rejection(room, ev, is_rejected=lambda eid: eid == room.create.event_id)
    assert reason is not None and "create event" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_auth_events_rejected_when_v12_room_id_names_no_create_event(version: str) -> None:
    room = Room(version)
    pl = room.state[PL]
    ev = room.with_auth(room.new("m.room.message", ALICE, {}))
    store = {**room.events(), "$create": pl}
    with pytest.raises(EventRejected, match=r"does not name an m\.room\.create") as exc:
        check_auth_events(ev, store.get)
    explained(exc.value, ev, auth_events_read(ev, store.get))


@pytest.mark.parametrize("version", versions(1, 11))
def test_auth_events_rejected_without_create_event(version: str) -> None:
    room = Room(version)
    ev = room.with_auth(room.new("m.room.message", ALICE, {}))
    pdu = {**ev.pdu, "auth_events": [i for i in ev.auth_event_ids if i != room.create.event_id]}
    ev = Event.from_trusted(pdu, room.rv)
    reason = auth_rejection(room, ev)
    assert reason is not None and "no m.room.create" in reason


@pytest.mark.parametrize("version", versions())
def test_auth_events_rejected_with_entry_from_another_room(version: str) -> None:
    room = Room(version)
    other = Room(version)
    other.room_id = "!elsewhere:a.org"
    foreign = other.new("m.room.member", BOB, {"membership": "join"}, state_key=BOB)
    ev = room.with_auth(room.new("m.room.message", BOB, {}), extra=[foreign.event_id])
    reason = auth_rejection(room, ev, also=[foreign])
    assert reason is not None and "from room !elsewhere" in reason


@pytest.mark.parametrize("version", versions())
def test_auth_events_are_the_state_the_rules_see(version: str) -> None:
    # Bob's join is not among the auth events, so against them Bob is not joined.
    room = Room(version)
    ev = room.new("m.room.message", BOB, {})
    room.join(BOB)
    ev = Event.from_trusted({**ev.pdu, "auth_events": []}, room.rv)
    ev = room.with_auth(ev)
    reason = auth_rejection(room, ev)
    assert reason is None
    pdu = {**ev.pdu, "auth_events": [i for i in ev.auth_event_ids if "member" not in i]}
    reason = auth_rejection(room, Event.from_trusted(pdu, room.rv))
    assert reason is not None and "not joined" in reason
