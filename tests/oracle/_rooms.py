"""Random rooms with real PDUs, for comparing Roomstream with Synapse.

``OracleRoom(version)`` founds a room the way a homeserver does (create, the creator's join,
power levels, a public join rule, then Bob, Charlie and Zara join) and ``room.send(...)`` adds
an event on given prev_events: its state before is our resolution of the states after its
prev_events, and its auth_events are what the auth events selection names in that state. The
PDUs carry content hashes and, from room version 3 on, reference-hash event IDs, so Synapse
derives the same event IDs from them.

``send`` keeps an event only when the auth rules allow it against its state before (an honest
server), unless ``keep_unauthorised`` is set: then every event counts as accepted, as it would
if another server had accepted it on a state we did not see. The room marks no event rejected;
a test that wants rejected events names them to both implementations.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from pipeline.matrix.auth import auth_event_selection, check_auth_rules
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.hashes import add_content_hash, compute_event_id
from pipeline.matrix.room_versions import EventFormat, RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state

SERVER = "example.com"
ALICE = "@alice:example.com"  # the creator
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"  # never joined at the start
ZARA = "@zara:other.example"  # on another server
USERS = [ALICE, BOB, CHARLIE, EVELYN, ZARA]

EventSpec = tuple[str, str, str | None, Mapping[str, Any]]
"""What an event is: (type, sender, state_key or None, content)."""


class OracleRoom:
    def __init__(self, version: str, *, keep_unauthorised: bool = False) -> None:
        self.rv: RoomVersion = room_version(version)
        self.keep_unauthorised = keep_unauthorised
        self.events: dict[str, Event] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self._seq = itertools.count()
        self.room_id = f"!room:{SERVER}"
        create_content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            create_content["creator"] = ALICE
        create = self.build(("m.room.create", ALICE, "", create_content), [], ts=0)
        if self.rv.room_id_is_create_event_hash:
            self.room_id = "!" + create.event_id[1:]
        self._store(create, {})
        tip = create.event_id
        founding: list[tuple[str, str, str, dict[str, Any]]] = [
            ("m.room.member", ALICE, ALICE, {"membership": "join"}),
            ("m.room.power_levels", ALICE, "", self.power_levels_content({})),
            ("m.room.join_rules", ALICE, "", {"join_rule": "public"}),
            ("m.room.member", BOB, BOB, {"membership": "join"}),
            ("m.room.member", CHARLIE, CHARLIE, {"membership": "join"}),
            ("m.room.member", ZARA, ZARA, {"membership": "join"}),
        ]
        for event_type, sender, state_key, content in founding:
            sent = self.send(event_type, sender, state_key, content, [tip])
            assert sent is not None, f"the founding {event_type} of {sender} was not allowed"
            tip = sent
        self.start = tip

    def power_levels_content(self, users: Mapping[str, int], **extra: Any) -> dict[str, Any]:
        """Power levels giving the creator 100 (in v12+ creators are not listed: implied)."""
        listed = dict(users)
        if self.rv.privileged_creators:
            listed.pop(ALICE, None)
        else:
            listed.setdefault(ALICE, 100)
        return {"users": listed, **extra}

    def state_before(self, prev_ids: list[str]) -> dict[StateKey, str]:
        return resolve_state(self.rv, [self.state_after[p] for p in prev_ids], self.fetch)

    def fetch(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def send(
        self,
        event_type: str,
        sender: str,
        state_key: str | None,
        content: Mapping[str, Any],
        prev_ids: list[str],
        *,
        ts: int | None = None,
    ) -> str | None:
        """Add an event; its ID, or None when an honest server would have rejected it."""
        before = self.state_before(prev_ids)
        spec = (event_type, sender, state_key, content)
        event = self.build(spec, prev_ids, state=before, ts=ts)
        if not self.keep_unauthorised:
            auth_state = {k: self.events[v] for k, v in before.items()}
            try:
                check_auth_rules(event, auth_state)
            except EventRejected:
                return None
        self._store(event, before)
        return event.event_id

    def _store(self, event: Event, before: Mapping[StateKey, str]) -> None:
        self.events[event.event_id] = event
        after = dict(before)
        if event.state_key is not None:
            after[event.state_tuple] = event.event_id
        self.state_after[event.event_id] = after

    def build(
        self,
        spec: EventSpec,
        prev_ids: list[str],
        *,
        state: Mapping[StateKey, str] | None = None,
        ts: int | None = None,
        auth_ids: list[str] | None = None,
        signers: tuple[str, ...] = (),
    ) -> Event:
        """The event ``spec`` on ``prev_ids`` with auth_events chosen from ``state`` (default: its
        state before) or given as ``auth_ids``, not added to the room. ``signers`` are servers
        whose signatures it carries besides its sender's and its origin's."""
        event_type, sender, state_key, content = spec
        n = next(self._seq)
        if state is None:
            state = self.state_before(prev_ids) if prev_ids else {}
        pdu: dict[str, Any] = {
            "room_id": self.room_id,
            "sender": sender,
            "type": event_type,
            "content": dict(content),
            "origin": SERVER,
            "origin_server_ts": n if ts is None else ts,
            "depth": 1 + max((self.events[p].depth for p in prev_ids), default=0),
            "prev_events": [],
            "auth_events": [],
            # Signatures are placeholders: only who signed is read, by both implementations.
            "signatures": {
                server: {"ed25519:1": "c2lnbmF0dXJl"}
                for server in (SERVER, sender.partition(":")[2], *signers)
            },
        }
        if event_type == "m.room.redaction" and not self.rv.updated_redaction_rules:
            # Before v11 the redacted event is named at the top level, not in content.
            pdu["redacts"] = pdu["content"].pop("redacts")
        if state_key is not None:
            pdu["state_key"] = state_key
        if self.rv.room_id_is_create_event_hash and event_type == "m.room.create":
            del pdu["room_id"]
        v1_format = self.rv.event_format is EventFormat.V1
        if v1_format:
            pdu["event_id"] = f"${n}:{SERVER}"
        draft = Event.from_trusted(pdu, self.rv, event_id=f"$draft{n}")
        if auth_ids is None:
            auth_ids = sorted(state[k] for k in auth_event_selection(draft) if k in state)
        if v1_format:
            pdu["prev_events"] = [[p, {"sha256": "aGFzaA"}] for p in prev_ids]
            pdu["auth_events"] = [[a, {"sha256": "aGFzaA"}] for a in auth_ids]
        else:
            pdu["prev_events"] = list(prev_ids)
            pdu["auth_events"] = auth_ids
        pdu = add_content_hash(pdu)
        return Event.from_trusted(pdu, self.rv, event_id=compute_event_id(pdu, self.rv))
