"""Rooms written as tiny graphs, for state resolution tests.

A room is a list of node specs (short IDs such as ``"PA"``) and chains of prev_events edges
written newest first (``["END", "MB", "MA", "PA", "START"]``). ``build_room`` creates the
events in topological order: each event's state before is the resolution of the states after
its prev_events, and its auth_events are the auth events the rules name in that state, as a
server creating it would choose them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.auth import auth_types_for_event
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import RoomVersion
from pipeline.matrix.state_res import resolve_state

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

ROOM_ID = "!room:example.com"
CREATE_ID = "$CREATE"


@dataclass(frozen=True)
class Node:
    """One event of a graph, before it has prev_events and auth_events."""

    id: str
    sender: str
    type: str
    state_key: str | None
    content: Mapping[str, Any] = field(default_factory=dict)


def join(node_id: str, user: str) -> Node:
    return Node(node_id, user, "m.room.member", user, {"membership": "join"})


def member(node_id: str, sender: str, target: str, membership: str) -> Node:
    return Node(node_id, sender, "m.room.member", target, {"membership": membership})


def power_levels(node_id: str, sender: str, users: Mapping[str, int], **extra: Any) -> Node:
    return Node(node_id, sender, "m.room.power_levels", "", {"users": dict(users), **extra})


def topic(node_id: str, sender: str) -> Node:
    return Node(node_id, sender, "m.room.topic", "", {"topic": node_id})


def message(node_id: str, sender: str) -> Node:
    return Node(node_id, sender, "m.room.message", None, {"body": node_id})


INITIAL_NODES = [
    Node("CREATE", ALICE, "m.room.create", "", {"creator": ALICE}),
    join("IMA", ALICE),
    power_levels("IPOWER", ALICE, {ALICE: 100}),
    Node("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
    join("IMB", BOB),
    join("IMC", CHARLIE),
    join("IMZ", ZARA),
    message("START", ZARA),
    message("END", ZARA),
]
INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


def event_id(node_id: str) -> str:
    return "$" + node_id


@dataclass
class Room:
    """The events built from a graph, and the state after each of them."""

    room_version: RoomVersion
    events: dict[str, Event]
    state_after: dict[str, dict[StateKey, str]]

    def fetch(self, eid: str) -> Event | None:
        return self.events.get(eid)

    def changed_state_at(self, node_id: str, since: str = "START") -> dict[StateKey, str]:
        """The state after ``node_id`` that differs from the state after ``since``."""
        base = self.state_after[event_id(since)]
        return {k: v for k, v in self.state_after[event_id(node_id)].items() if base.get(k) != v}

    def state_of(self, node_ids: Iterable[str]) -> dict[StateKey, str]:
        """The state map holding exactly these nodes' events."""
        return {self.events[event_id(n)].state_tuple: event_id(n) for n in node_ids}


def build_room(
    room_version: RoomVersion,
    nodes: Sequence[Node],
    edges: Sequence[Sequence[str]],
    *,
    initial: bool = True,
) -> Room:
    """Create the events of a graph in topological order (ties by node ID)."""
    specs = {n.id: n for n in [*(INITIAL_NODES if initial else []), *nodes]}
    prevs: dict[str, set[str]] = {n: set() for n in specs}
    chains = [INITIAL_EDGES, *edges] if initial else list(edges)
    for chain in chains:
        for newer, older in itertools.pairwise(chain):
            prevs[newer].add(older)

    room = Room(room_version, {}, {})
    cited_by: dict[str, set[str]] = {n: set() for n in specs}
    for n, ps in prevs.items():
        for p in ps:
            cited_by[p].add(n)
    waiting = {n: len(ps) for n, ps in prevs.items()}
    ready = [n for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ts = 0
    while ready:
        node_id = heapq.heappop(ready)
        _create_event(room, specs[node_id], sorted(prevs[node_id]), ts)
        ts += 1
        for child in sorted(cited_by[node_id]):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    assert len(room.events) == len(specs), "the graph has a cycle"
    return room


def _create_event(room: Room, node: Node, prev_nodes: list[str], ts: int) -> None:
    rv = room.room_version
    prev_ids = [event_id(p) for p in prev_nodes]
    before = resolve_state(rv, [room.state_after[p] for p in prev_ids], room.fetch)
    content = dict(node.content)
    if rv.privileged_creators and node.type == "m.room.power_levels":
        # MSC4289: room creators may not be listed in the power levels of a v12 room.
        content["users"] = {u: v for u, v in content["users"].items() if u != ALICE}
    pdu: dict[str, Any] = {
        "event_id": event_id(node.id),
        "room_id": ROOM_ID,
        "sender": node.sender,
        "type": node.type,
        "content": content,
        "origin_server_ts": ts,
        "depth": 1 + max((room.events[p].depth for p in prev_ids), default=0),
        "prev_events": prev_ids,
        "auth_events": [],
    }
    if node.state_key is not None:
        pdu["state_key"] = node.state_key
    if rv.room_id_is_create_event_hash:
        if node.type == "m.room.create":
            del pdu["room_id"]
        else:
            pdu["room_id"] = "!" + CREATE_ID[1:]
    draft = Event.from_trusted(pdu, rv)
    auth_ids = sorted(before[k] for k in auth_types_for_event(draft) if k in before)
    if rv.room_id_is_create_event_hash:
        auth_ids = [a for a in auth_ids if a != CREATE_ID]
    event = Event.from_trusted({**pdu, "auth_events": auth_ids}, rv)
    room.events[event.event_id] = event
    after = dict(before)
    if event.state_key is not None:
        after[event.state_tuple] = event.event_id
    room.state_after[event.event_id] = after


def auth_chain(events: Mapping[str, Event], start_ids: Iterable[str]) -> set[str]:
    """The union of the auth chains of ``start_ids`` in ``events``, walked here rather than by
    the resolution's own walk; the start events are not included unless one reaches another."""
    chain: set[str] = set()
    todo = [a for e in start_ids for a in events[e].auth_event_ids]
    while todo:
        event_id = todo.pop()
        if event_id not in chain:
            chain.add(event_id)
            todo.extend(events[event_id].auth_event_ids)
    return chain
