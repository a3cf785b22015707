"""The room processor over real PDUs, the real authorization rules and state resolution.

Each case is a small room graph (tests/unit/room/builder.py) fed in arrival order, with the
outcome of every event, the forward extremities and the current state written out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
import pytest

from pipeline.matrix.events import StateKey
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import (
    BatchResult,
    Incoming,
    ProcessorConfig,
    RoomProcessor,
)
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder
from topics import chunk as chunk_codec

TOPIC: StateKey = ("m.room.topic", "")
PL: StateKey = ("m.room.power_levels", "")


def run(
    b: RoomBuilder,
    batches: Sequence[Sequence[str]],
    config: ProcessorConfig | None = None,
) -> tuple[RoomProcessor, list[BatchResult]]:
    proc = RoomProcessor(b.room_id, config=config)
    return proc, [proc.process(b.raws(list(batch))) for batch in batches]


def outcomes(b: RoomBuilder, results: Sequence[BatchResult]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in results:
        for e in r.chunk.events if r.chunk else ():
            name = b.name_of(e.event_id)
            assert name not in out, f"{name} processed twice"
            out[name] = "rejected" if e.rejected else "soft_failed" if e.soft_failed else "accepted"
    return out


def groups_of(b: RoomBuilder, results: Sequence[BatchResult]) -> dict[str, int | None]:
    return {
        b.name_of(e.event_id): e.state_group
        for r in results
        for e in (r.chunk.events if r.chunk else ())
    }


# ------------------------------------------------------------------ the room graphs


def linear(b: RoomBuilder) -> list[list[str]]:
    b.base()
    b.message("M1", BOB)
    b.topic("T1", ALICE, "hello")
    b.message("M2", ALICE)
    return [["C", "MA", "PL", "JR", "MB", "M1", "T1", "M2"]]


def fork_and_merge(b: RoomBuilder) -> list[list[str]]:
    # Alice's server and Bob's server each extend MB, then Bob's server merges both branches.
    b.base()
    b.topic("TA", ALICE, "from a.example", prev=["MB"])
    b.member("MC", CAROL, prev=["MB"])
    b.message("X", BOB, prev=["TA", "MC"])
    return [["C", "MA", "PL", "JR", "MB"], ["TA", "MC"], ["X"]]


def rejected_events(b: RoomBuilder) -> list[list[str]]:
    b.base()
    # 8. If the sender's current membership state is not join, reject.
    b.message("R", CAROL, prev=["MB"])
    # 9. If type is m.room.topic and the sender's power level is below the required 50: reject.
    b.topic("RT", BOB, "bob may not", prev=["MB"])
    return [["C", "MA", "PL", "JR", "MB", "R", "RT"]]


def bob_banned_on_a_fork(b: RoomBuilder) -> None:
    """The base room, then Bob's message Y and Alice's ban of Bob, both on MB."""
    b.base()
    b.message("Y", BOB, prev=["MB"])
    b.add("BAN", "m.room.member", ALICE, {"membership": "ban"}, state_key=BOB, prev=["MB"])


def soft_failed_after_ban(b: RoomBuilder) -> list[list[str]]:
    # Bob keeps building on a branch that does not see his ban: the events pass against the
    # state before them but fail against the room's current state.
    bob_banned_on_a_fork(b)
    b.message("S1", BOB, prev=["Y"])
    b.message("S2", BOB, prev=["S1"])
    b.message("E", ALICE, prev=["S2", "BAN"])
    return [["C", "MA", "PL", "JR", "MB", "Y", "BAN", "S1", "S2"], ["E"]]


def rejected_chain(b: RoomBuilder) -> list[list[str]]:
    bob_banned_on_a_fork(b)
    b.message("R", CAROL, prev=["Y"])
    b.message("E", ALICE, prev=["R", "BAN"])
    return [["C", "MA", "PL", "JR", "MB", "Y", "BAN", "R", "E"]]


def soft_failed_state_event(b: RoomBuilder) -> list[list[str]]:
    b.base()
    b.power_levels("PL2", {ALICE: 100, BOB: 50}, prev=["MB"])
    b.topic("TB", BOB, "bob's topic", prev=["PL2"])
    b.power_levels("PL3", {ALICE: 100}, prev=["TB"])
    b.topic("TB2", BOB, "too late", prev=["TB"])
    return [["C", "MA", "PL", "JR", "MB", "PL2", "TB", "PL3", "TB2"]]


def create_last_in_batch(b: RoomBuilder) -> list[list[str]]:
    b.base()
    return [["MB", "MA", "JR", "PL", "C"]]


def prev_event_late(b: RoomBuilder) -> list[list[str]]:
    b.base()
    b.message("M1", BOB)
    b.message("M2", ALICE)
    b.message("M3", BOB)
    return [["C", "MA", "PL", "JR", "MB"], ["M3", "M2"], ["M1"]]


def v12_room(b: RoomBuilder) -> list[list[str]]:
    b.base()
    b.message("M1", BOB)
    b.message("R", CAROL, prev=["MB"])
    return [["C", "MA", "PL", "JR", "MB"], ["M1", "R"]]


@dataclass
class Case:
    name: str
    build: Callable[[RoomBuilder], list[list[str]]]
    outcomes: dict[str, str]
    extremities: set[str]
    state: dict[StateKey, str] = field(default_factory=dict)  # a subset of the current state
    same_group: list[tuple[str, str]] = field(default_factory=list)
    # v1: event IDs are fields, state resolution v1; v3: hashed IDs, v2; v10: integer levels.
    versions: tuple[str, ...] = ("1", "3", "10")

    def built(self, version: str) -> tuple[RoomBuilder, list[list[str]]]:
        """The case's room in ``version``, and the batches its events arrive in (by name)."""
        b = RoomBuilder(version)
        return b, self.build(b)


