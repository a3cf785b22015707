"""Every conflicted key of ruma's state resolution conformance cases is explained: the winner
the resolution chose, and why (power ordering, mainline position, an origin_server_ts or event
ID tie-break, the auth chain, or the other candidates failing the iterative auth checks).

Each batch case is resolved the three ways its conformance test resolves it (one PDU at a time,
one file at a time, all at once), each MSC4297 case from its two state maps; in every resolution
the explained keys are exactly the keys the state sets disagree on, each with its candidates,
the resolution's winner and a reason that holds of the events. The hand-worked graphs of the
state resolution tests (and a race of join rules, for the power ordering) are explained by the
step their comments give."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.matrix.auth import is_power_event
from pipeline.matrix.events import Event, StateKey, StateMap
from pipeline.matrix.explain import AUTH_RULES, Recorder
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.room.explain import explain_resolutions
from tests.unit.matrix._state_res_graphs import (
    ALICE,
    BOB,
    EVELYN,
    Node,
    auth_chain,
    build_room,
    event_id,
    power_levels,
)
from tests.unit.matrix.test_state_res_conformance import (
    BATCH_CASES,
    STATE_MAP_CASES,
    _cases_dir,
    _expected,
    _key,
    _load_batches,
    _load_json,
)
from tests.unit.matrix.test_state_res_v2 import GRAPH_SCENARIOS

REASONS = {
    "power ordering",
    "mainline position",
    "origin_server_ts tie-break",
    "event_id tie-break",
    "auth chain order",
    "failed the iterative auth checks",
    "only candidate",
}


def _check(recorder: Recorder, results: list[dict[tuple[str, str], str]]) -> list[dict]:  # type: ignore[type-arg]
    explained = explain_resolutions(recorder.notes)
    assert len(explained) == len(results)
    conflicts = []
    for res, resolved in zip(explained, results, strict=True):
        for c in res["conflicted"]:
            assert c["winner"] == resolved.get(tuple(c["key"])), c
            assert c["why"] in REASONS, c
            assert c["detail"], c
            conflicts.append(c)
    return conflicts


def test_origin_server_ts_tiebreak_case_is_explained_by_the_tie_break() -> None:
    batches = _load_batches(BATCH_CASES["origin_server_ts_tiebreak"])
    events = [e for batch in batches for e in batch]
    by_id = {e.event_id: e for e in events}
    recorder = Recorder()
    states: list[StateMap] = [{_key(e): e.event_id} for e in events]
    resolved = resolve_state(events[0].room_version, states, by_id.get, recorder=recorder)
    whys = {c["why"] for c in _check(recorder, [resolved])}
    assert "origin_server_ts tie-break" in whys


def test_a_key_no_candidate_passes_is_explained_by_the_failed_rule() -> None:
    # join_rules_vs_join: Ella's join fails once the join rules turn invite-only (v6–v11 4.3.4).
    batches = _load_batches(BATCH_CASES["join_rules_vs_join"])
    events = [e for batch in batches for e in batch]
    by_id = {e.event_id: e for e in events}
    recorder = Recorder()
    results = []
    state = None
    for batch in batches:
        states: list[StateMap] = [] if state is None else [state]
        states.extend({_key(e): e.event_id} for e in batch)
        state = resolve_state(events[0].room_version, states, by_id.get, recorder=recorder)
        results.append(state)
    lost = [c for c in _check(recorder, results) if c["winner"] is None]
    assert lost and lost[0]["failed"][0]["rule"] == "4.3.4"


# ------------------------------------------------------------------ every key, every way


class Explaining:
    """Resolves as the conformance test does, explaining each resolution as it goes."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.by_id = {e.event_id: e for e in events}
        self.rv = events[0].room_version
        self.keys: list[dict[str, Any]] = []

    def resolve(self, states: Sequence[StateMap]) -> dict[StateKey, str]:
        recorder = Recorder()
        resolved = resolve_state(self.rv, states, self.by_id.get, recorder=recorder)
        disagree = _disagreements(states)
        if len(states) < 2:
            assert not recorder.notes and not disagree
            return resolved
        (explained,) = explain_resolutions(recorder.notes)
        by_key = {tuple(c["key"]): c for c in explained["conflicted"]}
        assert set(by_key) == set(disagree), "every key the state sets disagree on, no other"
        for key, candidates in disagree.items():
            c = by_key[key]
            assert c["winner"] == resolved.get(key), c
            assert set(c["candidates"]) == candidates, c
            self._holds(c, candidates)
            self.keys.append(c)
        return resolved

    def _holds(self, c: dict[str, Any], candidates: set[str]) -> None:
        """The reason given is true of the events."""
        why, winner = c["why"], c["winner"]
        assert why in REASONS and c["detail"], c
        for failed in c["failed"]:
            assert failed["event_id"] != winner and failed["rule"] and failed["reason"], c
        if why == "only candidate":
            assert candidates == {winner}, c
        elif why == "failed the iterative auth checks":
            # The other candidates failed (or, when none is left, every candidate did).
            lost = {f["event_id"] for f in c["failed"]} & candidates
            assert lost and (winner is None or lost == candidates - {winner}), c
        else:
            rival, won = self.by_id[c["overtook"]], self.by_id[winner]
            in_chain = rival.event_id in auth_chain(self.by_id, [won.event_id])
            if why == "auth chain order":
                assert in_chain, c
            elif why == "power ordering":
                assert not in_chain and (is_power_event(rival) or is_power_event(won)), c
            elif why == "origin_server_ts tie-break":
                assert won.origin_server_ts > rival.origin_server_ts, c
            elif why == "event_id tie-break":
                assert won.origin_server_ts == rival.origin_server_ts, c
                assert winner > rival.event_id, c
        assert all(f["rule_name"] in AUTH_RULES.values() for f in c["failed"]), c


