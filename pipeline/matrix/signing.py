"""The seam for signature checks: check 2 of "Checks performed on receipt of a PDU" ("Passes
signature checks, otherwise it is dropped").

Roomstream does not verify signatures yet: the front ends that produce PDUs to Kafka receive them
over federation and are expected to have checked them. This module fixes the shape the checks
will take, so that adding them changes one class and no caller:

* ``KeyProvider`` fetches a server's verify keys valid at a timestamp (the shell implements it over
  the key store or the key notary; the pure core only calls it).
* ``SignatureChecker.check(event)`` raises ``InvalidPdu`` when a required signature is missing or
  wrong. ``NullSignatureChecker`` accepts everything.
* ``required_signers`` and ``signed_bytes`` hold the protocol facts a real checker needs: which
  servers must have signed, and which bytes their signatures cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pipeline.matrix.canonical_json import encode_canonical_json
from pipeline.matrix.events import Event
from pipeline.matrix.redaction import redacted_view
from pipeline.matrix.room_versions import EventFormat, RoomVersion


class KeyProvider(Protocol):
    """A server's verify keys, as ``{key_id: raw public key bytes}``, that were valid at
    ``valid_at_ts`` (ms). Keys not known, or expired before that time, are left out: "If a
    signature is from an unknown or expired key, it is skipped"."""

    def __call__(
        self, server_name: str, key_ids: frozenset[str], valid_at_ts: int, /
    ) -> Mapping[str, bytes]: ...


class SignatureChecker(Protocol):
    """Checks the signatures of an event; raises InvalidPdu (the event is dropped) on failure."""

    def check(self, event: Event) -> None: ...


class NullSignatureChecker:
    """Accepts every event. The place where ed25519 verification over ``signed_bytes`` with keys
    from a ``KeyProvider`` will go."""

    def check(self, event: Event) -> None:
        return None


def _server_of(identifier: object) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1]


def required_signers(pdu: Mapping[str, Any], room_version: RoomVersion) -> frozenset[str]:
    """The servers whose signatures ``pdu`` must carry.

    "For room versions 3 and later, unless the event is a 3rd party invite, only the signature(s)
    from the originating server (the server the sender belongs to) are required ... Room versions
    1 and 2 also require that a signature is present from the domain in the event_id, if it
    differs from the originating server." A third-party invite's sender is checked against the
    invite itself by the auth rules, so its sending server is not required here. From v8, a join
    naming ``join_authorised_via_users_server`` must also be signed by that user's server; that is
    an authorization rule, asked of the checker by the auth rules, not listed here.
    """
    signers: set[str] = set()
    content = pdu.get("content")
    is_3pid_invite = (
        pdu.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )
    sender_server = _server_of(pdu.get("sender"))
    if sender_server is not None and not is_3pid_invite:
        signers.add(sender_server)
    if room_version.event_format == EventFormat.V1:
        event_id_server = _server_of(pdu.get("event_id"))
        if event_id_server is not None:
            signers.add(event_id_server)
    return frozenset(signers)


def signed_bytes(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """The bytes event signatures cover: the redacted event without ``signatures`` and
    ``unsigned``, as canonical JSON ("the resultant object is checked for signatures ... this step
    should succeed whether we have been sent the full event or a redacted copy")."""
    redacted = redacted_view(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return encode_canonical_json(redacted, strict=False)
