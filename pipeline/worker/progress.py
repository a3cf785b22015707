"""How far each input partition may be committed: never past a record handed over to the
worker that the worker has not acked.

faust commits the first run of acked offsets it finds: from anywhere in a partition that has no
committed offset, and from one past the committed offset (the next to read) in any other. A
record the worker never acked (one faust dropped before it reached the worker, or one still in a
slower room's job while a later input of its partition was acked) was committed past, and lost on
the next restart or rebalance. ``Progress`` knows, per partition since it was last sought, the
offset the next record handed over should have, the offset ranges the records handed over skipped
(offsets that hold no record: a transactional producer's markers, records gone with retention)
and, for a partition sought to its beginning, its first record; a commit moves from the committed
offset (or that first record) over acked offsets and skipped ranges, and stops at the first
offset that is neither. Pure: the consumer (``pipeline.worker.consumer``) feeds it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Per partition: what was handed over since it was last sought; how far it may be committed."""

    __slots__ = ("_first", "_next", "_skipped")

    def __init__(self) -> None:
        self._next: dict[Any, int | None] = {}
        self._first: dict[Any, int] = {}
        self._skipped: dict[Any, list[tuple[int, int]]] = {}

    def sought(self, tp: Any, offset: int | None) -> None:
        """``tp`` reads from ``offset`` next; None: from its beginning."""
        self._next[tp] = offset
        self._first.pop(tp, None)
        self._skipped.pop(tp, None)

    def handed(self, tp: Any, offset: int) -> None:
        """The record at ``offset`` of ``tp`` is handed over to the worker."""
        expected = self._next.get(tp)
        if expected != offset:
            if expected is None:
                # The first record since a seek to the beginning (or since the worker began).
                self._first.setdefault(tp, offset)
            elif offset > expected:
                self._skipped.setdefault(tp, []).append((expected, offset))
        self._next[tp] = offset + 1

    def committable(self, tp: Any, committed: int | None, acked: Collection[int]) -> int | None:
        """The offset ``tp`` may be committed at, past ``committed`` (the next offset to read,
        as Kafka has it; None: nothing committed), or None if it cannot move."""
        first = self._first.get(tp)
        if committed is None:
            if first is None:
                return None
            start = first
        else:
            # Records below the first read since the worker began were never handed over: the
            # partition holds none there (it was read from the committed offset on).
            start = max(committed, first) if first is not None else committed
        skipped = self._skipped.get(tp, ())
        done = set(acked)
        position, i = start, 0
        while True:
            if position in done:
                position += 1
                continue
            while i < len(skipped) and skipped[i][1] <= position:
                i += 1
            if i < len(skipped) and skipped[i][0] <= position:
                position = skipped[i][1]
                continue
            break
        if skipped and i:
            del skipped[:i]
        if committed is None:
            return position if position > start else None
        return position if position > committed else None
