"""Synapse's receive path for one room, run on Roomstream's events: the differential oracle.

Each event goes through matrix-synapse's own code, as its federation handler applies it to a
new (non-outlier, non-backfilled) PDU whose prev and auth events are all known:

- ``FederationEventHandler._check_event_auth``: ``validate_event_for_room_version``, the
  state-independent and state-dependent rules against the claimed auth events, then against
  the auth events the state before the event selects (when they differ from the claimed ones);
- ``FederationEventHandler._check_for_soft_fail``: the state-dependent rules against the
  current state, unless the prev events are exactly the forward extremities;
- ``EventsPersistenceStorageController._calculate_new_forward_extremities_and_state_delta``:
  ``_calculate_new_extremities`` (with the walk through soft-failed and rejected prev events)
  and the new current state, resolved whenever the extremities' state groups change.

The state before an event is Synapse's too: the state group of its single prev state group, or
state resolution (v1, v2, v2.1 by room version) over the prev events' groups; a rejected event
keeps the state group before it.

Synapse's code runs unmodified; what it would read from its database comes from the in-memory
objects below, each answering only the calls that path makes. Two deployment heuristics are
left out, as Roomstream has neither: pruning of "stuck" forward extremities (it depends on the
wall clock and on which server is local) and dropping the current state of a room the local
server has left (the receiving server here has no users of its own).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.events import Event, StateKey
from tests.oracle.synapse_oracle import _run, resolve_with_synapse, to_synapse

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # The handlers import each other in a circle that only synapse.server enters cleanly.
    import synapse.server  # noqa: F401
    from synapse.api.errors import SynapseError
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import EventBase
    from synapse.events.utils import prune_event
    from synapse.handlers.event_auth import EventAuthHandler
    from synapse.handlers.federation_event import FederationEventHandler
    from synapse.storage.controllers.persist_events import EventsPersistenceStorageController
    from synapse.types.state import StateFilter

StateMap = dict[StateKey, str]


def _domain(user_id: str) -> str:
    return user_id.split(":", 1)[-1]


ORIGIN = "oracle.invalid"
"""The server the PDUs came from, as the handler is told (it only logs it)."""


@dataclass
class _Context:
    """The parts of Synapse's ``EventContext`` the receive and persist paths read."""

    state_before: StateMap
    state_group_before_event: int
    state_group: int
    state_group_deltas: dict[tuple[int, int], StateMap] = field(default_factory=dict)
    rejected: str | None = None
    partial_state: bool = False

    async def get_prev_state_ids(self, state_filter: StateFilter | None = None) -> StateMap:
        if state_filter is None:
            return dict(self.state_before)
        return dict(state_filter.filter_state(self.state_before))


class _WallClock:
    """Synapse's ``Measure`` blocks read a clock; nothing here depends on its value."""

    def time(self) -> float:
        return 0.0

    def time_msec(self) -> int:
        return 0


class _Resolver:
    """Synapse's state resolution (``resolve_events_with_store`` of v1 or v2) over the room's
    events, every one of them handed over in flight, as the state resolution handler would."""

    def __init__(self, room: SynapseReceiver) -> None:
        self._room = room

    async def resolve_state_groups(
        self,
        room_id: str,
        room_version: str,
        state_groups_ids: Mapping[int, StateMap],
        event_map: Any,
        state_res_store: Any,
    ) -> _Resolved:
        entry = self._room.resolve_groups(frozenset(state_groups_ids), room_version)
        return _Resolved(entry.state)

    async def resolve_events_with_store(
        self,
        room_id: str,
        room_version: str,
        state_sets: list[StateMap],
        event_map: Any,
        state_res_store: Any,
    ) -> StateMap:
        return self._room.resolve(state_sets, room_version)


@dataclass
class _CacheEntry:
    """An entry of the resolution handler's cache (``_StateCacheEntry``): the resolved state of
    a set of state groups, and the group holding it once there is one."""

    state: StateMap
    group: int | None


@dataclass
class _Resolved:
    """The resolution handler's ``_StateCacheEntry``, with no state group of its own: so the
    persist path never prunes extremities (see the module docstring)."""

    state: StateMap
    state_group: int | None = None

    async def get_state(self, controller: Any) -> StateMap:
        return self.state


