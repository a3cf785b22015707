"""Roomstream's room processor against Synapse's receive path: the differential fuzzer in CI,
and each divergence it ever found, as a small named room.

The fuzzer (``tests/oracle/fuzz.py``, ``make fuzz``) runs random rooms through both; here a few
thousand seeds must give no divergence, and the rooms below pin what was fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.room.processor import Incoming, RoomProcessor
from tests.oracle._rooms import ALICE, BOB, CHARLIE, EVELYN, ZARA, EventSpec, OracleRoom

fuzz = pytest.importorskip("tests.oracle.fuzz")
pytest.importorskip("tests.oracle.synapse_receive")

CI_ROOMS = 3000


@pytest.mark.slow
def test_random_rooms_agree_with_synapse() -> None:
    summary = fuzz.fuzz(0, CI_ROOMS)
    reports = "\n".join(d.report() for d in summary.divergences[:3])
    assert summary.rooms == CI_ROOMS
    # The rooms exercise what the comparison is about.
    for outcome in ("rejected", "soft-failed", "decided later"):
        assert summary.counts[outcome] > CI_ROOMS // 10, (outcome, summary.counts)
    assert summary.counts["second create ok"] > CI_ROOMS // 50, summary.counts
    assert not summary.divergences, f"{len(summary.divergences)} divergences:\n{reports}"


@pytest.mark.parametrize("version", ["1", "3", "9", "10", "11", "12"])
def test_current_state_lags_when_one_extremity_gives_way_to_a_message_on_a_rejected_event(
    version: str,
) -> None:
    # The forward extremity is Alice's leave X. Alice's topic Y on an older event is
    # soft-failed; Zara's power levels P on [X, Y] is rejected; Bob's message B on [P] replaces
    # X as the only extremity. Its state (the state before P: Y's topic survives the
    # resolution, being older than the leave) is not the current state's: Synapse leaves the
    # current state as it was when one extremity gives way to one non-state event with a
    # single prev event, and so does Roomstream.
    room = OracleRoom(version, keep_unauthorised=True)
    y = room.send("m.room.topic", ALICE, "", {"topic": "stale"}, [room.start], ts=100)
    x = room.send("m.room.member", ALICE, ALICE, {"membership": "leave"}, [room.start], ts=101)
    assert x is not None and y is not None
    # X arrives before Y, so Y is soft-failed against the current state (Alice has left).
    events = list(room.events)
    events[-2], events[-1] = events[-1], events[-2]
    p = room.send(
        "m.room.power_levels", ZARA, "", room.power_levels_content({ZARA: 100}), [x, y], ts=102
    )
    assert p is not None
    before_p = room.state_before([x, y])
    assert before_p[("m.room.topic", "")] == y
    b = room.build(("m.room.message", BOB, None, {"body": "hi"}), [p], state=before_p, ts=103)
    room._store(b, before_p)
    events += [p, b.event_id]
    gen = fuzz.GeneratedRoom.of(room, [room.events[e] for e in events])
    divergence = fuzz.run_generated(gen)
    assert divergence is None, divergence.report()


# Rooms where the fuzzer once found a divergence (saved with ``--seed N --save``: the seed
# names the room of the generator of the day, the file keeps its PDUs), with what it was.
ROOMS = Path(__file__).parent / "rooms"
FOUND = {
    9: "a second create event (rejected) had an empty state, not its prev events' state",
    51: "m.federate other than true (a second create event's) let other servers in",
    72: "a second create event (rejected) had an empty state, not its prev events' state",
    129: "the auth difference left out the state sets' own events",
    776: "current state after a message on a rejected chain replaced the one extremity",
    1549: "an invite of another server's user passed in a room that does not federate",
    2358: "current state after a message on a rejected chain replaced the one extremity",
    3242: "current state after a message on a rejected chain replaced the one extremity",
    5662: "auth checks read a power levels event that a redaction had redacted in full",
    6457: "current state after a message on a rejected chain replaced the one extremity",
    6897: "current state after a message on a rejected chain replaced the one extremity",
    900009: "state resolution rejected a signed restricted join: stored events carry no signatures",
    900012: "state resolution rejected a signed restricted join: stored events carry no signatures",
    900017: "state resolution rejected a signed restricted join: stored events carry no signatures",
}


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_room_that_once_diverged_agrees_with_synapse(seed: int) -> None:
    gen = fuzz.GeneratedRoom.load(ROOMS / f"seed-{seed}.jsonl")
    divergence = fuzz.run_generated(gen)
    assert divergence is None, f"{FOUND[seed]}\n{divergence.report()}"


def _outcomes(room: OracleRoom, arrivals: list[str]) -> dict[str, str]:
    """Roomstream's outcome of each event (after checking that Synapse's is the same)."""
    return _run_both(room, arrivals)[1]


@pytest.mark.parametrize(
    ("version", "redacter", "invite"),
    [
        # v3+: Bob may redact without the redact level, and it counts: he is on Alice's server.
        ("9", BOB, "ok"),
        ("10", BOB, "ok"),
        # ... Zara is not, so her redaction does not count.
        ("10", ZARA, "rejected"),
        # v11+ keep "invite" in redacted power levels.
        ("11", BOB, "rejected"),
        # v1-v2: the rules decide by the event IDs' servers; Alice (level 100) always may.
        ("1", ALICE, "ok"),
    ],
)
def test_redacted_power_levels_are_read_redacted_by_later_auth_checks(
    version: str, redacter: str, invite: str
) -> None:
    # Alice's power levels set invite to 100; once redacted (before v11 the redaction
    # algorithm drops "invite"), the invite level is the default 0 and Charlie may invite.
    room = OracleRoom(version)
    levels = room.send(
        "m.room.power_levels",
        ALICE,
        "",
        room.power_levels_content({BOB: 0}, invite=100),
        [room.start],
        ts=100,
    )
    assert levels is not None
    redaction = room.send("m.room.redaction", redacter, None, {"redacts": levels}, [levels], ts=101)
    assert redaction is not None
    invited = room.build(
        ("m.room.member", CHARLIE, EVELYN, {"membership": "invite"}), [redaction], ts=102
    )
    room._store(invited, room.state_before([redaction]))
    outcomes = _outcomes(room, list(room.events))
    assert outcomes[redaction] == "ok"
    assert outcomes[invited.event_id] == invite


def test_redaction_that_arrives_before_the_event_it_redacts_counts_once_the_event_arrives() -> None:
    room = OracleRoom("10")
    levels = room.send(
        "m.room.power_levels", ALICE, "", room.power_levels_content({}, invite=100), [room.start]
    )
    assert levels is not None
    # The redaction does not cite the power levels: it may arrive first.
    redaction = room.send("m.room.redaction", BOB, None, {"redacts": levels}, [room.start])
    assert redaction is not None
    merge = room.send("m.room.message", ALICE, None, {"body": "merge"}, [levels, redaction])
    assert merge is not None
    invited = room.build(("m.room.member", CHARLIE, EVELYN, {"membership": "invite"}), [merge])
    room._store(invited, room.state_before([merge]))
    arrivals = list(room.events)
    arrivals.remove(redaction)
    arrivals.insert(arrivals.index(levels), redaction)
    assert _outcomes(room, arrivals)[invited.event_id] == "ok"


def bob_authorised_by_zara(membership: str) -> EventSpec:
    content = {"membership": membership, "join_authorised_via_users_server": ZARA}
    return ("m.room.member", BOB, BOB, content)


@pytest.mark.parametrize("version", ["8", "10", "12"])
def test_signed_restricted_join_on_a_fork_survives_state_resolution(version: str) -> None:
    # Bob joins again on one fork, authorised via Alice and signed by her server; Charlie is
    # kicked on the other. The authorising server's signature is checked on receipt only: the
    # join passes the iterative auth checks of the merge (Synapse's behaviour).
    room = OracleRoom(version)
    kick = room.send("m.room.member", ALICE, CHARLIE, {"membership": "leave"}, [room.start], ts=100)
    join = room.build(
        bob_authorised_by_zara("join"),
        [room.start],
        ts=101,
        signers=("other.example",),
    )
    room._store(join, room.state_before([room.start]))
    assert kick is not None
    merge = room.send("m.room.message", ALICE, None, {"body": "merge"}, [kick, join.event_id])
    assert merge is not None
    assert room.state_after[merge][("m.room.member", BOB)] == join.event_id
    assert _outcomes(room, list(room.events))[join.event_id] == "ok"


@pytest.mark.parametrize("version", ["8", "10", "12"])
def test_authorising_user_on_a_leave_needs_no_signature(version: str) -> None:
    # The spec's rule reads "if content has a join_authorised_via_users_server key"; Synapse
    # checks the authorising server's signature on joins only.
    room = OracleRoom(version)
    leave = room.build(
        bob_authorised_by_zara("leave"),
        [room.start],
    )
    room._store(leave, room.state_before([room.start]))
    assert _outcomes(room, list(room.events))[leave.event_id] == "ok"


@pytest.mark.parametrize("version", ["1", "6", "11"])
def test_second_create_event_is_rejected_with_the_state_of_its_prev_events(version: str) -> None:
    # Bob's create event on the room's latest event is rejected; Charlie's message on it has
    # the state before it (the room's), so it is accepted, as Synapse accepts it.
    room = OracleRoom(version, keep_unauthorised=True)
    second = room.send(
        "m.room.create", BOB, "", {"creator": BOB, "room_version": version}, [room.start]
    )
    assert second is not None
    message = room.build(
        ("m.room.message", CHARLIE, None, {"body": "hi"}),
        [second],
        state=room.state_after[room.start],
    )
    room._store(message, room.state_after[room.start])
    outcomes = _outcomes(room, list(room.events))
    assert outcomes[second] == "rejected"
    assert outcomes[message.event_id] == "ok"


# A create event with no prev events in a room that has one (room versions 1–11): Synapse's
# rules allow it (rule 1 reads only the event; the state-dependent rules return at once for a
# create event), and it becomes another forward extremity, a second root of the room's state.


def _second_create(
    room: OracleRoom,
    sender: str = BOB,
    *,
    ts: int = 200,
    version: str | None = "same",
    content: dict[str, object] | None = None,
) -> str:
    """A create event by ``sender`` with no prev events, naming the room's version (or
    ``version``; None: no room_version key), ``sender`` as creator, and ``content``."""
    body: dict[str, object] = {"creator": sender, **(content or {})}
    if version is not None:
        body["room_version"] = room.rv.identifier if version == "same" else version
    event = room.build(("m.room.create", sender, "", body), [], ts=ts)
    room._store(event, {})
    return event.event_id


def _two_roots(version: str) -> tuple[OracleRoom, str, str]:
    """A room of ``version`` and a second create event by Bob: the room, its create event and
    the second one."""
    room = OracleRoom(version)
    first = next(iter(room.events))
    return room, first, _second_create(room)


def _run_both(room: OracleRoom, arrivals: list[str]) -> tuple[RoomProcessor, dict[str, str]]:
    """The processor after ``arrivals`` (Synapse agreeing after every input, checked) and each
    event's outcome."""
    gen = fuzz.GeneratedRoom.of(room, [room.events[e] for e in arrivals])
    divergence = fuzz.run_generated(gen)
    assert divergence is None, divergence.report()
    processor = RoomProcessor(room.room_id)
    out: dict[str, str] = {}
    for event_id in arrivals:
        result = processor.process([Incoming(dict(room.events[event_id].pdu))])
        for ev in result.chunk.events if result.chunk else ():
            out[ev.event_id] = (
                "rejected" if ev.rejected else "soft-failed" if ev.soft_failed else "ok"
            )
    return processor, out


