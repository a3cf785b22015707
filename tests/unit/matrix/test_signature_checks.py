"""Check 2 on receipt of a PDU, "Passes signature checks, otherwise it is dropped", with real
ed25519 keys: who must sign, with which keys, valid when, and what tampering does."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.matrix.errors import InvalidPdu
from pipeline.matrix.pdu import parse_pdu
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.signing import Ed25519SignatureChecker, SignatureFailed
from tests.unit.matrix.pdu_factory import make_pdu
from tests.unit.matrix.signing_keys import KeyTable, Server

EXAMPLE = Server("example.org")  # the sender's server in pdu_factory
OTHER = Server("other.example")
TS = 1_700_000_000_000  # the origin_server_ts of pdu_factory's events


def _check(pdu: dict[str, Any], version: str, keys: KeyTable) -> None:
    rv = room_version(version)
    Ed25519SignatureChecker(keys).check(parse_pdu(pdu, rv))


def _message(version: str, **overrides: Any) -> dict[str, Any]:
    rv = room_version(version)
    return EXAMPLE.sign(make_pdu(rv, signatures={}, **overrides), rv)


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "5", "10", "11", "12"])
def test_an_event_signed_by_its_senders_server_with_a_known_key_passes(version: str) -> None:
    keys = KeyTable().add(EXAMPLE)
    _check(_message(version), version, keys)
    assert [server for server, _ in keys.asked] == ["example.org"]


def _fails(pdu: dict[str, Any], version: str, keys: KeyTable) -> SignatureFailed:
    with pytest.raises(SignatureFailed) as caught:
        _check(pdu, version, keys)
    assert isinstance(caught.value, InvalidPdu), "a signature failure drops the event"
    return caught.value


def test_a_signature_made_with_another_key_under_the_same_key_id_fails_naming_server_and_key() -> (
    None
):
    impostor = Server("example.org")  # same name and key id, another key
    rv = room_version("10")
    pdu = impostor.sign(make_pdu(rv, signatures={}), rv)
    failure = _fails(pdu, "10", KeyTable().add(EXAMPLE))
    assert (failure.server_name, failure.key_id) == ("example.org", "ed25519:k1")
    assert "example.org" in str(failure) and "ed25519:k1" in str(failure)
    assert "does not verify" in str(failure)


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_an_essential_field_changed_after_signing_fails_the_signature(version: str) -> None:
    signed = _message(version)
    tampered = make_pdu(room_version(version), signatures=signed["signatures"], depth=6)
    failure = _fails(tampered, version, KeyTable().add(EXAMPLE))
    assert failure.key_id == "ed25519:k1"


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_content_changed_without_its_hash_is_redacted_and_still_passes_its_signature(
    version: str,
) -> None:
    # Check 3: "Passes hash checks, otherwise it is redacted": the signatures cover the redacted
    # event, so they still hold for what is kept.
    rv = room_version(version)
    signed = _message(version)
    changed = {**signed, "content": {"msgtype": "m.text", "body": "changed in transit"}}
    event = parse_pdu(changed, rv)
    assert event.redacted_on_receipt
    Ed25519SignatureChecker(KeyTable().add(EXAMPLE)).check(event)


def test_content_changed_with_a_recomputed_hash_fails_the_signature_over_the_hash() -> None:
    signed = _message("10")
    rehashed = make_pdu(
        room_version("10"),
        signatures=signed["signatures"],
        content={"msgtype": "m.text", "body": "forged"},
    )
    assert not parse_pdu(rehashed, room_version("10")).redacted_on_receipt
    _fails(rehashed, "10", KeyTable().add(EXAMPLE))


@pytest.mark.parametrize(
    ("signatures", "why"),
    [
        ({}, "not signed by it"),
        ({"example.org": {}}, "not signed by it"),
        ({"other.example": {"ed25519:k1": "AAAA"}}, "not signed by it"),
    ],
)
def test_an_event_without_its_senders_signature_fails(signatures: dict[str, Any], why: str) -> None:
    pdu = make_pdu(room_version("10"), signatures=signatures)
    failure = _fails(pdu, "10", KeyTable().add(EXAMPLE).add(OTHER))
    assert failure.server_name == "example.org" and failure.key_id is None
    assert why in str(failure)


def test_a_signature_with_an_unknown_key_fails_for_want_of_a_usable_key() -> None:
    failure = _fails(_message("10"), "10", KeyTable())
    assert failure.key_id is None
    assert "ed25519:k1 (unknown)" in str(failure) and "server-keys" in str(failure)


@pytest.mark.parametrize(
    ("version", "valid_until_ts", "passes"),
    [
        # v5+: "the valid_until_ts ... is at least as large as the origin_server_ts".
        ("5", TS - 1, False),
        ("10", TS - 1, False),
        ("10", TS, True),
        ("12", TS + 1, True),
        # Before v5 key validity was not enforced (MSC1935): an expired key still counts.
        ("4", TS - 1, True),
        ("1", 0, True),
    ],
)
def test_a_key_counts_only_if_valid_at_the_events_origin_server_ts_from_v5(
    version: str, valid_until_ts: int, passes: bool
) -> None:
    keys = KeyTable().add(EXAMPLE, valid_until_ts)
    if passes:
        _check(_message(version), version, keys)
    else:
        failure = _fails(_message(version), version, keys)
        assert f"valid until {valid_until_ts}" in str(failure)


def test_an_expired_key_beside_a_valid_one_is_skipped_but_every_usable_key_must_verify() -> None:
    old = Server("example.org", "old")
    rv = room_version("10")
    both = old.sign(_message("10"), rv)
    keys = KeyTable().add(EXAMPLE).add(old, valid_until_ts=TS - 1)
    _check(both, "10", keys)
    # A usable key whose signature is wrong fails, even though another one verifies.
    broken = {**both, "signatures": {"example.org": {**both["signatures"]["example.org"]}}}
    broken["signatures"]["example.org"]["ed25519:old"] = both["signatures"]["example.org"][
        "ed25519:k1"
    ]
    failure = _fails(broken, "10", KeyTable().add(EXAMPLE).add(old))
    assert failure.key_id == "ed25519:old"


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_and_v2_events_need_the_event_id_servers_signature_too(version: str) -> None:
    rv = room_version(version)
    pdu = make_pdu(rv, signatures={}, event_id="$join1:other.example")
    keys = KeyTable().add(EXAMPLE).add(OTHER)
    only_sender = EXAMPLE.sign(pdu, rv)
    failure = _fails(only_sender, version, keys)
    assert failure.server_name == "other.example"
    _check(OTHER.sign(only_sender, rv), version, keys)


def test_v3_and_later_need_only_the_senders_server() -> None:
    rv = room_version("3")
    _check(EXAMPLE.sign(make_pdu(rv, signatures={}), rv), "3", KeyTable().add(EXAMPLE))


def _restricted_join(version: str) -> dict[str, Any]:
    rv = room_version(version)
    return make_pdu(
        rv,
        signatures={},
        type="m.room.member",
        state_key="@alice:example.org",
        content={
            "membership": "join",
            "join_authorised_via_users_server": "@mod:other.example",
        },
    )


def test_a_restricted_join_needs_the_authorising_servers_valid_signature() -> None:
    rv = room_version("10")
    keys = KeyTable().add(EXAMPLE).add(OTHER)
    by_sender = EXAMPLE.sign(_restricted_join("10"), rv)
    assert _fails(by_sender, "10", keys).server_name == "other.example"
    _check(OTHER.sign(by_sender, rv), "10", keys)
    forged = OTHER.sign(by_sender, rv)
    forged["signatures"]["other.example"] = by_sender["signatures"]["example.org"]
    assert _fails(forged, "10", keys).server_name == "other.example"


def test_before_v8_join_authorised_via_users_server_asks_no_signature() -> None:
    rv = room_version("7")
    _check(EXAMPLE.sign(_restricted_join("7"), rv), "7", KeyTable().add(EXAMPLE))


def test_a_third_party_invite_needs_no_signature_of_the_senders_server() -> None:
    rv = room_version("10")
    pdu = make_pdu(
        rv,
        signatures={},
        type="m.room.member",
        state_key="@bob:third.example",
        content={"membership": "invite", "third_party_invite": {"signed": {}}},
    )
    _check(pdu, "10", KeyTable())


@pytest.mark.parametrize(
    ("signature", "why"),
    [("!!!", "not unpadded base64"), ("AAAA", "3 bytes, not 64")],
)
def test_a_malformed_signature_fails_naming_the_key(signature: str, why: str) -> None:
    pdu = {**_message("10"), "signatures": {"example.org": {"ed25519:k1": signature}}}
    failure = _fails(pdu, "10", KeyTable().add(EXAMPLE))
    assert failure.key_id == "ed25519:k1" and why in str(failure)
