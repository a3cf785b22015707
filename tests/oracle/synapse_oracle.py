"""matrix-synapse's state resolution and auth rules, run on Roomstream's events.

Synapse is a test-only oracle here: the product never imports it. Its code is async over
Twisted Deferreds; with every event in memory nothing ever waits, so ``_run`` drives a
coroutine to completion synchronously and fails loudly if it would not.

Every event is handed to Synapse's v2 resolution as an in-flight event (its ``event_map``), so
Synapse itself computes the auth difference and, for v2.1, the conflicted state subgraph (its
code path for events not yet persisted); the store it is given holds nothing it must answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pipeline.matrix.events import Event, StateKey

with warnings.catch_warnings():
    # Twisted's web modules, which Synapse pulls in, warn about their own deprecations.
    warnings.simplefilter("ignore")
    # synapse.event_auth first: it and synapse.state import each other.
    import synapse.event_auth as synapse_auth
    from synapse.api.errors import AuthError, SynapseError
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS, StateResolutionVersions
    from synapse.api.room_versions import RoomVersion as SynapseRoomVersion
    from synapse.events import EventBase, make_event_from_dict
    from synapse.state import v1 as synapse_v1
    from synapse.state import v2 as synapse_v2
    from synapse.storage.databases.main.event_federation import StateDifference
    from synapse.util.duration import Duration
    from twisted.internet import defer
    from twisted.python.failure import Failure

T = TypeVar("T")


def synapse_room_version(identifier: str) -> SynapseRoomVersion:
    return KNOWN_ROOM_VERSIONS[identifier]


def to_synapse(event: Event, rejected_reason: str | None = None) -> EventBase:
    """Synapse's event built from the PDU ``event`` came from.

    Synapse derives the event ID itself (from the reference hash, or the ``event_id`` field
    in rooms v1/v2); a mismatch with ours would make every comparison meaningless, so it fails.
    """
    synapse_event = make_event_from_dict(
        dict(event.pdu),
        synapse_room_version(event.room_version.identifier),
        rejected_reason=rejected_reason,
    )
    if synapse_event.event_id != event.event_id:
        raise AssertionError(
            f"Synapse computes event ID {synapse_event.event_id} for our {event.event_id}"
        )
    return synapse_event


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of ``coroutine``, which must complete without waiting."""
    outcome: list[T | Failure] = []
    deferred: defer.Deferred[T] = defer.ensureDeferred(coroutine)
    deferred.addBoth(outcome.append)
    if not outcome:
        deferred.cancel()
        raise RuntimeError("Synapse's code waited on something an in-memory store never gives")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class _Clock:
    """Synapse yields to its reactor now and then; here there is nothing to yield to."""

    async def sleep(self, duration: Duration) -> None:
        return None


class InMemoryStore:
    """Synapse's ``StateResolutionStore`` over a dict of its events.

    ``get_auth_chain_difference`` answers for persisted events only; since every event is
    passed as in flight, it is always asked about empty sets (checked, so a change in Synapse
    that shifts work onto the store cannot go unnoticed).
    """

    def __init__(self, events: Mapping[str, EventBase]) -> None:
        self._events = events

    def get_events(
        self, event_ids: Collection[str], allow_rejected: bool = False, **_: Any
    ) -> defer.Deferred[dict[str, EventBase]]:
        return defer.succeed({e: self._events[e] for e in event_ids if e in self._events})

    def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> defer.Deferred[StateDifference]:
        if any(state_sets):
            raise AssertionError("Synapse asked the store about events it was handed in flight")
        subgraph: set[str] | None = set() if conflicted_state is not None else None
        return defer.succeed(StateDifference(auth_difference=set(), conflicted_subgraph=subgraph))


