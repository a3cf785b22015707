"""Authorization rules that are not about one event type: the create event's presence and room,
m.federate, the sender's membership, required power levels, state_key ownership, and the
special cases of m.room.aliases (v1–v5), m.room.third_party_invite and m.room.redaction (v1–v2).
"""

from __future__ import annotations

import pytest

from tests.unit.matrix.auth_fixtures import ALICE, BOB, CAROL, DAVE, Room, rejection, versions
from tests.unit.matrix.auth_tables import ALLOWED, assert_outcome, table


@pytest.mark.parametrize("version", versions())
def test_message_allowed_from_joined_member(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    assert rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_rejected_without_create_event_in_auth_state(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", ALICE, {"body": "hi"})
    reason = rejection(ev, room.without(("m.room.create", "")))
    assert reason is not None and "m.room.create" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_v12_create_event_may_be_passed_beside_the_state(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", ALICE, {"body": "hi"})
    state = room.without(("m.room.create", ""))
    assert rejection(ev, state, create_event=room.create) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_v12_rejected_when_room_id_is_not_the_create_event_hash(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", ALICE, {"body": "hi"}, extra={"room_id": "!other"})
    reason = rejection(ev, room.state)
    assert reason is not None and "not derived from the create event" in reason


@pytest.mark.parametrize("version", versions(1, 11))
def test_rejected_when_create_event_is_from_another_room(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.message", ALICE, {"body": "hi"}, extra={"room_id": "!other:a.org"})
    assert rejection(ev, room.state) is not None


# --- m.federate ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_unfederated_room_rejects_sender_from_other_server(version: str) -> None:
    room = Room(version, create_content={"m.federate": False})
    room.join(BOB)
    reason = rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state)
    assert reason is not None and "not federated" in reason


@pytest.mark.parametrize("version", versions())
def test_unfederated_room_allows_sender_from_creator_server(version: str) -> None:
    room = Room(version, create_content={"m.federate": False})
    room.join(DAVE)
    assert rejection(room.new("m.room.message", DAVE, {"body": "hi"}), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_unfederated_room_rejects_remote_join(version: str) -> None:
    room = Room(version, create_content={"m.federate": False}, join_rule="public")
    assert rejection(room.member(BOB, "join"), room.state) is not None


@pytest.mark.parametrize(
    ("federate", "remote_allowed"),
    [(True, True), (False, False), ("false", False), ("true", False), (0, False), (None, False)],
)
@pytest.mark.parametrize("version", versions(10, 10))
def test_m_federate_other_than_true_keeps_remote_senders_out(
    version: str, federate: object, remote_allowed: bool
) -> None:
    # The spec names m.federate "set to false"; Synapse (_can_federate) admits other servers
    # only when it is absent or true, and Roomstream reads it as Synapse does.
    room = Room(version, create_content={"m.federate": federate})
    room.join(BOB)
    reason = rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state)
    assert (reason is None) is remote_allowed


@pytest.mark.parametrize("membership", ["invite", "leave", "ban"])
@pytest.mark.parametrize("version", versions())
def test_unfederated_room_rejects_a_membership_whose_target_is_on_another_server(
    version: str, membership: str
) -> None:
    # Synapse applies rule 4 to a membership's target as well as its sender
    # (_is_membership_change_allowed): the creator cannot invite, kick or ban a remote user.
    room = Room(version, create_content={"m.federate": False})
    reason = rejection(room.member(BOB, membership, sender=ALICE), room.state)
    assert reason is not None and "not federated" in reason
    assert rejection(room.member(DAVE, membership, sender=ALICE), room.state) is None


# --- sender membership (v12 rule 6) -------------------------------------------------------


@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban", "knock"])
@pytest.mark.parametrize("version", versions())
def test_rejected_when_sender_not_joined(version: str, membership: str | None) -> None:
    room = Room(version)
    if membership is not None:
        room.add(room.member(BOB, membership, sender=ALICE))
    reason = rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state)
    assert reason is not None and "not joined" in reason


# --- m.room.third_party_invite (rule 7) ----------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_third_party_invite_allowed_at_invite_level(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    ev = room.new("m.room.third_party_invite", BOB, {"display_name": "b"}, state_key="tok")
    # invite level defaults to 0 and state_default (50) does not apply to this type.
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions())
def test_third_party_invite_rejected_below_invite_level(version: str) -> None:
    room = Room(version)
    room.power_levels(users={ALICE: 100} if version != "12" else {}, invite=50)
    room.join(BOB)
    ev = room.new("m.room.third_party_invite", BOB, {"display_name": "b"}, state_key="tok")
    reason = rejection(ev, room.state)
    assert reason is not None and "third-party invite" in reason


# --- required power level (rule 8) ---------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_state_event_rejected_below_state_default(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    reason = rejection(room.new("m.room.name", BOB, {"name": "x"}, state_key=""), room.state)
    assert reason is not None and "requires 50" in reason


@pytest.mark.parametrize("version", versions())
def test_state_event_allowed_at_state_default(version: str) -> None:
    room = Room(version)
    room.power_levels(users={BOB: 50} if version == "12" else {ALICE: 100, BOB: 50})
    room.join(BOB)
    assert rejection(room.new("m.room.name", BOB, {"name": "x"}, state_key=""), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_event_type_level_overrides_events_default(version: str) -> None:
    room = Room(version)
    users = {} if version == "12" else {ALICE: 100}
    room.power_levels(users=users, events={"m.room.message": 10})
    room.join(BOB)
    reason = rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state)
    assert reason is not None and "requires 10" in reason
    room.power_levels(users={**users, BOB: 10}, events={"m.room.message": 10})
    assert rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_message_rejected_below_events_default(version: str) -> None:
    room = Room(version)
    room.power_levels(users={} if version == "12" else {ALICE: 100}, events_default=1)
    room.join(BOB)
    assert rejection(room.new("m.room.message", BOB, {"body": "hi"}), room.state) is not None


@pytest.mark.parametrize("version", versions(1, 11))
def test_without_power_levels_creator_has_100_and_others_0(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    state = room.without(("m.room.power_levels", ""))
    assert rejection(room.new("m.room.name", ALICE, {"name": "x"}, state_key=""), state) is None
    reason = rejection(room.new("m.room.name", BOB, {"name": "x"}, state_key=""), state)
    assert reason is not None and "power level 0" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_v12_creator_has_infinite_power(version: str) -> None:
    room = Room(version)
    room.power_levels(state_default=2**53 - 1, users={})
    ev = room.new("m.room.name", ALICE, {"name": "x"}, state_key="")
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_v12_additional_creator_has_infinite_power(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    room.join(BOB)
    room.power_levels(state_default=2**53 - 1, users={})
    assert rejection(room.new("m.room.name", BOB, {"name": "x"}, state_key=""), room.state) is None


@pytest.mark.parametrize("version", versions(1, 11))
def test_additional_creators_mean_nothing_before_v12(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    room.join(BOB)
    assert rejection(room.new("m.room.name", BOB, {"name": "x"}, state_key=""), room.state)


# --- state_key ownership (rule 9) ----------------------------------------------------------


@pytest.mark.parametrize("version", versions())
def test_state_key_of_another_user_rejected(version: str) -> None:
    room = Room(version)
    ev = room.new("com.example.state", ALICE, {}, state_key=BOB)
    reason = rejection(ev, room.state)
    assert reason is not None and "another user's state_key" in reason


@pytest.mark.parametrize("version", versions())
def test_state_key_of_own_user_allowed(version: str) -> None:
    room = Room(version)
    assert rejection(room.new("com.example.state", ALICE, {}, state_key=ALICE), room.state) is None


@pytest.mark.parametrize("version", versions())
def test_state_key_starting_with_at_and_suffix_rejected(version: str) -> None:
    room = Room(version)
    ev = room.new("com.example.state", ALICE, {}, state_key=ALICE + "_device")
    assert rejection(ev, room.state) is not None


# --- m.room.aliases (v1–v5 rule 4) ---------------------------------------------------------


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_allowed_for_own_server_without_membership(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.aliases", CAROL, {"aliases": ["#x:c.org"]}, state_key="c.org")
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_rejected_for_other_server(version: str) -> None:
    room = Room(version)
    room.join(CAROL)
    ev = room.new("m.room.aliases", CAROL, {"aliases": ["#x:a.org"]}, state_key="a.org")
    reason = rejection(ev, room.state)
    assert reason is not None and "aliases" in reason


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_rejected_without_state_key(version: str) -> None:
    room = Room(version)
    assert rejection(room.new("m.room.aliases", ALICE, {"aliases": []}), room.state) is not None


@pytest.mark.parametrize("version", versions(6, 12))
def test_aliases_is_an_ordinary_state_event_from_v6(version: str) -> None:
    room = Room(version)
    ev = room.new("m.room.aliases", CAROL, {"aliases": ["#x:c.org"]}, state_key="c.org")
    reason = rejection(ev, room.state)
    assert reason is not None and "not joined" in reason
    room.join(CAROL)
    reason = rejection(ev, room.state)
    assert reason is not None and "requires 50" in reason


# --- m.room.redaction (v1–v2 rule 11) -------------------------------------------------------


# Before v3 an event ID names its server: a redaction of another server's event needs the
# redact level; one of its own server's events does not.
@pytest.mark.parametrize(
    ("version", "redacts", "redact_level", "reason"),
    table(
        ("same-server", (1, 2), "$9-message:b.org", None, ALLOWED),
        ("other-server-below-redact-level", (1, 2), "$9-message:a.org", None, "redact"),
        ("other-server-at-redact-level", (1, 2), "$9-message:a.org", 0, ALLOWED),
    ),
)
def test_redaction_of_an_event_by_its_server(
    version: str, redacts: str, redact_level: int | None, reason: str | None
) -> None:
    room = Room(version)
    room.join(BOB)
    if redact_level is not None:
        room.power_levels(users={ALICE: 100}, redact=redact_level)
    ev = room.new("m.room.redaction", BOB, {}, extra={"redacts": redacts})
    assert_outcome(rejection(ev, room.state), reason)


@pytest.mark.parametrize("version", versions(3, 12))
def test_redaction_of_other_server_event_left_to_redaction_handling(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    extra = {"redacts": "$other"}
    content = {"redacts": "$other"} if version in ("11", "12") else {}
    ev = room.new("m.room.redaction", BOB, content, extra=extra)
    assert rejection(ev, room.state) is None


@pytest.mark.parametrize("version", versions())
def test_redaction_subject_to_its_event_type_level(version: str) -> None:
    room = Room(version)
    room.join(BOB)
    users = {} if version == "12" else {ALICE: 100}
    room.power_levels(users=users, events={"m.room.redaction": 20})
    ev = room.new("m.room.redaction", BOB, {"redacts": "$x"}, extra={"redacts": "$x:b.org"})
    reason = rejection(ev, room.state)
    assert reason is not None and "requires 20" in reason
