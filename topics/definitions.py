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
    MISSING_EVENTS = "missing-events"
    SERVER_KEYS = "server-keys"


@dataclass(frozen=True)
class TopicSpec:
    name: Topic  # the full name is <prefix>.<name>
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    return [
        TopicSpec(
            Topic.PDUS,
            settings.pdu_partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "input PDUs, key room_id",
        ),
        TopicSpec(
            Topic.CHUNKS,
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
            Topic.INVALIDATIONS,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "one batched invalidation message per change, total order by position",
        ),
        TopicSpec(
            Topic.DEAD_LETTER,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            "every input that could not be processed, with why",
        ),
        TopicSpec(
            Topic.MISSING_EVENTS,
            1,
            {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
            "events a parked event needs, for federation front ends to fetch, key room_id",
        ),
        TopicSpec(
            Topic.SERVER_KEYS,
            # One partition: a worker reads all of it, and it stays small (a few keys a server).
            1,
            {"cleanup.policy": "compact"},
            "verify keys the front ends fetched, key server_name/key_id, for signature checks",
        ),
    ]
