"""Long-lived threads that run jobs off the event loop and hand the results back in batches.

The worker's event loop serves every room of every partition it owns; a room's processing (auth,
state resolution, serialising its state) must not run on it, or one slow room would hold up all
the others. ``JobThreads`` runs each submitted job on one of a few threads; a job that takes long
occupies one thread while the others go on with the remaining jobs.

Finished jobs are handed back to the loop together: a thread that finishes a job while earlier
results are still waiting for the loop adds its result to them instead of waking the loop again.
So the loop pays one wakeup per batch of results, not one per job, which matters when thousands
of small jobs a second come back.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class JobThreads(Generic[J, R]):
    """``threads`` daemon threads running ``work(job)``; ``deliver`` gets finished jobs on
    ``loop``, in batches, in the order they finished."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        work: Callable[[J], R],
        deliver: Callable[[list[tuple[J, R | Exception]]], None],
        *,
        threads: int,
        name: str,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self._loop = loop
        self._work = work
        self._deliver = deliver
        self._jobs: queue.SimpleQueue[J | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[J, R | Exception]] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}_{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, job: J) -> None:
        """Queue ``job`` for the next free thread."""
        self._jobs.put(job)

    def close(self) -> None:
        """Let every thread finish its job and stop; queued jobs after that are not run."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            outcome: R | Exception
            try:
                outcome = self._work(job)
            except Exception as e:  # handed to the loop, which decides what a failure means
                outcome = e
            with self._lock:
                self._done.append((job, outcome))
                # Only the first result of a batch wakes the loop; later ones ride along.
                wake = len(self._done) == 1
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._hand_back)
                except RuntimeError:  # the loop is closed: the process is shutting down
                    return

    def _hand_back(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        if done:
            self._deliver(done)
