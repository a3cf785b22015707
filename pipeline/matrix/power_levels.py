"""Power levels: reading ``m.room.power_levels`` and room creators, per room version.

Owns the numbers the authorization rules and state resolution compare: a user's power level,
the *required power level* of an event type, the named levels (invite, kick, ban, redact), their
defaults when the room has no power levels event, and who the room creators are.

Version differences handled here:

- v1–v9 accept power level values written as strings of an integer (``" +100 "``); v1–v5 also
  accept floats, truncated towards zero. v10+ accept JSON integers only.
- v1–v10 name the creator in the create event's ``content.creator``; v11+ use its ``sender``.
  Without a power levels event, the creator has level 100 and everyone else 0.
- v12+: the room creators (the create event's sender plus ``content.additional_creators``) have
  an infinitely high power level, whatever the power levels event says.

Reading an already accepted power levels event is lenient (an unreadable value counts as its
default); checking a new one is strict (the power levels rules in ``pipeline.matrix.auth``).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from pipeline.matrix.errors import MissingEvents
from pipeline.matrix.events import Event, EventFetcher, StateKey
from pipeline.matrix.room_versions import RoomVersion

PowerLevel: TypeAlias = int | float
"""A user's power level: an integer, or ``math.inf`` for a v12+ room creator."""

CREATOR_POWER_LEVEL: Final[float] = math.inf
"""v12+ (MSC4289): room creators have an infinitely high power level."""

# The defaults of the m.room.power_levels schema, used for absent keys and absent events.
DEFAULT_USERS_DEFAULT: Final = 0
DEFAULT_EVENTS_DEFAULT: Final = 0
DEFAULT_STATE_DEFAULT: Final = 50
DEFAULT_INVITE: Final = 0
DEFAULT_KICK: Final = 50
DEFAULT_BAN: Final = 50
DEFAULT_REDACT: Final = 50
DEFAULT_NOTIFICATIONS_ROOM: Final = 50
# v1–v11: "If the room contains no m.room.power_levels event, the room's creator has a power
# level of 100, and all other users have a power level of 0."
CREATOR_LEVEL_WITHOUT_POWER_LEVELS: Final = 100

NAMED_LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": DEFAULT_USERS_DEFAULT,
    "events_default": DEFAULT_EVENTS_DEFAULT,
    "state_default": DEFAULT_STATE_DEFAULT,
    "ban": DEFAULT_BAN,
    "redact": DEFAULT_REDACT,
    "kick": DEFAULT_KICK,
    "invite": DEFAULT_INVITE,
}
"""The integer-valued top-level keys of power levels content, with their defaults."""

POWER_LEVELS_KEY: Final[StateKey] = ("m.room.power_levels", "")
CREATE_KEY: Final[StateKey] = ("m.room.create", "")

# v1–v9 "stringy" power levels: base 10 digits, optional sign, optional surrounding whitespace.
_STRINGY_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*")


def parse_level(value: object, room_version: RoomVersion) -> int | None:
    """A power level value as an integer, or None when the room version does not accept it.

    v10+ (enforce_int_power_levels): JSON integers only. v1–v9: also strings representing an
    integer. v1–v5 (no strict canonical JSON): also finite floats, truncated at the decimal
    point. Booleans are never levels, although Python counts them as ints.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if room_version.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        m = _STRINGY_INT.fullmatch(value)
        return int(m.group(1)) if m else None
    if isinstance(value, float) and not room_version.strict_canonical_json:
        return int(value) if math.isfinite(value) else None
    return None


def room_creators(create_event: Event) -> frozenset[str]:
    """The room creators named by ``create_event``, per its room version.

    v12+: the sender plus every string in ``content.additional_creators``. v11: the sender.
    v1–v10: ``content.creator`` (empty when absent, which the create rules reject anyway).
    """
    rv = create_event.room_version
    if not rv.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset([creator]) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if rv.privileged_creators:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(c for c in extra if isinstance(c, str))
    return frozenset(creators)


@dataclass(frozen=True, slots=True)
class PowerLevels:
    """The levels of one power levels event (or the defaults when there is none).

    Built leniently: a value the room version cannot read counts as absent, so that state
    already accepted never stops a decision.
    """

    exists: bool
    users: Mapping[str, int] = field(default_factory=dict)
    users_default: int = DEFAULT_USERS_DEFAULT
    events: Mapping[str, int] = field(default_factory=dict)
    events_default: int = DEFAULT_EVENTS_DEFAULT
    state_default: int = DEFAULT_STATE_DEFAULT
    invite: int = DEFAULT_INVITE
    kick: int = DEFAULT_KICK
    ban: int = DEFAULT_BAN
    redact: int = DEFAULT_REDACT
    notifications: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Event | None, room_version: RoomVersion) -> PowerLevels:
        if event is None:
            return _NO_POWER_LEVELS
        cached = _PARSED.get(id(event))
        if cached is not None and cached[0] is event and cached[1] is room_version:
            return cached[2]
        levels = cls._parse(event, room_version)
        # Room processors run on several threads: evicting and inserting happen under a lock.
        with _PARSED_LOCK:
            if len(_PARSED) >= _PARSED_MAX:
                # Oldest first: dicts keep insertion order.
                del _PARSED[next(iter(_PARSED))]
            _PARSED[id(event)] = (event, room_version, levels)
        return levels

    @classmethod
    def _parse(cls, event: Event, room_version: RoomVersion) -> PowerLevels:
        content = event.content
        named = {
            name: _level_or(content.get(name), default, room_version)
            for name, default in NAMED_LEVEL_DEFAULTS.items()
        }
        return cls(
            exists=True,
            users=_level_map(content.get("users"), room_version),
            events=_level_map(content.get("events"), room_version),
            notifications=_level_map(content.get("notifications"), room_version),
            **named,
        )

    def named(self, name: str) -> int:
        """One of ``NAMED_LEVEL_DEFAULTS``' keys, e.g. ``"invite"``."""
        value: int = getattr(self, name)
        return value

    def required_level(self, event_type: str, is_state: bool) -> int:
        """The *required power level* of an event type: ``events[type]`` if listed, else
        ``state_default`` for state events or ``events_default`` for the others."""
        if event_type in self.events:
            return self.events[event_type]
        return self.state_default if is_state else self.events_default

    def listed_level(self, user_id: str) -> int:
        """The user's level per this event alone: ``users[user_id]``, else ``users_default``."""
        return self.users.get(user_id, self.users_default)


