"""Real ed25519 keys for the signature tests: generated with signedjson, events signed the way a
homeserver signs them (signedjson's ``sign_json`` over the redacted event), checked by Roomstream.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from signedjson.key import generate_signing_key
from signedjson.sign import sign_json

from pipeline.matrix.redaction import redact
from pipeline.matrix.room_versions import RoomVersion
from pipeline.matrix.signing import ServerKey

FAR_FUTURE = 2**62


class Server:
    """A homeserver's name and signing key."""

    def __init__(self, name: str, version: str = "k1") -> None:
        self.name = name
        self.key = generate_signing_key(version)
        self.key_id = f"{self.key.alg}:{self.key.version}"

    @property
    def verify_key(self) -> bytes:
        return bytes(self.key.verify_key.encode())

    def server_key(self, valid_until_ts: int = FAR_FUTURE) -> ServerKey:
        return ServerKey(self.verify_key, valid_until_ts)

    def sign(self, pdu: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        """``pdu`` with this server's signature added (the others kept)."""
        signable = {k: v for k, v in redact(pdu, rv).items() if k not in ("signatures", "unsigned")}
        signed = sign_json(copy.deepcopy(signable), self.name, self.key)
        out = dict(pdu)
        sigs = {s: dict(by_key) for s, by_key in (pdu.get("signatures") or {}).items()}
        sigs.setdefault(self.name, {}).update(signed["signatures"][self.name])
        out["signatures"] = sigs
        return out


class KeyTable:
    """A ``KeyProvider`` over a fixed table: {(server, key_id): ServerKey}."""

    def __init__(self, keys: Mapping[tuple[str, str], ServerKey] | None = None) -> None:
        self.keys = dict(keys or {})
        self.asked: list[tuple[str, frozenset[str]]] = []

    def add(self, server: Server, valid_until_ts: int = FAR_FUTURE) -> KeyTable:
        self.keys[(server.name, server.key_id)] = server.server_key(valid_until_ts)
        return self

    def __call__(self, server_name: str, key_ids: frozenset[str], /) -> Mapping[str, ServerKey]:
        self.asked.append((server_name, key_ids))
        return {k: v for (s, k), v in self.keys.items() if s == server_name and k in key_ids}
