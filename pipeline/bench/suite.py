"""The benchmark runner: runs B0–B9 in an order that lets them share runs and baselines, turns
what they measured into report sections, prints the table and writes BENCHMARKS.md and its
pictures.

Order: B0 (Synapse's persistence, the anchor every later figure is compared to), run A (B1
throughput; B2's capacity search and latency curve; B3's baseline at half the capacity; B8's big
room; B7's worker kill, last since it kills one of the run's workers), B2's search with one
worker in a run of its own, the floor (B1's and B4's baseline), run B (B3 with a slow room), B4
(committer alone), B7's committer takeover, B6 (scaling, full mode only; memory), B9 (the
worker alone beside the pure room logic), B5 (state
resolution, CPU only, while nothing else of the suite runs). A benchmark that fails is reported
as not measured, with the reason, and the rest go on.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2

from pipeline import pg
from pipeline.bench.cpu import bound_of
from pipeline.bench.report import (
    Figure,
    Machine,
    Report,
    Section,
    cpu_rows,
    render_markdown,
    render_table,
)
from pipeline.config import Settings
from pipeline.dev.local import ROOT
from pipeline.dev.workload import generate_workload, slow_resolution_room
from pipeline.errors import RoomstreamError

if TYPE_CHECKING:
    from pipeline.bench.recovery import KillPlan

BENCHES = ("B0", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9")
DEFAULT_RATE = 50.0  # events/s for B3 and B7 when B2 found no capacity to give half of
PAIR_TARGET = 0.5  # B1 and B4: at least half the floor
ISOLATION_TARGET = 1.5  # B3: p99 with the slow room over p99 without
MEMORY_TARGET_MB = 300.0  # B6: at 10,000 rooms
MEMORY_TARGET_ROOMS = 10_000
FLOOR_REPEATS = 2


def describe_failure(exc: BaseException) -> str:
    """``exc`` in one line for the report; where the project raised it, when it says nothing
    (a ``TimeoutError`` from a future has no message)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if not str(exc):
        ours = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if "site-packages" not in f.filename and not f.filename.startswith(sys.base_prefix)
        ]
        if ours:
            where = ours[-1]
            text += f" (raised at {Path(where.filename).name}:{where.lineno} in {where.name})"
    return text[:600]


@dataclass(frozen=True)
class Sizes:
    mode: str
    rooms: int  # B1 (and B4, the floor): rooms × events_per_room
    events_per_room: int
    latency_s: float  # B2: seconds of paced produce
    isolation_s: float  # B3: seconds of paced produce of the other rooms
    slow_s: float  # B3: CPU seconds each of the slow room's state resolutions burns
    memory_rooms: int  # B6
    scaling_rooms: int = 0  # B6 scaling: 0 to skip
    scaling_events_per_room: int = 50
    scaling_workers: tuple[int, ...] = (1, 2, 3)
    timeout: float = 900.0  # per measurement
    # B0: Synapse's closed loop (rooms × events) and its paced phase (seconds at 20 events/s)
    synapse_rooms: int = 40
    synapse_events_per_room: int = 50
    synapse_paced_s: float = 15.0
    # B2: each probe's warm-up and measured window, the search's start, ceiling and bisections
    probe_warm_s: float = 3.0
    probe_window_s: float = 10.0
    probe_min_events: int = 150  # a slow probe's window is stretched to measure this many
    search_start: float = 25.0
    search_max: float = 3200.0
    bisections: int = 3
    # B7: seconds of paced produce before and after the kill
    recovery_before_s: float = 8.0
    recovery_after_s: float = 20.0
    # B8: the big room's members, messages and state changes; the small room's members
    big_members: int = 20_000
    big_messages: int = 100
    big_state_changes: int = 100
    small_members: int = 50
    # B9: the worker alone over (rooms, events per room) of the generated and the state-heavy
    # workloads
    worker_generated: tuple[int, int] = (400, 25)
    worker_state_heavy: tuple[int, int] = (50, 100)
    # ... and of the generated workload sent one event at a time: (rooms, events per room, rate)
    worker_paced: tuple[int, int, float] = (40, 25, 100.0)


FULL = Sizes("full", 1000, 50, 30.0, 15.0, 5.0, 10_000, scaling_rooms=400)
QUICK = Sizes(
    "quick",
    200,
    25,
    12.0,
    12.0,
    5.0,
    2_000,
    timeout=300.0,
    synapse_rooms=20,
    synapse_events_per_room=25,
    synapse_paced_s=8.0,
    probe_warm_s=2.0,
    probe_window_s=5.0,
    probe_min_events=100,
    bisections=1,
    recovery_before_s=5.0,
    recovery_after_s=12.0,
    big_members=2_000,
    big_messages=40,
    big_state_changes=40,
    worker_paced=(20, 15, 100.0),
)
TINY = Sizes(
    "tiny",
    12,
    10,
    3.0,
    4.0,
    1.0,
    100,
    timeout=180.0,
    synapse_rooms=4,
    synapse_events_per_room=10,
    synapse_paced_s=3.0,
    probe_warm_s=1.0,
    probe_window_s=2.0,
    probe_min_events=20,
    search_start=20.0,
    search_max=80.0,
    bisections=0,
    recovery_before_s=3.0,
    recovery_after_s=6.0,
    big_members=100,
    big_messages=20,
    big_state_changes=8,
    small_members=10,
    worker_generated=(40, 10),
    worker_state_heavy=(10, 30),
    worker_paced=(6, 10, 30.0),
)


@dataclass
class Options:
    sizes: Sizes = QUICK
    only: frozenset[str] = frozenset(BENCHES)
    workers: int = 2
    output: Path | None = ROOT / "BENCHMARKS.md"
    command: str = "roomstream bench"
    say: Callable[[str], None] = field(default=lambda m: print(m, flush=True))


