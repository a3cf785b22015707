"""How a room processor's state is laid out in a key-value store (the worker's changelogged table).

A room's event index grows with every event, so it is not rewritten whole on every save:

    <room_id>                 the record: everything but the event index, plus segment marks
    <room_id> NUL <i>         segment i of the event index: entries from mark i to mark i+1

Segments are append-only; a save rewrites the record and the last (open) segment only, and
closes the open segment once it holds ``SEGMENT_ENTRIES`` entries. So a save costs what the
room's state and its newest events cost, whatever the room's history, and no stored value grows
without bound (a changelog message has a size limit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pipeline.room.batch import ProcessorConfig
from pipeline.room.parking import ParkingBudget
from pipeline.room.processor import RoomProcessor

SEGMENT_ENTRIES = 1000

Get = Callable[[bytes], bytes | None]


def record_key(room_id: str) -> bytes:
    return room_id.encode()


def segment_key(room_id: str, index: int) -> bytes:
    return room_id.encode() + b"\x00" + str(index).encode()


def save(proc: RoomProcessor, previous_record: bytes | None) -> list[tuple[bytes, bytes]]:
    """The (key, value) writes that store ``proc``, given the record stored before (or None).

    The record is last, so a reader that sees it sees every segment it names.
    """
    marks: list[list[int]] = [[0, 0]]
    if previous_record is not None:
        marks = orjson.loads(previous_record).get("segment_marks", marks)
    start = marks[-1]
    data = proc.to_dict(known_from=(start[0], start[1]))
    segment = {"events": data.pop("events"), "state_events": data.pop("state_events")}
    writes = [(segment_key(proc.room_id, len(marks) - 1), orjson.dumps(segment))]
    events, state_events = proc.known_counts()
    if (events - start[0]) + (state_events - start[1]) >= SEGMENT_ENTRIES:
        marks.append([events, state_events])
    data["segment_marks"] = marks
    writes.append((record_key(proc.room_id), orjson.dumps(data)))
    return writes


def load(
    record: bytes,
    get: Get,
    *,
    config: ProcessorConfig | None = None,
    budget: ParkingBudget | None = None,
    cls: type[RoomProcessor] = RoomProcessor,
) -> RoomProcessor:
    """The processor stored under ``record`` and its segments (fetched with ``get``)."""
    data: dict[str, Any] = orjson.loads(record)
    room_id = data["room_id"]
    events: dict[str, Any] = {}
    state_events: dict[str, Any] = {}
    for i in range(len(data.get("segment_marks", [[0, 0]]))):
        raw = get(segment_key(room_id, i))
        if raw is None:
            raise LookupError(
                f"segment {i} of room {room_id}'s stored state is missing; the store is "
                "incomplete (was the changelog truncated?)"
            )
        segment = orjson.loads(raw)
        events.update(segment["events"])
        state_events.update(segment["state_events"])
    data["events"] = events
    data["state_events"] = state_events
    return cls.from_dict(data, config=config, budget=budget)
