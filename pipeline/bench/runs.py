"""What every benchmark run needs: a fresh prefix and database, the pids of the parts for CPU
sampling, a warm-up, and cleaning up afterwards.

A run's topics and database are its own (``pipeline.dev.local.prepare_run``), and are deleted when
the benchmark is done with them, so repeated runs do not fill the broker and the disk.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
from confluent_kafka import Consumer, TopicPartition

from pipeline import pg
from pipeline.bench.cpu import PidSource, children_of
from pipeline.config import Settings
from pipeline.dev.local import (
    Cluster,
    InvalidationWatcher,
    prepare_run,
    produce_timed,
    remove_worker_data,
    running,
    wait_for_workers,
)
from pipeline.dev.stack import Stack
from pipeline.dev.workload import generate_workload
from pipeline.errors import MalformedMessage, RoomstreamError
from pipeline.kafka_clients import confluent_config
from topics import chunk as chunk_codec
from topics import dead_letter
from topics.apply import delete_prefixed_topics
from topics.definitions import Topic
from topics.invalidation import decode_invalidation

_runs = itertools.count(1)


def fresh_run(settings: Settings, tag: str) -> Settings:
    """Settings of a new run: its own topics (applied) and database (migrated)."""
    prefix = f"bench{time.strftime('%H%M%S')}{os.getpid() % 1000}{next(_runs)}{tag}"
    return prepare_run(settings, prefix)


def logdir_of(run: Settings) -> Path:
    return run.stack_dir / "runs" / run.topic_prefix


def cleanup(run: Settings) -> None:
    """Drop the run's database, delete its topics (faust's own included) and its workers'
    data directories."""
    remove_worker_data(run)
    dbname = run.database_url.rpartition("/")[2]
    with contextlib.suppress(psycopg2.Error):
        conn = pg.connect(run, "postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.close()
    delete_prefixed_topics(run)


def stack_groups(settings: Settings) -> dict[str, PidSource]:
    """The broker and PostgreSQL (the postmaster with every backend) as CPU sample groups."""
    stack = Stack(settings)

    def kafka() -> list[int]:
        pid = stack.kafka.pid()
        return [pid] if pid else []

    def postgres() -> list[int]:
        pid = stack.postgres.pid()
        return children_of(pid) if pid else []

    return {"Kafka broker (java)": kafka, "PostgreSQL (all backends)": postgres}


def cluster_groups(settings: Settings, cluster: Cluster | None) -> dict[str, PidSource]:
    """Each child process of the run, the stack, and this process (producer and watcher)."""
    groups: dict[str, PidSource] = {}
    for child in cluster.children if cluster else []:
        pid = child.popen.pid
        groups[child.name] = lambda pid=pid: [pid]  # type: ignore[misc]
    groups.update(stack_groups(settings))
    groups["bench process (producer, watcher)"] = lambda: [os.getpid()]
    return groups


def child_pid(cluster: Cluster, name: str) -> int:
    for c in cluster.children:
        if c.name == name:
            return int(c.popen.pid)
    raise RoomstreamError(f"the run has no process named {name}")


def wait_for(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    cluster: Cluster | None = None,
    interval: float = 0.05,
) -> None:
    """Wait until ``done``; raise, naming ``what``, when ``timeout`` passes or a child died."""
    deadline = time.monotonic() + timeout
    while not done():
        if cluster is not None:
            cluster.check_alive()
        if time.monotonic() > deadline:
            raise RoomstreamError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Stalled(RoomstreamError):
    """The run stopped short of its target; ``reasons`` are its dead letters' reasons."""

    def __init__(self, what: str, reached: int, target: int, reasons: list[str]) -> None:
        detail = (
            f"; the run dead-lettered {len(reasons)} input(s), first: {reasons[0]}"
            if reasons
            else "; the run dead-lettered nothing"
        )
        super().__init__(f"{what}: reached {reached} of {target}{detail}")
        self.reached = reached
        self.target = target
        self.reasons = reasons


def dead_letters(run: Settings, most: int = 200) -> list[str]:
    """The reasons of the run's dead letters (at most ``most``), oldest first."""
    consumer = Consumer(
        {
            **confluent_config(run),
            "group.id": "bench-dead-letters",
            "enable.auto.commit": False,
        }
    )
    try:
        topic = TopicPartition(run.topic(Topic.DEAD_LETTER), 0, 0)
        _, hi = consumer.get_watermark_offsets(topic, timeout=5)
        if hi <= 0:
            return []
        consumer.assign([topic])
        reasons: list[str] = []
        deadline = time.monotonic() + 10
        while len(reasons) < min(hi, most) and time.monotonic() < deadline:
            for msg in consumer.consume(min(hi, most), 1.0):
                if msg.error() is None:
                    try:
                        reasons.append(dead_letter.decode(msg.value()).reason)
                    except MalformedMessage as e:
                        reasons.append(f"(not a dead-letter message: {e.reason})")
        return reasons
    finally:
        consumer.close()


