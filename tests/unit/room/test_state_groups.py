"""State groups: deltas, bounded delta chains, deterministic ids, resolved states, round trip."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.room.state_groups import MIN_SPARE_ROWS, StateGroups, state_group_id

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


# ------------------------------------------------------------------ cost flat in the state's size


def _joined(members: int) -> tuple[StateGroups, int]:
    groups = StateGroups(ROOM)
    sg, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    for n in range(members):
        key = ("m.room.member", f"@u{n}:x")
        sg, _ = groups.add_delta(sg, f"$j{n}", {key: f"$j{n}"}, in_place=True)
    return groups, sg


def _rows_per_change(groups: StateGroups, sg: int, keys: list[tuple[str, str]]) -> float:
    rows = 0
    for n, key in enumerate(keys):
        sg, group = groups.add_delta(sg, f"$s{n}", {key: f"$s{n}"}, in_place=True)
        rows += len(group.delta)
    return rows / len(keys)


def _renames(members: int, count: int) -> list[tuple[str, str]]:
    # A fixed pseudo-random walk over the members (no randomness in the assertion).
    return [("m.room.member", f"@u{(n * 7919) % members}:x") for n in range(count)]


@pytest.mark.parametrize("members", [1_000, 10_000])
def test_a_state_change_writes_a_few_rows_whatever_the_size_of_the_state(members: int) -> None:
    # A snapshot every 100 hops (Synapse) writes members / 100 rows per change on average:
    # 100 rows in a room of 10,000. Deltas over ancestors cost about a row per digit of the
    # step and a snapshot is paid for by as many rows of deltas.
    groups, sg = _joined(members)
    written = sum(len(g[3]) for g in groups.to_dict()["groups"].values())
    assert written / members < 6, "rows per join"
    assert _rows_per_change(groups, sg, _renames(members, 3_000)) < 6
    assert _rows_per_change(groups, sg, [("m.room.topic", "")] * 3_000) < 2


def test_rows_per_state_change_grow_at_most_half_again_from_1000_to_20000_members() -> None:
    small = _rows_per_change(*_joined(1_000), _renames(1_000, 2_000))
    large = _rows_per_change(*_joined(20_000), _renames(20_000, 2_000))
    assert large <= 1.5 * small, (small, large)


def test_reading_any_group_walks_few_hops_and_at_most_twice_its_state() -> None:
    groups, sg = _joined(3_000)
    for n, key in enumerate(_renames(3_000, 5_000) + [("m.room.topic", "")] * 2_000):
        sg, _ = groups.add_delta(sg, f"$s{n}", {key: f"$s{n}"}, in_place=True)
    stored = groups.to_dict()["groups"]
    groups.trim()
    snapshots = 0
    for key, (base, _, _, rows, *_) in stored.items():
        hops, read, below = 0, len(rows), base
        while below is not None:
            hops += 1
            read += len(stored[str(below)][3])
            below = stored[str(below)][0]
        snapshots += hops == 0
        # Steps below 100,000 have digit sums of at most 45.
        assert hops <= 45
        assert read <= 2 * len(groups.state(int(key))) + MIN_SPARE_ROWS
    # 5,000 renames of 3,000 members overwrite enough rows for a snapshot or two, not 100.
    assert 1 < snapshots < 6


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 6), st.booleans()),
        min_size=50,
        max_size=400,
    ),
    st.integers(3, 100),
)
def test_groups_over_ancestors_hold_the_state_their_parent_and_change_say(
    changes: list[tuple[int, int, bool]], max_hops: int
) -> None:
    """Forks (a group made from an older one) and resolved states (``add_state``) over long
    histories: every group reads as its parent's state with its change on top, also after a
    round trip, and ``step_from`` gives exactly that change."""
    groups = StateGroups(ROOM, max_hops=max_hops, cache_size=2)
    sg, _ = groups.add_delta(None, "$c", {("m.room.create", ""): "$c"})
    made = [sg]
    expected = {sg: {("m.room.create", ""): "$c"}}
    changed: dict[int, tuple[int, dict[tuple[str, str], str]]] = {}
    for n, (key, back, resolved) in enumerate(changes):
        parent = made[max(0, len(made) - 1 - back)]
        change = {("k", str(key)): f"$e{n}"}
        state = {**expected[parent], **change}
        if resolved:
            made_sg, group = groups.add_state(f"$e{n}", state, [parent])
            assert made_sg is not None and group is not None
            sg = made_sg
        else:
            sg, _ = groups.add_delta(parent, f"$e{n}", change)
        made.append(sg)
        expected[sg] = state
        changed[sg] = (parent, change)
    for g in made:
        assert groups.state(g) == expected[g]
    for g, (parent, change) in changed.items():
        assert groups.step_from(g, parent) in (change, None)
        if groups.step_from(g, parent) is None:
            # Only a snapshot is not told as a step from its parent.
            assert groups.to_dict()["groups"][str(g)][0] is None
    restored = StateGroups.from_dict(ROOM, orjson.loads(orjson.dumps(groups.to_dict())))
    assert {g: dict(restored.state(g)) for g in made} == expected


def test_groups_saved_before_steps_were_kept_load_and_grow_on() -> None:
    groups, sg = _joined(30)
    old = groups.to_dict()
    old["groups"] = {k: v[:4] for k, v in old["groups"].items()}  # prev, hops, event, rows
    restored = StateGroups.from_dict(ROOM, old)
    assert restored.state(sg) == groups.state(sg)
    for n in range(150):
        key = ("m.room.member", f"@u{n % 30}:x")
        sg_a, _ = groups.add_delta(sg, f"$r{n}", {key: f"$r{n}"})
        sg_b, _ = restored.add_delta(sg, f"$r{n}", {key: f"$r{n}"})
        assert (sg_a, restored.state(sg_b)) == (sg_b, groups.state(sg_a))
        sg = sg_a