BASE_OK = {n: "accepted" for n in ("C", "MA", "PL", "JR", "MB")}

CASES = [
    Case(
        "linear room: each event builds on the one before",
        linear,
        {**BASE_OK, "M1": "accepted", "T1": "accepted", "M2": "accepted"},
        {"M2"},
        {TOPIC: "T1", ("m.room.member", BOB): "MB"},
        [("M1", "MB"), ("M2", "T1")],
    ),
    Case(
        "fork and merge: two servers extend MB, a merge resolves both branches",
        fork_and_merge,
        {**BASE_OK, "TA": "accepted", "MC": "accepted", "X": "accepted"},
        {"X"},
        {TOPIC: "TA", ("m.room.member", CAROL): "MC"},
    ),
    Case(
        "rejected events map to the state group before them and change nothing",
        rejected_events,
        {**BASE_OK, "R": "rejected", "RT": "rejected"},
        {"MB"},
        {("m.room.member", BOB): "MB"},
        [("R", "MB"), ("RT", "MB")],
    ),
    Case(
        "soft-failed events are stored with a state group but leave the extremities alone;"
        " a later event clears the extremities they hid",
        soft_failed_after_ban,
        {**BASE_OK, "Y": "accepted", "BAN": "accepted", "S1": "soft_failed", "S2": "soft_failed"}
        | {"E": "accepted"},
        {"E"},
        {("m.room.member", BOB): "BAN"},
        [("S1", "MB"), ("S2", "MB"), ("E", "BAN")],
    ),
    Case(
        "a later event clears the extremities hidden behind a rejected event",
        rejected_chain,
        {**BASE_OK, "Y": "accepted", "BAN": "accepted", "R": "rejected", "E": "accepted"},
        {"E"},
        {("m.room.member", BOB): "BAN"},
        [("R", "MB")],
    ),
    Case(
        "a soft-failed state event has its own state group but stays out of current state",
        soft_failed_state_event,
        {**BASE_OK, "PL2": "accepted", "TB": "accepted", "PL3": "accepted"}
        | {"TB2": "soft_failed"},
        {"PL3"},
        {TOPIC: "TB", PL: "PL3"},
    ),
    Case(
        "create event last in the batch: everything waits for it and follows it",
        create_last_in_batch,
        BASE_OK,
        {"MB"},
        {("m.room.member", BOB): "MB"},
    ),
    Case(
        "events wait for their prev events and follow them in arrival order",
        prev_event_late,
        {**BASE_OK, "M1": "accepted", "M2": "accepted", "M3": "accepted"},
        {"M3"},
        same_group=[("M3", "MB")],
    ),
    Case(
        "room version 12: the room ID derives from the create event",
        v12_room,
        {**BASE_OK, "M1": "accepted", "R": "rejected"},
        {"M1"},
        {("m.room.member", ALICE): "MA"},
        versions=("12",),
    ),
]


# Every case in each of its room versions.
each_case = pytest.mark.parametrize(
    ("case", "version"),
    [(c, v) for c in CASES for v in c.versions],
    ids=[f"{c.name} (v{v})" for c in CASES for v in c.versions],
)


