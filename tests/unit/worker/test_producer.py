"""The worker's producer asks the cluster about its own topics only, without a broker: the faust
producer of a worker's app with aiokafka's producer replaced by a fake whose client records
which topics it tracks when faust declares a topic (faust then refreshes the metadata of the
tracked topics; an aiokafka client that tracks none asks about every topic of the cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipeline.config import Settings
from pipeline.worker.faust_app import make_app
from pipeline.worker.producer import Producer
from topics.definitions import Replication

ONE = Replication(factor=1, min_insync=1)


class Client:
    def __init__(self) -> None:
        self.topics: set[str] = set()

    def add_topic(self, topic: str) -> Any:
        self.topics.add(topic)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done


class AIOKafkaProducer:
    def __init__(self) -> None:
        self.client = Client()


def test_a_topic_is_tracked_before_faust_declares_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(Settings(), tmp_path, "w1", ONE)
    producer = app.producer
    assert isinstance(producer, Producer)
    producer._producer = AIOKafkaProducer()
    tracked_when_declared: list[set[str]] = []

    async def declare(self: Any, topic: str, partitions: int, replication: int, **kw: Any) -> None:
        tracked_when_declared.append(set(self._producer.client.topics))

    monkeypatch.setattr(faust_aiokafka.Producer, "create_topic", declare)
    changelog = "roomstream-processors-rooms-changelog"
    asyncio.run(producer.create_topic(changelog, 12, 1))
    asyncio.run(producer.create_topic("roomstream-processors-__assignor-__leader", 1, 1))
    assert tracked_when_declared == [
        {changelog},
        {changelog, "roomstream-processors-__assignor-__leader"},
    ]
