"""Rule 1: the m.room.create event, in every room version."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.matrix.events import Event
from pipeline.matrix.room_versions import room_version
from tests.unit.matrix.auth_fixtures import ALICE, BOB, rejection, versions


def create(version: str, content: dict[str, Any] | None = None, **pdu: Any) -> Event:
    rv = room_version(version)
    body: dict[str, Any] = {"room_version": version}
    if not rv.implicit_room_creator:
        body["creator"] = ALICE
    if content is not None:
        body = content
    fields: dict[str, Any] = {
        "event_id": "$create" if rv.room_id_is_create_event_hash else "$create:a.org",
        "type": "m.room.create",
        "state_key": "",
        "sender": ALICE,
        "content": body,
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
    }
    if not rv.room_id_is_create_event_hash:
        fields["room_id"] = "!room:a.org"
    fields.update(pdu)
    return Event.from_trusted(fields, rv)


@pytest.mark.parametrize("version", versions())
def test_create_allowed(version: str) -> None:
    assert rejection(create(version), {}) is None


@pytest.mark.parametrize("version", versions())
def test_create_rejected_with_prev_events(version: str) -> None:
    reason = rejection(create(version, prev_events=["$x"]), {})
    assert reason is not None and "prev_events" in reason


@pytest.mark.parametrize("version", versions(1, 11))
def test_create_rejected_when_room_id_domain_is_not_sender_domain(version: str) -> None:
    reason = rejection(create(version, room_id="!room:b.org"), {})
    assert reason is not None and "sender's server" in reason


@pytest.mark.parametrize("version", versions(12, 12))
def test_create_rejected_with_a_room_id_in_v12(version: str) -> None:
    reason = rejection(create(version, room_id="!room:a.org"), {})
    assert reason is not None and "has a room_id" in reason


@pytest.mark.parametrize("bad", ["99", 10, "", None])
@pytest.mark.parametrize("version", versions())
def test_create_rejected_with_unknown_room_version(version: str, bad: object) -> None:
    content: dict[str, Any] = {"creator": ALICE, "room_version": bad}
    reason = rejection(create(version, content), {})
    assert reason is not None and "room_version" in reason


@pytest.mark.parametrize(
    "named", ["1", "12", "org.matrix.msc3757.10", "org.matrix.msc3757.11", "org.matrix.hydra.11"]
)
@pytest.mark.parametrize("version", versions())
def test_create_allowed_naming_a_version_synapse_recognises(version: str, named: str) -> None:
    # 1.3 rejects a version that is not recognised: Synapse recognises its experimental ones
    # too, and accepts a second create event naming one (docs/synapse-parity.md).
    content: dict[str, Any] = {"creator": ALICE, "room_version": named}
    assert rejection(create(version, content), {}) is None


@pytest.mark.parametrize("version", versions())
def test_create_allowed_without_room_version(version: str) -> None:
    assert rejection(create(version, {"creator": ALICE}), {}) is None


@pytest.mark.parametrize("version", versions(1, 10))
def test_create_rejected_without_creator_before_v11(version: str) -> None:
    reason = rejection(create(version, {"room_version": version}), {})
    assert reason is not None and "creator" in reason


@pytest.mark.parametrize("version", versions(11, 12))
def test_create_allowed_without_creator_from_v11(version: str) -> None:
    assert rejection(create(version, {"room_version": version}), {}) is None


@pytest.mark.parametrize("version", versions(12, 12))
def test_create_allowed_with_additional_creators(version: str) -> None:
    content = {"room_version": version, "additional_creators": [BOB, "@:historical.org"]}
    assert rejection(create(version, content), {}) is None


@pytest.mark.parametrize(
    "bad",
    [BOB, [BOB, 5], ["bob:b.org"], ["@bob"], ["@bob:bad_server!"], ["@" + "x" * 260 + ":b.org"]],
    ids=["not-a-list", "non-string", "no-sigil", "no-domain", "bad-server", "too-long"],
)
@pytest.mark.parametrize("version", versions(12, 12))
def test_create_rejected_with_invalid_additional_creators(version: str, bad: object) -> None:
    content = {"room_version": version, "additional_creators": bad}
    reason = rejection(create(version, content), {})
    assert reason is not None and "additional_creators" in reason


@pytest.mark.parametrize("version", versions(1, 11))
def test_additional_creators_not_validated_before_v12(version: str) -> None:
    content = {"creator": ALICE, "additional_creators": "nonsense"}
    assert rejection(create(version, content), {}) is None


@pytest.mark.parametrize("version", versions())
def test_create_type_with_other_state_key_follows_create_rules(version: str) -> None:
    # Rule 1 is about the type: a later m.room.create (it has prev_events) is rejected even
    # from a user who could send any state.
    rv = room_version(version)
    room_id = "!create" if rv.room_id_is_create_event_hash else "!room:a.org"
    ev = create(version, state_key="x", prev_events=["$prev"], room_id=room_id)
    reason = rejection(ev, {})
    assert reason is not None and "prev_events" in reason