@each_case
def test_room_graph(case: Case, version: str) -> None:
    b, batches = case.built(version)
    proc, results = run(b, batches)
    assert outcomes(b, results) == case.outcomes
    assert {b.name_of(e) for e in proc.forward_extremities} == case.extremities
    current = b.state_names(proc.current_state)
    assert {k: current.get(k) for k in case.state} == case.state
    groups = groups_of(b, results)
    for one, other in case.same_group:
        assert groups[one] == groups[other], f"{one} and {other} should share a state group"
    assert all(not r.dead_letters for r in results)
    assert proc.parked() == []


def test_fork_and_merge_makes_a_state_group_for_the_resolved_state_before_the_merge() -> None:
    b = RoomBuilder()
    proc, results = run(b, fork_and_merge(b))
    groups = groups_of(b, results)
    assert groups["X"] not in (groups["TA"], groups["MC"])
    state = b.state_names(proc.state_of_group(groups["X"]))
    assert state[TOPIC] == "TA" and state[("m.room.member", CAROL)] == "MC"
    merge_chunk = results[2].chunk
    assert merge_chunk is not None
    (made,) = merge_chunk.state_groups
    assert made.id == groups["X"] and made.prev_group in (groups["TA"], groups["MC"])
    assert len(made.delta) == 1  # only the other branch's change
    # While the room was forked, the current state was already the resolution of both.
    fork_chunk = results[1].chunk
    assert fork_chunk is not None
    assert {b.name_of(e) for e in fork_chunk.forward_extremities_added} == {"TA", "MC"}
    assert {b.name_of(e) for e in fork_chunk.forward_extremities_removed} == {"MB"}
    assert {(r.type, r.state_key) for r in fork_chunk.current_state_set} == {
        TOPIC,
        ("m.room.member", CAROL),
    }


def test_soft_failed_state_event_group_holds_the_event_itself() -> None:
    b = RoomBuilder()
    proc, results = run(b, soft_failed_state_event(b))
    state = b.state_names(proc.state_of_group(groups_of(b, results)["TB2"]))
    assert state[TOPIC] == "TB2"


def test_chunk_carries_every_change_of_the_batch() -> None:
    b = RoomBuilder()
    b.base()
    # Before v11 "redacts" is a top-level key.
    b.add("RED", "m.room.redaction", ALICE, {}, prev=["MB"], extra={"redacts": "$gone"})
    b.member("LB", BOB, "leave")
    _, (first, second) = run(b, [["C", "MA", "PL", "JR", "MB"], ["RED", "LB"]])
    chunk = first.chunk
    assert chunk is not None
    # The id names the room's last event sequence number in the chunk.
    assert chunk.chunk_id == f"{b.room_id}/5" and chunk.room_version == "10"
    assert chunk.seq == (1, 5) and chunk.inputs == (1, 5)
    assert chunk.digest == chunk.compute_digest() != ""
    assert chunk.creator == ALICE
    assert [b.name_of(e.event_id) for e in chunk.events] == ["C", "MA", "PL", "JR", "MB"]
    assert all(
        e.format_version == 3 and e.pdu == b.pdus[b.name_of(e.event_id)] for e in chunk.events
    )
    assert len(chunk.state_groups) == 5
    assert chunk.state_groups[0].prev_group is None
    assert [g.prev_group for g in chunk.state_groups[1:]] == [g.id for g in chunk.state_groups[:-1]]
    assert [(b.name_of(m.event_id), m.user_id, m.membership) for m in chunk.memberships] == [
        ("MA", ALICE, "join"),
        ("MB", BOB, "join"),
    ]
    rows = {
        (r.type, r.state_key): (b.name_of(r.event_id), r.membership)
        for r in chunk.current_state_set
    }
    assert rows[("m.room.member", BOB)] == ("MB", "join")
    assert rows[PL] == ("PL", None)
    assert [b.name_of(e) for e in chunk.forward_extremities_added] == ["MB"]
    # Absolute for what the chunk touched: each event that was an extremity for a while within
    # the chunk is named, so the chunk applies on top of any state from within its range.
    assert sorted(b.name_of(e) for e in chunk.forward_extremities_removed) == [
        "C",
        "JR",
        "MA",
        "PL",
    ]

    chunk2 = second.chunk
    assert chunk2 is not None and chunk2.chunk_id == f"{b.room_id}/7" and chunk2.creator is None
    assert chunk2.seq == (6, 7) and chunk2.inputs == (6, 7)
    assert [(b.name_of(r.event_id), r.redacts) for r in chunk2.redactions] == [("RED", "$gone")]
    assert [
        (r.state_key, b.name_of(r.event_id), r.membership) for r in chunk2.current_state_set
    ] == [(BOB, "LB", "leave")]
    assert sorted(b.name_of(e) for e in chunk2.forward_extremities_removed) == ["MB", "RED"]
    assert chunk_codec.decode(chunk_codec.encode(chunk2)) == chunk2


