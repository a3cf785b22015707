"""The authorization rules for ``m.room.member`` events (rule 5 in v12's numbering; rule 5 in
v1–v5, rule 4 in v6–v11).

Version differences: ``knock`` membership and join rule (v7+), ``restricted`` joins through
``join_authorised_via_users_server`` (v8+), ``knock_restricted`` (v10+), a knocking user may
leave (v7+), and who counts as the creator for the first join (v11+: the create's sender).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.matrix.auth.context import AuthContext, federates
from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.auth.selection import AUTHORISING_USER, JOIN_RULES_KEY, THIRD_PARTY_INVITE
from pipeline.matrix.errors import EventRejected
from pipeline.matrix.power_levels import PowerLevel, room_creators


def check_member_event(ctx: AuthContext) -> None:
    """Allow (return) or reject (raise EventRejected) a membership event."""
    event = ctx.event
    rv = event.room_version
    target = event.state_key
    membership = event.content.get("membership")
    # 5.1. If there is no state_key property, or no membership property in content, reject.
    if target is None:
        raise EventRejected(f"m.room.member event {event.event_id} has no state_key", rule="5.1")
    if not isinstance(membership, str):
        raise EventRejected(
            f"m.room.member event {event.event_id} has no membership in content", rule="5.1"
        )

    # v8+ 5.2. If content has a join_authorised_via_users_server key: if the event is not
    # validly signed by the homeserver of the user ID denoted by the key, reject. The spec
    # says this of every membership; Synapse checks it of joins only (docs/synapse-parity.md),
    # and Roomstream follows Synapse.
    if rv.restricted_join_rule and membership == "join" and AUTHORISING_USER in event.content:
        authoriser = event.content[AUTHORISING_USER]
        server = domain_of(authoriser) if isinstance(authoriser, str) else None
        if server is None or not ctx.server_signature_ok(event, server):
            raise EventRejected(
                f"{event.event_id} names {authoriser!r} in {AUTHORISING_USER} but is not "
                "signed by that user's homeserver",
                rule="5.2",
            )

    # Synapse applies rule 4 to the target of a membership event too (after letting the
    # creator's first join through): no server but the create event's sender's may be the
    # target of any membership in a room that does not federate (docs/synapse-parity.md).
    first_join = membership == "join" and _is_first_join(ctx, target)
    if (
        not first_join
        and not federates(ctx.create)
        and domain_of(target) != domain_of(ctx.create.sender)
    ):
        raise EventRejected(
            f"{target} cannot be the target of a membership in {event.room_id}: the room is "
            "not federated",
            rule="4",
        )

    if membership == "join":
        _check_join(ctx, target)
    elif membership == "invite":
        _check_invite(ctx, target)
    elif membership == "leave":
        _check_leave(ctx, target)
    elif membership == "ban":
        _check_ban(ctx, target)
    elif membership == "knock" and rv.knock_join_rule:
        _check_knock(ctx, target)
    else:
        # 5.8. Otherwise, the membership is unknown. Reject.
        raise EventRejected(
            f"{event.event_id} has membership {membership!r}, unknown in room version "
            f"{rv.identifier}",
            rule="5.8",
        )


def _join_rule(ctx: AuthContext) -> str:
    # With no m.room.join_rules event (or no join_rule in it) a room is invite-only, as for
    # Synapse and gomatrixserverlib.
    join_rules = ctx.state.get(JOIN_RULES_KEY)
    rule = join_rules.content.get("join_rule") if join_rules is not None else None
    return rule if isinstance(rule, str) else "invite"


def _check_join(ctx: AuthContext, target: str) -> None:
    event = ctx.event
    rv = event.room_version
    # 5.3.1. If the only previous event is an m.room.create and the state_key is the creator
    # (v11+: the sender of the m.room.create), allow.
    if _is_first_join(ctx, target):
        return
    # 5.3.2. If the sender does not match state_key, reject.
    if event.sender != target:
        raise EventRejected(
            f"{event.sender} cannot join {target} to the room (sender != state_key)", rule="5.3.2"
        )
    current = ctx.membership(target)
    # 5.3.3. If the sender is banned, reject.
    if current == "ban":
        raise EventRejected(f"{target} is banned and cannot join", rule="5.3.3")
    join_rule = _join_rule(ctx)
    # 5.3.4. If the join_rule is invite (v7+: or knock), allow if membership state is invite or
    # join. v10+ reaches knock_restricted through 5.3.5 instead.
    if join_rule == "invite" or (join_rule == "knock" and rv.knock_join_rule):
        if current in ("invite", "join"):
            return
        raise EventRejected(
            f"{target} cannot join a room with join rule {join_rule!r}: membership is "
            f"{current or 'none'}, not invite or join",
            rule="5.3.4",
        )
    # v8+ 5.3.5. If the join_rule is restricted (v10+: or knock_restricted):
    if (join_rule == "restricted" and rv.restricted_join_rule) or (
        join_rule == "knock_restricted" and rv.knock_restricted_join_rule
    ):
        # 5.3.5.1. If membership state is join or invite, allow.
        if current in ("invite", "join"):
            return
        # 5.3.5.2. If the join_authorised_via_users_server key in content is not a user with
        # sufficient permission to invite other users or is not a joined member, reject.
        authoriser = event.content.get(AUTHORISING_USER)
        if not isinstance(authoriser, str):
            raise EventRejected(
                f"{target}'s join to a {join_rule} room names no {AUTHORISING_USER}", rule="5.3.5.2"
            )
        if ctx.membership(authoriser) != "join":
            raise EventRejected(
                f"{target}'s join is authorised via {authoriser}, who is not joined to the room",
                rule="5.3.5.2",
            )
        if ctx.level(authoriser) < ctx.power_levels.invite:
            raise EventRejected(
                f"{target}'s join is authorised via {authoriser}, whose power level is below "
                f"the invite level {ctx.power_levels.invite}",
                rule="5.3.5.2",
            )
        # 5.3.5.3. Otherwise, allow.
        return
    # 5.3.6. If the join_rule is public, allow.
    if join_rule == "public":
        return
    # 5.3.7. Otherwise, reject.
    raise EventRejected(
        f"{target} cannot join: join rule {join_rule!r} does not admit joins in room version "
        f"{rv.identifier}",
        rule="5.3.7",
    )


def _is_first_join(ctx: AuthContext, target: str) -> bool:
    """5.3.1's condition: the only prev event is the create event, the target its creator."""
    prev = ctx.event.prev_event_ids
    return len(prev) == 1 and prev[0] == ctx.create.event_id and target in _first_joiners(ctx)


