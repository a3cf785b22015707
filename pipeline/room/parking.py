"""Parked events: input that cannot be processed until events it needs arrive.

An event is parked while any of its prev_events or auth_events is unknown, and any input waits
for the room's create event (until then the room version, hence the PDU format, is unknown).
Released events come back in arrival order. The lot is plain data so the shell can keep it durably
with the rest of the room's state.

Every decision depends only on the room's own inputs, so replaying them decides the same:

* Bounds are per room: a number of events (``per_room``) and their bytes as received
  (``max_bytes_per_room``, default 4 MiB, so that a room's stored record stays far below a
  changelog record's limit and the events released at once fit in a few chunks). Parking beyond
  either raises ``ParkingFull`` with the bound named; the input is dead-lettered.
* Expiry runs on the room's logical clock, never on the wall clock: the largest ``received_ts``
  of the room's inputs so far (see ``RoomProcessor``). An event parked at logical time t expires
  once an input of the room moves the clock to t + ``ttl_ms`` or later.

A ``ParkingBudget`` only counts parked events across a worker's rooms (``used`` against
``total``); it never refuses anything, so that one room's output cannot depend on another
room's. The shell reads ``over`` to pause intake (back-pressure) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.errors import RoomstreamError

CREATE_EVENT = "m.room.create"
"""What input waits for before the room version is known (never an event ID: those start '$')."""

RawInput = bytes | str | Mapping[str, Any]


MAX_BYTES_PER_ROOM = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParkingLimits:
    per_room: int = 1_000
    total: int = 100_000  # for the shell's back-pressure only (``ParkingBudget``)
    ttl_ms: int = 24 * 3600 * 1000
    max_bytes_per_room: int = MAX_BYTES_PER_ROOM


class ParkingBudget:
    """Parked events across all rooms of one worker, against ``total`` events and
    ``total_bytes`` (their size as received): it never changes a room's decisions; the shell
    pauses intake while it is ``over``.

    Not part of a room's state: after a restore the shell rebuilds ``used`` by restoring every
    room with the same budget. Rooms may be processed on several threads, hence the lock.
    """

    def __init__(self, total: int, total_bytes: int | None = None) -> None:
        self.total = total
        self.total_bytes = total_bytes
        self.used = 0
        self.used_bytes = 0
        self._lock = threading.Lock()

    @property
    def over(self) -> bool:
        """Whether the worker holds ``total`` parked events or ``total_bytes`` of them, or
        more: time to pause intake."""
        return self.used >= self.total or (
            self.total_bytes is not None and self.used_bytes >= self.total_bytes
        )

    def take(self, n: int = 1, size: int = 0) -> None:
        with self._lock:
            self.used += n
            self.used_bytes += size

    def claim(self, n: int, size: int = 0) -> None:
        """Count ``n`` events of ``size`` bytes in all restored as parked."""
        self.take(n, size)

    def release(self, n: int = 1, size: int = 0) -> None:
        with self._lock:
            self.used = max(0, self.used - n)
            self.used_bytes = max(0, self.used_bytes - size)

    def reset(self) -> None:
        with self._lock:
            self.used = self.used_bytes = 0


class ParkingFull(RoomstreamError):
    """No room to park an event; ``reason`` names the bound that was hit."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(slots=True)
class Parked:
    """One parked input. ``pdu``/``event_id`` are set once the input has been parsed."""

    seq: int  # the room's input sequence number of the input (arrival order)
    raw: str | dict[str, Any]  # the input as received (text, or the mapping it came as)
    missing: set[str]
    parked_at: int  # the room's logical clock when it was parked
    event_id: str | None = None
    # The parsed PDU, kept in memory only (a save keeps ``raw``; a restore parses it again).
    pdu: dict[str, Any] | None = None
    received_ts: int | None = None
    source: dict[str, Any] | None = None
    fingerprint: int | None = field(default=None)
    size: int = 0  # bytes of ``raw``, counted against the room's bound

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "raw": self.raw,
            "missing": sorted(self.missing),
            "parked_at": self.parked_at,
            "event_id": self.event_id,
            "received_ts": self.received_ts,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "size": self.size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Parked:
        return cls(
            seq=int(d["seq"]),
            raw=d["raw"],
            missing=set(d["missing"]),
            parked_at=int(d["parked_at"]),
            event_id=d.get("event_id"),
            received_ts=d.get("received_ts"),
            source=d.get("source"),
            fingerprint=d.get("fingerprint"),
            size=int(d.get("size", 0)),
        )


