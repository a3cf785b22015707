"""``topics.server_keys`` and the key ring folding it: the record Synapse's key ring would keep,
compaction's "latest wins", tombstones, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from pipeline.errors import MalformedMessage
from pipeline.matrix.signing import ServerKey
from pipeline.server_keys import KeyRing
from tests.unit.matrix.signing_keys import Server
from topics import server_keys

ONE = Server("one.example")


def test_a_current_key_carries_valid_until_ts_and_an_old_one_expired_ts() -> None:
    key, value = server_keys.encode("one.example", ONE.key_id, ONE.verify_key, valid_until_ts=9)
    assert key == b"one.example/ed25519:k1"
    record = server_keys.decode(key, value)
    assert record.server_key() == ServerKey(ONE.verify_key, 9)
    _, old = server_keys.encode("one.example", ONE.key_id, ONE.verify_key, expired_ts=4)
    assert server_keys.decode(key, old).server_key() == ServerKey(ONE.verify_key, 4)
    assert orjson.loads(old)["expired_ts"] == 4


_KEY_TEXT = orjson.loads(
    server_keys.encode("one.example", "ed25519:k1", ONE.verify_key, valid_until_ts=5)[1]
)["verify_key"]
GOOD = {
    "server_name": "one.example",
    "key_id": "ed25519:k1",
    "verify_key": _KEY_TEXT,
    "valid_until_ts": 5,
}


def _doc(**change: object) -> bytes:
    return orjson.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not ...})


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        (b"one.example/ed25519:k1", b"{", "not JSON"),
        (b"other/ed25519:k1", _doc(), "not 'one.example/ed25519:k1'"),
        (b"one.example/rsa:k1", _doc(key_id="rsa:k1"), "not an ed25519 key ID"),
        (b"one.example/ed25519:k1", _doc(verify_key="AAAA"), "32-byte ed25519 key"),
        (b"one.example/ed25519:k1", _doc(verify_key="!!"), "32-byte ed25519 key"),
        (b"one.example/ed25519:k1", _doc(valid_until_ts=...), "either `valid_until_ts`"),
        (b"one.example/ed25519:k1", _doc(expired_ts=3), "either `valid_until_ts`"),
        (b"a/b/ed25519:k1", _doc(server_name="a/b"), "not a server name"),
    ],
)
def test_a_malformed_record_is_refused_naming_what_is_wrong(
    key: bytes, value: bytes, names: str
) -> None:
    with pytest.raises(MalformedMessage, match="server-keys") as caught:
        server_keys.decode(key, value)
    assert names in str(caught.value)


def test_the_ring_keeps_the_latest_record_of_a_key_and_a_tombstone_forgets_it() -> None:
    ring = KeyRing()
    key, first = server_keys.encode("one.example", ONE.key_id, ONE.verify_key, valid_until_ts=9)
    _, renewed = server_keys.encode("one.example", ONE.key_id, ONE.verify_key, valid_until_ts=20)
    # The latest record wins even with a shorter validity: compaction keeps only the latest, so
    # a fold that did otherwise would change when the topic is compacted.
    _, retired = server_keys.encode("one.example", ONE.key_id, ONE.verify_key, expired_ts=15)
    for value, until in [(first, 9), (renewed, 20), (retired, 15)]:
        assert ring.apply(key, value) is None
        assert ring("one.example", frozenset({ONE.key_id, "ed25519:other"})) == {
            ONE.key_id: ServerKey(ONE.verify_key, until)
        }
    assert ring("two.example", frozenset({ONE.key_id})) == {}
    ring.apply(key, None)
    assert ring("one.example", frozenset({ONE.key_id})) == {} and len(ring) == 0


def test_the_ring_skips_a_malformed_record_and_counts_it() -> None:
    ring = KeyRing()
    assert "not JSON" in (ring.apply(b"one.example/ed25519:k1", b"{") or "")
    assert ring.malformed == 1 and len(ring) == 0
