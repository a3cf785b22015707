"""Properties every state resolution must have, over random room DAGs.

Rooms grow from the standard start (Alice created it; Bob, Charlie and Zara joined) by random
events (topics, power levels changes, bans, kicks, joins, join rules) on random prev_events;
the state sets resolved are the states after a few random events of the room.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.matrix.events import StateKey
from pipeline.matrix.room_versions import RoomVersion, StateResAlgorithm, room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.matrix.state_res._common import EventLoader, walk_auth_chains
from tests.unit.matrix._state_res_graphs import (
    ALICE,
    BOB,
    CHARLIE,
    Node,
    Room,
    build_room,
    event_id,
    join,
    member,
    power_levels,
    topic,
)

VERSIONS = [room_version(v) for v in ("1", "2", "10", "12")]
USERS = [ALICE, BOB, CHARLIE]


def _node(node_id: str, kind: int, sender: str, target: str, level: int) -> Node:
    match kind:
        case 0:
            return topic(node_id, sender)
        case 1:
            return power_levels(node_id, sender, {ALICE: 100, target: level})
        case 2:
            return member(node_id, sender, target, "ban")
        case 3:
            return member(node_id, sender, target, "leave")
        case 4:
            return join(node_id, target)
        case _:
            rule = "public" if level % 2 else "invite"
            return Node(node_id, sender, "m.room.join_rules", "", {"join_rule": rule})


@st.composite
def rooms(draw: Any, rv: RoomVersion) -> tuple[Room, list[dict[StateKey, str]]]:
    """A random room and 2–3 states of it (after distinct events)."""
    count = draw(st.integers(min_value=2, max_value=9))
    nodes: list[Node] = []
    edges: list[list[str]] = []
    names = ["START"]
    for i in range(count):
        node_id = f"E{i}"
        kind = draw(st.integers(min_value=0, max_value=5))
        sender = draw(st.sampled_from(USERS))
        target = draw(st.sampled_from([BOB, CHARLIE]))
        level = draw(st.sampled_from([0, 50, 100]))
        prevs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        nodes.append(_node(node_id, kind, sender, target, level))
        edges.extend([node_id, p] for p in prevs)
        names.append(node_id)
    room = build_room(rv, nodes, edges)
    picked = draw(st.lists(st.sampled_from(names), min_size=2, max_size=3, unique=True))
    return room, [room.state_after[event_id(n)] for n in picked]


def _check_properties(rv: RoomVersion, room: Room, states: list[dict[StateKey, str]]) -> None:
    resolved = resolve_state(rv, states, room.fetch)

    # The order of the state sets does not matter.
    assert resolve_state(rv, states[::-1], room.fetch) == resolved
    assert resolve_state(rv, [*states[1:], states[0]], room.fetch) == resolved

    # Unconflicted state is kept: a key with the same value in every state set keeps it.
    for key, value in states[0].items():
        if all(s.get(key) == value for s in states[1:]):
            assert resolved[key] == value, key

    # v1 picks each value among the state sets' values for the key; v2 may also pick an event
    # of the auth difference (a state reset to an older event), but nothing from elsewhere.
    loader = EventLoader(room.fetch)
    values = {v for s in states for v in s.values()}
    behind = walk_auth_chains(loader, values)
    for key, value in resolved.items():
        if rv.state_res is StateResAlgorithm.V1:
            assert any(s.get(key) == value for s in states), key
        else:
            assert value in values or value in behind, key
            assert room.events[value].state_tuple == key

    # Resolving one state set, or a state set with itself, returns it.
    assert resolve_state(rv, [states[0]], room.fetch) == states[0]
    assert resolve_state(rv, [states[0], dict(states[0])], room.fetch) == states[0]

    # An auth chain index gives the same result as walking auth_events.
    indexed = resolve_state(
        rv, states, room.fetch, auth_chain_ids=lambda ids: walk_auth_chains(loader, ids)
    )
    assert indexed == resolved


_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    "rv", VERSIONS, ids=lambda rv: f"state-res-{rv.state_res.value}-room-v{rv.identifier}"
)
@_SETTINGS
@given(data=st.data())
def test_resolution_properties(rv: RoomVersion, data: st.DataObject) -> None:
    room, states = data.draw(rooms(rv))
    _check_properties(rv, room, states)
