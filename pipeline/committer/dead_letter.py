"""The dead-letter message the committer sends for a chunk it cannot commit (DESIGN.md)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from confluent_kafka import Message as KafkaMessage

__all__ = ["dead_letter_value"]


def dead_letter_value(rec: KafkaMessage, reason: str) -> bytes:
    """The dead-letter value for chunks record ``rec``: the reason, its source and its bytes."""
    value = rec.value() or b""
    key = rec.key()
    doc: dict[str, Any] = {
        "reason": reason,
        "source": {"topic": rec.topic(), "partition": rec.partition(), "offset": rec.offset()},
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    try:
        doc["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value_b64"] = base64.b64encode(value).decode()
    return orjson.dumps(doc)
