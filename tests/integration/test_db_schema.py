"""Migrations and the schema check, against the real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from db.migrate import check_schema, known_migrations, migrate
from pipeline.committer.loop import Committer
from pipeline.config import Settings
from pipeline.errors import SchemaError

pytestmark = pytest.mark.integration

DESIGN_COLUMNS = {
    "rooms": {"room_id", "room_version", "creator"},
    "events": {
        "stream_ordering",
        "topological_ordering",
        "event_id",
        "room_id",
        "type",
        "state_key",
        "sender",
        "origin_server_ts",
        "received_ts",
        "format_version",
        "rejection_reason",
        "soft_failed",
        "outlier",
    },
    "event_json": {"event_id", "room_id", "format_version", "json"},
    "event_edges": {"event_id", "prev_event_id"},
    "event_auth": {"event_id", "auth_id"},
    "current_state_events": {"room_id", "type", "state_key", "event_id", "membership"},
    "room_memberships": {"event_id", "user_id", "sender", "room_id", "membership"},
    "event_forward_extremities": {"room_id", "event_id"},
    "state_groups": {"id", "room_id", "event_id"},
    "state_groups_state": {"state_group", "room_id", "type", "state_key", "event_id"},
    "state_group_edges": {"state_group", "prev_state_group"},
    "event_to_state_groups": {"event_id", "state_group"},
    "redactions": {"event_id", "redacts"},
    "committer_offsets": {"topic", "partition", "next_offset"},
    "committed_chunks": {"chunk_id", "position"},
    "invalidation_outbox": {"position", "prev_position", "room_id", "message", "sent"},
    "stream_positions": {"stream_name", "stream_id"},
}


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    c = psycopg2.connect(settings.database_url)
    yield c
    c.close()


def test_migrating_again_is_a_no_op(settings: Settings, conn: Any) -> None:
    assert migrate(settings.database_url) == []
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM schema_migrations ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == [n for n, _ in known_migrations()]


def test_every_design_table_and_column_exists(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
        found: dict[str, set[str]] = {}
        for table, column in cur.fetchall():
            found.setdefault(table, set()).add(column)
    for table, columns in DESIGN_COLUMNS.items():
        assert columns <= found.get(table, set()), table


def test_growing_counters_are_bigint(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name IN "
            "('stream_ordering', 'topological_ordering', 'state_group', 'prev_state_group',"
            " 'next_offset', 'position', 'prev_position', 'stream_id', 'event_stream_ordering')"
        )
        types = {(t, c): d for t, c, d in cur.fetchall()}
    assert types and set(types.values()) == {"bigint"}, types


def test_check_schema_accepts_the_migrated_database(conn: Any) -> None:
    check_schema(conn)


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ("DROP TABLE schema_migrations", "run `roomstream db migrate`"),
        ("DELETE FROM schema_migrations WHERE name = '0001_schema'", "run `roomstream db migrate`"),
        ("INSERT INTO schema_migrations (name) VALUES ('9999_future')", "newer than this code"),
        ("UPDATE schema_migrations SET checksum = 'edited'", "other versions of 0001_schema"),
    ],
    ids=["no schema", "behind", "ahead", "edited migration"],
)
def test_check_schema_refuses_an_unknown_schema(conn: Any, tamper: str, says: str) -> None:
    with conn.cursor() as cur:
        cur.execute(tamper)
    with pytest.raises(SchemaError, match=says.replace("`", ".")):
        check_schema(conn)
    conn.rollback()


def test_the_committer_refuses_to_run_on_a_newer_schema(settings: Settings, conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO schema_migrations (name) VALUES ('9999_future')")
    conn.commit()
    with pytest.raises(SchemaError, match="9999_future"):
        Committer(settings, threading.Event()).run()


def test_a_migrations_table_from_before_checksums_is_accepted_and_upgraded(
    settings: Settings, conn: Any
) -> None:
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
    conn.commit()
    check_schema(conn)
    conn.rollback()
    assert migrate(settings.database_url) == []
    check_schema(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations WHERE checksum IS NULL")
        assert cur.fetchone() == (len(known_migrations()),)
