"""Paced load (B2): events produced one at a time at a steady rate, as homeserver front ends
produce them, and the latency each one sees from produce to the invalidation that names it.

``probe`` runs one rate through a pipeline run: a fresh workload of generated rooms produced with
linger 0, evenly spaced; the events sent in the first ``warm_s`` seconds only warm up (they are
produced and waited for, not counted), the next ``window_s`` seconds' events are measured.

``search_capacity`` finds the paced capacity: the highest rate whose probe keeps p99 within the
limit, by doubling from a start rate until a rate fails and then bisecting between the last
rate that passed and the first that failed; the best passing rate is probed once more to
confirm it, and a rate fails only when a second probe at it fails too. It takes the probe as
a function, so its logic is tested with fake latencies.
``curve_rates`` are the rates of the latency curve: fractions of the capacity and a fixed rate.

An event's latency runs from when it could first be processed (``ready_times``): its own send,
or the later send of an event it references (prev_events, auth_events). Rooms interleave by
their senders' clocks, so a few events arrive before an event they reference (in the generated
workloads, about 3% arrive up to ten events early, joins of the other server mostly); such an
event waits, parked, for that one, and at a low rate the wait is hundreds of milliseconds that
say how far apart the two were sent, not how fast the pipeline is. Synapse's persist path (B0)
is handed events whose references are there; so is this latency. How many events waited, and
for how long at most, is reported beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from pipeline.bench.cpu import CpuSampler
from pipeline.bench.report import CpuRow
from pipeline.bench.runs import cluster_groups
from pipeline.dev.local import event_ids_of, percentile, produce_timed
from pipeline.dev.workload import BASE_EVENTS, generate_workload

LIMIT_MS = 100.0  # p99 produce → invalidation at the paced capacity
CURVE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
FIXED_RATE = 20.0  # events/s: a small homeserver's load
PROBE_ROOMS = 50


@dataclass(frozen=True, slots=True)
class Probe:
    """One rate's measurement. ``ok``: every event announced and p99 within the limit."""

    rate: float  # events/s asked for
    achieved: float  # events/s the producer kept up over the measured window
    measured: int  # events whose latency counts
    p50_ms: float
    p99_ms: float
    max_ms: float
    lost: int = 0
    limit_ms: float = LIMIT_MS
    cpu: list[CpuRow] = field(default_factory=list, compare=False)
    # Measured events sent before an event they reference, and the longest such wait (ms).
    waited: int = 0
    longest_wait_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and self.measured > 0
            and not math.isnan(self.p99_ms)
            and self.p99_ms <= self.limit_ms
        )


@dataclass(slots=True)
class Search:
    """The probes of a capacity search in the order they ran, and what they found."""

    probes: list[Probe] = field(default_factory=list)
    capacity: float | None = None  # None: not even the lowest rate passed
    confirmed: bool | None = None  # the confirming probe passed (None: none was run)
    rechecked: int = 0  # rates whose probe went over the limit once and passed when run again
    note: str = ""

    def best(self) -> Probe | None:
        passed = [p for p in self.probes if p.ok and p.rate == self.capacity]
        return passed[-1] if passed else None


def search_capacity(
    probe: Callable[[float], Probe],
    *,
    start: float,
    max_rate: float,
    min_rate: float = 1.0,
    bisections: int = 3,
    precision: float = 0.1,
    confirm: bool = True,
    recheck: bool = True,
) -> Search:
    """The highest rate at which ``probe(rate).ok``.

    Doubles from ``start`` while probes pass (up to ``max_rate``); if ``start`` fails, halves
    until one passes (down to ``min_rate``). Then bisects between the last pass and the first
    failure, at most ``bisections`` times or until they are within ``precision`` (a fraction)
    of each other. A confirming probe at the found rate guards against one lucky window: if it
    fails, the capacity falls back to the best rate that passed below it. With ``recheck``, a
    probe over the limit guards against one unlucky window the same way: it is run again, and
    the rate fails only if that one fails too. A probe that lost events fails the rate at once.
    """
    s = Search()

    def once(rate: float) -> Probe:
        p = probe(round(rate, 1))
        s.probes.append(p)
        return p

    def run(rate: float) -> bool:
        p = once(rate)
        if p.ok or p.lost or not recheck:
            return p.ok
        if once(rate).ok:
            s.rechecked += 1
            return True
        return False

    lo: float | None = None
    hi: float | None = None
    rate = start
    if run(rate):
        lo = rate
        while rate * 2 <= max_rate:
            rate *= 2
            if not run(rate):
                hi = rate
                break
            lo = rate
        else:
            s.note = f"every rate passed up to the search's ceiling of {max_rate:,.0f} events/s"
    else:
        hi = rate
        while rate / 2 >= min_rate:
            rate /= 2
            if run(rate):
                lo = rate
                break
            hi = rate
    if lo is None:
        s.note = f"no rate down to {rate:,.1f} events/s kept p99 within the limit"
        return s
    for _ in range(bisections):
        if hi is None or hi - lo <= precision * lo:
            break
        mid = (lo + hi) / 2
        if run(mid):
            lo = mid
        else:
            hi = mid
    s.capacity = round(lo, 1)
    if confirm:
        s.confirmed = once(lo).ok  # not rechecked: a capacity must pass twice in a row
        if not s.confirmed:
            lower = [p.rate for p in s.probes if p.ok and p.rate < s.capacity]
            failed_at = s.capacity
            s.capacity = max(lower) if lower else None
            s.note = f"{failed_at:,.1f} events/s passed once and failed when probed again; " + (
                f"the capacity is the next rate that passed, {s.capacity:,.1f} events/s"
                if s.capacity is not None
                else "no lower rate was probed, so no capacity is claimed"
            )
    return s