def resolve_with_synapse(
    room_id: str,
    room_version: SynapseRoomVersion,
    state_sets: list[dict[StateKey, str]],
    events: Mapping[str, EventBase],
) -> dict[StateKey, str]:
    """Synapse's resolution of ``state_sets`` (v1 or v2/v2.1 by the room version), reading the
    events from ``events``."""
    if room_version.state_res == StateResolutionVersions.V1:

        async def fetch(ids: Collection[str]) -> dict[str, EventBase]:
            return {e: events[e] for e in ids if e in events}

        return dict(
            _run(
                synapse_v1.resolve_events_with_store(room_id, room_version, state_sets, None, fetch)
            )
        )
    return dict(
        _run(
            synapse_v2.resolve_events_with_store(
                _Clock(),
                room_id,
                room_version,
                state_sets,
                # A copy: Synapse adds to the map it is given.
                dict(events),
                InMemoryStore(events),
            )
        )
    )


class SynapseRoom:
    """One room's events converted once, to resolve many state sets over them."""

    def __init__(
        self,
        room_id: str,
        room_version: str,
        events: Iterable[Event],
        rejected: Mapping[str, str] | None = None,
    ) -> None:
        rejected = rejected or {}
        self.room_id = room_id
        self.room_version = synapse_room_version(room_version)
        self.events: dict[str, EventBase] = {
            e.event_id: to_synapse(e, rejected.get(e.event_id)) for e in events
        }

    def resolve(self, state_sets: Sequence[Mapping[StateKey, str]]) -> dict[StateKey, str]:
        """Synapse's resolution of ``state_sets`` (v1 or v2/v2.1 by the room version)."""
        return resolve_with_synapse(
            self.room_id, self.room_version, [dict(s) for s in state_sets], self.events
        )


def synapse_allows_in_state(event: Event, auth_state: Mapping[StateKey, Event]) -> str | None:
    """Synapse's state-dependent auth rules for ``event`` against ``auth_state``.

    None when allowed, else Synapse's reason. Two more of Synapse's checks run first: the
    create event's own rules (among its state-independent ones: the whole check for that
    event), and ``validate_event_for_room_version``, where Synapse checks the authorising
    server's signature on a restricted join that the spec lists among the auth rules.
    """
    synapse_event = to_synapse(event)
    try:
        synapse_auth.validate_event_for_room_version(synapse_event)
        if event.type == "m.room.create":
            _run(
                synapse_auth.check_state_independent_auth_rules(
                    InMemoryStore({}),  # type: ignore[arg-type]
                    synapse_event,
                )
            )
        synapse_auth.check_state_dependent_auth_rules(
            synapse_event, [to_synapse(e) for e in auth_state.values()]
        )
    except (AuthError, SynapseError) as e:
        return str(e)
    return None


def synapse_allows_with_auth_events(
    event: Event, events: Mapping[str, Event], rejected: Collection[str] = ()
) -> str | None:
    """Synapse's full check of ``event`` against its own auth_events.

    ``validate_event_for_room_version`` (signatures present), the state-independent rules (the
    create event's own rules, the rules on the auth events), then the state-dependent ones over
    the auth events. None when allowed, else the reason.
    """
    converted = {
        eid: to_synapse(e, "rejected" if eid in rejected else None) for eid, e in events.items()
    }
    synapse_event = to_synapse(event)
    try:
        synapse_auth.validate_event_for_room_version(synapse_event)
        _run(
            synapse_auth.check_state_independent_auth_rules(
                InMemoryStore(converted),  # type: ignore[arg-type]
                synapse_event,
            )
        )
        auth_events = [converted[a] for a in synapse_event.auth_event_ids() if a in converted]
        synapse_auth.check_state_dependent_auth_rules(synapse_event, auth_events)
    except (AuthError, SynapseError) as e:
        return str(e)
    except RuntimeError as e:
        # Synapse's event format refuses a v12 event that lists the create event in its
        # auth_events (it is implied by the room ID); that is its rejection of the event.
        if "create event" in str(e):
            return str(e).splitlines()[0]
        raise
    return None
