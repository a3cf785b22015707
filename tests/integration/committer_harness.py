"""Running committers in threads against the real stack, and producing chunks to them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg2
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.committer.loop import Committer
from pipeline.config import Settings
from pipeline.invalidations import InvalidationClient
from pipeline.room.chunk import Chunk
from topics import chunk as chunk_codec
from topics.definitions import Topic

WAIT_S = 60.0  # an upper bound for things that happen in well under a second


class SimulatedCrash(BaseException):
    """Raised at a crash point; a BaseException so no handler in the committer catches it."""


def crash_at(point: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == point:
            raise SimulatedCrash(name)

    return hook


def produce(settings: Settings, chunks: Iterable[Chunk | bytes]) -> None:
    p = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "message.max.bytes": 16 * 1024 * 1024,  # the chunks topic's limit
        }
    )
    for c in chunks:
        if isinstance(c, Chunk):
            p.produce(
                settings.topic(Topic.CHUNKS), key=c.room_id.encode(), value=chunk_codec.encode(c)
            )
        else:
            p.produce(settings.topic(Topic.CHUNKS), key=b"", value=c)
    assert p.flush(30) == 0


def message_count(settings: Settings, name: str) -> int:
    """The high watermark of a one-partition topic: how many records it holds."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "watermarks"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(settings.topic(name), 0), timeout=10)
        return int(high - low)
    finally:
        c.close()


def read_all(settings: Settings, name: str, count: int) -> list[bytes]:
    """The first ``count`` records of a one-partition topic."""
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    c.assign([TopicPartition(settings.topic(name), 0, 0)])
    out: list[bytes] = []
    try:
        for _ in range(200):
            for m in c.consume(num_messages=count - len(out), timeout=0.3):
                if m.error() is None:
                    out.append(m.value() or b"")
            if len(out) >= count:
                break
    finally:
        c.close()
    return out


def query(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows
    finally:
        conn.close()


def invalidations(settings: Settings) -> InvalidationClient:
    """A client of the run's invalidation stream, as a cache in front of Roomstream uses it."""
    return InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS))


class RunningCommitter:
    """A Committer in a thread; ``stop()`` ends it and re-raises what it raised, if asked."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.stop_event = threading.Event()
        self.active = threading.Event()
        self.standing_by = threading.Event()
        self.error: BaseException | None = None
        self.committer = Committer(
            settings,
            self.stop_event,
            on_active=self.active.set,
            on_standby=self.standing_by.set,
            **kwargs,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.committer.run()
        except BaseException as exc:  # the test inspects it
            self.error = exc

    def wait_active(self) -> None:
        assert self.active.wait(WAIT_S), "the committer never became active"

    def wait_ended(self) -> BaseException | None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the committer did not stop"
        return self.error

    def stop(self) -> None:
        self.stop_event.set()
        err = self.wait_ended()
        if err is not None:
            raise err

    def __enter__(self) -> RunningCommitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(WAIT_S)
