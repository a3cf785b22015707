"""Create Roomstream's topics, or verify existing ones and report drift.

Drift (a partition count, a replication factor or a config that differs from ``definitions``) is
reported, never silently accepted: a ``pdus`` topic with other partitions would move rooms
between owners, a ``chunks`` topic with more than one would lose the committer's total order,
and a topic with fewer replicas or a lower ``min.insync.replicas`` than intended loses
acknowledged records when a broker dies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pipeline.config import Settings
from pipeline.errors import StackError
from pipeline.kafka_clients import confluent_config
from topics.definitions import Replication, TopicSpec, replication, topic_specs


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # one sentence per difference

    @property
    def ok(self) -> bool:
        return not self.drift

    def lines(self) -> list[str]:
        out = [f"created   {n}" for n in self.created]
        out += [f"ok        {n}" for n in self.verified]
        out += [f"DRIFT     {d}" for d in self.drift]
        return out


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(confluent_config(settings))


def delete_prefixed_topics(settings: Settings) -> None:
    """Delete every topic under the settings' prefix (faust's own included, and any made
    under a longer prefix), for a run or a test that is done: a broker that keeps every
    run's partitions runs out of file descriptors. Best effort: a failure leaves topics."""
    admin = admin_client(settings)
    with contextlib.suppress(Exception):
        names = [
            t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)
        ]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result()


def cluster_replication(settings: Settings, timeout: float = 30.0) -> Replication:
    """The replication the topics get on the cluster at ``settings.kafka_bootstrap``."""
    return replication(settings, len(_metadata(admin_client(settings), settings, timeout).brokers))


def _metadata(admin: AdminClient, settings: Settings, timeout: float) -> Any:
    try:
        return admin.list_topics(timeout=timeout)
    except Exception as e:
        raise StackError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({e}); start it with "
            "`roomstream stack up` or set ROOMSTREAM_KAFKA_BOOTSTRAP (and its credentials)"
        ) from e


def apply_topics(settings: Settings, timeout: float = 30.0) -> TopicReport:
    admin = admin_client(settings)
    md = _metadata(admin, settings, timeout)
    existing = md.topics
    brokers = len(md.brokers)
    report = TopicReport()
    specs = {settings.topic(s.name): s for s in topic_specs(settings, brokers)}
    wanted = next(iter(specs.values())).replication_factor
    if wanted > brokers:
        raise StackError(
            f"the topics need {wanted} replicas and Kafka at {settings.kafka_bootstrap} has "
            f"{brokers} broker(s); start more brokers or lower ROOMSTREAM_REPLICATION_FACTOR"
        )
    missing = [
        NewTopic(full, s.partitions, s.replication_factor, config=s.config)
        for full, s in specs.items()
        if full not in existing
    ]
    if missing:
        for name, fut in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                fut.result()
                report.created.append(name)
            except Exception as e:
                # Another process may have created it between listing and creating.
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise StackError(f"creating topic {name} failed: {e}") from e
                report.verified.append(name)
    present = {full: s for full, s in specs.items() if full in existing}
    if present:
        _verify(admin, present, existing, report, timeout)
    return report


def _verify(
    admin: AdminClient,
    present: dict[str, TopicSpec],
    existing: Mapping[str, Any],
    report: TopicReport,
    timeout: float,
) -> None:
    resources = [ConfigResource(ConfigResource.Type.TOPIC, full) for full in present]
    configs = admin.describe_configs(resources, request_timeout=timeout)
    for resource, fut in configs.items():
        full = resource.name
        spec = present[full]
        before = len(report.drift)
        partitions = len(existing[full].partitions)
        if partitions != spec.partitions:
            report.drift.append(
                f"{full} has {partitions} partitions, the definition says {spec.partitions}"
                + (
                    "; the committer needs exactly one"
                    if spec.partitions == 1
                    else "; rooms would move between owners: recreate it or set "
                    f"ROOMSTREAM_PDU_PARTITIONS={partitions}"
                )
            )
        replicas = {len(p.replicas) for p in existing[full].partitions.values()}
        if replicas != {spec.replication_factor}:
            report.drift.append(
                f"{full} has {'/'.join(map(str, sorted(replicas)))} replica(s) per partition, the "
                f"definition says {spec.replication_factor}; reassign its partitions "
                "(kafka-reassign-partitions) or set ROOMSTREAM_REPLICATION_FACTOR"
            )
        actual = fut.result(timeout=timeout)
        for key, want in spec.config.items():
            got = actual[key].value if key in actual else None
            if got != want:
                report.drift.append(f"{full} has {key}={got}, the definition says {want}")
        if len(report.drift) == before:
            report.verified.append(full)
