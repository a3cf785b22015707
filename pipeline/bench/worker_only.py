"""The room processor workers alone: PDUs already in the topic, chunks out, nothing after them.

A fresh run's ``pdus`` topic is filled with a workload before any worker starts; then the
workers start and the time runs from the first chunk they send to the chunk that holds the
last event (chunk timestamps are the workers' send times). Beside the rate: the CPU the workers'
processes (their state resolution processes included) used over that span per event, and the
pure room logic (``pipeline.room.replay.replay``) over the same lines in this process, per event:
what the worker shell costs on top of the room logic, measured in the same run.

Two workloads by default: the generated one (``roomstream run``'s: mostly messages, a few forks)
and a state-heavy one (members keep joining, topics and power levels keep changing, many forks
and merges that need state resolution).

``python -m pipeline.bench.worker_only [--rooms N] [--per-room N] [--workers N]
[--workload generated|state-heavy|both] [--json]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from pipeline.bench.cpu import CLOCK_TICKS, children_of, process_ticks
from pipeline.bench.runs import ChunkEvents, ChunkRecords, cleanup, logdir_of, wait_for_progress
from pipeline.config import Settings, load_settings
from pipeline.dev.local import Cluster, prepare_run, produce_timed
from pipeline.dev.stack import Stack
from pipeline.dev.workload import generate_workload
from pipeline.errors import RoomstreamError
from pipeline.kafka_clients import confluent_config
from pipeline.ops.produce import produce_lines
from pipeline.room.replay import replay
from topics.definitions import Topic

PARTITIONS = 4
TIMEOUT_S = 600.0


def replay_rate(lines: Sequence[bytes]) -> tuple[float, int]:
    """(events per CPU second of the pure room logic over ``lines``, events it puts in chunks).

    CPU time, as the worker's figure is: what else runs on the machine meanwhile does not count.
    """
    replay(lines[: min(len(lines), 500)])  # warm: imports and first-use caches not counted
    started = time.process_time()
    out = replay(lines)
    seconds = time.process_time() - started
    parked = sum(len(view.get("parked", ())) for view in out["rooms"].values())
    in_chunks = len(lines) - len(out["dead_letter"]) - parked
    return len(lines) / seconds, in_chunks


def _cpu_seconds(pids: Sequence[int]) -> float:
    """CPU of the workers and their children (the state resolution processes)."""
    every = {p for pid in pids for p in children_of(pid)}
    return sum(process_ticks(pid) or 0 for pid in every) / CLOCK_TICKS


def _read_chunks(
    run: Settings, expected: int, pids: Sequence[int], cluster: Cluster
) -> dict[str, Any]:
    consumer = Consumer(
        {
            **confluent_config(run),
            "group.id": f"{run.topic_prefix}-bench-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(run.topic(Topic.CHUNKS), 0, 0)])
    events = chunks = 0
    first_ts = last_ts = 0
    cpu_at_first = cpu_at_last = 0.0
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while events < expected:
            if time.monotonic() > deadline:
                raise RoomstreamError(
                    f"timed out after {TIMEOUT_S:.0f} s with {events} of {expected} events "
                    "in chunks"
                )
            cluster.check_alive()
            for msg in consumer.consume(1000, 0.05):
                if msg.error():
                    continue
                _, ts = msg.timestamp()
                if chunks == 0:
                    first_ts = ts
                    cpu_at_first = _cpu_seconds(pids)
                chunks += 1
                events += ChunkEvents.count(msg.value() or b"")
                if events >= expected:
                    last_ts = ts
                    cpu_at_last = _cpu_seconds(pids)
                    break
    finally:
        consumer.close()
    return {
        "chunks": chunks,
        "events_in_chunks": events,
        "seconds": max(last_ts - first_ts, 1) / 1000,
        "worker_cpu_seconds": cpu_at_last - cpu_at_first,
    }


WORKLOADS = {"generated": (400, 25, False), "state-heavy": (50, 100, True)}


def run(
    events_rooms: int = 400,
    per_room: int = 25,
    workers: int = 1,
    *,
    state_heavy: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Measure ``workers`` worker processes over ``events_rooms`` rooms of ``per_room`` events."""
    if settings is None:
        settings = load_settings()
        Stack(settings).up()
    workload = generate_workload(events_rooms, per_room, seed=3, state_heavy=state_heavy)
    lines = list(workload.lines)
    pure_rate, expected = replay_rate(lines)
    prefix = f"wonly{time.strftime('%H%M%S')}"
    run_settings = prepare_run(settings, prefix, partitions=PARTITIONS)
    cluster = Cluster(run_settings, logdir_of(run_settings))
    try:
        produce_lines(run_settings, lines, show_progress=False)
        children = [
            cluster.start("worker", "--id", f"{prefix}-w{i + 1}", name=f"worker{i + 1}")
            for i in range(workers)
        ]
        measured = _read_chunks(run_settings, expected, [c.popen.pid for c in children], cluster)
    finally:
        cluster.stop()
        cleanup(run_settings)
    events = measured["events_in_chunks"]
    rate = events / measured["seconds"]
    cpu = measured["worker_cpu_seconds"]
    return {
        "workload": "state-heavy" if state_heavy else "generated",
        "rooms": events_rooms,
        "per_room": per_room,
        "workers": workers,
        "events": events,
        "chunks": measured["chunks"],
        "seconds": round(measured["seconds"], 3),
        "events_per_s": round(rate),
        "worker_cpu_per_wall": round(cpu / measured["seconds"], 2),
        "worker_cpu_us_per_event": round(cpu / max(events, 1) * 1e6),
        "replay_us_per_event": round(1e6 / pure_rate),
        "replay_events_per_s": round(pure_rate),
        "ratio_to_replay": round(rate / pure_rate, 3),
    }


