"""Invalidation messages: building them (pure) and consuming them (``InvalidationClient``).

One message per committer transaction that stored events (DESIGN.md, "Messages"; the wire
codec, parts included: ``topics.invalidation``). ``build_message`` decides which caches the
transaction's chunks touch, batched into ONE ``invalidate`` list, Synapse's cache names and key
shapes: a change to current state invalidates what Synapse's ``_invalidate_state_caches`` does,
a membership change in current state additionally every per-user and per-host cache, and every
stored event its ``have_seen_event`` entry.

A consumer applies every invalidation of a message before it notifies about the message's
events (invariant 4); ``InvalidationApplier`` does that, reassembles split messages and keeps
the position: a message at or below the position is a duplicate (a resend after a committer
crash) and is dropped; a message whose ``prev_position`` is not the current position, or a part
out of sequence, means messages were missed, and is reported.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from pipeline.errors import MalformedMessage
from pipeline.room.chunk import Chunk
from topics.chunk import CommitChunk, for_commit
from topics.invalidation import (
    Message,
    decode_invalidation,
    encode_invalidation,
    encode_parts,
    merge_parts,
)

__all__ = [
    "InvalidationApplier",
    "InvalidationClient",
    "Message",
    "build_invalidation",
    "build_message",
    "decode_invalidation",
    "encode_invalidation",
    "encode_parts",
    "format_for_tail",
]

log = logging.getLogger(__name__)

CacheKey = tuple[Any, ...]
CacheInvalidator = Callable[[CacheKey], None]
"""Drops one key from one cache."""
Notifier = Callable[[Message], None]
"""Told about a message once all its invalidations are applied."""
GapHandler = Callable[[int, Message], None]
"""Called with the expected ``prev_position`` and the message that did not match it."""

MEMBER = "m.room.member"

# The order in which caches appear in a message; fixed so messages are reproducible.
_ROOM_STATE_CACHES = (
    "get_current_state_ids",
    "get_partial_current_state_ids",
    "get_room_summary",
)
_ROOM_MEMBER_CACHES = (
    "get_users_in_room",
    "get_current_hosts_in_room",
    "get_users_in_room_with_profiles",
    "get_number_joined_users_in_room",
    "get_local_users_in_room",
)
_USER_MEMBER_CACHES = (
    "get_rooms_for_user_with_stream_ordering",
    "get_rooms_for_user",
    "get_invited_rooms_for_local_user",
)
_HOST_MEMBER_CACHES = ("is_host_joined", "was_host_joined")
_EXTREMITY_CACHES = ("get_forward_extremities_for_room", "get_latest_event_ids_in_room")


def _host(user_id: str) -> str:
    # A user ID is "@localpart:domain"; the domain may carry a port, which stays.
    return user_id.split(":", 1)[1] if ":" in user_id else user_id


def build_invalidation(
    chunk: Chunk,
    stream_orderings: Mapping[str, int],
    position: int,
    prev_position: int,
) -> Message:
    """The invalidation message of one committed chunk (``build_message`` of just that chunk)."""
    return build_message([(chunk, stream_orderings)], position, prev_position)


def build_message(
    changes: Sequence[tuple[Chunk | CommitChunk, Mapping[str, int]]],
    position: int,
    prev_position: int,
) -> Message:
    """The invalidation message of one committer transaction: its chunks, in commit order.

    Each chunk comes with the stream orderings of its events stored now; events absent from
    them (stored before, by an earlier delivery) are neither announced nor invalidated again.
    ``position`` is the highest of all those orderings. The message is whole: the codec
    (``topics.invalidation.encode_parts``) splits it into parts when it is too large. Chunks
    may come as the core's or as the committer reads them (``topics.chunk.CommitChunk``).
    """
    highest = max((so for _, orderings in changes for so in orderings.values()), default=None)
    what = ", ".join(c.chunk_id for c, _ in changes[:3]) + (", ..." if len(changes) > 3 else "")
    if highest is not None and position != highest:
        raise ValueError(
            f"position {position} of chunk(s) {what} is not their highest stream ordering "
            f"({highest})"
        )
    if position <= prev_position:
        raise ValueError(
            f"position {position} of chunk(s) {what} is not after prev_position {prev_position}"
        )
    touched = _Touched()
    for chunk, orderings in changes:
        touched.add_chunk(chunk if isinstance(chunk, CommitChunk) else for_commit(chunk), orderings)
    return {
        "position": position,
        "prev_position": prev_position,
        "rooms": list(touched.rooms),
        "events": touched.events,
        "invalidate": [
            {"cache": cache, "keys": list(map(list, sorted(keys)))}
            for cache, keys in touched.caches()
        ],
    }


class _Touched:
    """What a transaction's chunks touch, gathered per room, user and host (one set add each)
    and expanded into Synapse's caches once, by ``caches``."""

    def __init__(self) -> None:
        self.rooms: dict[str, None] = {}
        self.events: list[dict[str, Any]] = []
        self.seen: set[CacheKey] = set()  # (room, event_id) of every event stored now
        self.state_rooms: set[str] = set()  # current state changed
        self.create_rooms: set[str] = set()
        self.encryption_rooms: set[str] = set()
        self.member_rooms: set[str] = set()  # a membership in current state changed
        self.room_users: set[CacheKey] = set()  # (room, user) whose membership changed
        self.room_hosts: set[CacheKey] = set()
        self.extremity_rooms: set[str] = set()
        self.redacted: set[str] = set()

    def add_chunk(self, chunk: CommitChunk, stream_orderings: Mapping[str, int]) -> None:
        room = chunk.room_id
        self.rooms[room] = None
        seen, events = self.seen.add, self.events.append
        for ev, pdu in zip(chunk.events, chunk.pdus, strict=True):
            so = stream_orderings.get(ev.event_id)
            if so is None:
                continue
            # A negative have_seen_event answer may be cached for any event, rejected ones too.
            seen((room, ev.event_id))
            if ev.rejected is None and not ev.soft_failed and not ev.outlier:
                events(
                    {
                        "event_id": ev.event_id,
                        "room_id": room,
                        "stream_ordering": so,
                        "type": pdu.type,
                        "state_key": pdu.state_key,
                        "sender": pdu.sender,
                    }
                )
        if chunk.current_state.set or chunk.current_state.removed:
            self.state_rooms.add(room)
            changed = [(r[0], r[1]) for r in chunk.current_state.set]
            changed.extend(chunk.current_state.removed)
            for t, sk in changed:
                if t == MEMBER:
                    self.member_rooms.add(room)
                    self.room_users.add((room, sk))
                    self.room_hosts.add((room, _host(sk)))
                elif t == "m.room.create":
                    self.create_rooms.add(room)
                elif t == "m.room.encryption":
                    self.encryption_rooms.add(room)
        if chunk.forward_extremities.added or chunk.forward_extremities.removed:
            self.extremity_rooms.add(room)
        for r in chunk.redactions:
            if r.event_id in stream_orderings:
                self.redacted.add(r.redacts)

    def caches(self) -> list[tuple[str, set[CacheKey]]]:
        """(cache, keys) of every cache with a key to invalidate, in ``_CACHE_ORDER``."""
        state = {(r,) for r in self.state_rooms}
        members = {(r,) for r in self.member_rooms}
        extremities = {(r,) for r in self.extremity_rooms}
        users = {(u,) for _, u in self.room_users}
        keys: dict[str, set[CacheKey]] = {
            **dict.fromkeys(_ROOM_STATE_CACHES, state),
            "get_room_type": {(r,) for r in self.create_rooms},
            "get_room_encryption": {(r,) for r in self.encryption_rooms},
            **dict.fromkeys(_ROOM_MEMBER_CACHES, members),
            "get_user_in_room_with_profile": self.room_users,
            **dict.fromkeys(_USER_MEMBER_CACHES, users),
            **dict.fromkeys(_HOST_MEMBER_CACHES, self.room_hosts),
            **dict.fromkeys(_EXTREMITY_CACHES, extremities),
            "get_event": {(r,) for r in self.redacted},
            "have_seen_event": self.seen,
        }
        return [(cache, keys[cache]) for cache in _CACHE_ORDER if keys[cache]]


