"""Running Roomstream's processes against the real stack, and reading what they produced.

Workers and committers run as real subprocesses (``python -m pipeline.cli ...``) so that tests can
SIGTERM them, kill -9 them and start new ones, as an operator would.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import Settings
from pipeline.dev.local import Child, Cluster, settings_env
from pipeline.kafka_clients import consumer_config

__all__ = [
    "ROOT",
    "Processes",
    "TopicReader",
    "fold_chunks",
    "produce",
    "roomstream",
    "settings_env",
    "wait_for",
]
from pipeline.ops.produce import produce_lines
from topics import chunk as chunk_codec

ROOT = Path(__file__).resolve().parents[2]


class Process(Child):
    """A child process of a test (the same as a run's, with the test's vocabulary)."""

    def log_tail(self, n: int = 40) -> str:
        return self.tail(n)


@dataclass
class Processes:
    """Subprocesses started by a test; all stopped at the end of it."""

    settings: Settings
    logdir: Path
    started: list[Process] = field(default_factory=list)

    def start(self, command: str, *args: str, name: str | None = None, **env: str) -> Process:
        name = name or f"{command}-{len(self.started)}"
        child = Cluster(self.settings, self.logdir).start(command, *args, name=name, **env)
        proc = Process(child.name, child.popen, child.log)
        self.started.append(proc)
        return proc

    def worker(self, name: str | None = None, **env: str) -> Process:
        # The test's own directory: its workers' local stores go with it.
        env.setdefault("ROOMSTREAM_WORKER_DATA_DIR", str(self.logdir / "workers"))
        return self.start("worker", "--id", name or f"w{uuid.uuid4().hex[:6]}", name=name, **env)

    def stop_all(self) -> None:
        for p in self.started:
            p.stop()


def roomstream(
    env: Settings | Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``roomstream *args`` (``python -m pipeline.cli``) run from the checkout, in ``env`` (a
    run's settings as environment variables, or an environment as given); its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        env=settings_env(env) if isinstance(env, Settings) else dict(env),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def produce(settings: Settings, lines: Iterable[bytes]) -> int:
    return produce_lines(settings, lines, show_progress=False)


class TopicReader:
    """Reads a topic from the beginning, accumulating every message (partition order kept)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.topic = settings.topic(name)
        self.consumer = Consumer(
            consumer_config(settings, f"reader-{uuid.uuid4().hex}", **{"enable.auto.commit": False})
        )
        md = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in sorted(md.partitions)])
        self.messages: list[Any] = []

    def poll(self, seconds: float = 0.5) -> int:
        got = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            self.messages.append(msg)
            got += 1
        return got

    def values(self) -> list[Any]:
        return [orjson.loads(m.value()) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    readers: Iterable[TopicReader] = (),
    processes: Iterable[Process] = (),
) -> None:
    readers = list(readers)
    processes = list(processes)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in readers:
            r.poll(0.3)
        if predicate():
            return
        if not readers:
            time.sleep(0.3)
    logs = "\n".join(f"--- {p.name} (alive={p.alive()})\n{p.log_tail()}" for p in processes)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


@dataclass
class RoomView:
    """A room as the chunks describe it, folded in order (what the committer would store)."""

    room_version: str | None = None
    current_state: dict[tuple[str, str], str] = field(default_factory=dict)
    forward_extremities: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    soft_failed: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)

    def as_replay(self) -> dict[str, Any]:
        return {
            "room_version": self.room_version,
            "current_state": sorted([t, k, e] for (t, k), e in self.current_state.items()),
            "forward_extremities": sorted(self.forward_extremities),
            "rejected": dict(sorted(self.rejected.items())),
            "soft_failed": sorted(self.soft_failed),
        }


def fold_chunks(raw_chunks: Iterable[bytes]) -> tuple[dict[str, RoomView], dict[str, bytes]]:
    """Fold chunks per room as the committer applies them (``pipeline.room.chunk``).

    Returns the rooms and the chunks by id. A chunk whose events a room already has (its
    ``seq`` range ends at or below the room's high-water) is a replay and dropped, after
    checking that the same range carries the same digest: a processor replaying its input must
    produce the same chunk. A replay batched differently overlaps the high-water: its events
    already folded are dropped, its state changes (absolute for the keys they name) applied.
    """
    by_id: dict[str, bytes] = {}
    digests: dict[tuple[str, tuple[int, int]], str] = {}
    high: dict[str, int] = {}
    rooms: dict[str, RoomView] = {}
    for raw in raw_chunks:
        chunk = chunk_codec.decode(raw)
        seen = digests.setdefault((chunk.room_id, chunk.seq), chunk.digest)
        assert seen == chunk.digest, (
            f"chunk {chunk.chunk_id} (events {chunk.seq}) was sent twice with different content"
        )
        if chunk.seq[1] <= high.get(chunk.room_id, 0):
            continue
        by_id[chunk.chunk_id] = raw
        view = rooms.setdefault(chunk.room_id, RoomView())
        view.room_version = chunk.room_version
        known = set(view.events)
        for ev in chunk.events:
            if ev.event_id in known:
                continue
            view.events.append(ev.event_id)
            if ev.rejected:
                view.rejected[ev.event_id] = ev.rejected
            if ev.soft_failed:
                view.soft_failed.add(ev.event_id)
        high[chunk.room_id] = chunk.seq[1]
        view.forward_extremities -= set(chunk.forward_extremities_removed)
        view.forward_extremities |= set(chunk.forward_extremities_added)
        for key in chunk.current_state_removed:
            view.current_state.pop(key, None)
        for row in chunk.current_state_set:
            view.current_state[(row.type, row.state_key)] = row.event_id
    return rooms, by_id


def wait_in_chunks(
    chunks: TopicReader, ids: set[str], within: float, what: str, processes: Iterable[Process]
) -> None:
    """Until every event of ``ids`` is in the chunks read, folded as the committer folds them
    (``fold_chunks``, which checks each replay's content); the processes' logs shown if not."""

    def folded() -> set[str]:
        rooms, _ = fold_chunks(m.value() for m in chunks.messages)
        return {e for view in rooms.values() for e in view.events}

    wait_for(lambda: ids <= folded(), within, what, readers=[chunks], processes=processes)
