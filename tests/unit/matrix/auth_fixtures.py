"""A small room builder for the authorization rule tests.

``Room(version)`` starts a room the way a homeserver creates one: the create event, the
creator's join, power levels (creator at 100, or in v12+ no ``users`` entry since creators are
implicit) and an ``invite`` join rule. ``room.new(...)`` builds an event without applying it;
``room.add(event)`` applies a state event; ``room.state`` is the current state map.

Event IDs are readable (``$3-bob-join:a.org``); v12 rooms get the room ID ``!create`` from their
create event ``$create``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import RoomVersion, room_version

ALICE = "@alice:a.org"  # the creator
BOB = "@bob:b.org"
CAROL = "@carol:c.org"
DAVE = "@dave:a.org"
EVE = "@eve:e.org"

ALL_VERSIONS = [str(n) for n in range(1, 13)]


def versions(lo: int = 1, hi: int = 12) -> list[Any]:
    """Room versions lo..hi as pytest params with ids v1, v2, ..."""
    return [pytest.param(str(n), id=f"v{n}") for n in range(lo, hi + 1)]


class Room:
    def __init__(
        self,
        version: str,
        *,
        creator: str = ALICE,
        create_content: Mapping[str, Any] | None = None,
        power_levels: Mapping[str, Any] | None = None,
        join_rule: str | None = "invite",
        bare: bool = False,
    ) -> None:
        self.rv: RoomVersion = room_version(version)
        self._seq = itertools.count(1)
        self.state: dict[StateKey, Event] = {}
        self.last: str | None = None
        content: dict[str, Any] = {"room_version": version}
        if not self.rv.implicit_room_creator:
            content["creator"] = creator
        content.update(create_content or {})
        if self.rv.room_id_is_create_event_hash:
            self.room_id = "!create"
            self.create = self.add(
                self.new("m.room.create", creator, content, state_key="", event_id="$create")
            )
        else:
            self.room_id = "!room:" + (domain_of(creator) or "a.org")
            self.create = self.add(self.new("m.room.create", creator, content, state_key=""))
        if bare:
            return
        self.add(self.member(creator, "join"))
        if power_levels is None:
            power_levels = self.default_power_levels(creator)
        self.add(self.new("m.room.power_levels", creator, power_levels, state_key=""))
        if join_rule is not None:
            self.add(self.new("m.room.join_rules", creator, {"join_rule": join_rule}, state_key=""))

    def default_power_levels(self, creator: str) -> dict[str, Any]:
        users = {} if self.rv.privileged_creators else {creator: 100}
        return {"users": users, "users_default": 0}

    def new(
        self,
        type_: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        event_id: str | None = None,
        prev: list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        signed_by: list[str] | None = None,
    ) -> Event:
        """An event on top of the current state (prev_events = the last event added)."""
        n = next(self._seq)
        label = type_.rsplit(".", 1)[-1]
        if event_id is None:
            event_id = f"${n}-{label}"
            if self.rv.event_format.value == 1:
                # v1/v2 event IDs carry the sending server's domain.
                event_id += ":" + (domain_of(sender) or "a.org")
        servers = signed_by if signed_by is not None else [domain_of(sender) or "a.org"]
        pdu: dict[str, Any] = {
            "event_id": event_id,
            "type": type_,
            "sender": sender,
            "content": dict(content),
            "prev_events": prev if prev is not None else ([self.last] if self.last else []),
            "auth_events": [],
            "depth": n,
            "origin_server_ts": 1_000 + n,
            "signatures": {s: {"ed25519:1": "sig"} for s in servers},
        }
        if not (type_ == "m.room.create" and self.rv.room_id_is_create_event_hash):
            pdu["room_id"] = self.room_id
        if state_key is not None:
            pdu["state_key"] = state_key
        pdu.update(extra or {})
        return Event.from_trusted(pdu, self.rv)

    def member(
        self, target: str, membership: str, sender: str | None = None, **content: Any
    ) -> Event:
        return self.new(
            "m.room.member",
            sender or target,
            {"membership": membership, **content},
            state_key=target,
        )

    def add(self, event: Event) -> Event:
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        self.last = event.event_id
        return event

    def set(self, type_: str, content: Mapping[str, Any], state_key: str = "") -> Event:
        """Put a state event sent by the creator straight into the state."""
        return self.add(self.new(type_, self.create.sender, content, state_key=state_key))

    def join(self, *users: str) -> None:
        for user in users:
            self.add(self.member(user, "join"))

    def power_levels(self, **content: Any) -> Event:
        return self.set("m.room.power_levels", content)

    def with_auth(self, event: Event, extra: list[str] | None = None) -> Event:
        """``event`` with auth_events chosen from the current state by the auth events selection
        (plus ``extra`` IDs)."""
        from pipeline.matrix.auth import auth_event_selection

        ids = [
            self.state[k].event_id for k in sorted(auth_event_selection(event)) if k in self.state
        ]
        pdu = {**event.pdu, "auth_events": ids + (extra or [])}
        return Event.from_trusted(pdu, self.rv, event.event_id)

    def events(self) -> dict[str, Event]:
        """Every state event of the room by ID (a fetcher's store)."""
        return {e.event_id: e for e in self.state.values()}

    def without(self, *keys: StateKey) -> dict[StateKey, Event]:
        return {k: v for k, v in self.state.items() if k not in keys}


# Rules a rejection may name in a room version that does not number them, because Synapse
# (and so Roomstream) applies them there too: an auth event of another room (v12's 3.5), and a
# power level a version before 10 cannot read at all (v10's 10.1 and 10.2).
APPLIED_BEFORE_NUMBERED = {"3.5", "10.1", "10.2"}


def explained(error: Any, event: Event, read: Mapping[StateKey, Event]) -> dict[str, Any]:
    """``error`` (an EventRejected of ``event`` by rules that read ``read``) as ``roomstream
    explain`` gives it, through the same record and numbering; fails the test unless it names a
    rule (the spec's, as ``event``'s room version numbers it, or Roomstream's own documented
    one), a reason, and the auth events the rules read."""
    from pipeline.matrix.explain import AUTH_RULES, explained_rule, rejection_record

    record = rejection_record(error, read)
    shown = {**record, **explained_rule(record["rule"], event.room_version)}
    assert record["rule"] in AUTH_RULES, f"{error.reason!r} names no rule ({record['rule']!r})"
    assert shown["rule_name"] and shown["reason"], shown
    if " of room version " in shown["rule"]:
        # Numbered only by a later version: only where Synapse applies the rule earlier too.
        assert record["rule"] in APPLIED_BEFORE_NUMBERED, shown
    assert shown["auth_events"] == {f"{t}|{k}": e.event_id for (t, k), e in sorted(read.items())}, (
        shown
    )
    return shown


def rules_read(event: Event, state: Mapping[StateKey, Event]) -> dict[StateKey, Event]:
    """What the rules read of ``state`` for ``event``: its entries of the auth types."""
    from pipeline.matrix.auth import auth_types_for_event

    return {k: state[k] for k in sorted(auth_types_for_event(event)) if k in state}


def rejection(event: Event, state: Mapping[StateKey, Event], **kwargs: Any) -> str | None:
    """The reason ``check_auth_rules`` rejects ``event`` for, or None when it is allowed. A
    rejection must be one the explanation names (``explained``)."""
    from pipeline.matrix.auth import check_auth_rules
    from pipeline.matrix.errors import EventRejected

    try:
        check_auth_rules(event, state, **kwargs)
    except EventRejected as e:
        explained(e, event, rules_read(event, state))
        return e.reason
    return None
