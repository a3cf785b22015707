"""``RoomProcessor.footprint``: its estimate of its own memory, which the worker's cache of
processors counts against ``ROOMSTREAM_WORKER_ROOM_CACHE_MB``, stays within a factor of what
tracemalloc measures, for rooms of every shape: many members, many messages, forks and merges,
parked events, parsed state events kept, and a processor loaded from its stored state."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import orjson
import pytest

from pipeline.dev.workload import HOME, REMOTE, generate_workload, user_id
from pipeline.dev.workload_builder import RoomBuilder, default_power_levels, opaque_tag
from pipeline.room import storage
from pipeline.room.processor import Incoming, RoomProcessor

# The estimate may be this far off either way.
LOW, HIGH = 0.67, 1.5


def _room(members: int, messages: int, tag: str) -> list[bytes]:
    b = RoomBuilder("10", tag=opaque_tag("footprint", 0, tag))
    creator = user_id(HOME, 0)
    b.create(creator)
    b.join(creator)
    b.state("m.room.power_levels", creator, default_power_levels(creator, b.rv))
    b.state("m.room.join_rules", creator, {"join_rule": "public"})
    for j in range(members):
        b.join(user_id(REMOTE if j % 2 else HOME, j + 1))
    for j in range(messages):
        b.message(creator, f"message {j}")
    return [e.line for e in b.events]


def _state_heavy() -> list[bytes]:
    workload = generate_workload(1, 300, seed=4, state_heavy=True)
    return list(workload.lines)


def _process(lines: list[bytes], *, compact: bool = True) -> RoomProcessor:
    proc = RoomProcessor(orjson.loads(lines[0])["room_id"])
    for i in range(0, len(lines), 200):
        proc.process([Incoming(x.decode(), source=None) for x in lines[i : i + 200]])
    if compact:
        proc.compact()
    return proc


def _measured(build: Callable[[], RoomProcessor]) -> tuple[RoomProcessor, int]:
    gc.collect()
    tracemalloc.start()
    try:
        proc = build()
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return proc, used


def _loaded(lines: list[bytes]) -> RoomProcessor:
    writes = dict(storage.save(_process(lines), None))
    record = writes[storage.record_key(orjson.loads(lines[0])["room_id"])]
    return storage.load(record, writes.get)


SHAPES: dict[str, Callable[[], RoomProcessor]] = {
    "a room of 20 state events": lambda: _process(_room(16, 0, "small")),
    "a room of 2,000 members": lambda: _process(_room(2000, 0, "members")),
    "a room of 3,000 messages": lambda: _process(_room(10, 3000, "messages")),
    "a room of forks, merges and state changes": lambda: _process(_state_heavy()),
    "parsed state events kept (not compacted)": lambda: _process(
        _room(200, 0, "parsed"), compact=False
    ),
    "a room loaded from its stored state": lambda: _loaded(_room(500, 500, "loaded")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_footprint_estimate_is_within_a_factor_of_the_memory_measured(shape: str) -> None:
    proc, used = _measured(SHAPES[shape])
    estimate = proc.footprint()
    assert LOW * used <= estimate <= HIGH * used, (
        f"{shape}: estimated {estimate:,} bytes, measured {used:,}"
    )


def test_parked_events_count_in_the_footprint() -> None:
    lines = _room(5, 0, "parked")
    proc = _process(lines[:-3])  # the last three joins wait for the one before them
    before = proc.footprint()
    proc.process([Incoming(x.decode(), source=None) for x in lines[-2:]])
    assert len(proc.parked()) == 2
    assert proc.footprint() - before >= sum(len(x) for x in lines[-2:])


def test_compacting_lowers_the_footprint() -> None:
    proc = _process(_room(100, 0, "compact"), compact=False)
    kept = proc.footprint()
    proc.compact()
    assert proc.footprint() < kept
