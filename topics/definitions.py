"""The topics of DESIGN.md ('Topics') as data: name, partitions and the configs we insist on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pipeline.config import Settings

DAY_MS = 24 * 3600 * 1000


class Topic(StrEnum):
    """Short names of the topics; ``Settings.topic(Topic.PDUS)`` gives the full name."""

    PDUS = "pdus"
    CHUNKS = "chunks"
    INVALIDATIONS = "invalidations"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class TopicSpec:
    name: str  # the short name; the full name is <prefix>.<name>
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(
            "pdus",
            settings.pdu_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "input PDUs, key room_id",
        ),
        TopicSpec(
            "chunks",
            # One partition: the committer's total order of commits is this topic's order.
            1,
            {
                "cleanup.policy": "delete",
                "retention.ms": str(7 * DAY_MS),
                "max.message.bytes": str(16 * 1024 * 1024),
            },
            "room chunks, processors -> committer",
        ),
        TopicSpec(
            "invalidations",
            1,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "one batched invalidation message per change, total order by position",
        ),
        TopicSpec(
            "dead-letter",
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            "every input that could not be processed, with why",
        ),
    ]
