"""The worker's life as an operator sees it: INFO lines for each step, a readiness flag, the
ownership fence, and the exit code.

Steps logged: started, joined the group (generation), partitions assigned or revoked, restoring
N records of the rooms table, restored, ready, stopping, stopped. ``is_ready()`` is true while the
worker has joined its group, restored its tables and processes its partitions; a health endpoint
reads it.

The fence: a worker whose process was paused (SIGSTOP, a VM freeze, a swap storm) for longer than
its group session may have lost its partitions to another worker, which has restored their rooms
and gone on. Were it to resume and store the room records it was about to store, they would land
after the new owner's and be restored later in their place. So the worker notes, many times a
second, that its loop is running (``tick``), and before it stores a room record or sends a chunk
it checks (``check_owner``) that it has not been stopped for more than ``pause_limit_s`` since;
if it has, it writes nothing more and stops (its inputs are unacked; the owner of their
partitions processes them). The fence starts with the loop's first tick: the process starting
(imports, connections, a large cluster's metadata), which can take longer than the limit on a
busy machine, is not a pause, and a worker restarted after a crash must not stop for it.

A system fault (``faults.WorkerStopped``) is recorded with ``fatal``: logged once with its reason,
counted, and the process exits non-zero with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from pipeline import metrics
from pipeline.worker.faults import WorkerStopped

__all__ = ["EXIT_STOPPED", "Lifecycle", "current", "is_ready"]

log = logging.getLogger("roomstream.worker")

EXIT_STOPPED = 3
"""The worker's exit code after a system fault (1 is Python's, for an unexpected crash)."""

# The process's worker, for is_ready(): one worker a process.
_current: list[Lifecycle] = []


def current() -> Lifecycle | None:
    """This process's worker's lifecycle, once a worker is built."""
    return _current[-1] if _current else None


def is_ready() -> bool:
    """Whether this process's worker owns its partitions, restored, and processes them."""
    return bool(_current) and _current[-1].ready


class Lifecycle:
    """Readiness, lifecycle lines, the ownership fence and the exit status of one worker."""

    def __init__(
        self,
        worker_id: str,
        *,
        pause_limit_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _current[:] = [self]
        self.worker_id = worker_id
        self.pause_limit_s = pause_limit_s
        self.clock = clock
        self.ready = False
        self.stopping = False
        self.fault: WorkerStopped | None = None
        self.generation: int | None = None
        # None until the loop's first tick: the fence starts there.
        self._last_tick: float | None = None
        self._restoring_since: float | None = None
        metrics.WORKER_READY.set(0)

    # ------------------------------------------------------------------ the fence

    def tick(self) -> None:
        """The loop runs: called every few tens of milliseconds."""
        now = self.clock()
        last, self._last_tick = self._last_tick, now
        if last is not None and now - last > self.pause_limit_s and self.fault is None:
            self._paused(now - last)

    def check_owner(self, what: str) -> None:
        """Raise WorkerStopped instead of ``what`` (a write) if the worker may no longer own
        its partitions: it stopped, or was paused for longer than the fence allows."""
        if self.fault is not None:
            raise self.fault
        if self._last_tick is not None:
            gap = self.clock() - self._last_tick
            if gap > self.pause_limit_s:
                self._paused(gap)
        if self.fault is not None:
            raise WorkerStopped(self.fault.reason, f"{what} not done: {self.fault}")

    def _paused(self, gap: float) -> None:
        self.fatal(
            WorkerStopped(
                "paused",
                f"the worker was paused for {gap:.1f} s, longer than {self.pause_limit_s:.1f} s "
                "(half its group session): another worker may own its rooms now, so it writes "
                "nothing more and stops; restart it",
            )
        )

    # ------------------------------------------------------------------ faults

    def fatal(self, fault: WorkerStopped) -> None:
        """Record a system fault: the worker stops and exits non-zero with it."""
        if self.fault is not None:
            return
        self.fault = fault
        self.set_ready(False)
        metrics.WORKER_STOPPED.labels(fault.reason).inc()
        log.critical("worker %s stops: %s", self.worker_id, fault)

    def exit_code(self) -> int:
        return EXIT_STOPPED if self.fault is not None else 0

    # ------------------------------------------------------------------ steps

    def set_ready(self, ready: bool) -> None:
        if ready and (self.fault is not None or self.stopping):
            ready = False
        if ready != self.ready:
            self.ready = ready
            metrics.WORKER_READY.set(1 if ready else 0)
            if ready:
                log.info("worker %s ready: processing its partitions", self.worker_id)

    def started(self, group: str, instance_id: str | None) -> None:
        log.info(
            "worker %s starting in group %s (%s)",
            self.worker_id,
            group,
            f"static member {instance_id}" if instance_id else "dynamic member",
        )

    def assigned(self, partitions: Iterable[tuple[str, int]], generation: int) -> None:
        if generation != self.generation:
            self.generation = generation
            log.info("worker %s joined its group, generation %d", self.worker_id, generation)
        log.info("partitions assigned: %s", _describe(partitions))

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.set_ready(False)
        log.info("partitions revoked: %s", _describe(partitions))

    def restoring(self, records: int, table: str) -> None:
        if self._restoring_since is None:
            self._restoring_since = self.clock()
            self.set_ready(False)
            log.info("restoring %d records of table %s from its changelog", records, table)

    def restored(self, table: str) -> None:
        if self._restoring_since is not None:
            took = self.clock() - self._restoring_since
            self._restoring_since = None
            log.info("table %s restored in %.1f s", table, took)

    def stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.set_ready(False)
            log.info("worker %s stopping (%s)", self.worker_id, why)


def _describe(partitions: Iterable[tuple[str, int]]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    if not by_topic:
        return "none"
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by_topic.items()))
