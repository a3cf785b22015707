"""Explanations (pipeline.room.explain) of the room graphs the processor tests decide: every
rejection and soft-fail names the rule that decided it, numbered as its room version numbers
the authorization rules; parked and dead-lettered events say what they wait for or why."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import orjson
import pytest

from pipeline.cli import main as cli_main
from pipeline.matrix.explain import Note, Recorder, spec_rule
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.state_res import v2 as state_res_v2
from pipeline.room import processor as processor_module
from pipeline.room.explain import Explained, explain, render_event, render_room
from pipeline.room.processor import RoomProcessor
from tests.oracle.fuzz import generate
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder
from tests.unit.room.test_processor import (
    CASES,
    Case,
    each_case,
    fork_and_merge,
    rejected_events,
    soft_failed_after_ban,
)

ROOT = Path(__file__).parents[3]


def _lines(b: RoomBuilder, batches: list[list[str]]) -> list[bytes]:
    return [b.raw(n) for batch in batches for n in batch]


def explained_case(case: Case, version: str) -> tuple[RoomBuilder, Explained]:
    """The case's room in ``version``, and the explanation of its events fed in one batch."""
    b, batches = case.built(version)
    return b, explain(_lines(b, batches))


@each_case
def test_every_rejection_and_soft_fail_of_the_room_graphs_is_explained_by_its_rule(
    case: Case, version: str
) -> None:
    b, explained = explained_case(case, version)
    for name, outcome in case.outcomes.items():
        ex = explained.event(b.ids[name])
        assert ex["outcome"] == outcome.replace("_", "-"), (name, ex)
        if outcome != "accepted":
            assert ex["rule"], (name, ex)
            assert ex["reason"], (name, ex)
            assert ex["check"] in ("auth events", "state before", "current state")
        render_event(ex)  # draws without failing


@pytest.mark.parametrize(
    ("version", "not_joined", "power"),
    # v12 numbering: 6 sender not joined, 8 the event type's required level; v1–v5 number them
    # the same, v6–v11 one less.
    [("3", "6", "8"), ("10", "5", "7"), ("12", "6", "8")],
)
def test_rejections_cite_rule_6_sender_not_joined_and_rule_8_required_power_level(
    version: str, not_joined: str, power: str
) -> None:
    b = RoomBuilder(version)
    explained = explain(_lines(b, rejected_events(b)))
    r, rt = explained.event(b.ids["R"]), explained.event(b.ids["RT"])
    assert (r["rule"], rt["rule"]) == (not_joined, power)
    assert "requires 50" in rt["reason"]
    assert rt["auth_events"]["m.room.power_levels|"] == b.ids["PL"]


@pytest.mark.parametrize(
    ("rule", "version", "numbered"),
    # Worked from the rules as each room version's page lists them.
    [
        ("1.1", "1", "1.1"),
        ("3.1", "5", "2.1"),  # auth events: rule 2 before v12
        ("4", "5", "3"),  # m.federate
        ("4", "11", "3"),
        ("aliases.2", "5", "4.2"),
        ("5.3.2", "5", "5.2.2"),  # v1–v7 have no 5.2 (join authorised via a user): join is 5.2
        ("5.3.2", "6", "4.2.2"),
        ("5.3.2", "8", "4.3.2"),  # v8–v11: numbered as v12, one less at the top
        ("5.3.7", "3", "5.2.6"),  # no restricted join rule (5.3.5) before v8
        ("5.3.7", "10", "4.3.7"),
        ("5.5.5", "7", "4.4.5"),  # leave: 5.5 in v12, 5.4 before v8
        ("5.7.1", "7", "4.6.1"),  # knock: 4.6 in v7
        ("5.7.1", "9", "4.7.1"),
        ("5.7.1", "6", "4.6.1 of room version 7"),
        ("5.8", "6", "4.6"),  # unknown membership: after ban (v1–v6), knock (v7), v8's 4.8
        ("5.8", "7", "4.7"),
        ("5.8", "11", "4.8"),
        ("5.2", "7", "4.2 of room version 8"),
        ("6", "3", "6"),
        ("6", "10", "5"),
        ("8", "11", "7"),
        ("10.3", "5", "10.1"),  # power levels: v1–v9 shape only users (their 1)
        ("10.3", "9", "9.1"),
        ("10.3", "10", "9.3"),
        ("10.6", "2", "10.3"),
        ("10.9", "9", "9.6"),
        ("10.9", "11", "9.8"),  # v12 inserted 10.4 (room creators)
        ("10.9", "12", "10.9"),
        ("10.10", "10", "9.9"),
        ("10.1", "8", "9.1 of room version 10"),
        ("10.4", "11", "10.4 of room version 12"),
        ("3.5", "10", "3.5 of room version 12"),
        ("2", "12", "2"),
        ("redaction", "1", "11.3"),
        ("roomstream:rejected-before", "10", "roomstream:rejected-before"),
    ],
)
def test_spec_rule_numbers_a_rule_as_its_room_version_does(
    rule: str, version: str, numbered: str
) -> None:
    assert spec_rule(rule, room_version(version)) == numbered


