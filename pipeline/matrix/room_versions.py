"""Room versions 1–12 as data: one frozen set of rule flags per version.

Code elsewhere asks a flag (``rv.strict_canonical_json``), never compares version strings, so a
reviewer can hold each flag beside the spec's room version page.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.matrix.errors import UnknownRoomVersion


class EventFormat(enum.IntEnum):
    """How an event is shaped and identified (Synapse's EventFormatVersions numbering)."""

    V1 = 1  # room v1, v2: event_id is a field; prev/auth events are [id, hashes] pairs
    V2 = 2  # room v3: event ID = "$" + unpadded standard base64 of the reference hash
    V3 = 3  # room v4–v11: event ID = "$" + unpadded URL-safe base64 of the reference hash
    V4 = 4  # room v12: as V3, but the create event has no room_id; the room ID derives from it


class StateResAlgorithm(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"


def _since(n: int) -> Any:
    """The field of a flag that holds from room version ``n`` on."""
    return field(metadata={"since": n})


def _until(n: int) -> Any:
    """The field of a flag that holds in room versions 1 to ``n``."""
    return field(metadata={"until": n})


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_format: EventFormat
    state_res: StateResAlgorithm
    # The m.room.aliases auth special case applies.
    special_case_aliases_auth: bool = _until(5)
    # A signing key must be valid (valid_until_ts) at the event's origin_server_ts.
    enforce_key_validity: bool = _since(5)
    # Integers outside [-(2**53)+1, 2**53-1] and floats are rejected; JSON is strict.
    strict_canonical_json: bool = _since(6)
    # Power levels may restrict "notifications" (redaction does not keep it).
    limit_notifications_power_levels: bool = _since(6)
    # Membership "knock" and join rule "knock".
    knock_join_rule: bool = _since(7)
    # Join rule "restricted" and join_authorised_via_users_server.
    restricted_join_rule: bool = _since(8)
    # Redaction keeps join_authorised_via_users_server in member content.
    restricted_join_rule_fix: bool = _since(9)
    # Join rule "knock_restricted".
    knock_restricted_join_rule: bool = _since(10)
    # Power level values must be integers (not strings).
    enforce_int_power_levels: bool = _since(10)
    # The create event's creator is its sender (no "creator" content key).
    implicit_room_creator: bool = _since(11)
    # The redaction algorithm of MSC2176/MSC3821/MSC3989; "redacts" lives in content.
    updated_redaction_rules: bool = _since(11)
    # The 255-byte limits on sender, room_id, event_id, type and state_key count bytes;
    # before, deployed servers counted code points, and rooms hold events relying on that.
    strict_event_byte_limits: bool = _since(11)
    # The room ID is "!" + the create event's reference hash; create has no room_id.
    room_id_is_create_event_hash: bool = _since(12)
    # Creators (sender + additional_creators) have infinite power (MSC4289).
    privileged_creators: bool = _since(12)

    @property
    def is_known(self) -> bool:
        return self.identifier in KNOWN_ROOM_VERSIONS


def _v(identifier: str, fmt: EventFormat, sr: StateResAlgorithm, n: int) -> RoomVersion:
    """Build version ``n``: each flag by the versions its field says it holds in."""
    flags: dict[str, Any] = {
        f.name: n >= f.metadata["since"] if "since" in f.metadata else n <= f.metadata["until"]
        for f in fields(RoomVersion)
        if f.metadata
    }
    return RoomVersion(identifier, fmt, sr, **flags)


_F, _S = EventFormat, StateResAlgorithm
KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    "1": _v("1", _F.V1, _S.V1, 1),
    "2": _v("2", _F.V1, _S.V2, 2),
    "3": _v("3", _F.V2, _S.V2, 3),
    **{str(n): _v(str(n), _F.V3, _S.V2, n) for n in range(4, 12)},
    "12": _v("12", _F.V4, _S.V2_1, 12),
}

# The spec: a create event without room_version means version 1.
DEFAULT_ROOM_VERSION = "1"

RECOGNISED_ELSEWHERE: dict[str, str] = {
    "org.matrix.msc3757.10": "10",
    "org.matrix.msc3757.11": "11",
    "org.matrix.hydra.11": "12",
}
"""Experimental room versions Synapse (1.163.2) recognises, with the version whose state
resolution algorithm and auth state selection they share. Roomstream has no rooms of these
versions; a second create event that names one passes rule 1.3 as it does for Synapse, which
then resolves the room's state by that version (docs/synapse-parity.md)."""


def is_recognised(identifier: object) -> bool:
    """Rule 1.3: whether a create event's ``content.room_version`` names a recognised version
    (the spec's, and the experimental ones Synapse recognises)."""
    return isinstance(identifier, str) and (
        identifier in KNOWN_ROOM_VERSIONS or identifier in RECOGNISED_ELSEWHERE
    )


def resolution_version(identifier: object) -> RoomVersion:
    """The version whose state resolution a resolution by version ``identifier`` runs (for a
    recognised version; raises UnknownRoomVersion for anything else)."""
    if isinstance(identifier, str) and identifier in RECOGNISED_ELSEWHERE:
        return KNOWN_ROOM_VERSIONS[RECOGNISED_ELSEWHERE[identifier]]
    return room_version(identifier)


def room_version(identifier: object) -> RoomVersion:
    """The rules of room version ``identifier``; raises UnknownRoomVersion for anything else."""
    if not isinstance(identifier, str) or identifier not in KNOWN_ROOM_VERSIONS:
        raise UnknownRoomVersion(identifier)
    return KNOWN_ROOM_VERSIONS[identifier]
