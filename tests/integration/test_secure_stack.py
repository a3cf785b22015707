"""The secured local stack (``stack up --secure``): Kafka takes SCRAM-SHA-512 users over TLS
with a CA of the stack's own, PostgreSQL takes scram-sha-256 passwords; Roomstream's processes
reach both with the settings ``stack env`` prints, and a client without them is refused.

The stack has its own directory and ports; it is started once for this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from db.migrate import migrate
from pipeline import pg
from pipeline.config import Settings, load_settings, settings_environ
from pipeline.dev.stack import Stack
from pipeline.kafka_clients import confluent_config
from pipeline.room.replay import replay
from tests.integration.harness import ROOT, Processes, TopicReader, fold_chunks, produce, wait_for
from tests.integration.rooms import busy_room, lines_of
from tests.integration.test_cluster import free_port_block
from topics import apply_topics
from topics.definitions import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings as `eval "$(roomstream stack env)"` gives them for a secured stack."""
    port = free_port_block(4)
    base = replace(
        stack_settings,
        stack_dir=tmp_path_factory.mktemp("secure") / "stack",
        kafka_port=port,
        pg_port=port + 2,
    )
    stack = Stack(base, secure=True)
    stack.up(lambda m: print(f"secure stack: {m}"))
    try:
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in stack.env_lines()
            if line.startswith("export ROOMSTREAM_")
        )
        env["ROOMSTREAM_STACK_DIR"] = str(base.stack_dir)
        env["ROOMSTREAM_PDU_PARTITIONS"] = "4"
        yield load_settings(env)
    finally:
        stack.down()


def test_a_worker_and_the_operators_commands_run_through_the_secured_stack(
    secured: Settings, tmp_path: Path
) -> None:
    assert secured.kafka_sasl_username == "roomstream"
    # The URL names the password file; the password itself is in no URL and no argument.
    assert "passfile=" in secured.database_url
    assert urlsplit(secured.database_url).password is None
    report = apply_topics(secured)
    assert report.ok, report.drift
    migrate(pg.database_dsn(secured))
    rooms = [busy_room(f"s{i}", messages=3) for i in range(3)]
    lines = [line for r in rooms for line in lines_of(r)]
    procs = Processes(secured, tmp_path)
    chunks = TopicReader(secured, Topic.CHUNKS)
    try:
        worker = procs.worker("w1")
        produce(secured, lines)
        expected = {
            room: {k: v for k, v in view.items() if k != "parked"}
            for room, view in replay(lines)["rooms"].items()
        }

        def all_rooms_out() -> bool:
            seen, _ = fold_chunks(m.value() for m in chunks.messages)
            return {r: v.as_replay() for r, v in seen.items()} == expected

        wait_for(all_rooms_out, 120, "every room's chunks", readers=[chunks], processes=[worker])
        committer = procs.start("committer", name="committer")
        # Every line is an event the database stores (rejected and soft-failed ones too).
        total = len(lines) - len(replay(lines)["dead_letter"])

        def all_committed() -> bool:
            conn = pg.connect(secured)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM events")
                    row = cur.fetchone()
            finally:
                conn.close()
            return row is not None and row[0] == total

        wait_for(all_committed, 120, "every event committed", processes=[committer])
    finally:
        chunks.close()
        procs.stop_all()
    # The operator's commands take the same settings from the environment.
    status = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "status", "--json"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ROOMSTREAM_")},
            **settings_environ(secured),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            {"kafka_sasl_username": None, "kafka_sasl_password_file": None, "kafka_ca_file": None},
            "no credentials, no TLS",
        ),
        ({"kafka_sasl_username": None, "kafka_sasl_password_file": None}, "TLS, no credentials"),
        ({"kafka_sasl_password_file": None, "kafka_sasl_password": "wrong"}, "a wrong password"),
        ({"kafka_ca_file": None, "kafka_security_protocol": "SASL_PLAINTEXT"}, "no TLS"),
    ],
)
def test_a_kafka_client_without_the_credentials_is_refused(
    secured: Settings, change: dict[str, object], why: str
) -> None:
    good = AdminClient(confluent_config(secured)).list_topics(timeout=10)
    assert len(good.brokers) == 1
    bad = replace(secured, **change)
    with pytest.raises(KafkaException):
        AdminClient(confluent_config(bad)).list_topics(timeout=5)


def test_postgresql_refuses_a_connection_without_the_password(
    secured: Settings, tmp_path: Path
) -> None:
    empty = tmp_path / "pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    plain = secured.database_url.split("?", 1)[0]
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(plain, passfile=str(empty), connect_timeout=5)
    with pg.connect(secured) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
