"""State resolution v1 (room version 1).

The spec's passes (rooms/v1, "State resolution"), R being the result so far:

- R starts as the union of the states, without the conflicting events. A conflict is two
  states with different event IDs for one (event_type, state_key); a key only some states
  have is not a conflict.
- Conflicts between m.room.power_levels events, then m.room.join_rules, then m.room.member:
  the candidates sorted by ascending depth then descending sha1(event_id); the first is taken,
  and each following one replaces it while the auth rules allow it in R; the first one that
  is not allowed stops the pass.
- Every other conflict: the event with the highest depth and lowest sha1(event_id) that
  passes the auth rules in R.

Each key of one pass is resolved against R as it stood when the pass began, so the result does
not depend on the order of the keys (as in Synapse).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from pipeline.matrix.auth import (
    auth_types_for_event,
    check_auth_rules,
    signature_checked_on_receipt,
)
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event, StateKey, StateMap
from pipeline.matrix.power_levels import POWER_LEVELS_KEY
from pipeline.matrix.room_versions import RoomVersion
from pipeline.matrix.state_res._common import EventLoader


def resolve_v1(
    state_sets: Sequence[StateMap], loader: EventLoader, room_version: RoomVersion | None = None
) -> dict[StateKey, str]:
    """The resolution of ``state_sets`` by the room version 1 algorithm.

    A candidate of a power levels, join rules or membership conflict is checked against the
    state keys that ``room_version`` (default: each event's own) selects for any candidate of
    its key, as Synapse (``_resolve_auth_events``) collects them; its rules are its own
    version's. The two differ only where a second create event named room version 1 in a
    room of another version (docs/synapse-parity.md): the membership of the user who
    authorised a restricted join is then read only when another candidate needs it.
    """
    resolved: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif key not in resolved:
                resolved[key] = event_id
            elif resolved[key] != event_id:
                conflicted[key] = {resolved.pop(key), event_id}
    if not conflicted:
        return resolved

    events = loader.get_all(
        {e for ids in conflicted.values() for e in ids}, "conflicting in a state resolution"
    )

    def candidates(key: StateKey) -> list[Event]:
        return [events[e] for e in conflicted[key]]

    # The power levels, then join rules, then membership passes.
    passes = [
        [k for k in conflicted if k == POWER_LEVELS_KEY],
        [k for k in conflicted if k[0] == "m.room.join_rules"],
        [k for k in conflicted if k[0] == "m.room.member"],
    ]
    done: set[StateKey] = set()
    for keys in passes:
        chosen = {
            k: _resolve_auth_conflict(candidates(k), resolved, loader, room_version) for k in keys
        }
        resolved.update(chosen)
        done.update(keys)
    others = {
        k: _resolve_other_conflict(candidates(k), resolved, loader)
        for k in conflicted
        if k not in done
    }
    resolved.update(others)
    return resolved


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _resolve_auth_conflict(
    candidates: list[Event],
    state: Mapping[StateKey, str],
    loader: EventLoader,
    room_version: RoomVersion | None,
) -> str:
    """One power levels, join rules or membership conflict.

    "Sort the list by ascending depth then descending sha1(event_id). Add the first event in
    the list to R. For each subsequent event ... If it would not be allowed, stop".
    """
    ordered = sorted(candidates, key=lambda e: _sha1(e.event_id), reverse=True)
    ordered.sort(key=lambda e: e.depth)
    keys: set[StateKey] = set()
    for candidate in candidates:
        keys |= auth_types_for_event(candidate, room_version)
    r = dict(state)
    chosen = ordered[0]
    for event in ordered[1:]:
        r[chosen.state_tuple] = chosen.event_id
        if not _allowed(event, r, loader, keys):
            break
        chosen = event
    return chosen.event_id


def _resolve_other_conflict(
    candidates: list[Event], state: Mapping[StateKey, str], loader: EventLoader
) -> str:
    """Any other conflict: "pick the event with the highest depth and lowest sha1(event_id)
    that passes authentication in R"."""
    ordered = sorted(candidates, key=lambda e: (-e.depth, _sha1(e.event_id)))
    for event in ordered:
        if _allowed(event, state, loader):
            return event.event_id
    # The spec does not say what happens when none passes; like Synapse, keep the one with the
    # lowest depth rather than dropping the key.
    return ordered[-1].event_id


def _allowed(
    event: Event,
    state: Mapping[StateKey, str],
    loader: EventLoader,
    keys: Iterable[StateKey] | None = None,
) -> bool:
    """Whether the auth rules allow ``event`` in a room whose state is ``state``, read at
    ``keys`` (default: the keys its rules read)."""
    auth_state: dict[StateKey, Event] = {}
    for key in auth_types_for_event(event) if keys is None else keys:
        event_id = state.get(key)
        if event_id is not None:
            auth_state[key] = loader.get(event_id, "in the state being resolved")
    try:
        check_auth_rules(event, auth_state, server_signature_ok=signature_checked_on_receipt)
    except EventRejected:
        return False
    return True