def wait_for_progress(
    run: Settings,
    progress: Callable[[], int],
    target: int,
    timeout: float,
    what: str,
    *,
    cluster: Cluster | None = None,
    stall: float = 90.0,
    interval: float = 0.05,
) -> None:
    """Wait until ``progress()`` reaches ``target``.

    Gives up, saying how far it got and what the run dead-lettered, when ``timeout`` passes or
    nothing moves for ``stall`` seconds: a workload with no bad input has nothing to
    dead-letter, so a dead letter means events were lost and the target will never be reached.
    """
    deadline = time.monotonic() + timeout
    last, moved_at = progress(), time.monotonic()
    while (now := progress()) < target:
        t = time.monotonic()
        if now != last:
            last, moved_at = now, t
        if cluster is not None:
            cluster.check_alive()
        if t > deadline or t - moved_at > stall:
            reasons = dead_letters(run)
            why = (
                f"timed out after {timeout:.0f} s"
                if t > deadline
                else f"no progress for {stall:.0f} s"
            )
            raise Stalled(
                f"{why} waiting for {what} (logs: {logdir_of(run)})", now, target, reasons
            )
        time.sleep(interval)


def wait_for_log(cluster: Cluster, name: str, text: str, timeout: float) -> None:
    child = next(c for c in cluster.children if c.name == name)

    def seen() -> bool:
        try:
            return text in child.log.read_text(errors="replace")
        except FileNotFoundError:
            return False

    wait_for(seen, timeout, f"{name} to log {text!r}", cluster, interval=0.2)


def warm_up(run: Settings, cluster: Cluster, watcher: InvalidationWatcher, seed: int) -> None:
    """Send a small workload over every partition and wait until all of it is announced.

    Measurements start after this: workers have their partitions, the committer is active,
    and connections are open, so start-up time is not counted as throughput or latency.
    """
    wait_for_workers(run, cluster)
    warm = generate_workload(2 * run.pdu_partitions, 6, seed=seed, forks=False)
    start = watcher.position
    produce_timed(run, list(warm.lines), [None] * len(warm.lines))
    target = start + warm.event_count
    wait_for_progress(
        run, lambda: watcher.position, target, 180, "the warm-up to be announced", cluster=cluster
    )


class ChunkEvents:
    """How many events the run's chunks hold so far: a worker puts every waiting input of a
    room into one chunk, so chunks are fewer than inputs. Reads the topic once, as it grows."""

    def __init__(self, run: Settings) -> None:
        self.consumer = Consumer(confluent_config(run, **{"group.id": "bench-count"}))
        self.consumer.assign([TopicPartition(run.topic(Topic.CHUNKS), 0, 0)])
        self.events = 0

    def __call__(self) -> int:
        for msg in self.consumer.consume(10_000, 0.2):
            if not msg.error():
                self.events += self.count(msg.value() or b"")
        return self.events

    @staticmethod
    def count(value: bytes) -> int:
        return len(chunk_codec.decode(value).events)

    def close(self) -> None:
        self.consumer.close()


class ChunkRecords(ChunkEvents):
    """How many records the run's chunks topic holds so far, whatever they are (the bare agent
    of ``pipeline.bench.bare_agent`` sends one per input)."""

    @staticmethod
    def count(value: bytes) -> int:
        return 1


class PromptWatcher(InvalidationWatcher):
    """The invalidation watcher, timing each message as it arrives.

    ``Consumer.consume(n, timeout)`` returns only when it has ``n`` messages or the timeout has
    passed, so a watcher that asks for a batch adds up to that timeout to every announcement at
    a low rate (100 ms for ``consume(500, 0.1)``), which is the size of the latencies measured
    here. This one waits for one message and then takes what else is already fetched.
    """

    def run(self) -> None:
        consumer = self._consumer()
        self.ready.set()
        try:
            while not self._stop_event.is_set():
                first = consumer.poll(0.1)
                if first is None:
                    continue
                now = time.monotonic()
                for msg in [first, *consumer.consume(499, 0)]:
                    if not msg.error():
                        self._record(decode_invalidation(msg.value() or b""), now)
        finally:
            consumer.close()


@contextlib.contextmanager
def watching(run: Settings) -> Iterator[InvalidationWatcher]:
    watcher = PromptWatcher(run)
    watcher.start()
    watcher.ready.wait(10)
    try:
        yield watcher
    finally:
        watcher.stop()


@contextlib.contextmanager
def committer_active(
    settings: Settings, tag: str, *, workers: int, within: float
) -> Iterator[tuple[Settings, InvalidationWatcher, Cluster]]:
    """A fresh run with ``workers`` workers and a committer that has logged it is active
    (within ``within`` seconds), watched; the run is deleted afterwards."""
    run = fresh_run(settings, tag)
    try:
        with (
            watching(run) as watcher,
            running(run, logdir_of(run), workers=workers, committer=True) as cluster,
        ):
            wait_for_log(cluster, "committer", "committer is active", within)
            yield run, watcher, cluster
    finally:
        cleanup(run)