# ------------------------------------------------------------------ duplicates


def test_exact_duplicates_are_dropped_without_effect() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB)
    proc = RoomProcessor(b.room_id)
    first = proc.process(b.raws([*names, "M1", "M1"]))
    resent = dict(b.pdus["M1"], unsigned={"age": 5}, signatures={"b.example": {"ed25519:1": "x"}})
    again = proc.process([b.raw("MB"), orjson.dumps(resent)])
    assert first.duplicates == 1 and again.duplicates == 2
    assert again.chunk is None and again.dead_letters == ()
    assert first.chunk is not None and len(first.chunk.events) == 6


def test_same_event_id_with_other_content_goes_to_dead_letter() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB, body="original")
    tampered = dict(b.pdus["M1"], content={"msgtype": "m.text", "body": "forged"})
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws([*names, "M1"]))
    result = proc.process([orjson.dumps(tampered)])
    assert result.chunk is None
    (dl,) = result.dead_letters
    assert dl.event_id == b.ids["M1"] and "different content" in dl.reason
    assert dl.raw == orjson.dumps(tampered)


def test_conflicting_duplicate_of_a_parked_event_goes_to_dead_letter() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB)
    b.message("M2", BOB, body="original")
    tampered = dict(b.pdus["M2"], content={"msgtype": "m.text", "body": "forged"})
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws([*names, "M2"]))
    result = proc.process([orjson.dumps(tampered), b.raw("M2")])
    assert result.duplicates == 1 and result.parked == 1
    (dl,) = result.dead_letters
    assert "already parked" in dl.reason


# ------------------------------------------------------------------ parking


def test_parked_event_is_released_when_its_prev_event_arrives() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB)
    b.message("M2", BOB)
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(names))
    waiting = proc.process([b.raw("M2")])
    assert waiting.chunk is None and waiting.parked == 1
    assert [p.event_id for p in proc.parked()] == [b.ids["M2"]]
    assert proc.parked()[0].missing == {b.ids["M1"]}
    released = proc.process([b.raw("M1")])
    assert released.chunk is not None and released.parked == 0
    assert [b.name_of(e.event_id) for e in released.chunk.events] == ["M1", "M2"]
    assert {b.name_of(e) for e in proc.forward_extremities} == {"M2"}


def test_events_before_the_create_event_wait_for_it_across_batches() -> None:
    b = RoomBuilder()
    b.base()
    proc = RoomProcessor(b.room_id)
    first = proc.process(b.raws(["MA", "PL"]))
    assert first.chunk is None and first.parked == 2 and proc.room_version is None
    second = proc.process(b.raws(["C"]))
    assert second.chunk is not None
    assert [b.name_of(e.event_id) for e in second.chunk.events] == ["C", "MA", "PL"]


def test_released_events_keep_their_received_ts_and_come_in_arrival_order() -> None:
    b = RoomBuilder("12")
    b.base()
    proc = RoomProcessor(b.room_id)
    arrivals = ["JR", "MB", "PL", "MA"]
    for n, name in enumerate(arrivals):
        assert proc.process([Incoming(b.raw(name), received_ts=100 + n)]).chunk is None
    result = proc.process([Incoming(b.raw("C"), received_ts=99)])
    assert result.chunk is not None
    got = [(b.name_of(e.event_id), e.received_ts) for e in result.chunk.events]
    # MA waits for C only, PL for MA, JR for PL, MB for JR: each follows what it waits for.
    assert got == [("C", 99), ("MA", 103), ("PL", 102), ("JR", 100), ("MB", 101)]
    assert outcomes(b, [result]) == BASE_OK


def test_parking_beyond_the_room_bound_dead_letters_the_newcomer() -> None:
    b = RoomBuilder()
    names = b.base()
    for n in range(1, 5):
        b.message(f"M{n}", BOB)
    config = ProcessorConfig(parking=ParkingLimits(per_room=2))
    proc = RoomProcessor(b.room_id, config=config)
    proc.process(b.raws(names))
    result = proc.process(b.raws(["M2", "M3", "M4"]))
    assert result.parked == 2
    (dl,) = result.dead_letters
    assert dl.event_id == b.ids["M4"] and "limit per room 2" in dl.reason


