"""The identifier checks the authorization rules need: domains of IDs and user ID validity.

Validation follows the spec's appendix on identifiers, with the historical user ID localparts
servers must still accept over federation (anything but ``:`` and NUL, even empty).
"""

from __future__ import annotations

import re

_MAX_ID_BYTES = 255
_PORT = r"(?::[0-9]{1,5})?"
_IPV4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
_IPV6 = r"\[[0-9A-Fa-f:.]{2,45}\]"
_DNS = r"[0-9A-Za-z.-]{1,255}"
_SERVER_NAME = re.compile(rf"(?:{_IPV4}|{_IPV6}|{_DNS}){_PORT}")


def domain_of(identifier: str) -> str | None:
    """The part after the first ``:`` of a sigilled ID (user, room, v1/v2 event ID), or None."""
    _, sep, domain = identifier.partition(":")
    return domain if sep else None


def is_valid_server_name(name: str) -> bool:
    return _SERVER_NAME.fullmatch(name) is not None


def is_valid_user_id(value: object) -> bool:
    """``@localpart:server_name``, at most 255 bytes; historical localparts are accepted."""
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    if len(value.encode("utf-8", "surrogatepass")) > _MAX_ID_BYTES:
        return False
    localpart, sep, server = value[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return is_valid_server_name(server)
