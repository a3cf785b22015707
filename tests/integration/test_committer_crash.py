"""Kill the committer process at each step of its commit and restart it: nothing lost or doubled.

The process dies with ``os._exit(137)`` at the named point (``ROOMSTREAM_CRASH_AT``), or by a
real SIGKILL in the middle of a stream; the restarted committer must leave every chunk stored
once, stream orderings contiguous, and every change announced (duplicates at the same position).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipeline.committer.loop import APPLICATION_NAME, CRASH_POINTS
from pipeline.config import Settings
from pipeline.invalidations import InvalidationClient
from pipeline.room.chunk import Chunk
from tests.integration._chunks import RoomSim, member, msg
from tests.integration.committer_harness import WAIT_S, message_count, produce, query, read_all
from topics.definitions import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def start(
    settings: Settings, tmp_path: Path, crash_at: str | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        ROOMSTREAM_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        ROOMSTREAM_DATABASE_URL=settings.database_url,
        ROOMSTREAM_TOPIC_PREFIX=settings.topic_prefix,
        ROOMSTREAM_COMMIT_BATCH_MAX=str(settings.commit_batch_max),
    )
    env.pop("ROOMSTREAM_CRASH_AT", None)
    if crash_at is not None:
        env["ROOMSTREAM_CRASH_AT"] = crash_at
    with (tmp_path / f"committer-{crash_at or 'clean'}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "committer"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def crash(settings: Settings, tmp_path: Path, point: str) -> None:
    proc = start(settings, tmp_path, point)
    assert proc.wait(WAIT_S) == 137, (tmp_path / f"committer-{point}.log").read_text()


def finish(settings: Settings, tmp_path: Path, total: int) -> InvalidationClient:
    """Run a clean committer until ``total`` events are announced, then SIGTERM it."""
    inv = InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS))
    proc = start(settings, tmp_path)
    log = tmp_path / "committer-clean.log"
    try:
        assert inv.wait_for_position(total, WAIT_S), log.read_text()
        # A crashed run may have published everything already, so the position proves nothing
        # of this committer: it must have become active (and resent what was unsent) before
        # the SIGTERM, or the signal lands while it is still starting.
        deadline = time.monotonic() + WAIT_S
        while b"committer is active" not in log.read_bytes():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        deadline = time.monotonic() + WAIT_S
        while query(settings, "SELECT count(*) FROM invalidation_outbox WHERE NOT sent") != [(0,)]:
            assert time.monotonic() < deadline, "the outbox was never re-sent"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT_S)
        inv.close()
    assert code == 0  # SIGTERM is a clean stop
    return inv


def workload(rooms: int = 3) -> list[Chunk]:
    sims = [RoomSim(f"!crash{i}:example.org") for i in range(rooms)]
    chunks = [s.create_chunk() for s in sims]
    chunks += [s.chunk(member("@bob:example.org"), msg(s.creator)) for s in sims]
    return chunks


def check_exactly_once(settings: Settings, chunks: list[Chunk], inv: InvalidationClient) -> None:
    total = sum(len(c.events) for c in chunks)
    stored = [r[0] for r in query(settings, "SELECT stream_ordering FROM events ORDER BY 1")]
    assert stored == list(range(1, total + 1))
    assert query(settings, "SELECT count(*) FROM committed_chunks") == [(len(chunks),)]
    assert query(settings, "SELECT count(*) FROM invalidation_outbox WHERE NOT sent") == [(0,)]
    assert inv.gaps == 0
    published = [
        orjson.loads(m)
        for m in read_all(
            settings, Topic.INVALIDATIONS, message_count(settings, Topic.INVALIDATIONS)
        )
    ]
    # Each record either continues the chain or repeats, byte for byte, one already sent.
    first: dict[int, dict[str, object]] = {}
    head = 0
    for m in published:
        if m["position"] > head:
            assert m["prev_position"] == head
            head = m["position"]
            first[head] = m
        else:
            assert first[m["position"]] == m
    assert head == total
    # Every event announced once, in stream order (one message per transaction), plus duplicates.
    announced = [e["event_id"] for p in sorted(first) for e in first[p]["events"]]  # type: ignore[attr-defined]
    assert announced == [e.event_id for c in chunks for e in c.events]


@pytest.mark.parametrize("point", [p for p in CRASH_POINTS if p != "after_resend"])
def test_invariant_3_kill_at_each_commit_step_then_restart(
    settings: Settings, tmp_path: Path, point: str
) -> None:
    chunks = workload()
    produce(settings, chunks)
    crash(settings, tmp_path, point)
    inv = finish(settings, tmp_path, sum(len(c.events) for c in chunks))
    check_exactly_once(settings, chunks, inv)


def test_invariant_3_kill_during_the_resend_at_restart(settings: Settings, tmp_path: Path) -> None:
    chunks = workload()
    produce(settings, chunks)
    crash(settings, tmp_path, "after_commit")  # leaves unsent outbox rows
    crash(settings, tmp_path, "after_resend")  # dies having re-sent them, before marking
    inv = finish(settings, tmp_path, sum(len(c.events) for c in chunks))
    check_exactly_once(settings, chunks, inv)


def test_invariant_3_sigkill_mid_stream_then_restart(settings: Settings, tmp_path: Path) -> None:
    settings = settings.with_overrides(commit_batch_max=5)
    chunks = workload(rooms=40)
    produce(settings, chunks)
    total = sum(len(c.events) for c in chunks)
    proc = start(settings, tmp_path)
    with InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS)) as inv:
        assert inv.wait_for_position(1, WAIT_S)
    proc.kill()  # SIGKILL wherever it is
    assert proc.wait(WAIT_S) == -signal.SIGKILL
    inv = finish(settings, tmp_path, total)
    check_exactly_once(settings, chunks, inv)


def test_a_standby_process_takes_over_when_the_active_one_is_killed(
    settings: Settings, tmp_path: Path
) -> None:
    sims = [RoomSim("!standby:example.org")]
    produce(settings, [sims[0].create_chunk()])
    active = start(settings, tmp_path)
    inv = InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS))
    standby: subprocess.Popen[bytes] | None = None
    try:
        assert inv.wait_for_position(2, WAIT_S)
        standby = start(settings, tmp_path, crash_at=None)
        dbname = settings.database_url.rsplit("/", 1)[1]
        sessions = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
        )
        for _ in range(int(WAIT_S * 10)):
            if query(settings, sessions, APPLICATION_NAME, dbname) == [(2,)]:
                break
            time.sleep(0.1)
        active.kill()
        assert active.wait(WAIT_S) == -signal.SIGKILL
        produce(settings, [sims[0].chunk(msg(sims[0].creator))])
        assert inv.wait_for_position(3, WAIT_S), (tmp_path / "committer-clean.log").read_text()
        assert standby.poll() is None
    finally:
        inv.close()
        if active.poll() is None:
            active.kill()
        if standby is not None:
            standby.send_signal(signal.SIGTERM)
            assert standby.wait(WAIT_S) == 0
    assert [r[0] for r in query(settings, "SELECT stream_ordering FROM events ORDER BY 1")] == [
        1,
        2,
        3,
    ]
