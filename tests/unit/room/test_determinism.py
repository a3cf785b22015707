"""Replay-determinism and batching: the same inputs in the same order give the same chunks and
dead letters whatever happened around them (a crash and restore, the wall clock, other rooms),
and any batching of them leaves the same rows once the committer has applied the chunks."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.matrix.events import StateKey
from pipeline.room import storage
from pipeline.room.batch import BatchResult, Incoming, ProcessorConfig
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder
from tests.unit.room.fold import Stored, fold
from tests.unit.room.test_properties import STEP, _build
from topics import chunk as chunk_codec

TTL = 50
CONFIG = ProcessorConfig(parking=ParkingLimits(ttl_ms=TTL, per_room=6))


def _inputs(
    steps: list[tuple[str, int, int, int | None]], rnd: random.Random
) -> tuple[str, list[Incoming]]:
    """A random room's PDUs in a shuffled order (so some park, some expire, some overflow the
    lot), a few of them twice, with received_ts that mostly rise."""
    b, names = _build(steps)
    order = list(names)
    rnd.shuffle(order)
    order += rnd.sample(order, k=min(2, len(order)))
    ts = 0
    out = []
    for n, name in enumerate(order):
        ts += rnd.choice([0, 5, 20, 40])
        received = ts - rnd.choice([0, 0, 30])  # a late one now and then
        out.append(Incoming(b.raw(name), received_ts=received, source={"offset": n}))
    return b.room_id, out


def _save_and_load(proc: RoomProcessor, budget: ParkingBudget | None = None) -> RoomProcessor:
    """What a crash leaves: the stored record and segments, loaded by a new processor."""
    kv = dict(storage.save(proc, None))
    return storage.load(kv[storage.record_key(proc.room_id)], kv.get, config=CONFIG, budget=budget)


def _outputs(results: list[BatchResult]) -> list[Any]:
    return [(r.chunks, r.dead_letters, r.duplicates, r.parked) for r in results]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(STEP, min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.integers(0, 1000),
)
def test_a_restored_processor_replays_the_tail_into_identical_chunks_and_dead_letters(
    steps: list[tuple[str, int, int, int | None]], rnd: random.Random, cut_at: int
) -> None:
    room_id, inputs = _inputs(steps, rnd)
    cut = cut_at % (len(inputs) + 1)

    straight = RoomProcessor(room_id, config=CONFIG)
    expected = [straight.process([inc], now=inc.received_ts) for inc in inputs]

    # The crash: saved after ``cut`` inputs, restored later (a wall clock far ahead, a worker
    # whose other rooms fill its parking budget), the tail processed again.
    budget = ParkingBudget(0)
    first = RoomProcessor(room_id, config=CONFIG, budget=budget)
    head = [first.process([inc], now=inc.received_ts) for inc in inputs[:cut]]
    restored = _save_and_load(first, budget)
    later = 10**12
    tail = [restored.process([inc], now=later) for inc in inputs[cut:]]

    assert _outputs(head + tail) == _outputs(expected)
    assert [chunk_codec.encode(c) for r in head + tail for c in r.chunks] == [
        chunk_codec.encode(c) for r in expected for c in r.chunks
    ]
    assert orjson.dumps(restored.to_dict()) == orjson.dumps(straight.to_dict())


def _batches(items: list[Incoming], rnd: random.Random) -> list[list[Incoming]]:
    out = []
    i = 0
    while i < len(items):
        n = rnd.randint(1, 6)
        out.append(items[i : i + n])
        i += n
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_one_chunk_per_batch_leaves_the_rows_of_one_chunk_per_input(
    steps: list[tuple[str, int, int, int | None]], rnd: random.Random
) -> None:
    room_id, inputs = _inputs(steps, rnd)
    one_by_one = RoomProcessor(room_id, config=CONFIG)
    per_input = [c for inc in inputs for c in one_by_one.process([inc]).chunks]

    batched = RoomProcessor(room_id, config=CONFIG)
    whole = batched.process(inputs)
    assert len(whole.chunks) <= 1
    assert fold(list(whole.chunks)).rows() == fold(per_input).rows()

    # Cut by size inside the batch: a chunk of one or a few events.
    small = ProcessorConfig(parking=CONFIG.parking, max_chunk_bytes=2_500)
    cut = RoomProcessor(room_id, config=small).process(inputs).chunks
    assert fold(list(cut)).rows() == fold(per_input).rows()

    parts = RoomProcessor(room_id, config=CONFIG)
    per_batch = [c for batch in _batches(inputs, rnd) for c in parts.process(batch).chunks]
    assert fold(per_batch).rows() == fold(per_input).rows()
    # Event sequence numbers do not depend on the batching.
    assert [e.event_id for c in per_batch for e in c.events] == [
        e.event_id for c in per_input for e in c.events
    ]
    assert orjson.dumps(parts.to_dict()) == orjson.dumps(
        {**one_by_one.to_dict(), "input_seq": parts.input_seq}
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(STEP, min_size=2, max_size=12),
    st.randoms(use_true_random=False),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
def test_a_replay_batched_differently_applies_over_what_was_committed(
    steps: list[tuple[str, int, int, int | None]],
    rnd: random.Random,
    saved_at: int,
    committed_upto: int,
) -> None:
    # The committed run sent its chunks in one batching; it was saved after ``saved`` inputs,
    # crashed after the committer had applied some of its chunks, and the replay from the save
    # batches the tail otherwise: its chunks straddle the committed ones.
    room_id, inputs = _inputs(steps, rnd)
    reference = RoomProcessor(room_id, config=CONFIG)
    expected = fold([c for inc in inputs for c in reference.process([inc]).chunks]).rows()

    saved = saved_at % (len(inputs) + 1)
    run = RoomProcessor(room_id, config=CONFIG)
    sent = [c for batch in _batches(inputs[:saved], rnd) for c in run.process(batch).chunks]
    restored = _save_and_load(run)
    # A shell saves a room only once the chunks before the save were sent: they all get
    # committed; of the later ones, any prefix.
    head = len(sent)
    sent += [c for batch in _batches(inputs[saved:], rnd) for c in run.process(batch).chunks]
    committed = sent[: head + committed_upto % (len(sent) - head + 1)]

    db = Stored()
    for c in committed:
        db.apply(c)
    replayed = [
        c for batch in _batches(inputs[saved:], rnd) for c in restored.process(batch).chunks
    ]
    for c in replayed:
        db.apply(c)  # raises Divergence for a range seen before with other content
    assert db.rows() == expected


# ---------------------------------------------------------------- rooms whose state lags

USERS = [ALICE, BOB, CAROL]


class _WholeStateReference(RoomProcessor):
    """The current state moved on as a whole-state comparison would: the new overlay is every
    key where the current state differs from the new group (the incremental path must agree)."""

    def _apply_current_delta(
        self, old_group: int, new_group: int, delta: dict[StateKey, str], out: Any
    ) -> None:
        if not self._current_overlay and self._current_basis == (old_group,):
            super()._apply_current_delta(old_group, new_group, delta, out)
            return
        current = dict(self._current)
        out.touched_state.update(k for k, v in delta.items() if current.get(k) != v)
        current.update(delta)
        target = self._groups.state(new_group)
        overlay: dict[StateKey, str | None] = {
            k: v for k, v in current.items() if target.get(k) != v
        }
        overlay.update((k, None) for k in target if k not in current)
        self._set_current((new_group,), overlay)


def _lagging_room(rnd: random.Random, steps: int) -> tuple[RoomBuilder, list[str]]:
    """A room of random steps on random prev events, among them the shape that leaves the
    current state behind the forward extremities (a user's stale topic soft-failed after they
    left, a rejected merge over it, a message on that), power level changes and redactions of
    state events (by senders with and without the redact level)."""
    b = RoomBuilder()
    names = b.base()
    state_names = list(names)
    for n in range(steps):
        name = f"E{n}"
        kind = rnd.choice(["message", "topic", "join", "leave", "power", "redact", "lag"])
        sender = rnd.choice(USERS)
        last = names[-1]
        prev = sorted({last, rnd.choice(names)}) if rnd.random() < 0.3 else [last]
        if kind == "message":
            b.message(name, sender, prev=prev)
        elif kind == "topic":
            b.topic(name, sender, name, prev=prev)
            state_names.append(name)
        elif kind in ("join", "leave"):
            b.member(name, sender, kind, prev=prev)
            state_names.append(name)
        elif kind == "power":
            users = {ALICE: 100, BOB: rnd.choice([0, 50, 100])}
            b.power_levels(name, users, prev=prev)
            state_names.append(name)
        elif kind == "redact":
            target = b.ids[rnd.choice(state_names[1:])]
            b.add(name, "m.room.redaction", sender, {}, extra={"redacts": target}, prev=prev)
        else:
            # Alice leaves; her topic on an older event then arrives and soft-fails; Bob's
            # power levels over both is rejected, his message on it accepted (its auth events
            # from the state after Alice left), and Alice comes back.
            x, y, p, m = (f"{name}{c}" for c in "xypm")
            b.member(x, ALICE, "leave", prev=[last])
            b.topic(y, ALICE, "stale", prev=[rnd.choice(names[4:])])
            b.power_levels(p, {BOB: 100}, sender=BOB, prev=[x, y])
            left = b._state[x]
            keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", BOB)]
            body = {"msgtype": "m.text", "body": m}
            auth = [b.name_of(left[k]) for k in keys if k in left]
            b.add(m, "m.room.message", BOB, body, prev=[p], auth=auth)
            b._state[m] = dict(left)  # what later events choose their auth events from
            b.member(f"{name}j", ALICE, "join", prev=[m])
            names += [x, y, p, m]
            state_names += [x, y, p]
            name = f"{name}j"
            state_names.append(name)
        names.append(name)
    return b, names


def _lags(proc: RoomProcessor) -> bool:
    saved = proc.to_dict()
    extremities = proc.forward_extremities
    groups = sorted({sg for e in extremities if (sg := proc.state_group_of(e)) is not None})
    return bool(saved["current_overlay"]) or saved["current_basis"] != groups


@pytest.mark.parametrize("seed", range(60))
def test_lagging_current_state_and_redactions_replay_identically(seed: int) -> None:
    rnd = random.Random(seed)
    b, names = _lagging_room(rnd, rnd.randint(4, 14))
    inputs = [Incoming(b.raw(n), received_ts=i, source={"offset": i}) for i, n in enumerate(names)]
    if rnd.random() < 0.5:  # some out of order: they park and are released
        i = rnd.randrange(len(inputs) - 1)
        inputs[i], inputs[i + 1] = inputs[i + 1], inputs[i]

    # One at a time, against the whole-state reference, and the current state the chunks leave.
    proc = RoomProcessor(b.room_id, config=CONFIG)
    reference = _WholeStateReference(b.room_id, config=CONFIG)
    per_input: list[Any] = []
    for inc in inputs:
        result = proc.process([inc])
        expected = reference.process([inc])
        assert _outputs([result]) == _outputs([expected])
        assert dict(proc.current_state) == dict(reference.current_state)
        saved, ref_saved = proc.to_dict(), reference.to_dict()
        assert saved["current_basis"] == ref_saved["current_basis"]
        assert saved["current_overlay"] == ref_saved["current_overlay"]
        per_input.extend(result.chunks)
        folded = fold(per_input).current_state
        assert {k: v[0] for k, v in folded.items()} == dict(proc.current_state)

    # Restored after any input: the rest gives the same chunks, byte for byte.
    cut = rnd.randrange(len(inputs) + 1)
    first = RoomProcessor(b.room_id, config=CONFIG)
    head = [first.process([inc]) for inc in inputs[:cut]]
    restored = _save_and_load(first)
    tail = [restored.process([inc]) for inc in inputs[cut:]]
    assert [chunk_codec.encode(c) for r in head + tail for c in r.chunks] == [
        chunk_codec.encode(c) for c in per_input
    ]
    assert orjson.dumps(restored.to_dict()) == orjson.dumps(proc.to_dict())

    # Batched otherwise, restored between batches: the same rows.
    parts = RoomProcessor(b.room_id, config=CONFIG)
    batched: list[Any] = []
    for batch in _batches(inputs, rnd):
        batched.extend(parts.process(batch).chunks)
        parts = _save_and_load(parts)
    assert fold(batched).rows() == fold(per_input).rows()
    assert dict(parts.current_state) == dict(proc.current_state)


def test_the_lagging_rooms_lag_and_read_redacted_state() -> None:
    # The rooms above are worth their name: some leave the current state behind the forward
    # extremities (with an overlay, and moved on by later state changes), some serve a state
    # event redacted.
    lagged = overlaid = redacted = 0
    for seed in range(60):
        rnd = random.Random(seed)
        b, names = _lagging_room(rnd, rnd.randint(4, 14))
        proc = RoomProcessor(b.room_id, config=CONFIG)
        lags = has_overlay = False
        for n in names:
            proc.process([Incoming(b.raw(n))])
            lags = lags or _lags(proc)
            has_overlay = has_overlay or bool(proc.to_dict()["current_overlay"])
        lagged += lags
        overlaid += has_overlay
        redacted += bool(proc.to_dict()["redacted"])
    assert lagged >= 5 and overlaid >= 3 and redacted >= 5, (lagged, overlaid, redacted)