def test_a_full_worker_budget_does_not_change_a_rooms_output() -> None:
    # Replay-determinism: the worker-wide count is back-pressure for the shell, never a
    # decision, so a room decides the same whatever other rooms hold.
    one, two = RoomBuilder(room_id="!one:a.example"), RoomBuilder(room_id="!two:a.example")
    outputs = []
    for budget in (ParkingBudget(1), None):
        procs = []
        for b in (one, two):
            if "C" not in b.ids:
                b.base()
                b.message("M1", BOB)
                b.message("M2", BOB)
            p = RoomProcessor(b.room_id, budget=budget)
            p.process(b.raws(["C", "MA", "PL", "JR", "MB"]))
            procs.append(p)
        first = procs[0].process([one.raw("M2")])
        second = procs[1].process([two.raw("M2")])
        assert (first.parked, second.parked, second.dead_letters) == (1, 1, ())
        if budget is not None:
            assert budget.over
        outputs.append(
            [p.process([b.raw("M1")]).chunks for p, b in zip(procs, (one, two), strict=True)]
        )
    assert outputs[0] == outputs[1]


def test_parked_events_expire_on_the_rooms_logical_clock_with_a_reason() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB)
    b.message("M2", BOB)
    b.message("X", ALICE, prev=["MB"])
    b.message("Y", ALICE, prev=["X"])
    config = ProcessorConfig(parking=ParkingLimits(ttl_ms=1000))
    proc = RoomProcessor(b.room_id, config=config)
    proc.process([Incoming(raw, received_ts=0) for raw in b.raws(names)])
    # The wall clock the shell passes (``now``) is not read: only the inputs' received_ts.
    proc.process([Incoming(b.raw("M2"), received_ts=10, source={"offset": 7})], now=10**12)
    assert proc.clock == 10 and proc.parked_bytes == len(b.raw("M2"))
    assert proc.process([Incoming(b.raw("X"), received_ts=1009)]).dead_letters == ()
    expired = proc.process([Incoming(b.raw("Y"), received_ts=1010)])
    (dl,) = expired.dead_letters
    assert dl.event_id == b.ids["M2"] and dl.source == {"offset": 7}
    assert "parked for 1000 ms" in dl.reason and b.ids["M1"] in dl.reason
    assert expired.parked == 0 and proc.parked_bytes == 0
    late = proc.process([Incoming(b.raw("M1"), received_ts=900)])
    assert late.chunk is not None and [b.name_of(e.event_id) for e in late.chunk.events] == ["M1"]
    assert proc.clock == 1010  # a late received_ts does not turn the clock back


def test_a_tick_moves_the_logical_clock_and_expires_without_taking_an_input() -> None:
    b = RoomBuilder()
    names = b.base()
    b.message("M1", BOB)
    b.message("M2", BOB)
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(parking=ParkingLimits(ttl_ms=1000)))
    proc.process([Incoming(raw, received_ts=5) for raw in b.raws([*names, "M2"])])
    seq = proc.input_seq
    assert proc.expire(1004).dead_letters == ()
    (dl,) = proc.expire(1005).dead_letters
    assert dl.event_id == b.ids["M2"] and proc.input_seq == seq


def test_rejected_create_event_fixes_the_room_version_and_everything_after_is_rejected() -> None:
    # v1-v10 create 1.2: if the domain of the room_id does not match the domain of the sender,
    # reject.
    b = RoomBuilder(room_id="!room:elsewhere.example")
    names = b.base()
    b.create("C2")
    proc, (result,) = run(b, [[*names, "C2"]])
    assert proc.room_version is not None and proc.room_version.identifier == "10"
    assert result.chunk is not None and result.chunk.creator is None
    assert set(outcomes(b, [result]).values()) == {"rejected"}
    assert proc.parked() == [] and proc.forward_extremities == frozenset()
    assert dict(proc.current_state) == {}


DAVE = "@dave:a.example"  # on the room ID's server, as Alice


def _second_create(b: RoomBuilder, named: str | None, **content: object) -> None:
    """C2: a create event with no prev events from the room ID's server, naming Dave as
    creator and ``named`` as room version (None: no room_version key)."""
    body: dict[str, object] = {"creator": DAVE, **content}
    if named is not None:
        body["room_version"] = named
    b.add("C2", "m.room.create", DAVE, body, state_key="", prev=[])


