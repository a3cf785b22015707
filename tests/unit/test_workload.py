"""The workload generator makes valid PDUs of its room version, selects auth events as the
spec's auth events selection says, is deterministic, and its expected facts are what the room
logic computes (``replay``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dev.workload import (
    BAD_INPUT_KINDS,
    BASE_EVENTS,
    Workload,
    fork_and_merge_scenario,
    generate_workload,
    rejection_scenario,
    slow_resolution_room,
    soft_fail_scenario,
    write_jsonl,
)
from pipeline.dev.workload_builder import REJECTED, RoomBuilder, default_power_levels
from pipeline.matrix.auth import auth_event_selection
from pipeline.matrix.errors import UnknownRoomVersion
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.pdu import MAX_PREV_EVENTS, parse_pdu
from pipeline.matrix.room_versions import room_version
from pipeline.room.replay import replay

VERSIONS = ["1", "3", "10", "11", "12"]
ALL_KINDS = len(BAD_INPUT_KINDS)


def _parsed(w: Workload) -> dict[str, Event]:
    """Every room PDU of ``w`` parsed with its room version, by event ID."""
    rv = room_version(w.room_version)
    bad = {b.line for b in w.bad_inputs}
    return {
        (ev := parse_pdu(line, rv)).event_id: ev for i, line in enumerate(w.lines) if i not in bad
    }


def _state_rows(rows: list[list[str]]) -> dict[StateKey, str]:
    return {(t, k): e for t, k, e in rows}


def _assert_facts_match_replay(w: Workload, out: Mapping[str, Any]) -> None:
    for room_id, facts in w.rooms.items():
        got = out["rooms"][room_id]
        assert got["room_version"] == facts.room_version
        assert set(got["rejected"]) == set(facts.rejected), room_id
        assert set(got["soft_failed"]) == facts.soft_failed, room_id
        assert set(got["forward_extremities"]) == facts.forward_extremities, room_id
        assert "parked" not in got, room_id
        if facts.current_state is not None:
            assert _state_rows(got["current_state"]) == dict(facts.current_state), room_id


# ------------------------------------------------------------------ validity


@pytest.mark.parametrize("version", VERSIONS)
def test_every_pdu_is_valid_and_its_event_id_follows_the_room_version_rule(version: str) -> None:
    w = generate_workload(6, 30, seed=3, room_version=version)
    events = _parsed(w)
    expected_ids = {e for r in w.rooms.values() for e in r.event_ids}
    assert set(events) == expected_ids
    assert len(w.lines) == 6 * 30
    for ev in events.values():
        # 3. "Passes hash checks": nothing arrives redacted.
        assert not ev.redacted_on_receipt, ev.event_id
        assert ev.room_id in w.rooms
        assert ev.pdu["origin"] == ev.sender.split(":", 1)[1]
        assert list(ev.pdu["signatures"]) == [ev.pdu["origin"]]


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_plus_create_events_have_no_creator_and_v12_no_room_id(version: str) -> None:
    w = generate_workload(3, BASE_EVENTS, room_version=version)
    creates = [e for e in _parsed(w).values() if e.type == "m.room.create"]
    assert len(creates) == 3
    for create in creates:
        assert "creator" not in create.content
        if version == "12":
            # v12: "The room ID is the event ID of the create event with sigil ! instead of $."
            assert "room_id" not in create.pdu
            assert create.room_id == "!" + create.event_id[1:]
        else:
            assert create.pdu["room_id"] == create.room_id


@pytest.mark.parametrize("version", VERSIONS)
def test_depth_is_one_more_than_the_deepest_prev_event(version: str) -> None:
    w = generate_workload(4, 40, seed=5, room_version=version)
    events = _parsed(w)
    for ev in events.values():
        if not ev.prev_event_ids:
            assert ev.type == "m.room.create" and ev.depth == 1
            continue
        assert ev.depth == max(events[p].depth for p in ev.prev_event_ids) + 1
        assert len(ev.prev_event_ids) <= MAX_PREV_EVENTS


@pytest.mark.parametrize("version", VERSIONS)
def test_auth_events_are_exactly_the_auth_events_selection_of_the_state_before(
    version: str,
) -> None:
    """Auth events selection: the create event (not in v12+), the current power levels, the
    sender's membership, and for m.room.member the target's membership and (join, invite,
    knock) the join rules, each taken from the state before the event."""
    w = generate_workload(5, 40, seed=11, room_version=version)
    events = _parsed(w)
    out = replay(w.lines, state_after=True)
    checked = 0
    for room_id, facts in w.rooms.items():
        after = {e: _state_rows(rows) for e, rows in out["rooms"][room_id]["state_after"].items()}
        for eid in facts.event_ids:
            ev = events[eid]
            if not ev.prev_event_ids:
                assert ev.auth_event_ids == ()
                continue
            if len(ev.prev_event_ids) == 1:
                before = after[ev.prev_event_ids[0]]
            else:
                # Merges are messages: the state after one is the state before it.
                assert not ev.is_state
                before = after[eid]
            selected = {before[k] for k in auth_event_selection(ev) if k in before}
            assert sorted(ev.auth_event_ids) == sorted(selected), eid
            checked += 1
    assert checked > 150


# ------------------------------------------------------------------ determinism


def test_same_arguments_give_byte_identical_lines() -> None:
    a = generate_workload(5, 30, seed=7, bad_inputs=ALL_KINDS)
    b = generate_workload(5, 30, seed=7, bad_inputs=ALL_KINDS)
    assert a.lines == b.lines
    assert a.keys == b.keys
    assert a.rooms == b.rooms
    assert a.bad_inputs == b.bad_inputs
    assert generate_workload(5, 30, seed=8).lines != a.lines


def test_output_does_not_depend_on_the_interpreter_hash_seed() -> None:
    script = (
        "import hashlib; from pipeline.dev.workload import generate_workload; "
        "w = generate_workload(4, 30, seed=2, bad_inputs=7, room_version='12'); "
        "print(hashlib.sha256(b'\\n'.join(w.lines)).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, check=True, text=True
        )
        digests.add(done.stdout.strip())
    local = generate_workload(4, 30, seed=2, bad_inputs=7, room_version="12")
    digests.add(hashlib.sha256(b"\n".join(local.lines)).hexdigest())
    assert len(digests) == 1


# ------------------------------------------------------------------ the mix


def test_rooms_have_the_requested_size_and_a_realistic_mix() -> None:
    w = generate_workload(30, 50, seed=1)
    events = _parsed(w)
    assert all(len(r.event_ids) == 50 for r in w.rooms.values())
    types = [e.type for e in events.values()]
    assert types.count("m.room.message") > len(types) / 2
    memberships = {e.membership for e in events.values() if e.membership}
    assert memberships == {"join", "leave", "ban"}
    for t in ("m.room.topic", "m.room.name", "m.room.redaction", "m.room.history_visibility"):
        assert t in types
    assert sum(len(e.prev_event_ids) == 2 for e in events.values()) == w.stats["forks"] > 0
    assert w.stats["conflicting_forks"] > 0
    assert sum(len(r.rejected) for r in w.rooms.values()) == w.stats["rejected"] > 0
    assert sum(len(r.soft_failed) for r in w.rooms.values()) == w.stats["soft_failed"] > 0
    assert {r.room_id for r in w.rooms.values()} == set(w.keys)
    # Rooms are interleaved: the first room's events are not one block.
    first = next(iter(w.rooms))
    positions = [i for i, k in enumerate(w.keys) if k == first]
    assert positions[-1] - positions[0] > len(positions)


def test_without_forks_every_event_has_one_prev_event() -> None:
    w = generate_workload(10, 40, seed=4, forks=False)
    assert all(len(e.prev_event_ids) <= 1 for e in _parsed(w).values())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rooms": 1, "events_per_room": BASE_EVENTS - 1}, ValueError),
        ({"rooms": -1, "events_per_room": 10}, ValueError),
        ({"rooms": 1, "events_per_room": 10, "bad_inputs": -1}, ValueError),
        ({"rooms": 0, "events_per_room": 10, "bad_inputs": 1}, ValueError),
        ({"rooms": 1, "events_per_room": 10, "room_version": "99"}, UnknownRoomVersion),
    ],
)
def test_impossible_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        generate_workload(**kwargs)


# ------------------------------------------------------------------ expected facts vs replay


@pytest.mark.parametrize("forks", [True, False])
@pytest.mark.parametrize("version", VERSIONS)
def test_expected_rejections_soft_failures_and_state_match_replay(
    version: str, forks: bool
) -> None:
    w = generate_workload(8, 40, seed=21, room_version=version, forks=forks)
    _assert_facts_match_replay(w, replay(w.lines))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32), version=st.sampled_from(VERSIONS))
def test_expected_facts_match_replay_for_any_seed(seed: int, version: str) -> None:
    w = generate_workload(3, 30, seed=seed, room_version=version)
    _assert_facts_match_replay(w, replay(w.lines))


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_bad_inputs_reach_the_dead_letters_with_their_reason(version: str) -> None:
    """Bad input gets a clear reason and never stops a room: the valid events around it are
    all processed as expected."""
    w = generate_workload(6, 30, seed=9, room_version=version, bad_inputs=2 * ALL_KINDS)
    assert sorted(b.kind for b in w.bad_inputs) == sorted(list(BAD_INPUT_KINDS) * 2)
    out = replay(w.lines)
    _assert_facts_match_replay(w, out)
    dead = {d["line"] - 1: d["reason"] for d in out["dead_letter"]}
    assert set(dead) == {b.line for b in w.bad_inputs if b.on_arrival}
    for bad in w.bad_inputs:
        if bad.field is not None:
            assert bad.field in dead[bad.line], (bad, dead[bad.line])
        if not bad.on_arrival:
            # Its room's create event never comes: the event waits, parked.
            assert bad.room_id is not None
            assert out["rooms"][bad.room_id]["parked"] == [f"line {bad.line + 1}"]


def test_bad_inputs_arrive_after_the_create_event_of_their_room() -> None:
    w = generate_workload(4, 20, seed=1, bad_inputs=3 * ALL_KINDS)
    first_line: dict[str | None, int] = {}
    for i, key in enumerate(w.keys):
        first_line.setdefault(key, i)
    for bad in w.bad_inputs:
        if bad.room_id in w.rooms:
            assert bad.line > first_line[bad.room_id]


def test_write_jsonl_writes_one_line_per_input(tmp_path: Path) -> None:
    w = generate_workload(3, 12, seed=1, bad_inputs=ALL_KINDS)
    path = write_jsonl(w, tmp_path / "w.jsonl")
    assert path.read_bytes().split(b"\n") == [*w.lines, b""]


# ------------------------------------------------------------------ scenarios


@pytest.mark.parametrize("version", ["1", "2", "3", "10", "11", "12"])
@pytest.mark.parametrize(
    "scenario", [soft_fail_scenario, rejection_scenario, fork_and_merge_scenario]
)
def test_scenarios_match_replay(scenario: Any, version: str) -> None:
    w = scenario(version)
    _assert_facts_match_replay(w, replay(w.lines))


def test_soft_failed_event_is_from_a_banned_user_on_a_stale_view() -> None:
    """Soft failure: the event passes the checks against its auth events and the state before
    it, but fails against the current state of the room."""
    w = soft_fail_scenario()
    (facts,) = w.rooms.values()
    (sf,) = facts.soft_failed
    events = _parsed(w)
    ev = events[sf]
    assert facts.current_state is not None
    ban = events[facts.current_state[("m.room.member", ev.sender)]]
    assert ban.membership == "ban"
    # Built on the ban's own prev_events: the sender's server had not seen it.
    assert ev.prev_event_ids == ban.prev_event_ids
    assert sf not in facts.forward_extremities
    assert facts.valid_events == len(facts.event_ids)
    assert facts.accepted_events == len(facts.event_ids) - 1
    out = replay(w.lines)
    assert out["rooms"][facts.room_id]["soft_failed"] == [sf]


def test_rejection_scenario_reasons() -> None:
    (facts,) = rejection_scenario().rooms.values()
    assert sorted(facts.rejected.values()) == ["insufficient_power", "sender_not_joined"]
    assert facts.valid_events == len(facts.event_ids) - 2


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_conflicting_fork_is_resolved_to_one_of_the_branch_topics(version: str) -> None:
    w = fork_and_merge_scenario(version, conflicting=True)
    (facts,) = w.rooms.values()
    events = _parsed(w)
    merge = events[facts.event_ids[-1]]
    assert len(merge.prev_event_ids) == 2
    topics = {e.event_id for e in events.values() if e.type == "m.room.topic"}
    assert len(topics) == 2
    assert facts.current_state is not None
    assert facts.current_state[("m.room.topic", "")] in topics


@pytest.mark.parametrize("version", ["10", "12"])
def test_slow_resolution_room_has_two_branches_of_conflicting_state(version: str) -> None:
    n = 8
    w = slow_resolution_room(n, version, resolve=True)
    (facts,) = w.rooms.values()
    events = _parsed(w)
    merge = events[facts.event_ids[-1]]
    assert len(merge.prev_event_ids) == 2
    branch_keys: dict[str, list[StateKey]] = {}
    for ev in events.values():
        if ev.depth > merge.depth - n - 1 and ev.is_state:
            branch_keys.setdefault(ev.sender, []).append(ev.state_tuple)
    (a, b) = branch_keys.values()
    assert sorted(a) == sorted(b) and len(a) == n
    assert len(facts.event_ids) == 5 + 2 * n + 1
    _assert_facts_match_replay(w, replay(w.lines))


def test_slow_resolution_room_without_resolving_leaves_current_state_open() -> None:
    (facts,) = slow_resolution_room(3).rooms.values()
    assert facts.current_state is None
    with pytest.raises(ValueError):
        slow_resolution_room(0)


# ------------------------------------------------------------------ the builder


def test_builder_refuses_a_room_id_for_v12_and_events_before_the_create_event() -> None:
    with pytest.raises(ValueError):
        RoomBuilder("12", room_id="!x:example.org")
    b = RoomBuilder("10")
    with pytest.raises(ValueError):
        b.message("@a:example.org", "too early")
    b.create("@a:example.org")
    with pytest.raises(ValueError):
        b.create("@a:example.org")
    with pytest.raises(ValueError):
        b.message("@a:example.org", "x", expect="maybe")


def test_builder_rejected_events_change_no_state_and_are_no_extremity() -> None:
    alice = "@alice:example.org"
    b = RoomBuilder("10")
    b.create(alice)
    b.join(alice)
    pl = b.state("m.room.power_levels", alice, default_power_levels(alice, b.rv))
    bad = b.state(
        "m.room.power_levels",
        "@eve:other.example",
        default_power_levels(alice, b.rv, {"@eve:other.example": 100}),
        expect=REJECTED,
    )
    assert b.forward_extremities == [pl.event_id]
    assert b.current_state()[("m.room.power_levels", "")] == pl.event_id
    assert bad.event_id in b.rejected
    assert orjson.loads(bad.line) == bad.pdu
