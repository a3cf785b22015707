"""State resolution v2 and v2.1: rooms as tiny graphs, and the algorithm's building blocks.

The graph scenarios are the classic ones (a ban racing a power levels change, a topic reset,
join rule evasion, ...): each builds a room whose history forks and asserts the state where
the forks meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.matrix.errors import MissingEvents
from pipeline.matrix.events import Event
from pipeline.matrix.room_versions import RoomVersion, room_version
from pipeline.matrix.state_res import resolve_state
from pipeline.matrix.state_res._common import EventLoader, sender_power_level, walk_auth_chains
from pipeline.matrix.state_res.v2 import (
    auth_difference,
    conflicted_state_subgraph,
    mainline_order,
    reverse_topological_power_order,
)
from tests.unit.matrix._state_res_graphs import (
    ALICE,
    BOB,
    CHARLIE,
    EVELYN,
    ZARA,
    Node,
    build_room,
    event_id,
    join,
    member,
    message,
    power_levels,
    topic,
)

V2_VERSIONS = [room_version(v) for v in ("2", "6", "10", "11", "12")]


def _ids(*nodes: str) -> set[str]:
    return {event_id(n) for n in nodes}


# A demotion's events: Alice's topics and power levels, the second demoting Bob, and Bob's power
# levels and topic, sent under the first.
_DEMOTION = [
    topic("T1", ALICE),
    power_levels("PA1", ALICE, {ALICE: 100, BOB: 50}),
    topic("T2", ALICE),
    power_levels("PA2", ALICE, {ALICE: 100, BOB: 0}),
    power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
    topic("T3", BOB),
]


GRAPH_SCENARIOS: list[tuple[str, list[Node], list[list[str]], list[str]]] = [
    (
        # Bob's power levels event races Alice banning him: the ban wins (it is sorted first,
        # being sent by a more powerful user) and Bob's change no longer passes auth.
        "ban_beats_power_levels_change_by_banned_user",
        [
            power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
            join("MA", ALICE),
            member("MB", ALICE, BOB, "ban"),
            power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
        ],
        [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]],
        ["PA", "MA", "MB"],
    ),
    (
        # A join on one fork, the join rules turning private on the other: the join loses.
        "join_rule_change_rejects_concurrent_join",
        [
            Node("JR", ALICE, "m.room.join_rules", "", {"join_rule": "private"}),
            join("ME", EVELYN),
        ],
        [["END", "JR", "START"], ["END", "ME", "START"]],
        ["JR"],
    ),
    (
        # A chain of power levels changes against its own start: the newest one stays.
        "power_levels_chain_beats_its_own_ancestor",
        [
            power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
            power_levels("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
            power_levels("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
        ],
        [["END", "PC", "PB", "PA", "START"], ["END", "PA"]],
        ["PC"],
    ),
    (
        # Bob's topic was sent under power levels Alice has since replaced with ones demoting
        # him: Alice's topic and power levels win.
        "topic_of_demoted_user_loses",
        _DEMOTION,
        [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]],
        ["PA2", "T2"],
    ),
    (
        # Bob's topic, then his ban, on one fork; the other fork still has the first topic:
        # the ban stays, and Bob's topic no longer passes auth, so the topic resets to T1.
        "topic_reset_after_ban",
        [
            topic("T1", ALICE),
            power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", BOB),
            member("MB", ALICE, BOB, "ban"),
        ],
        [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]],
        ["T1", "MB", "PA"],
    ),
    (
        # A later topic by Alice, after the forks merged at a message, wins over both forks.
        "topic_after_merge_wins",
        [
            *_DEMOTION,
            message("MZ1", ZARA),
            topic("T4", ALICE),
        ],
        [
            ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
            ["END", "MZ1", "T3", "PB", "PA1"],
        ],
        ["T4", "PA2"],
    ),
    (
        # Mainline ordering: T4 is newer than T3 but cites older power levels (PB, which loses
        # to PA2), so T3, based on the resolved power levels, is applied last and wins.
        "mainline_ordering_prefers_topic_on_resolved_power_levels",
        [
            topic("T1", ALICE),
            power_levels("PA1", ALICE, {ALICE: 100, BOB: 50}),
            topic("T2", ALICE),
            power_levels("PA2", ALICE, {ALICE: 100, BOB: 50}, events={"m.room.power_levels": 100}),
            power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
            topic("T3", BOB),
            topic("T4", ALICE),
        ],
        [
            ["END", "T3", "PA2", "T2", "PA1", "T1", "START"],
            ["END", "T4", "PB", "PA1"],
        ],
        ["T3", "PA2"],
    ),
]


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize(
    ("nodes", "edges", "expected"),
    [pytest.param(n, e, x, id=name) for name, n, e, x in GRAPH_SCENARIOS],
)
def test_graph_scenario_resolves_to_expected_state(
    rv: RoomVersion, nodes: list[Node], edges: list[list[str]], expected: list[str]
) -> None:
    room = build_room(rv, nodes, edges)
    changed = room.changed_state_at("END")
    want = room.state_of(expected)
    # Keys the scenario names may equal their value at START (the topic reset).
    got = {k: v for k, v in room.state_after[event_id("END")].items() if k in want}
    got.update(changed)
    assert got == want


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_concurrent_joins_are_both_kept(rv: RoomVersion) -> None:
    room = build_room(
        rv,
        [
            Node("CREATE", ALICE, "m.room.create", "", {"creator": ALICE}),
            join("IMA", ALICE),
            Node("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
            join("IMB", BOB),
            join("IMC", CHARLIE),
        ],
        [["IMB", "IJR", "IMA", "CREATE"], ["IMC", "IJR"]],
        initial=False,
    )
    at_bob = room.state_after[event_id("IMB")]
    at_charlie = room.state_after[event_id("IMC")]
    resolved = resolve_state(rv, [at_bob, at_charlie], room.fetch)
    assert resolved == room.state_of(["CREATE", "IMA", "IJR", "IMB", "IMC"])


# --- building blocks -------------------------------------------------------------------------


def _plain_events(
    rv: RoomVersion, auth: dict[str, list[str]], **pdu_fields: Any
) -> dict[str, Event]:
    """State events with the given auth edges, all sent by one user at the same time."""
    events = {}
    for eid, auth_ids in auth.items():
        pdu = {
            "event_id": eid,
            "room_id": "!r:example.com",
            "sender": ALICE,
            "type": "m.room.topic",
            "state_key": "",
            "content": {},
            "origin_server_ts": 0,
            "prev_events": [],
            "auth_events": auth_ids,
            **pdu_fields,
        }
        events[eid] = Event.from_trusted(pdu, rv)
    return events


def test_reverse_topological_power_ordering_is_lexicographically_smallest() -> None:
    # Equal power and timestamps: the event ID breaks ties, among events whose auth events
    # are all already placed ("o" before everything citing it).
    events = _plain_events(
        room_version("10"),
        {"$l": ["$o"], "$m": ["$n", "$o"], "$n": ["$o"], "$o": [], "$p": ["$o"]},
    )
    loader = EventLoader(events.get)
    order = reverse_topological_power_order(loader, ["$l", "$m", "$n", "$p"], set(events))
    assert order == ["$o", "$l", "$n", "$m", "$p"]


def test_reverse_topological_power_ordering_puts_more_powerful_sender_first() -> None:
    room = build_room(
        room_version("10"),
        [
            member("Z_KICK", ALICE, ZARA, "leave"),
            power_levels("P_BOB", BOB, {ALICE: 100, BOB: 50}),
        ],
        [["END", "Z_KICK", "START"], ["END", "P_BOB", "START"]],
    )
    loader = EventLoader(room.fetch)
    # The timestamps and IDs favour Bob's event (created first); Alice's power decides.
    bob, alice = event_id("P_BOB"), event_id("Z_KICK")
    assert room.events[bob].origin_server_ts < room.events[alice].origin_server_ts
    order = reverse_topological_power_order(loader, [bob, alice], {bob, alice})
    assert order == [alice, bob]


def test_auth_difference_counts_the_state_sets_own_events_as_synapse_does() -> None:
    rv = room_version("10")
    events = _plain_events(
        rv,
        {
            "$root": [],
            "$shared": ["$root"],
            "$only_a": ["$shared"],
            "$a": ["$only_a"],
            "$b": ["$shared"],
            "$u": ["$root"],
        },
    )
    loader = EventLoader(events.get)
    k = ("m.room.topic", "")
    u = ("m.room.name", "")
    sets = [{k: "$a", u: "$u"}, {k: "$b", u: "$u"}]
    diff = auth_difference(sets, {u: "$u"}, [k], loader, None)
    # C_i holds the set's own events: $a and $b are in one C_i each.
    assert diff == {"$a", "$only_a", "$b"}
    # The caller's auth chain index gives the same answer.
    via_index = auth_difference(
        sets, {u: "$u"}, [k], loader, lambda ids: walk_auth_chains(loader, ids)
    )
    assert via_index == diff


def test_conflicted_state_subgraph_is_the_events_between_conflicted_events() -> None:
    # $c1 -> $mid -> $c2 -> $base, and a side branch $c1 -> $side that reaches no conflict.
    events = _plain_events(
        room_version("12"),
        {
            "$base": [],
            "$c2": ["$base"],
            "$mid": ["$c2"],
            "$side": ["$base"],
            "$c1": ["$mid", "$side"],
        },
    )
    loader = EventLoader(events.get)
    assert conflicted_state_subgraph(loader, {"$c1", "$c2"}) == {"$c1", "$mid", "$c2"}
    assert conflicted_state_subgraph(loader, {"$c1", "$side"}) == {"$c1", "$side"}
    # No path between them: $base is behind both, but no conflicted event is behind $base.
    assert conflicted_state_subgraph(loader, {"$mid", "$side"}) == set()


def test_mainline_ordering_sorts_by_position_then_timestamp_then_event_id() -> None:
    rv = room_version("10")

    def pl(eid: str, auth: list[str]) -> dict[str, Any]:
        return {
            "event_id": eid,
            "room_id": "!r:example.com",
            "sender": ALICE,
            "type": "m.room.power_levels",
            "state_key": "",
            "content": {},
            "origin_server_ts": 0,
            "prev_events": [],
            "auth_events": auth,
        }

    def ev(eid: str, auth: list[str], ts: int) -> dict[str, Any]:
        return {**pl(eid, auth), "type": "m.room.topic", "origin_server_ts": ts}

    pdus = [
        pl("$P0", []),
        pl("$P1", ["$P0"]),
        pl("$P2", ["$P1"]),
        pl("$off", ["$P0"]),  # off the mainline, based on P0
        ev("$on_p2", ["$P2"], 5),
        ev("$on_p1", ["$P1"], 9),
        ev("$on_off", ["$off"], 1),
        ev("$none_b", [], 3),
        ev("$none_a", [], 3),
        ev("$on_p1_early", ["$P1"], 2),
    ]
    events = {p["event_id"]: Event.from_trusted(p, rv) for p in pdus}
    loader = EventLoader(events.get)
    order = mainline_order(
        loader,
        ["$on_p2", "$on_p1", "$on_off", "$none_b", "$none_a", "$on_p1_early"],
        "$P2",
    )
    # No power levels at all (position ∞) first, then P0-based (via $off), P1, P2.
    assert order == ["$none_a", "$none_b", "$on_off", "$on_p1_early", "$on_p1", "$on_p2"]


# --- inputs and outputs ----------------------------------------------------------------------


def _ban_room(rv: RoomVersion) -> Any:
    return build_room(
        rv,
        [
            power_levels("PA", ALICE, {ALICE: 100, BOB: 50}),
            member("MB", ALICE, BOB, "ban"),
            power_levels("PB", BOB, {ALICE: 100, BOB: 50}),
        ],
        [["END", "MB", "PA", "START"], ["END", "PB", "PA"]],
    )


def _fork_states(room: Any) -> Sequence[dict[Any, str]]:
    return [room.state_after[event_id("MB")], room.state_after[event_id("PB")]]


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_unknown_conflicted_event_raises_missing_events(rv: RoomVersion) -> None:
    room = _ban_room(rv)
    gone = event_id("PB")

    def fetch(eid: str) -> Event | None:
        return None if eid == gone else room.events.get(eid)

    with pytest.raises(MissingEvents) as info:
        resolve_state(rv, _fork_states(room), fetch)
    assert gone in info.value.event_ids


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_auth_chain_index_gives_same_result_as_walking(rv: RoomVersion) -> None:
    room = _ban_room(rv)
    loader = EventLoader(room.fetch)
    calls: list[int] = []

    def index(ids: Any) -> set[str]:
        calls.append(1)
        return walk_auth_chains(loader, ids)

    walked = resolve_state(rv, _fork_states(room), room.fetch)
    indexed = resolve_state(rv, _fork_states(room), room.fetch, auth_chain_ids=index)
    assert calls, "the index is used"
    assert indexed == walked


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_rejected_event_is_neither_used_nor_admitted_in_iterative_auth_checks(
    rv: RoomVersion,
) -> None:
    # "Rejected auth events are deliberately excluded from use in the iterative auth checks":
    # if Alice's ban is rejected, Bob is not banned when his power levels event is checked.
    room = _ban_room(rv)
    states = _fork_states(room)
    assert resolve_state(rv, states, room.fetch)[("m.room.power_levels", "")] == event_id("PA")
    rejected = {event_id("MB")}
    resolved = resolve_state(rv, states, room.fetch, is_rejected=rejected.__contains__)
    assert resolved[("m.room.power_levels", "")] == event_id("PB")
    # The spec would check the rejected ban again "as usual" (it passes); Synapse never admits
    # a previously rejected event, so Bob's membership stays what the other side has.
    assert resolved[("m.room.member", BOB)] != event_id("MB")


def test_no_state_sets_resolve_to_empty_state() -> None:
    assert resolve_state(room_version("10"), [], lambda _: None) == {}


@pytest.mark.parametrize("rv", V2_VERSIONS, ids=lambda rv: f"v{rv.identifier}")
def test_identical_state_sets_need_no_events(rv: RoomVersion) -> None:
    state = {("m.room.create", ""): "$c", ("m.room.topic", ""): "$t"}
    assert resolve_state(rv, [state, dict(state)], lambda _: None) == state


@pytest.mark.parametrize(
    ("version", "sender", "power_levels_content", "expected"),
    [
        # Without power levels the creator has 100 and everyone else 0.
        ("10", ALICE, None, 100),
        ("10", BOB, None, 0),
        # With them: users[sender], else users_default, else 0.
        ("10", BOB, {"users": {BOB: 42}}, 42),
        ("10", BOB, {"users": {}, "users_default": 7}, 7),
        ("10", ALICE, {"users": {}}, 0),
        # v1–v9 read string levels as integers.
        ("2", BOB, {"users": {BOB: " 25 "}}, 25),
        # v12 (MSC4289): the creators have infinite power whatever the power levels say.
        ("12", ALICE, {"users": {}}, float("inf")),
        ("12", CHARLIE, {"users": {}}, float("inf")),  # an additional creator
        ("12", BOB, {"users": {BOB: 99}}, 99),
    ],
)
def test_sender_power_level_is_read_from_the_events_auth_events(
    version: str, sender: str, power_levels_content: dict[str, Any] | None, expected: float
) -> None:
    rv = room_version(version)
    room_id = "!CREATE" if rv.room_id_is_create_event_hash else "!r:example.com"
    create: dict[str, Any] = {
        "event_id": "$CREATE",
        "sender": ALICE,
        "type": "m.room.create",
        "state_key": "",
        "content": {"creator": ALICE, "room_version": version, "additional_creators": [CHARLIE]},
        "prev_events": [],
        "auth_events": [],
    }
    if not rv.room_id_is_create_event_hash:
        create["room_id"] = room_id
    pdus = [create]
    auth = [] if rv.room_id_is_create_event_hash else ["$CREATE"]
    if power_levels_content is not None:
        pdus.append(
            {
                "event_id": "$PL",
                "room_id": room_id,
                "sender": ALICE,
                "type": "m.room.power_levels",
                "state_key": "",
                "content": power_levels_content,
                "prev_events": [],
                "auth_events": auth,
            }
        )
        auth = [*auth, "$PL"]
    pdus.append(
        {
            **pdus[-1],
            "event_id": "$E",
            "sender": sender,
            "type": "m.room.topic",
            "room_id": room_id,
            "content": {},
            "auth_events": auth,
        }
    )
    events = {p["event_id"]: Event.from_trusted(p, rv) for p in pdus}
    assert sender_power_level(EventLoader(events.get), events["$E"]) == expected


@pytest.mark.parametrize("version", ["2", "10", "11", "12"])
def test_sender_power_level_of_a_create_event_is_0(version: str) -> None:
    # A create event has no auth events: no power levels and no create event name its
    # sender's power, which is 0, as Synapse's _get_power_level_for_sender gives it (the
    # reverse topological power ordering of a room with two create events reads it).
    rv = room_version(version)
    pdu: dict[str, Any] = {
        "event_id": "$CREATE",
        "sender": ALICE,
        "type": "m.room.create",
        "state_key": "",
        "content": {"creator": ALICE, "room_version": version},
        "prev_events": [],
        "auth_events": [],
    }
    if not rv.room_id_is_create_event_hash:
        pdu["room_id"] = "!r:example.com"
    create = Event.from_trusted(pdu, rv)
    assert sender_power_level(EventLoader({"$CREATE": create}.get), create) == 0
