"""The wire format of ``<prefix>.chunks``: a room chunk as JSON (DESIGN.md, 'Messages').

The chunk itself (``pipeline.room.chunk.Chunk``) belongs to the pure core; this module owns its
bytes. msgspec encodes and decodes it against the types below, so a chunk that does not match
them is refused with the path of the field at fault. A chunk written before it carried its
identity (``seq``, ``inputs``, ``digest``) decodes with zeros and an empty digest. The events,
state groups, memberships and redactions are the core's dataclasses, whose fields are in wire
order; the extremities and current state are grouped on the wire. ``decode`` checks the carried
digest against the content.

The committer reads chunks with ``decode_for_commit`` instead, into a ``CommitChunk``: each PDU
stays the JSON text it arrived as (what ``event_json`` stores), and only the PDU fields the rows
and the invalidation message need are decoded, so no PDU becomes a dict. The shape is checked as
strictly, but the carried digest is not checked against the content: that needs every PDU as a
dict and costs more than the rest of reading the chunk. The committer computes the content's
digest (``CommitChunk.content_digest``) where it decides by it: for a chunk delivered again.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec
import orjson

from pipeline.errors import MalformedMessage
from pipeline.room import chunk as core
from pipeline.room.chunk import Chunk
from topics import _msgspec

__all__ = [
    "CommitChunk",
    "CommitEvent",
    "PduFields",
    "decode",
    "decode_for_commit",
    "encode",
    "for_commit",
]

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

# The mapping between the core chunk and the wire, both ways: the fields both name alike, read
# with one attrgetter a side and passed by position around the grouped ones (keyword arguments,
# let alone ones built from a list of names, cost a microsecond a chunk more: a third of an
# encode). ``_WireChunk`` is ``_Chunk`` taking every field by position, for encoding.
_WireChunk = msgspec.defstruct(
    "_WireChunk", [(f.name, f.type) for f in msgspec.structs.fields(_Chunk)]
)
# _Chunk's fields before and after forward_extremities and current_state.
_wire_head = attrgetter(
    "chunk_id", "seq", "room_id", "room_version", "creator", "events", "state_groups"
)
_wire_tail = attrgetter("memberships", "redactions", "inputs", "digest", "meta")
# Chunk's fields before and after its extremities and current state.
_core_head = attrgetter("chunk_id", "room_id", "room_version", "events", "state_groups")
_core_tail = attrgetter("memberships", "redactions", "creator", "meta", "seq", "inputs", "digest")


def encode(chunk: Chunk) -> bytes:
    """The chunk's message value."""
    rows = tuple((r.type, r.state_key, r.event_id, r.membership) for r in chunk.current_state_set)
    extremities = _Extremities(
        added=chunk.forward_extremities_added, removed=chunk.forward_extremities_removed
    )
    current = _CurrentState(set=rows, removed=chunk.current_state_removed)
    return _encoder.encode(_WireChunk(*_wire_head(chunk), extremities, current, *_wire_tail(chunk)))


def decode(value: bytes | str) -> Chunk:
    """The chunk in a message value; MalformedMessage names the field that does not fit, or says
    that the carried digest is not the content's."""
    chunk = _to_core(_msgspec.decode(_decoder, value, WIRE_FORMAT))
    if chunk.digest and chunk.digest != chunk.compute_digest():
        raise MalformedMessage(
            WIRE_FORMAT,
            f"$.digest {chunk.digest} is not the digest of the chunk's content "
            f"({chunk.compute_digest()}): the message was altered after it was built",
        )
    return chunk


def _to_core(wire: _Chunk) -> Chunk:
    extremities, current = wire.forward_extremities, wire.current_state
    rows = tuple(core.CurrentStateRow(*row) for row in current.set)
    grouped = (extremities.added, extremities.removed, rows, current.removed)
    return Chunk(*(*_core_head(wire), *grouped, *_core_tail(wire)))


class CommitEvent(msgspec.Struct, gc=False):
    """A chunk event as the committer reads it: the PDU stays JSON text."""

    event_id: str
    format_version: int
    pdu: msgspec.Raw
    rejected: str | None
    soft_failed: bool
    state_group: int | None
    received_ts: int | None = None
    outlier: bool = False


class PduFields(msgspec.Struct, gc=False):
    """The PDU fields the committer's rows and messages need; the others are skipped unread."""

    type: str
    sender: str
    state_key: str | None = None
    depth: int = 0
    origin_server_ts: int = 0
    prev_events: list[Any] = []
    auth_events: list[Any] = []


