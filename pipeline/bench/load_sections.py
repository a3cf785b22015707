"""The report sections of the homeserver-shaped benchmarks: B0 (Synapse, the anchor), B2 (paced
capacity and the latency curve), B7 (recovery) and B8 (big rooms). Each Roomstream figure
carries its ratio to B0, measured in the same run: a baseline of its own where it has one (the
50-member room for B8), the ratio to B0 in its note then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pipeline.bench.big_room import JoinCost, OneByOne
from pipeline.bench.cpu import bound_of
from pipeline.bench.paced import FIXED_RATE, LIMIT_MS, Probe, Search, describe
from pipeline.bench.recovery import Takeover, WorkerRecovery
from pipeline.bench.report import Figure, Section
from pipeline.bench.synapse_persist import SynapseResult

CAPACITY_TARGET = 10.0  # paced capacity: at least 10x B0's rate
FIXED_P50_TARGET_MS = 20.0
FIXED_P99_TARGET_MS = 50.0
B0_RATE = "Synapse, 10 rooms in flight (B0)"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def versus_b0(value: float | None, b0: float | None, what: str) -> str:
    """A sentence giving ``value``'s ratio to B0's ``what``; empty when either is missing."""
    r = _ratio(value, b0)
    return "" if r is None else f" {r:.2f}x {what} (B0)."


# --------------------------------------------------------------------------- B0


def b0_section(
    sec: Section, r: SynapseResult, *, rooms: int, per_room: int, paced_rooms: int
) -> None:
    c, p = r.closed, r.paced
    sec.method = (
        f"{r.version}, in a child process, persists generated rooms (`generate_workload`, "
        "the same generator as every Roomstream figure: joins, messages, leaves, kicks, bans, "
        "power levels, topics, names, redactions, forks and merges, some events rejected) into "
        "a database of its own on the same PostgreSQL, as a `SynapseHomeServer` built from a "
        "config dict with no listener, federation sender or background worker. Per event, in "
        "its room's order: `StateHandler.compute_event_context` (the state before it, resolved "
        "across its prev events, and a state group), the auth rules "
        "(`check_state_independent_auth_rules`, `check_state_dependent_auth_rules`; a failure "
        "marks the event rejected, as its federation handler does), then "
        "`EventsPersistenceStorageController.persist_event`, one event per call. Signature "
        "checks, soft-fail checks, push actions and the notifier are not run: this is its "
        "storage path, the part Roomstream replaces.\n\n"
        f"Closed loop: {rooms} rooms × {per_room} events, {c.in_flight} rooms in flight (each "
        "room's events one after another; the next room starts when one is done); the rate is "
        "events over the phase's wall time, latency from the event's first step to "
        f"`persist_event`'s return. Paced: {paced_rooms} other rooms at a steady "
        f"{FIXED_RATE:g} events/s in arrival order (an event whose room's previous one is "
        "still being persisted waits for it, and that wait counts). Synapse's start-up "
        f"(schema creation, {r.setup_s:.1f} s) is not timed. Every other figure of this report "
        "states its ratio to these, all measured in the same run."
    )
    bound = bound_of(r.cpu)
    sec.figures += [
        Figure(
            "B0",
            f"Synapse rate, {c.in_flight} rooms in flight",
            c.rate,
            "events/s",
            bound=bound,
            note=f"{c.events:,} events ({c.rejected} rejected by its auth rules) in "
            f"{c.seconds:.1f} s.",
        ),
        Figure("B0", "Synapse latency p50, 10 in flight", c.p50_ms, "ms", bound=bound),
        Figure(
            "B0",
            "Synapse latency p99, 10 in flight",
            c.p99_ms,
            "ms",
            bound=bound,
            note=f"Max {c.max_ms:,.0f} ms.",
        ),
    ]
    if p is not None:
        note = f"{p.events:,} events; it kept {p.rate:,.1f} events/s over the phase."
        sec.figures += [
            Figure("B0", f"Synapse latency p50 at {FIXED_RATE:g} events/s", p.p50_ms, "ms"),
            Figure(
                "B0",
                f"Synapse latency p99 at {FIXED_RATE:g} events/s",
                p.p99_ms,
                "ms",
                note=f"Max {p.max_ms:,.0f} ms; " + note,
            ),
        ]
    sec.cpu, sec.cpu_window = r.cpu, "during the closed loop"


# --------------------------------------------------------------------------- B2


def b2_method(
    *,
    window_s: float,
    warm_s: float,
    min_events: int,
    start: float,
    bisections: int,
    workers: Sequence[int],
) -> str:
    return (
        "Events are produced one at a time (linger 0), evenly spaced at a steady rate, as "
        "homeserver front ends produce them; each probe is a fresh workload of up to 50 "
        "generated rooms, and latency is from handing an event to the producer to the arrival "
        "of the invalidation message that names it (rejected and soft-failed events are never "
        "announced and are not counted). The rooms interleave by their senders' clocks, so a "
        "few events (about 3%, joins from the other server mostly) are sent before an event "
        "they reference and wait, parked, until it arrives; their latency runs from that "
        "event's send, when they could first be processed, as Synapse's persist path (B0) is "
        "handed events whose references are there. The curve's last column counts them and "
        f"gives their longest wait. A probe produces for {warm_s:g} s of warm-up (not "
        f"counted) and then {window_s:g} s (stretched, up to 3x, to hold {min_events} events at "
        "a slow rate) that are measured, and waits until all of it is announced before the "
        "next probe starts.\n\n"
        f"Paced capacity: the highest rate whose p99 stays <= {LIMIT_MS:.0f} ms with nothing "
        f"lost, found by doubling from {start:g} events/s until a rate fails (or halving, at "
        "most three times, until one passes), then bisecting "
        f"(at most {bisections} times) between the last pass and the first failure, and "
        "probing the rate found once more to confirm it (if it fails, the next lower rate that "
        "passed is the capacity). A rate fails when two probes at it in a row keep p99 over the "
        "limit: a probe over it is run again once, as a pass is confirmed, so that one noisy "
        "window (another process, a broker's flush) does not set the capacity; a probe that "
        "loses events fails the rate at once. Every probe is listed below. For "
        + " and ".join(f"{n} worker(s)" for n in workers)
        + ", each in a fresh run with one committer.\n\n"
        "The latency curve: one probe at each of 10%, 25%, 50%, 75% and 100% of the paced "
        f"capacity of the largest worker count, and at a fixed {FIXED_RATE:g} events/s (a small "
        "homeserver's load), on the same run. Baseline: B0, Synapse in the same suite run."
    )


def capacity_figure(workers: int, s: Search, b0: SynapseResult | None) -> Figure:
    b0_rate = b0.closed.rate if b0 else None
    ratio = _ratio(s.capacity, b0_rate)
    best = s.best()
    note = f"{len(s.probes)} probes."
    if s.rechecked:
        note += (
            f" {s.rechecked} rate(s) went over the limit once and passed when probed again "
            "(listed below)."
        )
    if best is not None:
        note += (
            f" At that rate p50 {best.p50_ms:,.1f} ms, p99 {best.p99_ms:,.1f} ms, max "
            f"{best.max_ms:,.0f} ms."
        )
    if s.note:
        note += f" {s.note[0].upper()}{s.note[1:]}."
    return Figure(
        "B2",
        f"paced capacity, {workers} worker(s)",
        s.capacity,
        "events/s",
        baseline=b0_rate,
        baseline_name=B0_RATE if b0_rate is not None else None,
        ratio=ratio,
        target=f">= {CAPACITY_TARGET:g}x B0's rate",
        met=None if ratio is None else ratio >= CAPACITY_TARGET,
        bound=bound_of(best.cpu) if best is not None else "",
        note=note,
    )


def fixed_rate_figures(point: Probe, b0: SynapseResult | None) -> list[Figure]:
    paced = b0.paced if b0 else None
    bound = bound_of(point.cpu)
    lost = f" The pipeline LOST {point.lost} events." if point.lost else ""
    figs = []
    for name, value, base, target in (
        ("p50", point.p50_ms, paced.p50_ms if paced else None, FIXED_P50_TARGET_MS),
        ("p99", point.p99_ms, paced.p99_ms if paced else None, FIXED_P99_TARGET_MS),
    ):
        figs.append(
            Figure(
                "B2",
                f"latency {name} at {FIXED_RATE:g} events/s",
                value,
                "ms",
                baseline=base,
                baseline_name=f"Synapse at {FIXED_RATE:g} events/s (B0)" if base else None,
                ratio=_ratio(value, base),
                target=f"<= {target:.0f} ms",
                met=None if point.lost or math.isnan(value) else value <= target,
                bound=bound,
                note=(
                    f"Max {point.max_ms:,.0f} ms; {point.measured:,} events measured.{lost}"
                    if name == "p99"
                    else lost.strip()
                ),
            )
        )
    return figs


def curve_details(
    points: Sequence[tuple[str, Probe]], b0: SynapseResult | None, workers: int
) -> list[str]:
    base = b0.paced.p99_ms if b0 and b0.paced else None
    out = [
        "",
        f"The latency curve ({workers} worker(s)); the last column is the p99's ratio to "
        f"Synapse's p99 at {FIXED_RATE:g} events/s (B0"
        + (f", {base:,.1f} ms" if base is not None else ", not measured")
        + "):",
        "",
        "| point | rate (events/s) | events measured | p50 (ms) | p99 (ms) | max (ms) | "
        "p99 / Synapse's | sent before a reference (longest wait) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, p in points:
        r = _ratio(p.p99_ms, base)
        lost = f" (LOST {p.lost})" if p.lost else ""
        out.append(
            f"| {label} | {p.rate:,.1f} | {p.measured:,}{lost} | {p.p50_ms:,.1f} | "
            f"{p.p99_ms:,.1f} | {p.max_ms:,.1f} | {'-' if r is None else f'{r:.2f}x'} | "
            f"{p.waited:,} ({p.longest_wait_ms:,.0f} ms) |"
        )
    return out


def search_details(searches: Mapping[int, Search]) -> list[str]:
    out: list[str] = []
    for workers, s in searches.items():
        out += [
            "",
            f"The capacity search with {workers} worker(s), probes in the order they ran:",
            "",
            "| rate asked (events/s) | rate produced | events measured | p50 (ms) | p99 (ms) | "
            "max (ms) | |",
            "|---|---|---|---|---|---|---|",
            *describe(s.probes),
        ]
    return out


# --------------------------------------------------------------------------- B7


def b7_method(*, rate: float, before_s: float, after_s: float, workers: int) -> str:
    return (
        f"Worker: on the run of B1 ({workers} worker processes and a committer), up to 60 "
        f"generated rooms are produced at a steady {rate:,.0f} events/s (half the paced "
        f"capacity, or a fixed rate without it); after {before_s:g} s, worker1 is killed with "
        "kill -9 and started again at once with the same worker ID, and the produce goes on "
        f"for {after_s:g} s more. The killed worker's partitions are those its member held in "
        "the processors' consumer group before the kill. *Back* is when every one of them has "
        "had an event produced after the kill announced; the other partitions' longest "
        "latency between the kill and then is the pause other rooms saw, beside their longest "
        "in as long a window before the kill.\n\n"
        "Committer: a fresh run with one worker and two committers (one active, one hot "
        f"standby); the same paced produce; after {before_s:g} s the active committer is "
        "killed with kill -9 and not restarted. Takeover is the time from the kill to the "
        "announcement of the first event produced after it (so it includes one event's "
        "normal latency).\n\n"
        "Synapse has no counterpart measured here; each figure's ratio is to B0's p99 "
        "persist latency (10 rooms in flight), for scale."
    )


def _beside_b0_p99(
    what: str, value: float, unit: str, b0: SynapseResult | None, note: str
) -> Figure:
    """A B7 figure with B0's p99 persist latency (in the figure's unit, s or ms) for scale."""
    p99 = b0.closed.p99_ms / (1000 if unit == "s" else 1) if b0 else None
    return Figure(
        "B7",
        what,
        value,
        unit,
        baseline=p99,
        baseline_name="Synapse p99 persist (B0)" if p99 else None,
        ratio=_ratio(value, p99),
        note=note,
    )


def worker_recovery_figures(w: WorkerRecovery, b0: SynapseResult | None) -> list[Figure]:
    partitions = ", ".join(map(str, w.killed_partitions))
    return [
        _beside_b0_p99(
            "killed worker's rooms processing again, from its restart",
            w.back_after_restart_s,
            "s",
            b0,
            f"{w.back_after_kill_s:,.2f} s from the kill (restarted {w.restart_gap_s:,.2f} s "
            f"after it); partitions {partitions}, found by {w.ownership}." + w.loss_note(),
        ),
        _beside_b0_p99(
            "other rooms' longest pause meanwhile",
            w.others_max_ms,
            "ms",
            b0,
            f"Their p99 then {w.others_p99_ms:,.0f} ms; their longest in as long a window "
            f"before the kill {w.others_before_max_ms:,.0f} ms.",
        ),
    ]


def takeover_figure(t: Takeover, b0: SynapseResult | None) -> Figure:
    return _beside_b0_p99(
        "standby committer takeover",
        t.takeover_s,
        "s",
        b0,
        f"Longest latency of an event produced after the kill {t.max_ms:,.0f} ms; before "
        f"the kill p50 {t.before_p50_ms:,.1f} ms, max {t.before_max_ms:,.0f} ms; at "
        f"{t.rate:,.0f} events/s." + t.loss_note(),
    )


# --------------------------------------------------------------------------- B8


def b8_method(
    *, members: int, small: int, messages: int, state_changes: int, join_slice: int
) -> str:
    return (
        f"One room is created and {members:,} members join it; then {messages:,} messages and "
        f"{state_changes:,} state changes (topics, members renaming themselves, power levels "
        "naming a member, custom state) follow, on B1's run. A room is one partition and one "
        "room thread, so this is one room's events one after another.\n\n"
        "Joins are produced as fast as the producer goes; each join's announcement time says "
        "when the room got through it, so the cost of a join at a room size is the time "
        f"between the announcements of a slice of {join_slice:,} joins over the slice: the "
        f"last slice (the room near {members:,} members) against the first (under "
        f"{join_slice:,}). Messages and state changes are produced one at a time, each once "
        "the previous one was announced, as a room's clients send them; the cost of each is "
        f"its latency, produce to invalidation. Baseline: a {small}-member room with the same "
        "messages and state changes, on the same run. The ratio to B0 is to Synapse's p50 "
        f"persist latency at {FIXED_RATE:g} events/s, its time for one event at a low load.\n\n"
        "State resolution over a big room's conflicts (10,000 conflicted memberships beside "
        "matrix-synapse on the same input) is B5's `conflicted-members` input."
    )


def big_room_figures(
    joins: JoinCost,
    big: Sequence[OneByOne],
    small: Sequence[OneByOne],
    members: int,
    b0: SynapseResult | None,
) -> list[Figure]:
    by_name = {p.name: p for p in small}
    b0_ms = b0.paced.p50_ms if b0 and b0.paced else None
    note = f"{joins.members:,} joins in {joins.seconds:,.1f} s, first produce to last announcement."
    timed = joins.first_ms > 0 and joins.last_ms > 0
    if not timed:
        # Announcements come a committer transaction at a time: a slice inside one has no span.
        note += (
            f" A slice of {joins.slice:,} joins was announced in one committer transaction, too "
            "few to time (the full mode times slices of 1,000)."
        )
    figs = [
        Figure(
            "B8",
            f"{members:,}-member room: ms per join, last {joins.slice:,} joins",
            joins.last_ms if timed else None,
            "ms",
            baseline=joins.first_ms if timed else None,
            baseline_name=f"first {joins.slice:,} joins" if timed else None,
            ratio=_ratio(joins.last_ms, joins.first_ms) if timed else None,
            note=note
            + versus_b0(
                joins.last_ms if timed else None,
                1000 / b0.closed.rate if b0 else None,
                "Synapse's time per event with 10 rooms in flight (1 / its rate)",
            ),
        )
    ]
    for p in big:
        s = by_name.get(p.name)
        base = s.p50_ms if s else None
        figs.append(
            Figure(
                "B8",
                f"{members:,}-member room: {p.name}, p50 one at a time",
                p.p50_ms,
                "ms",
                baseline=base,
                baseline_name="small room" if base is not None else None,
                ratio=_ratio(p.p50_ms, base),
                note=f"p99 {p.p99_ms:,.1f} ms, max {p.max_ms:,.0f} ms over {p.events:,} events"
                + (f"; in the small room p99 {s.p99_ms:,.1f} ms." if s else ".")
                + versus_b0(p.p50_ms, b0_ms, "Synapse's p50 persist latency at low load"),
            )
        )
    return figs
