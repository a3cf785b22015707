"""State groups: deltas, bounded delta chains, deterministic ids, resolved states, round trip."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.room.state_groups import StateGroups, state_group_id

ROOM = "!room:a.example"


def _chain_length(groups: StateGroups, sg: int) -> int:
    """Delta hops from ``sg`` down to its snapshot, walking the stored prev groups."""
    data = groups.to_dict()["groups"]
    hops = 0
    prev = data[str(sg)][0]
    while prev is not None:
        hops += 1
        prev = data[str(prev)][0]
    return hops


def test_state_group_ids_are_deterministic_63_bit_and_distinct_per_room() -> None:
    ids = [state_group_id(ROOM, n) for n in range(1, 200)]
    assert ids == [state_group_id(ROOM, n) for n in range(1, 200)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)
    assert state_group_id("!other:a.example", 1) != state_group_id(ROOM, 1)


def test_first_group_is_a_snapshot_and_later_ones_are_deltas() -> None:
    groups = StateGroups(ROOM)
    sg1, g1 = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    sg2, g2 = groups.add_delta(sg1, "$m", {("m.room.member", "@a:x"): "$m"})
    assert (g1.prev_group, g1.delta) == (None, (("m.room.create", "", "$c"),))
    assert (g2.prev_group, g2.delta) == (sg1, (("m.room.member", "@a:x", "$m"),))
    assert groups.state(sg2) == {("m.room.create", ""): "$c", ("m.room.member", "@a:x"): "$m"}
    assert groups.state(None) == {}


@pytest.mark.parametrize("max_hops", [0, 1, 3, 100])
def test_delta_chains_are_cut_after_max_hops_with_a_full_snapshot(max_hops: int) -> None:
    groups = StateGroups(ROOM, max_hops=max_hops)
    sg, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    expected = {("m.room.create", ""): "$c"}
    for n in range(2 * max_hops + 5):
        key = ("m.room.member", f"@u{n}:x")
        sg, group = groups.add_delta(sg, f"$e{n}", {key: f"$e{n}"})
        expected[key] = f"$e{n}"
        assert _chain_length(groups, sg) <= max_hops
        if group.prev_group is None:
            # A snapshot carries the whole state, not just the change.
            assert dict(((r[0], r[1]), r[2]) for r in group.delta) == expected
    groups.trim()
    assert groups.state(sg) == expected


def test_add_state_reuses_an_identical_candidate() -> None:
    groups = StateGroups(ROOM)
    sg1, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    sg2, _ = groups.add_delta(sg1, "$t", {("m.room.topic", ""): "$t"})
    assert groups.add_state("$x", dict(groups.state(sg2)), [sg1, sg2]) == (sg2, None)


def test_add_state_deltas_over_the_candidate_with_the_smallest_delta() -> None:
    groups = StateGroups(ROOM)
    base, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    a, _ = groups.add_delta(base, "$t", {("m.room.topic", ""): "$t"})
    b, _ = groups.add_delta(a, "$n", {("m.room.name", ""): "$n"})
    merged = {**groups.state(b), ("m.room.avatar", ""): "$av"}
    sg, group = groups.add_state("$x", merged, [a, b])
    assert group is not None and group.prev_group == b
    assert group.delta == (("m.room.avatar", "", "$av"),)
    assert groups.state(sg) == merged


def test_add_state_writes_a_snapshot_when_every_candidate_has_a_key_the_state_lacks() -> None:
    groups = StateGroups(ROOM)
    base, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    a, _ = groups.add_delta(base, "$t", {("m.room.topic", ""): "$t"})
    resolved = {("m.room.create", ""): "$c", ("m.room.name", ""): "$n"}
    sg, group = groups.add_state("$x", resolved, [a])
    assert group is not None and group.prev_group is None
    assert groups.state(sg) == resolved


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=40),
    st.integers(1, 4),
)
def test_round_trip_keeps_every_group_state(changes: list[tuple[int, int]], max_hops: int) -> None:
    groups = StateGroups(ROOM, max_hops=max_hops, cache_size=1)
    sg, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    made = [sg]
    for n, (key, back) in enumerate(changes):
        # Branch from an earlier group now and then, as forks do.
        parent = made[max(0, len(made) - 1 - back)]
        sg, _ = groups.add_delta(parent, f"$e{n}", {("k", str(key)): f"$e{n}"})
        made.append(sg)
    states = {g: dict(groups.state(g)) for g in made}
    restored = StateGroups.from_dict(ROOM, orjson.loads(orjson.dumps(groups.to_dict())))
    assert {g: dict(restored.state(g)) for g in made} == states
    assert restored.add_delta(made[-1], "$z", {})[0] == groups.add_delta(made[-1], "$z", {})[0]
