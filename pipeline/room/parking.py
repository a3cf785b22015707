"""Parked events: input that cannot be processed until events it needs arrive.

An event is parked while any of its prev_events or auth_events is unknown, and any input waits
for the room's create event (until then the room version, hence the PDU format, is unknown).
Parking is bounded per room and across rooms (a ``ParkingBudget`` the shell shares between its
rooms), and a parked event expires after a time-to-live measured on a clock the caller passes in.
Released events come back in arrival order. The lot is plain data so the shell can keep it durably
with the rest of the room's state.
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


@dataclass(frozen=True, slots=True)
class ParkingLimits:
    per_room: int = 1_000
    total: int = 100_000
    ttl_ms: int = 24 * 3600 * 1000


class ParkingBudget:
    """Parked events across all rooms of one worker, against ``total``.

    Not part of a room's state: after a restore the shell rebuilds ``used`` by restoring every
    room with the same budget. Rooms may be processed on several threads, hence the lock.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        """Take one place; False when none is left."""
        with self._lock:
            if self.used >= self.total:
                return False
            self.used += 1
            return True

    def claim(self, n: int) -> None:
        """Count ``n`` events restored as parked: they stay parked even above the bound."""
        with self._lock:
            self.used += n

    def release(self, n: int = 1) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class ParkingFull(RoomstreamError):
    """No room to park an event; ``reason`` names the bound that was hit."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(slots=True)
class Parked:
    """One parked input. ``pdu``/``event_id`` are set once the input has been parsed."""

    seq: int  # arrival order within the room
    raw: str | dict[str, Any]  # the input as received (text, or the mapping it came as)
    missing: set[str]
    parked_at: int
    event_id: str | None = None
    pdu: dict[str, Any] | None = None
    received_ts: int | None = None
    source: dict[str, Any] | None = None
    fingerprint: int | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "raw": self.raw,
            "missing": sorted(self.missing),
            "parked_at": self.parked_at,
            "event_id": self.event_id,
            "pdu": self.pdu,
            "received_ts": self.received_ts,
            "source": self.source,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Parked:
        return cls(
            seq=int(d["seq"]),
            raw=d["raw"],
            missing=set(d["missing"]),
            parked_at=int(d["parked_at"]),
            event_id=d.get("event_id"),
            pdu=d.get("pdu"),
            received_ts=d.get("received_ts"),
            source=d.get("source"),
            fingerprint=d.get("fingerprint"),
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
        if self.budget is not None and not self.budget.reserve():
            raise ParkingFull(
                f"the worker already has {self.budget.used} parked events "
                f"(limit {self.budget.total}); events it waits for: {sorted(item.missing)}"
            )
        self._add(item)

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

    def expire(self, now: int) -> list[Parked]:
        """Unpark and return what has waited ``ttl_ms`` or longer by ``now``."""
        cutoff = now - self.limits.ttl_ms
        expired = [it for it in self.items() if it.parked_at <= cutoff]
        for it in expired:
            self._remove(it.seq)
        return expired

    def _add(self, item: Parked) -> None:
        self._items[item.seq] = item
        if item.event_id is not None:
            self._by_event[item.event_id] = item.seq
        for need in item.missing:
            self._waiting.setdefault(need, set()).add(item.seq)

    def _remove(self, seq: int) -> None:
        item = self._items.pop(seq)
        if item.event_id is not None and self._by_event.get(item.event_id) == seq:
            del self._by_event[item.event_id]
        for need in item.missing:
            waiting = self._waiting.get(need)
            if waiting is not None:
                waiting.discard(seq)
                if not waiting:
                    del self._waiting[need]
        if self.budget is not None:
            self.budget.release()

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
            budget.claim(len(lot))
        return lot
