"""A three-broker cluster (``stack up --brokers 3``) under a running pipeline: one broker is
killed with SIGKILL mid-stream and restarted, and afterwards every valid event is stored once,
every change announced once in order, and the rooms' state equals the offline replay's.

The cluster has its own directory and ports; the database is the shared stack's (a database of
the test's own). Topics get the cluster defaults, three replicas with two in sync, so losing one
broker loses no acknowledged record and blocks no writer.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import psycopg2
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from db.migrate import migrate
from pipeline import pg
from pipeline.config import Settings
from pipeline.dev.local import database_url_for
from pipeline.dev.stack import Kafka, Stack, _port_free
from pipeline.dev.workload import generate_workload
from pipeline.kafka_clients import confluent_config
from pipeline.room.replay import replay
from tests.integration.harness import ROOT, Processes, TopicReader, produce, wait_for
from topics import apply_topics
from topics.definitions import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKERS = 3


def free_port_block(n: int) -> int:
    """A port p with p .. p + n - 1 all free (a node's client and controller ports each)."""
    for base in range(29100, 60000, 97):
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


@pytest.fixture(scope="module")
def cluster(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Kafka]]:
    """The cluster, started once for this module's tests (three JVMs take half a minute)."""
    port = free_port_block(2 * BROKERS)
    base = replace(
        stack_settings, stack_dir=tmp_path_factory.mktemp("cluster") / "stack", kafka_port=port
    )
    stack = Stack(base, brokers=BROKERS)
    kafka = stack.kafka
    kafka.up(lambda m: print(f"cluster: {m}"))
    tag = uuid.uuid4().hex[:10]
    dbname = f"rs_cluster_{tag}"
    admin = pg.connect(stack_settings, "postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    s = replace(
        base,
        kafka_bootstrap=kafka.address,
        topic_prefix=f"c{tag}",
        pdu_partitions=4,
        database_url=database_url_for(stack_settings.database_url, dbname),
    )
    try:
        report = apply_topics(s)
        assert report.ok, report.drift
        migrate(pg.database_dsn(s))
        yield s, kafka
    finally:
        stack.down()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()


def _stored(settings: Settings) -> int:
    try:
        with pg.connect(settings) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg2.OperationalError:
        return -1


def _leader_of_chunks(settings: Settings) -> int:
    md = AdminClient(confluent_config(settings)).list_topics(timeout=10)
    return int(md.topics[settings.topic(Topic.CHUNKS)].partitions[0].leader)


def test_the_cli_lists_and_exports_every_node(cluster: tuple[Settings, Kafka]) -> None:
    settings, kafka = cluster
    env = {
        **os.environ,
        "ROOMSTREAM_STACK_DIR": str(settings.stack_dir),
        "ROOMSTREAM_KAFKA_PORT": str(settings.kafka_port),
    }
    cli = [sys.executable, "-m", "pipeline.cli", "stack"]
    out = subprocess.run(
        [*cli, "env"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert f"ROOMSTREAM_KAFKA_BOOTSTRAP={kafka.address}" in out.stdout, out.stderr
    assert kafka.address.count(",") == BROKERS - 1
    status = subprocess.run(
        [*cli, "status"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert [line.split()[0] for line in status.stdout.splitlines()][:BROKERS] == [
        "kafka-1",
        "kafka-2",
        "kafka-3",
    ]
    # A second `up` asking for another layout of the same directory is refused, naming why.
    again = subprocess.run(
        [*cli, "up", "--brokers", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1 and "holds a stack of 3 broker(s)" in again.stderr
    # The topics carry the cluster defaults: three replicas, two in sync.
    admin = AdminClient(confluent_config(settings))
    md = admin.list_topics(timeout=10)
    for name in Topic:
        partitions = md.topics[settings.topic(name)].partitions.values()
        assert {len(p.replicas) for p in partitions} == {3}
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic(Topic.CHUNKS))
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["min.insync.replicas"].value == "2"


def test_a_broker_killed_mid_stream_loses_nothing_and_doubles_nothing(
    cluster: tuple[Settings, Kafka], tmp_path: Path
) -> None:
    settings, kafka = cluster
    workload = generate_workload(30, 30, seed=23)
    lines = list(workload.lines)
    expected = replay(lines)
    n_valid = workload.event_count
    procs = Processes(settings, tmp_path)
    invalidations: TopicReader | None = None
    try:
        worker = procs.worker("w1")
        committer = procs.start("committer", name="committer")
        half = len(lines) // 2
        produce(settings, lines[:half])
        wait_for(
            lambda: _stored(settings) > half // 4,
            180,
            "a first part stored",
            processes=[worker, committer],
        )
        # The leader of the committer's partition dies as a machine would: no shutdown.
        victim = kafka.nodes[_leader_of_chunks(settings) - 1]
        victim.kill9()
        produce(settings, lines[half:])
        time.sleep(5)
        assert kafka.up()  # the victim alone is started again
        wait_for(
            lambda: _stored(settings) >= n_valid,
            300,
            f"{n_valid} events stored",
            processes=[worker, committer],
        )
        invalidations = TopicReader(settings, Topic.INVALIDATIONS)
        reader = invalidations
        wait_for(
            lambda: (
                bool(reader.messages)
                and orjson.loads(reader.messages[-1].value())["position"] >= n_valid
            ),
            120,
            "the last invalidation",
            readers=[reader],
            processes=[committer],
        )
        # Nobody helped: the processes that started are the ones still running.
        assert worker.alive() and committer.alive()
    finally:
        procs.stop_all()

    # The outage is told in state changes, not in a line per reconnection attempt.
    worker_log = worker.log.read_text(errors="replace").splitlines()
    assert [line for line in worker_log if "lost Kafka" in line], worker_log[-20:]
    retries = [line for line in worker_log if "Unable connect" in line or "not ready" in line]
    assert retries == []
    about_victim = [
        line for line in worker_log if f"node {victim.node_id}" in line or f":{victim.port}" in line
    ]
    assert len(about_victim) <= 4, about_victim

    with pg.connect(settings) as conn, conn.cursor() as cur:
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
            cur.execute(
                "SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,)
            )
            assert sorted(r[0] for r in cur.fetchall()) == want["forward_extremities"]
    assert invalidations is not None
    messages = [orjson.loads(m.value()) for m in invalidations.messages]
    # A re-sent outbox row carries the same position; without them the chain holds.
    unique = {m["position"]: m for m in messages}
    chain = [unique[p] for p in sorted(unique)]
    assert all(b["prev_position"] == a["position"] for a, b in itertools.pairwise(chain))
    assert chain[-1]["position"] == n_valid
