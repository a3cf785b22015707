"""Which partition owns a room, and what to do with an input read from a partition.

A room's one owner is the partition Java's default partitioner (murmur2 of the room ID, positive
mod), which aiokafka and faust use too, gives its ID. An input read from another partition (a
producer with another partitioner, e.g. librdkafka's default) is forwarded there unchanged;
an input that names no room is dead-lettered with the reason; the rest are their room's.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from pipeline.errors import MalformedMessage
from topics import pdu_input
from topics.headers import Headers

__all__ = ["Forward", "Owners", "Unroutable", "owner_partition", "route"]

OWNER_CACHE = 100_000
"""Rooms whose owner partition is remembered (murmur2 is pure Python)."""


def owner_partition(room_id: str, partitions: int) -> int:
    """The partition that owns ``room_id``: Java's default partitioner (murmur2, positive mod)."""
    return int(murmur2(room_id.encode()) & 0x7FFFFFFF) % partitions


class Owners:
    """``owner_partition`` remembered for the rooms seen recently."""

    def __init__(self, partitions: int, size: int = OWNER_CACHE) -> None:
        self.partitions = partitions
        self.size = size
        self._owners: dict[str, int] = {}

    def __call__(self, room_id: str) -> int:
        owner = self._owners.get(room_id)
        if owner is None:
            if len(self._owners) >= self.size:
                self._owners.clear()
            owner = self._owners[room_id] = owner_partition(room_id, self.partitions)
        return owner


@dataclass(frozen=True, slots=True)
class Forward:
    """The input belongs to a room owned by ``partition``: send it there unchanged."""

    room_id: str
    partition: int


@dataclass(frozen=True, slots=True)
class Unroutable:
    """The input names no room: dead-letter it with ``reason``."""

    reason: str


def route(
    value: bytes | None, headers: Headers, partition: int, owners: Owners
) -> pdu_input.PduInput | Forward | Unroutable:
    """What to do with an input read from ``partition``: process it (its ``PduInput``), forward
    it, or dead-letter it."""
    try:
        pdu = pdu_input.decode(value, headers)
    except MalformedMessage as e:
        return Unroutable(e.reason)
    owner = owners(pdu.room_id)
    if owner != partition:
        return Forward(pdu.room_id, owner)
    return pdu
