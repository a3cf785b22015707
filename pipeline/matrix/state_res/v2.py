"""State resolution v2 (room versions 2–11) and v2.1 (room version 12, MSC4297).

The spec's algorithm (rooms/v2, "State resolution"):

1. Power events of the full conflicted set, with the events of their auth chains that are in
   the full conflicted set, sorted in the reverse topological power ordering.
2. Iterative auth checks over them, starting from the unconflicted state map (v2.1: from an
   empty state map).
3. The remaining events of the full conflicted set, in the mainline ordering based on the
   power levels of that partially resolved state.
4. Iterative auth checks over them, on top of the partially resolved state.
5. The unconflicted state map laid over the result.

v2.1 differs only by a flag: the starting map of step 2, and the conflicted state subgraph
that joins the full conflicted set.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from pipeline.matrix.auth import (
    auth_types_for_event,
    check_auth_rules,
    is_power_event,
    signature_checked_on_receipt,
)
from pipeline.matrix.errors import EventRejected, MissingEvents
from pipeline.matrix.events import Event, StateKey, StateMap
from pipeline.matrix.explain import REJECTED_BEFORE, Recorder
from pipeline.matrix.power_levels import CREATE_KEY, POWER_LEVELS_KEY
from pipeline.matrix.room_versions import RoomVersion, StateResAlgorithm
from pipeline.matrix.state_res._common import (
    AuthChainIds,
    EventLoader,
    implicit_create_event_id,
    sender_power_level,
    split_conflicts,
    walk_auth_chains,
)


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    loader: EventLoader,
    auth_chain_ids: AuthChainIds | None,
    is_rejected: Callable[[str], bool] | None,
    *,
    recorder: Recorder | None = None,
) -> dict[StateKey, str]:
    """The resolution of ``state_sets`` by state resolution v2, or v2.1 for room version 12.

    ``room_version`` picks the algorithm and the state keys the iterative auth checks read;
    the events keep their own version's rules (they differ only where a second create event
    named another version, docs/synapse-parity.md). ``is_rejected`` None: no event counts as
    rejected. ``recorder`` is told the conflicted keys, both orderings, each iterative auth
    check and the result (``pipeline.matrix.explain``)."""
    v2_1 = room_version.state_res is StateResAlgorithm.V2_1
    unconflicted, conflicted = split_conflicts(state_sets)
    if not conflicted:
        if recorder is not None:
            recorder.note("resolution", state_sets=len(state_sets), conflicted={}, resolved={})
        return unconflicted

    conflicted_ids: set[str] = set()
    for ids in conflicted.values():
        conflicted_ids.update(ids)
    # Full conflicted set: "the union of the conflicted state set and the auth difference"
    # (v2.1: "... the conflicted state subgraph, and the auth difference").
    full = conflicted_ids | auth_difference(
        state_sets, unconflicted, conflicted.keys(), loader, auth_chain_ids
    )
    if v2_1:
        full |= conflicted_state_subgraph(loader, conflicted_ids)
    events = loader.get_all(full, "in the full conflicted set of a state resolution")
    if recorder is not None:
        recorder.note(
            "resolution",
            state_sets=len(state_sets),
            conflicted={k: sorted(v) for k, v in conflicted.items()},
            full=sorted(full),
            algorithm="v2.1" if v2_1 else "v2",
            room_version=room_version.identifier,
        )

    # 1. Power events and their auth chains within the full conflicted set, sorted.
    power_ids = [e for e, event in events.items() if is_power_event(event)]
    sorted_power = reverse_topological_power_order(loader, power_ids, full, recorder)
    # 2. "starting from the unconflicted state map" (v2.1: "starting from an empty state map").
    start: dict[StateKey, str] = {} if v2_1 else dict(unconflicted)
    partial = iterative_auth_checks(
        loader,
        sorted_power,
        start,
        is_rejected,
        room_version=room_version,
        recorder=recorder,
        step="power",
    )
    # 3. "all remaining events that weren't picked in step 1", in mainline ordering.
    picked = set(sorted_power)
    remaining = [e for e in full if e not in picked]
    sorted_remaining = mainline_order(loader, remaining, partial.get(POWER_LEVELS_KEY), recorder)
    # 4. Iterative auth checks on the partially resolved state.
    resolved = iterative_auth_checks(
        loader,
        sorted_remaining,
        partial,
        is_rejected,
        room_version=room_version,
        recorder=recorder,
        step="mainline",
    )
    # 5. "replacing any event with the event with the same key from the unconflicted state map".
    resolved.update(unconflicted)
    if recorder is not None:
        recorder.note("resolved", resolved={k: resolved.get(k) for k in conflicted})
    return resolved


def auth_difference(
    state_sets: Sequence[StateMap],
    unconflicted: StateMap,
    conflicted_keys: Collection[StateKey],
    loader: EventLoader,
    auth_chain_ids: AuthChainIds | None,
) -> set[str]:
    """∪ C_i − ∩ C_i, where C_i is the events of state set S_i together with their auth chains.

    The spec defines C_i as "the full auth chain of S_i", the union of the auth chains of its
    events, and an event's auth chain does not hold the event itself. Synapse counts the state
    set's own events in C_i too (its auth difference walks start at the events, for persisted
    and in-flight events alike), and Roomstream does what Synapse does: the two differ when an
    event of one state set is in the auth chain of another set's events only, which by the
    spec's words puts it in the auth difference and for Synapse does not. docs/synapse-parity.md
    has the example.

    Each C_i is the unconflicted state and its auth chain (the same for every set, so never part
    of the difference) plus the set's conflicted entries and their auth chains. Only the latter
    differs between the sets, and whatever lies behind an event of the common part is in it
    too, so the walks stop there.
    """
    unconflicted_ids = set(unconflicted.values())
    per_set_starts = [[state[k] for k in conflicted_keys if k in state] for state in state_sets]
    if auth_chain_ids is not None:
        common = unconflicted_ids | auth_chain_ids(unconflicted_ids)
        per_set = [(set(ids) | auth_chain_ids(ids)) - common for ids in per_set_starts]
        union: set[str] = set().union(*per_set)
        return union - per_set[0].intersection(*per_set[1:])
    common = unconflicted_ids | walk_auth_chains(loader, unconflicted_ids)
    return _walked_auth_difference(loader, per_set_starts, common)


def _walked_auth_difference(
    loader: EventLoader, per_set_starts: Sequence[Sequence[str]], common: Collection[str]
) -> set[str]:
    """The auth difference of the sets' conflicted entries, outside ``common``, in one walk.

    Rather than one walk per state set, every conflicted entry and every event behind one gets
    the bit mask of the sets that hold it: the sets that have it as an entry or reach it over
    auth_events edges. Masks flow from each event to its auth events, an event's mask being
    final once every event citing it (within the walk) has passed its mask on. An event is in
    the difference when some but not all sets hold it. ``common`` must be closed under
    auth_events.
    """
    all_sets = (1 << len(per_set_starts)) - 1
    start_mask: dict[str, int] = {}
    for i, ids in enumerate(per_set_starts):
        for event_id in ids:
            if event_id not in common:
                start_mask[event_id] = start_mask.get(event_id, 0) | (1 << i)

    # The part of the auth DAG behind the conflicted entries, outside the common auth chain.
    # Edges as tuples: most events' auth events all lie in ``common``, and the shared empty
    # tuple is no new object for the cyclic garbage collector. Tens of thousands of lists kept
    # through a big resolution set off a full collection of the process's whole heap, which
    # cost a third of the time of resolving 10,000 conflicting memberships.
    auth_of: dict[str, tuple[str, ...]] = {}
    cited: dict[str, int] = {}
    missing: set[str] = set()
    todo = list(start_mask)
    cached = loader.fetched.get
    while todo:
        event_id = todo.pop()
        if event_id in auth_of or event_id in missing:
            continue
        event = cached(event_id)
        if event is None:
            try:
                event = loader.get(event_id)
            except MissingEvents:
                missing.add(event_id)
                continue
        edges = tuple(a for a in event.auth_event_ids if a not in common)
        auth_of[event_id] = edges
        for auth_id in edges:
            cited[auth_id] = cited.get(auth_id, 0) + 1
            if auth_id not in auth_of:
                todo.append(auth_id)

    if missing:
        raise MissingEvents(missing, "needed to walk auth chains for state resolution")

    # Kahn's algorithm from the newest events (cited by none) towards the oldest.
    held: dict[str, int] = {}
    ready = [e for e in auth_of if e not in cited]
    done = 0
    while ready:
        event_id = ready.pop()
        done += 1
        passed_on = held.get(event_id, 0) | start_mask.get(event_id, 0)
        for auth_id in auth_of[event_id]:
            held[auth_id] = held.get(auth_id, 0) | passed_on
            cited[auth_id] -= 1
            if cited[auth_id] == 0:
                ready.append(auth_id)
    if done < len(auth_of):
        # A cycle of auth_events (only forgeable where event IDs are not hashes): the masks
        # cannot settle, so walk each set's chain on its own.
        per_set = [
            walk_auth_chains(loader, ids, stop=common) | (set(ids) - set(common))
            for ids in per_set_starts
        ]
        return set().union(*per_set) - per_set[0].intersection(*per_set[1:])
    return {e for e in auth_of if held.get(e, 0) | start_mask.get(e, 0) != all_sets}


def conflicted_state_subgraph(loader: EventLoader, conflicted_ids: Collection[str]) -> set[str]:
    """v2.1: the events on auth_events paths between two events of the conflicted state set.

    An event lies on such a path when it is in the auth chain of a conflicted event and a
    conflicted event is in its own auth chain; a conflicted event is an endpoint of one when
    another conflicted event is in its auth chain or has it in its own.
    """
    # Everything behind a conflicted event, with its auth edges.
    auth_of: dict[str, tuple[str, ...]] = {}
    todo = list(conflicted_ids)
    while todo:
        event_id = todo.pop()
        if event_id in auth_of:
            continue
        event = loader.get(event_id, "in the auth chain of a conflicted state event")
        auth_of[event_id] = event.auth_event_ids
        todo.extend(a for a in event.auth_event_ids if a not in auth_of)
    behind_conflicted: set[str] = set()
    for event_id in conflicted_ids:
        behind_conflicted.update(auth_of[event_id])
    behind_conflicted = _closure(behind_conflicted, auth_of)

    # Walk the edges backwards from the conflicted events: who has one in its auth chain.
    cited_by: dict[str, list[str]] = {}
    for event_id, auth_ids in auth_of.items():
        for auth_id in auth_ids:
            cited_by.setdefault(auth_id, []).append(event_id)
    ahead_of_conflicted: set[str] = set()
    todo = [c for e in conflicted_ids for c in cited_by.get(e, ())]
    while todo:
        event_id = todo.pop()
        if event_id not in ahead_of_conflicted:
            ahead_of_conflicted.add(event_id)
            todo.extend(cited_by.get(event_id, ()))
    on_paths = behind_conflicted & ahead_of_conflicted
    # The endpoints: conflicted events with another conflicted event behind or ahead of them.
    on_paths.update(c for c in conflicted_ids if c in behind_conflicted or c in ahead_of_conflicted)
    return on_paths


def _closure(start: set[str], auth_of: dict[str, tuple[str, ...]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        event_id = todo.pop()
        if event_id not in seen:
            seen.add(event_id)
            todo.extend(auth_of.get(event_id, ()))
    return seen


def reverse_topological_power_order(
    loader: EventLoader,
    power_ids: Iterable[str],
    full: Collection[str],
    recorder: Recorder | None = None,
) -> list[str]:
    """The power events and their auth chains within ``full``, earliest first.

    Kahn's algorithm over the auth_events DAG, taking at each step the smallest candidate:
    "x's sender has greater power level than y's sender ... or the senders have the same power
    level, but x's origin_server_ts is less ... or ... x's event_id is less".
    """
    graph: dict[str, list[str]] = {}
    todo = list(power_ids)
    while todo:
        event_id = todo.pop()
        if event_id in graph:
            continue
        event = loader.get(event_id)
        edges = [a for a in dict.fromkeys(event.auth_event_ids) if a in full]
        graph[event_id] = edges
        todo.extend(a for a in edges if a not in graph)

    outdegree = {event_id: len(edges) for event_id, edges in graph.items()}
    cited_by: dict[str, list[str]] = {}
    for event_id, edges in graph.items():
        for auth_id in edges:
            cited_by.setdefault(auth_id, []).append(event_id)

    def tie_break(event_id: str) -> tuple[float, int, str]:
        event = loader.get(event_id)
        return (-sender_power_level(loader, event), event.origin_server_ts, event_id)

    heap = [tie_break(e) for e, n in outdegree.items() if n == 0]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        event_id = heapq.heappop(heap)[2]
        ordered.append(event_id)
        for parent in cited_by.get(event_id, ()):
            outdegree[parent] -= 1
            if outdegree[parent] == 0:
                heapq.heappush(heap, tie_break(parent))
    if recorder is not None:
        recorder.note(
            "power_order",
            order=[[e, -power, ts] for e in ordered for power, ts, _ in [tie_break(e)]],
            auth_edges={e: graph[e] for e in ordered},
        )
    return ordered


def iterative_auth_checks(
    loader: EventLoader,
    event_ids: Iterable[str],
    state: dict[StateKey, str],
    is_rejected: Callable[[str], bool] | None,
    *,
    room_version: RoomVersion | None = None,
    recorder: Recorder | None = None,
    step: str = "",
) -> dict[StateKey, str]:
    """Apply each state event to ``state`` (in place, and returned) if the auth rules allow it.

    "If a (event_type, state_key) key that is required for checking the authorisation rules is
    not present in the state, then the appropriate state event from the event's auth_events is
    used if the auth event is not rejected." Rejected events of the state are not used either.
    The keys read from ``state`` are those ``room_version`` (default: each event's own)
    selects; the rules are each event's own version's.

    An event that was itself rejected is never admitted, whatever the rules say of it on the
    partially resolved state. The spec would check it again like any other ("handled as usual
    by the algorithm"), so an event rejected against the state it arrived with could enter the
    room's state through a later resolution; Synapse keeps every previously rejected event out
    (its ``_iterative_auth_checks``), and Roomstream does the same so that the servers of a
    room resolve to one state. docs/synapse-parity.md has the example. ``is_rejected`` None:
    no event counts as rejected.
    """
    cached = loader.fetched.get
    # Tens of thousands of events in a big room's merge, each with a handful of auth events and
    # state entries: without ``is_rejected`` the test is skipped rather than called each time.
    for event_id in event_ids:
        event = cached(event_id) or loader.get(event_id)
        if event.state_key is None:
            continue
        if is_rejected is not None and is_rejected(event_id):
            if recorder is not None:
                _note_check(
                    recorder,
                    step,
                    event,
                    {},
                    rule=REJECTED_BEFORE,
                    reason=f"{event_id} was rejected before: a previously rejected event is "
                    "never re-admitted (as Synapse; docs/synapse-parity.md)",
                )
            continue
        auth_state: dict[StateKey, Event] = {}
        for auth_id in event.auth_event_ids:
            auth_event = cached(auth_id) or loader.auth_event(auth_id, event_id)
            if auth_event.state_key is not None and (
                is_rejected is None or not is_rejected(auth_id)
            ):
                auth_state[(auth_event.type, auth_event.state_key)] = auth_event
        create_id = implicit_create_event_id(event)
        if create_id is not None and (is_rejected is None or not is_rejected(create_id)):
            # v12: the create event is no longer listed in auth_events; the room ID names it
            # (and, like any auth event, it is not used when rejected).
            auth_state[CREATE_KEY] = loader.get(create_id, f"create event of {event_id}")
        for key in auth_types_for_event(event, room_version):
            state_id = state.get(key)
            if state_id is not None and (is_rejected is None or not is_rejected(state_id)):
                auth_state[key] = cached(state_id) or loader.get(
                    state_id, "in the partially resolved state"
                )
        try:
            check_auth_rules(event, auth_state, server_signature_ok=signature_checked_on_receipt)
        except EventRejected as e:
            if recorder is not None:
                _note_check(recorder, step, event, auth_state, rule=e.rule, reason=e.reason)
            continue
        state[event.state_tuple] = event_id
        if recorder is not None:
            _note_check(recorder, step, event, auth_state, admitted=True)
    return state


def _note_check(
    recorder: Recorder,
    step: str,
    event: Event,
    auth_state: Mapping[StateKey, Event],
    *,
    admitted: bool = False,
    rule: str = "",
    reason: str = "",
) -> None:
    """Record one iterative auth check for an explanation: admitted, or the rule that failed."""
    data: dict[str, object] = {
        "step": step,
        "event": event.event_id,
        "key": event.state_tuple,
        "admitted": admitted,
        "auth_events": {k: v.event_id for k, v in auth_state.items()},
    }
    if not admitted:
        data["rule"], data["reason"] = rule, reason
    recorder.note("auth_check", **data)


def mainline_order(
    loader: EventLoader,
    event_ids: Iterable[str],
    power_levels_id: str | None,
    recorder: Recorder | None = None,
) -> list[str]:
    """``event_ids`` in the mainline ordering based on the power levels ``power_levels_id``.

    "x < y if the mainline position of x is greater than the mainline position of y ... or the
    same position but x's origin_server_ts is less ... or ... x's event_id is less." Positions
    are stored as depths here (1 for the oldest mainline event, 0 for "∞", none found), so
    sorting ascending by depth is that order.
    """
    mainline: list[str] = []
    current = power_levels_id
    while current is not None:
        mainline.append(current)
        current = _cited_power_levels(loader, loader.get(current))
    depth = {event_id: i for i, event_id in enumerate(reversed(mainline), start=1)}
    # Depth found behind each power levels event walked so far, so walks share their tails.
    found: dict[str, int] = {}

    def position(event: Event) -> int:
        walked: list[str] = []
        # Start from e_1, the power levels cited by the event: e_0 itself does not count.
        current = _cited_power_levels(loader, event)
        while current is not None and current not in depth and current not in found:
            walked.append(current)
            current = _cited_power_levels(loader, loader.get(current))
        result = 0 if current is None else depth.get(current) or found[current]
        for event_id in walked:
            found[event_id] = result
        return result

    keys: dict[str, tuple[int, int, str]] = {}
    for event_id in event_ids:
        event = loader.get(event_id)
        keys[event_id] = (position(event), event.origin_server_ts, event_id)
    ordered = sorted(keys, key=keys.__getitem__)
    if recorder is not None:
        recorder.note(
            "mainline_order",
            mainline=list(reversed(mainline)),
            order=[[e, keys[e][0], keys[e][1]] for e in ordered],
        )
    return ordered


def _cited_power_levels(loader: EventLoader, event: Event) -> str | None:
    """The m.room.power_levels event among ``event``'s auth_events, if any."""
    cached = loader.fetched.get
    for auth_id in event.auth_event_ids:
        auth_event = cached(auth_id) or loader.auth_event(auth_id, event.event_id)
        if auth_event.type == "m.room.power_levels" and auth_event.state_key == "":
            return auth_id
    return None
