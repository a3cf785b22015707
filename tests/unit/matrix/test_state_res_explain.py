"""Every conflicted key of ruma's state resolution conformance cases is explained: the winner
the resolution chose, and why (power ordering, mainline position, an origin_server_ts or event
ID tie-break, the auth chain, or the other candidates failing the iterative auth checks)."""

from __future__ import annotations

import pytest

from pipeline.matrix.events import StateMap
from pipeline.matrix.explain import Recorder
from pipeline.matrix.state_res import resolve_state
from pipeline.room.explain import explain_resolutions
from tests.unit.matrix.test_state_res_conformance import (
    BATCH_CASES,
    STATE_MAP_CASES,
    _cases_dir,
    _expected,
    _key,
    _load_batches,
    _load_json,
)

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


@pytest.mark.parametrize("name", sorted(BATCH_CASES))
def test_every_conflicted_key_of_a_batch_case_has_a_winner_and_a_reason(name: str) -> None:
    batches = _load_batches(BATCH_CASES[name])
    events = [e for batch in batches for e in batch]
    by_id = {e.event_id: e for e in events}
    recorder = Recorder()
    results = []
    state: dict[tuple[str, str], str] | None = None
    for batch in batches:
        states: list[StateMap] = [] if state is None else [state]
        states.extend({_key(e): e.event_id} for e in batch)
        state = resolve_state(events[0].room_version, states, by_id.get, recorder=recorder)
        results.append(state)
    assert state == _expected(name)
    conflicts = _check(recorder, results)
    assert conflicts


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


@pytest.mark.parametrize("name", sorted(STATE_MAP_CASES))
def test_every_conflicted_key_of_the_msc4297_cases_has_a_winner_and_a_reason(name: str) -> None:
    state_files, pdu_file = STATE_MAP_CASES[name]
    (events,) = _load_batches([pdu_file])
    by_id = {e.event_id: e for e in events}
    states: list[StateMap] = [
        {_key(by_id[i]): i for i in _load_json(_cases_dir() / "fixtures" / f"{f}.json")}
        for f in state_files
    ]
    recorder = Recorder()
    resolved = resolve_state(events[0].room_version, states, by_id.get, recorder=recorder)
    assert resolved == _expected(name)
    assert _check(recorder, [resolved])