def curve_rates(capacity: float, fixed: float = FIXED_RATE) -> list[tuple[str, float]]:
    """The latency curve's points: (label, rate), fractions of ``capacity`` then ``fixed``."""
    points = [(f"{f:.0%} of capacity", round(capacity * f, 1)) for f in CURVE_FRACTIONS]
    return [*points, (f"fixed {fixed:g} events/s", fixed)]


def probe_workload_shape(events: int, rooms: int = PROBE_ROOMS) -> tuple[int, int]:
    """(rooms, events per room) of a probe's workload holding at least ``events`` events."""
    per_room = max(BASE_EVENTS, math.ceil(events / rooms))
    return max(1, min(rooms, math.ceil(events / per_room))), per_room


def ready_times(
    lines: Sequence[bytes], ids: Sequence[str | None], sent: Mapping[str, float]
) -> dict[str, float]:
    """When each sent event could first be processed: the latest of its own send and the ready
    times of the sent events it references (prev_events and auth_events)."""
    refs: dict[str, list[str]] = {}
    for line, event_id in zip(lines, ids, strict=True):
        if event_id is None or event_id not in sent:
            continue
        try:
            pdu = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        named = [*pdu.get("prev_events", ()), *pdu.get("auth_events", ())]
        # Room versions 1 and 2 name references as [event_id, hashes] pairs.
        ids_named = [r[0] if isinstance(r, list) and r else r for r in named]
        refs[event_id] = [r for r in ids_named if isinstance(r, str) and r in sent]
    ready = dict(sent)
    # Few events wait and chains of them are short: relax until nothing moves.
    order = sorted(refs, key=sent.__getitem__)
    changed = True
    while changed:
        changed = False
        for event_id in order:
            latest = max((ready[r] for r in refs[event_id]), default=ready[event_id])
            if latest > ready[event_id]:
                ready[event_id] = latest
                changed = True
    return ready


def latency_stats(
    sent: dict[str, float], announced: dict[str, float], since: float
) -> tuple[list[float], int]:
    """Latencies (ms, in send order) of the events sent at or after ``since`` that were
    announced, and how many such events were not."""
    timeline = sorted((t, e) for e, t in sent.items() if t >= since)
    out = [(announced[e] - t) * 1000 for t, e in timeline if e in announced]
    return out, len(timeline) - len(out)


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """What every probe of a search shares: the measured window and the warm-up before it (s),
    how long the pipeline has to announce the events (s), the fewest events a slow rate's window
    is stretched to measure, and the pause for what the previous probe left behind (s)."""

    window_s: float
    warm_s: float
    timeout: float
    min_events: int = 150
    settle: float = 1.0


def probe(pr: object, rate: float, *, version: str, seed: int, plan: ProbePlan) -> Probe:
    """Produce at ``rate`` through the pipeline run ``pr``; the measured window's latencies.

    Events the pipeline does not announce (rejected or soft-failed by design) take no part; the
    workload's facts say which events to expect, so an expected event never announced is lost.
    """
    from pipeline.bench.e2e import PipelineRun, _await_announced

    assert isinstance(pr, PipelineRun)
    # A slow rate gets a longer window, so its percentiles rest on enough events; at most 3x.
    window = min(max(plan.window_s, plan.min_events / rate), 3 * plan.window_s)
    rooms, per_room = probe_workload_shape(math.ceil(rate * (plan.warm_s + window)))
    wl = generate_workload(rooms, per_room, seed=seed)
    lines = list(wl.lines)
    ids = event_ids_of(lines, version)
    expected = {
        e
        for f in wl.rooms.values()
        for e in f.event_ids
        if e not in f.rejected and e not in f.soft_failed
    }
    time.sleep(plan.settle)  # what the previous probe left behind (commits, flushes) finishes first
    target = pr.watcher.position + wl.event_count
    sampler = CpuSampler(cluster_groups(pr.settings, pr.cluster))
    sampler.start()
    started = time.monotonic()
    sent = produce_timed(pr.settings, lines, ids, rate=rate)
    produced_s = time.monotonic() - started
    lost, _reason, cpu = _await_announced(
        pr, target, plan.timeout, f"{wl.event_count} events paced at {rate:g}/s", sampler
    )
    ready = ready_times(lines, ids, sent)
    counted = {e: ready[e] for e in sent if e in expected}
    latencies, missing = latency_stats(counted, pr.watcher.announced, started + plan.warm_s)
    waits = [
        (ready[e] - sent[e]) * 1000
        for e in counted
        if ready[e] > sent[e] and ready[e] >= started + plan.warm_s
    ]
    return Probe(
        rate=rate,
        achieved=len(lines) / produced_s if produced_s > 0 else float("nan"),
        measured=len(latencies),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        lost=max(lost, missing),
        cpu=cpu,
        waited=len(waits),
        longest_wait_ms=max(waits, default=0.0),
    )


def describe(probes: Sequence[Probe]) -> list[str]:
    """Markdown table rows (rate, achieved, p50, p99, max, verdict) of ``probes``."""
    rows = []
    for p in probes:
        verdict = "pass" if p.ok else ("LOST events" if p.lost else "over the limit")
        rows.append(
            f"| {p.rate:,.1f} | {p.achieved:,.1f} | {p.measured:,} | {p.p50_ms:,.1f} | "
            f"{p.p99_ms:,.1f} | {p.max_ms:,.1f} | {verdict} |"
        )
    return rows
