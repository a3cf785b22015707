"""A worker's memory per room (B6): the resident set of one worker process that has processed
many rooms of state events.

Each room is the creation sequence (create, the creator's join, power levels, join rules,
history visibility) and then joins, 20 state events in all, so it holds 20 state events and
16 members. One worker (no committer: it is not measured here and would only compete for the
cores) processes every room; the benchmark waits until the chunks topic holds every input's
event, and then until the worker's first idle tick once it has stopped working (it compacts
idle rooms and gives freed memory back to the system: ``pipeline/malloc_trim.py``), and reads
VmRSS and VmHWM from ``/proc/<pid>/status``. The worker's RSS after a warm-up room and before
the rooms is its baseline; the difference over the room count is the memory per room.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from pipeline.bench.cpu import CpuSampler, peak_rss_kib, rss_kib
from pipeline.bench.report import CpuRow
from pipeline.bench.runs import (
    ChunkEvents,
    child_pid,
    cleanup,
    cluster_groups,
    fresh_run,
    logdir_of,
    wait_for_progress,
)
from pipeline.config import Settings
from pipeline.dev.local import produce_timed, running
from pipeline.dev.workload import HOME, REMOTE, user_id
from pipeline.dev.workload_builder import RoomBuilder, default_power_levels, opaque_tag
from pipeline.errors import RoomstreamError
from pipeline.malloc_trim import QUIET_S
from pipeline.worker.expiry import INTERVAL_S

STATE_EVENTS_PER_ROOM = 20
# The worker gives freed memory back at its first idle tick (every INTERVAL_S) after QUIET_S
# without work.
AT_REST_S = QUIET_S + INTERVAL_S + 1.0


@dataclass(frozen=True, slots=True)
class MemoryResult:
    rooms: int
    events: int
    idle_kib: int
    rss_kib: int
    peak_kib: int
    seconds: float
    cpu: list[CpuRow]

    @property
    def per_room_kib(self) -> float:
        return (self.rss_kib - self.idle_kib) / self.rooms

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def state_rooms(rooms: int, per_room: int = STATE_EVENTS_PER_ROOM, seed: int = 0) -> list[bytes]:
    """``rooms`` rooms of ``per_room`` state events each, room after room."""
    lines: list[bytes] = []
    for i in range(rooms):
        b = RoomBuilder("10", tag=opaque_tag("bench-memory", seed, i))
        creator = user_id(HOME, 0)
        b.create(creator)
        b.join(creator)
        b.state("m.room.power_levels", creator, default_power_levels(creator, b.rv))
        b.state("m.room.join_rules", creator, {"join_rule": "public"})
        b.state("m.room.history_visibility", creator, {"history_visibility": "shared"})
        for j in range(per_room - 5):
            b.join(user_id(REMOTE if j % 2 else HOME, j + 1))
        lines += [e.line for e in b.events]
    return lines


def measure_memory(settings: Settings, rooms: int, timeout: float) -> MemoryResult:
    warm = state_rooms(1, seed=1)
    lines = state_rooms(rooms)
    run = fresh_run(settings, "memory")
    try:
        with (
            running(run, logdir_of(run), workers=1, committer=False) as cluster,
            contextlib.closing(ChunkEvents(run)) as chunk_events,
        ):
            pid = child_pid(cluster, "worker1")
            produce_timed(run, warm, [None] * len(warm))
            wait_for_progress(
                run,
                chunk_events,
                len(warm),
                120,
                "the warm-up room",
                cluster=cluster,
                interval=0.5,
            )
            time.sleep(1.0)
            idle = rss_kib(pid)
            sampler = CpuSampler(cluster_groups(run, cluster))
            sampler.start()
            started = time.monotonic()
            produce_timed(run, lines, [None] * len(lines))
            target = len(warm) + len(lines)
            try:
                wait_for_progress(
                    run,
                    chunk_events,
                    target,
                    timeout,
                    f"the worker to process {rooms} rooms (chunks)",
                    cluster=cluster,
                    interval=0.5,
                )
            finally:
                cpu = sampler.stop()
            seconds = time.monotonic() - started
            # The last room's state reaches the table, and the worker's idle tick compacts the
            # idle rooms and gives what the burst freed back to the system: memory at rest.
            time.sleep(AT_REST_S)
            rss, peak = rss_kib(pid), peak_rss_kib(pid)
            if idle is None or rss is None or peak is None:
                raise RoomstreamError("the worker's /proc status could not be read")
            return MemoryResult(rooms, len(lines), idle, rss, peak, seconds, cpu)
    finally:
        cleanup(run)
