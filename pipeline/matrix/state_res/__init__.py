"""State resolution: the state of a room where several states meet.

The room state before an event is the resolution of the states after its prev_events; this
package computes that resolution with the algorithm of the room's version: v1 for room
version 1, v2 for versions 2–11, v2.1 for version 12 (MSC4297).

    resolve_state(room_version, state_sets, fetch_event, *, auth_chain_ids=None,
                  is_rejected=None) -> dict[StateKey, str]

Pure and synchronous: events come from ``fetch_event``, and an event it does not know raises
``MissingEvents`` naming it (park and retry; never a rejection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pipeline.matrix.events import EventFetcher, StateKey, StateMap
from pipeline.matrix.explain import Recorder
from pipeline.matrix.room_versions import RoomVersion, StateResAlgorithm
from pipeline.matrix.state_res._common import EventLoader
from pipeline.matrix.state_res.v1 import resolve_v1
from pipeline.matrix.state_res.v2 import resolve_v2

__all__ = ["resolve_state"]


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    fetch_event: EventFetcher,
    *,
    auth_chain_ids: Callable[[Iterable[str]], set[str]] | None = None,
    is_rejected: Callable[[str], bool] | None = None,
    recorder: Recorder | None = None,
) -> dict[StateKey, str]:
    """The resolved state of ``state_sets``: (type, state_key) -> event ID.

    ``room_version`` is the version the resolution runs by: its algorithm, and the state keys
    the auth checks of the resolution read. It is the room's, but where a second create event
    named another (docs/synapse-parity.md); the events keep their own version's rules.

    ``auth_chain_ids``, when given, returns the union of the auth chains of the events it is
    given (not the events themselves); a store with an auth chain index makes this fast.
    Without it the auth chains are walked over auth_events through ``fetch_event``.
    ``is_rejected`` says whether an event was rejected; during the iterative auth checks (v2)
    rejected events are neither used as auth events nor admitted themselves (as Synapse does;
    see docs/synapse-parity.md). Without it no event counts as rejected.

    ``recorder``, when given, is told each step that decides (``pipeline.matrix.explain``).

    Raises MissingEvents when an event needed to decide is not known to ``fetch_event``.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    loader = EventLoader(fetch_event)
    if room_version.state_res is StateResAlgorithm.V1:
        resolved = resolve_v1(state_sets, loader, room_version)
        if recorder is not None:
            # v1's conflicts: keys the states give different events (a key only some states
            # have is not one).
            candidates: dict[StateKey, set[str]] = {}
            for state in state_sets:
                for key, event_id in state.items():
                    candidates.setdefault(key, set()).add(event_id)
            recorder.note(
                "resolved_v1",
                state_sets=len(state_sets),
                conflicted={k: sorted(v) for k, v in candidates.items() if len(v) > 1},
                resolved={k: resolved.get(k) for k, v in candidates.items() if len(v) > 1},
            )
        return resolved
    return resolve_v2(
        room_version,
        state_sets,
        loader,
        auth_chain_ids,
        is_rejected,
        recorder=recorder,
    )
