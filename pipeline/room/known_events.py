"""The events a room has decided, kept small: memory grows with state changes, not with events.

Per event only its state group, its outcome, a fingerprint of its content (to tell a duplicate
from another event reusing the ID) and, for soft-failed and rejected events, its prev_events
(see ``extremities.advance``). State events are also kept in full, as compact JSON without
signatures, hashes and unsigned data, because the authorization rules and state resolution read
them; they are parsed on demand, and up to ``PARSED_KEPT`` parsed ones are kept (the oldest
parsed go first) until ``drop_parsed``: the events every check reads (create, power levels, the
senders' memberships) are then parsed once, not once per input.

A state event that a redaction counts for is served redacted, as Synapse's store serves it to
its auth checks and state resolution: every later decision reads the redacted content (see
``redact``). Which events are redacted is kept by ID; the stored content stays the original.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.events import Event
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import RoomVersion
from pipeline.room.appended import items_after

ACCEPTED, SOFT_FAILED, REJECTED = 0, 1, 2

_NOT_KEPT = frozenset(("signatures", "hashes", "unsigned"))

PARSED_KEPT = 64


class Known(NamedTuple):
    state_group: int | None  # the state after the event; before it when rejected
    status: int  # ACCEPTED, SOFT_FAILED or REJECTED
    fingerprint: int
    prevs: tuple[str, ...] | None  # prev_events of soft-failed and rejected events only


def fingerprint(pdu: Mapping[str, Any]) -> int:
    """63 bits identifying a PDU's content, to tell a duplicate from a conflicting one.

    ``unsigned`` and ``signatures`` are left out: they change in transit (age, extra server
    signatures) without making it another event.
    """
    signed_part = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures")}
    data = orjson.dumps(signed_part, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def _compact(pdu: Mapping[str, Any]) -> str:
    """What is kept of a state event: the fields the rules and state resolution read.

    A str, because orjson's bytes carry spare capacity and a str is sized exactly.
    """
    return orjson.dumps({k: v for k, v in pdu.items() if k not in _NOT_KEPT}).decode()


class KnownEvents:
    """Decided events of one room by event ID; ``fetch`` serves state events as ``Event``."""

    def __init__(self, room_version: RoomVersion | None = None) -> None:
        self.room_version = room_version
        self._known: dict[str, Known] = {}
        self._state_events: dict[str, str] = {}
        self._parsed: dict[str, Event] = {}
        # State events served redacted -> the redaction that counts for each.
        self._redacted: dict[str, str] = {}
        # Redactions of events not known yet: target -> [[redaction ID, server or None]].
        self._pending_redactions: dict[str, list[list[str | None]]] = {}

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._known

    def __getitem__(self, event_id: str) -> Known:
        return self._known[event_id]

    def get(self, event_id: str) -> Known | None:
        return self._known.get(event_id)

    def add(self, event: Event, status: int, state_group: int | None, fp: int) -> None:
        prevs = event.prev_event_ids if status != ACCEPTED else None
        # Entries only ever go on the end (a replaced one moves there), so a saved prefix stays
        # valid and a save need only write what came after it (see ``to_dict``).
        self._known.pop(event.event_id, None)
        self._known[event.event_id] = Known(state_group, status, fp, prevs)
        if event.is_state:
            self._state_events.pop(event.event_id, None)
            self._state_events[event.event_id] = _compact(event.pdu)
            self._keep(event)

    def is_state_event(self, event_id: str) -> bool:
        return event_id in self._state_events

    def fetch(self, event_id: str) -> Event | None:
        """The known state event ``event_id``; None for unknown and non-state events."""
        ev = self._parsed.get(event_id)
        if ev is not None:
            return ev
        data = self._state_events.get(event_id)
        if data is None or self.room_version is None:
            return None
        pdu = orjson.loads(data)
        if event_id in self._redacted:
            pdu = redact(pdu, self.room_version)
        ev = Event.from_trusted(pdu, self.room_version, event_id)
        self._keep(ev)
        return ev

    def _keep(self, ev: Event) -> None:
        parsed = self._parsed
        if len(parsed) >= PARSED_KEPT:
            del parsed[next(iter(parsed))]
        parsed[ev.event_id] = ev

    def redact(self, target: str, redaction_id: str, only_from: str | None) -> None:
        """Record redaction ``redaction_id`` (accepted or soft-failed) of event ``target``.

        As Synapse's store (``_maybe_redact_event_row``): a create event is never redacted;
        ``only_from``, when set, is the server the redaction's sender is on, and the redaction
        then counts only for an event whose sender is on that server (a redaction that the
        rules allowed without the redact level, rooms v3+). A redaction of an event not known
        yet waits for it (``apply_pending_redactions``).
        """
        if target not in self._known:
            self._pending_redactions.setdefault(target, []).append([redaction_id, only_from])
            return
        self._apply_redaction(target, redaction_id, only_from)

    def apply_pending_redactions(self, event_id: str) -> None:
        """Apply the redactions of ``event_id`` that arrived before it."""
        for redaction_id, only_from in self._pending_redactions.pop(event_id, ()):
            assert redaction_id is not None
            self._apply_redaction(event_id, redaction_id, only_from)

    def _apply_redaction(self, target: str, redaction_id: str, only_from: str | None) -> None:
        if target in self._redacted or target not in self._state_events:
            return  # redacted already, or not a state event (never read by the rules)
        event = self.fetch(target)
        if event is None or event.type == "m.room.create":
            return
        if only_from is not None and domain_of(event.sender) != only_from:
            return
        self._redacted[target] = redaction_id
        self._parsed.pop(target, None)

    def is_rejected(self, event_id: str) -> bool:
        known = self._known.get(event_id)
        return known is not None and known.status == REJECTED

    def excluded_prevs(self, event_id: str) -> tuple[str, ...] | None:
        """prev_events of a soft-failed or rejected event; None for any other."""
        known = self._known.get(event_id)
        return known.prevs if known is not None else None

    def drop_parsed(self) -> None:
        """Forget the parsed events (to save memory while the room is idle)."""
        self._parsed.clear()

    def counts(self) -> tuple[int, int]:
        """(events, state events) held: the marks to pass to a later ``to_dict``."""
        return len(self._known), len(self._state_events)

    def to_dict(self, events_from: int = 0, state_events_from: int = 0) -> dict[str, Any]:
        """The index as data; with marks from ``counts``, only what was added after them.

        Loading the concatenation of such parts (later entries over earlier ones) gives the
        whole index back, so a room's saves can grow with its new events, not its history.
        """
        return {
            "events": {
                eid: [k.state_group, k.status, k.fingerprint, list(k.prevs) if k.prevs else None]
                for eid, k in items_after(self._known, events_from)
            },
            # Kept as the compact JSON text: no re-parse on every save.
            "state_events": dict(items_after(self._state_events, state_events_from)),
            "redacted": dict(self._redacted),
            "pending_redactions": {t: list(r) for t, r in self._pending_redactions.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], room_version: RoomVersion | None) -> KnownEvents:
        known = cls(room_version)
        known._known = {
            eid: Known(sg, int(status), int(fp), tuple(prevs) if prevs is not None else None)
            for eid, (sg, status, fp, prevs) in data["events"].items()
        }
        known._state_events = {
            eid: pdu if isinstance(pdu, str) else _compact(pdu)
            for eid, pdu in data["state_events"].items()
        }
        known._redacted = dict(data.get("redacted", {}))
        known._pending_redactions = {
            t: [list(r) for r in rs] for t, rs in data.get("pending_redactions", {}).items()
        }
        return known
