"""Every rejection and soft-fail of the hostile inputs, replayed room by room through the
explainer (``pipeline.room.explain``, what ``roomstream explain`` and ``roomstream replay
--explain`` run), is explained by a named rule: the spec's, numbered as the event's room version
numbers it, with a reason and the auth events the rule read.

The rooms: the processor's room graphs (tests/unit/room/test_processor.py), the inputs of the
input policy that reach the rules (tests/unit/room/test_input_policy.py), a rejected create
event and second create events, the differential fuzzer's rooms (rogue senders, auth events from
an older state, evaders on stale branches, odd power levels and memberships) and the rooms pinned
from it (tests/oracle/rooms). The auth-rule tables of tests/unit/matrix explain each of their
rejections as they check it (``tests.unit.matrix.auth_fixtures.explained``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.matrix.explain import AUTH_RULES, spec_rule
from pipeline.matrix.room_versions import room_version
from pipeline.room.explain import Explained, explain
from tests.oracle.fuzz import GeneratedRoom, generate
from tests.unit.matrix.auth_fixtures import APPLIED_BEFORE_NUMBERED
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from tests.unit.room.test_explain import explained_case
from tests.unit.room.test_processor import Case, each_case

ROOT = Path(__file__).parents[3]
PINNED_ROOMS = sorted((ROOT / "tests" / "oracle" / "rooms").glob("*.jsonl"))
FUZZ_SEEDS = range(500)
CHECKS = {"auth events", "state before", "current state"}
NUMBERED = r"\d+(\.\d+)*"
RULE_OF_NAME = {name: rule for rule, name in AUTH_RULES.items()}


def explained_rules(explained: Explained, room_id: str) -> Counter[str]:
    """Check the explanation of every event of the room that was not accepted; count the rules."""
    room = explained.rooms[room_id]
    rv = room.processor.room_version
    assert rv is not None
    later_numbered = {spec_rule(r, rv) for r in APPLIED_BEFORE_NUMBERED}
    seen: Counter[str] = Counter()
    for event_id, record in room.events.items():
        if record.outcome == "accepted":
            continue
        ex = explained.event(event_id)
        where = f"{event_id} ({ex['type']} from {ex['sender']}, {ex['outcome']}): {ex}"
        assert ex["outcome"] == record.outcome, where
        rule, name = ex.get("rule"), ex.get("rule_name")
        # A named rule: one of the table, shown with what it asks.
        assert rule and name in RULE_OF_NAME, where
        if " of room version " in rule:
            assert rule in later_numbered, where
        else:
            assert _numbered(rule), where
        assert ex["reason"] and ex["reason"] != "unknown", where
        assert ex["check"] in CHECKS, where
        _check_cited(explained, room_id, event_id, ex, where)
        seen[RULE_OF_NAME[name]] += 1
    return seen


def _numbered(rule: str) -> bool:
    return re.fullmatch(NUMBERED, rule) is not None


def _check_cited(
    explained: Explained, room_id: str, event_id: str, ex: dict[str, Any], where: str
) -> None:
    """The cited auth events are events of the room with the keys they are cited under: the
    event's own auth events (v12: and the create event), or the state before it."""
    room = explained.rooms[room_id]
    cited: dict[str, str] = ex["auth_events"]
    pdu = room.events[event_id].pdu
    empty_before = ex["check"] == "state before" and not ex["state_before"]["state"]
    if pdu.get("type") != "m.room.create" and not empty_before:
        # Only a create event's own rules read nothing, and a check against an empty state
        # (of an event on a second create event that was rejected: the state before it).
        assert cited, where
    for key, cited_id in cited.items():
        cited_pdu = room.events[cited_id].pdu
        assert f"{cited_pdu['type']}|{cited_pdu.get('state_key')}" == key, where
    if ex["check"] == "auth events":
        own = {a if isinstance(a, str) else a[0] for a in pdu.get("auth_events", ())}
        if ex["room_version"] == "12":
            # The create event the room ID names is read as if it were one of them.
            own.add("$" + room_id[1:])
        assert set(cited.values()) <= own, where
    elif ex["check"] == "state before":
        before = {f"{t}|{k}": e for t, k, e in ex["state_before"]["state"]}
        assert all(before.get(k) == e for k, e in cited.items()), where


def _lines(b: RoomBuilder, names: Iterable[str]) -> list[bytes]:
    return [b.raw(n) for n in names]


# --- the processor's room graphs ------------------------------------------------------------


