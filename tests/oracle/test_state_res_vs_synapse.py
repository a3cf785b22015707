"""State resolution agrees with matrix-synapse's on random forked rooms.

Room versions 1 (v1), 2, 10 and 11 (v2) and 12 (v2.1). Some events of each room are marked
rejected (as if rejected where they arrived), for both. The two points where Synapse differs
from a literal reading of the spec are in: the auth difference counts the state sets' own events,
and a previously rejected event is never re-admitted (docs/synapse-parity.md;
test_synapse_parity.py has one small room for each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.matrix.events import StateKey
from pipeline.matrix.state_res import resolve_state
from tests.oracle._rooms import OracleRoom
from tests.oracle._strategies import forked_rooms
from tests.unit.matrix._state_res_graphs import auth_chain

synapse_oracle = pytest.importorskip("tests.oracle.synapse_oracle")

_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def counting_own_events_matters(
    room: OracleRoom, state_sets: Sequence[Mapping[StateKey, str]]
) -> bool:
    """Whether an unconflicted state event is in some but not all of the sets' auth chains."""
    unconflicted = set(state_sets[0].values()).intersection(
        *(set(s.values()) for s in state_sets[1:])
    )
    chains = [auth_chain(room.events, set(s.values())) for s in state_sets]
    return any(
        any(x in c for c in chains) and not all(x in c for c in chains) for x in unconflicted
    )


@pytest.mark.parametrize("version", ["1", "2", "10", "11", "12"])
@_SETTINGS
@given(data=st.data())
def test_resolved_state_matches_synapse(version: str, data: st.DataObject) -> None:
    forked = data.draw(forked_rooms(version))
    room = forked.room
    rejected = data.draw(st.sets(st.sampled_from(sorted(room.events)), max_size=3))
    ours = resolve_state(room.rv, forked.state_sets, room.fetch, is_rejected=rejected.__contains__)
    theirs = synapse_oracle.SynapseRoom(
        room.room_id, version, room.events.values(), rejected=dict.fromkeys(rejected, "auth")
    ).resolve(forked.state_sets)
    assert ours == theirs
