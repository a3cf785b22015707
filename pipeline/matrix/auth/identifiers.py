"""The identifier checks the authorization rules need: domains of IDs and user ID validity.

User IDs are validated exactly as a PDU's ``sender`` is (``pipeline.matrix.pdu``), since v12's
create rule asks for "the same user ID validation applied to sender"; that accepts the
historical localparts servers must still accept over federation.
"""

from __future__ import annotations

from pipeline.matrix import pdu


def domain_of(identifier: str) -> str | None:
    """The part after the first ``:`` of a sigilled ID (user, room, v1/v2 event ID), or None."""
    _, sep, domain = identifier.partition(":")
    return domain if sep else None


def is_valid_user_id(value: object) -> bool:
    """``@localpart:server_name``, at most 255 bytes; historical localparts are accepted."""
    return isinstance(value, str) and pdu.is_valid_user_id(value)
