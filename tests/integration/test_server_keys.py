"""Signature checks with keys read from ``<prefix>.server-keys`` on the real broker: the keys the
front ends published before a worker starts, a key published after (the check waits for the
topic instead of refusing), a retired key's tombstone, and a forged signature."""

from __future__ import annotations

from dataclasses import replace

import pytest
from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.matrix.pdu import parse_pdu
from pipeline.matrix.room_versions import room_version
from pipeline.matrix.signing import SignatureFailed
from pipeline.server_keys import signature_checker
from tests.unit.matrix.pdu_factory import make_pdu
from tests.unit.matrix.signing_keys import Server
from topics import server_keys
from topics.definitions import Topic

pytestmark = pytest.mark.integration

RV = room_version("10")


def _publish(settings: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value in records:
        producer.produce(settings.topic(Topic.SERVER_KEYS), value, key)
    assert producer.flush(10) == 0


def _key_record(server: Server) -> tuple[bytes, bytes]:
    return server_keys.encode(
        server.name, server.key_id, server.verify_key, valid_until_ts=2**62, from_server="notary"
    )


def test_signatures_are_checked_with_the_keys_published_to_the_server_keys_topic(
    settings: Settings,
) -> None:
    example, late = Server("example.org"), Server("late.example")
    _publish(settings, [_key_record(example), (b"example.org/ed25519:junk", b"{")])
    checker, reader = signature_checker(replace(settings, verify_signatures=True))
    assert checker is not None and reader is not None
    try:
        signed = example.sign(make_pdu(RV, signatures={}), RV)
        checker.check(parse_pdu(signed, RV))

        forged = {**signed, "signatures": {"example.org": {example.key_id: "A" * 86}}}
        with pytest.raises(SignatureFailed) as caught:
            checker.check(parse_pdu(forged, RV))
        assert (caught.value.server_name, caught.value.key_id) == ("example.org", "ed25519:k1")

        # A key published after the worker started: the check syncs with the topic first.
        from_late = late.sign(make_pdu(RV, signatures={}, sender="@bob:late.example"), RV)
        _publish(settings, [_key_record(late)])
        checker.check(parse_pdu(from_late, RV))

        # A tombstone forgets a key; events signed with it are refused for want of a key.
        _publish(settings, [(server_keys.record_key(example.name, example.key_id), None)])
        assert reader.sync(10)
        with pytest.raises(SignatureFailed, match="no usable key"):
            checker.check(parse_pdu(signed, RV))
        assert reader.ring.malformed == 1
    finally:
        reader.stop()
