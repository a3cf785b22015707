"""The committer alone (B4): prepared room chunks in, rows and invalidations out.

The chunks are what the room processors make of the workload: ``prepare_chunks`` runs the pure
``RoomProcessor`` over the PDUs offline, one input at a time as a worker does. A fresh run's
committer is started and waits, active, on its empty chunks topic; then the chunks are produced
as fast as the producer goes, and the time runs from the first produce to the invalidation that
announces the last stream ordering. That is the same span as the floor's, which produces the
same events' PDUs and COPYs their rows. The committer's own CPU time over that span (all its
threads, from /proc) divided by the events gives its cost per event, the figure that says whether
a change made the committer cheaper rather than the machine quieter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.bench.cpu import CLOCK_TICKS, CpuSampler, process_ticks
from pipeline.bench.e2e import Throughput
from pipeline.bench.runs import child_pid, cluster_groups, committer_active, wait_for_progress
from pipeline.config import Settings
from pipeline.errors import RoomstreamError
from pipeline.ops.produce import make_producer
from pipeline.room.processor import Incoming, RoomProcessor
from pipeline.room.routing import room_id_of
from topics import chunk as chunk_codec
from topics.definitions import Topic


@dataclass(frozen=True, slots=True)
class CommitterRun:
    throughput: Throughput
    cpu_s: float  # the committer process's CPU time (every thread) from first produce to last

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_s / max(1, self.throughput.events)


@dataclass(frozen=True, slots=True)
class PreparedChunks:
    chunks: list[tuple[str, bytes]]  # (room_id, chunk JSON)
    events: int


def prepare_chunks(lines: Sequence[bytes]) -> PreparedChunks:
    """Each input's chunk, in arrival order, as the workers would send them."""
    processors: dict[str, RoomProcessor] = {}
    out: list[tuple[str, bytes]] = []
    events = 0
    for line in lines:
        room_id = room_id_of(line)
        if room_id is None:
            continue
        proc = processors.get(room_id)
        if proc is None:
            proc = processors[room_id] = RoomProcessor(room_id)
        result = proc.process([Incoming(line, received_ts=int(time.time() * 1000))])
        if result.chunk is not None:
            out.append((room_id, chunk_codec.encode(result.chunk)))
            events += len(result.chunk.events)
    return PreparedChunks(out, events)


def _produce_chunks(run: Settings, chunks: Sequence[tuple[str, bytes]]) -> None:
    producer = make_producer(run)
    topic = run.topic(Topic.CHUNKS)
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for room_id, value in chunks:
        while True:
            try:
                producer.produce(topic, value=value, key=room_id.encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        raise RoomstreamError(f"{left + len(failures)} chunks were not delivered to {topic}")


def _ticks(pid: int) -> int:
    ticks = process_ticks(pid)
    if ticks is None:
        raise RoomstreamError(f"the committer (pid {pid}) is gone: its CPU time cannot be read")
    return ticks


def measure_committer(settings: Settings, prepared: PreparedChunks, timeout: float) -> CommitterRun:
    with committer_active(settings, "committer", workers=0, within=60) as (run, watcher, cluster):
        time.sleep(0.5)  # its consumer is assigned right after it logs that
        sampler = CpuSampler(cluster_groups(run, cluster))
        pid = child_pid(cluster, "committer")
        sampler.start()
        ticks_at_start = _ticks(pid)
        started = time.monotonic()
        _produce_chunks(run, prepared.chunks)
        try:
            wait_for_progress(
                run,
                lambda: watcher.position,
                prepared.events,
                timeout,
                f"the committer to announce {prepared.events} events (stream position)",
                cluster=cluster,
            )
        finally:
            cpu = sampler.stop()
        cpu_s = (_ticks(pid) - ticks_at_start) / CLOCK_TICKS
        ended = watcher.last_at or time.monotonic()
        return CommitterRun(Throughput(prepared.events, ended - started, 0, cpu), cpu_s)
