"""Requests for the events a room lacks: what the processor asks federation front ends to fetch.

A parked event waits for events the room does not know. Waiting alone never ends well when no
one sends them, so the processor asks, through ``<prefix>.missing-events``, and the front ends
fetch the events and produce them to ``<prefix>.pdus``. This module keeps the room's ledger of
requests; the processor calls it wherever parking changes. The policy:

* One request per missing set. When an event parks, the set it asks for is the events it waits
  for that are neither known nor parked themselves (a parked event asks for what *it* lacks, so a
  chain of parked events asks once, at its root). Another event asking for the very same set
  joins the open request instead of repeating it.
* An input that waits for the room's create event (the room version, hence the PDU's format, is
  not known yet) asks for the create event when the room ID names it (room version 12: the room
  ID is the create event's ID with "!" for "$"), else for the auth events the PDU cites: by the
  authorization rules of versions 1 to 11 the create event is among them. It names the event
  that needs them only if the PDU carries an ``event_id`` (its ID cannot be computed before the
  room version is known).
* A request stays open while any event that asked for it is parked, so it is not asked again for
  the same set while that event waits. When the last of them leaves the lot it is closed, and
  the close is published too: ``answered`` when the events waited for arrived and the waiting
  events went on, ``expired`` when they expired to the dead-letter topic. A consumer that folds
  the topic by (room, missing set) sees exactly the open requests; a front end may stop fetching.
* A released event that still lacks events (its create event arrived, say, and now its auth
  events are known to be missing) parks again and asks again, for the new set.
* First seen and closed are times of the room's logical clock (the largest ``received_ts`` of its
  inputs), so replaying the same inputs yields the same requests, in the same order, whatever the
  batching.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["open", "answered", "expired"]


@dataclass(frozen=True, slots=True)
class MissingRequest:
    """One record for ``<prefix>.missing-events``: a request opened, or closed."""

    room_id: str
    missing: tuple[str, ...]  # sorted event IDs, at least one
    needed_by: str | None  # the event that asked first; None when its ID is not known yet
    first_seen_ts: int  # the room's logical clock when the request was opened
    status: Status = "open"
    closed_ts: int | None = None  # the room's logical clock when it was closed


@dataclass(slots=True)
class _Open:
    needed_by: str | None
    first_seen_ts: int
    waiters: set[int] = field(default_factory=set)  # input seqs of the parked events asking


class MissingLedger:
    """The open requests of one room, and which parked input asked for which."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self._open: dict[tuple[str, ...], _Open] = {}
        self._asked: dict[int, tuple[str, ...]] = {}  # parked input seq -> its request

    def __len__(self) -> int:
        return len(self._open)

    def open_requests(self) -> list[MissingRequest]:
        """The open requests, oldest first."""
        return sorted(
            (
                MissingRequest(self.room_id, key, o.needed_by, o.first_seen_ts)
                for key, o in self._open.items()
            ),
            key=lambda r: (r.first_seen_ts, r.missing),
        )

    def ask(
        self, seq: int, missing: Iterable[str], needed_by: str | None, at: int
    ) -> MissingRequest | None:
        """Parked input ``seq`` lacks ``missing``: the request to publish, or None when the set
        is empty or already asked for."""
        key = tuple(sorted({m for m in missing if m != needed_by}))
        if not key:
            return None
        previous = self._asked.get(seq)
        if previous is not None:
            raise ValueError(f"input {seq} of room {self.room_id} asked already, for {previous}")
        self._asked[seq] = key
        existing = self._open.get(key)
        if existing is not None:
            existing.waiters.add(seq)
            return None
        self._open[key] = _Open(needed_by, at, {seq})
        return MissingRequest(self.room_id, key, needed_by, at)

    def leave(self, seq: int, status: Status, at: int) -> MissingRequest | None:
        """Parked input ``seq`` left the lot (``answered``: released; ``expired``): the close to
        publish when it was the last to wait on its request, else None."""
        key = self._asked.pop(seq, None)
        if key is None:
            return None
        request = self._open[key]
        request.waiters.discard(seq)
        if request.waiters:
            return None
        del self._open[key]
        return MissingRequest(
            self.room_id, key, request.needed_by, request.first_seen_ts, status, at
        )

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "missing": list(key),
                "needed_by": o.needed_by,
                "first_seen_ts": o.first_seen_ts,
                "waiters": sorted(o.waiters),
            }
            for key, o in sorted(self._open.items(), key=lambda kv: kv[1].first_seen_ts)
        ]

    @classmethod
    def from_dict(cls, room_id: str, data: Iterable[Mapping[str, Any]]) -> MissingLedger:
        ledger = cls(room_id)
        for d in data:
            key = tuple(d["missing"])
            waiters = {int(s) for s in d["waiters"]}
            ledger._open[key] = _Open(d.get("needed_by"), int(d["first_seen_ts"]), waiters)
            for seq in waiters:
                ledger._asked[seq] = key
        return ledger


def create_event_candidates(room_id: str, pdu: Mapping[str, Any]) -> list[str]:
    """What to ask for when the room's create event is unknown (see the module docstring)."""
    if room_id.startswith("!") and ":" not in room_id:
        # Room version 12 (MSC4291): the room ID is the create event's reference hash.
        return ["$" + room_id[1:]]
    found: list[str] = []
    auth = pdu.get("auth_events")
    if isinstance(auth, list):
        for ref in auth:
            # Versions 1 and 2 cite [event_id, hashes]; later ones the ID alone.
            eid = ref[0] if isinstance(ref, list) and ref else ref
            if isinstance(eid, str) and eid.startswith("$") and eid not in found:
                found.append(eid)
    return found


def event_id_field(pdu: Mapping[str, Any]) -> str | None:
    """The ``event_id`` a PDU carries (always in versions 1 and 2, as a copy in later ones)."""
    eid = pdu.get("event_id")
    return eid if isinstance(eid, str) and eid.startswith("$") else None