def test_every_event_rejected_raised_by_the_rules_names_its_rule() -> None:
    lacking: list[str] = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "EventRejected"
                and not any(k.arg == "rule" for k in node.keywords)
            ):
                lacking.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert lacking == []


def test_soft_failed_event_names_the_rule_against_current_state_and_the_room_its_extremities() -> (
    None
):
    b = RoomBuilder("10")
    explained = explain(_lines(b, soft_failed_after_ban(b)))
    s1 = explained.event(b.ids["S1"])
    assert s1["outcome"] == "soft-failed"
    assert s1["check"] == "current state"
    assert s1["rule"] == "5"  # v10: sender not joined (banned) is rule 5
    assert s1["auth_events"][f"m.room.member|{BOB}"] == b.ids["BAN"]
    room = explained.room(b.room_id)
    assert [f["event_id"] for f in room["forward_extremities"]] == [b.ids["E"]]
    assert {n["event_id"] for n in room["not_accepted"]} == {b.ids["S1"], b.ids["S2"]}
    assert b.ids["S2"] in room["forward_extremities"][0]["walked"]
    render_room(room)


def test_an_extremity_left_behind_names_the_events_that_built_on_it_without_being_accepted() -> (
    None
):
    b = RoomBuilder("10")
    b.base()
    b.add("BAN", "m.room.member", ALICE, {"membership": "ban"}, state_key=BOB, prev=["MB"])
    b.message("Y", BOB, prev=["MB"])  # on a branch that does not see the ban: soft-failed
    explained = explain(_lines(b, [["C", "MA", "PL", "JR", "MB", "BAN", "Y"]]))
    room = explained.room(b.room_id)
    assert [f["event_id"] for f in room["forward_extremities"]] == [b.ids["BAN"]]


def test_state_before_a_merge_names_the_resolution_and_each_conflicted_key() -> None:
    b = RoomBuilder("10")
    explained = explain(_lines(b, fork_and_merge(b)))
    sb = explained.event(b.ids["X"])["state_before"]
    assert sb["from"].startswith("state resolution")
    keys = {tuple(c["key"]): c for c in sb["resolution"]["conflicted"]}
    assert keys[("m.room.topic", "")]["winner"] == b.ids["TA"]
    assert all(c["why"] for c in keys.values())


def test_parked_and_dead_lettered_events_say_what_they_wait_for_and_why() -> None:
    b = RoomBuilder("10")
    b.base()
    b.message("M1", BOB)
    b.message("M2", BOB)
    lines = [*_lines(b, [["C", "MA", "PL", "JR", "MB", "M2"]]), b"[1, 2]"]
    other = dict(orjson.loads(b.raw("M1")))
    other["room_id"] = b.room_id
    other["depth"] = "deep"
    lines.append(orjson.dumps(other))
    explained = explain(lines)
    m2 = explained.event(b.ids["M2"])
    assert m2["outcome"] == "parked" and m2["waits_for"] == [b.ids["M1"]]
    room = explained.room(b.room_id)
    assert room["dead_lettered"] and room["dead_lettered"][0]["reason"]


def test_a_recorder_changes_no_decision() -> None:
    b = RoomBuilder("10")
    raws = _lines(b, soft_failed_after_ban(b))
    plain, recorded = RoomProcessor(b.room_id), RoomProcessor(b.room_id, recorder=Recorder())
    assert [plain.process([r]).chunks for r in raws] == [recorded.process([r]).chunks for r in raws]


