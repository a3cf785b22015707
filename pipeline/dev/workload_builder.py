"""Building valid federation PDUs of one room, the way the homeservers in it would send them.

``RoomBuilder`` keeps a model of one room: every event it built, the state after each, and its
own view of the forward extremities. ``send`` makes the next PDU of the room version:

* prev_events: the builder's forward extremities, or explicit ones (a server with a stale view,
  a fork);
* auth_events: the spec's *auth events selection* (create, power levels, the sender's
  membership and, for ``m.room.member``, the target's membership and the join rules) taken from
  the state before the event, which is the state resolution of the states after its prev_events;
* depth: the largest depth of its prev_events plus one;
* origin, origin_server_ts (a deterministic clock), the content hash, placeholder signatures, and
  the event ID by the room version's rule (v1 and v2 rooms: chosen by the origin server).

The caller says what the event is meant to do (``ACCEPTED``, ``REJECTED`` or ``SOFT_FAILED``);
the builder does not run the authorization rules, it records the intent and applies it to its
model: rejected events change no state, and only accepted events become forward extremities.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pipeline.matrix.auth import auth_event_selection
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.hashes import (
    add_content_hash,
    compute_event_id,
    encode_unpadded_base64,
    reference_hash,
)
from pipeline.matrix.room_versions import EventFormat, RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.room import extremities

ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
SOFT_FAILED: Final = "soft_failed"
OUTCOMES: Final = (ACCEPTED, REJECTED, SOFT_FAILED)

DEFAULT_START_TS: Final = 1_700_000_000_000
"""The builder's clock starts here (ms since the epoch) unless told otherwise."""
DEFAULT_TICK_MS: Final = 1_000

SIGNING_KEY_ID: Final = "ed25519:1"


def select_auth_events(
    pdu: Mapping[str, Any], rv: RoomVersion, state: Mapping[StateKey, str]
) -> list[str]:
    """The auth events a server creating ``pdu`` names: the events of ``state`` under the keys
    the auth event selection gives for it, sorted; none for a create event."""
    if pdu["type"] == "m.room.create" and pdu.get("state_key") == "":
        return []
    probe = Event.from_trusted({**pdu, "auth_events": []}, rv, "$probe")
    return sorted(state[k] for k in auth_event_selection(probe) if k in state)


def server_of(user_id: str) -> str:
    """The server name of ``@localpart:server``."""
    return user_id.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class BuiltEvent:
    """One PDU as built, with what it is meant to do to the room."""

    event_id: str
    pdu: dict[str, Any]
    outcome: str  # ACCEPTED, REJECTED or SOFT_FAILED
    reason: str | None  # a short reason class for REJECTED and SOFT_FAILED

    @property
    def line(self) -> bytes:
        """The PDU as one line of JSON."""
        return orjson.dumps(self.pdu)

    @property
    def origin_server_ts(self) -> int:
        ts: int = self.pdu["origin_server_ts"]
        return ts

    @property
    def prev_event_ids(self) -> list[str]:
        return [_ref_id(r) for r in self.pdu["prev_events"]]

    @property
    def auth_event_ids(self) -> list[str]:
        return [_ref_id(r) for r in self.pdu["auth_events"]]


@dataclass(slots=True)
class _Node:
    depth: int
    state_after: dict[StateKey, str]  # shared with the prev event's when unchanged
    reference: Any  # how prev_events/auth_events name it in this room version