@pytest.mark.parametrize("version", ["1", "6", "10", "11"])
def test_second_create_event_without_prev_events_is_another_forward_extremity(
    version: str,
) -> None:
    # Rule 1 reads the create event alone: one from the room ID's server with no prev events
    # passes it, and no other rule reads a create event (Synapse accepts it the same way,
    # docs/synapse-parity.md). The room stays the first create event's: its version, and its
    # creator, which only the first create event's chunk names.
    b = RoomBuilder(version)
    names = b.base()
    _second_create(b, version)
    proc, (founding, second) = run(b, [names, ["C2"]])
    assert outcomes(b, [second]) == {"C2": "accepted"}
    assert founding.chunk is not None and founding.chunk.creator == ALICE
    assert second.chunk is not None and second.chunk.creator is None
    assert proc.create_event_id == b.ids["C"]
    assert proc.room_version is not None and proc.room_version.identifier == version
    assert proc.forward_extremities == {b.ids["MB"], b.ids["C2"]}
    assert proc.state_of_group(proc.state_group_of(b.ids["C2"])) == {
        ("m.room.create", ""): b.ids["C2"]
    }


@pytest.mark.parametrize(
    ("named", "bob_stays"),
    [
        # Room version 1's resolution conflicts the create key only: Bob's membership stays.
        ("1", True),
        (None, True),  # no room_version: "1"
        # v2 replays every key of the room's state (the second root's state lacks them), and
        # Bob's join fails against a create event that keeps out other servers.
        ("10", False),
        ("org.matrix.msc3757.10", False),
    ],
)
def test_the_version_a_second_create_event_names_resolves_the_extremities_it_joins(
    named: str | None, bob_stays: bool
) -> None:
    # Synapse resolves the new extremities by the version the create event names, and caches
    # the result for that set of state groups: an event on exactly those prev events has it
    # as its state before. A processor restored from its save resolves the same.
    b = RoomBuilder("10")
    names = b.base()
    _second_create(b, named, **{"m.federate": False})
    b.message("X", ALICE, prev=["MB", "C2"])
    proc, _ = run(b, [names, ["C2"]])
    restored = RoomProcessor.from_dict(orjson.loads(orjson.dumps(proc.to_dict())))
    assert (("m.room.member", BOB) in proc.current_state) is bob_stays
    assert dict(restored.current_state) == dict(proc.current_state)
    ours, theirs = proc.process(b.raws(["X"])), restored.process(b.raws(["X"]))
    assert ours.chunk is not None and theirs.chunk is not None
    assert ours.chunk.digest == theirs.chunk.digest
    state_x = proc.state_of_group(proc.state_group_of(b.ids["X"]))
    assert (("m.room.member", BOB) in state_x) is bob_stays


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid PDU"),
        (b"[1, 2]", "invalid PDU"),
    ],
    ids=["not JSON", "not an object"],
)
def test_input_that_is_no_pdu_goes_to_dead_letter_with_a_reason(raw: bytes, reason: str) -> None:
    b = RoomBuilder()
    proc, _ = run(b, [b.base()])
    result = proc.process([Incoming(raw, source={"offset": 3})])
    (dl,) = result.dead_letters
    assert reason in dl.reason and dl.source == {"offset": 3}
    assert result.chunk is None


def test_pdu_missing_a_field_is_dead_lettered_naming_the_field() -> None:
    b = RoomBuilder()
    proc, _ = run(b, [b.base()])
    b.message("M1", BOB)
    broken = {k: v for k, v in b.pdus["M1"].items() if k != "sender"}
    (dl,) = proc.process([orjson.dumps(broken)]).dead_letters
    assert "sender" in dl.reason


def test_event_of_another_room_is_dead_lettered() -> None:
    b = RoomBuilder()
    proc, _ = run(b, [b.base()])
    other = RoomBuilder(room_id="!other:a.example")
    other.create()
    (dl,) = proc.process([other.raw("C")]).dead_letters
    assert "!other:a.example" in dl.reason


