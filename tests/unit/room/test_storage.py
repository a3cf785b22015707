"""The stored layout of a room processor: saves stay small, loads give the same processor."""

from __future__ import annotations

import orjson
import pytest

from pipeline.dev.workload import generate_workload
from pipeline.room import storage
from pipeline.room.processor import RoomProcessor


def _room_lines(events: int, seed: int = 5) -> tuple[str, list[bytes]]:
    workload = generate_workload(1, events, seed=seed)
    (room_id,) = workload.rooms
    return room_id, list(workload.lines)


def _saved(proc: RoomProcessor, kv: dict[bytes, bytes]) -> int:
    """Apply one save to ``kv``; return the bytes it wrote."""
    writes = storage.save(proc, kv.get(storage.record_key(proc.room_id)))
    kv.update(writes)
    return sum(len(v) for _, v in writes)


def _saved_once(events: int) -> tuple[RoomProcessor, dict[bytes, bytes]]:
    """A room's processor after its ``events`` events in one batch, and a store it saved to."""
    room_id, lines = _room_lines(events)
    kv: dict[bytes, bytes] = {}
    proc = RoomProcessor(room_id)
    proc.process(lines)
    _saved(proc, kv)
    return proc, kv


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_a_room_saved_after_every_batch_loads_back_equal_and_continues_the_same(
    batch: int,
) -> None:
    room_id, lines = _room_lines(600)
    kv: dict[bytes, bytes] = {}
    proc = RoomProcessor(room_id)
    reference = RoomProcessor(room_id)
    half = len(lines) // 2
    for i in range(0, half, batch):
        proc.process(lines[i : min(i + batch, half)])
        reference.process(lines[i : min(i + batch, half)])
        _saved(proc, kv)
    loaded = storage.load(kv[storage.record_key(room_id)], kv.get)
    assert loaded.to_dict() == reference.to_dict()
    # Loaded mid-stream, it goes on exactly as the processor that never stopped.
    for line in lines[half:]:
        a, b = loaded.process([line]), reference.process([line])
        assert a.chunk == b.chunk
    assert loaded.to_dict() == reference.to_dict()


def test_a_save_writes_what_is_new_not_the_whole_history() -> None:
    room_id, lines = _room_lines(3000)
    kv: dict[bytes, bytes] = {}
    proc = RoomProcessor(room_id)
    written = []
    for line in lines:
        proc.process([line])
        written.append(_saved(proc, kv))
    whole = len(orjson.dumps(proc.to_dict()))
    # The last saves write the record and one open segment: far less than the whole state.
    assert max(written[-50:]) < whole / 2
    assert storage.segment_count(kv[storage.record_key(room_id)]) >= 3
    assert storage.load(kv[storage.record_key(room_id)], kv.get).to_dict() == proc.to_dict()


def test_a_missing_segment_is_an_error_naming_the_room() -> None:
    proc, kv = _saved_once(50)
    room_id = proc.room_id
    del kv[storage.segment_key(room_id, 0)]
    with pytest.raises(LookupError, match=f"segment 0 of room {room_id}"):
        storage.load(kv[storage.record_key(room_id)], kv.get)


def test_segments_are_stored_compressed_and_plain_json_segments_still_load() -> None:
    proc, kv = _saved_once(80)
    room_id = proc.room_id
    key = storage.segment_key(room_id, 0)
    packed = kv[key]
    assert packed[:1] == b"z"
    plain = storage._unpack(packed)
    assert len(packed) < len(plain) / 2
    kv[key] = plain  # as a store written without compression holds it
    assert storage.load(kv[storage.record_key(room_id)], kv.get).to_dict() == proc.to_dict()


def test_a_save_that_closes_a_segment_loads_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "SEGMENT_BYTES", 2000)
    room_id, lines = _room_lines(60)
    kv: dict[bytes, bytes] = {}
    proc = RoomProcessor(room_id)
    for line in lines:
        proc.process([line])
        _saved(proc, kv)
        loaded = storage.load(kv[storage.record_key(room_id)], kv.get)
        assert loaded.to_dict() == proc.to_dict()
    assert storage.segment_count(kv[storage.record_key(room_id)]) > 3


def _as_legacy(record: bytes, marks: list[list[int]]) -> bytes:
    """``record`` as a store written before the segment count was kept holds it."""
    data = orjson.loads(record)
    count = data.pop("segments")
    data.pop("open_mark")
    assert len(marks) == count
    data["segment_marks"] = marks
    return orjson.dumps(data)


def test_a_record_listing_every_segment_mark_loads_and_saves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "SEGMENT_BYTES", 2000)
    room_id, lines = _room_lines(120)
    kv: dict[bytes, bytes] = {}
    proc, reference = RoomProcessor(room_id), RoomProcessor(room_id)
    marks: list[list[int]] = []
    for line in lines[:60]:
        proc.process([line])
        reference.process([line])
        _saved(proc, kv)
        record = orjson.loads(kv[storage.record_key(room_id)])
        if len(marks) < record["segments"]:
            marks.append(record["open_mark"])
    assert len(marks) > 2
    key = storage.record_key(room_id)
    kv[key] = _as_legacy(kv[key], marks)
    loaded = storage.load(kv[key], kv.get)
    assert loaded.to_dict() == reference.to_dict()
    # Saving over the legacy record goes on from its last mark.
    for line in lines[60:]:
        loaded.process([line])
        reference.process([line])
        _saved(loaded, kv)
    assert "segment_marks" not in orjson.loads(kv[key])
    assert storage.load(kv[key], kv.get).to_dict() == reference.to_dict()


def test_the_record_does_not_grow_with_the_number_of_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage, "SEGMENT_BYTES", 1000)
    room_id, lines = _room_lines(300)
    kv: dict[bytes, bytes] = {}
    proc = RoomProcessor(room_id)
    sizes: dict[int, int] = {}
    for line in lines:
        proc.process([line])
        _saved(proc, kv)
        record = kv[storage.record_key(room_id)]
        sizes[storage.segment_count(record)] = len(orjson.loads(record).get("open_mark", []))
    assert max(sizes) > 20
    assert set(sizes.values()) == {3}  # one mark, however many segments
