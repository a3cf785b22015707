"""Which state the authorization rules read for an event, and which events are power events.

``auth_types_for_event`` lists every (type, state_key) the rules may read, the create event
included; ``auth_event_selection`` is the spec's *auth events selection* (what an event's
``auth_events`` may hold), which in v12+ leaves the create event out because the room ID
implies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.room_versions import RoomVersion

CREATE: Final = "m.room.create"
MEMBER: Final = "m.room.member"
POWER_LEVELS: Final = "m.room.power_levels"
JOIN_RULES: Final = "m.room.join_rules"
THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
ALIASES: Final = "m.room.aliases"
REDACTION: Final = "m.room.redaction"

CREATE_KEY: Final[StateKey] = (CREATE, "")
POWER_LEVELS_KEY: Final[StateKey] = (POWER_LEVELS, "")
JOIN_RULES_KEY: Final[StateKey] = (JOIN_RULES, "")

AUTHORISING_USER: Final = "join_authorised_via_users_server"


def third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    """``content.third_party_invite.signed.token`` when it is a string, else None."""
    tpi = content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    token = signed.get("token") if isinstance(signed, Mapping) else None
    return token if isinstance(token, str) else None


def auth_types_for_event(event: Event, room_version: RoomVersion | None = None) -> set[StateKey]:
    """The (type, state_key) pairs whose current values the auth rules read for ``event``.

    Empty for the create event. Otherwise the create event, the power levels, the sender's
    membership and, for ``m.room.member``: the target's membership; the join rules (join,
    invite, knock); the ``m.room.third_party_invite`` named by the invite's signed token; and,
    where the room version has restricted rooms, the membership of the join's
    ``join_authorised_via_users_server`` user.

    ``room_version`` (default: the event's) is the version that selects: a state resolution
    run by the version a second create event names reads the state as that version selects
    it, as Synapse's ``auth_types_for_event(room_version, event)`` does (docs/synapse-parity.md).
    """
    etype = event.type
    if etype == CREATE:
        return set()
    types: set[StateKey] = {CREATE_KEY, POWER_LEVELS_KEY, (MEMBER, event.sender)}
    if etype != MEMBER:
        return types
    target = event.state_key
    if target is not None:
        types.add((MEMBER, target))
    content = event.content
    membership = content.get("membership")
    if membership == "join":
        types.add(JOIN_RULES_KEY)
        if (room_version or event.room_version).restricted_join_rule:
            authoriser = content.get(AUTHORISING_USER)
            if isinstance(authoriser, str):
                types.add((MEMBER, authoriser))
    elif membership == "invite":
        types.add(JOIN_RULES_KEY)
        token = third_party_invite_token(content)
        if token is not None:
            types.add((THIRD_PARTY_INVITE, token))
    elif membership == "knock":
        types.add(JOIN_RULES_KEY)
    return types


def auth_event_selection(event: Event) -> set[StateKey]:
    """The *auth events selection*: which (type, state_key) an event's ``auth_events`` may hold.

    As ``auth_types_for_event``, except that in v12+ the create event MUST NOT be selected.
    """
    types = auth_types_for_event(event)
    if event.room_version.room_id_is_create_event_hash:
        types.discard(CREATE_KEY)
    return types


def is_power_event(event: Event) -> bool:
    """State resolution v2's *power event*: one that may take away someone's ability to act.

    Power levels, join rules and (as Synapse and ruma also count it) the create event, each
    with an empty state_key; and a membership of ``leave`` or ``ban`` whose sender is not its
    target, i.e. a kick or a ban.
    """
    if event.state_key is None:
        return False
    if event.type in (POWER_LEVELS, JOIN_RULES, CREATE):
        return event.state_key == ""
    if event.type == MEMBER and event.membership in ("leave", "ban"):
        return event.sender != event.state_key
    return False
