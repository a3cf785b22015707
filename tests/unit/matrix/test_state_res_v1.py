"""State resolution v1 (room version 1): each pass of the spec's algorithm on a small room.

The base room: Alice created it (power 100), the join rules are public, Bob joined. Conflicts
are written as events with explicit depths, since v1 orders candidates by depth and
sha1(event_id).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from pipeline.matrix.errors import MissingEvents
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.state_res import resolve_state

V1 = room_version("1")
ALICE = "@alice:example.com"
BOB = "@bob:example.com"
ROOM = "!room:example.com"

PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")
TOPIC: StateKey = ("m.room.topic", "")


def _event(name: str, sender: str, key: StateKey, content: dict[str, Any], depth: int) -> Event:
    type_, state_key = key
    pdu = {
        "event_id": f"${name}:example.com",
        "room_id": ROOM,
        "sender": sender,
        "type": type_,
        "state_key": state_key,
        "content": content,
        "depth": depth,
        "origin_server_ts": depth,
        "prev_events": [],
        "auth_events": [],
    }
    return Event.from_trusted(pdu, V1)


BASE = [
    _event("create", ALICE, ("m.room.create", ""), {"creator": ALICE}, 1),
    _event("alice", ALICE, ("m.room.member", ALICE), {"membership": "join"}, 2),
    _event("pl", ALICE, PL, {"users": {ALICE: 100}}, 3),
    _event("jr", ALICE, JR, {"join_rule": "public"}, 4),
    _event("bob", BOB, ("m.room.member", BOB), {"membership": "join"}, 5),
]


def _resolve(*forks: list[Event], order: int = 1) -> dict[StateKey, str]:
    """Resolve the base state plus each fork's events; ``order`` -1 reverses the state sets."""
    events = {e.event_id: e for e in BASE}
    states = []
    for fork in forks:
        events.update((e.event_id, e) for e in fork)
        states.append({e.state_tuple: e.event_id for e in [*BASE, *fork]})
    return resolve_state(V1, states[::order], events.get)


def _sha1(event: Event) -> str:
    return hashlib.sha1(event.event_id.encode()).hexdigest()


@pytest.mark.parametrize("order", [1, -1], ids=["forward", "reversed"])
def test_keys_only_some_states_have_are_not_conflicts(order: int) -> None:
    topic = _event("t", ALICE, TOPIC, {"topic": "x"}, 6)
    name = _event("n", ALICE, ("m.room.name", ""), {"name": "y"}, 6)
    resolved = _resolve([topic], [name], order=order)
    assert resolved[TOPIC] == topic.event_id
    assert resolved[("m.room.name", "")] == name.event_id
    assert resolved[("m.room.member", BOB)] == "$bob:example.com"


@pytest.mark.parametrize("order", [1, -1], ids=["forward", "reversed"])
@pytest.mark.parametrize(
    ("later_sender", "later_wins"),
    [(ALICE, True), (BOB, False)],
    ids=["deeper_allowed_replaces", "deeper_not_allowed_stops"],
)
def test_power_levels_conflict_takes_shallowest_then_each_allowed_successor(
    later_sender: str, later_wins: bool, order: int
) -> None:
    # Ascending depth: the depth 6 event goes into R first; the depth 7 one replaces it only if
    # the auth rules allow it there (Bob has power 0 < state_default 50).
    first = _event("pl6", ALICE, PL, {"users": {ALICE: 100}}, 6)
    later = _event("pl7", later_sender, PL, {"users": {ALICE: 100}}, 7)
    resolved = _resolve([first], [later], order=order)
    assert resolved[PL] == (later if later_wins else first).event_id


def test_power_levels_pass_stops_at_first_event_not_allowed() -> None:
    # depth 6 (Alice) -> depth 7 (Bob, not allowed: stop) -> depth 8 (Alice, never reached).
    events = [
        _event("pa6", ALICE, PL, {"users": {ALICE: 100}}, 6),
        _event("pb7", BOB, PL, {"users": {ALICE: 100}}, 7),
        _event("pa8", ALICE, PL, {"users": {ALICE: 100}}, 8),
    ]
    resolved = _resolve([events[0]], [events[1]], [events[2]])
    assert resolved[PL] == events[0].event_id