def _first_joiners(ctx: AuthContext) -> frozenset[str]:
    # v1–v10: content.creator; v11: the create's sender; v12 keeps the create's sender (not the
    # additional creators: the spec names "the sender of the m.room.create").
    if ctx.event.room_version.implicit_room_creator:
        return frozenset([ctx.create.sender])
    return room_creators(ctx.create)


def _check_invite(ctx: AuthContext, target: str) -> None:
    event = ctx.event
    target_membership = ctx.membership(target)
    # 5.4.1. If content has a third_party_invite property:
    if "third_party_invite" in event.content:
        _check_third_party_invite(ctx, target, target_membership)
        return
    # 5.4.2. If the sender's current membership state is not join, reject.
    if ctx.membership(event.sender) != "join":
        raise EventRejected(f"{event.sender} cannot invite: not joined to the room", rule="5.4.2")
    # 5.4.3. If target user's current membership state is join or ban, reject.
    if target_membership in ("join", "ban"):
        raise EventRejected(
            f"{target} cannot be invited: membership is {target_membership}", rule="5.4.3"
        )
    # 5.4.4. If the sender's power level is greater than or equal to the invite level, allow.
    if ctx.level(event.sender) >= ctx.power_levels.invite:
        return
    # 5.4.5. Otherwise, reject.
    raise EventRejected(
        f"{event.sender} cannot invite: power level {ctx.level(event.sender)} is below the "
        f"invite level {ctx.power_levels.invite}",
        rule="5.4.5",
    )


def _check_third_party_invite(ctx: AuthContext, target: str, target_membership: str | None) -> None:
    event = ctx.event
    # 5.4.1.1. If target user is banned, reject.
    if target_membership == "ban":
        raise EventRejected(f"{target} cannot be invited: banned", rule="5.4.1.1")
    tpi = event.content["third_party_invite"]
    # 5.4.1.2. If content.third_party_invite does not have a signed property, reject.
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise EventRejected(
            f"{event.event_id}: third_party_invite has no signed object", rule="5.4.1.2"
        )
    # 5.4.1.3. If signed does not have mxid and token properties, reject.
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise EventRejected(
            f"{event.event_id}: third_party_invite.signed lacks mxid or token", rule="5.4.1.3"
        )
    # 5.4.1.4. If mxid does not match state_key, reject.
    if mxid != target:
        raise EventRejected(
            f"{event.event_id}: third_party_invite.signed.mxid {mxid} is not the target {target}",
            rule="5.4.1.4",
        )
    # 5.4.1.5. If there is no m.room.third_party_invite event in the current room state with
    # state_key matching token, reject.
    invite = ctx.state.get((THIRD_PARTY_INVITE, token))
    if invite is None:
        raise EventRejected(
            f"{event.event_id}: no m.room.third_party_invite with token {token!r}", rule="5.4.1.5"
        )
    # 5.4.1.6. If sender does not match sender of the m.room.third_party_invite, reject.
    if invite.sender != event.sender:
        raise EventRejected(
            f"{event.event_id}: sender {event.sender} did not send the third-party invite "
            f"{invite.event_id} ({invite.sender} did)",
            rule="5.4.1.6",
        )
    # 5.4.1.7. If any signature in signed matches any public key in the
    # m.room.third_party_invite event (public_key, or public_keys[].public_key), allow.
    keys = _public_keys(invite.content)
    signatures = signed.get("signatures")
    if keys and _has_signatures(signatures) and ctx.third_party_signature_ok(signed, keys):
        return
    # 5.4.1.8. Otherwise, reject.
    raise EventRejected(
        f"{event.event_id}: no signature in third_party_invite.signed matches a public key of "
        f"{invite.event_id}",
        rule="5.4.1.8",
    )


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    single = content.get("public_key")
    if isinstance(single, str):
        keys.append(single)
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            if isinstance(key, str):
                keys.append(key)
    return keys


