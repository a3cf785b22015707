"""The per-room state machine: PDUs in arrival order in, room chunks and dead letters out.

For each PDU, in order: parse and validate for the room version, drop exact duplicates, park until
the create event, prev_events and auth_events are known, compute the state before the event
(the state after its single prev event, else state resolution over the states after each), run
the authorization rules against the auth_events and against the state before (rejected if either
fails), then against the room's current state (soft-failed if that fails), store the state after
as a state group, advance the forward extremities and move the current state as Synapse's
persistence moves it (``_move_current``), by what changed rather than by comparing whole
states; record a redaction so that later checks read the redacted event as Synapse's store
serves it. A second create event that rule 1 allows (no prev events, rooms v1–v11) is another
forward extremity, and the state of the extremities it joins is resolved by the room version it
names (``_name_resolution_version``). docs/synapse-parity.md lists where this follows Synapse
rather than a literal reading of the spec.

``RoomProcessor`` is pure (state + inputs -> state + outputs) and its state round-trips through
``to_dict``/``from_dict`` so the shell can keep it in a changelog; ``from_database_rows``
rebuilds it from the rows the committer stored when that changelog is lost (``rebuild``).
``process(inputs)`` takes every input of the room that is waiting and makes one chunk of all of
them; ``process([one])`` is the one-at-a-time path. Either way every event is decided the same:
a fold of the chunks of one batching gives the stored state of any other.

Replay-determinism: every output (chunks, dead letters) is a function of the room's inputs in
order and nothing else, so a processor restored from any earlier save and fed the inputs that
followed produces the same output, byte for byte, when fed in the same batches:

* Every input takes the room's next *input sequence number* (``input_seq``) and every recorded
  event the next *event sequence number* (``event_seq``); a chunk's identity is built from the
  latter (``pipeline.room.chunk``), which does not depend on batching.
* Time is the room's logical clock (``clock``): the largest ``Incoming.received_ts`` seen so
  far, moved before each input is taken. After each input (and what it released), parked
  events whose ``parked_at`` + ``ttl_ms`` <= ``clock`` expire. ``expire(ts)`` (a tick) moves the
  clock too; a shell that ticks must replay its ticks among the inputs to stay deterministic.
* Parking bounds are per room (count and bytes); a shared ``ParkingBudget`` only counts.
* Batch boundaries are the shell's and so may differ in a replay; they change only how events
  are grouped into chunks, and a chunk's state changes are absolute for the keys it touches,
  so chunks of differently batched replays apply to the same result (see ``chunk``).

Errors: what is wrong with an input is a dead letter with a reason. A failure of the shell's
resolver (``ProcessorConfig.resolver``) that is not a ``MatrixError`` raises ``ResolverFailed``
out of ``process``; the processor is then in an undefined state and must be dropped (restore it
from the last save and process the inputs again).

What is kept per event is in ``known_events``; with a ``ProcessorConfig.recall`` and
``known_limit``, the shell bounds it by saying what is committed (``release_committed``), and
what was dropped is recalled from the store when read, so no decision changes. State groups
are in ``state_groups``; parked input in ``parking``; the forward extremity rule in
``extremities``; requests for missing events (opened when an event parks, closed when it leaves
the lot) in ``missing``.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.matrix.auth import (
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    signature_checked_on_receipt,
)
from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.errors import (
    EventRejected,
    InvalidPdu,
    MatrixError,
    MissingEvents,
    RoomstreamError,
)
from pipeline.matrix.events import Event, StateKey, StateMap
from pipeline.matrix.explain import (
    Recorder,
    auth_events_read,
    cited_auth_events,
    rejection_record,
)
from pipeline.matrix.pdu import parse_create_event_room_version, parse_pdu
from pipeline.matrix.power_levels import CREATE_KEY, POWER_LEVELS_KEY, PowerLevels, user_level
from pipeline.matrix.room_versions import (
    DEFAULT_ROOM_VERSION,
    EventFormat,
    RoomVersion,
    resolution_version,
    room_version,
)
from pipeline.matrix.state_res import resolve_state
from pipeline.room import extremities
from pipeline.room.batch import BatchResult, DeadLetter, Incoming, ProcessorConfig
from pipeline.room.chunk import (
    Chunk,
    ChunkEvent,
    CurrentStateRow,
    Membership,
    Redaction,
    StateGroup,
)
from pipeline.room.headers import storable_received_ts
from pipeline.room.known_events import (
    ACCEPTED,
    REJECTED,
    SOFT_FAILED,
    KnownEvents,
    RecallFailed,
    fingerprint,
)
from pipeline.room.missing import (
    MissingLedger,
    MissingRequest,
    Status,
    create_event_candidates,
    event_id_field,
)
from pipeline.room.parking import (
    CREATE_EVENT,
    Parked,
    ParkingBudget,
    ParkingFull,
    ParkingLot,
    RawInput,
)
from pipeline.room.rebuild import RoomRows, group_order
from pipeline.room.state_groups import MAP_ENTRY_BYTES, StateGroups

__all__ = [
    "BatchResult",
    "DeadLetter",
    "Incoming",
    "ProcessorConfig",
    "ResolverFailed",
    "RoomProcessor",
    "as_mapping",
    "is_create",
]

STATE_FORMAT = 2
"""Version of the ``to_dict`` layout (1: before sequence numbers and the logical clock)."""

_ROW_OVERHEAD = 16
"""Bytes an event entry adds to a chunk's encoding beyond its PDU."""

_GROUP_MARKS = 256
"""Marks of groups not known stored kept at most (``_note_groups``)."""

_ROW_BYTES = 128
"""What one state row is taken to add to a chunk's encoding (generous: most are ~100)."""

PROCESSOR_BYTES = 15_000
"""Memory of a processor of an empty room, for ``footprint`` (measured with tracemalloc)."""

EXTREMITY_BYTES = 100
"""Memory of a forward extremity's entry, for ``footprint``."""


class ResolverFailed(RoomstreamError, RuntimeError):
    """The shell's state resolver failed for a reason that is not the input's (a broken worker
    pool, say). Drop the processor, restore it from its last save and retry the inputs."""


@dataclass(slots=True)
class _Decision:
    creates: bool  # the event is an m.room.create
    rejected: str | None
    soft_failed: bool
    before_sg: int | None  # the state before the event
    state_group: int | None
    new_groups: list[StateGroup]
    before_reused: bool = False  # several prev groups resolved to one of them, reused
    # A redaction that passed without its sender having the redact level (rooms v3+): it
    # counts only for events whose sender is on the redaction sender's server.
    redaction_only_from: str | None = None


