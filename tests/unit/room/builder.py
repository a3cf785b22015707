"""A tiny room-graph language for the room processor tests.

Events get short names; ``RoomBuilder`` turns them into real, hashed PDUs of the room version,
choosing each event's auth_events from a naive view of the state before it (the state after its
first prev event, with the other prev events' state merged in), as a homeserver would.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import orjson

from pipeline.matrix.auth.selection import auth_event_selection
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.hashes import add_content_hash, compute_event_id
from pipeline.matrix.room_versions import EventFormat, room_version


class Placement(TypedDict, total=False):
    """Who sends an event and on which prev events (default: the last event built)."""

    sender: str
    prev: list[str] | None


ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"


class RoomBuilder:
    def __init__(self, version: str = "10", room_id: str = "!room:a.example") -> None:
        self.rv = room_version(version)
        self.room_id = room_id
        self.ids: dict[str, str] = {}
        self.pdus: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}  # event ID -> name
        self._state: dict[str, dict[StateKey, str]] = {}
        self._depth: dict[str, int] = {}
        self._last: str | None = None

    # -- building ---------------------------------------------------------------------------

    def add(
        self,
        name: str,
        etype: str,
        sender: str,
        content: dict[str, Any] | None = None,
        *,
        state_key: str | None = None,
        prev: list[str] | None = None,
        auth: list[str] | None = None,
        unsigned: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        assert name not in self.ids, f"{name} already built"
        prev_names = prev if prev is not None else ([self._last] if self._last else [])
        before: dict[StateKey, str] = {}
        for p in reversed(prev_names):
            before.update(self._state[p])
        pdu: dict[str, Any] = {
            "type": etype,
            "sender": sender,
            "content": content or {},
            "depth": max((self._depth[p] for p in prev_names), default=0) + 1,
            "origin_server_ts": 1_700_000_000_000 + len(self.ids),
            "signatures": {},
        }
        if not (etype == "m.room.create" and self.rv.room_id_is_create_event_hash):
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra or {})
        pdu["prev_events"] = [self._ref(self.ids[p]) for p in prev_names]
        if auth is None:
            probe = Event.from_trusted({**pdu, "auth_events": []}, self.rv, "$probe")
            auth_ids = sorted(before[k] for k in auth_event_selection(probe) if k in before)
        else:
            auth_ids = [self.ids[a] for a in auth]
        pdu["auth_events"] = [self._ref(a) for a in auth_ids]
        if self.rv.event_format == EventFormat.V1:
            pdu["event_id"] = f"${name}:a.example"
        pdu = add_content_hash(pdu)
        if unsigned is not None:
            pdu["unsigned"] = unsigned
        eid = compute_event_id(pdu, self.rv)
        if etype == "m.room.create" and self.rv.room_id_is_create_event_hash:
            self.room_id = "!" + eid[1:]
        self.ids[name] = eid
        self.names[eid] = name
        self.pdus[name] = pdu
        after = dict(before)
        if state_key is not None:
            after[(etype, state_key)] = eid
        self._state[name] = after
        self._depth[name] = pdu["depth"]
        self._last = name
        return pdu

    def _ref(self, eid: str) -> Any:
        if self.rv.event_format == EventFormat.V1:
            return [eid, {"sha256": "AAAA"}]
        return eid

    def create(self, name: str = "C", creator: str = ALICE) -> dict[str, Any]:
        content: dict[str, Any] = {"room_version": self.rv.identifier}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        return self.add(name, "m.room.create", creator, content, state_key="", prev=[])

    def member(
        self,
        name: str,
        user: str,
        membership: str = "join",
        *,
        sender: str | None = None,
        prev: list[str] | None = None,
    ) -> dict[str, Any]:
        return self.add(
            name,
            "m.room.member",
            sender or user,
            {"membership": membership},
            state_key=user,
            prev=prev,
        )

    def power_levels(
        self, name: str, users: dict[str, int], **at: Unpack[Placement]
    ) -> dict[str, Any]:
        return self._room_state(name, "m.room.power_levels", {"users": users}, **at)

    def join_rules(
        self, name: str, rule: str = "public", **at: Unpack[Placement]
    ) -> dict[str, Any]:
        return self._room_state(name, "m.room.join_rules", {"join_rule": rule}, **at)

    def _room_state(
        self,
        name: str,
        event_type: str,
        content: dict[str, Any],
        *,
        sender: str = ALICE,
        prev: list[str] | None = None,
    ) -> dict[str, Any]:
        """A state event with the empty state key, Alice's unless ``sender`` is given."""
        return self.add(name, event_type, sender, content, state_key="", prev=prev)

    def message(
        self, name: str, sender: str, *, prev: list[str] | None = None, body: str | None = None
    ) -> dict[str, Any]:
        return self.add(
            name, "m.room.message", sender, {"msgtype": "m.text", "body": body or name}, prev=prev
        )

    def topic(
        self, name: str, sender: str, topic: str, *, prev: list[str] | None = None
    ) -> dict[str, Any]:
        return self.add(name, "m.room.topic", sender, {"topic": topic}, state_key="", prev=prev)

    def base(self) -> list[str]:
        """Alice creates a public room (power 100) and Bob joins: C, MA, PL, JR, MB."""
        self.create()
        self.member("MA", ALICE)
        # v12+: creators have infinite power and must not be listed in users.
        self.power_levels("PL", {} if self.rv.privileged_creators else {ALICE: 100})
        self.join_rules("JR")
        self.member("MB", BOB)
        return ["C", "MA", "PL", "JR", "MB"]

    # -- feeding ----------------------------------------------------------------------------

    def raw(self, name: str) -> bytes:
        return orjson.dumps(self.pdus[name])

    def raws(self, names: list[str]) -> list[bytes]:
        return [self.raw(n) for n in names]

    def name_of(self, event_id: str) -> str:
        return self.names.get(event_id, event_id)

    def state_names(self, state: Any) -> dict[StateKey, str]:
        return {k: self.name_of(v) for k, v in state.items()}
