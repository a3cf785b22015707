"""State resolution against ruma's conformance cases (tests/conformance/ruma-state-res).

Batch cases are resolved three ways, which must agree with each other and with the expected
state: one PDU at a time (each against the resolved state after its prev_events), one file at a
time, and all PDUs at once. The MSC4297 cases resolve two given state maps, in room version 11
(state resolution v2) and 12 (v2.1), where the two algorithms disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.matrix.events import Event, StateKey, StateMap
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state

# Vendored with their licence and provenance (see the README there): the tests read nothing
# outside the checkout.
CASES_DIR = Path(__file__).parents[2] / "conformance" / "ruma-state-res"

BATCH_CASES: dict[str, list[str]] = {
    "minimal_private_chat": ["bootstrap-private-chat"],
    "minimal_public_chat": ["bootstrap-public-chat"],
    "origin_server_ts_tiebreak": ["bootstrap-private-chat", "origin-server-ts-tiebreak"],
    "ban_vs_power_levels": [
        "bootstrap-public-chat",
        "ban-vs-power-levels-alice",
        "ban-vs-power-levels-bob",
    ],
    "topic_vs_power_levels": [
        "bootstrap-public-chat",
        "topic-vs-power-levels-alice",
        "topic-vs-power-levels-bob",
    ],
    "power_levels_admin_vs_mod": [
        "bootstrap-public-chat",
        "power-levels-admin-vs-mod-alice",
        "power-levels-admin-vs-mod-bob",
    ],
    "topic_vs_ban": [
        "bootstrap-public-chat",
        "topic-vs-ban-common",
        "topic-vs-ban-alice",
        "topic-vs-ban-bob",
    ],
    "join_rules_vs_join": [
        "bootstrap-public-chat",
        "join-rules-vs-join-common",
        "join-rules-vs-join-alice",
        "join-rules-vs-join-ella",
    ],
    "concurrent_joins": [
        "bootstrap-public-chat",
        "concurrent-joins-charlie",
        "concurrent-joins-ella",
    ],
}

# expected -> (state map files, PDU file)
STATE_MAP_CASES: dict[str, tuple[list[str], str]] = {
    "msc4297_problem_a_state_res_v2_0": (
        ["MSC4297-problem-A/state-bob", "MSC4297-problem-A/state-charlie"],
        "MSC4297-problem-A/pdus-v11",
    ),
    "msc4297_problem_a_state_res_v2_1": (
        ["MSC4297-problem-A/state-bob", "MSC4297-problem-A/state-charlie"],
        "MSC4297-problem-A/pdus-v12",
    ),
    "msc4297_problem_b_state_res_v2_0": (
        ["MSC4297-problem-B/state-eve", "MSC4297-problem-B/state-zara"],
        "MSC4297-problem-B/pdus-v11",
    ),
    "msc4297_problem_b_state_res_v2_1": (
        ["MSC4297-problem-B/state-eve", "MSC4297-problem-B/state-zara"],
        "MSC4297-problem-B/pdus-v12",
    ),
}


def _cases_dir() -> Path:
    if not (CASES_DIR / "expected").is_dir():
        pytest.fail(
            f"state resolution conformance cases missing from {CASES_DIR}; restore them from git"
        )
    return CASES_DIR


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_batches(names: Iterable[str]) -> list[list[Event]]:
    """The PDU files as events, in the room version named by the first create event."""
    base = _cases_dir() / "fixtures"
    raw = [_load_json(base / f"{name}.json") for name in names]
    create = raw[0][0]
    assert create["type"] == "m.room.create", "the first PDU of a case is its create event"
    rv = room_version(create["content"]["room_version"])
    return [[Event.from_trusted(pdu, rv) for pdu in batch] for batch in raw]


def _expected(name: str) -> dict[StateKey, str]:
    rows = _load_json(_cases_dir() / "expected" / f"{name}.json")
    return {(row["type"], row["state_key"]): row["event_id"] for row in rows}


def _key(event: Event) -> StateKey:
    return event.state_tuple


def _resolve(rv: RoomVersion, events: Mapping[str, Event], states: Sequence[StateMap]) -> Any:
    return resolve_state(rv, states, events.get)


def resolve_one_pdu_at_a_time(events: Sequence[Event]) -> dict[StateKey, str]:
    """Each PDU against the state after its prev_events, then the leaves resolved together."""
    rv = events[0].room_version
    by_id = {e.event_id: e for e in events}
    state_after: dict[str, dict[StateKey, str]] = {}
    pending = list(events)
    while pending:
        ready = [e for e in pending if all(p in state_after for p in e.prev_event_ids)]
        assert ready, "every prev event of the case is in the case"
        for event in ready:
            before = _resolve(rv, by_id, [state_after[p] for p in event.prev_event_ids])
            proposed = {**before, _key(event): event.event_id}
            state_after[event.event_id] = _resolve(rv, by_id, [before, proposed])
        pending = [e for e in pending if e.event_id not in state_after]
    cited = {p for e in events for p in e.prev_event_ids}
    leaves = [state_after[e.event_id] for e in events if e.event_id not in cited]
    result: dict[StateKey, str] = _resolve(rv, by_id, leaves)
    return result


def resolve_in_batches(batches: Sequence[Sequence[Event]]) -> dict[StateKey, str]:
    """Each batch's PDUs, one single-entry state map each, resolved with the state so far."""
    rv = batches[0][0].room_version
    by_id: dict[str, Event] = {}
    state: dict[StateKey, str] | None = None
    for batch in batches:
        by_id.update((e.event_id, e) for e in batch)
        states: list[StateMap] = [] if state is None else [state]
        states.extend({_key(e): e.event_id} for e in batch)
        state = _resolve(rv, by_id, states)
    assert state is not None
    return state


@pytest.mark.parametrize("name", sorted(BATCH_CASES))
def test_batch_case_resolves_to_the_expected_state_three_ways(name: str) -> None:
    batches = _load_batches(BATCH_CASES[name])
    expected = _expected(name)
    all_events = [e for batch in batches for e in batch]

    assert resolve_one_pdu_at_a_time(all_events) == expected, "one PDU at a time"
    assert resolve_in_batches(batches) == expected, "one file at a time"
    assert resolve_in_batches([all_events]) == expected, "all at once"


@pytest.mark.parametrize("name", sorted(STATE_MAP_CASES))
def test_msc4297_state_maps_resolve_to_the_expected_state(name: str) -> None:
    state_files, pdu_file = STATE_MAP_CASES[name]
    (events,) = _load_batches([pdu_file])
    by_id = {e.event_id: e for e in events}
    states = [
        {_key(by_id[i]): i for i in _load_json(_cases_dir() / "fixtures" / f"{f}.json")}
        for f in state_files
    ]
    assert _resolve(events[0].room_version, by_id, states) == _expected(name)