_CACHE_ORDER = (
    *_ROOM_STATE_CACHES,
    "get_room_type",
    "get_room_encryption",
    *_ROOM_MEMBER_CACHES,
    "get_user_in_room_with_profile",
    *_USER_MEMBER_CACHES,
    *_HOST_MEMBER_CACHES,
    *_EXTREMITY_CACHES,
    "get_event",
    "have_seen_event",
)


def format_for_tail(msg: Mapping[str, Any]) -> str:
    """One human-readable line per message, for ``roomstream tail``."""
    events = msg.get("events", [])
    described = []
    for e in events:
        what = e.get("type", "?")
        if e.get("state_key") is not None:
            what += f"[{e['state_key']}]"
        described.append(
            f"{e.get('event_id')}@{e.get('stream_ordering')} {what} by {e.get('sender')}"
        )
    caches = ", ".join(f"{i['cache']}×{len(i['keys'])}" for i in msg.get("invalidate", []))
    rooms = msg.get("rooms", [])
    where = ", ".join(rooms[:3]) + (f" and {len(rooms) - 3} more room(s)" if len(rooms) > 3 else "")
    return (
        f"{msg.get('position')} (prev {msg.get('prev_position')}) {where}: "
        f"{len(events)} event(s)"
        + (f" [{'; '.join(described)}]" if described else "")
        + (f" | invalidate {caches}" if caches else "")
    )


