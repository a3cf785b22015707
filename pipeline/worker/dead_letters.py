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


def refused(room_id: str, dl: DeadLetter, topic: str, headers: Any = None) -> bytes:
    """The dead letter of one of a room's inputs, read from ``topic`` where its ``source``
    says; ``headers`` are the input's own, when the shell still has them."""
    src = dl.source or {}
    raw = dl.raw
    value = (
        raw
        if isinstance(raw, bytes)
        else (raw.encode() if isinstance(raw, str) else orjson.dumps(raw))
    )
    return dead_letter.encode(
        dl.reason,
        topic=topic,
        partition=int(src.get("partition", -1)),
        offset=int(src.get("offset", -1)),
        key=room_id.encode(),
        value=value,
        headers=headers,
        event_id=dl.event_id,
    )
