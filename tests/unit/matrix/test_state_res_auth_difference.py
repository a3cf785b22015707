"""The auth difference of state resolution v2, computed in one walk, against its definition.

"If C_i is the full auth chain of S_i, then the auth difference is ∪C_i − ∩C_i", where C_i
holds S_i's own events too, as Synapse counts it (docs/synapse-parity.md): the one-walk
computation (bit masks of the state sets passed down the auth DAG) must give exactly what one
walk per state set gives, on any DAG, and name every unknown event when some are missing.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.matrix.errors import MissingEvents
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.state_res._common import EventLoader, walk_auth_chains
from pipeline.matrix.state_res.v2 import auth_difference

RV = room_version("2")  # event IDs are chosen by the sender, so any graph can be written


def _events(auth: dict[str, list[str]]) -> dict[str, Event]:
    return {
        eid: Event.from_trusted(
            {
                "event_id": eid,
                "room_id": "!r:example.com",
                "sender": "@alice:example.com",
                "type": "m.room.topic",
                "state_key": eid,
                "content": {},
                "prev_events": [],
                "auth_events": auth_ids,
            },
            RV,
        )
        for eid, auth_ids in auth.items()
    }


def _by_definition(
    events: dict[str, Event], state_sets: list[dict[StateKey, str]], unconflicted: set[str]
) -> set[str]:
    """One walk per state set over all its events, each C_i holding the set's own events."""
    loader = EventLoader(events.get)
    chains = [walk_auth_chains(loader, s.values()) | set(s.values()) for s in state_sets]
    common = walk_auth_chains(loader, unconflicted) | unconflicted
    return set().union(*chains) - chains[0].intersection(*chains[1:]) - common


@st.composite
def dags_and_state_sets(draw: Any) -> tuple[dict[str, Event], list[dict[StateKey, str]]]:
    """A random auth DAG (each event cites earlier ones) and 2–5 state sets over its events,
    with one unconflicted key."""
    count = draw(st.integers(2, 25))
    auth: dict[str, list[str]] = {}
    for n in range(count):
        earlier = [f"$e{m}" for m in range(n)]
        cites = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if n else []
        auth[f"$e{n}"] = cites
    names = sorted(auth)
    shared = draw(st.sampled_from(names))
    sets = []
    for _ in range(draw(st.integers(2, 5))):
        picked = draw(st.lists(st.sampled_from(names), min_size=0, max_size=4, unique=True))
        state: dict[StateKey, str] = {("m.room.topic", f"k{i}"): e for i, e in enumerate(picked)}
        state[("m.room.name", "")] = shared
        sets.append(state)
    return _events(auth), sets


@settings(max_examples=150, deadline=None)
@given(case=dags_and_state_sets())
def test_one_walk_auth_difference_is_union_minus_intersection_counting_own_events(
    case: tuple[dict[str, Event], list[dict[StateKey, str]]],
) -> None:
    events, sets = case
    keys = {k for s in sets for k in s}
    unconflicted = {
        k: sets[0][k] for k in keys if all(k in s and s[k] == sets[0].get(k) for s in sets)
    }
    conflicted_keys = keys - unconflicted.keys()
    loader = EventLoader(events.get)
    diff = auth_difference(sets, unconflicted, conflicted_keys, loader, None)
    assert diff == _by_definition(events, sets, set(unconflicted.values()))


def test_auth_difference_names_every_missing_event_at_once() -> None:
    events = _events({"$a": ["$gone1"], "$b": ["$gone2"], "$u": []})
    sets = [{("t", "k"): "$a", ("t", "u"): "$u"}, {("t", "k"): "$b", ("t", "u"): "$u"}]
    with pytest.raises(MissingEvents) as info:
        auth_difference(sets, {("t", "u"): "$u"}, [("t", "k")], EventLoader(events.get), None)
    assert set(info.value.event_ids) == {"$gone1", "$gone2"}


def test_auth_difference_with_an_auth_events_cycle_matches_the_definition() -> None:
    # Only forgeable where event IDs are chosen by the sender (rooms v1, v2).
    events = _events({"$x": ["$y"], "$y": ["$x"], "$a": ["$x"], "$b": ["$root"], "$root": []})
    sets = [{("t", "k"): "$a"}, {("t", "k"): "$b"}]
    diff = auth_difference(sets, {}, [("t", "k")], EventLoader(events.get), None)
    assert diff == {"$a", "$b", "$x", "$y", "$root"} == _by_definition(events, sets, set())
