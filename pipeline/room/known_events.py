"""The events a room has decided, kept small: memory grows with state changes, not with events.

Per event only its state group, its outcome, a fingerprint of its content (to tell a duplicate
from another event reusing the ID) and, for soft-failed and rejected events, its prev_events
(see ``extremities.advance``). State events are also kept in full, as compact JSON without
signatures, hashes and unsigned data, because the authorization rules and state resolution read
them; they are parsed on demand, and up to ``PARSED_KEPT`` parsed ones are kept (the oldest
parsed go first) until ``drop_parsed``: the events every check reads (create, power levels, the
senders' memberships) are then parsed once, not once per input.

A room that lives for years would make this index grow without end, so it may be bounded
(``evict``): once the shell says which events PostgreSQL holds (``RoomProcessor.
release_committed``), the oldest of those are dropped, and a lookup that misses asks the
shell's ``recall`` (one call for a batch of IDs) what the index held for them before answering
"unknown". Only committed entries are dropped, so every answer is the one the unbounded index
gives. Recalled entries are kept in a second, bounded, least-recently-used map; IDs found
absent are remembered until ``end_run``. A room that never dropped an entry asks nothing.
A pending redaction (of an event not known yet) goes with its redaction's entry, when it counts
for any sender (no ``only_from``) and a ``redaction_recall`` is given: when its target comes,
the store's redactions of it (in the order they were stored) are merged with those kept.

A state event that a redaction counts for is served redacted, as Synapse's store serves it to
its auth checks and state resolution: every later decision reads the redacted content (see
``redact``). Which events are redacted is kept by ID; the stored content stays the original.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.errors import RoomstreamError
from pipeline.matrix.events import Event
from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import RoomVersion
from pipeline.room.appended import items_after

ACCEPTED, SOFT_FAILED, REJECTED = 0, 1, 2

_NOT_KEPT = frozenset(("signatures", "hashes", "unsigned"))

PARSED_KEPT = 64

RECALLED_KEPT = 1024
"""Recalled entries kept at most (the oldest used go first), beside the index's own bound."""

# Bytes of memory per item, beyond the text of state events, for ``footprint``: measured with
# tracemalloc on CPython 3.11 (tests/unit/room/test_footprint.py holds the estimate to it).
ENTRY_BYTES = 235  # an entry of the index: its key, its Known and their slot
STATE_EVENT_BYTES = 150  # a state event's str beyond its text, and its slot
PARSED_BYTES = 1800  # a parsed state event (Event and its dicts)
RECALLED_BYTES = 800  # a recalled entry, its state event's text included


class Known(NamedTuple):
    state_group: int | None  # the state after the event; before it when rejected
    status: int  # ACCEPTED, SOFT_FAILED or REJECTED
    fingerprint: int
    prevs: tuple[str, ...] | None  # prev_events of soft-failed and rejected events only


class Recalled(NamedTuple):
    """What the index held for an event it dropped: its entry, and for a state event the compact
    JSON (``compact``) of its PDU as received (never redacted: ``redact`` is kept here)."""

    known: Known
    state_json: str | None


