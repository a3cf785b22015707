"""Rule 5 (v6–v11: rule 4): m.room.member events — join, invite, leave, ban, knock — across
room versions, including restricted joins (v8+), knock (v7+) and knock_restricted (v10+).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.matrix.auth_fixtures import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    EVE,
    Room,
    rejection,
    versions,
)


def pl_users(version: str, **extra: int) -> dict[str, int]:
    """A users map with the creator at 100 (left out in v12+, where creators are implicit)."""
    users = {} if version == "12" else {ALICE: 100}
    users.update({f"@{k}:{k[0]}.org": v for k, v in extra.items()})
    return users


# --- 5.1 shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_member_rejected_without_membership(version: str) -> None:
    room = Room(version, join_rule="public")
    ev = room.new("m.room.member", BOB, {}, state_key=BOB)
    reason = rejection(ev, room.state)
    assert reason is not None and "no membership" in reason


@pytest.mark.parametrize("version", versions())
def test_member_rejected_without_state_key(version: str) -> None:
    room = Room(version, join_rule="public")
    ev = room.new("m.room.member", BOB, {"membership": "join"})
    reason = rejection(ev, room.state)
    assert reason is not None and "no state_key" in reason


@pytest.mark.parametrize("version", versions())
def test_member_rejected_with_unknown_membership(version: str) -> None:
    room = Room(version, join_rule="public")
    reason = rejection(room.member(BOB, "wander"), room.state)
    assert reason is not None and "unknown" in reason


# --- 5.3 join ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_member_join_allowed_for_creator_right_after_create(version: str) -> None:
    room = Room(version, bare=True)
    ev = room.member(ALICE, "join")
    assert ev.prev_event_ids == (room.create.event_id,)
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_for_non_creator_right_after_create(version: str) -> None:
    room = Room(version, bare=True)
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions(1, 10))
def test_member_first_join_uses_content_creator_before_v11(version: str) -> None:
    # The create's sender is not the named creator: only content.creator gets the first join.
    room = Room(version, bare=True, create_content={"creator": BOB})
    assert rejection(room.member(BOB, "join"), room.state) is None
    assert rejection(room.member(ALICE, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions(11, 12))
def test_member_first_join_uses_create_sender_from_v11(version: str) -> None:
    room = Room(version, bare=True, create_content={"creator": BOB})
    assert rejection(room.member(ALICE, "join"), room.state) is None
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions(12, 12))
def test_member_first_join_not_granted_to_additional_creators(version: str) -> None:
    room = Room(version, bare=True, create_content={"additional_creators": [BOB]})
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_when_sender_is_not_target(version: str) -> None:
    room = Room(version, join_rule="public")
    reason = rejection(room.member(BOB, "join", sender=ALICE), room.state)
    assert reason is not None and "sender != state_key" in reason


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_when_banned(version: str) -> None:
    room = Room(version, join_rule="public")
    room.add(room.member(BOB, "ban", sender=ALICE))
    reason = rejection(room.member(BOB, "join"), room.state)
    assert reason is not None and "banned" in reason


@pytest.mark.parametrize("version", versions())
def test_member_join_allowed_in_public_room(version: str) -> None:
    room = Room(version, join_rule="public")
    assert rejection(room.member(BOB, "join"), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_in_invite_room_without_invite(version: str) -> None:
    room = Room(version, join_rule="invite")
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_without_join_rules_event(version: str) -> None:
    room = Room(version, join_rule=None)
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("prior", ["invite", "join"])
@pytest.mark.parametrize("version", versions())
def test_member_join_allowed_in_invite_room_when_invited_or_joined(
    version: str, prior: str
) -> None:
    room = Room(version, join_rule="invite")
    room.add(room.member(BOB, prior, sender=ALICE if prior == "invite" else BOB))
    assert rejection(room.member(BOB, "join"), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_after_leave_in_invite_room(version: str) -> None:
    room = Room(version, join_rule="invite")
    room.add(room.member(BOB, "leave"))
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("rule", ["private", "weird"])
@pytest.mark.parametrize("version", versions())
def test_member_join_rejected_with_private_or_unknown_join_rule(version: str, rule: str) -> None:
    room = Room(version, join_rule=rule)
    room.add(room.member(BOB, "invite", sender=ALICE))
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize("version", versions(7, 12))
def test_member_join_allowed_in_knock_room_when_invited(version: str) -> None:
    room = Room(version, join_rule="knock")
    room.add(room.member(BOB, "invite", sender=ALICE))
    assert rejection(room.member(BOB, "join"), room.state) is None


@pytest.mark.parametrize("version", versions(1, 6))
def test_member_join_rejected_with_knock_join_rule_before_v7(version: str) -> None:
    room = Room(version, join_rule="knock")
    room.add(room.member(BOB, "invite", sender=ALICE))
    assert rejection(room.member(BOB, "join"), room.state) is not None


# --- restricted joins (v8+) ------------------------------------------------------------------


def restricted_room(version: str, rule: str = "restricted", **levels: Any) -> Room:
    room = Room(version, join_rule=rule)
    if levels:
        room.power_levels(users=pl_users(version), **levels)
    room.join(CAROL)
    return room


def restricted_join(room: Room, authoriser: str = CAROL, signer: str = "c.org") -> Any:
    return room.new(
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": authoriser},
        state_key=BOB,
        signed_by=["b.org", signer],
    )


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_allowed_via_joined_authoriser(version: str) -> None:
    room = restricted_room(version)
    assert rejection(restricted_join(room), room.state) is None


@pytest.mark.parametrize("version", versions(10, 12))
def test_member_join_knock_restricted_allowed_via_joined_authoriser(version: str) -> None:
    room = restricted_room(version, "knock_restricted")
    assert rejection(restricted_join(room), room.state) is None


@pytest.mark.parametrize("version", versions(1, 7))
def test_member_join_restricted_rejected_before_v8(version: str) -> None:
    room = restricted_room(version)
    assert rejection(restricted_join(room), room.state) is not None


@pytest.mark.parametrize("version", versions(8, 9))
def test_member_join_knock_restricted_rejected_before_v10(version: str) -> None:
    room = restricted_room(version, "knock_restricted")
    assert rejection(restricted_join(room), room.state) is not None


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_rejected_without_authoriser(version: str) -> None:
    room = restricted_room(version)
    reason = rejection(room.member(BOB, "join"), room.state)
    assert reason is not None and "join_authorised_via_users_server" in reason


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_rejected_when_authoriser_not_joined(version: str) -> None:
    room = restricted_room(version)
    reason = rejection(restricted_join(room, EVE, "e.org"), room.state)
    assert reason is not None and "not joined" in reason


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_rejected_when_authoriser_cannot_invite(version: str) -> None:
    room = restricted_room(version, invite=10)
    reason = rejection(restricted_join(room), room.state)
    assert reason is not None and "invite level" in reason


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_rejected_without_authoriser_signature(version: str) -> None:
    room = restricted_room(version)
    reason = rejection(restricted_join(room, signer="b.org"), room.state)
    assert reason is not None and "not signed" in reason


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_signature_seam_is_consulted(version: str) -> None:
    room = restricted_room(version)
    seen: list[str] = []

    def verify(event: Any, server: str) -> bool:
        seen.append(server)
        return False

    assert rejection(restricted_join(room), room.state, server_signature_ok=verify) is not None
    assert seen == ["c.org"]


@pytest.mark.parametrize("version", versions(8, 12))
def test_member_join_restricted_allowed_when_invited_without_authoriser(version: str) -> None:
    room = restricted_room(version)
    room.add(room.member(BOB, "invite", sender=ALICE))
    assert rejection(room.member(BOB, "join"), room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_member_join_restricted_allowed_via_creator_authoriser(version: str) -> None:
    room = Room(version, join_rule="restricted")
    room.power_levels(users={}, invite=100)
    join = restricted_join(room, ALICE, "a.org")
    assert rejection(join, room.state) is None


@pytest.mark.parametrize("version", versions(1, 7))
def test_authoriser_key_ignored_before_v8(version: str) -> None:
    room = Room(version, join_rule="public")
    ev = room.member(BOB, "join", join_authorised_via_users_server=EVE)
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions(8, 12))
def test_authoriser_key_needs_its_signature_on_joins_only_as_synapse_checks_it(
    version: str,
) -> None:
    # The spec's rule reads "if content has a join_authorised_via_users_server key"; Synapse
    # checks the signature of joins only (docs/synapse-parity.md), and so does Roomstream.
    room = Room(version)
    room.join(BOB)
    ev = room.member(BOB, "leave", join_authorised_via_users_server=EVE)
    assert rejection(ev, room.state) is None


# --- 5.4 invite -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_member_invite_allowed_from_joined_sender(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    assert rejection(room.member(CAROL, "invite", sender=BOB), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_invite_rejected_when_sender_not_joined(version: str) -> None:
    room = Room(version)
    reason = rejection(room.member(CAROL, "invite", sender=BOB), room.state)
    assert reason is not None and "not joined" in reason


@pytest.mark.parametrize("prior", ["join", "ban"])
@pytest.mark.parametrize("version", versions())
def test_member_invite_rejected_when_target_joined_or_banned(version: str, prior: str) -> None:
    room = Room(version)
    room.add(room.member(CAROL, prior, sender=CAROL if prior == "join" else ALICE))
    reason = rejection(room.member(CAROL, "invite", sender=ALICE), room.state)
    assert reason is not None and prior in reason


@pytest.mark.parametrize("version", versions())
def test_member_invite_rejected_below_invite_level(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version), invite=1)
    room.join(BOB)
    reason = rejection(room.member(CAROL, "invite", sender=BOB), room.state)
    assert reason is not None and "invite level" in reason


@pytest.mark.parametrize("version", versions())
def test_member_reinvite_of_invited_user_allowed(version: str) -> None:
    room = Room(version)
    room.add(room.member(CAROL, "invite", sender=ALICE))
    assert rejection(room.member(CAROL, "invite", sender=ALICE), room.state) is None


# --- 5.4.1 third-party invites ----------------------------------------------------------------


def tpi_room(version: str, **invite_content: Any) -> Room:
    room = Room(version)
    content = invite_content or {"display_name": "c...", "public_key": "AAAA"}
    room.add(room.new("m.room.third_party_invite", ALICE, content, state_key="tok"))
    return room


def tpi_member(room: Room, signed: Any, sender: str = ALICE, target: str = CAROL) -> Any:
    content = {
        "membership": "invite",
        "third_party_invite": {"display_name": "c", "signed": signed},
    }
    return room.new("m.room.member", sender, content, state_key=target)


GOOD_SIGNED = {"mxid": CAROL, "token": "tok", "signatures": {"id.org": {"ed25519:0": "s"}}}


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_allowed(version: str) -> None:
    room = tpi_room(version)
    assert rejection(tpi_member(room, GOOD_SIGNED), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_allowed_with_public_keys_list(version: str) -> None:
    room = tpi_room(version, public_keys=[{"public_key": "BBBB"}])
    assert rejection(tpi_member(room, GOOD_SIGNED), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_skips_the_sender_membership_rule(version: str) -> None:
    # 5.4.1 decides on its own: the third-party invite's sender need not be joined now.
    room = tpi_room(version)
    room.add(room.member(ALICE, "leave"))
    assert rejection(tpi_member(room, GOOD_SIGNED), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_rejected_when_target_banned(version: str) -> None:
    room = tpi_room(version)
    room.add(room.member(CAROL, "ban", sender=ALICE))
    reason = rejection(tpi_member(room, GOOD_SIGNED), room.state)
    assert reason is not None and "banned" in reason


@pytest.mark.parametrize(
    ("case", "signed", "reason_part"),
    [
        ("no-signed", None, "no signed"),
        ("signed-not-object", "x", "no signed"),
        ("no-mxid", {"token": "tok", "signatures": GOOD_SIGNED["signatures"]}, "mxid or token"),
        ("no-token", {"mxid": CAROL, "signatures": GOOD_SIGNED["signatures"]}, "mxid or token"),
        ("mxid-not-target", {**GOOD_SIGNED, "mxid": DAVE}, "not the target"),
        ("unknown-token", {**GOOD_SIGNED, "token": "nope"}, "no m.room.third_party_invite"),
        ("no-signatures", {"mxid": CAROL, "token": "tok"}, "no signature"),
        ("empty-signatures", {**GOOD_SIGNED, "signatures": {"id.org": {}}}, "no signature"),
    ],
)
@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_rejected_when_signed_is_malformed(
    version: str, case: str, signed: Any, reason_part: str
) -> None:
    room = tpi_room(version)
    if signed is None:
        content = {"membership": "invite", "third_party_invite": {"display_name": "c"}}
        ev = room.new("m.room.member", ALICE, content, state_key=CAROL)
    else:
        ev = tpi_member(room, signed)
    reason = rejection(ev, room.state)
    assert reason is not None and reason_part in reason


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_rejected_when_sender_differs(version: str) -> None:
    room = tpi_room(version)
    room.join(BOB)
    reason = rejection(tpi_member(room, GOOD_SIGNED, sender=BOB), room.state)
    assert reason is not None and "did not send the third-party invite" in reason


@pytest.mark.parametrize("version", versions())
def test_member_third_party_invite_rejected_without_public_keys(version: str) -> None:
    room = tpi_room(version, display_name="c...")
    assert rejection(tpi_member(room, GOOD_SIGNED), room.state) is not None


@pytest.mark.parametrize("version", versions(10, 10))
def test_member_third_party_invite_signature_seam_decides(version: str) -> None:
    room = tpi_room(version, public_key="K1", public_keys=[{"public_key": "K2"}, {"x": 1}])
    calls: list[tuple[Any, ...]] = []

    def verify(signed: Any, keys: Any) -> bool:
        calls.append((signed["token"], list(keys)))
        return False

    ev = tpi_member(room, GOOD_SIGNED)
    assert rejection(ev, room.state, third_party_signature_ok=verify) is not None
    assert calls == [("tok", ["K1", "K2"])]


# --- 5.5 leave --------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["invite", "join"])
@pytest.mark.parametrize("version", versions())
def test_member_leave_allowed_for_self_when_invited_or_joined(version: str, prior: str) -> None:
    room = Room(version)
    room.add(room.member(BOB, prior, sender=ALICE if prior == "invite" else BOB))
    assert rejection(room.member(BOB, "leave"), room.state) is None


@pytest.mark.parametrize("prior", [None, "leave", "ban"])
@pytest.mark.parametrize("version", versions())
def test_member_leave_rejected_for_self_when_not_in_room(version: str, prior: str | None) -> None:
    room = Room(version)
    if prior is not None:
        room.add(room.member(BOB, prior, sender=ALICE))
    assert rejection(room.member(BOB, "leave"), room.state) is not None


@pytest.mark.parametrize("version", versions(7, 12))
def test_member_leave_allowed_for_self_after_knock(version: str) -> None:
    room = Room(version, join_rule="knock")
    room.add(room.member(BOB, "knock"))
    assert rejection(room.member(BOB, "leave"), room.state) is None


@pytest.mark.parametrize("version", versions(1, 6))
def test_member_leave_rejected_for_self_after_knock_before_v7(version: str) -> None:
    # A knock membership cannot arise before v7; if the state holds one anyway, it is no
    # membership the leave rule knows.
    room = Room(version)
    room.add(room.member(BOB, "knock"))
    assert rejection(room.member(BOB, "leave"), room.state) is not None


@pytest.mark.parametrize("version", versions())
def test_member_kick_rejected_when_sender_not_joined(version: str) -> None:
    room = Room(version)
    room.join(CAROL)
    reason = rejection(room.member(CAROL, "leave", sender=BOB), room.state)
    assert reason is not None and "not joined" in reason


@pytest.mark.parametrize("version", versions())
def test_member_kick_allowed_above_target_and_at_kick_level(version: str) -> None:
    room = Room(version)
    room.join(CAROL)
    assert rejection(room.member(CAROL, "leave", sender=ALICE), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_kick_rejected_below_kick_level(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=40), kick=50)
    room.join(BOB, CAROL)
    reason = rejection(room.member(CAROL, "leave", sender=BOB), room.state)
    assert reason is not None and "kick level is 50" in reason


@pytest.mark.parametrize("version", versions())
def test_member_kick_rejected_for_equal_power_target(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=60, carol=60))
    room.join(BOB, CAROL)
    assert rejection(room.member(CAROL, "leave", sender=BOB), room.state) is not None


@pytest.mark.parametrize("version", versions())
def test_member_unban_rejected_below_ban_level(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=50), kick=50, ban=60)
    room.join(BOB)
    room.add(room.member(CAROL, "ban", sender=ALICE))
    reason = rejection(room.member(CAROL, "leave", sender=BOB), room.state)
    assert reason is not None and "unban" in reason


@pytest.mark.parametrize("version", versions())
def test_member_unban_needs_kick_level_too(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=50), kick=60, ban=50)
    room.join(BOB)
    room.add(room.member(CAROL, "ban", sender=ALICE))
    assert rejection(room.member(CAROL, "leave", sender=BOB), room.state) is not None
    room.power_levels(users=pl_users(version, bob=60), kick=60, ban=50)
    assert rejection(room.member(CAROL, "leave", sender=BOB), room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_member_kick_of_creator_rejected_in_v12(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    room.join(BOB)
    # A creator's power is infinite, so no one — another creator included — outranks it.
    reason = rejection(room.member(ALICE, "leave", sender=BOB), room.state)
    assert reason is not None and "cannot kick" in reason


# --- 5.6 ban ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_member_ban_allowed_at_ban_level_above_target(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    assert rejection(room.member(BOB, "ban", sender=ALICE), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_ban_of_non_member_allowed(version: str) -> None:
    room = Room(version)
    assert rejection(room.member(EVE, "ban", sender=ALICE), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_member_ban_rejected_when_sender_not_joined(version: str) -> None:
    room = Room(version)
    room.add(room.member(ALICE, "leave"))
    room.join(BOB)
    reason = rejection(room.member(BOB, "ban", sender=ALICE), room.state)
    assert reason is not None and "not joined" in reason


@pytest.mark.parametrize("version", versions())
def test_member_ban_rejected_below_ban_level(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=49))
    room.join(BOB, CAROL)
    reason = rejection(room.member(CAROL, "ban", sender=BOB), room.state)
    assert reason is not None and "ban level is 50" in reason


@pytest.mark.parametrize("version", versions())
def test_member_ban_rejected_for_higher_target(version: str) -> None:
    room = Room(version)
    room.power_levels(users=pl_users(version, bob=50, carol=70))
    room.join(BOB, CAROL)
    assert rejection(room.member(CAROL, "ban", sender=BOB), room.state) is not None


@pytest.mark.parametrize("version", versions(1, 11))
def test_member_ban_of_creator_depends_on_power_levels_before_v12(version: str) -> None:
    room = Room(version)
    room.power_levels(users={ALICE: 10, DAVE: 100})
    room.join(DAVE)
    assert rejection(room.member(ALICE, "ban", sender=DAVE), room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_member_ban_of_creator_rejected_in_v12(version: str) -> None:
    room = Room(version)
    room.power_levels(users={DAVE: 2**53 - 1})
    room.join(DAVE)
    assert rejection(room.member(ALICE, "ban", sender=DAVE), room.state) is not None


# --- 5.7 knock (v7+) --------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions(7, 12))
def test_member_knock_allowed_in_knock_room(version: str) -> None:
    room = Room(version, join_rule="knock")
    assert rejection(room.member(BOB, "knock"), room.state) is None


@pytest.mark.parametrize("version", versions(10, 12))
def test_member_knock_allowed_in_knock_restricted_room(version: str) -> None:
    room = Room(version, join_rule="knock_restricted")
    assert rejection(room.member(BOB, "knock"), room.state) is None


@pytest.mark.parametrize("version", versions(7, 9))
def test_member_knock_rejected_in_knock_restricted_room_before_v10(version: str) -> None:
    room = Room(version, join_rule="knock_restricted")
    assert rejection(room.member(BOB, "knock"), room.state) is not None


@pytest.mark.parametrize("version", versions(1, 6))
def test_member_knock_is_unknown_membership_before_v7(version: str) -> None:
    room = Room(version, join_rule="knock")
    reason = rejection(room.member(BOB, "knock"), room.state)
    assert reason is not None and "unknown" in reason


@pytest.mark.parametrize("rule", ["public", "invite", "restricted"])
@pytest.mark.parametrize("version", versions(7, 12))
def test_member_knock_rejected_with_other_join_rule(version: str, rule: str) -> None:
    room = Room(version, join_rule=rule)
    reason = rejection(room.member(BOB, "knock"), room.state)
    assert reason is not None and "join rule" in reason


@pytest.mark.parametrize("version", versions(7, 12))
def test_member_knock_rejected_on_behalf_of_another_user(version: str) -> None:
    room = Room(version, join_rule="knock")
    assert rejection(room.member(BOB, "knock", sender=ALICE), room.state) is not None


@pytest.mark.parametrize("prior", ["ban", "invite", "join"])
@pytest.mark.parametrize("version", versions(7, 12))
def test_member_knock_rejected_when_banned_invited_or_joined(version: str, prior: str) -> None:
    room = Room(version, join_rule="knock")
    room.add(room.member(BOB, prior, sender=BOB if prior == "join" else ALICE))
    reason = rejection(room.member(BOB, "knock"), room.state)
    assert reason is not None and prior in reason


@pytest.mark.parametrize("prior", ["leave", "knock"])
@pytest.mark.parametrize("version", versions(7, 12))
def test_member_knock_allowed_after_leave_or_knock(version: str, prior: str) -> None:
    room = Room(version, join_rule="knock")
    room.add(room.member(BOB, prior))
    assert rejection(room.member(BOB, "knock"), room.state) is None