class ParkingLot:
    """The parked events of one room, indexed by what they wait for."""

    def __init__(
        self, room_id: str, limits: ParkingLimits, budget: ParkingBudget | None = None
    ) -> None:
        self.room_id = room_id
        self.limits = limits
        self.budget = budget
        self._items: dict[int, Parked] = {}
        self._by_event: dict[str, int] = {}
        self._waiting: dict[str, set[int]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[Parked]:
        """Everything parked, in arrival order."""
        return [self._items[s] for s in sorted(self._items)]

    def get(self, event_id: str) -> Parked | None:
        seq = self._by_event.get(event_id)
        return None if seq is None else self._items[seq]

    def park(self, item: Parked) -> None:
        """Park ``item``; raises ParkingFull when a bound would be exceeded."""
        if not item.missing:
            raise ValueError("an event with nothing missing must not be parked")
        if len(self._items) >= self.limits.per_room:
            raise ParkingFull(
                f"room {self.room_id} already has {len(self._items)} parked events "
                f"(limit per room {self.limits.per_room}); events it waits for: "
                f"{sorted(item.missing)}"
            )
        if self.bytes + item.size > self.limits.max_bytes_per_room:
            raise ParkingFull(
                f"room {self.room_id} already has {self.bytes} bytes of parked events "
                f"(limit per room {self.limits.max_bytes_per_room} bytes) and this one has "
                f"{item.size}; events it waits for: {sorted(item.missing)}"
            )
        self._add(item)
        if self.budget is not None:
            self.budget.take(1, item.size)

    def arrived(self, event_id: str) -> list[Parked]:
        """``event_id`` is now known: unpark and return what no longer waits for anything."""
        ready: list[Parked] = []
        for seq in sorted(self._waiting.pop(event_id, ())):
            item = self._items[seq]
            item.missing.discard(event_id)
            if not item.missing:
                self._remove(seq)
                ready.append(item)
        return ready

    def due(self, now: int) -> bool:
        """Whether anything has waited ``ttl_ms`` or longer at logical time ``now``."""
        cutoff = now - self.limits.ttl_ms
        return any(it.parked_at <= cutoff for it in self._items.values())

    def expire(self, now: int) -> list[Parked]:
        """Unpark and return what has waited ``ttl_ms`` or longer at logical time ``now``."""
        if not self._items:
            return []
        cutoff = now - self.limits.ttl_ms
        expired = [it for it in self.items() if it.parked_at <= cutoff]
        for it in expired:
            self._remove(it.seq)
        return expired

    def _add(self, item: Parked) -> None:
        self._items[item.seq] = item
        self.bytes += item.size
        if item.event_id is not None:
            self._by_event[item.event_id] = item.seq
        for need in item.missing:
            self._waiting.setdefault(need, set()).add(item.seq)

    def _remove(self, seq: int) -> None:
        item = self._items.pop(seq)
        self.bytes -= item.size
        if item.event_id is not None and self._by_event.get(item.event_id) == seq:
            del self._by_event[item.event_id]
        for need in item.missing:
            waiting = self._waiting.get(need)
            if waiting is not None:
                waiting.discard(seq)
                if not waiting:
                    del self._waiting[need]
        if self.budget is not None:
            self.budget.release(1, item.size)

    def to_dict(self) -> list[dict[str, Any]]:
        return [it.to_dict() for it in self.items()]

    @classmethod
    def restore(
        cls,
        room_id: str,
        data: Iterable[Mapping[str, Any]],
        limits: ParkingLimits,
        budget: ParkingBudget | None = None,
    ) -> ParkingLot:
        """Rebuild from ``to_dict`` output, counting every item against ``budget``."""
        lot = cls(room_id, limits, budget)
        for d in data:
            lot._add(Parked.from_dict(d))
        if budget is not None:
            budget.claim(len(lot), lot.bytes)
        return lot
