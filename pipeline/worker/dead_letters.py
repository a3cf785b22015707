"""The dead-letter messages a worker writes: an input that names no room, and an input a room
processor refused (DESIGN.md, 'Topics': reason, source, key, the original value)."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.room.processor import DeadLetter
from topics import dead_letter

__all__ = ["refused", "unroutable"]


def unroutable(reason: str, message: Any) -> bytes:
    """The dead letter of an input read as ``message`` (a faust message) that names no room."""
    return dead_letter.encode(
        reason,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=message.headers,
    )


def refused(
    room_id: str,
    dl: DeadLetter,
    topic: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    headers: Any = None,
) -> bytes:
    """The dead letter of one of a room's inputs, read from ``topic``. ``partition``, ``offset``
    and ``headers`` are those of the input being processed, if any; an input parked earlier names
    where it was read in its own ``source``."""
    src = dl.source or {}
    part = int(src.get("partition", partition if partition is not None else -1))
    off = int(src.get("offset", offset if offset is not None else -1))
    raw = dl.raw
    value = (
        raw
        if isinstance(raw, bytes)
        else (raw.encode() if isinstance(raw, str) else orjson.dumps(raw))
    )
    return dead_letter.encode(
        dl.reason,
        topic=topic,
        partition=part,
        offset=off,
        key=room_id.encode(),
        value=value,
        headers=headers if offset is not None and off == offset else None,
        event_id=dl.event_id,
    )
