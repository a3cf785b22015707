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
