"""The room chunk: what a room processor hands the committer (contract: DESIGN.md, 'Messages').

A chunk is one room's processed events, in order, with every change they make to the room's
stored state. It carries no stream orderings: the committer assigns those at commit time.
Its bytes on the chunks topic are ``topics.chunk``'s; the digest below is defined on a canonical
body of its own, so it does not change when the wire encoding does.

Identity, so the committer can tell a replay from new work and a divergence from a replay:

* ``seq`` = (first, last): the room's *event sequence numbers* of the chunk's first and last
  events. Every event a room processor records (accepted, soft-failed or rejected) takes the
  room's next number, 1, 2, 3, ...; the numbering depends only on the room's inputs and their
  order, never on how they were batched or when the processor was saved and restored. The
  chunks of a room cover consecutive ranges: the next chunk's first is this chunk's last + 1.
* ``chunk_id`` = ``<room_id>/<n>`` with n = ``seq`` last: per room a strictly increasing integer.
* ``inputs`` = (first, last): the room's *input sequence numbers* (every input the room's
  processor took counts, dead-lettered and duplicate ones too) whose processing the chunk
  covers. For reports only: batching changes it, and it is not part of ``digest``.
* ``digest``: 32 hex digits, blake2b (16 bytes) of the chunk's canonical encoding without
  ``digest``, ``inputs`` and ``meta`` (orjson, keys sorted): see ``Chunk.compute_digest``.

How the committer uses it (per room, a high-water H = the largest n committed, and the digest
of each committed ``seq`` range):

* The same ``seq`` range committed before: the digests must be equal. Different digests are a
  divergence (the same inputs gave another result): report it, never apply the chunk twice.
* last <= H: already applied; drop it.
* first > H: new; apply it. first > H + 1 means chunks are missing in between (report).
* first <= H < last: a replay batched differently from the run that committed up to H (say the
  committed chunks were 1..10 and the replay sends 6..12). Apply it: events already stored
  (those with seq <= H) are dropped by event ID, and the state changes below are written so
  that applying them on top of any state of the room between the chunk's start and its end
  gives the state at its end.

The state changes are absolute for every key they touch: ``current_state_set`` and
``current_state_removed`` name every (type, state_key) whose current-state entry changed at any
point within the chunk, with its value at the chunk's end; ``forward_extremities_added`` and
``_removed`` name every event that entered or left the forward extremities within the chunk, by
whether it is one at the chunk's end. Rows keyed by event ID (events, memberships, redactions,
event_to_state_groups) and state groups (ids derived from the room and a per-room counter) are
the same whatever the batching.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

StateRow = tuple[str, str, str]
"""(type, state_key, event_id)."""


@dataclass(slots=True)
class ChunkEvent:
    event_id: str
    format_version: int
    pdu: dict[str, Any]
    rejected: str | None  # the reason, or None when accepted
    soft_failed: bool
    state_group: int | None  # state *before* a rejected event; state after any other state event
    received_ts: int | None = None
    outlier: bool = False


@dataclass(slots=True)
class StateGroup:
    id: int
    event_id: str  # the event whose state this group is
    prev_group: int | None  # None: ``delta`` is the whole state
    delta: tuple[StateRow, ...]


@dataclass(slots=True)
class CurrentStateRow:
    type: str
    state_key: str
    event_id: str
    membership: str | None


@dataclass(slots=True)
class Membership:
    event_id: str
    user_id: str
    sender: str
    membership: str


@dataclass(slots=True)
class Redaction:
    event_id: str
    redacts: str


@dataclass(slots=True)
class Chunk:
    chunk_id: str
    room_id: str
    room_version: str
    events: tuple[ChunkEvent, ...]
    state_groups: tuple[StateGroup, ...] = ()
    forward_extremities_added: tuple[str, ...] = ()
    forward_extremities_removed: tuple[str, ...] = ()
    current_state_set: tuple[CurrentStateRow, ...] = ()
    current_state_removed: tuple[tuple[str, str], ...] = ()
    memberships: tuple[Membership, ...] = ()
    redactions: tuple[Redaction, ...] = ()
    creator: str | None = None  # set on the chunk that holds the create event
    meta: dict[str, Any] = field(default_factory=dict)
    seq: tuple[int, int] = (0, 0)  # the room's event sequence numbers: (first, last)
    inputs: tuple[int, int] = (0, 0)  # the room's input sequence numbers covered: (first, last)
    digest: str = ""

    def with_digest(self) -> Chunk:
        """Set ``digest`` from the content; returns the chunk."""
        self.digest = self.compute_digest()
        return self

    def compute_digest(self) -> str:
        """blake2b-128 (hex) of the canonical encoding without ``digest``, ``inputs``, ``meta``."""
        body = self._body()
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def _body(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "seq": list(self.seq),
            "room_id": self.room_id,
            "room_version": self.room_version,
            "creator": self.creator,
            "events": [
                {
                    "event_id": e.event_id,
                    "format_version": e.format_version,
                    "pdu": e.pdu,
                    "rejected": e.rejected,
                    "soft_failed": e.soft_failed,
                    "state_group": e.state_group,
                    "received_ts": e.received_ts,
                    "outlier": e.outlier,
                }
                for e in self.events
            ],
            "state_groups": [
                {
                    "id": g.id,
                    "event_id": g.event_id,
                    "prev_group": g.prev_group,
                    "delta": g.delta,  # orjson writes tuples as arrays
                }
                for g in self.state_groups
            ],
            "forward_extremities": {
                "added": list(self.forward_extremities_added),
                "removed": list(self.forward_extremities_removed),
            },
            "current_state": {
                "set": [
                    [r.type, r.state_key, r.event_id, r.membership] for r in self.current_state_set
                ],
                "removed": [list(k) for k in self.current_state_removed],
            },
            "memberships": [
                {
                    "event_id": m.event_id,
                    "user_id": m.user_id,
                    "sender": m.sender,
                    "membership": m.membership,
                }
                for m in self.memberships
            ],
            "redactions": [{"event_id": r.event_id, "redacts": r.redacts} for r in self.redactions],
        }