class _Store:
    """The main data store and persist-events store, as the receive path queries them."""

    def __init__(self, room: SynapseReceiver) -> None:
        self._room = room

    # events
    async def get_events(
        self, event_ids: Iterable[str], allow_rejected: bool = False, **_: Any
    ) -> dict[str, EventBase]:
        events = self._room.events
        return {
            e: self._room.as_read(e)
            for e in event_ids
            if e in events and (allow_rejected or events[e].rejected_reason is None)
        }

    async def get_events_as_list(self, event_ids: Iterable[str], **kwargs: Any) -> list[EventBase]:
        found = await self.get_events(event_ids, **kwargs)
        return list(found.values())

    async def have_events_in_timeline(self, event_ids: Iterable[str]) -> set[str]:
        return {e for e in event_ids if e in self._room.events}

    # room
    async def is_partial_state_room(self, room_id: str) -> bool:
        return False

    async def get_room_version_id(self, room_id: str) -> str:
        return self._room.room_version.identifier

    async def get_latest_event_ids_in_room(self, room_id: str) -> frozenset[str]:
        return frozenset(self._room.extremities)

    async def get_partial_current_state_ids(self, room_id: str) -> StateMap:
        return dict(self._room.current_state)

    async def _get_state_group_for_events(self, event_ids: Collection[str]) -> dict[str, int]:
        return {e: self._room.state_group_of[e] for e in event_ids}

    async def _get_state_for_groups(self, groups: Iterable[int]) -> dict[int, StateMap]:
        return {g: dict(self._room.groups[g]) for g in groups}

    # persist_events_store: the SQL of events.py, over the events in memory
    async def _get_events_which_are_prevs(self, event_ids: Iterable[str]) -> list[str]:
        wanted = set(event_ids)
        return [
            prev
            for event in self._room.events.values()
            if event.rejected_reason is None and not event.internal_metadata.is_soft_failed()
            for prev in event.prev_event_ids()
            if prev in wanted
        ]

    async def _get_prevs_before_rejected(
        self, event_ids: Iterable[str], include_soft_failed: bool = True
    ) -> set[str]:
        existing_prevs: set[str] = set()
        to_check = list(event_ids)
        while to_check:
            batch, to_check = to_check, []
            for event_id in batch:
                event = self._room.events.get(event_id)
                if event is None:
                    continue
                soft_failed = event.internal_metadata.is_soft_failed()
                rejected = event.rejected_reason is not None
                for prev in event.prev_event_ids():
                    if prev in existing_prevs:
                        continue
                    if (include_soft_failed and soft_failed) or rejected:
                        to_check.append(prev)
                        existing_prevs.add(prev)
        return existing_prevs


class _StateController:
    def __init__(self, room: SynapseReceiver) -> None:
        self._room = room

    async def get_current_state_ids(
        self, room_id: str, state_filter: StateFilter | None = None, **_: Any
    ) -> StateMap:
        state = self._room.current_state
        return dict(state_filter.filter_state(state) if state_filter else state)


class _FederationEventHandler:
    """The attributes ``_check_event_auth`` and ``_check_for_soft_fail`` read."""

    _check_event_auth = FederationEventHandler._check_event_auth
    _check_for_soft_fail = FederationEventHandler._check_for_soft_fail
    _load_or_fetch_auth_events_for_event = (
        FederationEventHandler._load_or_fetch_auth_events_for_event
    )

    def __init__(self, room: SynapseReceiver) -> None:
        self._store = _Store(room)
        self._state_storage_controller = _StateController(room)
        self._state_resolution_handler = _Resolver(room)
        self._event_auth_handler = _EventAuth()
        self.server_name = ORIGIN


class _EventAuth:
    def compute_auth_events(
        self, event: EventBase, current_state_ids: StateMap, for_verification: bool = False
    ) -> list[str]:
        # Synapse's method reads nothing of its handler.
        return EventAuthHandler.compute_auth_events(
            self,  # type: ignore[arg-type]
            event,
            current_state_ids,
            for_verification,
        )


