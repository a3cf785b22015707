"""What the authorization rules know while checking one event: the state they read, the room's
create event and power levels, and the two signature seams.

Signature verification itself is not pure arithmetic over events (it needs keys), so the rules
ask two callables; the defaults only check what the event's own JSON can show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.matrix.auth.identifiers import domain_of
from pipeline.matrix.auth.selection import MEMBER, POWER_LEVELS_KEY
from pipeline.matrix.events import Event, StateKey
from pipeline.matrix.power_levels import PowerLevel, PowerLevels, room_creators, user_level


class ThirdPartySignatureCheck(Protocol):
    """Whether any signature in a third-party invite's ``signed`` object verifies with any of
    the ``m.room.third_party_invite`` event's public keys (unpadded base64 ed25519 keys)."""

    def __call__(self, signed: Mapping[str, Any], public_keys: Sequence[str], /) -> bool: ...


class ServerSignatureCheck(Protocol):
    """Whether ``event`` is validly signed by the homeserver ``server_name``."""

    def __call__(self, event: Event, server_name: str, /) -> bool: ...


def accept_third_party_signature(signed: Mapping[str, Any], public_keys: Sequence[str], /) -> bool:
    """The default: signatures are verified elsewhere, so a structurally valid ``signed`` passes."""
    return True


def signature_checked_on_receipt(event: Event, server_name: str, /) -> bool:
    """For checks after receipt (state resolution, soft-fail): the authorising server's
    signature on a restricted join was checked when the event was received, and is not checked
    again. Synapse checks it only on receipt (``validate_event_for_room_version``), and the
    events Roomstream keeps for later checks do not carry their signatures."""
    return True


def has_server_signature(event: Event, server_name: str, /) -> bool:
    """The default: the server's signature is present (its validity is checked on receipt)."""
    signatures = event.pdu.get("signatures")
    return isinstance(signatures, Mapping) and isinstance(signatures.get(server_name), Mapping)


def federates(create: Event) -> bool:
    """Whether the room of ``create`` admits other servers than its creator's: its
    ``m.federate`` is absent or true. Synapse (``_can_federate``) counts any other value as
    false, not only false, and Roomstream reads it the same (docs/synapse-parity.md)."""
    return create.content.get("m.federate", True) is True


# Not frozen: one is built for every authorization check, and a frozen dataclass sets each of
# its fields through object.__setattr__, a quarter of the cost of checking a join.
@dataclass(slots=True)
class AuthContext:
    event: Event
    state: Mapping[StateKey, Event]
    create: Event
    power_levels: PowerLevels
    third_party_signature_ok: ThirdPartySignatureCheck
    server_signature_ok: ServerSignatureCheck

    @classmethod
    def build(
        cls,
        event: Event,
        state: Mapping[StateKey, Event],
        create: Event,
        third_party_signature_ok: ThirdPartySignatureCheck,
        server_signature_ok: ServerSignatureCheck,
    ) -> AuthContext:
        pl_event = state.get(POWER_LEVELS_KEY)
        return cls(
            event=event,
            state=state,
            create=create,
            power_levels=PowerLevels.from_event(pl_event, event.room_version),
            third_party_signature_ok=third_party_signature_ok,
            server_signature_ok=server_signature_ok,
        )

    @property
    def creators(self) -> frozenset[str]:
        return room_creators(self.create)

    def level(self, user_id: str) -> PowerLevel:
        """``user_id``'s power level in this state, room creators included."""
        return user_level(user_id, self.power_levels, self.create)

    def membership(self, user_id: str) -> str | None:
        """``user_id``'s current membership; None when there is no member event (never joined)."""
        member = self.state.get((MEMBER, user_id))
        return member.membership if member is not None else None

    def same_domain(self, a: str, b: str) -> bool:
        da = domain_of(a)
        return da is not None and da == domain_of(b)
