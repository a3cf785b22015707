"""What goes into a room processor and what comes out of one batch.

``Incoming`` is one input PDU with the shell's reference to it; ``BatchResult`` is the room chunk
of the batch (if any event was processed), the inputs refused (``DeadLetter``, each with its
reason) and counters. ``ProcessorConfig`` holds the knobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.events import EventFetcher, StateKey, StateMap
from pipeline.matrix.room_versions import RoomVersion
from pipeline.room.chunk import Chunk
from pipeline.room.parking import ParkingLimits, RawInput
from pipeline.room.state_groups import MAX_DELTA_HOPS

Resolver = Callable[
    [str, RoomVersion, Sequence[StateMap], EventFetcher, Callable[[str], bool]],
    dict[StateKey, str],
]
"""``(room_id, room_version, state_sets, fetch_event, is_rejected) -> resolved state``: how a
processor resolves state. The default is ``resolve_state`` inline; a shell may run large ones
elsewhere, as long as the answer is ``resolve_state``'s."""


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    parking: ParkingLimits = field(default_factory=ParkingLimits)
    max_delta_hops: int = MAX_DELTA_HOPS
    resolver: Resolver | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """One input PDU. ``source`` is the shell's reference to it (JSON-friendly, e.g. offsets)."""

    raw: RawInput
    received_ts: int | None = None
    source: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, and why."""

    reason: str
    raw: RawInput
    source: Mapping[str, Any] | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    chunk: Chunk | None  # None when no event was processed
    dead_letters: tuple[DeadLetter, ...]
    duplicates: int  # inputs dropped as exact duplicates of known or parked events
    parked: int  # events parked in the room after the batch
