"""How the long-running processes set Python's cyclic garbage collector.

A worker's or the committer's batch allocates tens of thousands of short-lived containers
(decoded PDUs, rows, events), nearly all freed by reference counting. At the default threshold
(700 net allocations) the cyclic collector runs dozens of times per batch and finds nothing,
and each run of the oldest generation walks every object the process holds: a worker holding
large rooms paid more per event the larger its rooms were.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLD", "tune_gc"]

GC_THRESHOLD = (20_000, 20, 20)


def tune_gc(threshold: tuple[int, int, int] = GC_THRESHOLD) -> None:
    """Make the cyclic garbage collector run rarely and over young objects only.

    What exists at start (modules, settings, clients) is moved out of its reach for good
    (``gc.freeze``), and a collection waits for ``threshold[0]`` net allocations. Cycles are
    still collected, later: the memory they hold for longer is bounded by the threshold.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
