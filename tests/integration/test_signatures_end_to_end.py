"""Signature checks in a running worker: with ``ROOMSTREAM_VERIFY_SIGNATURES`` on, events signed
with the keys published to ``<prefix>.server-keys`` are processed, and a forged one is
dead-lettered with a reason naming the server and the key."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from pipeline.config import Settings
from pipeline.dev.workload_builder import RoomBuilder
from tests.integration.harness import Processes, TopicReader, fold_chunks, produce, wait_for
from tests.integration.rooms import ALICE, alices_room
from tests.unit.matrix.signing_keys import Server
from topics import dead_letter, server_keys
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def test_a_worker_with_signature_checks_processes_signed_events_and_refuses_a_forged_one(
    settings: Settings, procs: Processes
) -> None:
    server = Server(ALICE.split(":", 1)[1])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    key, value = server_keys.encode(
        server.name, server.key_id, server.verify_key, valid_until_ts=2**62, from_server="notary"
    )
    producer.produce(settings.topic(Topic.SERVER_KEYS), value, key)
    assert producer.flush(10) == 0

    room = alices_room("signed")
    good = room.message(ALICE, "signed by its server")
    forged = room.message(ALICE, "signed with another key")
    lines = [server_sign(server, e.pdu, room) for e in room.events if e.event_id != forged.event_id]
    impostor = Server(server.name)  # the same key id, another key
    lines.append(server_sign(impostor, forged.pdu, room))

    chunks = TopicReader(settings, Topic.CHUNKS)
    dead = TopicReader(settings, Topic.DEAD_LETTER)
    worker = procs.worker("w1", ROOMSTREAM_VERIFY_SIGNATURES="1")
    produce(settings, lines)

    def processed() -> set[str]:
        rooms = fold_chunks(m.value() for m in chunks.messages)[0]
        return set(rooms[room.room_id].events) if room.room_id in rooms else set()

    wait_for(
        lambda: len(dead.messages) >= 1 and good.event_id in processed(),
        120,
        "the signed events processed and the forged one dead-lettered",
        readers=[chunks, dead],
        processes=[worker],
    )
    (letter,) = [dead_letter.decode(m.value()) for m in dead.messages]
    assert letter.event_id == forged.event_id
    assert server.name in letter.reason and server.key_id in letter.reason
    assert processed() == {e.event_id for e in room.events} - {forged.event_id}


def server_sign(server: Server, pdu: dict[str, object], room: RoomBuilder) -> bytes:
    return orjson.dumps(server.sign(dict(pdu), room.rv))
