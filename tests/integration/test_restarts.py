"""Invariant 3 across server restarts: the broker and the database restart under a running
worker and committer, and afterwards every valid event is stored once, every change announced.

The test runs on a private stack (its own ports and directory), since it stops the servers.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import psycopg2
import pytest

from db.migrate import migrate
from pipeline.config import Settings
from pipeline.dev.stack import Stack
from pipeline.dev.workload import generate_workload
from pipeline.room.replay import replay
from tests.integration.harness import Processes, TopicReader, produce, wait_for
from tests.integration.test_stack import _free_port_pair
from topics import apply_topics
from topics.definitions import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def private_stack(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Stack]]:
    kafka_port, pg_port = _free_port_pair(), _free_port_pair()
    s = replace(
        stack_settings,
        stack_dir=tmp_path / "stack",
        kafka_port=kafka_port,
        pg_port=pg_port,
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        database_url=f"postgresql://roomstream@127.0.0.1:{pg_port}/roomstream",
        topic_prefix="restarts",
        pdu_partitions=4,
    )
    stack = Stack(s)
    stack.up()
    # The stack's PostgreSQL takes a password: its URL names the password file.
    s = replace(s, database_url=stack.postgres.url)
    try:
        assert apply_topics(s).ok
        migrate(s.database_url)
        yield s, stack
    finally:
        stack.down()


def _stored(settings: Settings) -> int:
    try:
        with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg2.OperationalError:
        return -1  # the database is restarting


def test_broker_and_database_restarts_lose_nothing_and_double_nothing(
    private_stack: tuple[Settings, Stack], tmp_path: Path
) -> None:
    settings, stack = private_stack
    workload = generate_workload(30, 30, seed=11)
    lines = list(workload.lines)
    expected = replay(lines)
    n_valid = workload.event_count
    procs = Processes(settings, tmp_path)
    try:
        worker = procs.worker("w1")
        committer = procs.start("committer", name="committer")
        half = len(lines) // 2
        produce(settings, lines[:half])
        wait_for(
            lambda: _stored(settings) > half // 4,
            120,
            "a first part stored",
            processes=[worker, committer],
        )

        # The broker goes away for a few seconds, mid-stream, and comes back.
        stack.kafka.down()
        time.sleep(3)
        stack.kafka.up()
        produce(settings, lines[half:])

        # Then the database restarts while the rest flows.
        def restart_db() -> None:
            time.sleep(2)
            stack.postgres.down()
            time.sleep(2)
            stack.postgres.up()

        restarter = threading.Thread(target=restart_db)
        restarter.start()
        restarter.join(60)
        wait_for(
            lambda: _stored(settings) >= n_valid,
            240,
            f"{n_valid} events stored",
            processes=[worker, committer],
        )
        invalidations = TopicReader(settings, Topic.INVALIDATIONS)
        wait_for(
            lambda: (
                bool(invalidations.messages)
                and orjson.loads(invalidations.messages[-1].value())["position"] >= n_valid
            ),
            120,
            "the last invalidation",
            readers=[invalidations],
            processes=[committer],
        )
    finally:
        procs.stop_all()

    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT min(stream_ordering), max(stream_ordering), count(*),"
            " count(DISTINCT event_id) FROM events"
        )
        assert cur.fetchone() == (1, n_valid, n_valid, n_valid)
        for room_id, want in expected["rooms"].items():
            cur.execute(
                "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
                (room_id,),
            )
            assert sorted([t, k, e] for t, k, e in cur.fetchall()) == want["current_state"]
    messages = [orjson.loads(m.value()) for m in invalidations.messages]
    # Duplicates (a re-sent outbox row) carry the same position; without them the chain holds.
    unique = {m["position"]: m for m in messages}
    chain = [unique[p] for p in sorted(unique)]
    assert all(b["prev_position"] == a["position"] for a, b in itertools.pairwise(chain))
    assert chain[-1]["position"] == n_valid
