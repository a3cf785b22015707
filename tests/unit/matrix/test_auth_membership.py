"""Rule 5 (v6–v11: rule 4): m.room.member events — join, invite, leave, ban, knock — across
room versions, including restricted joins (v8+), knock (v7+) and knock_restricted (v10+).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.matrix.auth_fixtures import ALICE, BOB, CAROL, DAVE, EVE, Room, rejection, versions
from tests.unit.matrix.auth_tables import ALL, ALLOWED, REJECTED, assert_outcome, table


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


# --- the membership tables ----------------------------------------------------------------------
#
# Each row: a room (its join rule, power levels and memberships before), one m.room.member event
# and what the rules make of it: allowed (None), or rejected with a reason containing the row's
# text ("" when any reason will do).

Member = tuple[str, str, str | None]
"""(target, membership, sender; None: the target itself)."""


def m(target: str, membership: str, sender: str | None = None) -> Member:
    return (target, membership, sender)


@dataclass(frozen=True)
class Case:
    name: str
    versions: tuple[int, int]  # the room versions the row holds in, lo..hi
    event: Member
    reason: str | None
    join_rule: str | None = "invite"
    users: Mapping[str, int] | None = None  # power levels: users beside the creator's default
    levels: Mapping[str, int] = field(default_factory=dict)  # power levels: named levels
    before: tuple[Member, ...] = ()
    create_content: Mapping[str, Any] | None = None


def cases(*rows: Case) -> list[Any]:
    return table(*((row.name, row.versions, row) for row in rows))


def check(version: str, case: Case) -> None:
    room = Room(version, join_rule=case.join_rule, create_content=case.create_content)
    if case.users is not None or case.levels:
        room.power_levels(users={**pl_users(version), **(case.users or {})}, **case.levels)
    for target, membership, sender in case.before:
        room.add(room.member(target, membership, sender=sender))
    target, membership, sender = case.event
    assert_outcome(
        rejection(room.member(target, membership, sender=sender), room.state), case.reason
    )


@pytest.mark.parametrize(
    ("version", "case"),
    cases(
        # 5.3.2. sender must be the target
        Case("join-by-other", ALL, m(BOB, "join", ALICE), "sender != state_key", "public"),
        # 5.3.3. a banned target cannot join
        Case(
            "join-banned", ALL, m(BOB, "join"), "banned", "public", before=(m(BOB, "ban", ALICE),)
        ),
        # 5.3.4–5.3.7 by join rule
        Case("join-public", ALL, m(BOB, "join"), ALLOWED, "public"),
        Case("join-invite-room-uninvited", ALL, m(BOB, "join"), REJECTED, "invite"),
        Case("join-no-join-rules", ALL, m(BOB, "join"), REJECTED, None),
        Case("join-invited", ALL, m(BOB, "join"), ALLOWED, before=(m(BOB, "invite", ALICE),)),
        Case("join-joined", ALL, m(BOB, "join"), ALLOWED, before=(m(BOB, "join"),)),
        Case("join-after-leave", ALL, m(BOB, "join"), REJECTED, before=(m(BOB, "leave"),)),
        Case(
            "join-private",
            ALL,
            m(BOB, "join"),
            REJECTED,
            "private",
            before=(m(BOB, "invite", ALICE),),
        ),
        Case(
            "join-weird-rule",
            ALL,
            m(BOB, "join"),
            REJECTED,
            "weird",
            before=(m(BOB, "invite", ALICE),),
        ),
        Case(
            "join-knock-room-invited",
            (7, 12),
            m(BOB, "join"),
            ALLOWED,
            "knock",
            before=(m(BOB, "invite", ALICE),),
        ),
        Case(
            "join-knock-rule-before-v7",
            (1, 6),
            m(BOB, "join"),
            REJECTED,
            "knock",
            before=(m(BOB, "invite", ALICE),),
        ),
    ),
)
def test_member_join(version: str, case: Case) -> None:
    check(version, case)


@pytest.mark.parametrize(
    ("version", "case"),
    cases(
        # 5.4.2. the sender must be joined
        Case("invite-by-joined", ALL, m(CAROL, "invite", BOB), ALLOWED, before=(m(BOB, "join"),)),
        Case("invite-by-outsider", ALL, m(CAROL, "invite", BOB), "not joined"),
        # 5.4.3. not a joined or banned target
        Case("invite-joined", ALL, m(CAROL, "invite", ALICE), "join", before=(m(CAROL, "join"),)),
        Case(
            "invite-banned", ALL, m(CAROL, "invite", ALICE), "ban", before=(m(CAROL, "ban", ALICE),)
        ),
        # 5.4.4. the invite level
        Case(
            "invite-below-invite-level",
            ALL,
            m(CAROL, "invite", BOB),
            "invite level",
            users={},
            levels={"invite": 1},
            before=(m(BOB, "join"),),
        ),
        Case(
            "reinvite", ALL, m(CAROL, "invite", ALICE), ALLOWED, before=(m(CAROL, "invite", ALICE),)
        ),
    ),
)
def test_member_invite(version: str, case: Case) -> None:
    check(version, case)


@pytest.mark.parametrize(
    ("version", "case"),
    cases(
        # 5.5.1. leaving oneself: only from invite or join (v7+: or knock)
        Case("leave-invited", ALL, m(BOB, "leave"), ALLOWED, before=(m(BOB, "invite", ALICE),)),
        Case("leave-joined", ALL, m(BOB, "leave"), ALLOWED, before=(m(BOB, "join"),)),
        Case("leave-never-joined", ALL, m(BOB, "leave"), REJECTED),
        Case("leave-left", ALL, m(BOB, "leave"), REJECTED, before=(m(BOB, "leave", ALICE),)),
        Case("leave-banned", ALL, m(BOB, "leave"), REJECTED, before=(m(BOB, "ban", ALICE),)),
        Case(
            "leave-knocked", (7, 12), m(BOB, "leave"), ALLOWED, "knock", before=(m(BOB, "knock"),)
        ),
        # A knock membership cannot arise before v7; if the state holds one anyway, it is no
        # membership the leave rule knows.
        Case(
            "leave-knocked-before-v7", (1, 6), m(BOB, "leave"), REJECTED, before=(m(BOB, "knock"),)
        ),
        # 5.5.2. a kick needs a joined sender
        Case(
            "kick-by-outsider",
            ALL,
            m(CAROL, "leave", BOB),
            "not joined",
            before=(m(CAROL, "join"),),
        ),
        # 5.5.3. an unban needs the ban level
        Case(
            "unban-below-ban-level",
            ALL,
            m(CAROL, "leave", BOB),
            "unban",
            users={BOB: 50},
            levels={"kick": 50, "ban": 60},
            before=(m(BOB, "join"), m(CAROL, "ban", ALICE)),
        ),
        # ... and the kick level too (5.5.4).
        Case(
            "unban-below-kick-level",
            ALL,
            m(CAROL, "leave", BOB),
            REJECTED,
            users={BOB: 50},
            levels={"kick": 60, "ban": 50},
            before=(m(BOB, "join"), m(CAROL, "ban", ALICE)),
        ),
        Case(
            "unban-at-kick-and-ban-level",
            ALL,
            m(CAROL, "leave", BOB),
            ALLOWED,
            users={BOB: 60},
            levels={"kick": 60, "ban": 50},
            before=(m(BOB, "join"), m(CAROL, "ban", ALICE)),
        ),
        # 5.5.4. at the kick level and above the target
        Case("kick", ALL, m(CAROL, "leave", ALICE), ALLOWED, before=(m(CAROL, "join"),)),
        Case(
            "kick-below-kick-level",
            ALL,
            m(CAROL, "leave", BOB),
            "kick level is 50",
            users={BOB: 40},
            levels={"kick": 50},
            before=(m(BOB, "join"), m(CAROL, "join")),
        ),
        Case(
            "kick-of-equal",
            ALL,
            m(CAROL, "leave", BOB),
            REJECTED,
            users={BOB: 60, CAROL: 60},
            before=(m(BOB, "join"), m(CAROL, "join")),
        ),
        # A creator's power is infinite, so no one — another creator included — outranks it.
        Case(
            "kick-of-creator",
            (12, 12),
            m(ALICE, "leave", BOB),
            "cannot kick",
            create_content={"additional_creators": [BOB]},
            before=(m(BOB, "join"),),
        ),
    ),
)
def test_member_leave_kick_and_unban(version: str, case: Case) -> None:
    check(version, case)


@pytest.mark.parametrize(
    ("version", "case"),
    cases(
        # 5.6.1. the sender must be joined
        Case(
            "ban-by-outsider",
            ALL,
            m(BOB, "ban", ALICE),
            "not joined",
            before=(m(ALICE, "leave"), m(BOB, "join")),
        ),
        # 5.6.2. at the ban level and above the target
        Case("ban", ALL, m(BOB, "ban", ALICE), ALLOWED, before=(m(BOB, "join"),)),
        Case("ban-non-member", ALL, m(EVE, "ban", ALICE), ALLOWED),
        Case(
            "ban-below-ban-level",
            ALL,
            m(CAROL, "ban", BOB),
            "ban level is 50",
            users={BOB: 49},
            before=(m(BOB, "join"), m(CAROL, "join")),
        ),
        Case(
            "ban-of-higher",
            ALL,
            m(CAROL, "ban", BOB),
            REJECTED,
            users={BOB: 50, CAROL: 70},
            before=(m(BOB, "join"), m(CAROL, "join")),
        ),
        # Before v12 the creator's power is what the power levels say; from v12 it is infinite.
        Case(
            "ban-of-creator-below",
            (1, 11),
            m(ALICE, "ban", DAVE),
            ALLOWED,
            users={ALICE: 10, DAVE: 100},
            before=(m(DAVE, "join"),),
        ),
        Case(
            "ban-of-creator",
            (12, 12),
            m(ALICE, "ban", DAVE),
            REJECTED,
            users={DAVE: 2**53 - 1},
            before=(m(DAVE, "join"),),
        ),
    ),
)
def test_member_ban(version: str, case: Case) -> None:
    check(version, case)


@pytest.mark.parametrize(
    ("version", "case"),
    cases(
        # v7+ 5.7.1. the join rule must be knock (v10+: or knock_restricted)
        Case("knock", (7, 12), m(BOB, "knock"), ALLOWED, "knock"),
        Case("knock-restricted", (10, 12), m(BOB, "knock"), ALLOWED, "knock_restricted"),
        Case("knock-restricted-before-v10", (7, 9), m(BOB, "knock"), REJECTED, "knock_restricted"),
        Case("knock-before-v7", (1, 6), m(BOB, "knock"), "unknown", "knock"),
        Case("knock-public", (7, 12), m(BOB, "knock"), "join rule", "public"),
        Case("knock-invite", (7, 12), m(BOB, "knock"), "join rule", "invite"),
        Case("knock-restricted-rule", (7, 12), m(BOB, "knock"), "join rule", "restricted"),
        # v7+ 5.7.2. only for oneself
        Case("knock-for-other", (7, 12), m(BOB, "knock", ALICE), REJECTED, "knock"),
        # v7+ 5.7.3. not when banned, invited or joined
        Case(
            "knock-banned", (7, 12), m(BOB, "knock"), "ban", "knock", before=(m(BOB, "ban", ALICE),)
        ),
        Case(
            "knock-invited",
            (7, 12),
            m(BOB, "knock"),
            "invite",
            "knock",
            before=(m(BOB, "invite", ALICE),),
        ),
        Case("knock-joined", (7, 12), m(BOB, "knock"), "join", "knock", before=(m(BOB, "join"),)),
        Case(
            "knock-after-leave",
            (7, 12),
            m(BOB, "knock"),
            ALLOWED,
            "knock",
            before=(m(BOB, "leave"),),
        ),
        Case("knock-again", (7, 12), m(BOB, "knock"), ALLOWED, "knock", before=(m(BOB, "knock"),)),
    ),
)
def test_member_knock(version: str, case: Case) -> None:
    check(version, case)
