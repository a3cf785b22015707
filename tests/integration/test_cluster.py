"""A three-broker cluster (``stack up --brokers 3``) under a running pipeline: one broker is
killed with SIGKILL mid-stream and restarted, and afterwards every valid event is stored once,
every change announced once in order, and the rooms' state equals the offline replay's.

The cluster has its own directory and ports; the database is the shared stack's (a database of
the test's own). Topics get the cluster defaults, three replicas with two in sync, so losing one
broker loses no acknowledged record and blocks no writer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from db.migrate import migrate
from pipeline import pg
from pipeline.config import Settings
from pipeline.dev.local import database_url_for
from pipeline.dev.stack import Kafka, Stack, _port_free
from pipeline.kafka_clients import confluent_config
from tests.integration.harness import ROOT
from tests.integration.outage import OutageStream
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
    with OutageStream(settings, tmp_path, seed=23, first_part_s=180) as stream:
        # The leader of the committer's partition dies as a machine would: no shutdown.
        victim = kafka.nodes[_leader_of_chunks(settings) - 1]
        victim.kill9()
        stream.produce_rest()
        time.sleep(5)
        assert kafka.up()  # the victim alone is started again
        invalidations = stream.finish(300)
        # Nobody helped: the processes that started are the ones still running.
        assert stream.worker.alive() and stream.committer.alive()

    # The outage is told in state changes, not in a line per reconnection attempt.
    worker_log = stream.worker.log.read_text(errors="replace").splitlines()
    assert [line for line in worker_log if "lost Kafka" in line], worker_log[-20:]
    retries = [line for line in worker_log if "Unable connect" in line or "not ready" in line]
    assert retries == []
    about_victim = [
        line for line in worker_log if f"node {victim.node_id}" in line or f":{victim.port}" in line
    ]
    assert len(about_victim) <= 4, about_victim
    stream.assert_nothing_lost_or_doubled(invalidations)