class Recall(Protocol):
    def __call__(self, room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        """What the index held for those of ``event_ids`` that room ``room_id`` stored (absent:
        not stored). Raises when the store cannot be read (the processor must then be
        dropped, as for ``ResolverFailed``)."""
        ...


RedactionRecall = Callable[[str, Sequence[str]], Mapping[str, Sequence[str]]]
"""``(room_id, target event IDs) -> {target: IDs of the stored redactions of it, in the order
they were stored}`` (accepted and soft-failed ones, as ``redactions`` holds them)."""


class RecallFailed(RoomstreamError, RuntimeError):
    """Asking the store for dropped entries failed: no answer is known, so none is given. Drop
    the processor, restore it from its last save and retry the inputs once the store is back."""


class RecallNeeded(RecallFailed):
    """A room's index dropped entries, and a lookup missed with no ``recall`` to ask: its
    answer would be wrong. Give the processor a ``ProcessorConfig.recall``."""


K = TypeVar("K")
V = TypeVar("V")


def ask_recall(
    recall: Callable[[Sequence[K]], Mapping[K, V]] | None,
    want: Sequence[K],
    *,
    what: str,
    missing: str,
) -> Mapping[K, V]:
    """``recall(want)``, with ``RecallNeeded`` (saying ``missing``) when there is no recall and
    any failure of it as ``RecallFailed`` naming ``what`` was asked for."""
    if recall is None:
        raise RecallNeeded(missing)
    try:
        return recall(want)
    except RecallFailed:
        raise
    except Exception as e:
        raise RecallFailed(
            f"recalling {what}, {want[0]} first, failed: {type(e).__name__}: {e}"
        ) from e


def recalled(event: Event, status: int, state_group: int | None) -> Recalled:
    """The entry and state JSON ``add`` keeps for ``event`` (for a store's ``Recall``)."""
    prevs = event.prev_event_ids if status != ACCEPTED else None
    known = Known(state_group, status, fingerprint(event.pdu), prevs)
    return Recalled(known, compact(event.pdu) if event.is_state else None)


def fingerprint(pdu: Mapping[str, Any]) -> int:
    """63 bits identifying a PDU's content, to tell a duplicate from a conflicting one.

    ``unsigned`` and ``signatures`` are left out: they change in transit (age, extra server
    signatures) without making it another event.
    """
    signed_part = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures")}
    data = orjson.dumps(signed_part, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1


def compact(pdu: Mapping[str, Any]) -> str:
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
        self._state_chars = 0  # the length of every str in ``_state_events``
        self._parsed: dict[str, Event] = {}
        # State events served redacted -> the redaction that counts for each.
        self._redacted: dict[str, str] = {}
        # Redactions of events not known yet: target -> [[redaction ID, server or None]].
        self._pending_redactions: dict[str, list[list[str | None]]] = {}
        # Asked for what was dropped (``evict``); bound to the room by the processor.
        self.recall: Callable[[Sequence[str]], Mapping[str, Recalled]] | None = None
        # Entries and state events dropped from the front of ``_known``/``_state_events``.
        self._dropped = (0, 0)
        self._recalled: dict[str, Recalled] = {}
        self._absent: set[str] = set()  # asked for and not stored, this run
        # Asked for the stored redactions of a target once pending ones were dropped.
        self.redaction_recall: Callable[[Sequence[str]], Mapping[str, Sequence[str]]] | None = None
        self._pending_dropped = 0  # pending redactions dropped in all
        self._stored_redactions: dict[str, list[str]] = {}  # target -> stored ones, this run

    def __contains__(self, event_id: object) -> bool:
        if event_id in self._known:
            return True
        return isinstance(event_id, str) and self._recalled_entry(event_id) is not None

    def __getitem__(self, event_id: str) -> Known:
        known = self.get(event_id)
        if known is None:
            raise KeyError(event_id)
        return known

    def get(self, event_id: str) -> Known | None:
        known = self._known.get(event_id)
        if known is not None or not self._dropped[0]:
            return known
        entry = self._recalled_entry(event_id)
        return entry.known if entry is not None else None

    # ---------------------------------------------------------------- bounding

    @property
    def dropped(self) -> int:
        """Entries dropped in all (``evict``); 0 for an index that holds every entry."""
        return self._dropped[0]

    def __len__(self) -> int:
        """Entries held (dropped ones not counted)."""
        return len(self._known)

    def evict(self, count: int) -> int:
        """Drop the oldest ``count`` entries (and state events among them); the caller knows
        them stored. Returns how many were dropped."""
        if count <= 0:
            return 0
        victims = list(itertools.islice(self._known, count))
        states = 0
        for eid in victims:
            del self._known[eid]
            text = self._state_events.pop(eid, None)
            if text is not None:
                states += 1
                self._state_chars -= len(text)
        self._dropped = (self._dropped[0] + len(victims), self._dropped[1] + states)
        if self.redaction_recall is not None and self._pending_redactions:
            self._drop_pending(set(victims))
        return len(victims)

    def _drop_pending(self, dropped: set[str]) -> None:
        """Drop the pending redactions whose own entries were just dropped (so are stored) and
        that count for any sender (``only_from`` is not in the store)."""
        pending = self._pending_redactions
        for target in list(pending):
            kept = [r for r in pending[target] if r[1] is not None or r[0] not in dropped]
            gone = len(pending[target]) - len(kept)
            if not gone:
                continue
            self._pending_dropped += gone
            if kept:
                pending[target] = kept
            else:
                del pending[target]

    def prefetch_redactions(self, targets: Iterable[str]) -> None:
        """Once pending redactions were dropped: read, in one call, the stored redactions of
        those ``targets`` not asked for yet this run."""
        if not self._pending_dropped:
            return
        want = [t for t in dict.fromkeys(targets) if t not in self._stored_redactions]
        if not want:
            return
        got = ask_recall(
            self.redaction_recall,
            want,
            what=f"the redactions of {len(want)} event(s)",
            missing=(
                "pending redactions were dropped, and there is no redaction recall to ask for "
                f"those of {want[0]}"
            ),
        )
        for target in want:
            self._stored_redactions[target] = list(got.get(target, ()))

    def prefetch(self, event_ids: Iterable[str]) -> None:
        """Recall, in one call, those of ``event_ids`` that are neither held nor asked for."""
        if not self._dropped[0]:
            return
        want = [
            e
            for e in dict.fromkeys(event_ids)
            if e not in self._known and e not in self._recalled and e not in self._absent
        ]
        if not want:
            return
        got = ask_recall(
            self.recall,
            want,
            what=f"{len(want)} dropped event(s)",
            missing=(
                f"{len(want)} event(s), {want[0]} first, are not held by an event index that "
                "dropped entries, and it has no recall to ask"
            ),
        )
        kept = self._recalled
        for eid in want:
            entry = got.get(eid)
            if entry is None:
                self._absent.add(eid)
                continue
            kept[eid] = entry
        excess = len(kept) - RECALLED_KEPT
        if excess > 0:
            for eid in list(itertools.islice(kept, excess)):
                del kept[eid]

    def _recalled_entry(self, event_id: str) -> Recalled | None:
        if not self._dropped[0]:
            return None
        entry = self._recalled.get(event_id)
        if entry is None:
            if event_id in self._absent:
                return None
            self.prefetch((event_id,))
            entry = self._recalled.get(event_id)
            if entry is None:
                return None
        else:  # used: the last to go
            del self._recalled[event_id]
            self._recalled[event_id] = entry
        return entry

    def end_run(self) -> None:
        """Forget which IDs were found absent (an event may be stored by the next run)."""
        self._absent.clear()
        self._stored_redactions.clear()

    def add(self, event: Event, status: int, state_group: int | None, fp: int) -> None:
        prevs = event.prev_event_ids if status != ACCEPTED else None
        # Entries only ever go on the end (a replaced one moves there), so a saved prefix stays
        # valid and a save need only write what came after it (see ``to_dict``).
        self._known.pop(event.event_id, None)
        self._known[event.event_id] = Known(state_group, status, fp, prevs)
        if event.is_state:
            text = compact(event.pdu)
            self._state_chars += len(text) - len(self._state_events.pop(event.event_id, ""))
            self._state_events[event.event_id] = text
            self._keep(event)

    def is_state_event(self, event_id: str) -> bool:
        if event_id in self._state_events:
            return True
        if event_id in self._known:
            return False
        entry = self._recalled_entry(event_id)
        return entry is not None and entry.state_json is not None

    def fetch(self, event_id: str) -> Event | None:
        """The known state event ``event_id``; None for unknown and non-state events."""
        ev = self._parsed.get(event_id)
        if ev is not None:
            return ev
        data = self._state_events.get(event_id)
        if data is None and event_id not in self._known:
            entry = self._recalled_entry(event_id)
            data = entry.state_json if entry is not None else None
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
        if target not in self:
            self._pending_redactions.setdefault(target, []).append([redaction_id, only_from])
            return
        self._apply_redaction(target, redaction_id, only_from)

    def apply_pending_redactions(self, event_id: str) -> None:
        """Apply the redactions of ``event_id`` that arrived before it."""
        pending = self._pending_redactions.pop(event_id, [])
        if self._pending_dropped:
            # Every stored redaction of an event not known until now was pending: those kept
            # here keep their ``only_from``, the dropped ones had none; the ones not stored yet
            # came after them all.
            self.prefetch_redactions((event_id,))
            stored = self._stored_redactions.pop(event_id, [])
            only = {r[0]: r[1] for r in pending}
            seen = set(stored)
            pending = [[r, only.get(r)] for r in stored] + [r for r in pending if r[0] not in seen]
        for redaction_id, only_from in pending:
            assert redaction_id is not None
            self._apply_redaction(event_id, redaction_id, only_from)

    def _apply_redaction(self, target: str, redaction_id: str, only_from: str | None) -> None:
        if target in self._redacted or not self.is_state_event(target):
            return  # redacted already, or not a state event (never read by the rules)
        event = self.fetch(target)
        if event is None or event.type == "m.room.create":
            return
        if only_from is not None and domain_of(event.sender) != only_from:
            return
        self._redacted[target] = redaction_id
        self._parsed.pop(target, None)

    def is_rejected(self, event_id: str) -> bool:
        known = self.get(event_id)
        return known is not None and known.status == REJECTED

    def excluded_prevs(self, event_id: str) -> tuple[str, ...] | None:
        """prev_events of a soft-failed or rejected event; None for any other."""
        known = self.get(event_id)
        return known.prevs if known is not None else None

    def drop_parsed(self) -> None:
        """Forget the parsed and recalled events (to save memory while the room is idle)."""
        self._parsed.clear()
        self._recalled.clear()

    def footprint(self) -> int:
        """An estimate of the bytes this index holds in memory, in constant time."""
        return (
            len(self._known) * ENTRY_BYTES
            + len(self._state_events) * STATE_EVENT_BYTES
            + self._state_chars
            + len(self._parsed) * PARSED_BYTES
            + len(self._recalled) * RECALLED_BYTES
        )

    def counts(self) -> tuple[int, int]:
        """(events, state events) added in all, dropped ones included: the marks to pass to a
        later ``to_dict``."""
        return self._dropped[0] + len(self._known), self._dropped[1] + len(self._state_events)

    def to_dict(self, events_from: int = 0, state_events_from: int = 0) -> dict[str, Any]:
        """The index as data; with marks from ``counts``, only what was added after them.

        Loading the concatenation of such parts (later entries over earlier ones) gives the
        whole index back, so a room's saves can grow with its new events, not its history.
        Dropped entries are not written; once some are, ``dropped`` says how many, and the
        counts, so that ``from_dict`` keeps only the newest entries of parts saved before.
        """
        events_dropped, states_dropped = self._dropped
        data = {
            "events": {
                eid: [k.state_group, k.status, k.fingerprint, list(k.prevs) if k.prevs else None]
                for eid, k in items_after(self._known, max(0, events_from - events_dropped))
            },
            # Kept as the compact JSON text: no re-parse on every save.
            "state_events": dict(
                items_after(self._state_events, max(0, state_events_from - states_dropped))
            ),
            "redacted": dict(self._redacted),
            "pending_redactions": {t: list(r) for t, r in self._pending_redactions.items()},
        }
        if events_dropped:
            data["dropped"] = [events_dropped, states_dropped, *self.counts()]
        if self._pending_dropped:
            data["pending_redactions_dropped"] = self._pending_dropped
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], room_version: RoomVersion | None) -> KnownEvents:
        known = cls(room_version)
        events: Iterable[tuple[str, Any]] = data["events"].items()
        state_events: Iterable[tuple[str, Any]] = data["state_events"].items()
        if "dropped" in data:
            # Parts saved before entries were dropped may still hold them, in front.
            events_dropped, states_dropped, added, states_added = (int(n) for n in data["dropped"])
            known._dropped = (events_dropped, states_dropped)
            events = _newest(data["events"], added - events_dropped)
            state_events = _newest(data["state_events"], states_added - states_dropped)
        known._known = {
            eid: Known(sg, int(status), int(fp), tuple(prevs) if prevs is not None else None)
            for eid, (sg, status, fp, prevs) in events
        }
        known._state_events = {
            eid: pdu if isinstance(pdu, str) else compact(pdu) for eid, pdu in state_events
        }
        known._state_chars = sum(map(len, known._state_events.values()))
        known._redacted = dict(data.get("redacted", {}))
        known._pending_redactions = {
            t: [list(r) for r in rs] for t, rs in data.get("pending_redactions", {}).items()
        }
        known._pending_dropped = int(data.get("pending_redactions_dropped", 0))
        return known


def _newest(data: Mapping[str, Any], count: int) -> list[tuple[str, Any]]:
    """The last ``count`` entries of ``data``, in order."""
    if count <= 0:
        return []
    return list(itertools.islice(data.items(), max(0, len(data) - count), None))