def _log_gap(expected_prev: int, msg: Message) -> None:
    log.warning(
        "invalidation gap: expected a message after position %d, got position %s (part %s of "
        "%s) with prev_position %s; caches may hold stale entries for the missing changes",
        expected_prev,
        msg.get("position"),
        msg.get("part"),
        msg.get("parts"),
        msg.get("prev_position"),
    )


@dataclass
class _Assembly:
    """The parts of one split message received so far."""

    position: int
    parts: int
    received: list[Message] = field(default_factory=list)


class InvalidationApplier:
    """Applies messages in order to registered caches, then notifies; tracks the position.

    ``start_position`` is the position already reflected by the caches (0: nothing seen yet);
    None accepts whatever message comes first as the continuation (a consumer starting at the
    end of the topic). A split message's invalidations are applied part by part as the parts
    arrive (dropping a key early is harmless); its notifiers run once, after the last part, with
    the whole message.
    """

    def __init__(self, start_position: int | None = 0, on_gap: GapHandler | None = None) -> None:
        self.position = start_position
        self._caches: dict[str, list[CacheInvalidator]] = {}
        self._notifiers: list[Notifier] = []
        self._on_gap = on_gap or _log_gap
        self._assembly: _Assembly | None = None
        self.duplicates = 0
        self.gaps = 0
        self.last_message: Message | None = None  # the last whole message applied

    def register_cache(self, name: str, invalidate: CacheInvalidator) -> None:
        self._caches.setdefault(name, []).append(invalidate)

    def add_notifier(self, notify: Notifier) -> None:
        self._notifiers.append(notify)

    def _gap(self, expected: int, msg: Message) -> None:
        self.gaps += 1
        self._on_gap(expected, msg)

    def apply(self, msg: Message) -> bool:
        """Apply one message or part; True when a whole message was applied and notified.

        False: a duplicate (dropped), or a part of a message not yet complete.
        """
        position = int(msg["position"])
        prev = int(msg["prev_position"])
        part = int(msg.get("part", 0))
        parts = int(msg.get("parts", 1))
        if self.position is not None and position <= self.position:
            self.duplicates += 1
            return False
        asm = self._assembly
        if part == 0:
            if asm is not None:
                if asm.position == position:
                    # The same message from its start: a resend after a committer crash.
                    self.duplicates += len(asm.received)
                else:
                    self._gap(asm.position, msg)  # the earlier message never completed
            if self.position is not None and prev != self.position:
                self._gap(self.position, msg)
            asm = self._assembly = _Assembly(position, parts)
        elif asm is None or asm.position != position or part > len(asm.received):
            if self.position is None and asm is None:
                return False  # started mid-message: the next whole message is the baseline
            self._gap(self.position if self.position is not None else prev, msg)
            self._assembly = None
            return False
        elif part < len(asm.received):
            self.duplicates += 1
            return False
        # Invariant 4: every invalidation (of this part, and of the parts before it), then the
        # notifications once the message is whole.
        for entry in msg["invalidate"]:
            for invalidate in self._caches.get(entry["cache"], ()):
                for key in entry["keys"]:
                    invalidate(tuple(key))
        asm.received.append(msg)
        if len(asm.received) < asm.parts:
            return False
        self._assembly = None
        whole = msg if asm.parts == 1 else merge_parts(asm.received)
        self.position = position
        self.last_message = whole
        for notify in self._notifiers:
            notify(whole)
        return True


