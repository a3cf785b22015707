"""A bounded event index decides every event as the unbounded one does.

Each workload runs twice through a ``RoomProcessor``: unbounded, and with ``known_limit`` tiny
(so nearly every entry is dropped once committed) and a recall that answers from the chunks
committed so far, as PostgreSQL would. Every chunk, dead letter, duplicate count and request,
and at the end every event's entry, state and the room's current state, must be the same. Some
runs also save and restore the bounded processor through ``storage`` between batches, so the
compacted snapshots are read back too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.dev.workload import generate_workload
from pipeline.matrix.events import Event
from pipeline.matrix.room_versions import room_version
from pipeline.room import storage
from pipeline.room.batch import BatchResult, Incoming, ProcessorConfig
from pipeline.room.chunk import Chunk, StateRow
from pipeline.room.known_events import (
    ACCEPTED,
    REJECTED,
    SOFT_FAILED,
    KnownEvents,
    Recalled,
    RecallFailed,
    RecallNeeded,
    compact,
    recalled,
)
from pipeline.room.parking import ParkingLimits
from pipeline.room.processor import RoomProcessor
from tests.oracle.fuzz import generate
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from tests.unit.room.test_determinism import _inputs
from tests.unit.room.test_properties import STEP
from topics import chunk as chunk_codec

LIMIT = 8
ROWS_LIMIT = 6
PARKING = ParkingLimits(ttl_ms=50, per_room=6)


class CommittedRows:
    """What the committer stored of a room's chunks, as a ``Recall`` reads it back."""

    def __init__(self) -> None:
        self.entries: dict[str, Recalled] = {}
        self.group_rows: dict[int, tuple[StateRow, ...]] = {}
        self.redactions: dict[str, list[str]] = {}  # target -> redactions, in commit order
        self.high_water = 0
        self.calls: list[list[str]] = []
        self.group_calls: list[list[int]] = []
        self.redaction_calls: list[list[str]] = []

    def commit(self, chunks: Sequence[Chunk]) -> None:
        for chunk in chunks:
            rv = room_version(chunk.room_version)
            for ce in chunk.events:
                status = REJECTED if ce.rejected else SOFT_FAILED if ce.soft_failed else ACCEPTED
                event = Event.from_trusted(ce.pdu, rv, ce.event_id)
                self.entries.setdefault(ce.event_id, recalled(event, status, ce.state_group))
            for g in chunk.state_groups:
                self.group_rows.setdefault(g.id, tuple(g.delta))
            for r in chunk.redactions:
                self.redactions.setdefault(r.redacts, []).append(r.event_id)
            self.high_water = max(self.high_water, chunk.seq[1])

    def __call__(self, room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        self.calls.append(list(event_ids))
        return {e: self.entries[e] for e in event_ids if e in self.entries}

    def redactions_of(self, room_id: str, targets: Sequence[str]) -> Mapping[str, Sequence[str]]:
        self.redaction_calls.append(list(targets))
        return {t: self.redactions[t] for t in targets if t in self.redactions}

    def groups(self, room_id: str, group_ids: Sequence[int]) -> Mapping[int, Any]:
        self.group_calls.append(list(group_ids))
        return {g: self.group_rows[g] for g in group_ids if g in self.group_rows}


def _outputs(result: BatchResult) -> Any:
    return (
        [chunk_codec.encode(c) for c in result.chunks],
        result.dead_letters,
        result.duplicates,
        result.parked,
        result.missing_requests,
        result.open_requests,
    )


def _room_inputs(workload: Any, room_id: str) -> list[Incoming]:
    """The workload's inputs of ``room_id``, in order, each with its own receive time."""
    return [
        Incoming(line, received_ts=1000 + i)
        for i, (line, key) in enumerate(zip(workload.lines, workload.keys, strict=True))
        if key == room_id
    ]


def _batches(items: list[Incoming], rnd: random.Random, most: int) -> list[list[Incoming]]:
    out, i = [], 0
    while i < len(items):
        n = rnd.randint(1, most)
        out.append(items[i : i + n])
        i += n
    return out


def _run_both(
    room_id: str,
    batches: list[list[Incoming]],
    *,
    limit: int = LIMIT,
    rows_limit: int | None = ROWS_LIMIT,
    restore_every: int = 0,
) -> tuple[RoomProcessor, RoomProcessor, CommittedRows]:
    """Both processors over ``batches``; asserts every batch's outputs are the same."""
    plain = ProcessorConfig(parking=PARKING)
    rows = CommittedRows()
    bounded_config = ProcessorConfig(
        parking=PARKING,
        recall=rows,
        known_limit=limit,
        redaction_recall=rows.redactions_of,
        group_recall=rows.groups if rows_limit is not None else None,
        group_rows_limit=rows_limit,
    )
    unbounded = RoomProcessor(room_id, config=plain)
    bounded = RoomProcessor(room_id, config=bounded_config)
    store: dict[bytes, bytes] = {}
    for n, batch in enumerate(batches):
        expected = unbounded.process(batch)
        got = bounded.process(batch)
        assert _outputs(got) == _outputs(expected), f"batch {n} decided differently"
        rows.commit(got.chunks)
        bounded.release_committed(rows.high_water)
        # Everything is committed after each batch: the bounds hold.
        assert len(bounded._known) <= limit
        if rows_limit is not None:
            assert bounded.group_rows[0] <= rows_limit
        if restore_every and n % restore_every == 0:
            store.update(storage.save(bounded, store.get(storage.record_key(room_id))))
            record = store[storage.record_key(room_id)]
            bounded = storage.load(record, store.get, config=bounded_config)
            _assert_changelog_bounded(record, store, bounded, limit, len(batch))
    return unbounded, bounded, rows


def _assert_changelog_bounded(
    record: bytes, store: dict[bytes, bytes], proc: RoomProcessor, limit: int, batch: int
) -> None:
    """What the record names holds at most about twice what is held, plus one batch."""
    stored = 0
    for key in storage.segment_keys(proc.room_id, record):
        stored += len(orjson.loads(storage._unpack(store[key]))["events"])
    assert stored <= 2 * limit + 2 * batch + 1


def _assert_same_room(unbounded: RoomProcessor, bounded: RoomProcessor) -> None:
    assert bounded.event_seq == unbounded.event_seq
    assert dict(bounded.current_state) == dict(unbounded.current_state)
    assert bounded.forward_extremities == unbounded.forward_extremities
    everything = unbounded.to_dict()
    for event_id, entry in everything["events"].items():
        assert bounded.is_known(event_id)
        ours_k, theirs_k = bounded._known[event_id], unbounded._known[event_id]
        # No prev_events and none kept read the same (a save keeps neither).
        assert ours_k._replace(prevs=ours_k.prevs or None) == theirs_k._replace(
            prevs=theirs_k.prevs or None
        )
        assert bounded.state_group_of(event_id) == entry[0]
        assert bounded._known.is_state_event(event_id) == unbounded._known.is_state_event(event_id)
        ours, theirs = bounded.get_event(event_id), unbounded.get_event(event_id)
        # As kept (a parsed event still cached may carry its hashes and signatures too).
        assert (compact(ours.pdu) if ours else None) == (compact(theirs.pdu) if theirs else None)
    for sg in [int(g) for g in everything["state_groups"]["groups"]]:
        assert dict(bounded.state_of_group(sg)) == dict(unbounded.state_of_group(sg))
    left_out = (
        "events",
        "state_events",
        "dropped",
        "state_groups",
        "pending_redactions",
        "pending_redactions_dropped",
    )
    rest = {k: v for k, v in everything.items() if k not in left_out}
    mine = bounded.to_dict()
    assert {k: v for k, v in mine.items() if k not in left_out} == rest
    # Pending redactions kept are the unbounded room's, less those dropped with their entries.
    for target, kept in mine["pending_redactions"].items():
        assert all(r in everything["pending_redactions"][target] for r in kept)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(STEP, min_size=4, max_size=30),
    st.randoms(use_true_random=False),
    st.sampled_from([1, 2, 8]),
    st.sampled_from([0, 1, 3]),
)
def test_shuffled_rooms_with_parking_and_duplicates_decide_the_same_bounded(
    steps: list[tuple[str, int, int, int | None]],
    rnd: random.Random,
    limit: int,
    restore_every: int,
) -> None:
    room_id, inputs = _inputs(steps, rnd)
    unbounded, bounded, _ = _run_both(
        room_id, _batches(inputs, rnd, 4), limit=limit, restore_every=restore_every
    )
    _assert_same_room(unbounded, bounded)