def _say_stderr(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def machine_info(settings: Settings) -> Machine:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    kafka = "unknown"
    pom = ROOT / "deploy" / "kafka" / "pom.xml"
    if pom.exists():
        found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
        kafka = f"Apache Kafka {found.group(1)}" if found else kafka
    postgres = "unknown"
    try:
        conn = pg.connect(settings)
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
        conn.close()
        postgres = f"PostgreSQL {row[0]}" if row else postgres
    except psycopg2.Error:
        pass
    from confluent_kafka import libversion

    return Machine(
        cpus=os.cpu_count() or 1,
        cpu_model=model,
        memory_gib=mem_kib / 1024 / 1024,
        kernel=f"{platform.system()} {platform.release()}",
        python=f"{platform.python_implementation()} {platform.python_version()}",
        kafka=kafka,
        librdkafka=libversion()[0],
        postgres=postgres,
        commit=_commit(),
        load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return f"{head} (with uncommitted changes in the tree)" if dirty else head or "unknown"


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


# --------------------------------------------------------------------------- sections


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _method_b1(s: Sizes, workers: int) -> str:
    return (
        f"{s.rooms:,} rooms × {s.events_per_room} events (`generate_workload`, seed 1: joins, "
        "messages, leaves, kicks, bans, power level, topic and name changes, redactions, "
        "forks from two servers and their merges, some rejected and soft-failed events), "
        f"through {workers} worker process(es) and one committer. After a warm-up workload "
        "(every partition, until announced), the workload is produced as fast as the producer "
        "goes; the time runs from the first produce to the invalidation message that "
        "announces the last stream ordering.\n\n"
        "Baseline, the *floor*, measured in the same run: the same PDUs produced to a fresh "
        "topic, read by one confluent-kafka consumer process that COPYs the events table's "
        "columns and the event_json rows into the same PostgreSQL (a fresh database with the "
        "same schema and indexes), one transaction per fetched batch, no Matrix logic (it only "
        "parses the JSON and computes the event ID). Time from the first produce to the last "
        f"commit. It is measured {FLOOR_REPEATS} times, each with a fresh topic and database, "
        "and the faster is kept."
    )


def _figure_pair(bench: str, name: str, tp: Any, floor: Any, note: str = "") -> Figure:
    base = floor.rate if floor is not None else None
    ratio = _ratio(tp.rate, base)
    lost = getattr(tp, "lost", 0)
    if lost:
        note += tp.loss_note()
    return Figure(
        bench,
        name,
        tp.rate,
        "events/s",
        baseline=base,
        baseline_name="floor" if base is not None else None,
        ratio=ratio,
        target=f">= {PAIR_TARGET}x the floor",
        # A run that lost events is not counted as meeting a throughput target.
        met=None if ratio is None or lost else ratio >= PAIR_TARGET,
        bound=bound_of(tp.cpu),
        note=note,
    )


@dataclass
class _State:
    """What earlier benchmarks hand later ones."""

    b1: Any = None
    floor: Any = None
    floors: list[Any] = field(default_factory=list)
    b3_base: Any = None
    rate: float = DEFAULT_RATE
    rate_source: str = f"a fixed {DEFAULT_RATE:.0f} events/s: B2 found no capacity"
    b0: Any = None  # SynapseResult
    searches: dict[int, Any] = field(default_factory=dict)  # workers -> paced.Search
    curve: list[tuple[str, Any]] = field(default_factory=list)  # (label, paced.Probe)


def run_suite(settings: Settings, opts: Options) -> Report:
    """Run the chosen benchmarks, in the order their dependencies need; a failed one is reported
    and the others still run."""
    from pipeline.dev.stack import Stack

    started = time.monotonic()
    Stack(settings).up(lambda m: opts.say(f"stack: {m}"))
    suite = _Suite(settings, opts)
    report = Report(
        started_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        mode=opts.sizes.mode,
        duration_s=0.0,
        command=opts.command,
        machine=machine_info(settings),
    )
    report.sections = suite.chosen()
    for step in (
        suite.b0_synapse,  # the anchor of every later figure
        suite.run_a,  # B1, B2 (2 workers), B3's baseline, B8 and B7's worker kill share one run
        suite.b2_one_worker,
        suite.b2_figures,
        suite.floor,  # B1's and B4's baseline
        suite.b1_figures,
        suite.b3_slow_room,
        suite.b4_committer,
        suite.b7_takeover,
        suite.b6_scaling_and_memory,
        suite.b9_worker_alone,
        suite.b5_state_resolution,
        suite.pictures,
    ):
        step()
    report.duration_s = time.monotonic() - started
    return report


class _Suite:
    """The benchmarks' sections, the workloads they share, and one method per step."""

    def __init__(self, settings: Settings, opts: Options) -> None:
        self.settings = settings
        self.opts = opts
        self.s = s = opts.sizes
        self.say = opts.say
        self.want = opts.only
        self.st = _State()
        workload = generate_workload(s.rooms, s.events_per_room, seed=1)
        self.lines = list(workload.lines)
        self.version = workload.room_version
        self.slow = slow_resolution_room(1)
        self.slow_lines = list(self.slow.lines)
        self.slow_id = next(iter(self.slow.rooms))
        self.workload = workload
        self.b0 = Section("B0", "Synapse's persistence path, the anchor", "")
        self.b1 = Section("B1", "End-to-end throughput", _method_b1(s, opts.workers))
        self.b2 = Section("B2", "Paced capacity and the latency curve", "")
        self.b3 = Section("B3", "Isolation from a slow room", "")
        self.b4 = Section("B4", "Committer alone", "")
        self.b5 = Section("B5", "State resolution against matrix-synapse", "")
        self.b6s = Section("B6", "Scaling with worker processes", "")
        self.b6 = Section("B6", "Worker memory per room", "")
        self.b7 = Section("B7", "Recovery from kill -9", "")
        # Every probe gets rooms of its own: a repeated workload would be deduplicated.
        self.probe_seeds = itertools.count(100)
        self.b8 = Section("B8", "Big rooms", "")
        self.b9 = Section("B9", "The worker alone, beside the pure room logic", "")

    def chosen(self) -> list[Section]:
        sections = [self.b0, self.b1, self.b2, self.b3, self.b4, self.b5]
        sections += [self.b6s] if self.s.scaling_rooms else []
        sections += [self.b6, self.b7, self.b8, self.b9]
        return [x for x in sections if x.bench in self.want]

    def attempt(self, section: Section, fn: Callable[[Section], None]) -> None:
        self.say(f"{section.bench}: {section.title} ...")
        t = time.monotonic()
        try:
            fn(section)
        except Exception as exc:  # a failed benchmark is reported; the others still run
            section.error = describe_failure(exc)
            self.say(f"{section.bench}: failed: {section.error}")
        else:
            self.say(f"{section.bench}: done in {time.monotonic() - t:.0f} s")

    def b3_latency(self, pr: Any) -> tuple[Any, Any]:
        """B3's workload (the slow room, then enough other rooms for ``isolation_s`` at the
        rate) through ``pr``: the latency of the other rooms' events, and those rooms."""
        from pipeline.bench.e2e import measure_latency

        s = self.s
        n = max(s.events_per_room, int(self.st.rate * s.isolation_s))
        others = generate_workload(max(1, n // s.events_per_room), s.events_per_room, seed=3)
        latency = measure_latency(
            pr,
            self.slow_lines + list(others.lines),
            version=self.version,
            events=self.slow.event_count + others.event_count,
            rate=self.st.rate,
            timeout=s.timeout,
            exclude_lines=len(self.slow_lines),
        )
        return latency, others

    # ------------------------------------------------------------------ the steps

    def b0_synapse(self) -> None:
        if "B0" in self.want:
            self.attempt(self.b0, self._b0)

    def _b0(self, sec: Section) -> None:
        from pipeline.bench.load_sections import b0_section
        from pipeline.bench.paced import FIXED_RATE
        from pipeline.bench.synapse_persist import measure_synapse

        s = self.s
        closed = generate_workload(s.synapse_rooms, s.synapse_events_per_room, seed=5)
        n = int(FIXED_RATE * s.synapse_paced_s)
        paced_rooms = max(1, min(10, n // 10))
        paced = generate_workload(paced_rooms, max(10, -(-n // paced_rooms)), seed=6)
        r = measure_synapse(
            self.settings,
            list(closed.lines),
            list(paced.lines),
            version=closed.room_version,
            paced_rate=FIXED_RATE,
            timeout=s.timeout,
        )
        self.st.b0 = r
        self.say(
            f"B0: Synapse {r.closed.rate:,.1f} events/s (10 rooms in flight), p50 "
            f"{r.closed.p50_ms:,.0f} ms, p99 {r.closed.p99_ms:,.0f} ms"
        )
        b0_section(
            sec,
            r,
            rooms=s.synapse_rooms,
            per_room=s.synapse_events_per_room,
            paced_rooms=paced_rooms,
        )

    def run_a(self) -> None:
        if not self.want & {"B1", "B2", "B3", "B7", "B8"}:
            return
        section = Section("A", "run A (B1, B2, B3's baseline, B7's worker kill, B8)", "")
        self.attempt(section, self._run_a)
        if section.error:
            why = f"its run did not start or stop cleanly: {section.error}"
            st = self.st
            for sec, measured in (
                (self.b1, st.b1),
                (self.b2, st.searches),
                (self.b3, st.b3_base),
                (self.b7, self.b7.figures),
                (self.b8, self.b8.figures),
            ):
                if not measured:
                    sec.error = sec.error or why

    def _run_a(self, _: Section) -> None:
        from pipeline.bench.e2e import measure_throughput, pipeline_run

        s, st, want, workers = self.s, self.st, self.want, self.opts.workers
        with pipeline_run(self.settings, "a", workers=workers) as pr:
            if "B1" in want:

                def throughput(_: Section) -> None:
                    st.b1 = measure_throughput(pr, self.workload, s.timeout)
                    self.say(
                        f"B1: {st.b1.rate:,.0f} events/s ({st.b1.events} in {st.b1.seconds:.1f} s)"
                    )

                self.attempt(self.b1, throughput)
            if "B2" in want:
                self.attempt(self.b2, lambda _sec: self._search_and_curve(pr, workers))
            if "B3" in want:

                def base(_: Section) -> None:
                    st.b3_base, _others = self.b3_latency(pr)

                self.attempt(self.b3, base)
            if "B8" in want:
                self.attempt(self.b8, lambda sec: self._big_rooms(sec, pr))
            if "B7" in want:
                # Last on this run: it kills one of its workers.
                self.attempt(self.b7, lambda sec: self._worker_kill(sec, pr))

    def _probe(self, pr: Any, tag: str) -> Callable[[float], Any]:
        from pipeline.bench.paced import ProbePlan, probe

        s, seeds = self.s, self.probe_seeds
        plan = ProbePlan(s.probe_window_s, s.probe_warm_s, s.timeout, min_events=s.probe_min_events)

        def run(rate: float) -> Any:
            p = probe(pr, rate, version=self.version, seed=next(seeds), plan=plan)
            self.say(
                f"B2 {tag}: {rate:,.1f} events/s: p50 {p.p50_ms:,.1f} ms, p99 "
                f"{p.p99_ms:,.1f} ms, max {p.max_ms:,.0f} ms ({'pass' if p.ok else 'fail'})"
            )
            return p

        return run

    def _search(self, pr: Any, workers: int) -> Any:
        from pipeline.bench.paced import search_capacity

        s = self.s
        found = search_capacity(
            self._probe(pr, f"{workers} worker(s)"),
            start=s.search_start,
            max_rate=s.search_max,
            # Three halvings at most: below that the pipeline's fixed latency is the answer.
            min_rate=s.search_start / 8,
            bisections=s.bisections,
        )
        self.st.searches[workers] = found
        self.say(f"B2: paced capacity with {workers} worker(s): {found.capacity} events/s")
        return found

    def _search_and_curve(self, pr: Any, workers: int) -> None:
        from pipeline.bench.paced import curve_rates

        st = self.st
        found = self._search(pr, workers)
        probe = self._probe(pr, "curve")
        if found.capacity is None:
            # No curve to draw, but the fixed rate still says how it does at a small load.
            label, rate = curve_rates(0.0)[-1]
            st.curve.append((label, probe(rate)))
            return
        st.rate = found.capacity / 2
        st.rate_source = f"half the paced capacity ({found.capacity:,.0f} events/s)"
        for label, rate in curve_rates(found.capacity):
            st.curve.append((label, probe(rate)))

    def b2_one_worker(self) -> None:
        if "B2" not in self.want or self.opts.workers == 1 or self.b2.error:
            return
        from pipeline.bench.e2e import pipeline_run

        def one(_: Section) -> None:
            with pipeline_run(self.settings, "c1", workers=1) as pr:
                self._search(pr, 1)

        self.attempt(self.b2, one)

    def b2_figures(self) -> None:
        if "B2" not in self.want or not self.st.searches:
            return
        from pipeline.bench.load_sections import (
            b2_method,
            capacity_figure,
            curve_details,
            fixed_rate_figures,
            search_details,
        )

        s, st, sec = self.s, self.st, self.b2
        searches = dict(sorted(st.searches.items()))
        sec.method = b2_method(
            window_s=s.probe_window_s,
            warm_s=s.probe_warm_s,
            min_events=s.probe_min_events,
            start=s.search_start,
            bisections=s.bisections,
            workers=list(searches),
        )
        sec.figures += [capacity_figure(n, found, st.b0) for n, found in searches.items()]
        if st.curve:
            sec.figures += fixed_rate_figures(st.curve[-1][1], st.b0)
            if len(st.curve) > 1:
                top = st.curve[-2][1]
                sec.cpu, sec.cpu_window = top.cpu, "at 100% of the paced capacity (its probe)"
            else:
                sec.cpu = st.curve[-1][1].cpu
                sec.cpu_window = f"at the fixed {st.curve[-1][1].rate:g} events/s"
            sec.details += curve_details(st.curve, st.b0, self.opts.workers)
        sec.details += search_details(searches)

    def _big_rooms(self, sec: Section, pr: Any) -> None:
        from pipeline.bench.big_room import measure_room
        from pipeline.bench.load_sections import b8_method, big_room_figures

        s = self.s
        join_slice = max(1, s.big_members // 20)
        sec.method = b8_method(
            members=s.big_members,
            small=s.small_members,
            messages=s.big_messages,
            state_changes=s.big_state_changes,
            join_slice=join_slice,
        )
        room = functools.partial(
            measure_room,
            pr,
            messages=s.big_messages,
            state_changes=s.big_state_changes,
            timeout=s.timeout,
        )
        _, small = room(members=s.small_members, tag="small")
        joins, big = room(members=s.big_members, tag="big", join_slice=join_slice)
        self.say(
            f"B8: {joins.last_ms:,.2f} ms per join near {s.big_members:,} members, "
            f"{joins.first_ms:,.2f} ms under {join_slice:,}"
        )
        sec.figures += big_room_figures(joins, big, small, s.big_members, self.st.b0)

    def _worker_kill(self, sec: Section, pr: Any) -> None:
        from pipeline.bench.load_sections import b7_method, worker_recovery_figures
        from pipeline.bench.recovery import measure_worker_recovery

        s, st = self.s, self.st
        sec.method = b7_method(
            rate=st.rate,
            before_s=s.recovery_before_s,
            after_s=s.recovery_after_s,
            workers=self.opts.workers,
        )
        if self.opts.workers < 2:
            raise RoomstreamError("the worker kill needs at least 2 workers (--workers)")
        w = measure_worker_recovery(pr, self._kill_plan(seed=31))
        self.say(f"B7: worker back {w.back_after_restart_s:.2f} s after its restart")
        sec.figures += worker_recovery_figures(w, st.b0)

    def _kill_plan(self, seed: int) -> KillPlan:
        """B7's produce around a kill: at the sustainable rate, for as long as configured."""
        from pipeline.bench.recovery import KillPlan

        s = self.s
        return KillPlan(
            rate=self.st.rate,
            version=self.version,
            before_s=s.recovery_before_s,
            after_s=s.recovery_after_s,
            seed=seed,
            timeout=s.timeout,
        )

    def b7_takeover(self) -> None:
        if "B7" not in self.want:
            return
        from pipeline.bench.load_sections import b7_method, takeover_figure
        from pipeline.bench.recovery import measure_takeover

        s, st, sec = self.s, self.st, self.b7

        def takeover(_: Section) -> None:
            sec.method = sec.method or b7_method(
                rate=st.rate,
                before_s=s.recovery_before_s,
                after_s=s.recovery_after_s,
                workers=self.opts.workers,
            )
            t = measure_takeover(self.settings, self._kill_plan(seed=41))
            self.say(f"B7: standby committer took over in {t.takeover_s:.2f} s")
            sec.figures.append(takeover_figure(t, st.b0))

        self.attempt(sec, takeover)

    def pictures(self) -> None:
        """The latency curve and the capacity search as PNG files beside the report."""
        st, out = self.st, self.opts.output
        if out is None or "B2" not in self.want or not st.searches:
            return
        from pipeline.bench.paced import FIXED_RATE

        try:
            from pipeline.bench.plots import (
                CURVE_FILE,
                SEARCH_FILE,
                Anchor,
                plot_curve,
                plot_search,
            )

            b0 = st.b0
            anchor = Anchor(
                b0.closed.rate if b0 else None,
                b0.paced.p50_ms if b0 and b0.paced else None,
                b0.paced.p99_ms if b0 and b0.paced else None,
                FIXED_RATE,
            )
            workers = self.opts.workers
            points, title = st.curve, f"Latency against paced rate, {workers} worker(s)"
            if len(st.curve) < 2 and workers in st.searches:
                # No capacity, so no curve over its fractions: every rate the search probed,
                # and the fixed rate, are still latency against rate.
                probes = st.searches[workers].probes
                points = [(f"probe {k}", p) for k, p in enumerate(probes, 1)] + st.curve
                title += " (the search's probes: no capacity was found)"
            plot_curve(points, anchor, out.parent / CURVE_FILE, title)
            links = [f"![The latency curve]({CURVE_FILE})"]
            searches = {f"{n} worker(s)": found.probes for n, found in st.searches.items()}
            capacities = {f"{n} worker(s)": found.capacity for n, found in st.searches.items()}
            plot_search(
                searches,
                capacities,
                anchor.rate,
                out.parent / SEARCH_FILE,
                "The paced-capacity search: each probe's p99",
            )
            links.append(f"![The capacity search]({SEARCH_FILE})")
        except ImportError as exc:
            self.b2.details.append(f"\nNo pictures: matplotlib is not installed ({exc}).")
            return
        self.b2.details[:0] = ["", *links]

    def floor(self) -> None:
        if not self.want & {"B1", "B4"}:
            return
        section = Section("B1", "floor", "")
        self.attempt(section, self._floor)
        if section.error:
            self.b1.details.append(f"The floor could not be measured: {section.error}")
            self.b4.details.append(f"The floor could not be measured: {section.error}")

    def _floor(self, _: Section) -> None:
        from pipeline.bench.floor import measure_floor

        # The floor stands for what the machine can do on this path, so the faster of two
        # measurements is kept: a figure compared to it is judged against the better one.
        st = self.st
        for _repeat in range(FLOOR_REPEATS):
            floor = measure_floor(self.settings, self.lines, self.version, self.s.timeout)
            st.floors.append(floor)
            self.say(f"floor: {floor.rate:,.0f} rows/s ({floor.rows} in {floor.seconds:.1f} s)")
        st.floor = max(st.floors, key=lambda f: f.rate)

    def b1_figures(self) -> None:
        if "B1" in self.want and self.st.b1 is not None:
            _b1(self.b1, self.st, self.opts.workers)

    def b3_slow_room(self) -> None:
        if "B3" not in self.want or self.b3.error:
            return
        if self.st.b3_base is None:
            self.b3.error = "its baseline (run A) did not run"
        else:
            self.attempt(self.b3, self._run_b)

    def _run_b(self, sec: Section) -> None:
        from pipeline.bench.e2e import pipeline_run

        s, st = self.s, self.st
        env = {"ROOMSTREAM_DEBUG_SLOW_ROOM": self.slow_id, "ROOMSTREAM_DEBUG_SLOW_S": str(s.slow_s)}
        with pipeline_run(self.settings, "b", workers=self.opts.workers, worker_env=env) as pr:
            lat, others = self.b3_latency(pr)
        _b3(
            sec,
            lat=lat,
            base=st.b3_base,
            room_id=self.slow_id,
            slow_lines=len(self.slow_lines),
            others=others,
            s=s,
            st=st,
        )

    def b4_committer(self) -> None:
        if "B4" in self.want:
            self.attempt(
                self.b4,
                lambda sec: _b4(
                    sec, self.settings, st=self.st, lines=self.lines, s=self.s, say=self.say
                ),
            )

    def b6_scaling_and_memory(self) -> None:
        if "B6" not in self.want:
            return
        if self.s.scaling_rooms:
            self.attempt(self.b6s, lambda sec: _scaling(sec, self.settings, self.s, self.say))
        self.attempt(self.b6, lambda sec: _memory(sec, self.settings, self.s))

    def b9_worker_alone(self) -> None:
        if "B9" in self.want:
            self.attempt(self.b9, lambda sec: _worker_alone(sec, self.settings, self.s))

    def b5_state_resolution(self) -> None:
        if "B5" in self.want:
            self.attempt(self.b5, lambda sec: _state_res(sec, self.s))


def _b1(sec: Section, st: _State, workers: int) -> None:
    tp, floor = st.b1, st.floor
    note = f"{tp.events:,} events in {tp.seconds:.1f} s"
    note += f"; the floor wrote them in {floor.seconds:.1f} s." if floor else "."
    sec.figures.append(_figure_pair("B1", f"throughput, {workers} worker(s)", tp, floor, note))
    sec.cpu, sec.cpu_window = tp.cpu, "during B1"
    if floor is not None:
        sec.details += [
            "The floor was measured "
            + " and ".join(f"{f.rate:,.0f}" for f in st.floors)
            + " rows/s; the faster is the baseline. CPU use during it:",
            "",
            "| process | average | peak (1 s) |",
            "|---|---|---|",
            *cpu_rows(floor.cpu),
            "",
            f"The floor was bounded by: {bound_of(floor.cpu)}.",
        ]


def _b3(
    sec: Section,
    *,
    lat: Any,
    base: Any,
    room_id: str,
    slow_lines: int,
    others: Any,
    s: Sizes,
    st: _State,
) -> None:
    sec.method = (
        f"One room ({room_id}: two admins on two servers fork its state, then merge) is made "
        "slow on purpose: the workers are started with `ROOMSTREAM_DEBUG_SLOW_ROOM`, so each "
        f"of that room's state resolutions also burns {s.slow_s:g} s of CPU where a large "
        f"resolution runs (its {slow_lines} events make 2 resolutions: the fork's current "
        f"state and the merge). Its events are produced first, then "
        f"{len(others.rooms):,} other rooms ({others.event_count:,} events) "
        f"at a steady {st.rate:,.0f} events/s "
        f"({st.rate_source}), for {s.isolation_s:g} s. The figure is the other rooms' p99 "
        "latency, produce to invalidation. The burn runs in the worker's resolution process "
        "(`pipeline.worker.resolve_pool`), as a resolution with a large conflicted set does; the "
        "room's thread waits for it without holding the worker's interpreter lock. Measurement "
        "starts once every worker has joined the consumer group (no rebalance mid-run).\n\n"
        "Baseline, measured in the same suite run: the same input at the same rate through "
        "B1's workers, where the room is not slow."
    )
    expected_ms = 2 * s.slow_s * 1000
    slow_ms = lat.excluded_ms
    slow_ok = slow_ms is not None and slow_ms >= 0.8 * expected_ms
    ratio = _ratio(lat.p99_ms, base.p99_ms)
    note = f"p50 {lat.p50_ms:,.0f} ms against {base.p50_ms:,.0f} ms without the slow room; "
    note += (
        f"the slow room's own last event took {slow_ms if slow_ms is not None else math.nan:,.0f}"
        f" ms (its resolutions burned {expected_ms / 1000:g} s)."
    )
    note += f" With the slow room, {lat.trend()}; without it, {base.trend()}."
    note += lat.loss_note() + base.loss_note()
    if not slow_ok:
        note += " The slow room did not run slow, so this run does not test isolation."
    sec.figures.append(
        Figure(
            "B3",
            "other rooms' p99 with a slow room",
            lat.p99_ms,
            "ms",
            baseline=base.p99_ms,
            baseline_name="p99 without it",
            ratio=ratio,
            target=f"<= {ISOLATION_TARGET}x without it",
            met=None
            if ratio is None or not slow_ok or lat.lost or base.lost
            else ratio <= ISOLATION_TARGET,
            bound=bound_of(lat.cpu),
            note=note,
        )
    )
    sec.cpu, sec.cpu_window = lat.cpu, "of the run with the slow room"


def _b4(
    sec: Section, settings: Settings, *, st: _State, lines: list[bytes], s: Sizes, say: Any
) -> None:
    from pipeline.bench.committer import measure_committer, prepare_chunks

    prepared = prepare_chunks(lines)
    say(f"B4: {len(prepared.chunks):,} chunks prepared")
    measured = measure_committer(settings, prepared, s.timeout)
    tp = measured.throughput
    sec.method = (
        f"B1's workload ({s.rooms:,} rooms × {s.events_per_room} events) is run through the "
        "room processors offline (one input at a time, as a worker does), giving "
        f"{len(prepared.chunks):,} room chunks. A fresh run's committer is started and, once "
        "active on its empty chunks topic, the chunks are produced as fast as the producer "
        "goes; the time runs from the first produce to the invalidation that announces the "
        "last stream ordering (every row of DESIGN.md's schema, the outbox, and the "
        "invalidation messages).\n\n"
        "Baseline: B1's floor, the same events' rows (events and event_json only) COPYed "
        "into the same PostgreSQL, measured in the same suite run. The committer's CPU per "
        "event is its process's CPU time (all threads) over the same span, divided by the "
        "events; its baseline is the floor consumer's CPU per row."
    )
    sec.figures.append(
        _figure_pair(
            "B4",
            "committer throughput",
            tp,
            st.floor,
            f"{tp.events:,} events in {tp.seconds:.1f} s; the committer used "
            f"{measured.cpu_s:.1f} s of CPU ({measured.cpu_us_per_event:,.1f} µs per event).",
        )
    )
    floor_us = 1e6 * st.floor.consumer_cpu_s / st.floor.rows if st.floor is not None else None
    sec.figures.append(
        Figure(
            "B4",
            "committer CPU per event",
            measured.cpu_us_per_event,
            "µs/event",
            baseline=floor_us,
            baseline_name="floor consumer, per row" if floor_us is not None else None,
            ratio=_ratio(measured.cpu_us_per_event, floor_us),
            note=f"{measured.cpu_s:.2f} s of committer CPU for {tp.events:,} events.",
        )
    )
    sec.cpu, sec.cpu_window = tp.cpu, "during B4"


def _scaling(sec: Section, settings: Settings, s: Sizes, say: Any) -> None:
    from pipeline.bench.e2e import measure_throughput, pipeline_run

    wl = generate_workload(s.scaling_rooms, s.scaling_events_per_room, seed=4)
    sec.method = (
        f"B1's method over a smaller workload ({s.scaling_rooms:,} rooms × "
        f"{s.scaling_events_per_room} events), in a fresh run for each number of worker "
        "processes. The ratio is to one worker in this suite run. This machine has "
        f"{os.cpu_count()} cores for the workers, the committer, the broker and PostgreSQL "
        "together, so scaling past them is not expected here."
    )
    first: float | None = None
    failures = []
    for n in s.scaling_workers:
        try:
            with pipeline_run(settings, f"s{n}", workers=n) as pr:
                tp = measure_throughput(pr, wl, s.timeout)
        except Exception as exc:  # one worker count failing leaves the others measured
            failures.append(f"{n} worker(s): {type(exc).__name__}: {exc}")
            sec.details.append(f"- {n} worker(s): not measured: {type(exc).__name__}: {exc}")
            continue
        say(f"B6: {n} worker(s): {tp.rate:,.0f} events/s")
        first = first or tp.rate
        sec.figures.append(
            Figure(
                "B6",
                f"throughput, {n} worker(s)",
                tp.rate,
                "events/s",
                baseline=first if n != s.scaling_workers[0] else None,
                baseline_name=f"{s.scaling_workers[0]} worker(s)",
                ratio=tp.rate / first,
                bound=bound_of(tp.cpu),
                note=tp.loss_note().strip(),
            )
        )
        sec.details.append(
            f"- {n} worker(s), busiest processes: "
            + ", ".join(f"{c.process} {c.average:.0f}%" for c in tp.cpu[:4])
        )
    if len(failures) == len(s.scaling_workers):
        raise RoomstreamError("; ".join(failures))


# The worker's CPU per event on the state-heavy workload before the worker was rebuilt (issue
# "Room processor runtime rebuilt"): its target is a quarter of that.
WORKER_CPU_BEFORE_US = 2104


def _worker_alone(sec: Section, settings: Settings, s: Sizes) -> None:
    from pipeline.bench.worker_only import run, run_paced

    sec.method = (
        "A fresh run's `pdus` topic (4 partitions) is filled with a workload before one worker "
        "process starts; the time runs from the first chunk it sends to the chunk holding the "
        "last event. The figure is the CPU the worker process (and its state resolution "
        "process) used over that span per event in chunks. Baseline, in the same run: the pure "
        "room logic (`roomstream replay`'s code) over the same PDUs in the bench's process, CPU "
        "per event; the ratio is what the worker shell (Kafka clients, faust, storing the "
        "rooms' state, chunks) costs on top of the room logic. Two workloads: the generated one "
        "(mostly messages, a few forks) and a state-heavy one (members joining, topics and "
        "power levels changing, forks and merges that need state resolution). Target, on the "
        f"state-heavy workload: a quarter of the {WORKER_CPU_BEFORE_US:,} µs per event the "
        "worker took before it was rebuilt. Then the generated workload sent one event at a "
        "time at a steady rate, as front ends send them, to a worker that has warmed up: its "
        "CPU from the first send to the chunk holding the last event, per event, beside the "
        "figure for the generated workload above (docs/cost.md says where the difference "
        "goes); twice, first with each fetch answered at its first input, then with fetches "
        "gathering the inputs that trickle in (`ROOMSTREAM_WORKER_FETCH_WAIT_MS`), the default. "
        "Last, the same inputs at the same rate to a bare faust agent, built as the worker is "
        "but doing nothing per input beyond one record sent and one ack: what faust and "
        "aiokafka alone cost per event at that rate."
    )
    burst: float | None = None
    shapes = (("generated", s.worker_generated, False), ("state-heavy", s.worker_state_heavy, True))
    for name, (rooms, per_room), heavy in shapes:
        r = run(rooms, per_room, 1, state_heavy=heavy, settings=settings)
        replay_us = r["replay_us_per_event"]
        # CPU time is read in clock ticks (10 ms): a run shorter than a few is not timed.
        timed = r["worker_cpu_us_per_event"] > 0 and replay_us > 0
        us = r["worker_cpu_us_per_event"] if timed else None
        target = f"<= {WORKER_CPU_BEFORE_US / 4:,.0f} µs/event" if heavy else ""
        note = (
            f"{r['events']:,} events of {rooms:,} rooms in {r['chunks']:,} chunks, "
            f"{r['seconds']:,.1f} s ({r['events_per_s']:,} events/s, the worker using "
            f"{r['worker_cpu_per_wall']:.2f} of a core)."
        )
        if not timed:
            note += " Too few to time: the CPU used was under the clock's tick."
        sec.figures.append(
            Figure(
                "B9",
                f"worker CPU per event, {name} workload",
                us,
                "µs",
                baseline=replay_us if timed else None,
                baseline_name="the pure room logic (replay)" if timed else None,
                ratio=us / replay_us if us is not None and replay_us else None,
                target=target,
                met=(us <= WORKER_CPU_BEFORE_US / 4) if heavy and us is not None else None,
                note=note,
            )
        )
        if not heavy:
            burst = us
    rooms, per_room, rate = s.worker_paced
    # Fetches answered at their first input (as faust has it) first, then as configured
    # (gathering once inputs come often): the same run's baseline for the gathering.
    unwaited = run_paced(rooms, per_room, rate, settings=replace(settings, worker_fetch_wait_ms=0))
    gathered = run_paced(rooms, per_room, rate, settings=settings)
    bare = run_paced(rooms, per_room, rate, settings=settings, bare=True)
    unwaited_us = unwaited["worker_cpu_us_per_event"] or None

    def paced(
        how: str, p: dict[str, Any], base: float | None, base_name: str, extra: str
    ) -> Figure:
        us = p["worker_cpu_us_per_event"] or None
        return Figure(
            "B9",
            f"worker CPU per event, one at a time at {rate:,.0f} events/s, {how}",
            us,
            "µs",
            baseline=base,
            baseline_name=base_name if base else None,
            ratio=us / base if us and base else None,
            note=(
                f"{p['events']:,} events of {rooms:,} rooms over {p['seconds']:,.1f} s, the "
                f"worker using {p['worker_cpu_per_wall']:.2f} of a core. {extra}"
            ),
        )

    sec.figures.append(
        paced(
            "each fetch answered at its first input",
            unwaited,
            burst,
            "the generated workload all waiting (above)",
            "`ROOMSTREAM_WORKER_FETCH_WAIT_MS=0`.",
        )
    )
    sec.figures.append(
        paced(
            "fetches gathering inputs (the default)",
            gathered,
            unwaited_us,
            "each fetch answered at its first input (above)",
            f"From {settings.worker_fetch_gather_from:g} inputs/s, the broker holds a fetch up "
            f"to {settings.worker_fetch_wait_ms} ms for {settings.worker_fetch_min_bytes:,} "
            "bytes of inputs.",
        )
    )
    gathered_us = gathered["worker_cpu_us_per_event"] or None
    bare_us = bare["worker_cpu_us_per_event"] or None
    sec.figures.append(
        Figure(
            "B9",
            f"a bare faust agent's CPU per event, one at a time at {rate:,.0f} events/s",
            bare_us,
            "µs",
            baseline=gathered_us,
            baseline_name="the worker, fetches gathering (above)" if gathered_us else None,
            ratio=bare_us / gathered_us if bare_us and gathered_us else None,
            note=(
                f"The same inputs at the same rate to a faust app built as the worker's is "
                "(its consumer, fetches gathering, producer), whose agent takes each input, "
                "sends one record for it and acks it once the broker has that record: no room "
                "logic, no state stored (`pipeline/bench/bare_agent.py`). What faust and "
                "aiokafka cost for one input in and one record out, a floor under the worker's "
                f"figure; it used {bare['worker_cpu_per_wall']:.2f} of a core over "
                f"{bare['seconds']:,.1f} s."
                + ("" if bare_us else " Too few to time: the CPU used was under the clock's tick.")
            ),
        )
    )


def _memory(sec: Section, settings: Settings, s: Sizes) -> None:
    from pipeline.bench.memory import STATE_EVENTS_PER_ROOM, measure_memory

    m = measure_memory(settings, s.memory_rooms, s.timeout)
    rss_mb = m.rss_kib / 1024
    per_room = m.per_room_kib
    sec.method = (
        f"{m.rooms:,} rooms of {STATE_EVENTS_PER_ROOM} state events each (create, the "
        "creator's join, power levels, join rules, history visibility, then joins: 16 members) "
        "are processed by one worker process (no committer). Once the chunks topic holds a "
        "chunk for every input and the worker has had its first idle tick after it stopped "
        "working (it compacts idle rooms and gives the memory it freed back to the system), "
        "its VmRSS is read from /proc; the peak is VmHWM. Its RSS after one warm-up room is "
        "the idle baseline; (RSS − idle) / rooms is the memory per room. "
        "Target: <= 300 MB for 10,000 rooms."
    )
    at_target = m.rooms >= MEMORY_TARGET_ROOMS
    figs = [
        Figure(
            "B6",
            f"worker RSS holding {m.rooms:,} rooms",
            rss_mb,
            "MB",
            baseline=m.idle_kib / 1024,
            baseline_name="idle worker",
            ratio=rss_mb / (m.idle_kib / 1024),
            target=f"<= {MEMORY_TARGET_MB:.0f} MB at {MEMORY_TARGET_ROOMS:,} rooms",
            met=(rss_mb <= MEMORY_TARGET_MB) if at_target else None,
            note=f"Peak RSS {m.peak_kib / 1024:,.1f} MB."
            + ("" if at_target else " The target is checked at 10,000 rooms (full mode)."),
        ),
        Figure(
            "B6",
            "memory per room",
            per_room,
            "KB",
            note=f"The worker processed {m.events:,} state events at {m.rate:,.0f} events/s "
            "on its own.",
        ),
    ]
    if not at_target:
        projected = (m.idle_kib + per_room * MEMORY_TARGET_ROOMS) / 1024
        figs.append(
            Figure(
                "B6",
                f"projected RSS at {MEMORY_TARGET_ROOMS:,} rooms",
                projected,
                "MB",
                note="A linear projection from this run, not a measurement: idle RSS plus "
                "the memory per room times 10,000.",
            )
        )
    sec.figures += figs
    sec.cpu, sec.cpu_window = m.cpu, "while the worker processed the rooms"


def _state_res(sec: Section, s: Sizes) -> None:
    sec.method = (
        "Roomstream's state resolution (v2) beside matrix-synapse's on the same inputs, in "
        "one process, CPU time (median of several repetitions, the two taking turns within "
        "each) as `pipeline.bench.state_res` describes. The ratio here is Synapse's time over "
        "Roomstream's: above 1, Roomstream is faster."
    )
    try:
        from pipeline.bench import state_res
    except ImportError as exc:
        sec.error = f"not available ({exc})"
        return
    results: Sequence[dict[str, Any]] = state_res.run(quick=s.mode != "full")
    for r in results:
        ratio = r.get("ratio")
        target = str(r.get("target") or "")
        met: bool | None = None
        found = re.match(r"\s*>=\s*([\d.]+)", target)
        if found and ratio is not None:
            met = float(ratio) >= float(found.group(1))
        same = r.get("same_result")
        note = "" if same is None else ("Same resolved state." if same else "Results DIFFER.")
        if r.get("baseline_ms") is None:
            note += " Synapse is not installed here, so there is no baseline."
        sec.figures.append(
            Figure(
                "B5",
                f"state res {r['name']}",
                r.get("roomstream_ms"),
                "ms",
                baseline=r.get("baseline_ms"),
                baseline_name=str(r.get("baseline") or ""),
                ratio=ratio,
                target=f"{target} (Synapse / Roomstream)" if target else "",
                met=met,
                bound="CPU of one core (pure Python)",
                note=note.strip(),
            )
        )


# --------------------------------------------------------------------------- command


def parse_only(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset(BENCHES)
    chosen = {t.strip().upper() for t in text.split(",") if t.strip()}
    unknown = chosen - set(BENCHES)
    if unknown:
        raise RoomstreamError(
            f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(BENCHES)}"
        )
    return frozenset(chosen)


def main(args: Any, settings: Settings) -> int:
    quick = bool(getattr(args, "quick", False))
    output = getattr(args, "output", None)
    argv = ["roomstream bench"] + (["--quick"] if quick else [])
    only = getattr(args, "only", None)
    if only:
        argv.append(f"--only {only}")
    opts = Options(
        sizes=QUICK if quick else FULL,
        only=parse_only(only),
        workers=int(getattr(args, "workers", None) or 2),
        output=Path(output) if output else ROOT / "BENCHMARKS.md",
        command=" ".join(argv),
        say=_say_stderr,
    )
    report = run_suite(settings, opts)
    print(render_table(report.figures()))
    if opts.output is not None:
        opts.output.write_text(render_markdown(report))
        _say_stderr(f"wrote {opts.output}")
    failed = [s for s in report.sections if s.error]
    for s in failed:
        _say_stderr(f"{s.bench} not measured: {s.error}")
    return 1 if failed else 0