class _Open:
    """The chunk being built: its events and what they touched."""

    def __init__(self, first_seq: int, first_input: int) -> None:
        self.first_seq = first_seq
        self.first_input = first_input
        self.events: list[ChunkEvent] = []
        self.state_groups: list[StateGroup] = []
        self.memberships: list[Membership] = []
        self.redactions: list[Redaction] = []
        self.creator: str | None = None
        self.touched_state: set[StateKey] = set()  # current-state keys changed in the chunk
        self.touched_extremities: set[str] = set()  # events in or out of the extremities
        self.bytes = 0


@dataclass(eq=False, slots=True)
class _Run:
    """What one ``process`` call puts out."""

    chunks: list[Chunk] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    missing_requests: list[MissingRequest] = field(default_factory=list)
    duplicates: int = 0


class RoomProcessor:
    """All processing state of one room. Feed it with ``process``; persist it with ``to_dict``."""

    def __init__(
        self,
        room_id: str,
        *,
        config: ProcessorConfig | None = None,
        budget: ParkingBudget | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.room_id = room_id
        # Told each step of each decision when given (``pipeline.room.explain``); None on the
        # hot path, where every hook is one test.
        self.recorder = recorder
        self.config = config or ProcessorConfig()
        self.room_version: RoomVersion | None = None
        self.create_event_id: str | None = None
        self.input_seq = 0  # inputs taken
        self.event_seq = 0  # events recorded
        self.clock = 0  # the largest received_ts of the inputs so far
        self._known = self._bound(KnownEvents())
        self._groups = self._bind_groups(StateGroups(room_id, max_hops=self.config.max_delta_hops))
        # (event sequence number, groups made): once the event is stored, so are the groups.
        self._group_marks: list[tuple[int, int]] = []
        self._groups_stored = 0
        self._extremities: set[str] = set()
        # The current state: the state of the groups in ``_current_basis`` (resolved when
        # there are several), with ``_current_overlay`` laid over it (None: key removed). The
        # overlay is empty but where the current state lags the forward extremities, as
        # Synapse's does (``_move_current``). Without an overlay it may be a state group's
        # materialised state, which ``add_delta`` may move on in place, so it is not mutated
        # here; with one it is this processor's own mapping, moved on in place.
        self._current: StateMap = {}
        self._current_basis: tuple[int, ...] = ()
        self._current_overlay: dict[StateKey, str | None] = {}
        # Sets of state groups resolved by another version than the room's: the one a second
        # create event named when it joined them (``_name_resolution_version``).
        self._named_versions: dict[frozenset[int | None], RoomVersion] = {}
        self._parking = ParkingLot(room_id, self.config.parking, budget)
        self._requests = MissingLedger(room_id)
        self._ready: list[tuple[int, Parked]] = []
        self._run: _Run | None = None
        self._open: _Open | None = None

    # ---------------------------------------------------------------- reading

    @property
    def forward_extremities(self) -> frozenset[str]:
        return frozenset(self._extremities)

    @property
    def current_state(self) -> StateMap:
        """The room's current state (do not mutate it)."""
        return self._current

    @property
    def parked_bytes(self) -> int:
        return self._parking.bytes

    def parked(self) -> list[Parked]:
        return self._parking.items()

    def open_requests(self) -> list[MissingRequest]:
        """The open requests for missing events, oldest first (see ``missing``)."""
        return self._requests.open_requests()

    def state_group_of(self, event_id: str) -> int | None:
        return self._known[event_id].state_group

    def state_of_group(self, sg: int | None) -> StateMap:
        return self._groups.state(sg)

    def is_known(self, event_id: str) -> bool:
        return event_id in self._known

    def get_event(self, event_id: str) -> Event | None:
        """A known state event (non-state events are not kept)."""
        return self._known.fetch(event_id)

    # ---------------------------------------------------------------- processing

    def process(
        self, batch: Iterable[Incoming | RawInput], *, now: int | None = None
    ) -> BatchResult:
        """Process ``batch`` in arrival order: one chunk for all of its events (more when they
        exceed ``max_chunk_bytes``). ``process([one])`` is the one-input-at-a-time path.

        ``now`` is not read: time is the inputs' ``received_ts`` (see the module docstring).
        """
        del now
        with self._running() as run:
            inputs = [given if isinstance(given, Incoming) else Incoming(given) for given in batch]
            parsed = self._prefetch(inputs)
            for i, inc in enumerate(inputs):
                self.input_seq += 1
                if inc.received_ts is not None and inc.received_ts > self.clock:
                    self.clock = inc.received_ts
                self._take(inc, self.input_seq, parsed[i] if parsed else None)
                self._drain_ready()
                self._expire()
            self._close()
            return self._result(run)

    @contextlib.contextmanager
    def _running(self) -> Iterator[_Run]:
        """A run of inputs: what it decides is gathered in the ``_Run``; afterwards no run or
        chunk is open and the materialised states not needed at rest are dropped."""
        run = self._run = _Run()
        try:
            yield run
        finally:
            self._run = None
            self._open = None
            self._groups.trim(keep=self._current_basis)
            self._known.end_run()

    def _prefetch(self, inputs: list[Incoming]) -> list[Event | str] | None:
        """For an index that dropped entries: the inputs parsed, and every event ID they name
        recalled in one call (rather than one call per input). None when nothing is dropped
        (or the room version is not known yet: then nothing can be)."""
        rv = self.room_version
        if not self._known.dropped or rv is None:
            return None
        parsed = [_parse(inc.raw, rv) for inc in inputs]
        events = [ev for ev in parsed if not isinstance(ev, str)]
        self._known.prefetch(
            eid for ev in events for eid in (ev.event_id, *ev.prev_event_ids, *ev.auth_event_ids)
        )
        self._known.prefetch_redactions(ev.event_id for ev in events)
        return parsed

    @property
    def over_known_limit(self) -> bool:
        """Whether the event index holds more than ``known_limit`` entries, or the state groups
        more than ``group_rows_limit`` rows, and may drop some (``release_committed``)."""
        config = self.config
        limit, rows_limit = config.known_limit, config.group_rows_limit
        return (config.recall is not None and limit is not None and len(self._known) > limit) or (
            config.group_recall is not None
            and rows_limit is not None
            and self._groups.held_rows > rows_limit
        )

    def release_committed(self, committed_seq: int) -> int:
        """The shell says every event up to event sequence number ``committed_seq`` is stored
        (PostgreSQL's ``room_chunk_marks``): with a ``recall`` and a ``known_limit``, drop the
        oldest of those entries from the event index while it holds more than the limit (down
        to three quarters of it, so the shell need not ask again after every input); with a
        ``group_recall`` and a ``group_rows_limit``, the same for the rows of the state groups
        those events made. Never an entry or a group not yet stored. Returns how many entries
        were dropped; changes no decision.
        """
        marks = self._group_marks
        stored = 0
        while stored < len(marks) and marks[stored][0] <= committed_seq:
            self._groups_stored = marks[stored][1]
            stored += 1
        del marks[:stored]
        rows_limit = self.config.group_rows_limit
        groups = self._groups
        if (
            self.config.group_recall is not None
            and rows_limit is not None
            and groups.held_rows > rows_limit
        ):
            groups.drop_rows(self._groups_stored, rows_limit * 3 // 4)
        limit = self.config.known_limit
        known = self._known
        if self.config.recall is None or limit is None or len(known) <= limit:
            return 0
        # One entry per recorded event, in order: the newest ``event_seq - committed_seq``
        # entries are the ones not stored yet.
        unstored = max(0, self.event_seq - committed_seq)
        droppable = len(known) - unstored
        return known.evict(min(droppable, len(known) - limit * 3 // 4))

    def _note_groups(self) -> None:
        """Groups made so far are stored once the event just recorded is (``release_committed``)."""
        if self.config.group_recall is None:
            return
        marks = self._group_marks
        mark = (self.event_seq, len(self._groups))
        if marks and len(marks) >= _GROUP_MARKS:
            marks[-1] = mark  # later than it needs: never too early
        elif not marks or marks[-1][1] != mark[1]:
            marks.append(mark)

    def _bind_groups(self, groups: StateGroups) -> StateGroups:
        """``groups`` asking this room's group recall for the rows they dropped."""
        recall = self.config.group_recall
        if recall is not None:
            room_id = self.room_id
            groups.recall = lambda group_ids: recall(room_id, group_ids)
        return groups

    def _bound(self, known: KnownEvents) -> KnownEvents:
        """``known`` asking this room's recall for what it dropped."""
        recall, redactions = self.config.recall, self.config.redaction_recall
        room_id = self.room_id
        if recall is not None:
            known.recall = lambda event_ids: recall(room_id, event_ids)
        if redactions is not None:
            known.redaction_recall = lambda targets: redactions(room_id, targets)
        return known

    def footprint(self) -> int:
        """An estimate of the bytes this processor holds in memory, in time independent of the
        room's size: what a shell's cache of processors counts against its budget."""
        return (
            PROCESSOR_BYTES
            + self._known.footprint()
            + self._groups.footprint()
            + (len(self._current) + len(self._current_overlay)) * MAP_ENTRY_BYTES
            + len(self._extremities) * EXTREMITY_BYTES
            + self._parking.bytes * 2
        )

    def compact(self) -> None:
        """Drop what is kept only to make the next inputs cheaper (parsed state events): for a
        room that goes idle. Changes no result."""
        self._known.drop_parsed()

    def expire(self, now: int) -> BatchResult:
        """A tick: move the logical clock to ``now`` (if later) and expire what is due.

        Takes no input sequence number and makes no chunk. Deterministic only if the shell
        replays its ticks among the inputs (e.g. as records of the room's input).
        """
        run = self._run = _Run()
        try:
            self.clock = max(self.clock, now)
            self._expire()
            return self._result(run)
        finally:
            self._run = None

    def _expire(self) -> None:
        for item in self._parking.expire(self.clock):
            self._out().dead_letters.append(_expired(item, self.config.parking.ttl_ms))
            self._left(item, "expired")

    def _result(self, run: _Run) -> BatchResult:
        return BatchResult(
            chunks=tuple(run.chunks),
            dead_letters=tuple(run.dead_letters),
            duplicates=run.duplicates,
            parked=len(self._parking),
            parked_bytes=self._parking.bytes,
            missing_requests=tuple(run.missing_requests),
            open_requests=len(self._requests),
        )

    def _take(self, inc: Incoming, seq: int, parsed: Event | str | None = None) -> None:
        out = self._out()
        rv = self.room_version
        if rv is None:
            pdu = as_mapping(inc.raw)
            if pdu is None:
                out.dead_letters.append(
                    DeadLetter("the PDU is not a JSON object", inc.raw, inc.source)
                )
                return
            if not is_create(pdu):
                self._park_raw(inc, seq, pdu)
                return
            try:
                rv = parse_create_event_room_version(pdu)
            except MatrixError as e:
                out.dead_letters.append(DeadLetter(_reason(e), inc.raw, inc.source))
                return
        event = parsed if parsed is not None and rv is self.room_version else _parse(inc.raw, rv)
        if isinstance(event, str):
            out.dead_letters.append(DeadLetter(event, inc.raw, inc.source))
            return
        self._handle(event, inc.raw, storable_received_ts(inc.received_ts), inc.source, seq=seq)

    def _park_raw(self, inc: Incoming, seq: int, pdu: Mapping[str, Any]) -> None:
        raw = _keepable(inc.raw)
        item = Parked(
            seq=seq,
            raw=raw,
            missing={CREATE_EVENT},
            parked_at=self.clock,
            received_ts=storable_received_ts(inc.received_ts),
            source=dict(inc.source) if inc.source is not None else None,
            size=_size(raw),
        )
        try:
            self._parking.park(item)
        except ParkingFull as e:
            self._out().dead_letters.append(DeadLetter(e.reason, inc.raw, inc.source))
            return
        self._ask(item, create_event_candidates(self.room_id, pdu), event_id_field(pdu))

    def _handle(
        self,
        event: Event,
        raw: RawInput,
        received_ts: int | None,
        source: Mapping[str, Any] | None,
        *,
        seq: int,
        parked_at: int | None = None,
        signatures_checked: bool = False,
    ) -> None:
        out = self._out()
        if event.room_id != self.room_id:
            out.dead_letters.append(
                DeadLetter(
                    f"event {event.event_id} belongs to room {event.room_id}, not {self.room_id}",
                    raw,
                    source,
                    event.event_id,
                )
            )
            return
        fp = fingerprint(event.pdu)
        # One recall for every ID read below (none unless the index dropped entries).
        self._known.prefetch((event.event_id, *event.prev_event_ids, *event.auth_event_ids))
        known = self._known.get(event.event_id)
        parked = self._parking.get(event.event_id)
        prior_fp = known.fingerprint if known else (parked.fingerprint if parked else None)
        if prior_fp is not None:
            if prior_fp == fp:
                out.duplicates += 1
            else:
                where = "processed" if known else "parked"
                out.dead_letters.append(
                    DeadLetter(
                        f"event {event.event_id} was already {where} with different content; "
                        "the event ID is reused for another event",
                        raw,
                        source,
                        event.event_id,
                    )
                )
            return
        if not signatures_checked and self._signature_fails(event, raw, source):
            return
        missing = {
            e for e in (*event.prev_event_ids, *event.auth_event_ids) if e not in self._known
        }
        if missing:
            keep = _keepable(raw)
            item = Parked(
                seq=seq,
                raw=keep,
                missing=missing,
                parked_at=self.clock if parked_at is None else parked_at,
                event_id=event.event_id,
                pdu=dict(event.pdu),
                received_ts=received_ts,
                source=dict(source) if source is not None else None,
                fingerprint=fp,
                size=_size(keep),
            )
            try:
                self._parking.park(item)
            except ParkingFull as e:
                out.dead_letters.append(DeadLetter(e.reason, raw, source, event.event_id))
                return
            self._ask(item, item.missing, event.event_id)
            return
        # Cut the chunk before deciding: deciding may move the current state on in place, and a
        # chunk closed now must read the state as its own last event left it.
        self._chunk_for(_size(raw) + _ROW_OVERHEAD)
        try:
            decision = self._decide(event)
        except (ResolverFailed, RecallFailed):
            raise
        except MissingEvents as e:
            # Only reachable if the Matrix core needs an event beyond the auth_events and
            # prev_events this processor waits for; report it rather than guess a result.
            out.dead_letters.append(
                DeadLetter(
                    f"event {event.event_id} could not be decided: {e}", raw, source, event.event_id
                )
            )
            return
        except Exception as e:
            # A failure of the rules on some odd input must not stop the room's partition
            # (DESIGN.md invariant 7). Nothing was recorded, so the room state is unchanged.
            out.dead_letters.append(
                DeadLetter(
                    f"event {event.event_id} could not be decided: internal error "
                    f"{type(e).__name__}: {e}",
                    raw,
                    source,
                    event.event_id,
                )
            )
            return
        self._record(event, fp, received_ts, decision)

    def _drain_ready(self) -> None:
        while self._ready:
            _, item = heapq.heappop(self._ready)
            self._release(item)

    def _release(self, item: Parked) -> None:
        out = self._out()
        rv = self.room_version
        assert rv is not None, "parked input is released only once the room version is known"
        if item.pdu is not None and item.event_id is not None:
            event = Event.from_trusted(item.pdu, rv, item.event_id)
        else:
            parsed = _parse(item.raw, rv)
            if isinstance(parsed, str):
                out.dead_letters.append(DeadLetter(parsed, item.raw, item.source))
                return
            event = parsed
        self._handle(
            event,
            item.raw,
            item.received_ts,
            item.source,
            seq=item.seq,
            parked_at=item.parked_at,
            # Parked after its signatures were checked (input parked before the create event
            # arrived could not be parsed, so has no event ID and is checked now).
            signatures_checked=item.event_id is not None,
        )

    def _signature_fails(
        self, event: Event, raw: RawInput, source: Mapping[str, Any] | None
    ) -> bool:
        """Check 2 on receipt: an event whose signatures fail is dropped (dead-lettered)."""
        checker = self.config.signatures
        if checker is None:
            return False
        try:
            checker.check(event)
        except InvalidPdu as e:
            self._out().dead_letters.append(DeadLetter(e.reason, raw, source, event.event_id))
            return True
        return False

    # ---------------------------------------------------------------- one event

    def _decide(self, event: Event) -> _Decision:
        """Decide ``event`` (all it references is known) without recording anything.

        Only new state groups are stored (unreferenced until recorded, so harmless if the
        decision is abandoned).
        """
        creates = is_create(event.pdu)
        rejected: str | None = None
        new_groups: list[StateGroup] = []
        if self.recorder is not None:
            self.recorder.begin(event.event_id)

        reused = False
        before_sg: int | None = None
        if not creates or event.prev_event_ids:
            # A second create event on prev events is rejected with the state of its prev
            # events, as any rejected event (Synapse computes its context like any other's).
            before_sg, reused = self._state_before(event, new_groups)
        before = self._groups.state(before_sg)
        if self.recorder is not None:
            self.recorder.note("state_before", group=before_sg, state=dict(before))

        # A second create event goes through rule 1 like the first (one on prev events fails
        # 1.1, one from another server than the room ID's 1.2); one the rules allow is
        # accepted, another root of the room's state, as Synapse accepts it.
        rejected = self._check_auth(event, before)
        soft_failed = False
        if rejected is None and not creates:
            soft_failed = self._soft_fails(event)
        only_from = None
        if rejected is None and event.type == "m.room.redaction":
            only_from = self._redaction_only_from(event, before, soft_failed)

        after_sg: int | None
        if event.is_state and rejected is None:
            # When the event will be the room's only forward extremity and the current state
            # is the state before it (then ``_move_current`` moves it to the state after), the
            # state before turns into the state after in place; else it is copied.
            sole = (
                not soft_failed
                and self._extremities.issubset(event.prev_event_ids)
                and not self._current_overlay
                and self._current_basis == (before_sg,)
                and self._groups_of(self._extremities) == {before_sg}
            )
            after_sg, group = self._groups.add_delta(
                before_sg,
                event.event_id,
                {event.state_tuple: event.event_id},
                in_place=sole,
            )
            new_groups.append(group)
        else:
            after_sg = before_sg
        return _Decision(
            creates, rejected, soft_failed, before_sg, after_sg, new_groups, reused, only_from
        )

    def _record(self, event: Event, fp: int, received_ts: int | None, decision: _Decision) -> None:
        """Record a decided event: its result, state group, extremities, chunk entries."""
        creates, rejected, soft_failed, after_sg = (
            decision.creates,
            decision.rejected,
            decision.soft_failed,
            decision.state_group,
        )
        rv = event.room_version
        out = self._open
        assert out is not None, "the chunk is opened before the event is decided"
        out.bytes += sum(_group_size(g) for g in decision.new_groups)
        status = REJECTED if rejected is not None else SOFT_FAILED if soft_failed else ACCEPTED
        self._known.add(event, status, after_sg, fp)
        out.state_groups.extend(decision.new_groups)
        self.event_seq += 1
        if decision.new_groups:
            self._note_groups()

        founds_room = creates and self.create_event_id is None
        if founds_room:
            # Even a rejected create event fixes the room version: the events that follow it
            # can then be parsed, and are rejected for want of an accepted create event.
            self.create_event_id = event.event_id
            self.room_version = self._known.room_version = rv
        if founds_room and rejected is None:
            out.creator = _creator(event)
        if status == ACCEPTED:
            added, removed = extremities.advance(
                self._extremities,
                event.event_id,
                event.prev_event_ids,
                self._known.excluded_prevs,
            )
            out.touched_extremities.update(added)
            out.touched_extremities.update(removed)
            if added or removed:
                if creates and not founds_room:
                    self._name_resolution_version(event)
                self._move_current(event, added, removed, decision, out)
        if rejected is None and event.redacts is not None:
            # After the current state moved: Synapse records the redaction with the event, so
            # the event's own persistence still reads the redacted event whole.
            self._known.redact(event.redacts, event.event_id, decision.redaction_only_from)
        # Redactions that came before this event count from now on (its own decision read it
        # whole, as Synapse reads an event in flight).
        self._known.apply_pending_redactions(event.event_id)
        if rejected is None:
            membership = event.membership
            if membership is not None and event.state_key is not None:
                out.memberships.append(
                    Membership(event.event_id, event.state_key, event.sender, membership)
                )
            redacts = event.redacts
            if redacts is not None:
                out.redactions.append(Redaction(event.event_id, redacts))

        out.events.append(
            ChunkEvent(
                event_id=event.event_id,
                format_version=int(event.format_version),
                pdu=dict(event.pdu),
                rejected=_storable_text(rejected),
                soft_failed=soft_failed,
                state_group=after_sg,
                received_ts=received_ts,
            )
        )
        self._arrived(event.event_id)
        if founds_room:
            self._arrived(CREATE_EVENT)

    def _arrived(self, event_id: str) -> None:
        for item in self._parking.arrived(event_id):
            self._left(item, "answered")
            heapq.heappush(self._ready, (item.seq, item))

    def _ask(self, item: Parked, waits_for: Iterable[str], needed_by: str | None) -> None:
        """Request what parked ``item`` waits for that is not parked itself (``missing``)."""
        lacking = [e for e in waits_for if self._parking.get(e) is None]
        request = self._requests.ask(item.seq, lacking, needed_by, item.parked_at)
        if request is not None:
            self._out().missing_requests.append(request)

    def _left(self, item: Parked, status: Status) -> None:
        closed = self._requests.leave(item.seq, status, self.clock)
        if closed is not None:
            self._out().missing_requests.append(closed)

    def _name_resolution_version(self, event: Event) -> None:
        """A second create event is another forward extremity: the state of the new extremities
        is resolved by the room version its content names ("1" without one), not the room's.

        Synapse's persistence takes the room version from a create event among the events it
        persists (``_get_new_state_after_events``), and its resolution handler caches the
        result per set of state groups, so an event whose prev events have exactly those
        groups has that state before it too. Roomstream remembers the version for the set.
        """
        named = resolution_version(event.content.get("room_version", DEFAULT_ROOM_VERSION))
        groups = frozenset(self._groups_of(self._extremities))
        if named is not self.room_version and len(groups) > 1:
            self._named_versions.setdefault(groups, named)

    def _resolve_groups(self, groups: Iterable[int | None]) -> dict[StateKey, str]:
        """The resolution of the states of ``groups``: by the room's version, or by the version
        a second create event named for exactly this set (``_name_resolution_version``)."""
        groups = tuple(groups)
        states = [self._groups.state(sg) for sg in groups]
        named = self._named_versions.get(frozenset(groups)) if self._named_versions else None
        if named is None:
            return self._resolve(states)
        # Rare (a second create event naming another version): resolved here, not by the
        # shell's resolver, which resolves by the room's version.
        return self._resolve_here(named, states)

    def _state_before(self, event: Event, new_groups: list[StateGroup]) -> tuple[int | None, bool]:
        """The state group of the state before ``event``, making one when resolution is needed;
        and whether the resolution gave the state of one of the prev groups (reused)."""
        sgs: list[int | None] = []
        for prev in event.prev_event_ids:
            sg = self._known[prev].state_group
            if sg not in sgs:
                sgs.append(sg)
        if len(sgs) <= 1:
            # A linear DAG: the state before is the state after the single prev event.
            return (sgs[0] if sgs else None), False
        resolved = self._resolve_groups(sgs)
        sg_id, group = self._groups.add_state(event.event_id, resolved, sgs)
        if group is not None:
            new_groups.append(group)
        return sg_id, group is None

    def _resolve(self, state_sets: list[StateMap]) -> dict[StateKey, str]:
        rv = self.room_version
        assert rv is not None, "state resolution before the create event"
        if self.config.resolver is not None:
            try:
                return self.config.resolver(
                    self.room_id, rv, state_sets, self._known.fetch, self._known.is_rejected
                )
            except MatrixError:
                raise
            except Exception as e:
                raise ResolverFailed(
                    f"state resolution in room {self.room_id} failed outside the rules: "
                    f"{type(e).__name__}: {e}; restore the room and retry its inputs"
                ) from e
        return self._resolve_here(rv, state_sets)

    def _resolve_here(self, rv: RoomVersion, state_sets: list[StateMap]) -> dict[StateKey, str]:
        """The resolution of ``state_sets`` by ``rv``'s algorithm, in this process, over the
        room's known events (told to the recorder)."""
        return resolve_state(
            rv,
            state_sets,
            self._known.fetch,
            is_rejected=self._known.is_rejected,
            recorder=self.recorder,
        )

    def _check_auth(self, event: Event, before: StateMap) -> str | None:
        """The rejection reason, or None when the event passes both authorization checks."""
        for auth_id in event.auth_event_ids:
            if not self._known.is_state_event(auth_id):
                reason = f"auth event {auth_id} is not a state event of room {self.room_id}"
                if self.recorder is not None:
                    self.recorder.note(
                        "rejected",
                        check="auth events",
                        rule="3.2",
                        reason=reason,
                        auth_events=cited_auth_events(self._read(event, "auth events", before)),
                    )
                return reason
        check = "auth events"
        try:
            # Checks on receipt of a PDU, 4.: passes the authorization rules based on the
            # event's auth events, otherwise it is rejected.
            check_auth_events(event, self._known.fetch, is_rejected=self._known.is_rejected)
            check = "state before"
            # 5.: passes them based on the state before the event, otherwise it is rejected.
            check_auth_rules(event, self._auth_state(event, before))
        except EventRejected as e:
            if self.recorder is not None:
                self.recorder.note(
                    "rejected", check=check, **rejection_record(e, self._read(event, check, before))
                )
            return e.reason
        return None

    def _redaction_only_from(self, event: Event, before: StateMap, soft_failed: bool) -> str | None:
        """For an allowed redaction: the server of its sender when it counts only for events
        from that server, else None.

        Synapse (``check_redaction``) marks a redaction for a recheck when, in any of the auth
        checks it passed, its sender's power level was below the redact level (rooms v3+; in
        v1–v2 the rules themselves decide by the event IDs' servers); a marked redaction only
        redacts events whose sender is on the same server. The checks it passed: against its
        auth events, against the state before it, and (when that check ran and passed)
        against the current state.
        """
        if event.room_version.event_format is EventFormat.V1:
            return None
        claimed: dict[StateKey, Event] = {}
        for auth_id in event.auth_event_ids:
            auth_event = self._known.fetch(auth_id)
            if auth_event is not None and auth_event.state_key is not None:
                claimed[auth_event.state_tuple] = auth_event
        states = [claimed, self._auth_state(event, before)]
        if not soft_failed and set(event.prev_event_ids) != self._extremities:
            states.append(self._auth_state(event, self._current))
        create = self._known.fetch(self.create_event_id) if self.create_event_id else None
        for state in states:
            levels = PowerLevels.from_event(state.get(POWER_LEVELS_KEY), event.room_version)
            if user_level(event.sender, levels, state.get(CREATE_KEY, create)) < levels.redact:
                return domain_of(event.sender)
        return None

    def _read(self, event: Event, check: str, state: StateMap) -> dict[StateKey, Event]:
        """For a decision record: the events a check read (its auth events, or the auth state
        drawn from ``state``)."""
        if check != "auth events":
            return self._auth_state(event, state)
        return auth_events_read(event, self._known.fetch)

    def _soft_fails(self, event: Event) -> bool:
        """Checks on receipt of a PDU, 6.: passes the authorization rules based on the current
        state of the room, otherwise soft-failed.

        As Synapse (``_check_for_soft_fail``), the check is skipped exactly when the event's
        prev_events are the forward extremities: the current state is then taken to be the
        state before the event, which the earlier check passed.
        """
        if set(event.prev_event_ids) == self._extremities:
            return False
        try:
            check_auth_rules(
                event,
                self._auth_state(event, self._current),
                server_signature_ok=signature_checked_on_receipt,
            )
        except EventRejected as e:
            if self.recorder is not None:
                self.recorder.note(
                    "soft_failed",
                    extremities=sorted(self._extremities),
                    **rejection_record(e, self._auth_state(event, self._current)),
                )
            return True
        return False

    def _auth_state(self, event: Event, state: StateMap) -> dict[StateKey, Event]:
        auth_state: dict[StateKey, Event] = {}
        for key in auth_types_for_event(event):
            eid = state.get(key)
            if eid is None:
                continue
            ev = self._known.fetch(eid)
            if ev is not None:
                auth_state[key] = ev
        return auth_state

    def _groups_of(self, event_ids: Iterable[str]) -> set[int]:
        return {sg for e in event_ids if (sg := self._known[e].state_group) is not None}

    def _move_current(
        self,
        event: Event,
        added: set[str],
        removed: set[str],
        decision: _Decision,
        out: _Open,
    ) -> None:
        """Update the current state after ``event`` moved the forward extremities, as Synapse's
        persistence does (``_calculate_new_forward_extremities_and_state_delta``), and note the
        keys it changed in the open chunk.

        The current state is the state at the forward extremities (resolved when they fork),
        with one exception that Synapse makes and Roomstream follows: when one extremity is
        replaced by one event that has a single prev event and is not a state event, the current
        state is left as it is. That event's state is its prev event's, which is the state at
        the old extremity unless the prev event was soft-failed or rejected; then the current
        state lags the extremities (see docs/synapse-parity.md) until a later change recomputes
        it. A change between two single groups that the event itself spans (its own state
        change, or the resolved state before it over one of its prev groups) is applied as a
        delta to the current state, as Synapse applies it, lagging or not.

        The cost follows what changed: in a linear room the new current state is the old one
        plus the event's own entry, whatever the size of the room; only forks and merges
        recompute it, and they pay for state resolution over whole states anyway.
        """
        new_extremities = self._extremities
        old_extremities = (new_extremities - added) | removed
        if (
            len(old_extremities) == 1
            and len(new_extremities) == 1
            and len(event.prev_event_ids) == 1
            and not event.is_state
        ):
            return
        old_groups = self._groups_of(old_extremities)
        new_groups = self._groups_of(new_extremities)
        if old_groups == new_groups:
            return
        if len(old_groups) == 1 and len(new_groups) == 1:
            (old_group,), (new_group,) = old_groups, new_groups
            delta = self._delta_spanned(event, decision, old_group, new_group)
            if delta is not None:
                self._apply_current_delta(old_group, new_group, delta, out)
                return
        old = self._current
        self._set_current(tuple(sorted(new_groups)), {})
        new = self._current
        out.touched_state.update(k for k, v in new.items() if old.get(k) != v)
        out.touched_state.update(k for k in old if k not in new)

    def _delta_spanned(
        self, event: Event, decision: _Decision, old_group: int, new_group: int
    ) -> dict[StateKey, str] | None:
        """The state delta from ``old_group`` to ``new_group`` if the event spans that step."""
        before, after = decision.before_sg, decision.state_group
        if event.is_state and (old_group, new_group) == (before, after):
            return {event.state_tuple: event.event_id}
        if new_group == before and before is not None and not decision.before_reused:
            return self._groups.step_from(before, old_group)
        return None

    def _apply_current_delta(
        self, old_group: int, new_group: int, delta: dict[StateKey, str], out: _Open
    ) -> None:
        """The current state plus ``delta``, the step from ``old_group`` to ``new_group``, on
        ``new_group`` as its basis (``delta`` holds only entries that differ from
        ``old_group``'s state)."""
        overlay = self._current_overlay
        if not overlay and self._current_basis == (old_group,):
            # The usual case: the current state was the old group's, so it is the new group's
            # (just made or resolved, so cached: no copy; it may be the very mapping
            # ``_current`` was, moved on in place by ``add_delta``).
            out.touched_state.update(delta)
            self._set_current((new_group,), {})
            return
        current = self._current
        out.touched_state.update(k for k, v in delta.items() if current.get(k) != v)
        if overlay and self._current_basis == (old_group,):
            # Lagging over the old group: the new group agrees with the old one but on the
            # delta's keys, where the current state now agrees with it too.
            assert isinstance(current, dict), "with an overlay the current state is our own"
            for key, value in delta.items():
                current[key] = value
                overlay.pop(key, None)
        else:
            # Lagging over another basis: the current state differs from the new group only
            # where the basis differs from it, on the overlay's keys, or the delta's.
            basis = self._current_basis
            if len(basis) == 1:
                keys = self._groups.keys_between(basis[0], new_group)
            else:
                keys = set(self._groups.state(new_group)) | set(current)
            keys.update(overlay)
            own = current if overlay else dict(current)
            assert isinstance(own, dict), "with an overlay the current state is our own"
            own.update(delta)
            target = self._groups.state(new_group)
            self._current_overlay = overlay = {
                k: own.get(k) for k in keys if k not in delta and own.get(k) != target.get(k)
            }
            current = own
        self._current_basis = (new_group,)
        if overlay:
            self._current = current
        else:
            # Caught up: the group's own mapping serves (it is cached, just made or resolved).
            self._current = self._groups.state(new_group)

    def _set_current(self, basis: tuple[int, ...], overlay: Mapping[StateKey, str | None]) -> None:
        """The current state: the state of ``basis`` (resolved), with ``overlay`` over it."""
        if not basis:
            state: StateMap = {}
        elif len(basis) == 1:
            state = self._groups.state(basis[0])
        else:
            state = self._resolve_groups(basis)
        if overlay:
            laid = dict(state)
            for key, value in overlay.items():
                if value is None:
                    laid.pop(key, None)
                else:
                    laid[key] = value
            state = laid
        self._current_basis = basis
        self._current_overlay = dict(overlay)
        self._current = state

    # ---------------------------------------------------------------- output

    def _out(self) -> _Run:
        assert self._run is not None, "only while processing a batch"
        return self._run

    def _chunk_for(self, size: int) -> _Open:
        """The open chunk, with room for ``size`` more bytes (a new one when it is full)."""
        out = self._open
        if out is not None and out.events and out.bytes + size > self.config.max_chunk_bytes:
            self._close()
            out = None
        if out is None:
            out = self._open = _Open(self.event_seq + 1, self.input_seq)
        out.bytes += size
        return out

    def _close(self) -> None:
        """Close the open chunk (when it holds events) into the run's output."""
        out, self._open = self._open, None
        if out is None or not out.events:
            return
        current = self._current
        state_set: list[CurrentStateRow] = []
        state_removed: list[StateKey] = []
        for key in sorted(out.touched_state):
            eid = current.get(key)
            if eid is None:
                state_removed.append(key)
            else:
                state_set.append(CurrentStateRow(key[0], key[1], eid, self._membership_of(eid)))
        rv = self.room_version
        assert rv is not None, "a chunk holds events, so some room version parsed them"
        fx = self._extremities
        chunk = Chunk(
            chunk_id=f"{self.room_id}/{self.event_seq}",
            room_id=self.room_id,
            room_version=rv.identifier,
            events=tuple(out.events),
            state_groups=tuple(out.state_groups),
            forward_extremities_added=tuple(sorted(e for e in out.touched_extremities if e in fx)),
            forward_extremities_removed=tuple(
                sorted(e for e in out.touched_extremities if e not in fx)
            ),
            current_state_set=tuple(state_set),
            current_state_removed=tuple(state_removed),
            memberships=tuple(out.memberships),
            redactions=tuple(out.redactions),
            creator=out.creator,
            seq=(out.first_seq, self.event_seq),
            inputs=(out.first_input, self.input_seq),
        )
        self._out().chunks.append(chunk.with_digest())

    def _membership_of(self, event_id: str) -> str | None:
        ev = self._known.fetch(event_id)
        return ev.membership if ev is not None else None

    # ---------------------------------------------------------------- persistence

    @property
    def dropped_events(self) -> int:
        """Event index entries dropped in all (``release_committed``)."""
        return self._known.dropped

    @property
    def group_rows(self) -> tuple[int, int]:
        """State group rows (held, dropped in all)."""
        return self._groups.held_rows, self._groups.dropped_rows

    def append_marks(self) -> tuple[int, int, int]:
        """How many entries the append-only parts hold (events, state events, state groups):
        the marks to pass to a later ``to_dict(since=...)``."""
        events, state_events = self._known.counts()
        return events, state_events, len(self._groups)

    def to_dict(self, *, since: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
        """The whole state as orjson-friendly data (string keys, lists, ints, None).

        With ``since`` (marks from an earlier ``append_marks``), the append-only parts —
        ``events``, ``state_events`` and ``state_groups.groups`` — hold only the entries added
        after the marks; ``from_dict`` takes them merged.
        """
        return {
            "format": STATE_FORMAT,
            "room_id": self.room_id,
            "room_version": self.room_version.identifier if self.room_version else None,
            "create_event_id": self.create_event_id,
            "input_seq": self.input_seq,
            "event_seq": self.event_seq,
            "clock": self.clock,
            **self._known.to_dict(since[0], since[1]),
            "state_groups": self._groups.to_dict(since[2]),
            "forward_extremities": sorted(self._extremities),
            "current_basis": list(self._current_basis),
            "current_overlay": [[k[0], k[1], v] for k, v in sorted(self._current_overlay.items())],
            "named_versions": [
                [sorted(groups, key=str), rv.identifier]
                for groups, rv in self._named_versions.items()
            ],
            "parked": self._parking.to_dict(),
            "requests": self._requests.to_dict(),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        config: ProcessorConfig | None = None,
        budget: ParkingBudget | None = None,
    ) -> RoomProcessor:
        fmt = data.get("format")
        if fmt not in (1, STATE_FORMAT):
            raise ValueError(
                f"room processor state of format {fmt!r} for room {data.get('room_id')!r}; "
                f"this version reads formats 1 and {STATE_FORMAT}"
            )
        proc = cls(data["room_id"], config=config, budget=None)
        rv = data["room_version"]
        proc.room_version = room_version(rv) if rv is not None else None
        proc.create_event_id = data["create_event_id"]
        proc._known = proc._bound(KnownEvents.from_dict(data, proc.room_version))
        if fmt == 1:
            # Chunk ids were <room>/<chunk count>; every chunk held an event, so the number of
            # events recorded is at least that, and ids stay increasing.
            proc.input_seq = int(data["seq"])
            proc.event_seq = proc._known.counts()[0]
        else:
            proc.input_seq = int(data["input_seq"])
            proc.event_seq = int(data["event_seq"])
            proc.clock = int(data["clock"])
        proc._groups = proc._bind_groups(StateGroups.from_dict(proc.room_id, data["state_groups"]))
        # Whether the groups are stored is not saved: they are once everything up to now is.
        proc._group_marks = [(proc.event_seq, len(proc._groups))]
        proc._extremities = set(data["forward_extremities"])
        proc._parking = ParkingLot.restore(
            proc.room_id, data["parked"], proc.config.parking, budget
        )
        proc._requests = MissingLedger.from_dict(proc.room_id, data.get("requests") or ())
        proc._named_versions = {
            frozenset(groups): room_version(rv) for groups, rv in data.get("named_versions", ())
        }
        if "current_basis" in data:
            basis = tuple(int(sg) for sg in data["current_basis"])
            overlay = {(t, k): v for t, k, v in data.get("current_overlay", ())}
        else:
            # Saved before the basis was: the current state was the extremities' state.
            basis, overlay = tuple(sorted(proc._groups_of(proc._extremities))), {}
        proc._set_current(basis, overlay)
        return proc

    # ---------------------------------------------------------------- rebuilding

    @classmethod
    def from_database_rows(
        cls,
        rows: RoomRows,
        *,
        config: ProcessorConfig | None = None,
        budget: ParkingBudget | None = None,
    ) -> RoomProcessor:
        """The room's processor rebuilt from what the committer stored (``pipeline.room.rebuild``;
        the chunks in flight folded in first with ``rebuild.fold_chunks``).

        Every event's outcome, state group and fingerprint, the state events (served redacted
        where a stored redaction counts), the state groups and the group counter, the forward
        extremities and the current state are as the processor that sent the chunks had them,
        and the event sequence goes on from ``rows.high_water``, so the chunks it sends next
        are the ones that processor would have sent, given the same inputs. Not rebuilt: parked
        events and their requests (``adopt_parked`` takes them from a stale state), the input
        sequence (set to the event sequence) and the logical clock (the largest stored
        ``received_ts``).

        One approximation: a redaction's sender's power is checked in its auth events and in
        the state before it, not in the room's current state when it arrived (no row holds
        that); see ``_redaction_only_from``.
        """
        proc = cls(rows.room_id, config=config, budget=budget)
        rv = room_version(rows.room_version) if rows.room_version is not None else None
        known = KnownEvents(rv)
        redactions: list[Event] = []
        clock = 0
        for row in rows.events:
            if row.event_id in known:
                continue  # stored before: the committer keeps the first
            if rv is None:
                raise ValueError(
                    f"room {rows.room_id} has stored events but no room version; its rooms row "
                    "is missing"
                )
            event = Event.from_trusted(row.pdu, rv, row.event_id)
            status = (
                REJECTED
                if row.rejected is not None
                else SOFT_FAILED
                if row.soft_failed
                else ACCEPTED
            )
            known.add(event, status, row.state_group, fingerprint(row.pdu))
            if proc.create_event_id is None and is_create(row.pdu):
                proc.create_event_id = event.event_id
            if status != REJECTED and event.redacts is not None:
                redactions.append(event)
            if row.received_ts is not None and row.received_ts > clock:
                clock = row.received_ts
        proc.room_version = rv
        proc._known = proc._bound(known)
        ordered, counter = group_order(rows.room_id, rows.state_groups)
        proc._groups = proc._bind_groups(
            StateGroups.from_rows(
                rows.room_id, ordered, counter, max_hops=proc.config.max_delta_hops
            )
        )
        proc._group_marks = [(rows.high_water, len(proc._groups))]
        proc._extremities = set(rows.forward_extremities)
        proc.event_seq = rows.high_water
        proc.input_seq = rows.high_water
        proc.clock = clock
        # In the order they were recorded: each reads the state events as the redactions
        # before it left them, as it did when it was decided.
        for event in redactions:
            # Its state group is the state before it (its own entry, if it is a state event,
            # is no auth type of a redaction). ``soft_failed=True`` leaves out the check against
            # the current state on its arrival, which no row holds.
            before = proc._groups.state(known[event.event_id].state_group)
            only_from = proc._redaction_only_from(event, before, soft_failed=True)
            assert event.redacts is not None
            known.redact(event.redacts, event.event_id, only_from)
        proc._current_as(rows.current_state)
        return proc

    def _current_as(self, current: Mapping[StateKey, str]) -> None:
        """Take ``current`` as the current state: over the forward extremities' state groups as
        its basis, the entries where it differs from their (resolved) state as its overlay."""
        basis = tuple(sorted(self._groups_of(self._extremities)))
        self._set_current(basis, {})
        state = self._current
        overlay: dict[StateKey, str | None] = {
            k: current.get(k)
            for k in state.keys() | current.keys()
            if state.get(k) != current.get(k)
        }
        if overlay:
            self._current_basis = basis
            self._current_overlay = overlay
            self._current = dict(current)

    def adopt_parked(self, stale: RoomProcessor) -> BatchResult:
        """Take over the parked events and open requests of ``stale``, this room's processor
        from a stored state found stale, and release what the rebuilt state now answers.

        Their input sequence numbers and parking times are kept (the input sequence and the
        clock move up to ``stale``'s where it is ahead). An event that waited for events known
        now is released and decided as any released event (one that was decided in the lost
        history is a duplicate, and yields nothing but the close of its request).
        """
        with self._running() as run:
            if self._parking.items():
                raise ValueError(f"room {self.room_id} has parked events already")
            self._parking = stale._parking
            self._requests = stale._requests
            self.input_seq = max(self.input_seq, stale.input_seq)
            self.clock = max(self.clock, stale.clock)
            waits = sorted({m for item in self._parking.items() for m in item.missing})
            for need in waits:
                if need == CREATE_EVENT:
                    if self.create_event_id is not None:
                        self._arrived(CREATE_EVENT)
                elif need in self._known:
                    self._arrived(need)
            self._drain_ready()
            self._close()
            return self._result(run)


# -------------------------------------------------------------------- helpers


def is_create(pdu: Mapping[str, Any]) -> bool:
    """Whether ``pdu`` has the shape of a create event (type m.room.create, state_key '')."""
    return pdu.get("type") == "m.room.create" and pdu.get("state_key") == ""


def _creator(create: Event) -> str:
    if create.room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    # rooms.creator is a text column, which cannot hold U+0000; the sender is the creator then,
    # as it is for a creator that is not a string.
    return creator if isinstance(creator, str) and "\x00" not in creator else create.sender


def _storable_text(reason: str | None) -> str | None:
    """A rejection reason as the text column can store it: a reason may quote event content,
    and U+0000 is written as the escape ``\\u0000``."""
    if reason is None or "\x00" not in reason:
        return reason
    return reason.replace("\x00", "\\u0000")


def as_mapping(raw: RawInput) -> Mapping[str, Any] | None:
    """``raw`` as a JSON object; None when it is not one."""
    if isinstance(raw, Mapping):
        return raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _keepable(raw: RawInput) -> str | dict[str, Any]:
    """The input in a JSON-friendly form that parses to the same PDU."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")
    return raw


def _reason(e: MatrixError) -> str:
    return str(e)


def _parse(raw: RawInput, rv: RoomVersion) -> Event | str:
    """The validated event, or why ``raw`` is not a PDU of room version ``rv``."""
    try:
        return parse_pdu(raw, rv)
    except MatrixError as e:
        return _reason(e)
    except Exception as e:
        # Odd input must not stop the partition (DESIGN.md invariant 7), whatever it trips.
        return f"the PDU could not be parsed: {type(e).__name__}: {e}"


def _expired(item: Parked, ttl_ms: int) -> DeadLetter:
    what = item.event_id or "the event"
    waits = sorted(item.missing)
    return DeadLetter(
        f"{what} was parked for {ttl_ms} ms waiting for {waits}, which never arrived",
        item.raw,
        item.source,
        item.event_id,
    )


def _size(raw: RawInput) -> int:
    """Bytes of an input as received (its JSON encoding when it came as a mapping)."""
    if isinstance(raw, bytes):
        return len(raw)
    if isinstance(raw, str):
        return len(raw) if raw.isascii() else len(raw.encode("utf-8", errors="replace"))
    return len(orjson.dumps(raw))


def _group_size(group: StateGroup) -> int:
    # An estimate: a row is a type, a state key and an event ID, about 100 bytes encoded.
    return len(group.delta) * _ROW_BYTES
