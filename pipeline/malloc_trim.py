"""Giving the memory a process freed back to the operating system (glibc's ``malloc_trim``).

After a burst a worker's heap holds the pages of the objects it freed: the C allocator keeps
them for later allocations, so the process's resident set stays at its peak, and the resident
set is what memory limits and the OOM killer count. ``malloc_trim(0)`` returns every wholly free
page, in the middle of the heap too (glibc 2.8 and later). It is called once work has stopped
for a while, never under a steady load, which reuses what it frees. In B6 (10,000 rooms of 20
state events each, one worker) it took the worker from 308 MB resident to 241–248 MB at rest.
Where the C library is not glibc (musl, macOS) there is no such call and nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable

__all__ = ["FreedMemory"]

log = logging.getLogger("roomstream.memory")

# Work must have stopped this long before freed memory is given back.
QUIET_S = 2.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the symbols the process already has, its C library's among them
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class FreedMemory:
    """Returns freed memory to the system once work has stopped for ``quiet_s`` seconds, once
    per stretch of work: a process at work reuses what it freed, and trimming under it would
    only make it fault the pages back in; an idle one has freed nothing new since."""

    def __init__(
        self,
        trim: Callable[[int], int] | None,
        *,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim = trim  # None: this C library cannot give memory back
        self.quiet_s = quiet_s
        self._clock = clock
        self._last_work: float | None = None  # since the last release

    @classmethod
    def of_this_process(
        cls, *, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic
    ) -> FreedMemory:
        """With the C library's ``malloc_trim``, where it has one."""
        return cls(_malloc_trim(), quiet_s=quiet_s, clock=clock)

    @property
    def due(self) -> bool:
        """Whether ``release`` would do anything now."""
        return (
            self._trim is not None
            and self._last_work is not None
            and self._clock() - self._last_work >= self.quiet_s
        )

    def worked(self) -> None:
        """Note that work was done (and memory likely freed) just now."""
        self._last_work = self._clock()

    def release(self) -> bool:
        """Give freed memory back if it is due; whether it was. Safe to call from any thread:
        ctypes lets go of the GIL for the call."""
        if not self.due:
            return False
        assert self._trim is not None
        self._last_work = None
        started = time.perf_counter()
        self._trim(0)
        log.debug("freed memory given back in %.1f ms", (time.perf_counter() - started) * 1000)
        return True
