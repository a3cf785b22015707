"""The wire format of ``<prefix>.chunks``: a room chunk as JSON (DESIGN.md, 'Messages').

The chunk itself (``pipeline.room.chunk.Chunk``) belongs to the pure core; this module owns its
bytes. msgspec encodes and decodes it against the types below, so a chunk that does not match
them is refused with the path of the field at fault. A chunk written before it carried its
identity (``seq``, ``inputs``, ``digest``) decodes with zeros and an empty digest. The events,
state groups, memberships and redactions are the core's dataclasses, whose fields are in wire
order; the extremities and current state are grouped on the wire.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.errors import MalformedMessage
from pipeline.room import chunk as core
from pipeline.room.chunk import Chunk
from topics import _msgspec

__all__ = ["decode", "encode"]

WIRE_FORMAT = "chunk"


class _Extremities(msgspec.Struct, kw_only=True, frozen=True):
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


class _CurrentState(msgspec.Struct, kw_only=True, frozen=True):
    # [type, state_key, event_id, membership or null]
    set: tuple[tuple[str, str, str, str | None], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()  # [type, state_key]


class _Chunk(msgspec.Struct, kw_only=True):
    chunk_id: str
    seq: tuple[int, int] = (0, 0)
    room_id: str
    room_version: str
    creator: str | None = None
    events: tuple[core.ChunkEvent, ...]
    state_groups: tuple[core.StateGroup, ...] = ()
    forward_extremities: _Extremities = _Extremities()
    current_state: _CurrentState = _CurrentState()
    memberships: tuple[core.Membership, ...] = ()
    redactions: tuple[core.Redaction, ...] = ()
    inputs: tuple[int, int] = (0, 0)
    digest: str = ""
    meta: dict[str, Any] = {}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Chunk)


# Field by field, both ways: building keyword arguments from a list of names costs a
# microsecond a chunk more (a third of an encode).


def encode(chunk: Chunk) -> bytes:
    """The chunk's message value."""
    rows = tuple((r.type, r.state_key, r.event_id, r.membership) for r in chunk.current_state_set)
    return _encoder.encode(
        _Chunk(
            chunk_id=chunk.chunk_id,
            seq=chunk.seq,
            room_id=chunk.room_id,
            room_version=chunk.room_version,
            creator=chunk.creator,
            events=chunk.events,
            state_groups=chunk.state_groups,
            forward_extremities=_Extremities(
                added=chunk.forward_extremities_added, removed=chunk.forward_extremities_removed
            ),
            current_state=_CurrentState(set=rows, removed=chunk.current_state_removed),
            memberships=chunk.memberships,
            redactions=chunk.redactions,
            inputs=chunk.inputs,
            digest=chunk.digest,
            meta=chunk.meta,
        )
    )


def decode(value: bytes | str) -> Chunk:
    """The chunk in a message value; MalformedMessage names the field that does not fit, or says
    that the carried digest is not the content's."""
    wire = _msgspec.decode(_decoder, value, WIRE_FORMAT)
    chunk = Chunk(
        chunk_id=wire.chunk_id,
        room_id=wire.room_id,
        room_version=wire.room_version,
        creator=wire.creator,
        events=wire.events,
        state_groups=wire.state_groups,
        forward_extremities_added=wire.forward_extremities.added,
        forward_extremities_removed=wire.forward_extremities.removed,
        current_state_set=tuple(core.CurrentStateRow(*row) for row in wire.current_state.set),
        current_state_removed=wire.current_state.removed,
        memberships=wire.memberships,
        redactions=wire.redactions,
        meta=wire.meta,
        seq=wire.seq,
        inputs=wire.inputs,
        digest=wire.digest,
    )
    if chunk.digest and chunk.digest != chunk.compute_digest():
        raise MalformedMessage(
            WIRE_FORMAT,
            f"$.digest {chunk.digest} is not the digest of the chunk's content "
            f"({chunk.compute_digest()}): the message was altered after it was built",
        )
    return chunk
