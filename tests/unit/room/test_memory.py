"""Memory at rest: a worker must hold 10,000 rooms of 20 state events each in under 300 MB.

At rest means idle and compacted: a shell calls ``RoomProcessor.compact()`` on a room that goes
idle (it drops the parsed state events kept to make the next inputs cheap)."""

from __future__ import annotations

import gc
import tracemalloc

from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import RoomBuilder

ROOMS = 40
BUDGET_PER_ROOM = 300_000_000 // 10_000


def test_rooms_of_twenty_state_events_fit_the_per_room_memory_budget() -> None:
    inputs = []
    for i in range(ROOMS):
        b = RoomBuilder(room_id=f"!room{i}:a.example")
        names = b.base()
        for j in range(15):
            b.member(f"J{j}", f"@user{j}:c.example")
            names.append(f"J{j}")
        inputs.append((b.room_id, b.raws(names)))
    gc.collect()
    tracemalloc.start()
    try:
        rooms = {}
        for room_id, raws in inputs:
            proc = RoomProcessor(room_id)
            proc.process(raws)
            proc.compact()
            rooms[room_id] = proc
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(len(p.current_state) == 20 for p in rooms.values())
    assert used / ROOMS < BUDGET_PER_ROOM, f"{used / ROOMS:.0f} bytes per room"
