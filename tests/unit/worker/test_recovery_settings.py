"""What the worker takes from settings for recovery (failure sequence 5: a ``memory://`` store
made every restart replay everything): the store is a setting, a worker with an id is a static
member of its group (a room's stored state checked against PostgreSQL and rebuilt from it:
``test_rebuild.py``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.worker.faust_app import instance_id, make_app
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
