"""Reading what was appended to an insertion-ordered dict since a mark (its earlier length).

A room's event index and state groups only grow at the end, and a save writes what came after
the marks of the save before. Skipping the first entries with ``itertools.islice`` walks every
one of them, so each save would cost the room's whole history; walking back from the end costs
only what is new.
"""

from __future__ import annotations

import itertools
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def items_after(data: dict[K, V], mark: int) -> list[tuple[K, V]]:
    """The entries of ``data`` after its first ``mark``, in order; visits only those."""
    count = len(data) - mark
    if count <= 0:
        return []
    keys = list(itertools.islice(reversed(data), count))
    keys.reverse()
    return [(k, data[k]) for k in keys]
