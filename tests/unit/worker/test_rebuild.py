"""DESIGN.md invariant 8 in the worker: a room's stored state behind the chunks committed or in
flight is rebuilt from PostgreSQL and those chunks before the room's first input is processed,
said (a warning, ``roomstream_worker_rooms_rebuilt_total``) and stored whole; a rebuild that
cannot read what it needs stops the worker instead of deciding events over a stale state.

PostgreSQL and the chunks topic are stood in for by the rows a committer would have written
(``tests.unit.room.fold``); ``tests/integration/test_rebuild.py`` runs the real thing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline import metrics
from pipeline.config import Settings
from pipeline.room import storage
from pipeline.room.batch import Incoming, ProcessorConfig
from pipeline.room.chunk import Chunk
from pipeline.room.parking import ParkingBudget
from pipeline.room.processor import RoomProcessor
from pipeline.room.rebuild import RoomRows
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.processing import Processed, Processing, Work
from pipeline.worker.rebuild import InFlight, Rebuilt, StoredRooms
from pipeline.worker.scheduling import Input, Job
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from tests.unit.room.fold import fold
from tests.unit.room.test_rebuild import _comparable, _rows
from topics import chunk as chunk_codec
from topics import missing_events
from topics.pdu_input import PduInput

from .fakes import Event

CONFIG = ProcessorConfig()
TS = 1_700_000_000_000  # the records' timestamps, the inputs' received_ts


@dataclass
class Rooms:
    """PostgreSQL and the chunks in flight, as a worker reads them."""

    high: int | None
    rows: RoomRows | None = None
    calls: list[str] = field(default_factory=list)

    def high_water(self, room_id: str) -> int | None:
        self.calls.append("high_water")
        return self.high

    def rebuild(self, room_id: str, build: Any) -> Rebuilt:
        self.calls.append("rebuild")
        assert self.rows is not None
        return Rebuilt(build(self.rows), self.rows.high_water - 1, 1)


def _room() -> tuple[RoomBuilder, list[str]]:
    b = RoomBuilder()
    names = b.base()
    for i in range(4):
        b.message(f"M{i}", ALICE if i % 2 else BOB)
        names.append(f"M{i}")
    b.topic("T", ALICE, "after the loss")
    return b, [*names, "T"]


def _processing(
    rooms: Rooms | None, *, config: ProcessorConfig = CONFIG, committed: Any = None
) -> Processing:
    return Processing(
        config=config,
        budget=ParkingBudget(100),
        pdus_topic="p.pdus",
        chunks_topic="p.chunks",
        dead_letter_topic="p.dead-letter",
        missing_topic="p.missing-events",
        rooms=rooms,
        committed=committed,
    )


def _job(b: RoomBuilder, names: list[str], *, store: bool = False) -> Job:
    inputs = [
        Input(Event(i), PduInput(b.room_id, b.raw(n)), 0, i, TS, 1) for i, n in enumerate(names)
    ]
    return Job(b.room_id, inputs, len(inputs), store=store)


def _chunks(out: Processed) -> list[Chunk]:
    return [chunk_codec.decode(v) for t, v in out.outputs if t == "p.chunks"]


def _straight(b: RoomBuilder, names: list[str]) -> tuple[RoomProcessor, list[Chunk]]:
    proc = RoomProcessor(b.room_id, config=CONFIG)
    return proc, [
        c for n in names for c in proc.process([Incoming(b.raw(n), received_ts=TS)]).chunks
    ]


@pytest.mark.parametrize(
    ("stored_upto", "high", "rebuilt"),
    [(0, 0, False), (9, 9, False), (9, 6, False), (9, None, False), (0, 9, True), (4, 9, True)],
    ids=["new-room", "up-to-date", "ahead", "unknown", "lost", "stale"],
)
def test_a_room_behind_the_chunks_committed_or_in_flight_is_rebuilt_before_its_first_input(
    stored_upto: int, high: int | None, rebuilt: bool, caplog: pytest.LogCaptureFixture
) -> None:
    b, names = _room()
    head, last = names[:-1], names[-1]
    straight, sent = _straight(b, head)
    stale, _ = _straight(b, head[:stored_upto])
    rooms = Rooms(high, _rows(b.room_id, fold(sent), sent))
    before = metrics.ROOMS_REBUILT._value.get()
    work = Work(_job(b, [last]), stale if stored_upto else None, None, check=True)
    with caplog.at_level(logging.WARNING, logger="roomstream.worker"):
        out = _processing(rooms)(work)
    assert out.checked and out.rebuilt is rebuilt
    assert rooms.calls == (["high_water", "rebuild"] if rebuilt else ["high_water"])
    assert metrics.ROOMS_REBUILT._value.get() - before == int(rebuilt)
    chunks = _chunks(out)
    if not rebuilt:
        # Decided over the state it had (a new room's first input waits for the create event).
        assert [c.seq[0] for c in chunks] == ([stored_upto + 1] if stored_upto else [])
        assert not caplog.records
        return
    (chunk,) = chunks
    # The input was decided over the rebuilt room: the chunk the room would have sent.
    expected = straight.process([Incoming(b.raw(last), received_ts=TS)]).chunks
    assert (chunk.seq, chunk.digest) == (expected[0].seq, expected[0].digest)
    # Stored whole, so a later load is the rebuilt room, not the replaced state's layout.
    assert out.writes is not None
    kv = dict(out.writes)
    loaded = storage.load(kv[storage.record_key(b.room_id)], kv.get, config=CONFIG)
    assert _comparable(loaded) == _comparable(straight)
    (record,) = caplog.records
    assert "Rebuilt from PostgreSQL" in record.getMessage()
    assert f"stored state was at event {stored_upto}, behind event 9" in record.getMessage()
    assert "9 events (5 state events), 5 state groups" in record.getMessage()


def test_the_parked_events_of_the_replaced_state_are_taken_over_with_their_requests() -> None:
    b, names = _room()
    b.message("Y", ALICE, prev=["MB"])
    b.message("X", BOB, prev=["Y"])
    # The stored state saw X before Y: X parked, its request for Y open. Y came and released X
    # in the history that was lost, and both were committed.
    stale, _ = _straight(b, [*names[:5], "X"])
    assert [p.event_id for p in stale.parked()] == [b.ids["X"]]
    _, sent = _straight(b, [*names[:5], "Y", "X"])
    rooms = Rooms(high=7, rows=_rows(b.room_id, fold(sent), sent))
    out = _processing(rooms)(Work(_job(b, names[5:6]), stale, None, check=True))
    assert out.rebuilt and out.proc.parked() == []
    requests = [missing_events.decode(v) for t, v in out.outputs if t == "p.missing-events"]
    assert [(r.missing, r.status) for r in requests] == [((b.ids["Y"],), "answered")]
    assert [c.seq for c in _chunks(out)] == [(8, 8)]


def test_only_a_rooms_first_job_since_the_assignment_is_checked() -> None:
    b, names = _room()
    rooms = Rooms(high=50)
    out = _processing(rooms)(Work(_job(b, names), None, None, check=False))
    assert rooms.calls == [] and not out.checked
    # A store-only job checks nothing either (it has no input to decide).
    out = _processing(rooms)(Work(Job(b.room_id, [], 0, store=True), None, None, check=True))
    assert rooms.calls == [] and not out.checked


def test_a_stored_state_with_a_segment_missing_is_rebuilt_even_after_the_first_job() -> None:
    b, names = _room()
    straight, sent = _straight(b, names[:-1])
    record = dict(storage.save(straight, None))[storage.record_key(b.room_id)]
    rooms = Rooms(high=9, rows=_rows(b.room_id, fold(sent), sent))
    # The record names segment 0, which the (truncated) changelog no longer holds.
    out = _processing(rooms)(Work(_job(b, names[-1:]), None, record, {}, check=False))
    assert out.rebuilt and rooms.calls == ["high_water", "rebuild"]
    with pytest.raises(WorkerStopped):  # without PostgreSQL to rebuild from, as before
        _processing(None)(Work(_job(b, names[-1:]), None, record, {}, check=False))


def test_a_rebuild_that_cannot_read_postgres_stops_the_worker_after_retries() -> None:
    b, names = _room()
    committed = iter([9])
    stored = StoredRooms(Settings(), lambda room_id: next(committed), sleep=lambda s: None)
    stored.in_flight = InFlight(lambda: None, lambda start: [])
    attempts = []

    def down(room_id: str, build: Any) -> Rebuilt:
        attempts.append(room_id)
        raise psycopg2.OperationalError("connection refused")

    stored._rebuild = down  # type: ignore[method-assign]
    processing = _processing(None)
    processing.rooms = stored
    with pytest.raises(WorkerStopped) as stopped:
        processing(Work(_job(b, names[-1:]), None, None, check=True))
    assert stopped.value.reason == "rebuild"
    assert "rebuilding room" in str(stopped.value) and "connection refused" in str(stopped.value)
    assert len(attempts) == 3


def test_chunks_in_flight_are_read_once_per_assignment_for_the_workers_own_rooms() -> None:
    b, names = _room()
    _, sent = _straight(b, names)
    other = RoomBuilder(room_id="!other:a.example")
    other_names = other.base()
    _, theirs = _straight(other, other_names)
    records: list[tuple[int, bytes | None, bytes | None]] = [
        (10 + i, c.room_id.encode(), chunk_codec.encode(c))
        for i, c in enumerate([*sent[:3], *theirs, *sent[3:]])
    ]
    records.append((99, b.room_id.encode(), b"not a chunk"))
    reads: list[int | None] = []

    def read(start: int | None) -> list[tuple[int, bytes | None, bytes | None]]:
        reads.append(start)
        return records

    flight = InFlight(lambda: 10, read)
    flight.reset(lambda room_id: room_id == b.room_id)
    assert flight.high_water(b.room_id) == sent[-1].seq[1]
    assert flight.high_water("!other:a.example") == 0  # not this worker's
    # From the committer's offset in a later snapshot: what it committed since is left out.
    later = flight.chunks(b.room_id, 12)
    assert [c.chunk_id for c in later] == [c.chunk_id for c in sent[2:]]
    assert reads == [10]
    flight.reset(lambda room_id: True)
    assert flight.high_water("!other:a.example") == theirs[-1].seq[1]
    assert reads == [10, 10]


def test_chunks_in_flight_that_cannot_be_read_leave_the_committed_high_water(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unreachable(start: int | None) -> list[tuple[int, bytes | None, bytes | None]]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    stored = StoredRooms(Settings(), lambda room_id: 7, sleep=lambda s: None)
    stored.in_flight = InFlight(lambda: 3, unreachable)
    with caplog.at_level(logging.WARNING, logger="roomstream.worker"):
        assert stored.high_water("!r:a.example") == 7
    assert "checked against what PostgreSQL committed only" in caplog.text
    assert StoredRooms(Settings(), lambda room_id: None).high_water("!r:a.example") is None


def test_chunks_in_flight_are_read_ahead_and_an_assignment_meanwhile_reads_them_again() -> None:
    b, names = _room()
    _, sent = _straight(b, names)
    records: list[tuple[int, bytes | None, bytes | None]] = [
        (i, c.room_id.encode(), chunk_codec.encode(c)) for i, c in enumerate(sent)
    ]
    reads: list[int | None] = []

    def read(start: int | None) -> list[tuple[int, bytes | None, bytes | None]]:
        reads.append(start)
        return records

    flight = InFlight(lambda: 0, read)
    flight.prefetch()  # as on an assignment: read while faust restores the tables
    deadline = time.monotonic() + 10
    while not reads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flight.high_water(b.room_id) == sent[-1].seq[1]
    assert len(reads) == 1

    # A rebalance while the topic is read (on the loop: it must not wait for the read).
    def read_during_an_assignment(
        start: int | None,
    ) -> list[tuple[int, bytes | None, bytes | None]]:
        reads.append(start)
        if len(reads) == 2:
            flight.reset(lambda room_id: True)
        return records

    flight.read_chunks = read_during_an_assignment
    flight.reset(lambda room_id: True)
    assert flight.high_water(b.room_id) == sent[-1].seq[1]
    assert flight.high_water(b.room_id) == sent[-1].seq[1]
    # The read the assignment overtook is not kept: the next one is for the new assignment.
    assert len(reads) == 3