def _disagreements(states: Sequence[StateMap]) -> dict[StateKey, set[str]]:
    """The keys the state sets do not all give the same event, with the events they give."""
    keys = {k for s in states for k in s}
    out: dict[StateKey, set[str]] = {}
    for key in keys:
        values = [s.get(key) for s in states]
        if len(set(values)) > 1:
            out[key] = {v for v in values if v is not None}
    return out


def _one_pdu_at_a_time(x: Explaining, events: Sequence[Event]) -> dict[StateKey, str]:
    state_after: dict[str, dict[StateKey, str]] = {}
    pending = list(events)
    while pending:
        ready = [e for e in pending if all(p in state_after for p in e.prev_event_ids)]
        assert ready
        for event in ready:
            before = x.resolve([state_after[p] for p in event.prev_event_ids])
            proposed = {**before, _key(event): event.event_id}
            state_after[event.event_id] = x.resolve([before, proposed])
        pending = [e for e in pending if e.event_id not in state_after]
    cited = {p for e in events for p in e.prev_event_ids}
    return x.resolve([state_after[e.event_id] for e in events if e.event_id not in cited])


def _in_batches(x: Explaining, batches: Sequence[Sequence[Event]]) -> dict[StateKey, str]:
    state: dict[StateKey, str] | None = None
    for batch in batches:
        states: list[StateMap] = [] if state is None else [state]
        states.extend({_key(e): e.event_id} for e in batch)
        state = x.resolve(states)
    assert state is not None
    return state


@pytest.mark.parametrize("way", ["one PDU at a time", "one file at a time", "all at once"])
@pytest.mark.parametrize("name", sorted(BATCH_CASES))
def test_every_conflicted_key_of_every_resolution_of_a_batch_case_is_explained(
    name: str, way: str
) -> None:
    batches = _load_batches(BATCH_CASES[name])
    events = [e for batch in batches for e in batch]
    x = Explaining(events)
    if way == "one PDU at a time":
        resolved = _one_pdu_at_a_time(x, events)
    else:
        resolved = _in_batches(x, batches if way == "one file at a time" else [events])
    assert resolved == _expected(name)
    assert x.keys