class RoomBuilder:
    """Builds the PDUs of one room and tracks its state and forward extremities.

    ``room_id`` is required for room versions that let the creating server choose it (v1–v11)
    unless ``tag`` is given, from which one is made; v12 rooms get theirs from the create event.
    ``tag`` also makes v1/v2 event IDs unique per room.
    """

    def __init__(
        self,
        version: str = "10",
        *,
        room_id: str | None = None,
        tag: str = "room",
        server: str = "example.org",
        start_ts: int = DEFAULT_START_TS,
        tick_ms: int = DEFAULT_TICK_MS,
    ) -> None:
        self.rv: RoomVersion = room_version(version)
        if self.rv.room_id_is_create_event_hash:
            if room_id is not None:
                raise ValueError(
                    f"room version {version} derives the room ID from the create event; "
                    f"do not pass room_id={room_id!r}"
                )
            self._room_id: str | None = None
        else:
            self._room_id = room_id if room_id is not None else f"!{tag}:{server}"
        self.tag = tag
        self.events: list[BuiltEvent] = []
        self.state_exact = True  # False once a merge was built without state resolution
        self._nodes: dict[str, _Node] = {}
        self._state_events: dict[str, Event] = {}
        self._rejected: set[str] = set()
        self._excluded_prevs: dict[str, tuple[str, ...]] = {}
        self._extremities: set[str] = set()
        self._create_id: str | None = None
        self._ts = start_ts
        self._tick = tick_ms
        self._current_cache: tuple[tuple[str, ...], dict[StateKey, str]] | None = None

    # ---------------------------------------------------------------- reading the model

    @property
    def room_id(self) -> str:
        if self._room_id is None:
            raise LookupError("the room ID of a v12 room is known once its create event is built")
        return self._room_id

    @property
    def forward_extremities(self) -> list[str]:
        """The builder's forward extremities, sorted (the default prev_events)."""
        return sorted(self._extremities)

    @property
    def rejected(self) -> set[str]:
        return set(self._rejected)

    def state_after(self, event_id: str) -> Mapping[StateKey, str]:
        return self._nodes[event_id].state_after

    def current_state(self) -> dict[StateKey, str]:
        """The state over the forward extremities (resolved where they disagree)."""
        key = tuple(self.forward_extremities)
        if self._current_cache is None or self._current_cache[0] != key:
            self._current_cache = (key, dict(self.state_before(key)))
        return dict(self._current_cache[1])

    def state_before(
        self, prev_event_ids: Iterable[str], *, resolve: bool = True
    ) -> dict[StateKey, str]:
        """The state before an event with these prev_events (not to be mutated).

        Where the states after the prev events disagree, they are resolved with the room
        version's algorithm; ``resolve=False`` takes the union instead (first prev event wins)
        and marks the model inexact.
        """
        states: list[dict[StateKey, str]] = []
        for prev in prev_event_ids:
            s = self._nodes[prev].state_after
            if not any(s is t or s == t for t in states):
                states.append(s)
        if not states:
            return {}
        if len(states) == 1:
            return states[0]
        if not resolve:
            self.state_exact = False
            merged: dict[StateKey, str] = {}
            for s in reversed(states):
                merged.update(s)
            return merged
        return resolve_state(
            self.rv, states, self._state_events.get, is_rejected=self._rejected.__contains__
        )

    # ---------------------------------------------------------------- building

    def send(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
        ts: int | None = None,
        expect: str = ACCEPTED,
        reason: str | None = None,
        resolve: bool = True,
        redacts: str | None = None,
    ) -> BuiltEvent:
        """Build the next PDU of the room and apply its intended ``expect`` outcome."""
        if expect not in OUTCOMES:
            raise ValueError(f"expect must be one of {OUTCOMES}, not {expect!r}")
        is_create = event_type == "m.room.create" and state_key == ""
        if is_create and self._create_id is not None:
            raise ValueError(f"room {self._room_id} already has a create event")
        if not is_create and self._create_id is None:
            raise ValueError("build the m.room.create event first")
        prev_ids = list(self.forward_extremities if prev is None else prev)
        if not is_create and not prev_ids:
            raise ValueError(f"{event_type} from {sender} needs prev_events")
        for p in prev_ids:
            if p not in self._nodes:
                raise KeyError(f"prev event {p} was not built by this room's builder")

        if ts is None:
            self._ts += self._tick
            ts = self._ts
        else:
            self._ts = max(self._ts, ts)
        origin = server_of(sender)
        before = self.state_before(prev_ids, resolve=resolve)

        pdu: dict[str, Any] = {"type": event_type}
        if not (is_create and self.rv.room_id_is_create_event_hash):
            # v12: room_id is "Omitted from m.room.create events".
            pdu["room_id"] = self.room_id
        pdu["sender"] = sender
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu["content"] = dict(content)
        if redacts is not None:
            if self.rv.updated_redaction_rules:
                # v11+: "redacts" moved into content.
                pdu["content"]["redacts"] = redacts
            else:
                pdu["redacts"] = redacts
        pdu["prev_events"] = [self._nodes[p].reference for p in prev_ids]
        auth = select_auth_events(pdu, self.rv, before)
        pdu["auth_events"] = [self._nodes[a].reference for a in auth]
        pdu["depth"] = max((self._nodes[p].depth for p in prev_ids), default=0) + 1
        pdu["origin"] = origin
        pdu["origin_server_ts"] = ts
        if self.rv.event_format == EventFormat.V1:
            # v1, v2: the origin server names the event "$opaque_id:domain".
            pdu["event_id"] = f"${self.tag}-{len(self.events)}:{origin}"
        pdu = add_content_hash(pdu)
        # Signatures are not verified yet; a stand-in of an ed25519 signature's length.
        sha = pdu["hashes"]["sha256"]
        pdu["signatures"] = {origin: {SIGNING_KEY_ID: sha + sha}}
        event_id = compute_event_id(pdu, self.rv)

        if is_create:
            self._create_id = event_id
            if self.rv.room_id_is_create_event_hash:
                self._room_id = "!" + event_id[1:]
        return self._record(pdu, event_id, before, prev_ids, expect=expect, reason=reason)

    def _record(
        self,
        pdu: dict[str, Any],
        event_id: str,
        before: dict[StateKey, str],
        prev_ids: list[str],
        *,
        expect: str,
        reason: str | None,
    ) -> BuiltEvent:
        if event_id in self._nodes:
            raise ValueError(f"event {event_id} was built twice (same content, same prev_events)")
        after = before
        state_key: str | None = pdu.get("state_key")
        if state_key is not None:
            self._state_events[event_id] = Event.from_trusted(pdu, self.rv, event_id)
            if expect != REJECTED:
                # A soft-failed state event still has a state after it; a rejected one has the
                # state before it.
                after = dict(before)
                after[(pdu["type"], state_key)] = event_id
        reference: Any = event_id
        if self.rv.event_format == EventFormat.V1:
            # v1, v2: references are [event_id, {"sha256": reference hash}] pairs.
            digest = reference_hash(pdu, self.rv)
            reference = [event_id, {"sha256": encode_unpadded_base64(digest)}]
        self._nodes[event_id] = _Node(pdu["depth"], after, reference)
        if expect == ACCEPTED:
            extremities.advance(self._extremities, event_id, prev_ids, self._excluded_prevs.get)
        else:
            self._excluded_prevs[event_id] = tuple(prev_ids)
            if expect == REJECTED:
                self._rejected.add(event_id)
        built = BuiltEvent(event_id, pdu, expect, reason)
        self.events.append(built)
        return built

    # ---------------------------------------------------------------- the usual events

    def create(self, creator: str, **extra_content: Any) -> BuiltEvent:
        content: dict[str, Any] = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            # v1–v10: "creator" names the room's creator; v11+ use the create event's sender.
            content["creator"] = creator
        content.update(extra_content)
        return self.send("m.room.create", creator, content, state_key="")

    def member(
        self,
        user: str,
        membership: str,
        *,
        sender: str | None = None,
        **kw: Any,
    ) -> BuiltEvent:
        return self.send(
            "m.room.member", sender or user, {"membership": membership}, state_key=user, **kw
        )

    def join(self, user: str, **kw: Any) -> BuiltEvent:
        return self.send(
            "m.room.member",
            user,
            {"membership": "join", "displayname": user[1:].split(":", 1)[0]},
            state_key=user,
            **kw,
        )

    def state(
        self,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str = "",
        **kw: Any,
    ) -> BuiltEvent:
        return self.send(event_type, sender, content, state_key=state_key, **kw)

    def message(self, sender: str, body: str, **kw: Any) -> BuiltEvent:
        return self.send("m.room.message", sender, {"msgtype": "m.text", "body": body}, **kw)

    def redact(self, sender: str, target: str, **kw: Any) -> BuiltEvent:
        return self.send("m.room.redaction", sender, {}, redacts=target, **kw)


def default_power_levels(
    creator: str, rv: RoomVersion, users: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Power levels content as homeservers write it for a new room, with ``users`` added.

    The creator gets 100, except in v12+ where creators have unlimited power and may not be
    listed ("If the users property in content contains the sender of the m.room.create event
    ..., reject").
    """
    levels: dict[str, int] = {} if rv.privileged_creators else {creator: 100}
    levels.update(users or {})
    return {
        "ban": 50,
        "events": {
            "m.room.avatar": 50,
            "m.room.canonical_alias": 50,
            "m.room.history_visibility": 100,
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.server_acl": 100,
            "m.room.tombstone": 100,
            "m.room.topic": 50,
        },
        "events_default": 0,
        "invite": 0,
        "kick": 50,
        "redact": 50,
        "state_default": 50,
        "users": levels,
        "users_default": 0,
    }


def opaque_tag(*parts: object, length: int = 18) -> str:
    """A deterministic URL-safe token from ``parts`` (room ID localparts and the like)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return encode_unpadded_base64(digest, urlsafe=True)[:length]


def _ref_id(ref: Any) -> str:
    return str(ref[0] if isinstance(ref, list) else ref)
