"""What a committer makes of a room's chunks: the rows they leave, folded the way
``pipeline.room.chunk`` says the committer applies them (per room high-water of ``seq``, event
rows by event ID, state changes absolute for the keys they name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.room.chunk import Chunk


class Divergence(AssertionError):
    """A chunk of the same ``seq`` range seen again with another digest: the same inputs gave
    another result."""


@dataclass
class Stored:
    """One room's rows as a database would hold them after the chunks."""

    high_water: int = 0
    digests: dict[tuple[int, int], str] = field(default_factory=dict)
    events: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # in insertion order
    state_groups: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    current_state: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    extremities: set[str] = field(default_factory=set)
    memberships: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    redactions: dict[str, str] = field(default_factory=dict)
    skipped_chunks: int = 0

    def apply(self, chunk: Chunk) -> None:
        assert chunk.digest == chunk.compute_digest(), f"chunk {chunk.chunk_id} is corrupt"
        first, last = chunk.seq
        assert chunk.chunk_id.rsplit("/", 1)[1] == str(last)
        assert first <= self.high_water + 1, f"chunks before {chunk.chunk_id} are missing"
        seen = self.digests.get(chunk.seq)
        if seen is not None and seen != chunk.digest:
            raise Divergence(f"chunk {chunk.chunk_id} came again with other content")
        if last <= self.high_water:
            self.skipped_chunks += 1
            return
        self.digests[chunk.seq] = chunk.digest
        for e in chunk.events:
            row = (e.format_version, e.pdu, e.rejected, e.soft_failed, e.state_group, e.outlier)
            old = self.events.setdefault(e.event_id, row)
            assert old == row, f"event {e.event_id} stored before with another outcome"
        for g in chunk.state_groups:
            self.state_groups.setdefault(g.id, (g.event_id, g.prev_group, g.delta))
        for m in chunk.memberships:
            self.memberships[m.event_id] = (m.user_id, m.sender, m.membership)
        for r in chunk.redactions:
            self.redactions[r.event_id] = r.redacts
        self.extremities -= set(chunk.forward_extremities_removed)
        self.extremities |= set(chunk.forward_extremities_added)
        for key in chunk.current_state_removed:
            self.current_state.pop(key, None)
        for row in chunk.current_state_set:
            self.current_state[(row.type, row.state_key)] = (row.event_id, row.membership)
        self.high_water = last

    def rows(self) -> dict[str, Any]:
        """Everything a reader of the database could see (the bookkeeping left out)."""
        return {
            "events": list(self.events.items()),
            "state_groups": self.state_groups,
            "current_state": self.current_state,
            "extremities": self.extremities,
            "memberships": self.memberships,
            "redactions": self.redactions,
        }


def fold(chunks: list[Chunk]) -> Stored:
    stored = Stored()
    for c in chunks:
        stored.apply(c)
    return stored