@pytest.mark.parametrize("seed", range(60))
def test_fuzzer_rooms_of_every_version_decide_the_same_bounded(seed: int) -> None:
    gen = generate(seed)
    inputs = [
        Incoming(dict(e.pdu), received_ts=100 + i, source={"offset": i})
        for i, e in enumerate(gen.arrivals)
    ]
    rnd = random.Random(seed)
    unbounded, bounded, rows = _run_both(
        gen.room_id, _batches(inputs, rnd, 3), limit=rnd.choice([1, 4, 8]), restore_every=2
    )
    _assert_same_room(unbounded, bounded)
    if unbounded.event_seq > LIMIT + 4:
        assert bounded.dropped_events > 0 and rows.calls, "the run never dropped or recalled"


@pytest.mark.parametrize(
    ("state_heavy", "bad_inputs"), [(False, 0), (True, 0), (False, 12), (True, 12)]
)
def test_generated_workloads_decide_the_same_bounded(state_heavy: bool, bad_inputs: int) -> None:
    workload = generate_workload(
        1, 400, seed=7, state_heavy=state_heavy, bad_inputs=bad_inputs, forks=True
    )
    (room_id,) = workload.rooms
    inputs = [
        Incoming(line, received_ts=1000 + i, source={"offset": i})
        for i, (line, key) in enumerate(zip(workload.lines, workload.keys, strict=True))
        if key == room_id
    ]
    unbounded, bounded, rows = _run_both(
        room_id, _batches(inputs, random.Random(3), 20), restore_every=5
    )
    _assert_same_room(unbounded, bounded)
    assert bounded.dropped_events > 300
    assert rows.calls
    assert bounded.group_rows[1] > 100 and rows.group_calls