V1_TO_V11 = ["1", "2", "6", "10", "11"]


@pytest.mark.parametrize("version", V1_TO_V11)
def test_second_create_event_without_prev_events_becomes_another_forward_extremity(
    version: str,
) -> None:
    room, first, second = _two_roots(version)
    processor, outcomes = _run_both(room, list(room.events))
    assert outcomes[second] == "ok"
    assert processor.forward_extremities == {room.start, second}
    assert processor.state_of_group(processor.state_group_of(second)) == {
        ("m.room.create", ""): second
    }
    # The room is still the first create event's: its version, and the chunk names no creator.
    assert processor.create_event_id == first
    assert processor.room_version is not None
    assert processor.room_version.identifier == version


@pytest.mark.parametrize("version", V1_TO_V11)
def test_second_create_event_from_another_server_is_rejected_by_rule_1_2(version: str) -> None:
    room = OracleRoom(version)
    second = _second_create(room, ZARA)
    processor, outcomes = _run_both(room, list(room.events))
    assert outcomes[second] == "rejected"
    assert processor.forward_extremities == {room.start}


@pytest.mark.parametrize("version", V1_TO_V11)
def test_merge_of_the_room_and_a_second_create_event_resolves_the_create_key(
    version: str,
) -> None:
    # The merge's state resolves a conflicted (m.room.create, "") key: in v2 every key is
    # conflicted (the second root's state holds the create event only) and the create events
    # sort as power events; in v1 only the create key conflicts.
    room, first, second = _two_roots(version)
    merge = room.send("m.room.message", CHARLIE, None, {"body": "merge"}, [room.start, second])
    assert merge is not None
    processor, outcomes = _run_both(room, list(room.events))
    assert outcomes[merge] == "ok"
    assert processor.forward_extremities == {merge}
    state = processor.state_of_group(processor.state_group_of(merge))
    assert state[("m.room.create", "")] in (first, second)
    assert state[("m.room.member", ZARA)] == room.state_after[room.start][("m.room.member", ZARA)]


