"""Client settings from configuration: Kafka security, producer acks, PostgreSQL parameters,
topic replication, and settings handed to child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings, settings_environ
from pipeline.errors import ConfigError
from pipeline.kafka_clients import (
    aiokafka_kwargs,
    confluent_config,
    faust_app_kwargs,
    producer_config,
    security_protocol,
)
from pipeline.pg import database_dsn, refuse_password_in_argv, url_with_database
from topics.definitions import replication, topic_specs


@pytest.mark.parametrize(
    ("env", "protocol"),
    [
        ({}, "PLAINTEXT"),
        ({"ROOMSTREAM_KAFKA_CA_FILE": "/ca.pem"}, "SSL"),
        (
            {"ROOMSTREAM_KAFKA_SASL_USERNAME": "u", "ROOMSTREAM_KAFKA_SASL_PASSWORD": "p"},
            "SASL_PLAINTEXT",
        ),
        (
            {
                "ROOMSTREAM_KAFKA_SASL_USERNAME": "u",
                "ROOMSTREAM_KAFKA_SASL_PASSWORD": "p",
                "ROOMSTREAM_KAFKA_CA_FILE": "/ca.pem",
            },
            "SASL_SSL",
        ),
        # Explicit wins: a managed cluster with public certificates needs no CA file.
        ({"ROOMSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "SASL_SSL"),
    ],
)
def test_security_protocol_follows_the_settings_given(env: dict[str, str], protocol: str) -> None:
    assert security_protocol(load_settings(env)) == protocol


def test_sasl_ssl_client_config_carries_user_password_file_and_ca(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    s = load_settings(
        {
            "ROOMSTREAM_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
            "ROOMSTREAM_KAFKA_SASL_USERNAME": "roomstream",
            "ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "ROOMSTREAM_KAFKA_CA_FILE": "/etc/ca.pem",
        }
    )
    config = confluent_config(s)
    assert {k: v for k, v in config.items() if "." in k and k != "statistics.interval.ms"} == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "roomstream",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    kw = aiokafka_kwargs(s) if Path("/etc/ca.pem").exists() else None
    assert kw is None or kw["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(s)


def test_every_producer_waits_for_all_in_sync_replicas_and_is_idempotent() -> None:
    config = producer_config(load_settings({}), **{"linger.ms": 0})
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["linger.ms"] == 0
    assert faust_app_kwargs(load_settings({}))["producer_acks"] == -1


def test_a_user_without_a_password_is_refused_with_the_variable_to_set() -> None:
    s = load_settings({"ROOMSTREAM_KAFKA_SASL_USERNAME": "u"})
    with pytest.raises(ConfigError, match="ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE"):
        confluent_config(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOMSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"ROOMSTREAM_KAFKA_CERT_FILE": "/c.pem"}, "KAFKA_KEY_FILE"),
        (
            {"ROOMSTREAM_REPLICATION_FACTOR": "2", "ROOMSTREAM_MIN_INSYNC_REPLICAS": "3"},
            "no write could succeed",
        ),
        ({"ROOMSTREAM_REPLICATION_FACTOR": "-1"}, "REPLICATION_FACTOR"),
    ],
)
def test_inconsistent_settings_are_refused_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


@pytest.mark.parametrize(
    ("brokers", "env", "factor", "min_insync"),
    [
        (1, {}, 1, 1),  # the local stack
        (2, {}, 2, 1),
        (3, {}, 3, 2),  # a cluster
        (6, {}, 3, 2),
        (1, {"ROOMSTREAM_REPLICATION_FACTOR": "3"}, 3, 2),  # explicit: never lowered to fit
        (5, {"ROOMSTREAM_REPLICATION_FACTOR": "5", "ROOMSTREAM_MIN_INSYNC_REPLICAS": "3"}, 5, 3),
    ],
)
def test_replication_resolves_against_the_brokers_unless_set(
    brokers: int, env: dict[str, str], factor: int, min_insync: int
) -> None:
    r = replication(load_settings(env), brokers)
    assert (r.factor, r.min_insync) == (factor, min_insync)


def test_topic_specs_take_replication_and_retention_from_the_settings() -> None:
    s = load_settings(
        {
            "ROOMSTREAM_REPLICATION_FACTOR": "3",
            "ROOMSTREAM_MIN_INSYNC_REPLICAS": "2",
            "ROOMSTREAM_RETENTION_DAYS": "2",
            "ROOMSTREAM_DEAD_LETTER_RETENTION_DAYS": "10",
        }
    )
    specs = {spec.name.value: spec for spec in topic_specs(s, brokers=3)}
    assert {spec.replication_factor for spec in specs.values()} == {3}
    assert {spec.config["min.insync.replicas"] for spec in specs.values()} == {"2"}
    assert specs["pdus"].config["retention.ms"] == str(2 * 24 * 3600 * 1000)
    assert specs["dead-letter"].config["retention.ms"] == str(10 * 24 * 3600 * 1000)


def test_database_dsn_adds_tls_and_password_file_as_libpq_parameters(tmp_path: Path) -> None:
    s = load_settings(
        {
            "ROOMSTREAM_DATABASE_URL": "postgresql://rs@db.example:5432/roomstream",
            "ROOMSTREAM_PG_SSLMODE": "verify-full",
            "ROOMSTREAM_PG_PASSFILE": "/run/secrets/pgpass",
            "ROOMSTREAM_STACK_DIR": str(tmp_path),
        }
    )
    assert database_dsn(s) == (
        "postgresql://rs@db.example:5432/roomstream"
        "?sslmode=verify-full&passfile=%2Frun%2Fsecrets%2Fpgpass"
    )
    assert database_dsn(s, "postgres").startswith("postgresql://rs@db.example:5432/postgres?")
    assert url_with_database("postgresql://h/a?sslmode=require", "b") == (
        "postgresql://h/b?sslmode=require"
    )


def test_the_local_stacks_url_names_its_password_file_before_stack_up_writes_it(
    tmp_path: Path,
) -> None:
    # Settings read before a fresh stack's first `stack up` are used after it (the test
    # fixtures, the demo, the bench): the URL must already name the file `stack up` writes.
    env = {"ROOMSTREAM_STACK_DIR": str(tmp_path), "ROOMSTREAM_PG_PORT": "25432"}
    want = f"postgresql://roomstream@127.0.0.1:25432/roomstream?passfile={tmp_path}/pg/pgpass"
    before = load_settings(env).database_url
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "pgpass").write_text("127.0.0.1:25432:*:roomstream:x\n")
    assert before == load_settings(env).database_url == want


@pytest.mark.parametrize(
    "url",
    ["postgresql://rs:secret@h/db", "postgresql://rs@h/db?password=secret"],
)
def test_a_password_in_the_database_url_flag_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="password file"):
        refuse_password_in_argv(url)
    refuse_password_in_argv("postgresql://rs@h/db")


def test_a_child_process_loads_the_same_settings_from_settings_environ(tmp_path: Path) -> None:
    s = load_settings(
        {
            "ROOMSTREAM_STACK_DIR": str(tmp_path),
            "ROOMSTREAM_KAFKA_SASL_USERNAME": "u",
            "ROOMSTREAM_KAFKA_SASL_PASSWORD_FILE": "/p",
            "ROOMSTREAM_KAFKA_CA_FILE": "/ca.pem",
            "ROOMSTREAM_REPLICATION_FACTOR": "3",
            "ROOMSTREAM_METRICS_ADDR": "0.0.0.0",
            "ROOMSTREAM_PARK_EXPIRY_S": "12.5",
        }
    )
    assert load_settings(settings_environ(s)) == s


def test_a_new_kraft_cluster_id_never_reads_as_an_option() -> None:
    from pipeline.dev.stack import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)


def test_the_workers_database_readers_connect_with_the_tls_and_password_file_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # They once connected with the bare URL: under ROOMSTREAM_PG_SSLMODE=verify-full they
    # would have gone without TLS, or been refused.
    from pipeline import pg
    from pipeline.worker.high_water import PgHighWaters
    from pipeline.worker.recall import PgRecall

    dsns: list[str] = []

    class Conn:
        closed = False
        autocommit = False

    def fake_connect(dsn: str, **kwargs: object) -> Conn:
        dsns.append(dsn)
        return Conn()

    monkeypatch.setattr(pg.psycopg2, "connect", fake_connect)
    settings = Settings(
        database_url="postgresql://rs@db.example:5432/rs",
        pg_sslmode="verify-full",
        pg_sslrootcert="/ca.crt",
    )
    for reader in (PgHighWaters(settings), PgRecall(settings)):
        conn = reader.reads.conn()
        assert conn.autocommit is True
        assert reader.reads.conn() is conn, "a thread's connection is opened once"
    assert len(dsns) == 2
    assert all("sslmode=verify-full" in d and "sslrootcert=%2Fca.crt" in d for d in dsns)