def test_a_failure_inside_the_rules_dead_letters_the_event_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.room.processor as processor_module
    from pipeline.matrix.auth import check_auth_rules as real

    b = RoomBuilder()
    proc, _ = run(b, [b.base()])
    b.message("BOOM", BOB)
    b.message("AFTER", ALICE, prev=["MB"])

    def failing(event, auth_state):  # type: ignore[no-untyped-def]
        if event.event_id == b.ids["BOOM"]:
            raise KeyError("content")
        real(event, auth_state)

    monkeypatch.setattr(processor_module, "check_auth_rules", failing)
    before = proc.to_dict()
    result = proc.process(b.raws(["BOOM"]))
    (dl,) = result.dead_letters
    assert "internal error KeyError" in dl.reason and dl.event_id == b.ids["BOOM"]
    assert result.chunk is None and not proc.is_known(b.ids["BOOM"])
    # Only the input was counted.
    assert orjson.dumps(proc.to_dict()) == orjson.dumps({**before, "input_seq": 6})
    after = proc.process(b.raws(["AFTER"]))
    assert after.chunk is not None and outcomes(b, [after]) == {"AFTER": "accepted"}


# ------------------------------------------------------------------ state groups


def test_state_group_delta_chains_are_bounded_by_max_delta_hops() -> None:
    b = RoomBuilder()
    names = b.base()
    topics = [f"T{n}" for n in range(12)]
    for t in topics:
        b.topic(t, ALICE, t)
    proc, results = run(b, [names + topics], ProcessorConfig(max_delta_hops=3))
    stored = proc.to_dict()["state_groups"]["groups"]
    for sg in stored:
        hops, prev = 0, stored[sg][0]
        while prev is not None:
            hops, prev = hops + 1, stored[str(prev)][0]
        assert hops <= 3
    last = groups_of(b, results)["T11"]
    assert b.state_names(proc.state_of_group(last))[TOPIC] == "T11"
    assert len(stored) == len(names) + len(topics)


# ------------------------------------------------------------------ replays and restarts


def _stream(b: RoomBuilder) -> list[list[str]]:
    """A room with forks, a rejection, soft-failures and a late prev event, in four batches."""
    bob_banned_on_a_fork(b)
    b.message("S1", BOB, prev=["Y"])
    b.message("R", CAROL, prev=["S1"])
    b.topic("T", ALICE, "after", prev=["BAN"])
    b.message("E", ALICE, prev=["R", "T"])
    b.message("F", ALICE, prev=["E"])
    return [["C", "MA", "PL", "JR"], ["MB", "Y", "BAN"], ["S1", "F", "R"], ["T", "E"]]


def _chunks(results: Sequence[BatchResult]) -> list[bytes]:
    return [chunk_codec.encode(r.chunk) for r in results if r.chunk is not None]


def test_replaying_the_same_input_gives_the_same_chunks_and_state_group_ids() -> None:
    first, second = RoomBuilder(), RoomBuilder()
    batches = _stream(first)
    _stream(second)
    p1, r1 = run(first, batches)
    p2, r2 = run(second, batches)
    assert _chunks(r1) == _chunks(r2)
    assert orjson.dumps(p1.to_dict()) == orjson.dumps(p2.to_dict())
    assert outcomes(first, r1)["R"] == "rejected"
    assert outcomes(first, r1)["S1"] == "soft_failed"


def test_batching_does_not_change_any_event_result_or_state_group() -> None:
    b = RoomBuilder()
    batches = _stream(b)
    _, together = run(b, [[n for batch in batches for n in batch]])
    _, one_by_one = run(b, [[n] for batch in batches for n in batch])

    def results(rs: Sequence[BatchResult]) -> list[tuple[str, str | None, bool, int | None]]:
        return [
            (e.event_id, e.rejected, e.soft_failed, e.state_group)
            for r in rs
            for e in (r.chunk.events if r.chunk else ())
        ]

    assert results(together) == results(one_by_one)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_state_round_trips_mid_stream_and_continues_identically(cut: int) -> None:
    b = RoomBuilder()
    batches = _stream(b)
    _, straight = run(b, batches)
    proc, before = run(b, batches[:cut])
    data = orjson.loads(orjson.dumps(proc.to_dict()))
    budget = ParkingBudget(100)
    restored = RoomProcessor.from_dict(data, budget=budget)
    assert budget.used == len(proc.parked())
    after = [restored.process(b.raws(batch)) for batch in batches[cut:]]
    assert _chunks(before + after) == _chunks(straight)
    assert orjson.dumps(restored.to_dict()) == orjson.dumps(run(b, batches)[0].to_dict())


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_state_saved_before_the_current_basis_and_redactions_were_loads_and_continues(
    cut: int,
) -> None:
    # A format 2 state saved before current_basis, current_overlay, redacted and
    # pending_redactions were kept: the current state is the extremities' state, as it then
    # was, and nothing is redacted.
    b = RoomBuilder()
    batches = _stream(b)
    _, straight = run(b, batches)
    proc, before = run(b, batches[:cut])
    data = orjson.loads(orjson.dumps(proc.to_dict()))
    assert not data["current_overlay"] and not data["redacted"]
    for key in ("current_basis", "current_overlay", "redacted", "pending_redactions"):
        del data[key]
    restored = RoomProcessor.from_dict(data)
    assert restored.current_state == proc.current_state
    after = [restored.process(b.raws(batch)) for batch in batches[cut:]]
    assert _chunks(before + after) == _chunks(straight)


