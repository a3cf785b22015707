"""The authorization rules agree with matrix-synapse's on random events against random states.

Two comparisons: the rules over a given state (Synapse's state-dependent rules beside our
``check_auth_rules``), and the full check of an event against its own auth_events (Synapse's
state-independent then state-dependent rules beside our ``check_auth_events``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.matrix.auth import auth_types_for_event, check_auth_events, check_auth_rules
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event
from tests.oracle._rooms import ALICE, BOB, EVELYN, SERVER, ZARA, OracleRoom
from tests.oracle._strategies import forked_rooms, odd_event_specs

synapse_oracle = pytest.importorskip("tests.oracle.synapse_oracle")

VERSIONS = ["1", "2", "6", "10", "11", "12"]
_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _ours(check: Any) -> str | None:
    try:
        check()
    except EventRejected as e:
        return str(e)
    return None


@st.composite
def event_at_some_state(draw: Any, version: str) -> tuple[OracleRoom, Event]:
    """A random event built on the state after a random event of a random room."""
    room = draw(forked_rooms(version)).room
    at = draw(st.sampled_from(sorted(room.events)))
    spec = draw(odd_event_specs(room))
    state = room.state_after[at]
    # A restricted join carries the authorising server's signature, or (sometimes) not.
    authoriser = spec[3].get("join_authorised_via_users_server")
    signers = (authoriser.partition(":")[2],) if authoriser and draw(st.booleans()) else ()
    event = room.build(spec, [at], state=state, ts=10_000, signers=signers)
    if draw(st.integers(0, 3)) == 0:
        # Tamper with the auth_events: drop one, add one the selection does not name, or
        # name a second event for a key already there.
        auth_ids = list(event.auth_event_ids)
        extra = draw(st.sampled_from(sorted(room.events)))
        match draw(st.integers(0, 1)) if auth_ids else 1:
            case 0:
                auth_ids.remove(draw(st.sampled_from(auth_ids)))
            case _:
                auth_ids.append(extra)
        event = room.build(spec, [at], ts=10_000, auth_ids=sorted(set(auth_ids)), signers=signers)
    return room, event


def _verdicts(ours: str | None, theirs: str | None) -> str:
    return f"Roomstream: {ours or 'allowed'}; Synapse: {theirs or 'allowed'}"


@pytest.mark.parametrize("version", VERSIONS)
@_SETTINGS
@given(data=st.data())
def test_auth_rules_over_a_state_match_synapse(version: str, data: st.DataObject) -> None:
    room, event = data.draw(event_at_some_state(version))
    prev = event.prev_event_ids[0]
    state = room.state_after[prev]
    auth_state = {k: room.events[state[k]] for k in auth_types_for_event(event) if k in state}
    ours = _ours(lambda: check_auth_rules(event, auth_state))
    theirs = synapse_oracle.synapse_allows_in_state(event, auth_state)
    assert (ours is None) == (theirs is None), _verdicts(ours, theirs)


@pytest.mark.parametrize("version", VERSIONS)
@_SETTINGS
@given(data=st.data())
def test_auth_against_own_auth_events_matches_synapse(version: str, data: st.DataObject) -> None:
    room, event = data.draw(event_at_some_state(version))
    ours = _ours(lambda: check_auth_events(event, room.fetch))
    theirs = synapse_oracle.synapse_allows_with_auth_events(event, room.events)
    assert (ours is None) == (theirs is None), _verdicts(ours, theirs)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("foreign_type", ["m.room.member", "m.room.power_levels"])
def test_auth_event_from_another_room_is_rejected_as_synapse_rejects_it(
    version: str, foreign_type: str
) -> None:
    # docs/input-policy.md: rejected (stored with the reason), not refused, not allowed; Synapse
    # checks each auth event's room first, so its reason names the room too.
    room = OracleRoom(version)
    other = OracleRoom(version)
    other.room_id = f"!elsewhere:{SERVER}"
    key, content = (
        (BOB, {"membership": "join"})
        if foreign_type == "m.room.member"
        else ("", other.power_levels_content({BOB: 100}))
    )
    sender = BOB if foreign_type == "m.room.member" else ALICE
    foreign = other.build((foreign_type, sender, key, content), [other.start])
    honest = room.build(("m.room.message", BOB, None, {"body": "x"}), [room.start])
    auth_ids = [
        a for a in honest.auth_event_ids if room.events[a].state_tuple != foreign.state_tuple
    ]
    event = room.build(
        ("m.room.message", BOB, None, {"body": "x"}),
        [room.start],
        auth_ids=sorted([*auth_ids, foreign.event_id]),
    )
    events = {**room.events, foreign.event_id: foreign}
    ours = _ours(lambda: check_auth_events(event, events.get))
    theirs = synapse_oracle.synapse_allows_with_auth_events(event, events)
    assert ours is not None and f"from room !elsewhere:{SERVER}" in ours, _verdicts(ours, theirs)
    assert theirs is not None and f"which is in room !elsewhere:{SERVER}" in theirs, _verdicts(
        ours, theirs
    )


YVES = "@yves:third.example"  # on a third server, never in the room


@pytest.mark.parametrize("federate", [True, False, "false", "true", 0, None])
@pytest.mark.parametrize(
    ("sender", "target", "membership"),
    [
        (ZARA, None, None),  # a message from another server
        (ALICE, YVES, "invite"),  # memberships of another server's user, by the creator
        (ALICE, ZARA, "leave"),
        (ALICE, ZARA, "ban"),
        (ZARA, ZARA, "join"),
        (ALICE, EVELYN, "invite"),  # ... and of a user on the create event's server
    ],
)
def test_m_federate_is_read_as_synapse_reads_it(
    federate: object, sender: str, target: str | None, membership: str | None
) -> None:
    # Synapse admits other servers only when m.federate is absent or true, and applies the
    # check to a membership's target as well as its sender (docs/synapse-parity.md).
    room = OracleRoom("10")
    create = room.build(
        (
            "m.room.create",
            ALICE,
            "",
            {"creator": ALICE, "room_version": "10", "m.federate": federate},
        ),
        [],
    )
    if membership is None:
        event = room.build(("m.room.message", sender, None, {"body": "x"}), [room.start])
    else:
        event = room.build(
            ("m.room.member", sender, target, {"membership": membership}), [room.start]
        )
    state = room.state_after[room.start]
    auth_state = {k: room.events[state[k]] for k in auth_types_for_event(event) if k in state}
    auth_state[("m.room.create", "")] = create
    ours = _ours(lambda: check_auth_rules(event, auth_state))
    theirs = synapse_oracle.synapse_allows_in_state(event, auth_state)
    assert (ours is None) == (theirs is None), _verdicts(ours, theirs)
    remote = (target or sender).endswith(":other.example") or target == YVES
    assert (ours is None) is (federate is True or not remote), ours
