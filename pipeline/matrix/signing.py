"""Signature checks: check 2 of "Checks performed on receipt of a PDU" ("Passes signature checks,
otherwise it is dropped").

* ``required_signers(pdu, room_version)``: the servers whose signatures an event must carry.
* ``signed_bytes(pdu, room_version)``: the bytes those signatures cover.
* ``KeyProvider``: a server's verify keys by key ID, each with its ``valid_until_ts`` (the shell
  implements it over ``<prefix>.server-keys``; the core only calls it).
* ``Ed25519SignatureChecker(keys).check(event)`` raises ``SignatureFailed`` (an ``InvalidPdu``:
  the event is dropped) naming the server and, where one was tried, the key.
  ``NullSignatureChecker`` accepts everything (signature checks off).

What a check does, per required server, as Synapse's key ring does it (``process_request``):
every key ID the server signed with is looked up; a key that is unknown, not ed25519, or (from
room version 5, "enforce the valid_until_ts") valid only until before the event's
``origin_server_ts`` is skipped; every key left must verify its signature, and at least one must
be left. An expired key is thus never a failure of the signature, only a lack of a usable key.
The spec's "the lesser of valid_until_ts and 7 days into the future" bounds how long a fetched
key is trusted without being fetched again: the front ends that fetch keys apply it, not this
check (Synapse does not apply it here either).

Signatures cover the redacted event, so an event whose content hash fails (check 3, redacted by
``parse_pdu``) still passes when its essential fields are as signed; a change to those fails.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from pipeline.matrix.canonical_json import encode_canonical_json
from pipeline.matrix.errors import InvalidPdu
from pipeline.matrix.events import Event
from pipeline.matrix.redaction import redacted_view
from pipeline.matrix.room_versions import EventFormat, RoomVersion

ED25519 = "ed25519"
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
AUTHORISING_USER = "join_authorised_via_users_server"


@dataclass(frozen=True, slots=True)
class ServerKey:
    """A server's verify key: the raw ed25519 public key, and until when it is valid (ms; for a
    key listed under ``old_verify_keys``, its ``expired_ts``)."""

    verify_key: bytes
    valid_until_ts: int


class KeyProvider(Protocol):
    """The keys of ``server_name`` among ``key_ids`` that are known, as ``{key_id: ServerKey}``,
    whatever their validity (the checker applies the room version's validity rule)."""

    def __call__(self, server_name: str, key_ids: frozenset[str], /) -> Mapping[str, ServerKey]: ...


class SignatureChecker(Protocol):
    """Checks the signatures of an event; raises InvalidPdu (the event is dropped) on failure."""

    def check(self, event: Event) -> None: ...


class SignatureFailed(InvalidPdu):
    """A required signature is missing, wrong, or has no usable key. ``server_name`` names the
    server, ``key_id`` the key (None when no key could be tried)."""

    def __init__(self, event_id: str, server_name: str, key_id: str | None, why: str) -> None:
        self.event_id = event_id
        self.server_name = server_name
        self.key_id = key_id
        super().__init__(f"event {event_id} fails the signature check of {server_name}: {why}")


class NullSignatureChecker:
    """Accepts every event: signature checks are off (see the README for what that trusts)."""

    def check(self, event: Event) -> None:
        return None


class Ed25519SignatureChecker:
    """Verifies the ed25519 signatures of every required server with keys from ``keys``."""

    def __init__(self, keys: KeyProvider) -> None:
        self.keys = keys

    def check(self, event: Event) -> None:
        rv = event.room_version
        pdu = event.pdu
        # "When validating event signatures, servers MUST enforce the valid_until_ts property
        # from a key request is at least as large as the origin_server_ts" (v5+); before, any
        # key of the server counts, however old.
        valid_at = event.origin_server_ts if rv.enforce_key_validity else 0
        signatures = pdu.get("signatures")
        message: bytes | None = None
        for server in sorted(required_signers(pdu, rv)):
            by_key = signatures.get(server) if isinstance(signatures, Mapping) else None
            if not isinstance(by_key, Mapping) or not by_key:
                raise SignatureFailed(event.event_id, server, None, "the event is not signed by it")
            keys = self.keys(server, frozenset(by_key))
            verified = False
            unusable: list[str] = []
            for key_id in sorted(by_key):
                key = keys.get(key_id)
                if (
                    key is None
                    or not key_id.startswith(ED25519 + ":")
                    or len(key.verify_key) != ED25519_KEY_BYTES
                ):
                    unusable.append(f"{key_id} (unknown)")
                    continue
                if key.valid_until_ts < valid_at:
                    unusable.append(
                        f"{key_id} (valid until {key.valid_until_ts}, before the event's "
                        f"origin_server_ts {valid_at})"
                    )
                    continue
                if message is None:
                    message = signed_bytes(pdu, rv)
                fault = _fault(key, by_key[key_id], message)
                if fault is not None:
                    raise SignatureFailed(event.event_id, server, key_id, f"key {key_id}: {fault}")
                verified = True
            if not verified:
                raise SignatureFailed(
                    event.event_id,
                    server,
                    None,
                    f"no usable key among {', '.join(unusable)}; have the front ends fetch the "
                    f"server's keys into the server-keys topic, or produce the event again once "
                    "they are there",
                )


def _fault(key: ServerKey, signature: object, message: bytes) -> str | None:
    """Why ``signature`` of ``message`` does not verify with ``key``; None when it does."""
    if not isinstance(signature, str):
        return "the signature is not a string"
    try:
        raw = base64.b64decode(
            signature + "=" * (-len(signature) % 4), altchars=b"-_", validate=True
        )
    except (binascii.Error, ValueError):
        return "the signature is not unpadded base64"
    if len(raw) != ED25519_SIGNATURE_BYTES:
        return f"the signature is {len(raw)} bytes, not {ED25519_SIGNATURE_BYTES}"
    try:
        VerifyKey(key.verify_key).verify(message, raw)
    except BadSignatureError:
        return "the signature does not verify"
    return None


def _server_of(identifier: object) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1]