@each_case
def test_every_rejection_and_soft_fail_of_the_room_graphs_names_a_rule_and_its_auth_events(
    case: Case, version: str
) -> None:
    b, explained = explained_case(case, version)
    seen = explained_rules(explained, b.room_id)
    assert sum(seen.values()) == sum(1 for o in case.outcomes.values() if o != "accepted")


# --- the input policy and create events -----------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_membership_with_nul_is_rejected_as_an_unknown_membership(version: str) -> None:
    b = RoomBuilder(version)
    names = b.base()
    b.add("BAD", "m.room.member", BOB, {"membership": "jo\x00in"}, state_key=BOB)
    explained = explain(_lines(b, [*names, "BAD"]))
    assert explained_rules(explained, b.room_id) == {"5.8": 1}
    # v1–v5 number the unknown membership 5.6, v8–v11 4.8, v12 5.8.
    assert explained.event(b.ids["BAD"])["rule"] == {"1": "5.6", "10": "4.8", "12": "5.8"}[version]


@pytest.mark.parametrize("version", [str(v) for v in range(1, 12)])
def test_a_second_create_event_on_prev_events_fails_rule_1_1(version: str) -> None:
    b = RoomBuilder(version)
    names = b.base()
    b.add("C2", "m.room.create", ALICE, {"creator": ALICE, "room_version": version}, state_key="")
    explained = explain(_lines(b, [*names, "C2"]))
    assert explained_rules(explained, b.room_id) == {"1.1": 1}
    assert explained.event(b.ids["C2"])["check"] == "auth events"


@pytest.mark.parametrize("version", [str(v) for v in range(1, 12)])
def test_a_second_create_event_the_rules_allow_is_accepted(version: str) -> None:
    # No rule rejects it and Synapse accepts it (docs/synapse-parity.md, point 8): another
    # forward extremity, whose state holds it alone.
    b = RoomBuilder(version)
    names = b.base()
    b.create("C2")
    explained = explain(_lines(b, [*names, "C2"]))
    assert explained_rules(explained, b.room_id) == {}
    ex = explained.event(b.ids["C2"])
    assert ex["outcome"] == "accepted"
    assert b.ids["C2"] in explained.rooms[b.room_id].processor.forward_extremities


def test_a_second_create_event_from_another_server_fails_rule_1_2() -> None:
    b = RoomBuilder("10")
    names = b.base()
    b.create("C2", creator=BOB)  # the room ID is on Alice's server
    explained = explain(_lines(b, [*names, "C2"]))
    assert explained_rules(explained, b.room_id) == {"1.2": 1}


def test_events_of_a_room_whose_create_event_was_rejected_name_the_rejected_auth_event() -> None:
    b = RoomBuilder(room_id="!room:elsewhere.example")
    names = b.base()
    explained = explain(_lines(b, names))
    seen = explained_rules(explained, b.room_id)
    # The create event fails 1.2; every event after cites it, a rejected auth event (v10: 2.3).
    assert seen == {"1.2": 1, "3.3": len(names) - 1}
    assert explained.event(b.ids["MA"])["rule"] == "2.3"


# --- the fuzzer's rooms ---------------------------------------------------------------------


def _explain_generated(gen: GeneratedRoom) -> Counter[str]:
    explained = explain(orjson.dumps(e.pdu) for e in gen.arrivals)
    return explained_rules(explained, gen.room_id)


def test_every_rejection_and_soft_fail_of_the_fuzzers_rooms_names_a_rule_and_its_auth_events() -> (
    None
):
    seen: Counter[str] = Counter()
    versions: set[str] = set()
    for seed in FUZZ_SEEDS:
        gen = generate(seed)
        versions.add(gen.version)
        seen += _explain_generated(gen)
    # The rooms reach every room version and the rules rogue senders break most.
    assert versions == {str(v) for v in range(1, 13)}
    assert {"3.3", "6", "8", "5.5.1", "5.6.3", "5.8", "1.1"} <= set(seen), seen


@pytest.mark.parametrize("path", PINNED_ROOMS, ids=[p.stem for p in PINNED_ROOMS])
def test_every_rejection_and_soft_fail_of_the_pinned_fuzzer_rooms_is_explained(
    path: Path,
) -> None:
    gen = GeneratedRoom.load(path)
    _explain_generated(gen)


def test_every_rule_of_the_table_is_the_specs_or_roomstreams_own_and_documented() -> None:
    parity = (ROOT / "docs" / "synapse-parity.md").read_text(encoding="utf-8")
    for rule in AUTH_RULES:
        if rule.startswith("roomstream:"):
            assert f"`{rule}`" in parity, rule
            continue
        numbered = {spec_rule(rule, room_version(str(v))) for v in range(1, 13)}
        assert any(_numbered(n) for n in numbered), rule
