"""The dead letter the committer sends for a chunk it cannot commit, built by the one codec."""

from __future__ import annotations

from confluent_kafka import Message as KafkaMessage

from topics import dead_letter

__all__ = ["dead_letter_value"]


def dead_letter_value(rec: KafkaMessage, reason: str) -> bytes:
    """The dead-letter value for chunks record ``rec``: the reason, its source and its bytes."""
    return dead_letter.encode(
        reason,
        topic=rec.topic() or "",
        partition=rec.partition() or 0,
        offset=rec.offset() or 0,
        key=rec.key(),
        value=rec.value(),
        headers=rec.headers(),
    )