def test_state_of_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        RoomProcessor.from_dict({"format": 99, "room_id": "!r:x"})


def _lagging_room(b: RoomBuilder) -> list[list[str]]:
    """Alice's topic Y on an old event is soft-failed (she has left, X); Bob's power levels P
    on [X, Y] is rejected; Bob's message M on [P] replaces X as the only forward extremity."""
    base = b.base()
    b.topic("Y", ALICE, "stale", prev=["MB"])
    b.member("X", ALICE, "leave", prev=["MB"])
    b.power_levels("P", {BOB: 100}, sender=BOB, prev=["X", "Y"])
    b.add("M", "m.room.message", BOB, {"body": "on P"}, prev=["P"], auth=["C", "PL", "MB"])
    b.add(
        "MC",
        "m.room.member",
        CAROL,
        {"membership": "join"},
        state_key=CAROL,
        prev=["M"],
        auth=["C", "PL", "JR"],
    )
    return [base, ["X"], ["Y"], ["P"], ["M"], ["MC"]]


def test_current_state_is_kept_when_one_extremity_gives_way_to_one_single_prev_message() -> None:
    # Synapse's persistence: forward extremities going from one event to one event whose only
    # prev event is its sole parent and which is not a state event leave the current state as
    # it was, even where that event's state differs (the rejected P's state, resolved over
    # the soft-failed Y). Later changes apply as deltas on top of it.
    b = RoomBuilder()
    proc, results = run(b, _lagging_room(b)[:-1])
    assert outcomes(b, results[1:]) == {
        "X": "accepted",
        "Y": "soft_failed",
        "P": "rejected",
        "M": "accepted",
    }
    assert proc.forward_extremities == {b.ids["M"]}
    assert b.state_names(proc.state_of_group(proc.state_group_of(b.ids["M"])))[TOPIC] == "Y"
    assert TOPIC not in proc.current_state
    assert b.state_names(proc.current_state) == b.state_names(
        proc.state_of_group(proc.state_group_of(b.ids["X"]))
    )
    proc.process(b.raws(["MC"]))
    assert TOPIC not in proc.current_state
    assert proc.current_state[("m.room.member", CAROL)] == b.ids["MC"]


def test_current_state_that_lags_the_extremities_round_trips() -> None:
    b = RoomBuilder()
    batches = _lagging_room(b)
    proc, _ = run(b, batches)
    restored = RoomProcessor.from_dict(orjson.loads(orjson.dumps(proc.to_dict())))
    assert restored.current_state == proc.current_state
    assert TOPIC not in restored.current_state


def test_redacted_state_event_is_read_redacted_and_stays_so_after_a_round_trip() -> None:
    # v10: Alice redacts her power levels; the redaction algorithm drops "invite", so later
    # checks read the default invite level and Bob may invite. Bob's own redaction would not
    # count: below the redact level, it counts only for events from his server.
    b = RoomBuilder()
    base = b.base()
    b.add("PL2", "m.room.power_levels", ALICE, {"users": {ALICE: 100}, "invite": 100}, state_key="")
    b.add("RDB", "m.room.redaction", BOB, {}, extra={"redacts": b.ids["PL2"]})
    b.member("INV1", CAROL, "invite", sender=BOB)
    b.add("RD", "m.room.redaction", ALICE, {}, extra={"redacts": b.ids["PL2"]}, prev=["RDB"])
    b.member("INV2", CAROL, "invite", sender=BOB, prev=["RD"])
    proc, results = run(b, [base, ["PL2"], ["RDB"], ["INV1"], ["RD"], ["INV2"]])
    assert outcomes(b, results[1:]) == {
        "PL2": "accepted",
        "RDB": "accepted",
        "INV1": "rejected",
        "RD": "accepted",
        "INV2": "accepted",
    }
    restored = RoomProcessor.from_dict(orjson.loads(orjson.dumps(proc.to_dict())))
    for p in (proc, restored):
        pl = p.get_event(b.ids["PL2"])
        assert pl is not None and "invite" not in pl.content
