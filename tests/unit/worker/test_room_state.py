"""A room's stored state is read from its own partition's database in the worker's RocksDB store,
whatever input is being taken meanwhile (``pipeline/worker/room_state.py``).

faust's RocksDB store reads a key from the database of the partition of the event being
processed when there is one. A room's job is often started while another room's input is being
taken (its holding ended, or a slot freed), and its stored state was looked up in that input's
partition: not found, the room was rebuilt from PostgreSQL after every assignment (the
"stored state was at event 0" warnings of every rebalance), and a room checked already and out
of the processor cache was processed as a new room.
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

import pytest
from faust.streams import _current_event

from pipeline.config import Settings
from pipeline.room import storage
from pipeline.worker.faust_app import make_app
from pipeline.worker.room_state import RoomStates
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)
ROOM = "!a:example.org"
ROOM_PARTITION = 3


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    """An input of another partition, being taken."""

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
def test_a_room_state_is_read_from_its_own_partition_while_another_input_is_taken(
    tmp_path: Path, store: str
) -> None:
    app = make_app(Settings(worker_store=store), tmp_path, "w1", ONE)
    table = app.Table("rooms", default=None, partitions=4)
    states = RoomStates(table.data, in_use=lambda room_id: False, owner=lambda room_id: 3)
    record = storage.record_key(ROOM)
    states.put([(record, b"the room's record")], ROOM_PARTITION)

    other = _Event(partition=1)
    token = _current_event.set(weakref.ref(other))  # type: ignore[arg-type]
    try:
        assert states.stored(ROOM) == b"the room's record", "read from another partition"
    finally:
        _current_event.reset(token)
    assert states.stored(ROOM) == b"the room's record"


def test_a_room_never_stored_reads_as_none(tmp_path: Path) -> None:
    app = make_app(Settings(), tmp_path, "w1", ONE)
    table = app.Table("rooms", default=None, partitions=4)
    states = RoomStates(table.data, in_use=lambda room_id: False, owner=lambda room_id: 3)
    assert states.stored(ROOM) is None
    assert states.processor(ROOM) == (None, None, {})


class _Proc:
    """A processor as the cache sees it: its footprint and its parked events."""

    def __init__(self, size: int, *, parked: bool = False) -> None:
        self.size = size
        self._parked = ["an event"] if parked else []

    def footprint(self) -> int:
        return self.size

    def parked(self) -> list[str]:
        return self._parked


def _cache(cache_bytes: int, in_use: frozenset[str] = frozenset(), size: int = 1000) -> RoomStates:
    return RoomStates(
        {},
        in_use=in_use.__contains__,
        owner=lambda room_id: 0,
        cache_size=size,
        cache_bytes=cache_bytes,
    )


def _keep(states: RoomStates, room_id: str, proc: _Proc) -> None:
    states.keep(room_id, proc)  # type: ignore[arg-type]


def test_the_processor_cache_drops_the_least_recently_used_rooms_beyond_its_bytes() -> None:
    states = _cache(cache_bytes=100)
    for room_id in ("a", "b", "c"):
        _keep(states, room_id, _Proc(40))
    assert list(states.cache) == ["b", "c"]
    assert states.cached_bytes == 80
    states.processor("b")  # used: now the most recent
    _keep(states, "d", _Proc(40))
    assert list(states.cache) == ["b", "d"]


def test_rooms_in_use_or_with_parked_events_stay_beyond_the_bytes() -> None:
    states = _cache(cache_bytes=100, in_use=frozenset({"busy"}))
    _keep(states, "busy", _Proc(60))
    _keep(states, "parked", _Proc(60, parked=True))
    _keep(states, "idle", _Proc(10))
    _keep(states, "last", _Proc(10))
    assert list(states.cache) == ["busy", "parked", "last"]
    assert states.cached_bytes == 130


def test_the_room_kept_last_stays_even_when_larger_than_all_the_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    states = _cache(cache_bytes=100)
    _keep(states, "small", _Proc(10))
    with caplog.at_level(logging.WARNING, logger="roomstream.worker"):
        _keep(states, "huge", _Proc(500))
        _keep(states, "huge", _Proc(500))
    assert list(states.cache) == ["huge"]
    assert states.cached_bytes == 500
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, "said once per room"
    assert "room huge's processor" in warnings[0]
    assert "ROOMSTREAM_WORKER_ROOM_CACHE_MB" in warnings[0]


def test_a_room_is_counted_at_its_size_when_last_measured() -> None:
    states = _cache(cache_bytes=100)
    proc = _Proc(90)
    _keep(states, "a", proc)
    proc.size = 20  # compacted while idle
    states.measure("a")
    _keep(states, "b", _Proc(70))
    assert list(states.cache) == ["a", "b"]
    assert states.cached_bytes == 90
    states.forget_all()
    assert states.cached_bytes == 0 and not states.cache


def test_the_processor_cache_still_holds_at_most_its_count_of_rooms() -> None:
    states = _cache(cache_bytes=10**9, size=2)
    for room_id in ("a", "b", "c"):
        _keep(states, room_id, _Proc(1))
    assert list(states.cache) == ["b", "c"]