def run_paced(
    rooms: int = 40,
    per_room: int = 25,
    rate: float = 50.0,
    *,
    settings: Settings | None = None,
    bare: bool = False,
) -> dict[str, Any]:
    """One worker fed the generated workload one event at a time at ``rate`` events/s, as front
    ends produce them: its CPU (state resolution processes included) from the first send to the
    chunk holding the last event, per event. The time between events counts: a homeserver pays
    for it too (an idle worker uses about 2% of a core).

    With ``bare``, the bare faust agent of ``pipeline.bench.bare_agent`` stands in for the
    worker, over the same inputs: one record out per input, nothing else."""
    if settings is None:
        settings = load_settings()
        Stack(settings).up()
    warm = list(generate_workload(4, 5, seed=6, forks=False).lines)
    lines = list(generate_workload(rooms, per_room, seed=5).lines)
    if bare:
        warm_expected, expected = len(warm), len(lines)
    else:
        _, warm_expected = replay_rate(warm)
        _, expected = replay_rate(lines)
    prefix = f"{'bpaced' if bare else 'wpaced'}{time.strftime('%H%M%S')}"
    run_settings = prepare_run(settings, prefix, partitions=PARTITIONS)
    cluster = Cluster(run_settings, logdir_of(run_settings))
    out = ChunkRecords(run_settings) if bare else ChunkEvents(run_settings)
    what = "records sent" if bare else "events in chunks"

    def done(target: int, which: str) -> None:
        wait_for_progress(run_settings, out, target, TIMEOUT_S, f"{which} {what}", cluster=cluster)

    try:
        if bare:
            child = cluster.start(
                "--id", f"{prefix}-b1", name="bare1", module="pipeline.bench.bare_agent"
            )
        else:
            child = cluster.start("worker", "--id", f"{prefix}-w1", name="worker1")
        pid = child.popen.pid
        produce_lines(run_settings, warm, show_progress=False)
        done(warm_expected, "the warm-up's")
        cpu_before, started = _cpu_seconds([pid]), time.monotonic()
        produce_timed(run_settings, lines, [None] * len(lines), rate=rate)
        done(warm_expected + expected, "the paced")
        cpu, seconds = _cpu_seconds([pid]) - cpu_before, time.monotonic() - started
    finally:
        out.close()
        cluster.stop()
        cleanup(run_settings)
    return {
        "workload": "generated, paced",
        "rooms": rooms,
        "per_room": per_room,
        "rate": rate,
        "events": expected,
        "seconds": round(seconds, 3),
        "worker_cpu_per_wall": round(cpu / seconds, 2),
        "worker_cpu_us_per_event": round(cpu / max(expected, 1) * 1e6),
    }


def describe(r: dict[str, Any]) -> str:
    return (
        f"{r['workload']:<11} {r['rooms']} rooms x {r['per_room']}: {r['events']} events "
        f"in {r['seconds']:.1f} s ({r['events_per_s']:,} events/s, {r['workers']} worker(s)); "
        f"worker CPU {r['worker_cpu_us_per_event']:,} us/event, "
        f"replay {r['replay_us_per_event']:,} us/event "
        f"({r['worker_cpu_us_per_event'] / max(r['replay_us_per_event'], 1):.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rooms", type=int, default=None)
    parser.add_argument("--per-room", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workload", choices=[*WORKLOADS, "both"], default="both")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    args = parser.parse_args()
    names = list(WORKLOADS) if args.workload == "both" else [args.workload]
    for name in names:
        rooms, per_room, heavy = WORKLOADS[name]
        result = run(
            args.rooms or rooms, args.per_room or per_room, args.workers, state_heavy=heavy
        )
        print(orjson.dumps(result).decode() if args.json else describe(result), flush=True)


if __name__ == "__main__":
    main()