def _has_signatures(signatures: object) -> bool:
    """``{server: {key_id: signature}}`` with at least one signature."""
    return isinstance(signatures, Mapping) and any(
        isinstance(by_key, Mapping) and len(by_key) > 0 for by_key in signatures.values()
    )


def _check_leave(ctx: AuthContext, target: str) -> None:
    event = ctx.event
    target_membership = ctx.membership(target)
    # 5.5.1. If the sender matches state_key, allow if and only if that user's current
    # membership state is invite or join (v7+: or knock).
    if event.sender == target:
        allowed = {"invite", "join"}
        if event.room_version.knock_join_rule:
            allowed.add("knock")
        if target_membership in allowed:
            return
        raise EventRejected(
            f"{target} cannot leave: membership is {target_membership or 'none'}, not one of "
            f"{sorted(allowed)}",
            rule="5.5.1",
        )
    # 5.5.2. If the sender's current membership state is not join, reject.
    if ctx.membership(event.sender) != "join":
        raise EventRejected(
            f"{event.sender} cannot kick or unban {target}: not joined", rule="5.5.2"
        )
    sender_level = ctx.level(event.sender)
    # 5.5.3. If the target user's current membership state is ban, and the sender's power level
    # is less than the ban level, reject.
    if target_membership == "ban" and sender_level < ctx.power_levels.ban:
        raise EventRejected(
            f"{event.sender} cannot unban {target}: power level {sender_level} is below the ban "
            f"level {ctx.power_levels.ban}",
            rule="5.5.3",
        )
    # 5.5.4. If the sender's power level is greater than or equal to the kick level, and the
    # target user's power level is less than the sender's power level, allow.
    # 5.5.5. Otherwise, reject.
    _require_outranking(ctx, target, sender_level, "kick", ctx.power_levels.kick, rule="5.5.5")


def _check_ban(ctx: AuthContext, target: str) -> None:
    event = ctx.event
    # 5.6.1. If the sender's current membership state is not join, reject.
    if ctx.membership(event.sender) != "join":
        raise EventRejected(f"{event.sender} cannot ban {target}: not joined", rule="5.6.1")
    # 5.6.2. If the sender's power level is greater than or equal to the ban level, and the
    # target user's power level is less than the sender's power level, allow.
    # 5.6.3. Otherwise, reject.
    sender_level = ctx.level(event.sender)
    _require_outranking(ctx, target, sender_level, "ban", ctx.power_levels.ban, rule="5.6.3")


def _require_outranking(
    ctx: AuthContext, target: str, sender_level: PowerLevel, action: str, level: int, *, rule: str
) -> None:
    """The kick and ban rules' last two steps: allow when the sender is at ``action``'s
    ``level`` and above the target, otherwise reject under ``rule``."""
    target_level = ctx.level(target)
    if sender_level >= level and target_level < sender_level:
        return
    raise EventRejected(
        f"{ctx.event.sender} (power level {sender_level}) cannot {action} {target} (power level "
        f"{target_level}); the {action} level is {level}",
        rule=rule,
    )


def _check_knock(ctx: AuthContext, target: str) -> None:
    event = ctx.event
    rv = event.room_version
    join_rule = _join_rule(ctx)
    # v7+ 5.7.1. If the join_rule is anything other than knock (v10+: or knock_restricted),
    # reject.
    if not (
        join_rule == "knock" or (join_rule == "knock_restricted" and rv.knock_restricted_join_rule)
    ):
        raise EventRejected(f"{target} cannot knock: the join rule is {join_rule!r}", rule="5.7.1")
    # 5.7.2. If sender does not match state_key, reject.
    if event.sender != target:
        raise EventRejected(f"{event.sender} cannot knock on behalf of {target}", rule="5.7.2")
    # 5.7.3. If the sender's current membership is not ban, invite, or join, allow.
    current = ctx.membership(target)
    if current not in ("ban", "invite", "join"):
        return
    # 5.7.4. Otherwise, reject.
    raise EventRejected(f"{target} cannot knock: membership is {current}", rule="5.7.4")
