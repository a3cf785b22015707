"""What goes into a room processor and what comes out of one batch.

``Incoming`` is one input PDU with the shell's reference to it; ``BatchResult`` is the room
chunks of the batch (one, unless the batch's events exceed ``max_chunk_bytes``; none when no
event was processed), the inputs refused (``DeadLetter``, each with its reason), the requests for
missing events opened or closed (``pipeline.room.missing``) and counters.
``ProcessorConfig`` holds the knobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.events import EventFetcher, StateKey, StateMap
from pipeline.matrix.room_versions import RoomVersion
from pipeline.matrix.signing import SignatureChecker
from pipeline.room.chunk import Chunk
from pipeline.room.known_events import Recall, RedactionRecall
from pipeline.room.missing import MissingRequest
from pipeline.room.parking import ParkingLimits, RawInput
from pipeline.room.state_groups import MAX_DELTA_HOPS, GroupRecall

MAX_CHUNK_BYTES = 4 * 1024 * 1024
"""Above this estimate of its encoded size a batch's chunk is cut in two (the chunks topic takes
records of up to 16 MB; one PDU is at most 64 KiB, so a chunk overshoots by one event at most)."""

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
    max_chunk_bytes: int = MAX_CHUNK_BYTES
    # Check 2 on receipt (``pipeline.matrix.signing``); None: off, the producers are trusted.
    # The outcome depends on the keys the checker knows, not only on the room's inputs.
    signatures: SignatureChecker | None = None
    # Bounding the event index (``known_events``): with a ``recall``, entries over
    # ``known_limit`` that the shell says are committed (``RoomProcessor.release_committed``)
    # are dropped and recalled when read. Without one nothing is dropped.
    recall: Recall | None = None
    known_limit: int | None = None
    # With it, pending redactions of unknown events go with their redactions' entries, and are
    # read back from the store when their target comes.
    redaction_recall: RedactionRecall | None = None
    # The same for the rows of state groups: over ``group_rows_limit`` rows, those of the
    # oldest stored groups are dropped and recalled with ``group_recall``.
    group_recall: GroupRecall | None = None
    group_rows_limit: int | None = None


@dataclass(slots=True)
class Incoming:
    """One input PDU. ``source`` is the shell's reference to it (JSON-friendly, e.g. offsets).

    ``received_ts`` (ms) drives the room's logical clock, hence parking expiry: it must be part
    of the input as replayed (e.g. the record's timestamp in the topic), never the time of
    processing. None leaves the clock where it is.
    """

    raw: RawInput
    received_ts: int | None = None
    source: Mapping[str, Any] | None = None


@dataclass(slots=True)
class DeadLetter:
    """An input that could not be processed, and why."""

    reason: str
    raw: RawInput
    source: Mapping[str, Any] | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    chunks: tuple[Chunk, ...]  # in order; empty when no event was processed
    dead_letters: tuple[DeadLetter, ...]
    duplicates: int  # inputs dropped as exact duplicates of known or parked events
    parked: int  # events parked in the room after the batch
    parked_bytes: int = 0  # their size as received
    # Requests for missing events opened or closed by the batch, in order (``missing``).
    missing_requests: tuple[MissingRequest, ...] = ()
    open_requests: int = 0  # the room's open requests after the batch

    @property
    def chunk(self) -> Chunk | None:
        """The batch's one chunk (None when no event was processed).

        Raises ``ValueError`` when the batch was cut into several chunks: read ``chunks``.
        """
        if len(self.chunks) > 1:
            raise ValueError(
                f"the batch made {len(self.chunks)} chunks (over the chunk size budget); "
                "read BatchResult.chunks"
            )
        return self.chunks[0] if self.chunks else None
