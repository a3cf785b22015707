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
from tests.oracle._rooms import ALICE, BOB, SERVER, OracleRoom
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