_NO_POWER_LEVELS: Final = PowerLevels(exists=False)

# Parsed power levels by event object. A room's power levels event is read for every event
# authorised against it, and parsing a large ``users`` map each time dominates. Keyed by
# identity (the entry keeps the event alive, so the id cannot be reused while cached), never by
# event ID: v1/v2 event IDs are chosen by servers and are not proof of content.
_PARSED: dict[int, tuple[Event, RoomVersion, PowerLevels]] = {}
_PARSED_MAX: Final = 256
_PARSED_LOCK = threading.Lock()


def _level_or(value: object, default: int, room_version: RoomVersion) -> int:
    level = parse_level(value, room_version) if value is not None else None
    return default if level is None else level


def _level_map(value: object, room_version: RoomVersion) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, raw in value.items():
        level = parse_level(raw, room_version)
        if isinstance(key, str) and level is not None:
            out[key] = level
    return out


def user_level(user_id: str, levels: PowerLevels, create_event: Event | None) -> PowerLevel:
    """``user_id``'s power level given parsed power levels and the room's create event.

    v12+: a room creator's level is infinite. Otherwise the power levels event decides
    (``users``, then ``users_default``); without one, the creator has 100 and everyone else 0.
    """
    if create_event is not None:
        creators = room_creators(create_event)
        if create_event.room_version.privileged_creators and user_id in creators:
            return CREATOR_POWER_LEVEL
        if not levels.exists and user_id in creators:
            return CREATOR_LEVEL_WITHOUT_POWER_LEVELS
    return levels.listed_level(user_id)


def user_power_level(
    user_id: str, power_levels_event: Event | None, create_event: Event | None
) -> PowerLevel:
    """``user_id``'s power level given the room's power levels and create events (or None)."""
    source = create_event or power_levels_event
    if source is None:
        return DEFAULT_USERS_DEFAULT
    levels = PowerLevels.from_event(power_levels_event, source.room_version)
    return user_level(user_id, levels, create_event)


def user_power_level_in_state(user_id: str, state: Mapping[StateKey, Event]) -> PowerLevel:
    """``user_id``'s power level in a state map holding the create and power levels events."""
    return user_power_level(user_id, state.get(POWER_LEVELS_KEY), state.get(CREATE_KEY))


def get_power_level_for_sender(event: Event, fetch_event: EventFetcher) -> PowerLevel:
    """The sender's power level per the power levels event among ``event``'s auth events.

    This is state resolution v2's "sender's power level" for the reverse topological power
    ordering. The create event comes from the auth events too, or in v12+ (where it is never
    an auth event) from the room ID. Raises MissingEvents when an auth event is not known.
    """
    pl_event: Event | None = None
    create_event: Event | None = None
    missing: set[str] = set()
    ids = list(event.auth_event_ids)
    if event.room_version.room_id_is_create_event_hash and event.type != "m.room.create":
        ids.append(create_event_id_for_room(event.room_id))
    for aid in ids:
        auth_event = fetch_event(aid)
        if auth_event is None:
            missing.add(aid)
        elif auth_event.is_state and auth_event.state_tuple == POWER_LEVELS_KEY:
            pl_event = auth_event
        elif auth_event.is_state and auth_event.state_tuple == CREATE_KEY:
            create_event = auth_event
    if missing:
        raise MissingEvents(missing, f"auth events of {event.event_id}")
    # The create event itself has no auth events, so its sender counts as 0 (as in Synapse);
    # it only matters if state sets ever disagree about the create event.
    return user_power_level(event.sender, pl_event, create_event)


def create_event_id_for_room(room_id: str) -> str:
    """v12+: the create event's ID is the room ID with the sigil ``$`` instead of ``!``."""
    return "$" + room_id[1:]
