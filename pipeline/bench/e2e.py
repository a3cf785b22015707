"""End-to-end measurements through the whole pipeline: producer → workers → committer →
invalidations, with the real broker and database of the local stack.

``pipeline_run`` starts a run (its own topics and database, workers, committer, an
invalidation watcher) and warms it up. Within it:

- ``measure_throughput`` produces a workload as fast as the producer goes and times it from
  the first produce to the invalidation that announces its last stream ordering (B1, and the
  scaling runs);
- ``measure_latency`` produces at a fixed rate and records, for each event that is announced,
  the time from handing it to the producer to the invalidation that names it (B2, B3).

Stream orderings are contiguous, so "everything committed and announced" is the watcher's
position reaching the position before the workload plus its event count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pipeline.bench.cpu import CpuSampler
from pipeline.bench.paced import ready_times
from pipeline.bench.report import CpuRow
from pipeline.bench.runs import (
    PromptWatcher,
    Stalled,
    cleanup,
    cluster_groups,
    fresh_run,
    logdir_of,
    wait_for_progress,
    warm_up,
)
from pipeline.config import Settings
from pipeline.dev.local import Cluster, InvalidationWatcher, event_ids_of, percentile, produce_timed
from pipeline.dev.local import running as start_cluster
from pipeline.dev.workload import Workload


def loss_note(lost: int, which: str, why: str, instead: str) -> str:
    """What a measurement says of the ``lost`` events of ``which`` the pipeline never announced
    (nothing when none): ``why``, and what its figures are over ``instead``."""
    if not lost:
        return ""
    return f" The pipeline LOST {lost:,} of {which}: they were never announced ({why}); {instead}."


@dataclass
class PipelineRun:
    settings: Settings
    cluster: Cluster
    watcher: InvalidationWatcher
    workers: int


class DeadLettered:
    """A measurement's note of the events the pipeline dead-lettered (``lost``, one dead letter's
    reason ``lost_reason``): which events they were of (``LOST_OF``) and what the figures are
    over instead (``FIGURES_OVER``)."""

    __slots__ = ()
    lost: int
    lost_reason: str | None
    LOST_OF: ClassVar[str]
    FIGURES_OVER: ClassVar[str]

    def loss_note(self) -> str:
        why = f"a dead letter says: {self.lost_reason}"
        return loss_note(self.lost, self.LOST_OF, why, self.FIGURES_OVER)


@dataclass(frozen=True, slots=True)
class Throughput(DeadLettered):
    events: int  # events committed and announced
    seconds: float
    workers: int
    cpu: list[CpuRow]
    lost: int = 0  # events of the workload never announced (the pipeline dead-lettered them)
    lost_reason: str | None = None

    LOST_OF = "the workload's events"
    FIGURES_OVER = "the rate is over the events it did announce, up to its last announcement"

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True, slots=True)
class Latency(DeadLettered):
    rate: float  # events/s produced
    sent: int
    announced: int  # latencies measured (accepted events of the rooms measured)
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu: list[CpuRow]
    # The excluded (slow) room's own latency, ms: its last announced event's.
    excluded_ms: float | None = None
    # p99 of the events sent in the first and in the second half of the produce: a second
    # half much slower than the first means the pipeline fell behind the rate (queueing).
    first_half_p99_ms: float = float("nan")
    second_half_p99_ms: float = float("nan")
    lost: int = 0  # events never announced (the pipeline dead-lettered them)
    lost_reason: str | None = None

    LOST_OF = "these events"
    FIGURES_OVER = "the latencies are of those it announced"

    def trend(self) -> str:
        a, b = self.first_half_p99_ms, self.second_half_p99_ms
        words = f"p99 of the first half of the events {a:,.0f} ms, of the second half {b:,.0f} ms"
        if b > 2 * a and b - a > 100:
            words += " (rising: the pipeline fell behind the rate and events queued)"
        return words


@contextlib.contextmanager
def pipeline_run(
    settings: Settings,
    tag: str,
    *,
    workers: int,
    worker_env: dict[str, str] | None = None,
    warm_seed: int = 900,
) -> Iterator[PipelineRun]:
    """A fresh run with ``workers`` workers and a committer, warmed up; deleted afterwards."""
    run = fresh_run(settings, tag)
    watcher = PromptWatcher(run)
    watcher.start()
    watcher.ready.wait(10)
    try:
        with start_cluster(run, logdir_of(run), workers=workers, worker_env=worker_env) as cl:
            warm_up(run, cl, watcher, warm_seed)
            yield PipelineRun(run, cl, watcher, workers)
    finally:
        watcher.stop()
        cleanup(run)


def _await_announced(
    pr: PipelineRun, target: int, timeout: float, what: str, sampler: CpuSampler
) -> tuple[int, str | None, list[CpuRow]]:
    """Wait until the stream position reaches ``target``; stop ``sampler``.

    Returns (events lost, the first dead-letter reason, CPU use). Events the pipeline
    dead-lettered never come: the figures are over those that did, and the loss is reported
    with them. A stall with nothing dead-lettered is a failure, raised.
    """
    lost, reason = 0, None
    try:
        wait_for_progress(
            pr.settings,
            lambda: pr.watcher.position,
            target,
            timeout,
            f"{what} (stream position)",
            cluster=pr.cluster,
        )
    except Stalled as stalled:
        if not stalled.reasons:
            sampler.stop()
            raise
        lost, reason = stalled.target - stalled.reached, stalled.reasons[0]
    except BaseException:
        sampler.stop()
        raise
    # CPU use up to the last announcement, not through the wait for what never came.
    return lost, reason, sampler.stop(until=pr.watcher.last_at if lost else None)


def measure_throughput(pr: PipelineRun, workload: Workload, timeout: float) -> Throughput:
    lines = list(workload.lines)
    target = pr.watcher.position + workload.event_count
    sampler = CpuSampler(cluster_groups(pr.settings, pr.cluster))
    sampler.start()
    started = time.monotonic()
    produce_timed(pr.settings, lines, [None] * len(lines))
    lost, reason, cpu = _await_announced(
        pr, target, timeout, f"{workload.event_count} events to be announced", sampler
    )
    ended = pr.watcher.last_at or time.monotonic()
    announced = workload.event_count - lost
    return Throughput(announced, ended - started, pr.workers, cpu, lost, reason)


def measure_latency(
    pr: PipelineRun,
    lines: Sequence[bytes],
    *,
    version: str,
    events: int,
    rate: float,
    timeout: float,
    exclude_lines: int = 0,
    settle: float = 2.0,
) -> Latency:
    """Produce ``lines`` at ``rate``; latencies of every announced event, each from when it
    could first be processed (``paced.ready_times``).

    ``events`` is how many events the lines hold (stream orderings they take). The first
    ``exclude_lines`` lines (a slow room's, produced first) are not paced and not counted;
    their room's own latency is reported apart.
    """
    ids = event_ids_of(lines, version)
    # Let what the previous measurement left behind (commits, flushes) finish first.
    time.sleep(settle)
    target = pr.watcher.position + events
    sampler = CpuSampler(cluster_groups(pr.settings, pr.cluster))
    sampler.start()
    head: dict[str, float] = {}
    if exclude_lines:
        head = produce_timed(pr.settings, lines[:exclude_lines], ids[:exclude_lines])
    sent = produce_timed(pr.settings, lines[exclude_lines:], ids[exclude_lines:], rate=rate)
    lost, reason, cpu = _await_announced(
        pr, target, timeout, f"{events} paced events to be announced", sampler
    )
    announced = pr.watcher.announced
    # From when each event could first be processed, as B2 measures (``paced.ready_times``).
    ready = ready_times(lines[exclude_lines:], ids[exclude_lines:], sent)
    timeline = sorted(
        (t, (announced[e] - ready[e]) * 1000) for e, t in sent.items() if e in announced
    )
    latencies = [ms for _, ms in timeline]
    half = len(latencies) // 2
    excluded = [(announced[e] - t) * 1000 for e, t in head.items() if e in announced]
    return Latency(
        rate=rate,
        sent=len(sent),
        announced=len(latencies),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        cpu=cpu,
        excluded_ms=max(excluded) if excluded else None,
        first_half_p99_ms=percentile(latencies[:half], 0.99),
        second_half_p99_ms=percentile(latencies[half:], 0.99),
        lost=lost,
        lost_reason=reason,
    )