def test_the_ids_a_batch_names_are_recalled_in_one_call_not_one_per_input() -> None:
    workload = generate_workload(1, 400, seed=7, forks=True)
    (room_id,) = workload.rooms
    inputs = _room_inputs(workload, room_id)
    batches = _batches(inputs, random.Random(3), 20)
    _, _, rows = _run_both(room_id, batches)
    # One call per batch, plus one per event state resolution reads beyond the batch's IDs.
    assert len(rows.calls) < len(inputs) // 4


def _linear_room(n: int) -> tuple[RoomBuilder, list[str]]:
    b = RoomBuilder()
    names = b.base()
    for i in range(n):
        name = f"M{i}"
        b.message(name, ALICE, prev=[names[-1]])
        names.append(name)
    return b, names


def test_without_a_recall_nothing_is_dropped() -> None:
    b, names = _linear_room(30)
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(known_limit=4))
    proc.process([b.raw(n) for n in names])
    assert proc.release_committed(proc.event_seq) == 0
    assert len(proc._known) == len(names)


def test_entries_not_yet_committed_are_never_dropped() -> None:
    b, names = _linear_room(30)
    rows = CommittedRows()
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(recall=rows, known_limit=4))
    proc.process([b.raw(n) for n in names])
    # The committer has stored the first 10 events only.
    dropped = proc.release_committed(10)
    assert dropped == 10
    assert list(proc._known._known) == [b.ids[n] for n in names[10:]]


def test_a_miss_in_an_index_that_dropped_entries_without_a_recall_raises() -> None:
    b, names = _linear_room(10)
    rows = CommittedRows()
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(recall=rows, known_limit=2))
    result = proc.process([b.raw(n) for n in names])
    rows.commit(result.chunks)
    proc.release_committed(rows.high_water)
    restored = RoomProcessor.from_dict(proc.to_dict())  # no recall in its config
    with pytest.raises(RecallNeeded):
        restored.process([b.raw(names[0])])


def test_a_failing_recall_stops_the_processor_rather_than_dead_lettering() -> None:
    b, names = _linear_room(10)
    rows = CommittedRows()

    def broken(room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        raise ConnectionError("the database is away")

    proc = RoomProcessor(b.room_id, config=ProcessorConfig(recall=rows, known_limit=2))
    rows.commit(proc.process([b.raw(n) for n in names]).chunks)
    proc.release_committed(rows.high_water)
    data = proc.to_dict()
    restored = RoomProcessor.from_dict(data, config=ProcessorConfig(recall=broken, known_limit=2))
    b.message("late", ALICE, prev=[names[3]])
    with pytest.raises(RecallFailed, match="the database is away"):
        restored.process([b.raw("late")])


def test_a_late_event_on_a_dropped_event_is_decided_as_unbounded() -> None:
    b, names = _linear_room(40)
    b.message("late", ALICE, prev=[names[5]])
    raws = [b.raw(n) for n in names]
    rows = CommittedRows()
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(recall=rows, known_limit=4))
    rows.commit(proc.process(raws).chunks)
    proc.release_committed(rows.high_water)
    assert b.ids[names[5]] not in proc._known._known  # dropped: answered by the recall
    expected = RoomProcessor(b.room_id)
    expected.process(raws)
    assert _outputs(proc.process([b.raw("late")])) == _outputs(expected.process([b.raw("late")]))
    assert rows.calls


def test_dropping_takes_the_state_events_of_the_dropped_entries_only() -> None:
    b, names = _linear_room(4)
    rows = CommittedRows()
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(recall=rows, known_limit=1))
    rows.commit(proc.process([b.raw(n) for n in names]).chunks)
    known: KnownEvents = proc._known
    held, state_held = known.counts()
    state_names = [n for n in names if "state_key" in b.pdus[n]]
    assert known.evict(len(names) - 4) == len(names) - 4
    assert known.counts() == (held, state_held)  # marks count what was dropped too
    assert len(known) == 4
    assert sorted(known._state_events) == sorted(
        b.ids[n] for n in state_names if b.ids[n] in known._known
    )


