"""Recovery (B7): what a kill -9 costs while events keep arriving at a steady rate.

``measure_worker_recovery`` kills one of a run's workers mid-way through a paced produce and
starts it again at once, with the same worker ID (as a supervisor would). The rooms of the
partitions the killed worker owned (read from the processors' consumer group before the kill,
the killed member being the one gone from it afterwards) wait until a worker owns them again;
the figures are the time from the restart (and from the kill) until every one of those
partitions had an event produced after the kill announced, and the longest latency an event of
any other partition saw meanwhile, beside the longest it saw in as long a window before the kill.

``measure_takeover`` runs two committers (one active, one hot standby), kills the active one
with kill -9 mid-way through a paced produce and leaves the standby to take over; the figure is
the time from the kill until the first event produced after it is announced, beside the median
latency before the kill.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka.partitioner import murmur2
from confluent_kafka.admin import AdminClient

from pipeline.bench.e2e import PipelineRun, loss_note
from pipeline.bench.paced import probe_workload_shape
from pipeline.bench.runs import (
    Stalled,
    committer_active,
    wait_for_log,
    wait_for_progress,
    warm_up,
)
from pipeline.config import Settings
from pipeline.dev.local import (
    Child,
    Cluster,
    InvalidationWatcher,
    describe_group,
    event_ids_of,
    percentile,
    produce_timed,
)
from pipeline.dev.workload import generate_workload
from pipeline.errors import RoomstreamError
from pipeline.kafka_clients import confluent_config

ROOMS = 60  # enough that every one of the default 12 partitions has rooms


def partition_of(room_id: str, partitions: int) -> int:
    """The partition of a room key under Java's default partitioner (murmur2), which
    Roomstream's producers and workers use."""
    return int(murmur2(room_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class WorkerRecovery:
    rate: float
    killed_partitions: tuple[int, ...]
    ownership: str  # how the killed worker's partitions were found
    back_after_restart_s: float  # every killed partition announcing again, from the restart
    back_after_kill_s: float
    others_max_ms: float  # longest latency of another partition's event during the outage
    others_p99_ms: float
    others_before_max_ms: float  # the same, in as long a window before the kill
    restart_gap_s: float  # kill to restart
    lost: int = 0  # events never announced
    lost_reason: str = ""

    def loss_note(self) -> str:
        return _loss_note(self.lost, self.lost_reason)


@dataclass(frozen=True, slots=True)
class Takeover:
    rate: float
    takeover_s: float  # kill to the first announcement of an event produced after it
    max_ms: float  # longest latency of an event produced after the kill
    before_p50_ms: float
    before_max_ms: float
    lost: int = 0
    lost_reason: str = ""

    def loss_note(self) -> str:
        return _loss_note(self.lost, self.lost_reason)


def _loss_note(lost: int, reason: str) -> str:
    return loss_note(
        lost,
        "the events produced around the kill",
        reason,
        "the figures are over those it announced",
    )


@dataclass(frozen=True, slots=True)
class KillPlan:
    """How a recovery measurement produces around its kill -9: a workload of room version
    ``version`` (from ``seed``) at ``rate`` events/s, the kill after ``before_s`` seconds, and
    ``after_s`` seconds more; ``timeout`` bounds each wait."""

    rate: float
    version: str
    before_s: float
    after_s: float
    seed: int
    timeout: float


@dataclass(frozen=True, slots=True)
class _Produce:
    """A paced produce under way in the background."""

    plan: KillPlan
    ids: list[str | None]  # the event ID of each line
    keys: tuple[str | None, ...]  # the room of each line
    target: int  # the stream position once every event is announced
    thread: threading.Thread
    sent: dict[str, float]  # event ID -> when it was handed to the producer

    def finish(
        self, run: Settings, watcher: InvalidationWatcher, cluster: Cluster, what: str
    ) -> tuple[int, str]:
        """Wait for the rest of the produce and its announcement: (events lost, why) when the
        stream stalls short of the target, so a loss is reported beside the figures rather
        than hiding them."""
        self.thread.join(self.plan.timeout)
        try:
            wait_for_progress(
                run, lambda: watcher.position, self.target, self.plan.timeout, what, cluster=cluster
            )
        except Stalled as stalled:
            why = (
                f"a dead letter says: {stalled.reasons[0]}"
                if stalled.reasons
                else "nothing was dead-lettered"
            )
            return stalled.target - stalled.reached, why
        return 0, ""


def _produce_until_kill(run: Settings, watcher: InvalidationWatcher, plan: KillPlan) -> _Produce:
    """Start producing the plan's workload in the background; return when it is time to kill."""
    rooms, per_room = probe_workload_shape(int(plan.rate * (plan.before_s + plan.after_s)), ROOMS)
    wl = generate_workload(rooms, per_room, seed=plan.seed, forks=False)
    lines = list(wl.lines)
    ids = event_ids_of(lines, plan.version)
    target = watcher.position + wl.event_count
    sent: dict[str, float] = {}

    def produce() -> None:
        sent.update(produce_timed(run, lines, ids, rate=plan.rate))

    thread = threading.Thread(target=produce, name="paced-producer", daemon=True)
    thread.start()
    time.sleep(plan.before_s)
    return _Produce(plan, ids, wl.keys, target, thread, sent)


def group_assignment(settings: Settings) -> dict[str, set[int]]:
    """Member ID → partitions of the PDU topic, in the processors' consumer group now."""
    group = f"{settings.topic_prefix}-processors"
    topic = settings.topic_prefix + ".pdus"
    described = describe_group(AdminClient(confluent_config(settings)), group)
    if described is None:
        return {}
    out: dict[str, set[int]] = {}
    for m in described.members:
        parts = m.assignment.topic_partitions if m.assignment else []
        out[m.member_id] = {tp.partition for tp in parts if tp.topic == topic}
    return out


def killed_partitions(
    before: Mapping[str, set[int]], after: Mapping[str, set[int]]
) -> set[int] | None:
    """The partitions of the one member of ``before`` missing from ``after``; None when that is
    not exactly one member."""
    gone = [m for m in before if m not in after]
    if len(gone) != 1:
        return None
    return set(before[gone[0]])


def _restart(cluster: Cluster, child: Child, args: Sequence[str]) -> Child:
    child.kill9()
    cluster.children.remove(child)
    return cluster.start("worker", *args, name=child.name)


def recovery_figures(
    sent: Mapping[str, float],
    announced: Mapping[str, float],
    partition: Mapping[str, int],
    killed: set[int],
    *,
    kill_at: float,
    restart_at: float,
) -> tuple[float, float, float, float]:
    """(seconds from the restart until every killed partition is back, the longest and the
    p99 latency in ms of the other partitions' events produced during the outage, and their
    longest in as long a window before the kill). A killed partition is back at the first
    announcement of one of its events produced after the kill."""
    back: dict[int, float] = {}
    for e, t in sent.items():
        p = partition.get(e)
        if p in killed and t >= kill_at and e in announced:
            back[p] = min(back.get(p, float("inf")), announced[e])
    if not back:
        # A killed partition whose rooms got no event after the kill has nothing to tell.
        raise RoomstreamError(
            f"no event produced after the kill to the killed worker's partitions "
            f"{sorted(killed)} was announced: produce for longer after the kill"
        )
    back_at = max(back.values())
    outage = back_at - kill_at
    during = [
        (announced[e] - t) * 1000
        for e, t in sent.items()
        if partition.get(e) not in killed and kill_at <= t <= back_at and e in announced
    ]
    before = [
        (announced[e] - t) * 1000
        for e, t in sent.items()
        if partition.get(e) not in killed and kill_at - outage <= t < kill_at and e in announced
    ]
    return (
        back_at - restart_at,
        max(during, default=float("nan")),
        percentile(during, 0.99),
        max(before, default=float("nan")),
    )


def measure_worker_recovery(pr: PipelineRun, plan: KillPlan) -> WorkerRecovery:
    """Kill worker1 of ``pr`` with kill -9 after ``before_s`` seconds of producing at ``rate``,
    restart it at once, and keep producing for ``after_s`` seconds."""
    run, cluster, watcher = pr.settings, pr.cluster, pr.watcher
    before = group_assignment(run)
    victim = next(c for c in cluster.children if c.name == "worker1")
    produce = _produce_until_kill(run, watcher, plan)
    kill_at = time.monotonic()
    _restart(cluster, victim, ["--id", f"{run.topic_prefix}-w1"])
    restart_at = time.monotonic()
    lost, why = produce.finish(
        run, watcher, cluster, "the events produced around a worker's kill -9 to be announced"
    )
    partition = {
        e: partition_of(line_room, run.pdu_partitions)
        for e, line_room in zip(produce.ids, produce.keys, strict=True)
        if e is not None and line_room is not None
    }
    sent = produce.sent
    after = group_assignment(run)
    killed = killed_partitions(before, after)
    ownership = "the killed member's assignment in the consumer group before the kill"
    if killed is None or not killed:
        # Fall back on what the latencies say: the partitions that waited longest.
        killed, ownership = _slowest_partitions(sent, watcher.announced, partition, kill_at)
    back_after_restart, others_max, others_p99, before_max = recovery_figures(
        sent, watcher.announced, partition, killed, kill_at=kill_at, restart_at=restart_at
    )
    return WorkerRecovery(
        rate=plan.rate,
        killed_partitions=tuple(sorted(killed)),
        ownership=ownership,
        back_after_restart_s=back_after_restart,
        back_after_kill_s=back_after_restart + (restart_at - kill_at),
        others_max_ms=others_max,
        others_p99_ms=others_p99,
        others_before_max_ms=before_max,
        restart_gap_s=restart_at - kill_at,
        lost=lost,
        lost_reason=why,
    )


def _slowest_partitions(
    sent: Mapping[str, float],
    announced: Mapping[str, float],
    partition: Mapping[str, int],
    kill_at: float,
) -> tuple[set[int], str]:
    first: dict[int, float] = {}
    for e, t in sent.items():
        if t >= kill_at and e in announced and e in partition:
            p = partition[e]
            first[p] = min(first.get(p, float("inf")), announced[e] - kill_at)
    if not first:
        raise RoomstreamError("no event produced after the kill was announced")
    longest = max(first.values())
    chosen = {p for p, s in first.items() if s >= longest / 2}
    return chosen, (
        "the consumer group did not tell which member was killed, so the partitions whose "
        "first post-kill event waited at least half as long as the longest are taken as its"
    )


def measure_takeover(settings: Settings, plan: KillPlan) -> Takeover:
    """A fresh run with one worker and two committers; kill -9 the active one mid-produce."""
    with committer_active(settings, "takeover", workers=1, within=90) as (run, watcher, cluster):
        standby = cluster.start("committer", name="committer2")
        with contextlib.suppress(RoomstreamError):
            # Its words may change; a standby that said nothing still had 5 s to connect.
            wait_for_log(cluster, standby.name, "standing by", 30)
        warm_up(run, cluster, watcher, plan.seed + 1)
        produce = _produce_until_kill(run, watcher, plan)
        active = next(c for c in cluster.children if c.name == "committer")
        kill_at = time.monotonic()
        active.kill9()
        cluster.children.remove(active)
        lost, why = produce.finish(
            run, watcher, cluster, "the standby committer to announce everything after the kill"
        )
        sent = produce.sent
        announced = watcher.announced
        after = [(t, announced[e]) for e, t in sent.items() if t >= kill_at and e in announced]
        before = [
            (announced[e] - t) * 1000 for e, t in sent.items() if t < kill_at and e in announced
        ]
        if not after:
            raise RoomstreamError("no event produced after the kill was announced")
        return Takeover(
            rate=plan.rate,
            takeover_s=min(a for _, a in after) - kill_at,
            max_ms=max((a - t) * 1000 for t, a in after),
            before_p50_ms=percentile(before, 0.5),
            before_max_ms=max(before, default=float("nan")),
            lost=lost,
            lost_reason=why,
        )
