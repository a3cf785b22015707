"""Large state resolutions in other processes, so one room's expensive resolution holds up
neither the worker's event loop nor other rooms' processing.

A worker's room threads share one interpreter: a thread running a long, CPU-bound resolution
holds the GIL most of the time, and every other thread — the event loop included — waits for it
in turn. So a resolution whose conflicted state is large is shipped, with the events it can
read (the state sets' events and their auth chains), to a small process pool; the room's thread
waits for the answer without holding the GIL. Small resolutions, the common case, stay inline:
shipping costs more than they do.

The answer is the same either way: the same pure ``resolve_state`` over the same events.

A pool that fails (a child killed, a broken pipe, an event that does not pickle) is not the
event's fault: the resolution is done inline instead (the same answer, so nothing is
dead-lettered), and the pool is started afresh. After ``MAX_FAILURES`` failures in a row the
worker is told (``on_broken``) and stops with the reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pipeline import metrics
from pipeline.matrix.events import Event, EventFetcher, StateKey, StateMap
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.room.batch import Resolver
from pipeline.worker.faults import WorkerStopped

log = logging.getLogger("roomstream.worker")

# Conflicted keys from which a resolution goes to the pool.
OFFLOAD_CONFLICTED = 64
# Pool failures in a row after which the worker stops.
MAX_FAILURES = 3


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
        self.processes = processes
        self.pool = self._start()
        self.failures = 0  # in a row
        self._lock = threading.Lock()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the children start clean, not as copies of a running faust worker.
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))

    def failed(self, error: Exception) -> int:
        """Note a failure of the pool and start a fresh one; the failures in a row so far."""
        with self._lock:
            self.failures += 1
            broken, self.pool = self.pool, self._start()
        broken.shutdown(wait=False, cancel_futures=True)
        metrics.WORKER_RETRIES.labels("resolve_pool").inc()
        log.warning(
            "the state resolution pool failed (%s: %s); resolving inline, pool restarted",
            type(error).__name__,
            error,
        )
        return self.failures

    def succeeded(self) -> None:
        self.failures = 0

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
    pool: ResolvePool,
    *,
    slow_room: str | None = None,
    slow_s: float = 0.0,
    on_broken: Callable[[WorkerStopped], None] | None = None,
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
            try:
                resolved = pool.resolve(rv.identifier, state_sets, fetch, is_rejected, burn_s=burn)
            except Exception as e:  # the pool's fault, not the event's: resolve inline
                if pool.failed(e) >= MAX_FAILURES and on_broken is not None:
                    on_broken(
                        WorkerStopped(
                            "resolve_pool",
                            f"the state resolution process pool failed {pool.failures} times "
                            f"in a row, last with {type(e).__name__}: {e}; the worker stops "
                            "(check the machine's memory and process limits)",
                        )
                    )
            else:
                pool.succeeded()
                if resolved is not None:
                    return resolved
        return resolve_state(rv, state_sets, fetch, is_rejected=is_rejected)

    return resolve
