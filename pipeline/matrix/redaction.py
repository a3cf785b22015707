"""The redaction algorithm of each room version: which keys of an event survive redaction.

Redaction decides what the reference hash (and so the event ID from room version 3) and the
signatures cover, and what is kept of an event whose content hash does not match. It is data per
room version, asked through RoomVersion flags:

* v1–v5: the original lists; ``m.room.aliases`` keeps ``aliases`` (``special_case_aliases_auth``).
* v6: ``aliases`` is no longer kept.
* v8: ``m.room.join_rules`` keeps ``allow`` (``restricted_join_rule``).
* v9: ``m.room.member`` keeps ``join_authorised_via_users_server`` (``restricted_join_rule_fix``).
* v11 (MSC2176, MSC3821, MSC3989; ``updated_redaction_rules``): the top level no longer keeps
  ``origin``, ``membership`` and ``prev_state``; ``m.room.create`` keeps all of its content;
  ``m.room.power_levels`` keeps ``invite``; ``m.room.redaction`` keeps ``redacts`` in content;
  ``m.room.member`` keeps ``third_party_invite.signed``.
* v12: unchanged from v11.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.matrix.canonical_json import copy_json
from pipeline.matrix.room_versions import RoomVersion

# "the server must strip off any keys not in the following list" (v1–v10).
_TOP_LEVEL_KEYS_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11 (MSC2176): origin, membership and prev_state are no longer protected.
_TOP_LEVEL_KEYS_V11 = _TOP_LEVEL_KEYS_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVELS_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def top_level_keys(room_version: RoomVersion) -> frozenset[str]:
    """The top-level keys redaction keeps in ``room_version``."""
    return _TOP_LEVEL_KEYS_V11 if room_version.updated_redaction_rules else _TOP_LEVEL_KEYS_V1


def content_keys(event_type: str, room_version: RoomVersion) -> frozenset[str] | None:
    """The content keys redaction keeps for ``event_type``; None means all of them.

    ``m.room.member``'s partial ``third_party_invite`` (v11+) is handled in ``redact``.
    """
    rv = room_version
    keys: tuple[str, ...] = ()
    if event_type == "m.room.member":
        keys = ("membership",)
        if rv.restricted_join_rule_fix:
            # v9: "m.room.member allows keys membership, join_authorised_via_users_server".
            keys += ("join_authorised_via_users_server",)
    elif event_type == "m.room.create":
        if rv.updated_redaction_rules:
            # v11: "m.room.create allows all keys."
            return None
        keys = ("creator",)
    elif event_type == "m.room.join_rules":
        keys = ("join_rule",)
        if rv.restricted_join_rule:
            # v8: "m.room.join_rules events now keep allow".
            keys += ("allow",)
    elif event_type == "m.room.power_levels":
        keys = _POWER_LEVELS_KEYS
        if rv.updated_redaction_rules:
            # v11: power levels also keep "invite".
            keys += ("invite",)
    elif event_type == "m.room.aliases" and rv.special_case_aliases_auth:
        # v1–v5 only: "m.room.aliases allows key aliases".
        keys = ("aliases",)
    elif event_type == "m.room.history_visibility":
        keys = ("history_visibility",)
    elif event_type == "m.room.redaction" and rv.updated_redaction_rules:
        # v11: "m.room.redaction allows key redacts".
        keys = ("redacts",)
    return frozenset(keys)


def redacted_view(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """The redacted form of ``pdu``, sharing nested values with it (read-only use: hashing).

    ``content`` that is not an object redacts to ``{}``.
    """
    keep = top_level_keys(room_version)
    out: dict[str, Any] = {k: v for k, v in pdu.items() if k in keep}
    content = pdu.get("content")
    if not isinstance(content, Mapping):
        content = {}
    event_type = pdu.get("type")
    allowed = content_keys(event_type, room_version) if isinstance(event_type, str) else frozenset()
    if allowed is None:
        new_content: dict[str, Any] = dict(content)
    else:
        new_content = {k: v for k, v in content.items() if k in allowed}
    if event_type == "m.room.member" and room_version.updated_redaction_rules:
        # v11 (MSC3821): "it allows the signed key of the third_party_invite key". An object
        # without "signed" stays as an empty object, as the reference implementation keeps it,
        # so that reference hashes agree.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping):
            new_content["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
    out["content"] = new_content
    return out


def redact(pdu: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """A redacted deep copy of ``pdu`` under ``room_version``'s redaction algorithm.

    ``unsigned`` is stripped like every other key not in the list. Raises CanonicalJsonError if the
    kept parts are not JSON values.
    """
    copied: dict[str, Any] = copy_json(redacted_view(pdu, room_version))
    return copied
