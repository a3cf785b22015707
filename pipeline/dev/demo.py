"""``roomstream run``: the whole pipeline on this machine over a generated workload.

Starts (or reuses) the local stack, gives the run its own topics and database, starts the
workers and the committer, produces a realistic workload (many rooms; joins, leaves, bans, power
level changes; forks from two servers and merges; a few bad inputs), shows live progress, and
ends with a summary: throughput, latency from produce to invalidation, and what each room ended
with — checked against the offline replay of the same input.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pipeline import pg
from pipeline.config import Settings
from pipeline.dev.local import (
    InvalidationWatcher,
    count_committed,
    dead_letter_count,
    describe_exit,
    event_ids_of,
    percentile,
    prepare_run,
    produce_timed,
    remove_worker_data,
    running,
    wait_for_workers,
    wait_until,
)
from pipeline.dev.stack import Stack
from pipeline.dev.workload import generate_workload
from pipeline.room.replay import replay


def _say(msg: str) -> None:
    print(msg, flush=True)


def main(args: Any, settings: Settings) -> int:
    rooms, per_room, workers = args.rooms, args.events_per_room, args.workers
    stack = Stack(settings)
    stack.up(lambda m: _say(f"stack: {m}"))
    prefix = f"run{time.strftime('%Y%m%d%H%M%S')}"
    _say(f"run {prefix}: topics {prefix}.*, database roomstream_{prefix}")
    run = prepare_run(settings, prefix)

    bad = max(2, rooms // 10)
    workload = generate_workload(rooms, per_room, seed=args.seed, bad_inputs=bad)
    lines = list(workload.lines)
    ids = event_ids_of(lines, workload.room_version)
    valid = workload.event_count
    bad_on_arrival = sum(1 for b in workload.bad_inputs if b.on_arrival)
    _say(
        f"workload: {rooms} rooms, {valid} events (room version {workload.room_version}), "
        f"{len(workload.bad_inputs)} bad inputs; {workers} worker(s), 1 committer"
    )
    expected = replay(lines)

    logdir = settings.stack_dir / "runs" / prefix
    watcher = InvalidationWatcher(run)
    watcher.start()
    watcher.ready.wait(10)
    with running(run, logdir, workers=workers) as cluster:
        # The clock starts once every worker holds its partitions: the rate is the pipeline's,
        # not the processes' start-up.
        _say(f"waiting for the {workers} worker(s) to join their group ...")
        wait_for_workers(run, cluster)
        started = time.monotonic()
        sent = produce_timed(run, lines, ids)
        produced_at = time.monotonic()
        tty = sys.stdout.isatty()
        last_print = 0.0

        def progress(final: bool = False) -> None:
            nonlocal last_print
            now = time.monotonic()
            if not final and now - last_print < (0.5 if tty else 5.0):
                return
            last_print = now
            committed, _ = count_committed(run)
            line = (
                f"in {len(lines)}  committed {committed}/{valid}  "
                f"invalidations {watcher.messages}  dead-lettered {dead_letter_count(run)}"
                f"  ({now - started:5.1f} s)"
            )
            print(("\r" if tty else "") + line, end="\n" if final or not tty else "", flush=True)

        def done() -> bool:
            committed, _ = count_committed(run)
            # Stream orderings run 1..n without gaps: the last position announced is n.
            return (
                committed >= valid
                and watcher.position >= committed
                and dead_letter_count(run) >= bad_on_arrival
            )

        finished = wait_until(done, args.timeout, cluster, tick=progress)
        progress(final=True)
        ended = time.monotonic()
    watcher.stop()
    codes = cluster.stop()
    # The workers' local stores are caches of the run's changelogs; the database is kept.
    remove_worker_data(run)
    _say(f"stopped: {describe_exit(codes)}; logs in {logdir}")
    if not finished:
        _say(f"not finished within {args.timeout} s; see the logs above")
        return 1

    latencies = [(watcher.announced[e] - sent[e]) * 1000 for e in sent if e in watcher.announced]
    span = (watcher.last_at or ended) - started
    _say("")
    _say("summary")
    _say(
        f"  events committed      {valid} in {span:.2f} s  = {valid / span:,.0f} events/s "
        f"(produce took {produced_at - started:.2f} s)"
    )
    _say(f"  invalidations         {watcher.messages} messages, last position {watcher.position}")
    _say(
        f"  produce->invalidation p50 {percentile(latencies, 0.5):,.0f} ms, "
        f"p99 {percentile(latencies, 0.99):,.0f} ms (all events sent at once: this is "
        "queueing time, not the latency at a steady rate; see `roomstream bench`)"
    )
    _say(
        f"  dead-lettered         {dead_letter_count(run)} (bad inputs expected: {bad_on_arrival} "
        "on arrival, the rest after their parking time)"
    )
    mismatches = _room_table(run, expected, rooms_shown=args.show_rooms)
    _say(
        f"  rooms matching the offline replay: {len(expected['rooms']) - mismatches}"
        f"/{len(expected['rooms'])}"
    )
    return 0 if mismatches == 0 else 1


def _room_table(run: Settings, expected: dict[str, Any], rooms_shown: int) -> int:
    """Print what each room ended with; return how many rooms differ from the replay."""
    mismatches = 0
    rows = []
    with pg.connect(run) as conn, conn.cursor() as cur:
        for room_id, want in sorted(expected["rooms"].items()):
            cur.execute(
                "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
                (room_id,),
            )
            state = sorted([t, k, e] for t, k, e in cur.fetchall())
            cur.execute(
                "SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,)
            )
            fx = sorted(r[0] for r in cur.fetchall())
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE rejection_reason IS NOT NULL),"
                " count(*) FILTER (WHERE soft_failed) FROM events WHERE room_id = %s",
                (room_id,),
            )
            n, rejected, soft = cur.fetchone()
            cur.execute(
                "SELECT count(*) FROM current_state_events WHERE room_id = %s"
                " AND membership = 'join'",
                (room_id,),
            )
            joined = cur.fetchone()[0]
            ok = state == want["current_state"] and fx == want["forward_extremities"]
            mismatches += 0 if ok else 1
            rows.append((room_id, n, len(state), joined, rejected, soft, len(fx), ok))
    _say("")
    _say(
        f"  {'room':<34} {'events':>6} {'state':>5} {'joined':>6} {'rej':>4} {'soft':>4} "
        f"{'fwd':>3}  replay"
    )
    for row in rows[:rooms_shown]:
        room_id, n, n_state, n_joined, rej, soft, n_fx, ok = row
        _say(
            f"  {room_id:<34} {n:>6} {n_state:>5} {n_joined:>6} {rej:>4} {soft:>4} {n_fx:>3}  "
            f"{'same' if ok else 'DIFFERENT'}"
        )
    if len(rows) > rooms_shown:
        _say(f"  ... and {len(rows) - rooms_shown} more rooms")
    return mismatches
