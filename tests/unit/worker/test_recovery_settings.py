"""What the worker takes from settings for recovery (failure sequence 5: a ``memory://`` store
made every restart replay everything): the store is a setting, a worker with an id is a static
member of its group, and a room's stored state is checked against PostgreSQL's high-water."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import Settings, load_settings
from pipeline.room.processor import RoomProcessor
from pipeline.worker.faust_app import instance_id, make_app
from pipeline.worker.high_water import check, chunk_counter
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)


def test_the_table_store_is_a_setting(tmp_path: Path) -> None:
    settings = load_settings({"ROOMSTREAM_WORKER_STORE": "memory://"})
    app = make_app(settings, tmp_path, "w1", ONE)
    assert str(app.conf.store) == "memory:"
    # On disk by default: a restart restores only what the changelog holds beyond it.
    assert str(make_app(Settings(), tmp_path, "w1", ONE).conf.store) == "rocksdb:"


def test_a_worker_with_an_id_is_a_static_member(tmp_path: Path) -> None:
    settings = load_settings({"ROOMSTREAM_WORKER_SESSION_TIMEOUT_S": "8"})
    app = make_app(settings, tmp_path, "w1", ONE)
    assert app.conf.consumer_group_instance_id == "roomstream-processors-w1"
    assert app.conf.broker_session_timeout == 8.0
    # A restart has the session less the time since the last heartbeat to rejoin.
    assert app.conf.broker_heartbeat_interval == 1.0
    assert instance_id(settings, None) is None
    assert instance_id(replace(settings, worker_static_membership=0), "w1") is None


@pytest.mark.parametrize(
    ("high_water", "counter", "stale", "after"),
    [(0, 0, False, 0), (3, 3, False, 3), (2, 3, False, 3), (9, 3, True, 9), (None, 3, False, 3)],
    ids=["new-room", "up-to-date", "ahead", "behind", "unknown"],
)
def test_a_state_behind_the_committed_high_water_is_reported_and_numbers_are_not_reused(
    high_water: int | None, counter: int, stale: bool, after: int
) -> None:
    proc = RoomProcessor("!a:example.org")
    proc.event_seq = counter
    assert check(proc, "!a:example.org", lambda room: high_water) is stale
    assert chunk_counter(proc) == after