def test_compacted_snapshots_cut_into_segments_and_empty_the_old_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "SEGMENT_BYTES", 1500)
    workload = generate_workload(1, 200, seed=2, state_heavy=True)
    (room_id,) = workload.rooms
    inputs = _room_inputs(workload, room_id)
    rows = CommittedRows()
    config = ProcessorConfig(recall=rows, known_limit=LIMIT)
    proc = RoomProcessor(room_id, config=config)
    unbounded = RoomProcessor(room_id)
    store: dict[bytes, bytes] = {}
    most_segments = snapshots = 0
    for batch in _batches(inputs, random.Random(5), 10):
        got = proc.process(batch)
        assert _outputs(got) == _outputs(unbounded.process(batch))
        rows.commit(got.chunks)
        proc.release_committed(rows.high_water)
        previous = store.get(storage.record_key(room_id))
        writes = storage.save(proc, previous)
        store.update(writes)
        record = orjson.loads(store[storage.record_key(room_id)])
        named = storage.segment_count(store[storage.record_key(room_id)])
        if previous is not None and orjson.loads(previous).get("compacted_at") != record.get(
            "compacted_at"
        ):
            snapshots += 1
            # Every key the earlier record named beyond the new ones is emptied.
            for i in range(named, storage.segment_count(previous)):
                emptied = orjson.loads(storage._unpack(store[storage.segment_key(room_id, i)]))
                assert emptied == {"events": {}, "state_events": {}, "groups": {}}
        most_segments = max(most_segments, named)
        proc = storage.load(store[storage.record_key(room_id)], store.get, config=config)
    assert snapshots > 3 and most_segments > 2
    _assert_same_room(unbounded, proc)


def test_rows_of_state_groups_not_yet_committed_are_never_dropped() -> None:
    b = RoomBuilder()
    names = b.base()
    for i in range(30):
        b.topic(f"T{i}", ALICE, f"topic {i}", prev=[names[-1]])
        names.append(f"T{i}")
    rows = CommittedRows()
    config = ProcessorConfig(
        recall=rows, known_limit=1000, group_recall=rows.groups, group_rows_limit=2
    )
    proc = RoomProcessor(b.room_id, config=config)
    result = proc.process([b.raw(n) for n in names])
    rows.commit(result.chunks)
    # Only the first 10 events are committed: the groups the others made keep their rows.
    proc.release_committed(10)
    kept = {sg for sg, g in proc._groups._groups.items() if g.delta is not None}
    made_later = {
        g.id
        for c in result.chunks
        for g in c.state_groups
        if g.event_id in {b.ids[n] for n in names[10:]}
    }
    assert made_later and made_later <= kept
    assert proc.group_rows[1] > 0  # some of the committed ones were dropped


def test_pending_redactions_are_dropped_with_their_entries_and_applied_as_unbounded() -> None:
    b = RoomBuilder()
    names = b.base()
    sent: list[str] = list(names)
    tip = names[-1]
    for i in range(12):
        # A topic held back, redacted before it comes: by Alice (for any sender) and by Bob
        # (below the redact level: only for events from his own server), in turn.
        b.topic(f"T{i}", ALICE, f"held back {i}", prev=[tip])
        redactor = ALICE if i % 3 else BOB
        b.add(
            f"R{i}", "m.room.redaction", redactor, {}, prev=[tip], extra={"redacts": b.ids[f"T{i}"]}
        )
        b.add(
            f"X{i}",
            "m.room.redaction",
            ALICE,
            {},
            prev=[f"R{i}"],
            extra={"redacts": f"$never{i}:a.example"},
        )
        sent += [f"R{i}", f"X{i}"]
        for j in range(3):
            b.message(f"M{i}.{j}", ALICE, prev=[sent[-1]])
            sent.append(f"M{i}.{j}")
        tip = sent[-1]
    late = [f"T{i}" for i in range(12)]
    b.message("after", ALICE, prev=[tip, *late])
    inputs = [Incoming(b.raw(n), received_ts=1000) for n in [*sent, *late, "after"]]
    batches = _batches(inputs, random.Random(1), 5)
    unbounded, bounded, rows = _run_both(b.room_id, batches, limit=4, restore_every=2)
    _assert_same_room(unbounded, bounded)
    assert bounded._known._pending_dropped > 0 and rows.redaction_calls
    # The held-back topics were read redacted, as the unbounded room reads them.
    for i in range(12):
        ours, theirs = bounded.get_event(b.ids[f"T{i}"]), unbounded.get_event(b.ids[f"T{i}"])
        assert ours is not None and theirs is not None
        assert ours.content == theirs.content
    assert any(not unbounded.get_event(b.ids[f"T{i}"]).content for i in range(12))
