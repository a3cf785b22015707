"""Hypothesis strategies shared by the oracle tests: random room events and forked rooms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pipeline.matrix.events import StateKey
from tests.oracle._rooms import ALICE, BOB, CHARLIE, EVELYN, USERS, ZARA, EventSpec, OracleRoom

"""(type, sender, state_key, content)."""

LEVELS = [0, 10, 50, 100]


@st.composite
def power_levels_content(draw: Any, room: OracleRoom) -> dict[str, Any]:
    users = {
        u: draw(st.sampled_from(LEVELS))
        for u in (BOB, CHARLIE, ZARA, EVELYN)
        if draw(st.booleans())
    }
    extra: dict[str, Any] = {}
    for name in ("ban", "kick", "invite", "state_default", "users_default"):
        if draw(st.integers(0, 3)) == 0:
            extra[name] = draw(st.sampled_from(LEVELS))
    if draw(st.booleans()):
        extra["events"] = {
            "m.room.topic": draw(st.sampled_from(LEVELS)),
            "m.room.power_levels": draw(st.sampled_from([50, 100])),
        }
    return room.power_levels_content(users, **extra)


@st.composite
def event_specs(draw: Any, room: OracleRoom) -> EventSpec:
    """A random state event of the kinds that move power and membership around."""
    sender = draw(st.sampled_from(USERS))
    target = draw(st.sampled_from(USERS))
    kind = draw(st.integers(0, 8))
    match kind:
        case 0:
            return ("m.room.topic", sender, "", {"topic": f"by {sender}"})
        case 1:
            return ("m.room.power_levels", sender, "", draw(power_levels_content(room)))
        case 2:
            return ("m.room.member", sender, target, {"membership": "ban"})
        case 3:
            return ("m.room.member", sender, target, {"membership": "leave"})
        case 4:
            return ("m.room.member", target, target, {"membership": "join"})
        case 5:
            return ("m.room.member", target, target, {"membership": "leave"})
        case 6:
            return ("m.room.member", sender, target, {"membership": "invite"})
        case 7:
            rules = ["public", "invite"] + (["knock"] if room.rv.knock_join_rule else [])
            return ("m.room.join_rules", sender, "", {"join_rule": draw(st.sampled_from(rules))})
        case _:
            # State keyed by a user ID: only that user may send it (rule 9).
            return ("m.room.custom", sender, target, {"n": draw(st.integers(0, 3))})


# Power level values beyond the well-behaved: strings (accepted as integers before v10),
# negatives, above 100 and past the canonical JSON range's comfort zone.
ODD_LEVELS: list[Any] = [*LEVELS, -1, 101, 2**40, "50", "0", " 7", "x", None]
# Before v10 the rules only say what a users value may be ("integers (or a string that is an
# integer)"); a named level that is no integer at all is left undefined, and Synapse raises
# (ValueError, or TypeError for null) where Roomstream rejects. Nor does the spec say whether
# " 7" is "a string that is an integer" (Python's int() says yes). So before v10, named levels
# stay integers or integer strings, and a users value may also be "x" (both reject it).
OLD_NAMED_LEVELS: list[Any] = [*LEVELS, -1, 101, 2**40, "50", "0"]
OLD_USER_LEVELS: list[Any] = [*OLD_NAMED_LEVELS, "x"]


@st.composite
def odd_power_levels_content(draw: Any, room: OracleRoom) -> dict[str, Any]:
    """Power levels with odd values, odd user keys, notifications, or someone demoted."""
    content: dict[str, Any] = draw(power_levels_content(room))
    typed = room.rv.enforce_int_power_levels
    user_levels = ODD_LEVELS if typed else OLD_USER_LEVELS
    named_levels = ODD_LEVELS if typed else OLD_NAMED_LEVELS
    users = dict(content["users"])
    for _ in range(draw(st.integers(0, 2))):
        # Not "@eve:": Synapse accepts a users key with an empty server name (it only splits
        # at ":"), the spec's user ID grammar and Roomstream do not.
        key = draw(st.sampled_from([*USERS, "not-a-user", "@:example.com", "@eve"]))
        users[key] = draw(st.sampled_from(user_levels))
    if draw(st.booleans()) and ALICE in users:
        del users[ALICE]
    content["users"] = users
    if draw(st.booleans()):
        name = draw(st.sampled_from(["ban", "kick", "redact", "state_default", "users_default"]))
        content[name] = draw(st.sampled_from(named_levels))
    if draw(st.booleans()):
        content["notifications"] = {"room": draw(st.sampled_from(named_levels))}
    return content


@st.composite
def odd_event_specs(draw: Any, room: OracleRoom) -> EventSpec:
    """The ordinary kinds, plus edge cases: odd power levels, knocks, restricted joins,
    restricted join rules, messages and redactions, a second create event, aliases."""
    if draw(st.booleans()):
        ordinary: EventSpec = draw(event_specs(room))
        return ordinary
    sender = draw(st.sampled_from(USERS))
    target = draw(st.sampled_from(USERS))
    kind = draw(st.integers(0, 7))
    match kind:
        case 0:
            return ("m.room.power_levels", sender, "", draw(odd_power_levels_content(room)))
        case 1:
            return ("m.room.member", target, target, {"membership": "knock"})
        case 2:
            authoriser = draw(st.sampled_from([*USERS, "not-a-user"]))
            content = {"membership": "join", "join_authorised_via_users_server": authoriser}
            return ("m.room.member", target, target, content)
        case 3:
            rule = draw(st.sampled_from(["restricted", "knock_restricted", "private", "bogus"]))
            allow = [{"type": "m.room_membership", "room_id": "!other:example.com"}]
            return ("m.room.join_rules", sender, "", {"join_rule": rule, "allow": allow})
        case 4:
            return ("m.room.message", sender, None, {"body": "hi", "msgtype": "m.text"})
        case 5:
            gone = draw(st.sampled_from(["$gone:example.com", "$gone:other.example"]))
            return ("m.room.redaction", sender, None, {"redacts": gone})
        case 6:
            return ("m.room.create", sender, "", {"creator": sender, "room_version": "10"})
        case _:
            return ("m.room.aliases", sender, draw(st.sampled_from(["example.com", "other"])), {})


@dataclass
class ForkedRoom:
    room: OracleRoom
    state_sets: list[dict[StateKey, str]]


@st.composite
def forked_rooms(draw: Any, version: str) -> ForkedRoom:
    """A room forked into 2–4 branches after a short common trunk; the state sets are the
    states after each branch's last event. Branches sometimes merge another branch's tip in."""
    room = OracleRoom(version, keep_unauthorised=draw(st.booleans()))
    tip = room.start
    for _ in range(draw(st.integers(0, 3))):
        spec: EventSpec = draw(event_specs(room))
        tip = room.send(*spec, [tip]) or tip
    fork = tip
    tips = [fork] * draw(st.integers(2, 4))
    rounds = draw(st.integers(1, 5))
    for _ in range(rounds):
        for b in range(len(tips)):
            prevs = [tips[b]]
            other = draw(st.integers(0, 5))
            if other < len(tips) and tips[other] != tips[b]:
                prevs.append(tips[other])
            # Timestamps repeat now and then, so the event ID tie-breaks are exercised.
            ts = draw(st.integers(0, 30))
            spec = draw(event_specs(room))
            tips[b] = room.send(*spec, prevs, ts=ts) or tips[b]
    unique_tips = list(dict.fromkeys(tips))
    return ForkedRoom(room, [room.state_after[t] for t in unique_tips])


__all__ = [
    "ALICE",
    "ForkedRoom",
    "event_specs",
    "forked_rooms",
    "odd_event_specs",
    "odd_power_levels_content",
    "power_levels_content",
]
