"""Fakes for the worker's parts: a clock, inputs that record their ack, a producer whose
acknowledgements the test resolves or fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pipeline.worker.scheduling import Input
from topics.pdu_input import PduInput


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Event:
    offset: int
    acked: bool = False

    def ack(self) -> None:
        self.acked = True


def an_input(room_id: str, offset: int, *, generation: int = 1, partition: int = 0) -> Input:
    pdu = PduInput(room_id, b'{"room_id": "%s"}' % room_id.encode())
    return Input(Event(offset), pdu, partition, offset, 1_700_000_000_000 + offset, generation)


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    future: asyncio.Future[Any]


@dataclass
class Producer:
    """Records every send; acknowledgements stay pending until the test settles them."""

    sent: list[Sent] = field(default_factory=list)
    refuse: int = 0  # the next sends that raise when handed over
    auto_ack: set[str] = field(default_factory=set)  # topics acknowledged at once

    async def send(self, *record: Any) -> asyncio.Future[Any]:
        """``emit.Producer.send``: the record positionally (timestamp and headers unread)."""
        topic, key, value, partition, _timestamp, _headers = record
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("the broker is not reachable")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, key, value, partition, fut))
        if topic in self.auto_ack:
            fut.set_result(Meta(len(self.sent)))
        return fut

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]

    def ack_all(self, topic: str | None = None) -> None:
        for s in self.sent:
            if (topic is None or s.topic == topic) and not s.future.done():
                s.future.set_result(Meta(self.sent.index(s)))


@dataclass
class Meta:
    offset: int