def test_replay_explain_prints_a_tree_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = RoomBuilder("10")
    f = tmp_path / "room.jsonl"
    f.write_bytes(b"\n".join(_lines(b, rejected_events(b))) + b"\n")
    assert cli_main(["replay", str(f), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "rule 7" in text and "not accepted: 2" in text
    assert cli_main(["replay", str(f), "--explain", "--event", b.ids["RT"], "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["outcome"] == "rejected" and out["rule"] == "7"


def test_a_state_reset_names_the_resolution_and_the_rule_that_dropped_the_key() -> None:
    # Carol joins a public room on one branch; on another, Alice makes it invite-only. Once
    # both branches are forward extremities, the current state is their resolution, in which
    # Carol's join fails against the invite-only join rules (v10 numbering: 4.3.4).
    b = RoomBuilder("10")
    b.base()
    b.member("MC", CAROL, prev=["MB"])
    b.join_rules("JR2", "invite", prev=["MB"])
    explained = explain(_lines(b, [["C", "MA", "PL", "JR", "MB", "MC", "JR2"]]))
    assert explained.event(b.ids["MC"])["outcome"] == "accepted"
    room = explained.room(b.room_id)
    (reset,) = room["state_resets"]
    assert reset["key"] == ["m.room.member", CAROL]
    assert (reset["kind"], reset["from"], reset["to"]) == ("removed", b.ids["MC"], None)
    assert reset["after_event"] == b.ids["JR2"]
    assert reset["resolution"]["why"] == "failed the iterative auth checks"
    assert reset["resolution"]["failed"][0]["rule"] == "4.3.4"
    assert "candidate state resets): 1" in render_room(room)


def test_room_version_1_resolution_names_each_conflicted_key_and_its_ordering() -> None:
    b = RoomBuilder("1")
    b.base()
    b.topic("TA", ALICE, "one branch", prev=["MB"])
    b.topic("TB", ALICE, "the other", prev=["MB"])
    b.message("X", ALICE, prev=["TA", "TB"])
    explained = explain(_lines(b, [["C", "MA", "PL", "JR", "MB", "TA", "TB", "X"]]))
    before = explained.event(b.ids["X"])["state_before"]
    resolution = before["resolution"]
    assert resolution["algorithm"] == "v1"
    (topic,) = resolution["conflicted"]
    assert topic["key"] == ["m.room.topic", ""]
    assert [topic["winner"]] == [e for t, _, e in before["state"] if t == "m.room.topic"]
    assert topic["why"] == "room version 1 ordering"


def _hostile_raws() -> list[tuple[str, list[bytes]]]:
    """Rooms whose deciding passes every hook: rejections, soft-fails, resolutions."""
    rooms = []
    for case in CASES:
        for version in case.versions:
            b = RoomBuilder(version)
            rooms.append((b.room_id, _lines(b, case.build(b))))
    for seed in range(100):
        gen = generate(seed)
        rooms.append((gen.room_id, [orjson.dumps(e.pdu) for e in gen.arrivals]))
    return rooms


def _refuse_records(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decision record was made without a recorder")

    monkeypatch.setattr(Recorder, "__init__", refuse)
    monkeypatch.setattr(Recorder, "note", refuse)
    monkeypatch.setattr(Recorder, "begin", refuse)
    monkeypatch.setattr(Note, "__init__", refuse)
    monkeypatch.setattr(state_res_v2, "_note_check", refuse)
    for name in ("rejection_record", "cited_auth_events", "auth_events_read"):
        monkeypatch.setattr(processor_module, name, refuse)
    monkeypatch.setattr(RoomProcessor, "_read", refuse)


def test_without_a_recorder_deciding_makes_no_record_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The workers' processors have no recorder: every hook is one `is not None` test, and none
    # of what an explanation is built from is made.
    rooms = _hostile_raws()
    kinds: Counter[str] = Counter()
    for room_id, raws in rooms:
        recorder = Recorder()
        RoomProcessor(room_id, recorder=recorder).process(raws)
        kinds.update(n.kind for n in recorder.notes)
    # With a recorder these rooms pass every hook.
    assert set(kinds) == {
        "state_before",
        "rejected",
        "soft_failed",
        "resolution",
        "power_order",
        "auth_check",
        "mainline_order",
        "resolved",
        "resolved_v1",
    }

    _refuse_records(monkeypatch)
    for room_id, raws in rooms:
        result = RoomProcessor(room_id).process(raws)
        # A failure inside deciding is dead-lettered, not raised: none may be a hook's.
        assert not [d for d in result.dead_letters if "without a recorder" in d.reason]
    # The control: with a recorder, the refused hooks are reached.
    result = RoomProcessor(rooms[0][0], recorder=recorder).process(rooms[0][1])
    assert any("without a recorder" in d.reason for d in result.dead_letters)


def test_only_the_explainer_attaches_a_recorder() -> None:
    # The product's processes build processors and resolve state without one.
    attaching: list[str] = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                named = node.func.id == "Recorder" or any(
                    k.arg == "recorder"
                    and not (isinstance(k.value, ast.Name) and k.value.id == "recorder")
                    and not (isinstance(k.value, ast.Attribute) and k.value.attr == "recorder")
                    for k in node.keywords
                )
                if named:
                    attaching.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert attaching and all(a.startswith("pipeline/room/explain.py:") for a in attaching), (
        attaching
    )
