"""A worker keeps each room's event index within ``known_limit``: after a job, a room over it is
told its committed high-water and drops the oldest committed entries before it is stored, and
reads them back through its recall (PostgreSQL, stood in for here by the committed chunks;
``tests/integration/test_recall.py`` runs the real one). A recall that cannot read stops the
worker rather than deciding without the entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import psycopg2
import pytest

from pipeline.config import Settings
from pipeline.room import storage
from pipeline.room.batch import ProcessorConfig
from pipeline.room.known_events import Recalled, RecallFailed
from pipeline.room.processor import RoomProcessor
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.processing import Processing, Work
from pipeline.worker.recall import ATTEMPTS, PgRecall
from tests.unit.room.builder import ALICE, RoomBuilder
from tests.unit.room.test_bounded_index import CommittedRows

from .test_rebuild import _chunks, _job
from .test_rebuild import _processing as _rebuild_processing

LIMIT = 8


def _room(n: int) -> tuple[RoomBuilder, list[str]]:
    b = RoomBuilder()
    names = b.base()
    for i in range(n):
        b.message(f"M{i}", ALICE, prev=[names[-1]])
        names.append(f"M{i}")
    return b, names


def _processing(config: ProcessorConfig, committed: Any) -> Processing:
    return _rebuild_processing(None, config=config, committed=committed)


def _run(
    processing: Processing, b: RoomBuilder, batches: list[list[str]], rows: CommittedRows
) -> tuple[RoomProcessor, list[Any]]:
    proc: RoomProcessor | None = None
    stored: bytes | None = None
    segments: dict[bytes, bytes] = {}
    outputs = []
    for batch in batches:
        keys = storage.segment_keys(b.room_id, stored) if stored else []
        out = processing(
            Work(_job(b, batch, store=True), proc, stored, {k: segments.get(k) for k in keys})
        )
        rows.commit(_chunks(out))
        outputs.append(out.outputs)
        assert out.writes is not None
        segments.update(out.writes)
        stored = segments[storage.record_key(b.room_id)]
        proc = None  # each job loads the room from what was stored
    loaded = storage.load(stored, segments.get, config=processing.config) if stored else None
    assert loaded is not None
    return loaded, outputs


def test_a_room_over_its_bound_drops_committed_entries_and_decides_as_unbounded() -> None:
    b, names = _room(40)
    b.message("late", ALICE, prev=[names[6]])
    batches = [names[i : i + 5] for i in range(0, len(names), 5)] + [["late"], [names[3]]]
    rows = CommittedRows()
    # The committed high-water read after each job (the chunks are committed as they come).
    bounded = _processing(
        replace(ProcessorConfig(), recall=rows, known_limit=LIMIT), lambda _: rows.high_water
    )
    proc, outputs = _run(bounded, b, batches, rows)
    _, expected = _run(_processing(ProcessorConfig(), None), b, batches, CommittedRows())
    assert outputs == expected
    assert len(proc._known) <= LIMIT and proc.dropped_events > len(names) - LIMIT
    assert rows.calls  # the late event and the repeat read dropped entries


def test_a_committed_high_water_that_cannot_be_read_drops_nothing() -> None:
    b, names = _room(20)
    rows = CommittedRows()
    processing = _processing(
        replace(ProcessorConfig(), recall=rows, known_limit=LIMIT), lambda _: None
    )
    proc, _ = _run(processing, b, [names], rows)
    assert proc.dropped_events == 0 and len(proc._known) == len(names)


def test_a_recall_that_cannot_read_stops_the_worker_with_its_inputs_unacked() -> None:
    b, names = _room(20)
    rows = CommittedRows()
    processing = _processing(
        replace(ProcessorConfig(), recall=rows, known_limit=LIMIT), lambda _: rows.high_water
    )
    proc, _ = _run(processing, b, [names[i : i + 5] for i in range(0, len(names), 5)], rows)
    assert proc.dropped_events > 4
    b.message("late", ALICE, prev=[names[4]])

    def down(room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        raise RecallFailed("recalling failed 3 times, last with OperationalError")

    broken = _processing(replace(ProcessorConfig(), recall=down, known_limit=LIMIT), None)
    data = proc.to_dict()
    restored = RoomProcessor.from_dict(data, config=broken.config)
    with pytest.raises(WorkerStopped, match="recalling failed"):
        broken(Work(_job(b, ["late"]), restored, None))


def test_the_postgres_recall_retries_then_says_what_failed() -> None:
    recall = PgRecall(
        Settings(database_url="postgresql://nobody@127.0.0.1:1/none"), sleep=lambda s: None
    )
    attempts = []

    def refused() -> Any:
        attempts.append(1)
        raise psycopg2.OperationalError("connection refused")

    recall.reads.conn = refused  # type: ignore[method-assign]
    with pytest.raises(RecallFailed, match=r"room !r:x.*connection refused.*reachable"):
        recall("!r:x", ["$a", "$b"])
    assert len(attempts) == ATTEMPTS
