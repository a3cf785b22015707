"""Decision records: what the deciding code notes about a decision while it makes it.

The auth rules' callers, state resolution and the room processor take an optional
``Recorder``. When one is given they append a ``Note`` at each step that decides something
(the conflicted keys of a resolution, each iterative auth check, the power and mainline
orderings, a rejection with its rule); when none is (the hot path) every hook is one
``is not None`` test and nothing is built. The records are therefore the decisions
themselves, never a second implementation that could tell another story.

Rule numbers: ``EventRejected.rule`` numbers the authorization rules as room version 12 does
(the numbering the code's comments quote); ``spec_rule`` turns that into the number the
event's own room version gives the same rule, and ``AUTH_RULES`` says what each rule asks. One
rule is Roomstream's own, where no spec rule decides and Roomstream keeps to Synapse
(``REJECTED_BEFORE``; docs/synapse-parity.md).
``rejection_record`` and ``cited_auth_events`` make a rejection's record, the same for every
caller, so the explanation of a rejection is built one way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event, EventFetcher, StateKey
from pipeline.matrix.power_levels import create_event_id_for_room
from pipeline.matrix.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

# Roomstream's own rule, where no spec rule decides: a previously rejected event in the
# iterative auth checks (kept out, as Synapse keeps it).
REJECTED_BEFORE = "roomstream:rejected-before"


@dataclass(frozen=True, slots=True)
class Note:
    """One step of a decision. ``event_id`` is the event being decided when it was noted
    (None outside one, e.g. the current state moving); ``data`` is JSON-friendly."""

    kind: str
    event_id: str | None
    data: dict[str, Any]


@dataclass(slots=True)
class Recorder:
    """Collects notes in the order the decisions were made."""

    notes: list[Note] = field(default_factory=list)
    current: str | None = None

    def begin(self, event_id: str | None) -> None:
        """Notes from now on are about deciding ``event_id`` (None: about no one event)."""
        self.current = event_id

    def note(self, kind: str, **data: Any) -> None:
        self.notes.append(Note(kind, self.current, data))


# The rules a rejection can name, in room version 12's numbering (``EventRejected.rule``), each
# with what it asks in a few words; ``aliases.N`` and ``redaction`` are rules v12 no longer has.
# A rule that is Roomstream's own, not the spec's, says so and where it is documented.
AUTH_RULES: dict[str, str] = {
    "1.1": "a create event has no prev events",
    "1.2": "a create event's room ID is on its sender's server (v12: it has no room ID)",
    "1.3": "a create event names a room version that exists",
    "1.4": "a create event's content names its creator (v1–v10), or its additional creators "
    "are user IDs (v12)",
    "2": "the room ID names an accepted create event",
    "3.1": "no two auth events share a type and state key",
    "3.2": "the auth events are state events the auth events selection picks",
    "3.3": "no auth event was itself rejected",
    "3.4": "a create event is among the auth events",
    "3.5": "every auth event is of the event's room",
    "4": "a room whose create event sets m.federate to false admits its creator's server only",
    "aliases.1": "an m.room.aliases event has a state key",
    "aliases.2": "an m.room.aliases event's state key is its sender's server",
    "5.1": "a membership event has a state key and a membership",
    "5.2": "a join authorised via a user is signed by that user's server",
    "5.3.2": "a user joins only themselves",
    "5.3.3": "a banned user cannot join",
    "5.3.4": "an invite or knock room admits the joins of invited or joined users only",
    "5.3.5.2": "a restricted join is authorised via a joined user at the invite level",
    "5.3.7": "the join rule admits no join",
    "5.4.1.1": "a banned user cannot be invited by a third-party invite",
    "5.4.1.2": "a third-party invite carries a signed object",
    "5.4.1.3": "a third-party invite's signed object has an mxid and a token",
    "5.4.1.4": "a third-party invite's mxid is the invited user",
    "5.4.1.5": "a third-party invite's token names an m.room.third_party_invite of the room",
    "5.4.1.6": "a third-party invite is completed by the sender of the m.room.third_party_invite",
    "5.4.1.8": "a third-party invite is signed by a key of its m.room.third_party_invite",
    "5.4.2": "an inviter is joined",
    "5.4.3": "a joined or banned user cannot be invited",
    "5.4.5": "an inviter has the invite level",
    "5.5.1": "a user leaves only from invite, join or knock",
    "5.5.2": "a user who kicks or unbans is joined",
    "5.5.3": "an unban needs the ban level",
    "5.5.5": "a kick needs the kick level and a level above the target's",
    "5.6.1": "a user who bans is joined",
    "5.6.3": "a ban needs the ban level and a level above the target's",
    "5.7.1": "a knock needs a knock join rule",
    "5.7.2": "a user knocks only for themselves",
    "5.7.4": "a banned, invited or joined user cannot knock",
    "5.8": "the membership is one the room version knows",
    "6": "the sender is joined",
    "7": "an m.room.third_party_invite needs the invite level",
    "8": "the sender has the power level the event type requires",
    "9": "a state key starting with @ is the sender's own",
    "10.1": "power levels' named levels are integers",
    "10.2": "power levels' events and notifications map to integers",
    "10.3": "power levels' users map user IDs to integers",
    "10.4": "power levels do not list a room creator in users",
    "10.6": "a named level that changes is not above the sender's level, before or after",
    "10.7": "an events or notifications entry that changes was not above the sender's level",
    "10.8": "an events or notifications entry that changes is not above the sender's level",
    "10.9": "another user's level that changes was below the sender's",
    "10.10": "a user's level that changes is not above the sender's",
    "redaction": "a redaction needs the redact level or the redacted event's server (v1–v2)",
    REJECTED_BEFORE: "the iterative auth checks never admit a previously rejected event: "
    "Synapse's rule, not the spec's (docs/synapse-parity.md)",
}


def spec_rule(rule: str, room_version: RoomVersion) -> str:
    """``rule`` (room version 12's numbering, as ``EventRejected.rule`` gives it) in the
    numbering of ``room_version``'s authorization rules.

    The top level: v12 added rule 2 (the room ID names the create event) and v6 dropped the
    ``m.room.aliases`` rule 4 of v1–v5, so v1–v5 number rules 3 and 4 one less and the rest
    the same, v6–v11 number everything after rule 2 one less. Within rule 5 (membership), v1–v7
    have no join authorised via a user (5.2) or restricted join (5.3.5) and v1–v6 no knock
    (5.7); within rule 10 (power levels), v12 added 10.4 and v10 added 10.1 and 10.2. A rule
    the version does not number is named as the first version that does, e.g. "3.5 of room
    version 12". ``aliases.N`` is v1–v5's 4.N, ``redaction`` v1–v2's 11.3; a rule of
    Roomstream's own keeps its name.
    """
    if not rule:
        return rule
    if rule.startswith("aliases."):
        return "4." + rule.removeprefix("aliases.")
    if rule == "redaction":
        return "11.3"
    parts = rule.split(".")
    if room_version.room_id_is_create_event_hash or not all(p.isdigit() for p in parts):
        return rule
    numbers = [int(p) for p in parts]
    renumbered = _renumber(numbers, room_version)
    if renumbered is None:
        first = _first_numbered_in(numbers)
        return f"{spec_rule(rule, KNOWN_ROOM_VERSIONS[first])} of room version {first}"
    return ".".join(str(n) for n in renumbered)


def _renumber(numbers: list[int], rv: RoomVersion) -> list[int] | None:
    """v12's rule ``numbers`` as a v1–v11 room version numbers it; None where it has none."""
    top, sub = numbers[0], numbers[1:]
    if top == 2 or (top == 3 and sub[:1] == [5]):
        return None
    if top == 3:
        return [2, *sub]
    if top == 4:
        return [3]
    if top == 5:
        member = _member_rule(sub, rv)
        if member is None:
            return None
        sub = member
    if top == 10:
        power = _power_levels_rule(sub, rv)
        if power is None:
            return None
        sub = power
    if top >= 5 and not rv.special_case_aliases_auth:
        top -= 1
    return [top, *sub]


def _member_rule(sub: list[int], rv: RoomVersion) -> list[int] | None:
    if rv.restricted_join_rule or not sub:
        return sub  # v8+: numbered as v12 numbers them
    head, rest = sub[0], sub[1:]
    if head == 1:
        return sub
    if head == 2 or (head == 3 and rest[:1] == [5]):
        return None
    if head == 3:
        # The join rules without the restricted one (5.3.5): public 5.2.5, otherwise 5.2.6.
        return [2, *([rest[0] - 1, *rest[1:]] if rest and rest[0] > 5 else rest)]
    if head in (4, 5, 6):
        return [head - 1, *rest]
    if head == 7:
        return [6, *rest] if rv.knock_join_rule else None
    return [7 if rv.knock_join_rule else 6, *rest]


def _power_levels_rule(sub: list[int], rv: RoomVersion) -> list[int] | None:
    if not sub:
        return sub
    head, rest = sub[0], sub[1:]
    if head == 4:
        return None
    if rv.enforce_int_power_levels:
        return [head if head < 4 else head - 1, *rest]
    if head in (1, 2):
        return None
    return [1 if head == 3 else head - 3, *rest]


def _first_numbered_in(numbers: list[int]) -> str:
    """The first room version that numbers v12's rule ``numbers`` (one that some do not)."""
    top, sub = numbers[0], numbers[1:]
    if top == 5 and (sub[:1] == [2] or sub[:2] == [3, 5]):
        return "8"
    if top == 5 and sub[:1] == [7]:
        return "7"
    if top == 10 and sub[:1] in ([1], [2]):
        return "10"
    return "12"


def rule_name(rule: str) -> str | None:
    """What ``rule`` (v12's numbering, or a named rule) asks, in a few words."""
    return AUTH_RULES.get(rule)


def auth_events_read(event: Event, fetch_event: EventFetcher) -> dict[StateKey, Event]:
    """The auth events of ``event`` that the rules on them read: the known state events, and
    from room version 12 the create event its room ID names."""
    read: dict[StateKey, Event] = {}
    implied = []
    if event.room_version.room_id_is_create_event_hash and event.type != "m.room.create":
        implied.append(create_event_id_for_room(event.room_id))
    for auth_id in [*implied, *event.auth_event_ids]:
        found = fetch_event(auth_id)
        if found is not None and found.state_key is not None:
            read[found.state_tuple] = found
    return read


def cited_auth_events(auth_state: Mapping[StateKey, Event]) -> dict[str, str]:
    """The events a check read, by "type|state_key", for a decision record."""
    return {f"{t}|{k}": e.event_id for (t, k), e in sorted(auth_state.items())}


def rejection_record(error: EventRejected, auth_state: Mapping[StateKey, Event]) -> dict[str, Any]:
    """The record of a rejection (or soft-fail) by the rules that read ``auth_state``."""
    return {
        "rule": error.rule,
        "reason": error.reason,
        "auth_events": cited_auth_events(auth_state),
    }


def explained_rule(rule: str, room_version: RoomVersion | None) -> dict[str, Any]:
    """A recorded rule as an explanation gives it: as ``room_version`` numbers it, and what it
    asks (None when the rule is no named one)."""
    return {
        "rule": spec_rule(rule, room_version) if room_version is not None else rule,
        "rule_name": rule_name(rule),
    }