@pytest.mark.parametrize("version", V1_TO_V11)
def test_events_after_a_merge_with_a_second_create_event_agree_with_synapse(
    version: str,
) -> None:
    # The second create event forbids federation: once it holds the create key, Zara (on
    # another server than its sender) can send nothing.
    room = OracleRoom(version, keep_unauthorised=True)
    second = _second_create(room, content={"m.federate": False})
    merge = room.send("m.room.message", CHARLIE, None, {"body": "merge"}, [room.start, second])
    assert merge is not None
    message = room.send("m.room.message", ZARA, None, {"body": "hi"}, [merge])
    join = room.send("m.room.member", EVELYN, EVELYN, {"membership": "join"}, [merge])
    assert message is not None and join is not None
    levels = room.send(
        "m.room.power_levels", ALICE, "", room.power_levels_content({BOB: 50}), [message, join]
    )
    assert levels is not None
    kick = room.send("m.room.member", ALICE, CHARLIE, {"membership": "leave"}, [levels])
    assert kick is not None
    processor, outcomes = _run_both(room, list(room.events))
    create_at_merge = processor.state_of_group(processor.state_group_of(merge))[
        ("m.room.create", "")
    ]
    assert outcomes[message] == ("rejected" if create_at_merge == second else "ok")
    assert outcomes[join] == "ok"