class _PersistController:
    """The attributes ``_calculate_new_forward_extremities_and_state_delta`` reads."""

    _calculate_new_forward_extremities_and_state_delta = (
        EventsPersistenceStorageController._calculate_new_forward_extremities_and_state_delta
    )
    _calculate_new_extremities = EventsPersistenceStorageController._calculate_new_extremities
    _get_new_state_after_events = EventsPersistenceStorageController._get_new_state_after_events
    _calculate_state_delta = EventsPersistenceStorageController._calculate_state_delta
    _is_server_still_joined = EventsPersistenceStorageController._is_server_still_joined

    def __init__(self, room: SynapseReceiver) -> None:
        store = _Store(room)
        self.main_store = store
        self.persist_events_store = store
        self.state_store = store
        self._state_resolution_handler = _Resolver(room)
        self._state_deletion_store = None  # handed to the resolver above, which ignores it
        self._state_controller = None  # handed to the resolution result, which ignores it
        self._clock = _WallClock()
        self.server_name = ORIGIN

    def is_mine_id(self, string: str) -> bool:
        return string.split(":", 1)[-1] == ORIGIN


@dataclass(frozen=True)
class Outcome:
    """What Synapse made of one event."""

    rejected: bool
    soft_failed: bool
    state_after: StateMap  # the state before the event when it was rejected


