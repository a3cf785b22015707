"""The wire format of ``<prefix>.server-keys``: the verify keys federation front ends fetched.

A compacted topic, one record per key, keyed ``<server_name>/<key_id>`` (UTF-8; a server name
has no ``/``), so compaction keeps each key's latest record and a null value (a tombstone)
forgets the key. The value is what Synapse's key ring keeps of a key
(``server_signature_keys``): the server, the key ID, the raw key as unpadded base64, and until
when it may verify signatures, in ms since the epoch:

* a key the server lists under ``verify_keys`` carries the response's ``valid_until_ts``;
* a key it lists under ``old_verify_keys`` carries that entry's ``expired_ts`` instead.

Optional ``from_server`` (the server or notary the key came from) and ``ts_added_ms`` are kept for
the operator. A front end publishes a key again whenever it fetches a later validity; the latest
record wins (as compaction would have it). Only ed25519 keys are published: no other algorithm
is defined for server keys.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from pipeline.errors import MalformedMessage
from pipeline.matrix.signing import ED25519, ED25519_KEY_BYTES, ServerKey
from topics import _msgspec

__all__ = ["ServerKeyRecord", "decode", "encode", "record_key"]

WIRE_FORMAT = "server-keys"


class ServerKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    server_name: str
    key_id: str
    verify_key: str  # unpadded base64 of the 32-byte ed25519 public key
    valid_until_ts: int | None = None
    expired_ts: int | None = None
    from_server: str | None = None
    ts_added_ms: int | None = None

    @property
    def until(self) -> int:
        """Until when the key verifies (ms): ``expired_ts`` for an old key."""
        if self.expired_ts is not None:
            return self.expired_ts
        assert self.valid_until_ts is not None, "decode and encode refuse a record without either"
        return self.valid_until_ts

    def server_key(self) -> ServerKey:
        return ServerKey(_key_bytes(self.verify_key) or b"", self.until)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ServerKeyRecord)


def record_key(server_name: str, key_id: str) -> bytes:
    return f"{server_name}/{key_id}".encode()


def encode(
    server_name: str,
    key_id: str,
    verify_key: bytes,
    *,
    valid_until_ts: int | None = None,
    expired_ts: int | None = None,
    from_server: str | None = None,
    ts_added_ms: int | None = None,
) -> tuple[bytes, bytes]:
    """The (key, value) of the record of one verify key (raw ``verify_key`` bytes)."""
    record = ServerKeyRecord(
        server_name=server_name,
        key_id=key_id,
        verify_key=base64.b64encode(verify_key).decode().rstrip("="),
        valid_until_ts=valid_until_ts,
        expired_ts=expired_ts,
        from_server=from_server,
        ts_added_ms=ts_added_ms,
    )
    reason = _fault(record, None)
    if reason is not None:
        raise ValueError(f"not a server-keys record: {reason}")
    return record_key(server_name, key_id), _encoder.encode(record)


def decode(key: bytes | None, value: bytes | str | None) -> ServerKeyRecord:
    """The record in a message; MalformedMessage names what does not fit (a tombstone, a null
    value, is not decoded here: it forgets the key)."""
    record = _msgspec.decode(_decoder, value, WIRE_FORMAT)
    reason = _fault(record, key)
    if reason is not None:
        raise MalformedMessage(WIRE_FORMAT, reason)
    return record


def _key_bytes(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None


def _fault(r: ServerKeyRecord, key: bytes | None) -> str | None:
    if not r.server_name or "/" in r.server_name:
        return f"`server_name` {r.server_name!r} is not a server name"
    if not r.key_id.startswith(ED25519 + ":"):
        return f"`key_id` {r.key_id!r} is not an ed25519 key ID"
    if key is not None and key != record_key(r.server_name, r.key_id):
        return (
            f"the record's key {key.decode('utf-8', 'replace')!r} is not "
            f"{record_key(r.server_name, r.key_id).decode()!r}, its server_name/key_id"
        )
    raw = _key_bytes(r.verify_key)
    if raw is None or len(raw) != ED25519_KEY_BYTES:
        return f"`verify_key` of {r.key_id} is not the unpadded base64 of a 32-byte ed25519 key"
    if (r.valid_until_ts is None) == (r.expired_ts is None):
        return "a key has either `valid_until_ts` (a current key) or `expired_ts` (an old one)"
    return None
