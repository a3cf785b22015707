"""Large state resolutions in other processes, so one room's expensive resolution holds up
neither the worker's event loop nor other rooms' processing.

A worker's room threads share one interpreter: a thread running a long, CPU-bound resolution
holds the GIL most of the time, and every other thread — the event loop included — waits for it
in turn. So a resolution whose conflicted state is large is shipped, with the events it can
read (the state sets' events and their auth chains), to a small process pool; the room's thread
waits for the answer without holding the GIL. Small resolutions, the common case, stay inline:
shipping costs more than they do.

The answer is the same either way: the same pure ``resolve_state`` over the same events.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pipeline.matrix.events import Event, EventFetcher, StateKey, StateMap
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.room.batch import Resolver

# Conflicted keys from which a resolution goes to the pool.
OFFLOAD_CONFLICTED = 64


def conflicted_count(state_sets: Sequence[StateMap]) -> int:
    keys: set[StateKey] = set()
    for s in state_sets:
        keys.update(s)
    first = state_sets[0] if state_sets else {}
    return sum(1 for k in keys if any(s.get(k) != first.get(k) for s in state_sets))


def _closure(state_sets: Sequence[StateMap], fetch: EventFetcher) -> dict[str, Event] | None:
    """Every event of the state sets and their auth chains; None when one is not known here."""
    todo = [eid for s in state_sets for eid in s.values()]
    events: dict[str, Event] = {}
    while todo:
        eid = todo.pop()
        if eid in events:
            continue
        ev = fetch(eid)
        if ev is None:
            return None
        events[eid] = ev
        todo.extend(a for a in ev.auth_event_ids if a not in events)
    return events


def _resolve_elsewhere(
    version: str,
    state_sets: list[list[list[str]]],
    pdus: dict[str, dict[str, Any]],
    rejected: list[str],
    burn_s: float,
) -> list[list[str]]:
    rv = room_version(version)
    events = {eid: Event.from_trusted(pdu, rv, eid) for eid, pdu in pdus.items()}
    sets = [{(t, k): e for t, k, e in s} for s in state_sets]
    if burn_s:
        _burn(burn_s)
    rejected_ids = frozenset(rejected)
    resolved = resolve_state(rv, sets, events.get, is_rejected=rejected_ids.__contains__)
    return [[t, k, e] for (t, k), e in resolved.items()]


def _burn(seconds: float) -> None:
    """CPU, not sleep: what an expensive resolution does (see ROOMSTREAM_DEBUG_SLOW_ROOM)."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        sum(range(1000))


class ResolvePool:
    def __init__(self, processes: int = 1) -> None:
        # spawn: the children start clean, not as copies of a running faust worker.
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))

    def resolve(
        self,
        version: str,
        state_sets: Sequence[StateMap],
        fetch: EventFetcher,
        is_rejected: Callable[[str], bool],
        *,
        burn_s: float = 0.0,
    ) -> dict[StateKey, str] | None:
        """Resolve in the pool; None when the events are not all here (resolve inline then,
        which raises the precise error)."""
        events = _closure(state_sets, fetch)
        if events is None:
            return None
        future = self.pool.submit(
            _resolve_elsewhere,
            version,
            [[[t, k, e] for (t, k), e in s.items()] for s in state_sets],
            {eid: dict(ev.pdu) for eid, ev in events.items()},
            [eid for eid in events if is_rejected(eid)],
            burn_s,
        )
        return {(t, k): e for t, k, e in future.result()}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def pooled_resolver(
    pool: ResolvePool, *, slow_room: str | None = None, slow_s: float = 0.0
) -> Resolver:
    """A processor's resolver: large resolutions in ``pool``, the rest inline.

    ``slow_room`` (ROOMSTREAM_DEBUG_SLOW_ROOM, for the isolation test and benchmark) makes every
    resolution of that room cost ``slow_s`` more seconds of CPU, spent where a large resolution
    runs: in the pool.
    """

    def resolve(
        room_id: str,
        rv: RoomVersion,
        state_sets: Sequence[StateMap],
        fetch: EventFetcher,
        is_rejected: Callable[[str], bool],
    ) -> dict[StateKey, str]:
        burn = slow_s if room_id == slow_room else 0.0
        if burn or conflicted_count(state_sets) >= OFFLOAD_CONFLICTED:
            resolved = pool.resolve(rv.identifier, state_sets, fetch, is_rejected, burn_s=burn)
            if resolved is not None:
                return resolved
        return resolve_state(rv, state_sets, fetch, is_rejected=is_rejected)

    return resolve
