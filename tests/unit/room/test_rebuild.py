"""A room processor rebuilt from the rows the committer stored (DESIGN.md invariant 8) decides
what follows as the processor that sent the chunks would have: the same chunks, byte for byte.

The rows are made the committer's way by ``tests.unit.room.fold`` (an implementation apart from
``pipeline.room.rebuild``); the chunks not committed yet are folded in with
``rebuild.fold_chunks``, as a worker folds the chunks in flight."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pipeline.room.batch import Incoming, ProcessorConfig
from pipeline.room.chunk import Chunk, StateGroup, StateRow
from pipeline.room.parking import ParkingLimits
from pipeline.room.processor import RoomProcessor
from pipeline.room.rebuild import (
    EventRow,
    GroupOrderError,
    RoomRows,
    fold_chunks,
    group_order,
)
from pipeline.room.state_groups import state_group_id
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder
from tests.unit.room.fold import Stored, fold
from tests.unit.room.test_determinism import _lagging_room, _save_and_load
from tests.unit.room.test_properties import _build
from topics import chunk as chunk_codec

CONFIG = ProcessorConfig(parking=ParkingLimits(ttl_ms=10**9, per_room=50))
STRIPPED = ("m.room.message", "m.room.topic")


def _rows(room_id: str, stored: Stored, sent: list[Chunk]) -> RoomRows:
    """The rows ``stored`` leaves in PostgreSQL (received_ts from the chunks that carried them)."""
    received = {e.event_id: e.received_ts for c in sent for e in c.events}
    versions = {c.room_version for c in sent}
    return RoomRows(
        room_id=room_id,
        room_version=versions.pop() if versions else None,
        high_water=stored.high_water,
        events=[
            EventRow(eid, pdu, rejected, soft_failed, sg, received[eid])
            for eid, (_, pdu, rejected, soft_failed, sg, _) in stored.events.items()
        ],
        state_groups=[
            StateGroup(sg, event_id, prev, tuple(delta))
            for sg, (event_id, prev, delta) in stored.state_groups.items()
        ],
        forward_extremities=set(stored.extremities),
        current_state={k: v[0] for k, v in stored.current_state.items()},
    )


def _room(kind: str, rnd: random.Random) -> tuple[RoomBuilder, list[str]]:
    """A random room: one whose current state lags its extremities now and then, with power
    changes and redactions of state events (``lagging``), or one of events on random prev
    events, forks that stay open among them (``forked``)."""
    if kind == "lagging":
        return _lagging_room(rnd, rnd.randint(4, 14))
    kinds = ["message", "topic", "join", "leave"]
    steps = [
        (
            rnd.choice(kinds),
            rnd.randrange(3),
            rnd.randrange(1000),
            rnd.choice([None, rnd.randrange(1000)]),
        )
        for _ in range(rnd.randint(3, 14))
    ]
    # Alice's message on the base first: every room has one.
    return _build([("message", 0, 4, None), *steps])


def _group_states(proc: RoomProcessor, groups: Iterable[int]) -> dict[int, list[StateRow]]:
    return {g: sorted((t, k, e) for (t, k), e in proc.state_of_group(g).items()) for g in groups}


def _encoded(chunks: list[Chunk], proc: RoomProcessor) -> list[bytes]:
    """The chunks' bytes but their input ranges, which name the inputs a processor took (a
    rebuilt one does not know how many) and are for reports only (``pipeline.room.chunk``);
    each state group as its whole state (held by ``proc``), since the rows do not say which
    ancestor an uninterrupted run would have stored a later group over
    (``StateGroups.from_rows``); so the digest too is left out."""
    out = []
    for c in chunks:
        states = _group_states(proc, [g.id for g in c.state_groups])
        groups = tuple(
            StateGroup(g.id, g.event_id, None, tuple(states[g.id])) for g in c.state_groups
        )
        out.append(chunk_codec.encode(replace(c, inputs=(0, 0), state_groups=groups, digest="")))
    return out


def _comparable(proc: RoomProcessor) -> dict[str, Any]:
    """The state that decides what comes next: all of ``to_dict`` but the input sequence, the
    clock and how the current state is held (its basis and overlay), plus the current state;
    the state groups by their ids, events and states (not by the ancestors they are stored
    over, as ``_encoded``)."""
    data = proc.to_dict()
    for key in ("input_seq", "clock", "current_basis", "current_overlay"):
        data.pop(key)
    data["current_state"] = sorted((t, k, e) for (t, k), e in proc.current_state.items())
    groups = data["state_groups"]["groups"]
    states = _group_states(proc, [int(g) for g in groups])
    data["state_groups"]["groups"] = {g: [v[2], states[int(g)]] for g, v in groups.items()}
    return data


CASES = [(kind, seed) for kind in ("lagging", "forked") for seed in range(40)]


@pytest.mark.parametrize(("kind", "seed"), CASES)
def test_a_room_rebuilt_from_its_rows_and_chunks_in_flight_sends_the_chunks_it_would_have(
    kind: str, seed: int
) -> None:
    rnd = random.Random(seed)
    b, names = _room(kind, rnd)
    inputs = [Incoming(b.raw(n), received_ts=i, source={"offset": i}) for i, n in enumerate(names)]
    # A repeat of an old event and an event ID reused with other content, after the cut.
    inputs.append(Incoming(b.raw(names[2]), received_ts=len(inputs)))
    # Content that redaction strips, changed: the same event ID, other content (a message or
    # topic: their content is stripped whole).
    reused = next(n for n in reversed(names) if b.pdus[n]["type"] in STRIPPED)
    pdu = b.pdus[reused]
    inputs.append(Incoming(orjson.dumps({**pdu, "content": {**pdu["content"], "x": 1}})))

    straight = RoomProcessor(b.room_id, config=CONFIG)
    results = [straight.process([inc]) for inc in inputs]
    chunks = [c for r in results for c in r.chunks]

    cut = rnd.randrange(len(names) + 1)
    head = [c for r in results[:cut] for c in r.chunks]
    # Of the chunks sent before the state was lost, any prefix was committed.
    committed = head[: rnd.randint(0, len(head))]
    rows = fold_chunks(_rows(b.room_id, fold(committed), committed), head[len(committed) :])
    assert rows.high_water == (head[-1].seq[1] if head else 0)

    rebuilt = RoomProcessor.from_database_rows(rows, config=CONFIG)
    tail = [rebuilt.process([inc]) for inc in inputs[cut:]]
    assert _encoded([c for r in tail for c in r.chunks], rebuilt) == _encoded(
        [c for r in results[cut:] for c in r.chunks], straight
    )
    dead = [(d.reason, d.event_id) for r in tail for d in r.dead_letters]
    assert dead == [(d.reason, d.event_id) for r in results[cut:] for d in r.dead_letters]
    assert dead[-1] == (
        f"event {b.ids[reused]} was already processed with different content; the event ID "
        "is reused for another event",
        b.ids[reused],
    )
    assert _comparable(rebuilt) == _comparable(straight)
    assert rebuilt.event_seq == straight.event_seq == chunks[-1].seq[1]


def test_the_rebuilt_rooms_above_lag_fork_and_redact() -> None:
    # The cases are worth their name: rebuilt (at the cut the test above draws) over a current
    # state that lags the extremities, over several extremities, over redacted state events.
    lagging = forked = redacted = 0
    for kind, seed in CASES:
        rnd = random.Random(seed)
        b, names = _room(kind, rnd)
        proc = RoomProcessor(b.room_id, config=CONFIG)
        per_input = [proc.process([Incoming(b.raw(n))]).chunks for n in names]
        cut = rnd.randrange(len(names) + 1)
        head = [c for chunks in per_input[:cut] for c in chunks]
        rebuilt = RoomProcessor.from_database_rows(_rows(b.room_id, fold(head), head))
        data = rebuilt.to_dict()
        lagging += bool(data["current_overlay"])
        forked += len(rebuilt.forward_extremities) > 1
        redacted += bool(data["redacted"])
    assert lagging >= 3 and forked >= 3 and redacted >= 5, (lagging, forked, redacted)


def test_a_stale_states_parked_events_are_taken_over_and_what_was_decided_since_is_not_again() -> (
    None
):
    b = RoomBuilder()
    base = b.base()
    b.message("Y", ALICE)
    b.message("X", BOB, prev=["Y"])
    b.message("W", CAROL)  # never joined: rejected once it is decided
    b.message("Z", ALICE, prev=["W"])
    b.message("M", ALICE, prev=["X"])
    order = [*base, "X", "Z", "Y", "M", "W"]
    inputs = [Incoming(b.raw(n), received_ts=i) for i, n in enumerate(order)]

    straight = RoomProcessor(b.room_id, config=CONFIG)
    results = [straight.process([inc]) for inc in inputs]
    # Saved with X and Z parked; Y released X and M came, all committed; then the stored state
    # was replaced by that old copy.
    stale_at, lost_until = len(base) + 2, len(base) + 4
    stale = _save_and_load(_processed(b.room_id, inputs[:stale_at]))
    assert {p.event_id for p in stale.parked()} == {b.ids["X"], b.ids["Z"]}
    sent = [c for r in results[:lost_until] for c in r.chunks]

    rebuilt = RoomProcessor.from_database_rows(_rows(b.room_id, fold(sent), sent), config=CONFIG)
    taken = rebuilt.adopt_parked(stale)
    # X was decided in the lost history: a duplicate; its request closed as answered.
    assert taken.chunks == () and taken.dead_letters == ()
    assert [(r.missing, r.status) for r in taken.missing_requests] == [((b.ids["Y"],), "answered")]
    assert [p.event_id for p in rebuilt.parked()] == [b.ids["Z"]]
    assert [r.missing for r in rebuilt.open_requests()] == [(b.ids["W"],)]
    # W arrives: Z is released, as in the run that lost nothing.
    tail = [rebuilt.process([inc]) for inc in inputs[lost_until:]]
    assert _encoded([c for r in tail for c in r.chunks], rebuilt) == _encoded(
        [c for r in results[lost_until:] for c in r.chunks], straight
    )
    assert [r.missing_requests for r in tail] == [r.missing_requests for r in results[lost_until:]]
    assert _comparable(rebuilt) == _comparable(straight)


def _processed(room_id: str, inputs: list[Incoming]) -> RoomProcessor:
    proc = RoomProcessor(room_id, config=CONFIG)
    for inc in inputs:
        proc.process([inc])
    return proc


def test_a_stale_state_waiting_for_the_create_event_is_released_over_the_rebuilt_room() -> None:
    b = RoomBuilder()
    base = b.base()
    b.message("A", ALICE)
    inputs = [Incoming(b.raw(n), received_ts=i) for i, n in enumerate([*base, "A"])]
    straight = RoomProcessor(b.room_id, config=CONFIG)
    sent = [c for inc in inputs[:-1] for c in straight.process([inc]).chunks]
    # A stale state that saw only A (parked for want of the create event).
    stale = _processed(b.room_id, inputs[-1:])
    rebuilt = RoomProcessor.from_database_rows(_rows(b.room_id, fold(sent), sent), config=CONFIG)
    taken = rebuilt.adopt_parked(stale)
    expected = straight.process(inputs[-1:])
    assert [e.event_id for c in taken.chunks for e in c.events] == [b.ids["A"]]
    assert _encoded(list(taken.chunks), rebuilt) == _encoded(list(expected.chunks), straight)
    assert rebuilt.parked() == []


def test_chunks_in_flight_are_folded_as_the_committer_applies_them() -> None:
    b = RoomBuilder()
    names = b.base()
    for i in range(4):
        b.topic(f"T{i}", ALICE, f"topic {i}")
        names.append(f"T{i}")
    proc = RoomProcessor(b.room_id, config=CONFIG)
    one_by_one = [c for n in names for c in proc.process([Incoming(b.raw(n))]).chunks]
    again = RoomProcessor(b.room_id, config=CONFIG)
    # The same events batched otherwise: a replay straddling what was committed.
    batched = [
        c
        for part in (names[:3], names[3:])
        for c in again.process([Incoming(b.raw(n)) for n in part]).chunks
    ]
    committed = one_by_one[:5]
    rows = _rows(b.room_id, fold(committed), committed)
    # In flight: a chunk committed already (a replay, skipped), then the straddling replay.
    folded = fold_chunks(rows, [one_by_one[2], batched[1]])
    assert folded.chunks_folded == 1
    assert folded.high_water == len(names)
    rows_now = list(folded.events)  # a one-pass iterator: read once
    folded = replace(folded, events=rows_now)
    # The stored events, then those of the straddling replay (the committer drops the ones it
    # stored already by event ID; so does the rebuild).
    stored_ids = [e.event_id for c in committed for e in c.events]
    assert [e.event_id for e in rows_now] == stored_ids + [e.event_id for e in batched[1].events]
    everything = fold(one_by_one)
    assert folded.current_state == {k: v[0] for k, v in everything.current_state.items()}
    assert folded.forward_extremities == everything.extremities
    assert {g.id for g in folded.state_groups} == set(everything.state_groups)
    rebuilt = RoomProcessor.from_database_rows(folded, config=CONFIG)
    assert _comparable(rebuilt) == _comparable(proc)


def test_group_order_follows_the_group_counter_and_refuses_foreign_ids() -> None:
    room = "!r:a.example"
    groups = [StateGroup(state_group_id(room, n), f"$e{n}", None, ()) for n in (3, 1, 2, 5)]
    ordered, counter = group_order(room, groups)
    # Group 4 was made for a decision that failed and never stored: 5 is still the last.
    assert [g.event_id for g in ordered] == ["$e1", "$e2", "$e3", "$e5"]
    assert counter == 5
    assert group_order(room, []) == ([], 0)
    with pytest.raises(GroupOrderError, match="not the room's own group ids"):
        group_order(
            room, [*groups, StateGroup(state_group_id("!other:a.example", 1), "$x", None, ())]
        )
