"""Where Synapse differs from a literal reading of the spec, written down as small rooms.

Roomstream does what Synapse does (docs/synapse-parity.md); each case shows the room where the
two readings part, what the literal reading would give, and that Roomstream equals Synapse.
"""

from __future__ import annotations

import pytest

from pipeline.matrix.state_res import resolve_state
from tests.oracle._rooms import ALICE, BOB, OracleRoom
from tests.oracle.test_state_res_vs_synapse import counting_own_events_matters

synapse_oracle = pytest.importorskip("tests.oracle.synapse_oracle")

TOPIC = ("m.room.topic", "")


@pytest.mark.parametrize("version", ["2", "10", "11", "12"])
def test_auth_difference_counts_the_state_sets_own_events(version: str) -> None:
    # Power levels Y then X (X wins, so it is unconflicted); topic A cites Y, topic B cites X.
    # By the spec's words X is in the auth difference (only B's auth chain holds it), so it is
    # replayed after Y and the mainline runs through X: B would win. Synapse counts X in A's
    # C_i too (A's state holds it), so only Y is replayed, the mainline runs through Y and A
    # wins.
    room = OracleRoom(version)
    y = room.send(
        "m.room.power_levels", ALICE, "", room.power_levels_content({BOB: 10}), [room.start], ts=100
    )
    assert y is not None
    topic_a = room.send("m.room.topic", ALICE, "", {"topic": "A"}, [y], ts=101)
    x = room.send(
        "m.room.power_levels", ALICE, "", room.power_levels_content({BOB: 20}), [room.start], ts=102
    )
    assert topic_a is not None and x is not None
    merge = room.send("m.room.message", ALICE, None, {"body": "merge"}, [topic_a, x], ts=103)
    topic_b = room.send("m.room.topic", ALICE, "", {"topic": "B"}, [x], ts=104)
    assert merge is not None and topic_b is not None
    state_sets = [room.state_after[merge], room.state_after[topic_b]]
    assert counting_own_events_matters(room, state_sets)

    ours = resolve_state(room.rv, state_sets, room.fetch)
    theirs = synapse_oracle.SynapseRoom(room.room_id, version, room.events.values()).resolve(
        state_sets
    )
    assert ours[TOPIC] == topic_a
    assert theirs[TOPIC] == ours[TOPIC]
    assert ours == theirs


@pytest.mark.parametrize("version", ["2", "10", "11", "12"])
def test_previously_rejected_event_is_not_readmitted_by_iterative_auth_checks(
    version: str,
) -> None:
    # Two topics by Alice; the later one was rejected where it arrived (say, for a state we
    # did not see) but passes the rules on the partially resolved state. The spec re-checks
    # it "as usual" and it would win as the later one; Synapse keeps it out.
    room = OracleRoom(version)
    first = room.send("m.room.topic", ALICE, "", {"topic": "first"}, [room.start], ts=100)
    later = room.send("m.room.topic", ALICE, "", {"topic": "later"}, [room.start], ts=101)
    assert first is not None and later is not None
    state_sets = [room.state_after[first], room.state_after[later]]

    ours = resolve_state(room.rv, state_sets, room.fetch, is_rejected=lambda e: e == later)
    theirs = synapse_oracle.SynapseRoom(
        room.room_id, version, room.events.values(), rejected={later: "auth"}
    ).resolve(state_sets)
    assert ours[TOPIC] == first
    assert theirs[TOPIC] == ours[TOPIC]
    assert ours == theirs