class InvalidationClient(InvalidationApplier):
    """Consumes the invalidations topic (read_committed) and applies each message.

    The topic has one partition; the client assigns it directly (no consumer-group
    rebalancing) from the beginning, the end, or a given offset, and commits nothing: its
    progress is ``position``, which a cache owner would persist with whatever it derives.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        start_position: int | None = 0,
        start_offset: int | str = "beginning",
        on_gap: GapHandler | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(start_position=start_position, on_gap=on_gap)
        self.topic = topic
        self.malformed = 0
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": f"roomstream-invalidations-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
        config.update(extra_config or {})
        self._consumer = Consumer(config)
        offset = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}.get(str(start_offset))
        if offset is None:
            offset = int(start_offset)
        self._consumer.assign([TopicPartition(topic, 0, offset)])

    def poll(self, timeout: float = 0.5) -> list[Message]:
        """Read what is available within ``timeout``; return the messages applied."""
        applied: list[Message] = []
        first = self._consumer.poll(timeout)
        if first is None:
            return applied
        for record in [first, *self._consumer.consume(num_messages=499, timeout=0)]:
            err = record.error()
            if err is not None:
                if err.fatal():
                    raise RuntimeError(f"invalidations consumer failed on {self.topic}: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("invalidations consumer on %s: %s", self.topic, err)
                continue
            try:
                msg = decode_invalidation(record.value() or b"")
            except MalformedMessage as exc:
                self.malformed += 1
                log.error("skipping offset %s of %s: %s", record.offset(), self.topic, exc)
                continue
            try:
                fresh = self.apply(msg)
            except Exception:
                # Read this message again on the next poll: a cache that failed to drop a key
                # must not be left stale, and dropping the keys again is harmless.
                self._consumer.seek(
                    TopicPartition(self.topic, record.partition() or 0, record.offset() or 0)
                )
                raise
            if fresh and self.last_message is not None:
                applied.append(self.last_message)
        return applied

    def wait_for_position(self, position: int, timeout: float) -> bool:
        """Poll until the position reaches ``position``; False if ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while self.position is None or self.position < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.poll(min(0.5, remaining))
        return True

    def iter_messages(
        self, stop: threading.Event | None = None, poll_timeout: float = 0.5
    ) -> Iterator[Message]:
        """Yield each applied message until ``stop`` is set (forever without one)."""
        while stop is None or not stop.is_set():
            yield from self.poll(poll_timeout)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> InvalidationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
