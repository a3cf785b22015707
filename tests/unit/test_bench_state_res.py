"""The state resolution benchmark's inputs are what its issue asks for, and a run reports them."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline.bench import state_res as bench
from pipeline.matrix.state_res._common import split_conflicts


def test_two_branches_conflict_on_every_key_they_set() -> None:
    case = bench.two_branches(100)
    assert len(case.state_sets) == 2
    _, conflicted = split_conflicts(case.state_sets)
    # Every one of a branch's 100 events is in the conflicted state set.
    assert sum(len(ids) for ids in conflicted.values()) == 200


def test_ten_extremities_over_the_asked_number_of_events() -> None:
    case = bench.ten_extremities(1_000, members=50)
    assert len(case.events) == 1_000
    assert len(case.state_sets) == 10
    assert len({frozenset(s.items()) for s in case.state_sets}) == 10


def test_five_member_conflict_conflicts_on_five_memberships_only() -> None:
    case = bench.five_member_conflict(100)
    unconflicted, conflicted = split_conflicts(case.state_sets)
    assert sorted(k[0] for k in conflicted) == ["m.room.member"] * 5
    assert sum(1 for k in unconflicted if k[0] == "m.room.member") == 100 + 1 - 5


def test_inputs_are_deterministic() -> None:
    assert bench.five_member_conflict(50).state_sets == bench.five_member_conflict(50).state_sets


@pytest.mark.skipif(
    importlib.util.find_spec("synapse") is None, reason="the oracle's own test says it is absent"
)
def test_run_reports_both_implementations_with_the_same_answer() -> None:
    results = bench.run(quick=True)
    assert [r["name"] for r in results] == [c.name for c in bench.build_cases(quick=True)]
    for r in results:
        assert r["baseline"] == "matrix-synapse 1.163.2 state res v2"
        assert r["target"] == ">= 2x"
        assert r["roomstream_ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["roomstream_ms"], rel=0.1)
        assert r["same_result"] is True


def test_conflicted_members_conflicts_on_every_membership_and_nothing_else() -> None:
    case = bench.conflicted_members(300)
    unconflicted, conflicted = split_conflicts(case.state_sets)
    assert len(conflicted) == 300
    assert {k[0] for k in conflicted} == {"m.room.member"}
    assert all(len(ids) == 2 for ids in conflicted.values())
    # The creator's membership and the room's set-up state agree on both sides.
    assert ("m.room.create", "") in unconflicted
