"""Create Roomstream's topics, or verify existing ones and report drift.

Drift (a partition count or a config that differs from ``definitions``) is reported, never
silently accepted: a ``pdus`` topic with other partitions would move rooms between owners, and a
``chunks`` topic with more than one would lose the committer's total order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pipeline.config import Settings
from pipeline.errors import StackError
from topics.definitions import TopicSpec, topic_specs


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
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap})


def apply_topics(settings: Settings, timeout: float = 30.0) -> TopicReport:
    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except Exception as e:
        raise StackError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({e}); start it with "
            "`roomstream stack up` or set ROOMSTREAM_KAFKA_BOOTSTRAP"
        ) from e
    report = TopicReport()
    specs = {settings.topic(s.name): s for s in topic_specs(settings)}
    missing = [
        NewTopic(full, s.partitions, 1, config=s.config)
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
        actual = fut.result(timeout=timeout)
        for key, want in spec.config.items():
            got = actual[key].value if key in actual else None
            if got != want:
                report.drift.append(f"{full} has {key}={got}, the definition says {want}")
        if len(report.drift) == before:
            report.verified.append(full)
