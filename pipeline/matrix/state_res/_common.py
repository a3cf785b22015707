"""What state resolution v1 and v2 share: loading events, auth chains, the sender's power.

Everything here works for one resolution at a time: ``EventLoader`` caches the events it
fetched for the length of one ``resolve_state`` call, so an event read by several steps is
fetched once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from pipeline.matrix.errors import MissingEvents
from pipeline.matrix.events import Event, EventFetcher, StateKey, StateMap
from pipeline.matrix.power_levels import (
    PowerLevel,
    PowerLevels,
    create_event_id_for_room,
    user_level,
)

AuthChainIds = Callable[[Iterable[str]], set[str]]
"""The union of the auth chains of some events (the events themselves not included)."""


_NO_POWER_LEVELS = PowerLevels(exists=False)


class EventLoader:
    """Fetches events through the caller's fetcher, once each, and names what is missing."""

    __slots__ = ("_cache", "_fetch", "_levels")

    def __init__(self, fetch_event: EventFetcher) -> None:
        self._fetch = fetch_event
        self._cache: dict[str, Event] = {}
        self._levels: dict[str, PowerLevels] = {}

    def parsed_power_levels(self, power_levels: Event | None, reader: Event) -> PowerLevels:
        """The levels of a power levels event (or the defaults), parsed once per resolution."""
        if power_levels is None:
            return _NO_POWER_LEVELS
        levels = self._levels.get(power_levels.event_id)
        if levels is None:
            levels = PowerLevels.from_event(power_levels, reader.room_version)
            self._levels[power_levels.event_id] = levels
        return levels

    @property
    def fetched(self) -> Mapping[str, Event]:
        """The events fetched so far in this resolution (hot loops look here before ``get``)."""
        return self._cache

    def auth_event(self, auth_id: str, of: str) -> Event:
        """Auth event ``auth_id`` of event ``of``; as ``get``, the reason written only if missing
        (this runs for every auth event the resolution reads)."""
        event = self._cache.get(auth_id)
        return event if event is not None else self.get(auth_id, f"auth event of {of}")

    def get(self, event_id: str, why: str = "") -> Event:
        """The event; raises MissingEvents when the fetcher does not know it."""
        event = self._cache.get(event_id)
        if event is None:
            event = self._fetch(event_id)
            if event is None:
                raise MissingEvents({event_id}, why or "needed for state resolution")
            self._cache[event_id] = event
        return event

    def get_all(self, event_ids: Iterable[str], why: str) -> dict[str, Event]:
        """Every event asked for, or MissingEvents naming all the unknown ones at once."""
        found: dict[str, Event] = {}
        missing: set[str] = set()
        for event_id in event_ids:
            event = self._cache.get(event_id)
            if event is None:
                event = self._fetch(event_id)
                if event is None:
                    missing.add(event_id)
                    continue
                self._cache[event_id] = event
            found[event_id] = event
        if missing:
            raise MissingEvents(missing, why)
        return found


def walk_auth_chains(
    loader: EventLoader, start_ids: Iterable[str], stop: Collection[str] = ()
) -> set[str]:
    """The union of the auth chains of ``start_ids``: every event reachable over auth_events.

    The start events are not included unless one reaches another. Events in ``stop`` are
    neither entered nor returned: ``stop`` must be closed under auth_events (an auth chain), so
    anything behind one of its events is in it too. Raises MissingEvents naming every event of
    the walk that is not known.
    """
    seen: set[str] = set()
    missing: set[str] = set()
    todo: list[str] = []
    # The loop runs once per event of a room's auth chain: locals over attribute lookups.
    cached = loader.fetched.get
    for start in set(start_ids):
        if start in stop:
            continue
        event = cached(start) or _load_or_note(loader, start, missing)
        if event is not None:
            todo.extend(event.auth_event_ids)
    pop, extend, add = todo.pop, todo.extend, seen.add
    while todo:
        event_id = pop()
        if event_id in seen or event_id in stop:
            continue
        add(event_id)
        event = cached(event_id) or _load_or_note(loader, event_id, missing)
        if event is not None:
            extend(event.auth_event_ids)
    if missing:
        raise MissingEvents(missing, "needed to walk auth chains for state resolution")
    return seen


def _load_or_note(loader: EventLoader, event_id: str, missing: set[str]) -> Event | None:
    try:
        return loader.get(event_id)
    except MissingEvents:
        missing.add(event_id)
        return None


def split_conflicts(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """The unconflicted state map and the conflicted state set (v2's definitions).

    v2: a key belongs to the unconflicted state map only when it is "present in every S_i with
    the same value"; a key missing from some state map is conflicted.
    """
    first, rest = state_sets[0], state_sets[1:]
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    # Most keys of large states are unconflicted: decide those with one lookup per other set.
    for key, value in first.items():
        for state in rest:
            if state.get(key) != value:
                conflicted[key] = {s[key] for s in state_sets if key in s}
                break
        else:
            unconflicted[key] = value
    for state in rest:
        for key in state.keys() - first.keys():
            if key not in conflicted:
                conflicted[key] = {s[key] for s in state_sets if key in s}
    return unconflicted, conflicted


def implicit_create_event_id(event: Event) -> str | None:
    """v12: the create event an event names through its room ID, not its auth_events."""
    if not event.room_version.room_id_is_create_event_hash or event.type == "m.room.create":
        return None
    if not event.room_id.startswith("!"):
        return None
    return create_event_id_for_room(event.room_id)


def sender_power_level(loader: EventLoader, event: Event) -> PowerLevel:
    """The power level of ``event``'s sender "when looking at their respective auth_events".

    The m.room.power_levels event among the event's auth events decides; without one the
    room's creator has 100 and everyone else 0; in room version 12 the creators have infinite
    power (MSC4289). The create event comes from the auth events, or in v12 from the room ID.

    A create event has no auth events, so its sender has power level 0, as Synapse
    (``_get_power_level_for_sender``) counts it: in a room with two create events (both in
    a resolution's full conflicted set) they sort after every power event of a sender with
    power, by their origin_server_ts (docs/synapse-parity.md).
    """
    power_levels: Event | None = None
    create: Event | None = None
    for auth_id in event.auth_event_ids:
        auth_event = loader.auth_event(auth_id, event.event_id)
        if auth_event.state_key != "":
            continue
        if auth_event.type == "m.room.power_levels":
            power_levels = auth_event
        elif auth_event.type == "m.room.create":
            create = auth_event
    implicit = implicit_create_event_id(event)
    if implicit is not None:
        create = loader.get(implicit, f"create event of {event.event_id}")
    return user_level(event.sender, loader.parsed_power_levels(power_levels, event), create)