def required_signers(pdu: Mapping[str, Any], room_version: RoomVersion) -> frozenset[str]:
    """The servers whose signatures ``pdu`` must carry, as Synapse checks them on receipt.

    * The sender's server, "unless the event is a 3rd party invite": such an invite may come
      from another server than the sender's (its sender is checked against the invite by the
      auth rules).
    * "Room versions 1 and 2 also require that a signature is present from the domain in the
      event_id, if it differs from the originating server."
    * From v8, a join naming ``join_authorised_via_users_server`` must also be signed by that
      user's server; the auth rules reject a join without that signature, this check drops one
      whose signature is there and wrong.
    """
    signers: set[str] = set()
    content = pdu.get("content")
    is_member = pdu.get("type") == "m.room.member" and isinstance(content, Mapping)
    membership = content.get("membership") if is_member and isinstance(content, Mapping) else None
    is_3pid_invite = (
        membership == "invite" and isinstance(content, Mapping) and "third_party_invite" in content
    )
    sender_server = _server_of(pdu.get("sender"))
    if sender_server is not None and not is_3pid_invite:
        signers.add(sender_server)
    if room_version.event_format == EventFormat.V1:
        event_id_server = _server_of(pdu.get("event_id"))
        if event_id_server is not None:
            signers.add(event_id_server)
    if room_version.restricted_join_rule and membership == "join" and isinstance(content, Mapping):
        authoriser_server = _server_of(content.get(AUTHORISING_USER))
        if authoriser_server is not None:
            signers.add(authoriser_server)
    return frozenset(signers)


def signed_bytes(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The bytes event signatures cover: the redacted event without ``signatures`` and
    ``unsigned``, as canonical JSON ("the resultant object is checked for signatures ... this step
    should succeed whether we have been sent the full event or a redacted copy")."""
    redacted = redacted_view(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return encode_canonical_json(redacted, strict=False)