@pytest.mark.parametrize("name", sorted(STATE_MAP_CASES))
def test_every_conflicted_key_of_an_msc4297_case_is_explained(name: str) -> None:
    state_files, pdu_file = STATE_MAP_CASES[name]
    (events,) = _load_batches([pdu_file])
    x = Explaining(events)
    states: list[StateMap] = [
        {_key(x.by_id[i]): i for i in _load_json(_cases_dir() / "fixtures" / f"{f}.json")}
        for f in state_files
    ]
    assert x.resolve(states) == _expected(name)
    assert x.keys


# ------------------------------------------------------------------ hand-worked graphs

JOIN_RULES_RACE = (
    # Alice (100) and Bob (50) change the join rules on two branches, both allowed: power
    # events sort by descending sender power, so Bob's is applied last and wins.
    "join_rules_of_the_less_powerful_sender_is_applied_last",
    [
        power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
        Node("JA", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
        Node("JB", BOB, "m.room.join_rules", "", {"join_rule": "public"}),
    ],
    [["END", "JA", "PA", "START"], ["END", "JB", "PA"]],
    ["JB"],
)
PL = ("m.room.power_levels", "")
TOPIC = ("m.room.topic", "")
FAILED = "failed the iterative auth checks"
# For each graph, the keys its comment explains: (winner node or None, why, and the rule the
# losing candidate failed as room versions 2 and 10 number it, when one did).
HAND_WORKED: dict[str, dict[StateKey, tuple[str | None, str, tuple[str, str] | None]]] = {
    "ban_beats_power_levels_change_by_banned_user": {PL: ("PA", FAILED, ("6", "5"))},  # PB: banned
    "join_rule_change_rejects_concurrent_join": {
        ("m.room.member", EVELYN): (None, FAILED, ("5.2.6", "4.3.7")),  # private
        ("m.room.join_rules", ""): ("JR", "origin_server_ts tie-break", None),
    },
    "power_levels_chain_beats_its_own_ancestor": {PL: ("PC", "auth chain order", None)},
    "topic_of_demoted_user_loses": {
        PL: ("PA2", FAILED, ("8", "7")),  # Bob at 0 may not send power levels
        TOPIC: ("T2", FAILED, ("8", "7")),
    },
    "topic_reset_after_ban": {TOPIC: ("T1", FAILED, ("6", "5"))},  # T2's sender is banned
    "topic_after_merge_wins": {TOPIC: ("T4", "mainline position", None)},
    "mainline_ordering_prefers_topic_on_resolved_power_levels": {
        TOPIC: ("T3", "mainline position", None)
    },
    JOIN_RULES_RACE[0]: {("m.room.join_rules", ""): ("JB", "power ordering", None)},
}


@pytest.mark.parametrize(
    ("name", "nodes", "edges"),
    [(n, nodes, edges) for n, nodes, edges, _ in [*GRAPH_SCENARIOS, JOIN_RULES_RACE]],
    ids=[n for n, *_ in [*GRAPH_SCENARIOS, JOIN_RULES_RACE]],
)
@pytest.mark.parametrize("version", ["2", "10"])
def test_hand_worked_graphs_explain_each_key_by_the_step_that_decided_it(
    name: str, nodes: list[Node], edges: list[list[str]], version: str
) -> None:
    room = build_room(room_version(version), nodes, edges)
    end = room.events[event_id("END")]
    x = Explaining(list(room.events.values()))
    x.resolve([room.state_after[p] for p in end.prev_event_ids])
    explained = {tuple(c["key"]): c for c in x.keys}
    for key, (winner, why, rule) in HAND_WORKED[name].items():
        c = explained[key]
        assert (c["winner"], c["why"]) == (winner and event_id(winner), why), c
        if rule is not None:
            (failed,) = c["failed"]
            assert failed["rule"] == rule[0 if version == "2" else 1], c
