"""The local stack: idempotent up, clean down, clear errors; real clients against it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from pipeline.config import Settings
from pipeline.dev.stack import Stack, _pid_alive, _port_free
from pipeline.errors import MissingBinary, PortInUse
from tests.integration.harness import roomstream
from topics import apply_topics
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def _free_port_pair() -> int:
    """A port p with p and p+1 both free (the broker and its controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000 and _port_free(p) and _port_free(p + 1):
            return p
    raise RuntimeError("no free port pair")


def test_stack_up_twice_reuses_running_services(stack_settings: Settings) -> None:
    stack = Stack(stack_settings)
    before = {s.name: s.pid for s in stack.status()}
    assert all(before.values()), before
    assert stack.up() == []
    after = {s.name: s.pid for s in stack.status()}
    assert after == before


def test_stack_status_and_env_from_the_cli(stack_settings: Settings) -> None:
    cli = [sys.executable, "-m", "pipeline.cli"]
    status = subprocess.run([*cli, "stack", "status"], capture_output=True, text=True, check=False)
    assert status.returncode == 0, status.stderr
    assert "kafka" in status.stdout and "running" in status.stdout
    env = subprocess.run([*cli, "stack", "env"], capture_output=True, text=True, check=True)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
    assert exports["ROOMSTREAM_KAFKA_BOOTSTRAP"] == stack_settings.kafka_bootstrap
    # The printed URL reaches the database with a third-party client (psql).
    out = subprocess.run(
        ["psql", exports["ROOMSTREAM_DATABASE_URL"], "-tAc", "SELECT 40 + 2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "42"


def test_produce_with_confluent_kafka_and_consume_back(settings: Settings) -> None:
    topic = settings.topic(Topic.PDUS)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    rooms = [f"!room{i}:example.org" for i in range(20)]
    for i, room in enumerate(rooms):
        producer.produce(topic, key=room.encode(), value=f'{{"n": {i}}}'.encode())
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(got) < len(rooms) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        got[msg.key().decode()] = msg.partition()
    consumer.close()
    assert sorted(got) == sorted(rooms)
    assert len(set(got.values())) > 1, "keys should spread over the 4 partitions"


def test_postgres_write_and_read(settings: Settings) -> None:
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE probe (id BIGINT PRIMARY KEY, v TEXT)")
        cur.execute("INSERT INTO probe VALUES (1, 'x'), (2, 'y')")
        cur.execute("SELECT v FROM probe ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["x", "y"]
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone() == ("127.0.0.1",)


def test_topics_apply_is_idempotent_and_reports_partition_drift(settings: Settings) -> None:
    again = apply_topics(settings)
    assert again.ok and not again.created
    assert sorted(again.verified) == sorted(settings.topic(n) for n in Topic)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    fut = admin.create_partitions([NewPartitions(settings.topic(Topic.CHUNKS), 2)])
    fut[settings.topic(Topic.CHUNKS)].result(30)
    report = apply_topics(settings)
    assert not report.ok
    assert any("chunks has 2 partitions" in d for d in report.drift), report.drift


def test_topics_apply_reports_config_drift(settings: Settings) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        settings.topic(Topic.PDUS),
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)
    report = apply_topics(settings)
    assert any("retention.ms=1000" in d for d in report.drift), report.drift
    # The CLI turns drift into a non-zero exit with the difference on stdout.
    env = {**os.environ, "ROOMSTREAM_PDU_PARTITIONS": "4"}
    proc = roomstream(env, "--topic-prefix", settings.topic_prefix, "topics", "apply")
    assert proc.returncode == 1
    assert "DRIFT" in proc.stdout and "retention.ms" in proc.stdout


def test_port_clash_gives_a_clear_error(stack_settings: Settings, tmp_path: Path) -> None:
    port = _free_port_pair()
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        other = replace(stack_settings, stack_dir=tmp_path / "stack", kafka_port=port, pg_port=port)
        with pytest.raises(PortInUse, match=f"port {port} .* already in use"):
            Stack(other).postgres.up()
        with pytest.raises(PortInUse, match=f"port {port}"):
            Stack(other).kafka.up()


def test_missing_binaries_give_clear_errors(stack_settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "JAVA_HOME"},
        "PATH": f"{Path(sys.executable).parent}:{empty}",
        "ROOMSTREAM_STACK_DIR": str(tmp_path / "stack"),
        "ROOMSTREAM_KAFKA_PORT": str(_free_port_pair()),
        "ROOMSTREAM_PG_PORT": str(_free_port_pair()),
    }
    proc = roomstream(env, "stack", "up")
    assert proc.returncode == 1
    assert "'java' was not found" in proc.stderr and "openjdk" in proc.stderr
    env["ROOMSTREAM_PG_BINDIR"] = str(empty)
    proc = roomstream(env, "stack", "up")
    assert proc.returncode == 1
    assert "holds no initdb and pg_ctl" in proc.stderr
    from pipeline.dev.stack import _pg_bindir

    with pytest.raises(MissingBinary):
        _pg_bindir(empty)


@pytest.mark.slow
def test_a_second_stack_starts_and_down_leaves_nothing_running(
    stack_settings: Settings, tmp_path: Path
) -> None:
    other = replace(
        stack_settings,
        stack_dir=tmp_path / "stack",
        kafka_port=_free_port_pair(),
        pg_port=_free_port_pair(),
    )
    stack = Stack(other)
    assert sorted(stack.up()) == ["kafka", "postgres"]
    pids = [s.pid for s in stack.status()]
    assert all(pids)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{other.kafka_port}"})
    md = producer.list_topics(timeout=10)
    assert md.brokers
    assert sorted(stack.down()) == ["kafka", "postgres"]
    for pid in pids:
        assert pid is not None and not _pid_alive(pid)
    assert _port_free(other.kafka_port) and _port_free(other.pg_port)
    assert _port_free(other.kafka_port + 1)
    assert stack.down() == []
