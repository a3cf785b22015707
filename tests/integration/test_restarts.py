"""Invariant 3 across server restarts: the broker and the database restart under a running
worker and committer, and afterwards every valid event is stored once, every change announced.

The test runs on a private stack (its own ports and directory), since it stops the servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from db.migrate import migrate
from pipeline.config import Settings
from pipeline.dev.stack import Stack
from tests.integration.outage import OutageStream
from tests.integration.test_stack import _free_port_pair
from topics import apply_topics

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


def test_broker_and_database_restarts_lose_nothing_and_double_nothing(
    private_stack: tuple[Settings, Stack], tmp_path: Path
) -> None:
    settings, stack = private_stack
    with OutageStream(settings, tmp_path, seed=11, first_part_s=120) as stream:
        # The broker goes away for a few seconds, mid-stream, and comes back.
        stack.kafka.down()
        time.sleep(3)
        stack.kafka.up()
        stream.produce_rest()

        # Then the database restarts while the rest flows.
        def restart_db() -> None:
            time.sleep(2)
            stack.postgres.down()
            time.sleep(2)
            stack.postgres.up()

        restarter = threading.Thread(target=restart_db)
        restarter.start()
        restarter.join(60)
        invalidations = stream.finish(240)
    stream.assert_nothing_lost_or_doubled(invalidations)