class SynapseReceiver:
    """One room as Synapse's federation receive path keeps it."""

    def __init__(self, room_id: str, room_version: str) -> None:
        self.room_id = room_id
        self.room_version = KNOWN_ROOM_VERSIONS[room_version]
        self.events: dict[str, EventBase] = {}
        self.state_group_of: dict[str, int] = {}
        self.groups: dict[int, StateMap] = {}
        self.group_parent: dict[int, tuple[int, StateMap]] = {}  # group -> (prev group, delta)
        # The resolution handler's ``_state_cache``: per set of state groups, shared by the
        # contexts of new events and by persistence, so a set is resolved once, with the room
        # version of the first call (persisting a create event passes the version its content
        # names; see ``resolve_groups``).
        self._resolution_cache: dict[frozenset[int], _CacheEntry] = {}
        self.extremities: set[str] = set()
        self.current_state: StateMap = {}
        self._next_group = itertools.count(1)
        self._persisting: EventBase | None = None
        self.redactions: dict[str, list[EventBase]] = {}  # redacted ID -> redactions, accepted
        # Synapse's methods run on these stand-ins for their classes: typed loosely on purpose.
        self._handler: Any = _FederationEventHandler(self)
        self._persister: Any = _PersistController(self)

    def as_read(self, event_id: str) -> EventBase:
        """The event as Synapse's store returns it: redacted when a redaction of it counts.

        events_worker.py, ``_maybe_redact_event_row``: a create event is never redacted; a
        redaction whose sender passed the rules only as "the same server" (rooms v3+, marked
        for a recheck) counts when its sender's server is the redacted event's sender's.
        """
        event = self.events[event_id]
        if event.type == "m.room.create":
            return event
        for redaction in self.redactions.get(event_id, ()):
            if redaction.internal_metadata.need_to_check_redaction() and (
                _domain(redaction.sender) != _domain(event.sender)
            ):
                continue
            pruned = prune_event(event)
            pruned.internal_metadata.redacted_by = redaction.event_id
            return pruned
        return event

    def resolve_groups(self, groups: frozenset[int], room_version: str) -> _CacheEntry:
        """The resolution of ``groups`` as ``StateResolutionHandler.resolve_state_groups``
        gives it: from its cache when the set was resolved before (whatever version that call
        named), else resolved now by ``room_version``'s algorithm and cached, with the input
        group whose state it is (``_make_state_cache_entry``)."""
        entry = self._resolution_cache.get(groups)
        if entry is None:
            states = {g: self.groups[g] for g in groups}
            resolved = self.resolve(list(states.values()), room_version)
            resolved_ids = set(resolved.values())
            same = [
                g
                for g, state in states.items()
                if len(resolved_ids) == len(state) and resolved_ids == set(state.values())
            ]
            entry = _CacheEntry(resolved, same[0] if same else None)
            self._resolution_cache[groups] = entry
        return entry

    def resolve(self, state_sets: list[StateMap], room_version: str | None = None) -> StateMap:
        """Synapse's resolution (``resolve_events_with_store`` of v1 or v2) of ``state_sets``,
        by the algorithm of ``room_version`` (default: the room's); the events keep the room's
        version, as Synapse's do."""
        sets = [dict(s) for s in state_sets]
        if len(sets) == 1:
            return sets[0]
        version = KNOWN_ROOM_VERSIONS[room_version] if room_version else self.room_version
        # Events as the store returns them, and the event being persisted as it is (it is in
        # Synapse's event map, not yet in its store).
        events = {e: self.as_read(e) for e in self.events}
        if self._persisting is not None:
            events[self._persisting.event_id] = self._persisting
        return resolve_with_synapse(self.room_id, version, sets, events)

    def _new_group(self, state: StateMap, parent: tuple[int, StateMap] | None = None) -> int:
        group = next(self._next_group)
        self.groups[group] = state
        if parent is not None:
            self.group_parent[group] = parent
        return group

    def _group_before(self, event: EventBase) -> int:
        """The state group before ``event``, as ``compute_event_context`` finds or makes it.

        One prev group: that group. Several: their resolution (cached per set of groups, as
        the state resolution handler caches it); a prev group whose state it is, else a new
        group resting on the prev group it differs least from (``_make_state_cache_entry``).
        """
        prev_groups = frozenset(self.state_group_of[p] for p in event.prev_event_ids())
        if not prev_groups:
            return self._new_group({})
        if len(prev_groups) == 1:
            (group,) = prev_groups
            return group
        entry = self.resolve_groups(prev_groups, self.room_version.identifier)
        if entry.group is not None:
            return entry.group
        resolved = entry.state
        states = {g: self.groups[g] for g in prev_groups}
        parent: tuple[int, StateMap] | None = None
        for g, state in states.items():
            if state.keys() - resolved.keys():
                continue
            delta = {k: v for k, v in resolved.items() if state.get(k) != v}
            if parent is None or len(delta) < len(parent[1]):
                parent = (g, delta)
        group = self._new_group(resolved, parent)
        entry.group = group
        return group

    def receive(self, event: Event) -> Outcome:
        """Process ``event`` (its prev and auth events all received) as Synapse does."""
        synapse_event = to_synapse(event)
        before_group = self._group_before(synapse_event)
        before = self.groups[before_group]
        after_group = before_group
        deltas: dict[tuple[int, int], StateMap] = {}
        parent = self.group_parent.get(before_group)
        if parent is not None:
            deltas[(parent[0], before_group)] = parent[1]
        if synapse_event.is_state():
            key = (synapse_event.type, synapse_event.state_key)
            change = {key: synapse_event.event_id}
            after_group = self._new_group({**before, **change}, (before_group, change))
            deltas[(before_group, after_group)] = change
        context = _Context(
            state_before=before,
            state_group_before_event=before_group,
            state_group=after_group,
            state_group_deltas=deltas,
        )
        try:
            _run(self._handler._check_event_auth(ORIGIN, synapse_event, context))
        except SynapseError as e:
            # Some of Synapse's rules raise a plain SynapseError (v12 power levels naming a
            # creator), which its handler does not catch: the PDU is refused and never stored.
            # Roomstream rejects such an event; counted as Synapse's rejection here.
            context.rejected = f"refused: {e}"
        if context.rejected is None:
            _run(self._handler._check_for_soft_fail(synapse_event, context=context, origin=ORIGIN))
        if context.rejected is not None:
            synapse_event = to_synapse(event, context.rejected)
            # A rejected event keeps the state before it (events.py, the state mappings).
            context.state_group = before_group
            context.state_group_deltas = {}

        self._persisting = synapse_event
        try:
            extremities, delta = _run(
                self._persister._calculate_new_forward_extremities_and_state_delta(
                    self.room_id, [(synapse_event, context)]
                )
            )
        finally:
            self._persisting = None
        self.events[synapse_event.event_id] = synapse_event
        if synapse_event.type == "m.room.redaction" and context.rejected is None:
            # Soft-failed redactions are stored too (events.py, ``_store_redaction``).
            redacts = synapse_event.redacts
            if isinstance(redacts, str):
                self.redactions.setdefault(redacts, []).append(synapse_event)
        self.state_group_of[synapse_event.event_id] = context.state_group
        if extremities is not None:
            self.extremities = set(extremities)
        if delta is not None:
            for key in delta.to_delete:
                self.current_state.pop(key, None)
            self.current_state.update(delta.to_insert)
        return Outcome(
            rejected=context.rejected is not None,
            soft_failed=synapse_event.internal_metadata.is_soft_failed(),
            state_after=dict(self.groups[context.state_group]),
        )