@pytest.mark.parametrize("version", ["2", "10", "11"])
def test_create_events_have_power_level_0_in_the_power_ordering(version: str) -> None:
    # Zara (level 50) changes the join rules on the room's latest event; a second create
    # event forbids federation. Synapse gives a create event's sender power level 0 in the
    # reverse topological power ordering (its auth events hold no power levels and no create
    # event), so Zara's join rules are checked before the second create event takes the
    # create key, and stay; were the second create's sender the creator with 100, it would
    # come first and Zara's join rules would fail against it.
    room = OracleRoom(version)
    levels = room.send(
        "m.room.power_levels", ALICE, "", room.power_levels_content({ZARA: 50}), [room.start]
    )
    assert levels is not None
    rules = room.send("m.room.join_rules", ZARA, "", {"join_rule": "invite"}, [levels], ts=300)
    assert rules is not None
    second = _second_create(room, ts=250, content={"m.federate": False})
    merge = room.send("m.room.message", ALICE, None, {"body": "merge"}, [rules, second], ts=301)
    assert merge is not None
    processor, _ = _run_both(room, list(room.events))
    state = processor.state_of_group(processor.state_group_of(merge))
    assert state[("m.room.create", "")] == second
    assert state[("m.room.join_rules", "")] == rules
    # Bob's join, checked after both (it is no power event), fails the invite rule Zara set.
    assert ("m.room.member", BOB) not in state


@pytest.mark.parametrize(
    ("version", "named"),
    [("10", "1"), ("10", None), ("1", "10"), ("6", "12"), ("11", "org.matrix.hydra.11")],
)
def test_second_create_event_names_the_version_that_resolves_the_state_it_joins(
    version: str, named: str | None
) -> None:
    # Persisting an event, Synapse resolves the new forward extremities by the room version
    # that a create event among the events names (``_get_new_state_after_events``; without a
    # room_version key, "1"), and caches that resolution per set of state groups: an event on
    # exactly those extremities has that state before it. Here the algorithms part: v1
    # resolves only the create key and keeps Zara's membership; v2 replays every key, and
    # Zara's join fails against a create event that forbids federation.
    room = OracleRoom(version)
    second = _second_create(room, version=named, content={"m.federate": False})
    merge = room.send("m.room.message", CHARLIE, None, {"body": "merge"}, [room.start, second])
    assert merge is not None
    after = room.send("m.room.topic", ALICE, "", {"topic": "after"}, [merge])
    assert after is not None
    _, outcomes = _run_both(room, list(room.events))
    assert outcomes[second] == "ok"


@pytest.mark.parametrize("version", ["1", "10"])
def test_second_create_event_naming_an_unknown_version_is_rejected_by_rule_1_3(
    version: str,
) -> None:
    room = OracleRoom(version)
    second = _second_create(room, version="99")
    _, outcomes = _run_both(room, list(room.events))
    assert outcomes[second] == "rejected"