def test_power_levels_of_equal_depth_are_taken_in_descending_sha1_order() -> None:
    # Both allowed: the one sorted last (lowest sha1) replaces the other.
    a = _event("pla", ALICE, PL, {"users": {ALICE: 100}}, 6)
    b = _event("plb", ALICE, PL, {"users": {ALICE: 100}}, 6)
    lowest_sha1 = min([a, b], key=_sha1)
    assert _resolve([a], [b])[PL] == lowest_sha1.event_id
    assert _resolve([b], [a])[PL] == lowest_sha1.event_id


def test_resolved_power_levels_decide_the_join_rules_pass() -> None:
    # Alice demotes herself to 0 (depth 6, deepest PL wins); her join rules change on the other
    # fork is then checked against the resolved power levels and is not allowed.
    demote = _event("pl6", ALICE, PL, {"users": {ALICE: 0}}, 6)
    jr_a = _event("jr7", ALICE, JR, {"join_rule": "invite"}, 7)
    resolved = _resolve([demote], [jr_a])
    assert resolved[PL] == demote.event_id
    assert resolved[JR] == "$jr:example.com"


def test_membership_conflict_ban_replaces_join() -> None:
    ban = _event("ban", ALICE, ("m.room.member", BOB), {"membership": "ban"}, 6)
    rejoin = _event("rejoin", BOB, ("m.room.member", BOB), {"membership": "join"}, 7)
    # Ascending depth: the ban first, then Bob's join is checked with Bob banned: not allowed.
    assert _resolve([ban], [rejoin])[("m.room.member", BOB)] == ban.event_id


@pytest.mark.parametrize("order", [1, -1], ids=["forward", "reversed"])
def test_other_conflict_takes_deepest_event_that_passes_auth(order: int) -> None:
    alice_topic = _event("ta", ALICE, TOPIC, {"topic": "a"}, 6)
    bob_topic = _event("tb", BOB, TOPIC, {"topic": "b"}, 9)  # Bob: 0 < 50
    alice_later = _event("tc", ALICE, TOPIC, {"topic": "c"}, 8)
    assert _resolve([alice_topic], [bob_topic], order=order)[TOPIC] == alice_topic.event_id
    resolved = _resolve([alice_topic], [bob_topic], [alice_later], order=order)
    assert resolved[TOPIC] == alice_later.event_id


def test_other_conflict_of_equal_depth_takes_lowest_sha1() -> None:
    a = _event("tx", ALICE, TOPIC, {"topic": "x"}, 6)
    b = _event("ty", ALICE, TOPIC, {"topic": "y"}, 6)
    assert _resolve([a], [b])[TOPIC] == min([a, b], key=_sha1).event_id


def test_other_conflict_where_nothing_passes_keeps_shallowest() -> None:
    # The spec is silent; like Synapse the key keeps the lowest-depth candidate.
    b1 = _event("tb1", BOB, TOPIC, {"topic": "1"}, 6)
    b2 = _event("tb2", BOB, TOPIC, {"topic": "2"}, 7)
    assert _resolve([b1], [b2])[TOPIC] == b1.event_id


def test_unknown_conflicting_event_raises_missing_events() -> None:
    topic = _event("t", ALICE, TOPIC, {"topic": "x"}, 6)
    states = [
        {e.state_tuple: e.event_id for e in BASE},
        {**{e.state_tuple: e.event_id for e in BASE}, TOPIC: topic.event_id},
        {**{e.state_tuple: e.event_id for e in BASE}, TOPIC: "$gone:example.com"},
    ]
    events = {e.event_id: e for e in [*BASE, topic]}
    with pytest.raises(MissingEvents) as info:
        resolve_state(V1, states, events.get)
    assert info.value.event_ids == {"$gone:example.com"}
