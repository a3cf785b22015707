"""Properties of the authorization rules over generated input: they only ever allow or reject
(EventRejected), and checking against the selected auth events agrees with checking against
the state they were selected from.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.matrix.auth import auth_types_for_event, check_auth_events, check_auth_rules
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event
from pipeline.matrix.explain import auth_events_read
from tests.unit.matrix.auth_fixtures import ALICE, BOB, CAROL, Room, explained, rules_read
from tests.unit.matrix.json_strategies import json_documents

USERS = [ALICE, BOB, CAROL, "@x:", "@:a.org", "not-a-user"]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["50", " -3 ", "x", "", "join", "invite", "ban", "leave", "knock"]),
    st.sampled_from(USERS),
)
json_values = json_documents(
    json_scalars, keys=st.sampled_from([*USERS, "room", "m.room.name", "signed"]), max_leaves=8
)
MEMBER_KEYS = ["membership", "third_party_invite", "join_authorised_via_users_server"]
PL_KEYS = [
    "users",
    "users_default",
    "events",
    "events_default",
    "state_default",
    "ban",
    "kick",
    "invite",
    "redact",
    "notifications",
]
CREATE_KEYS = ["creator", "room_version", "additional_creators", "m.federate"]
versions = st.sampled_from([str(n) for n in range(1, 13)])
memberships = st.sampled_from(["join", "invite", "leave", "ban", "knock", "other"])


def contents(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=4)


def decide(event: Event, state: Any) -> bool:
    """True when allowed; any exception but EventRejected fails the test."""
    try:
        check_auth_rules(event, state)
    except EventRejected as e:
        assert isinstance(e.reason, str) and e.reason
        explained(e, event, rules_read(event, state))
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    version=versions,
    content=contents(MEMBER_KEYS),
    sender=st.sampled_from(USERS[:3]),
    target=st.sampled_from(USERS),
    join_rule=json_values,
    prior=memberships,
)
def test_member_rules_only_allow_or_reject(
    *, version: str, content: dict[str, Any], sender: str, target: str, join_rule: Any, prior: str
) -> None:
    room = Room(version, join_rule=None)
    room.set("m.room.join_rules", {"join_rule": join_rule})
    room.add(room.member(target, prior, sender=ALICE))
    room.add(room.member(BOB, "join"))
    decide(room.new("m.room.member", sender, content, state_key=target), room.state)


@settings(max_examples=150, deadline=None)
@given(
    version=versions,
    old=contents(PL_KEYS),
    new=contents(PL_KEYS),
    sender=st.sampled_from([ALICE, BOB]),
)
def test_power_levels_rules_only_allow_or_reject(
    version: str, old: dict[str, Any], new: dict[str, Any], sender: str
) -> None:
    room = Room(version)
    room.join(BOB)
    room.power_levels(**old)
    decide(room.new("m.room.power_levels", sender, new, state_key=""), room.state)
    decide(room.new("m.room.topic", sender, {}, state_key=""), room.state)


@settings(max_examples=100, deadline=None)
@given(version=versions, content=contents(CREATE_KEYS))
def test_create_rules_only_allow_or_reject(version: str, content: dict[str, Any]) -> None:
    room = Room(version, bare=True, create_content=content)
    decide(room.create, {})
    # Whatever the create event says, the rules that read it only allow or reject.
    decide(room.member(ALICE, "join"), room.state)


@settings(max_examples=100, deadline=None)
@given(
    version=versions,
    membership=memberships,
    sender=st.sampled_from([ALICE, BOB, CAROL]),
    target=st.sampled_from([ALICE, BOB, CAROL]),
    bob_prior=memberships,
    join_rule=st.sampled_from(["public", "invite", "knock", "restricted", "knock_restricted"]),
)
def test_auth_events_verdict_matches_state_verdict(
    *, version: str, membership: str, sender: str, target: str, bob_prior: str, join_rule: str
) -> None:
    room = Room(version, join_rule=join_rule)
    room.add(room.member(BOB, bob_prior, sender=ALICE))
    event = room.with_auth(room.member(target, membership, sender=sender))
    in_state = decide(
        event, {k: room.state[k] for k in auth_types_for_event(event) if k in room.state}
    )
    try:
        check_auth_events(event, room.events().get)
        via_auth_events = True
    except EventRejected as e:
        explained(e, event, auth_events_read(event, room.events().get))
        via_auth_events = False
    assert via_auth_events == in_state
