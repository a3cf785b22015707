"""Integration fixtures: the project's real stack (Kafka broker + PostgreSQL), started or reused.

Every test gets its own topic prefix and, where it writes, its own database, so tests neither
see each other's messages nor rows. Nothing here is mocked: these fixtures start the servers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest

from pipeline.config import Settings, load_settings
from pipeline.dev.local import database_url_for
from pipeline.dev.stack import Stack
from tests.integration.harness import Processes
from topics import apply_topics
from topics.apply import delete_prefixed_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """The local stack, started once per test session (reused when it already runs)."""
    settings = load_settings()
    Stack(settings).up(lambda m: print(f"stack: {m}"))
    return settings


@pytest.fixture
def settings(stack_settings: Settings) -> Iterator[Settings]:
    """Settings with a fresh topic prefix (topics applied) and a fresh, migrated database."""
    tag = uuid.uuid4().hex[:10]
    dbname = f"rs_test_{tag}"
    conn = psycopg2.connect(database_url_for(stack_settings.database_url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{dbname}"')
    s = replace(
        stack_settings,
        topic_prefix=f"t{tag}",
        pdu_partitions=4,
        database_url=database_url_for(stack_settings.database_url, dbname),
    )
    report = apply_topics(s)
    assert report.ok, report.drift
    try:
        from db.migrate import migrate
    except ImportError:  # the schema module is optional for the stack's own tests
        pass
    else:
        migrate(s.database_url)
    yield s
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    conn.close()
    delete_prefixed_topics(s)


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    """Roomstream processes a test starts; all stopped at its end."""
    p = Processes(settings, tmp_path)
    yield p
    p.stop_all()
