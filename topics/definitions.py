"""The topics of DESIGN.md ('Topics') as data: name, partitions, replicas and the configs we
insist on.

Replication comes from the settings. ``ROOMSTREAM_REPLICATION_FACTOR`` and
``ROOMSTREAM_MIN_INSYNC_REPLICAS`` of 0 (the default) resolve against the cluster
(``replication``): 3 replicas with 2 in sync on a cluster of three brokers or more, and as many
as there are brokers below that, so the local single-broker stack keeps working. An operator of
a production cluster sets both explicitly; an explicit value is never lowered to fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pipeline.config import Settings

DAY_MS = 24 * 3600 * 1000
CLUSTER_REPLICATION_FACTOR = 3


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
    replication_factor: int = 1


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync: int


def replication(settings: Settings, brokers: int) -> Replication:
    """The replication of every topic on a cluster of ``brokers`` brokers (see the docstring)."""
    factor = settings.replication_factor or max(1, min(CLUSTER_REPLICATION_FACTOR, brokers))
    # One replica may be down (a rolling restart) while writes still need a second copy.
    min_insync = settings.min_insync_replicas or max(1, factor - 1)
    return Replication(factor, min_insync)


def topic_specs(settings: Settings, brokers: int = CLUSTER_REPLICATION_FACTOR) -> list[TopicSpec]:
    r = replication(settings, brokers)
    retention = str(int(settings.retention_days * DAY_MS))

    def config(retention_ms: str = retention, **more: str) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": retention_ms,
            "min.insync.replicas": str(r.min_insync),
            **more,
        }

    return [
        TopicSpec(
            Topic.PDUS,
            settings.pdu_partitions,
            config(),
            "input PDUs, key room_id",
            r.factor,
        ),
        TopicSpec(
            Topic.CHUNKS,
            # One partition: the committer's total order of commits is this topic's order.
            1,
            config(**{"max.message.bytes": str(16 * 1024 * 1024)}),
            "room chunks, processors -> committer",
            r.factor,
        ),
        TopicSpec(
            Topic.INVALIDATIONS,
            1,
            config(),
            "one batched invalidation message per change, total order by position",
            r.factor,
        ),
        TopicSpec(
            Topic.DEAD_LETTER,
            1,
            config(str(int(settings.dead_letter_retention_days * DAY_MS))),
            "every input that could not be processed, with why",
            r.factor,
        ),
        TopicSpec(
            Topic.MISSING_EVENTS,
            1,
            config(),
            "events a parked event needs, for federation front ends to fetch, key room_id",
            r.factor,
        ),
        TopicSpec(
            Topic.SERVER_KEYS,
            # One partition: a worker reads all of it, and it stays small (a few keys a server).
            1,
            {"cleanup.policy": "compact", "min.insync.replicas": str(r.min_insync)},
            "verify keys the front ends fetched, key server_name/key_id, for signature checks",
            r.factor,
        ),
    ]