class CommitStateGroup(msgspec.Struct, gc=False):
    id: int
    event_id: str
    prev_group: int | None
    delta: tuple[core.StateRow, ...]


class CommitMembership(msgspec.Struct, gc=False):
    event_id: str
    user_id: str
    sender: str
    membership: str


class CommitRedaction(msgspec.Struct, gc=False):
    event_id: str
    redacts: str


class CommitChunk(msgspec.Struct, kw_only=True, gc=False):
    """A room chunk as the committer reads it (``decode_for_commit``): the core chunk's fields,
    with each event's PDU as its JSON text (``events[i].pdu``) and the fields read from it
    (``pdus[i]``), the chunk's number, and the record's bytes (``value``)."""

    chunk_id: str
    seq: tuple[int, int] = (0, 0)
    room_id: str
    room_version: str
    creator: str | None = None
    events: tuple[CommitEvent, ...]
    state_groups: tuple[CommitStateGroup, ...] = ()
    forward_extremities: _Extremities = _Extremities()
    current_state: _CurrentState = _CurrentState()  # set: [type, state_key, event_id, membership]
    memberships: tuple[CommitMembership, ...] = ()
    redactions: tuple[CommitRedaction, ...] = ()
    inputs: tuple[int, int] = (0, 0)
    digest: str = ""
    meta: dict[str, Any] = {}
    # Not on the wire (set by decode_for_commit, named as no chunk names a field): the n of
    # chunk id <room_id>/<n>, the PDUs' fields, the record's bytes, and whether the chunk is
    # plain: no backslash anywhere in it. JSON escapes every backslash, quote and control
    # character in a string with one, so no string read from a plain chunk (nor a PDU's JSON
    # text) holds a character that PostgreSQL's COPY text format must escape.
    number: int = msgspec.field(default=0, name="(committer) number")
    pdus: list[PduFields] = msgspec.field(default_factory=list, name="(committer) pdus")
    value: bytes = msgspec.field(default=b"", name="(committer) value")
    plain: bool = msgspec.field(default=False, name="(committer) plain")

    def content_digest(self) -> str:
        """The digest of the chunk's content, computed (whatever digest it carries)."""
        return _to_core(_msgspec.decode(_decoder, self.value, WIRE_FORMAT)).compute_digest()

    def content(self, i: int) -> dict[str, Any]:
        """The ``content`` of event ``i``'s PDU (decoded now; the committer needs it rarely)."""
        pdu = orjson.loads(memoryview(self.events[i].pdu))
        content = pdu.get("content") if isinstance(pdu, dict) else None
        return content if isinstance(content, dict) else {}


_commit_decoder = msgspec.json.Decoder(CommitChunk)
_pdu_decoder = msgspec.json.Decoder(PduFields)


def decode_for_commit(value: bytes) -> CommitChunk:
    """The chunk in a message value, as the committer reads it (module docstring);
    MalformedMessage names the field that does not fit, a PDU's fields included."""
    chunk = _msgspec.decode(_commit_decoder, value, WIRE_FORMAT)
    pdus = chunk.pdus
    for i, ev in enumerate(chunk.events):
        try:
            pdus.append(_pdu_decoder.decode(ev.pdu))
        except msgspec.ValidationError as e:
            where = f"$.events[{i}].pdu"
            text = str(e)
            text = text.replace("`$", f"`{where}", 1) if "`$" in text else f"{text} - at `{where}`"
            raise MalformedMessage(WIRE_FORMAT, text) from None
    if chunk.digest and not _is_digest(chunk.digest):
        raise MalformedMessage(WIRE_FORMAT, f"$.digest {chunk.digest!r} is not 32 hex digits")
    room, sep, n = chunk.chunk_id.rpartition("/")
    if not sep or room != chunk.room_id or not n.isdigit():
        raise MalformedMessage(
            WIRE_FORMAT,
            f"$.chunk_id {chunk.chunk_id!r} is not <room_id>/<n> for room {chunk.room_id!r}",
        )
    chunk.number = int(n)
    chunk.value = value
    chunk.plain = b"\\" not in value
    return chunk


def for_commit(chunk: Chunk) -> CommitChunk:
    """A core chunk as the committer reads it off the wire."""
    return decode_for_commit(encode(chunk))


def _is_digest(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) == 16
    except ValueError:
        return False
