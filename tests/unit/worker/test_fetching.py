"""When the worker's fetches gather inputs (``pipeline.worker.consumer.Gathering``): from the rate
the inputs come at, over a window, with a fake clock and a stand-in for aiokafka's fetcher."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.worker.consumer import (
    Consumer,
    Fetching,
    FetchingThread,
    Gathering,
    check_fetcher,
)
from pipeline.worker.faust_app import make_app
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)
FETCHING = Fetching(wait_ms=20, min_bytes=65536, from_rate=50.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fetcher() -> SimpleNamespace:
    # aiokafka's defaults as faust builds the worker's consumer.
    return SimpleNamespace(_fetch_max_wait_ms=1500, _fetch_min_bytes=1)


def run(gathering: Gathering, clock: Clock, per_fetch: list[tuple[float, int]]) -> list[bool]:
    """Fetches at the given times bringing the given records; the state after each."""
    states = []
    for at, records in per_fetch:
        clock.now = at
        gathering.note(records)
        states.append(gathering.on)
    return states


@pytest.mark.parametrize(
    ("name", "fetches", "states"),
    [
        # 100 inputs/s, one per fetch: on once a window shows the rate.
        (
            "steady 100/s",
            [(100.0 + i / 100, 1) for i in range(1, 151)],
            [False] * 99 + [True] * 51,
        ),
        # 20 inputs/s: each fetch answered with its first record.
        ("steady 20/s", [(100.0 + i / 20, 1) for i in range(1, 60)], [False] * 59),
        # A burst of 500 in one fetch, then nothing: on, then off after the next window.
        ("burst then idle", [(101.0, 500), (102.0, 0), (102.5, 0)], [True, False, False]),
        # Exactly at the threshold counts as busy.
        ("at the rate", [(101.0, 50)], [True]),
    ],
)
def test_gathering_follows_the_input_rate(
    name: str, fetches: list[tuple[float, int]], states: list[bool]
) -> None:
    clock = Clock()
    assert run(Gathering(FETCHING, clock), clock, fetches) == states, name


def test_a_change_is_reported_once_and_applied_to_the_next_fetch() -> None:
    clock = Clock()
    gathering = Gathering(FETCHING, clock)
    f = fetcher()
    clock.now = 101.0
    assert gathering.note(200) is True
    gathering.apply(f)
    assert (f._fetch_max_wait_ms, f._fetch_min_bytes) == (20, 65536)
    clock.now = 102.0
    assert gathering.note(300) is False  # still on: nothing to apply
    clock.now = 103.0
    assert gathering.note(3) is True
    gathering.apply(f)
    # Off: the first record answers the fetch again.
    assert f._fetch_min_bytes == 1
    # ... and an idle worker asks the broker as seldom as before.
    assert f._fetch_max_wait_ms == 1500


def test_wait_zero_never_gathers() -> None:
    clock = Clock()
    gathering = Gathering(Fetching(wait_ms=0, min_bytes=65536, from_rate=0.0), clock)
    clock.now = 101.0
    gathering.note(10_000)
    assert gathering.on is False


def test_a_fetcher_without_aiokafkas_attributes_stops_the_start() -> None:
    with pytest.raises(RuntimeError, match="_fetch_min_bytes"):
        check_fetcher(SimpleNamespace(_fetch_max_wait_ms=500))
    check_fetcher(fetcher())


def test_the_consumer_thread_notes_every_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's thread calls ``_fetch_records`` for each fetch: the count reaches the gathering and
    a change reaches aiokafka's fetcher."""
    app = make_app(Settings(), tmp_path, "w1", ONE)
    app.Table("rooms", default=None, partitions=2)
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    thread = consumer._thread
    assert isinstance(thread, FetchingThread)
    assert thread.fetching == Fetching(20, 65536, 80.0)
    thread.thread_loop.close()  # the real thread's loop, never started
    clock = Clock()
    thread._gathering = Gathering(thread.fetching, clock)
    f = fetcher()
    aiokafka_consumer: Any = SimpleNamespace(_fetcher=f)

    async def fetched(*_a: Any, **_kw: Any) -> dict[str, list[int]]:
        return {"tp0": list(range(60)), "tp1": list(range(40))}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetched)
    clock.now = 101.0
    records = asyncio.run(thread._fetch_records(aiokafka_consumer, set(), timeout=1.0))
    assert sum(len(v) for v in records.values()) == 100
    assert (f._fetch_max_wait_ms, f._fetch_min_bytes) == (20, 65536)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ROOMSTREAM_WORKER_FETCH_WAIT_MS", "-1", "WORKER_FETCH_WAIT_MS must be from 0"),
        ("ROOMSTREAM_WORKER_FETCH_WAIT_MS", "5000", "WORKER_FETCH_WAIT_MS must be from 0"),
        ("ROOMSTREAM_WORKER_FETCH_MIN_BYTES", "0", "WORKER_FETCH_MIN_BYTES must be at least 1"),
        ("ROOMSTREAM_WORKER_FETCH_GATHER_FROM", "-5", "WORKER_FETCH_GATHER_FROM must be 0"),
    ],
)
def test_fetch_settings_out_of_range_are_refused(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings({variable: value})


def test_fetch_settings_reach_the_consumer_thread(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "ROOMSTREAM_WORKER_FETCH_WAIT_MS": "40",
            "ROOMSTREAM_WORKER_FETCH_MIN_BYTES": "1000",
            "ROOMSTREAM_WORKER_FETCH_GATHER_FROM": "10",
        }
    )
    app = make_app(settings, tmp_path, "w1", ONE)
    app.Table("rooms", default=None, partitions=2)
    thread = app.consumer._thread
    assert thread.fetching == Fetching(40, 1000, 10.0)
    thread.thread_loop.close()
