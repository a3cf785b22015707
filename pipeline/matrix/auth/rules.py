"""``check_auth_rules``: the room versions' authorization rules over a given state.

The rules are the spec's "Authorisation rules" of room versions 1–12. Comments quote them in
v12's numbering unless they say otherwise; v1–v5 number the same from rule 5 on, v6–v11 one
less (the ``m.room.aliases`` rule 4 is gone and rule 2 of v12 not yet there). The rules on an
event's ``auth_events`` themselves (v12 rule 3) are in ``auth_events.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.matrix.auth.context import (
    AuthContext,
    ServerSignatureCheck,
    ThirdPartySignatureCheck,
    accept_third_party_signature,
    federates,
    has_server_signature,
)
from pipeline.matrix.auth.identifiers import domain_of, is_valid_user_id
from pipeline.matrix.auth.membership import check_member_event
from pipeline.matrix.auth.power_levels_rules import check_power_levels_event
from pipeline.matrix.auth.selection import (
    ALIASES,
    CREATE,
    CREATE_KEY,
    MEMBER,
    POWER_LEVELS,
    REDACTION,
    THIRD_PARTY_INVITE,
)
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.power_levels import create_event_id_for_room
from pipeline.matrix.room_versions import EventFormat, is_recognised


def check_auth_rules(
    event: Event,
    auth_state: Mapping[StateKey, Event],
    *,
    create_event: Event | None = None,
    third_party_signature_ok: ThirdPartySignatureCheck = accept_third_party_signature,
    server_signature_ok: ServerSignatureCheck = has_server_signature,
) -> None:
    """Raise EventRejected(reason) when ``event`` is not allowed given ``auth_state``.

    ``auth_state`` is the state the rules are evaluated against: the event's auth events, or a
    state snapshot; callers choose. It must hold the room's create event, or the caller passes
    it as ``create_event`` (v12+, where the create event is implied by the room ID and is never
    among the auth events). Returns None when the event is allowed. Never raises for
    infrastructure reasons: everything needed is in the arguments.

    The two signature seams default to: third-party invite signatures accepted when present
    (their cryptography is checked elsewhere), and an authorising server's signature accepted
    when the event carries one from that server.
    """
    rv = event.room_version
    # 1. If type is m.room.create: its own rules, then allow. (Whatever its state_key: a
    # second "create" deeper in the room has prev_events and fails 1.1.)
    if event.type == CREATE:
        check_create_event(event)
        return

    create = auth_state.get(CREATE_KEY, create_event)
    if create is None or create.type != CREATE or create.state_key != "":
        # v1–v11 2.4 (no create event among the auth events); v12 has no such rule, the
        # create event being implied by the room ID: its 2 (the room ID names no create event).
        raise EventRejected(
            f"no m.room.create event in the auth state of {event.event_id}",
            rule="2" if rv.room_id_is_create_event_hash else "3.4",
        )
    if rv.room_id_is_create_event_hash:
        # v12+ 2. If the event's room_id is not an event ID for an accepted m.room.create
        # event, with the sigil ! instead of $, reject. (Acceptance is checked by the caller.)
        if create.event_id != create_event_id_for_room(event.room_id):
            raise EventRejected(
                f"{event.event_id}: room ID {event.room_id} is not derived from the create "
                f"event {create.event_id}",
                rule="2",
            )
    elif create.room_id != event.room_id:
        raise EventRejected(
            f"{event.event_id} is in room {event.room_id} but the create event "
            f"{create.event_id} is in room {create.room_id}",
            rule="3.5",
        )

    # 4. (v1–v11: 3.) If the content of the m.room.create event in the room state has the
    # property m.federate set to false, and the sender domain of the event does not match the
    # sender domain of the create event, reject. (Any value but true counts as false, as
    # Synapse's _can_federate reads it; docs/synapse-parity.md.)
    if not federates(create) and domain_of(event.sender) != domain_of(create.sender):
        raise EventRejected(
            f"{event.sender} cannot send to {event.room_id}: the room is not federated", rule="4"
        )

    # v1–v5 4. If type is m.room.aliases:
    if rv.special_case_aliases_auth and event.type == ALIASES:
        # 4.1. If event has no state_key, reject.
        if event.state_key is None:
            raise EventRejected(
                f"m.room.aliases event {event.event_id} has no state_key", rule="aliases.1"
            )
        # 4.2. If sender's domain doesn't match state_key, reject.
        if domain_of(event.sender) != event.state_key:
            raise EventRejected(
                f"{event.sender} cannot set aliases of server {event.state_key!r}", rule="aliases.2"
            )
        # 4.3. Otherwise, allow.
        return

    ctx = AuthContext.build(
        event, auth_state, create, third_party_signature_ok, server_signature_ok
    )
    # 5. If type is m.room.member: the membership rules decide.
    if event.type == MEMBER:
        check_member_event(ctx)
        return

    # 6. If the sender's current membership state is not join, reject.
    if ctx.membership(event.sender) != "join":
        raise EventRejected(f"{event.sender} is not joined to {event.room_id}", rule="6")

    sender_level = ctx.level(event.sender)
    # 7. If type is m.room.third_party_invite: allow if and only if sender's current power
    # level is greater than or equal to the invite level.
    if event.type == THIRD_PARTY_INVITE:
        if sender_level >= ctx.power_levels.invite:
            return
        raise EventRejected(
            f"{event.sender} (power level {sender_level}) cannot send a third-party invite: "
            f"the invite level is {ctx.power_levels.invite}",
            rule="7",
        )

    # 8. If the event type's required power level is greater than the sender's power level,
    # reject.
    required = ctx.power_levels.required_level(event.type, event.is_state)
    if required > sender_level:
        raise EventRejected(
            f"{event.sender} (power level {sender_level}) cannot send {event.type}: it requires "
            f"{required}",
            rule="8",
        )

    # 9. If the event has a state_key that starts with an @ and does not match the sender,
    # reject.
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise EventRejected(
            f"{event.sender} cannot send state with another user's state_key {state_key!r}",
            rule="9",
        )

    # 10. If type is m.room.power_levels: the power levels rules decide.
    if event.type == POWER_LEVELS:
        check_power_levels_event(ctx)
        return

    # v1–v2 11. If type is m.room.redaction: allow if the sender's power level is at least the
    # redact level, or if the redacted event's ID has the redaction's event ID domain. Later
    # versions leave this to the handling of redactions (their event IDs carry no domain).
    if event.type == REDACTION and rv.event_format is EventFormat.V1:
        if sender_level >= ctx.power_levels.redact:
            return
        redacts = event.redacts
        own_domain = domain_of(event.event_id)
        if redacts is not None and own_domain is not None and domain_of(redacts) == own_domain:
            return
        raise EventRejected(
            f"{event.sender} (power level {sender_level}) cannot redact {redacts!r}: below the "
            f"redact level {ctx.power_levels.redact} and the event is from another server",
            rule="redaction",
        )
    # 11. (v1–v2: 12.) Otherwise, allow.


def check_create_event(event: Event) -> None:
    """Rule 1, for ``m.room.create``."""
    rv = event.room_version
    # 1.1. If it has any prev_events, reject.
    if event.prev_event_ids:
        raise EventRejected(f"create event {event.event_id} has prev_events", rule="1.1")
    if rv.room_id_is_create_event_hash:
        # v12+ 1.2. If the event has a room_id, reject.
        if "room_id" in event.pdu:
            raise EventRejected(f"create event {event.event_id} has a room_id", rule="1.2")
    else:
        # v1–v11 1.2. If the domain of the room_id does not match the domain of the sender,
        # reject.
        room_domain = domain_of(event.room_id)
        if room_domain is None or room_domain != domain_of(event.sender):
            raise EventRejected(
                f"create event {event.event_id}: room ID {event.room_id} is not on the "
                f"sender's server ({event.sender})",
                rule="1.2",
            )
    # 1.3. If content.room_version is present and is not a recognised version, reject.
    # (Recognised as Synapse recognises them: its experimental versions too. They matter
    # only for a second create event, which Synapse accepts in a room of another version.)
    if "room_version" in event.content:
        version = event.content["room_version"]
        if not is_recognised(version):
            raise EventRejected(
                f"create event {event.event_id}: unknown room_version {version!r}", rule="1.3"
            )
    # v1–v10 1.4. If content has no creator property, reject.
    if not rv.implicit_room_creator and "creator" not in event.content:
        raise EventRejected(f"create event {event.event_id} has no creator in content", rule="1.4")
    # v12+ 1.4. If additional_creators is present in content and is not an array of strings
    # where each string passes the same user ID validation applied to sender, reject.
    if rv.privileged_creators and "additional_creators" in event.content:
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise EventRejected(
                f"create event {event.event_id}: additional_creators is not a list of user IDs: "
                f"{extra!r}",
                rule="1.4",
            )
    # 1.5. Otherwise, allow.
