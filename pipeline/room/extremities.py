"""Forward extremities: the events of a room that no accepted event points at yet.

An accepted event becomes a forward extremity and its prev_events stop being ones. Soft-failed
and rejected events never become forward extremities, and they do not remove their prev_events
either; so when a later accepted event points at one of them, the prev_events of that event (and,
through chains of soft-failed or rejected events, theirs) are superseded too and leave the set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

ExcludedPrevs = Callable[[str], "tuple[str, ...] | None"]
"""prev_events of a soft-failed or rejected event; None for any other event."""


def advance(
    extremities: set[str],
    event_id: str,
    prev_event_ids: Iterable[str],
    excluded_prevs: ExcludedPrevs,
) -> tuple[set[str], set[str]]:
    """Add accepted ``event_id`` to ``extremities`` (in place). Returns (added, removed)."""
    removed: set[str] = set()
    seen: set[str] = set()
    stack = list(prev_event_ids)
    while stack:
        prev = stack.pop()
        if prev in seen:
            continue
        seen.add(prev)
        if prev in extremities:
            extremities.discard(prev)
            removed.add(prev)
        hidden = excluded_prevs(prev)
        if hidden:
            # The soft-failed/rejected event never displaced its own prev_events; now that an
            # accepted event builds on it, they are no longer the room's latest events.
            stack.extend(hidden)
    added: set[str] = set()
    if event_id not in extremities:
        extremities.add(event_id)
        added.add(event_id)
    return added, removed
