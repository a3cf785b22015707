"""Replay-determinism and batching: the same inputs in the same order give the same chunks and
dead letters whatever happened around them (a crash and restore, the wall clock, other rooms),
and any batching of them leaves the same rows once the committer has applied the chunks."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.room import storage
from pipeline.room.batch import BatchResult, Incoming, ProcessorConfig
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import RoomProcessor
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
