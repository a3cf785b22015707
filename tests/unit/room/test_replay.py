"""``replay``: PDU lines of several rooms in, DESIGN.md's replay JSON out; and room routing."""

from __future__ import annotations

import orjson
import pytest

from pipeline.room.replay import replay
from pipeline.room.routing import room_id_of
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder


def _rooms() -> tuple[RoomBuilder, RoomBuilder, list[bytes]]:
    one = RoomBuilder(room_id="!one:a.example")
    one.base()
    one.message("Y", BOB, prev=["MB"])
    one.add("BAN", "m.room.member", ALICE, {"membership": "ban"}, state_key=BOB, prev=["MB"])
    one.message("S", BOB, prev=["Y"])
    one.message("R", CAROL, prev=["MB"])
    two = RoomBuilder("12")
    two.base()
    two.message("M1", BOB)
    two.message("M2", BOB)
    lines = [
        *one.raws(["C", "MA", "PL", "JR"]),
        *two.raws(["C", "MA"]),
        b"",
        b"{not json",
        *one.raws(["MB", "Y", "BAN", "S", "R"]),
        *two.raws(["PL", "JR", "MB", "M2"]),
        orjson.dumps({"type": "m.room.message", "sender": BOB}),
    ]
    return one, two, lines


def test_replay_output_has_the_designed_shape() -> None:
    one, two, lines = _rooms()
    out = replay(lines)
    assert set(out) == {"rooms", "dead_letter"}
    assert list(out["rooms"]) == sorted([one.room_id, two.room_id])
    assert out["dead_letter"] == [
        {"line": 8, "reason": "the line is not a JSON object"},
        {
            "line": 18,
            "reason": "the PDU has no room_id and is not a create event to derive one from",
        },
    ]

    r1 = out["rooms"][one.room_id]
    assert set(r1) == {
        "room_version",
        "current_state",
        "forward_extremities",
        "rejected",
        "soft_failed",
    }
    assert r1["room_version"] == "10"
    assert r1["current_state"] == sorted(r1["current_state"])
    assert [one.name_of(e) for t, k, e in r1["current_state"] if k == BOB] == ["BAN"]
    assert [one.name_of(e) for e in r1["forward_extremities"]] == sorted(
        ["Y", "BAN"], key=lambda n: one.ids[n]
    )
    assert {one.name_of(e) for e in r1["rejected"]} == {"R"}
    assert "not joined" in r1["rejected"][one.ids["R"]]
    assert r1["soft_failed"] == [one.ids["S"]]

    r2 = out["rooms"][two.room_id]
    assert r2["room_version"] == "12"
    assert r2["parked"] == [two.ids["M2"]]
    assert r2["rejected"] == {} and r2["soft_failed"] == []
    assert orjson.loads(orjson.dumps(out)) == out


def test_replay_state_after_lists_every_event_not_rejected() -> None:
    one, _, lines = _rooms()
    out = replay(lines, state_after=True)
    r1 = out["rooms"][one.room_id]
    expected = {one.ids[n] for n in ["C", "MA", "PL", "JR", "MB", "Y", "BAN", "S"]}
    assert set(r1["state_after"]) == expected
    assert list(r1["state_after"]) == sorted(expected)
    assert r1["state_after"][one.ids["C"]] == [["m.room.create", "", one.ids["C"]]]
    after_s = {(t, k): one.name_of(e) for t, k, e in r1["state_after"][one.ids["S"]]}
    assert after_s[("m.room.member", BOB)] == "MB"
    assert "state_after" not in replay(lines)["rooms"][one.room_id]


def test_replay_lists_input_parked_before_its_room_version_by_line() -> None:
    b = RoomBuilder()
    b.base()
    out = replay([b.raw("MA")])
    assert out["rooms"][b.room_id] == {
        "room_version": None,
        "current_state": [],
        "forward_extremities": [],
        "rejected": {},
        "soft_failed": [],
        "parked": ["line 1"],
    }


@pytest.mark.parametrize(
    ("version", "derived"), [("10", False), ("12", True)], ids=["room_id field", "v12 create"]
)
def test_room_id_of_routes_create_events_of_every_version(version: str, derived: bool) -> None:
    b = RoomBuilder(version)
    b.create()
    b.member("MA", ALICE)
    assert room_id_of(b.raw("C")) == b.room_id
    assert room_id_of(b.raw("MA")) == b.room_id
    assert room_id_of(b.pdus["C"]) == b.room_id
    assert b.room_id.startswith("!" + b.ids["C"][1:]) is derived


@pytest.mark.parametrize("raw", [b"", b"nope", b"[]", b'{"type": "m.room.message"}'])
def test_room_id_of_is_none_for_input_it_cannot_route(raw: bytes) -> None:
    assert room_id_of(raw) is None
