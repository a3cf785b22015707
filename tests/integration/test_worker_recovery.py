"""Recovery in seconds: a worker killed with kill -9 under a steady load and restarted at once with
the same ``--id`` has its rooms processing again within ``RECOVERY_BOUND_S``, while the rooms of
the other worker never wait more than ``PAUSE_BOUND_S``; nothing is lost and nothing doubled.

Two workers share 50 rooms; events are produced one at a time, evenly spaced, as front ends do.
Every chunk carries the time the worker sent it (the record's timestamp) and every input the time
it was produced (its ``received_ts``), so each event's latency is read off the chunks afterwards:

* a room of the killed worker is processing again when the first of its events produced after
  the kill is in a chunk: that time, from the kill, is the room's recovery time;
* a room of the other worker pauses for as long as its slowest event produced from a second
  before the kill to the end takes to reach a chunk.

The figures are printed (``pytest -s``) and asserted.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.dev.local import describe_group
from pipeline.kafka_clients import confluent_config
from pipeline.worker.app import owner_partition
from pipeline.worker.faust_app import group_id
from tests.integration.harness import (
    Processes,
    TopicReader,
    fold_chunks,
    produce,
    wait_in_chunks,
)
from tests.integration.paced import Paced, around_kill, chat_rooms, round_robin, setup_lines
from tests.integration.replayed import expected_rooms, valid_event_ids
from tests.integration.rooms import CHAT_ROOM_SETUP
from topics import chunk as chunk_codec
from topics.definitions import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECOVERY_BOUND_S = 10.0
PAUSE_BOUND_S = 1.0
ROOMS = 50
RATE = 75.0  # events a second, one at a time
BEFORE_KILL_S = 10.0
AFTER_KILL_S = 25.0


def _wait_group_stable(
    settings: Settings, members: int, timeout: float = 90.0
) -> dict[int, str | None]:
    """Wait until the workers' group is stable with ``members``; each pdus partition's owner
    (by static member id)."""
    admin = AdminClient(confluent_config(settings))
    group = group_id(settings)
    pdus = settings.topic(Topic.PDUS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = describe_group(admin, group)
        if described is None:
            time.sleep(0.5)
            continue
        if described.state == ConsumerGroupState.STABLE and len(described.members) == members:
            owners = {
                tp.partition: m.group_instance_id
                for m in described.members
                for tp in m.assignment.topic_partitions
                if tp.topic == pdus
            }
            if len(owners) == settings.pdu_partitions:
                return owners
        time.sleep(0.5)
    raise AssertionError(f"group {group} not stable with {members} members in {timeout:.0f} s")


def _first_seen(chunks: TopicReader) -> dict[str, float]:
    """When each event was first sent in a chunk (the chunk record's timestamp, s)."""
    seen: dict[str, float] = {}
    for m in chunks.messages:
        at = m.timestamp()[1] / 1000
        for ev in chunk_codec.decode(m.value()).events:
            if ev.event_id not in seen or at < seen[ev.event_id]:
                seen[ev.event_id] = at
    return seen


def test_a_worker_killed_and_restarted_recovers_in_seconds_and_others_do_not_pause(
    settings: Settings, procs: Processes
) -> None:
    rooms = chat_rooms("rec", ROOMS, RATE, BEFORE_KILL_S + AFTER_KILL_S)
    setup = setup_lines(rooms)
    stream = round_robin(rooms)
    lines = setup + [line for _, line in stream]
    chunks = TopicReader(settings, Topic.CHUNKS)
    workers = {name: procs.worker(name) for name in ("wa", "wb")}
    owners = _wait_group_stable(settings, 2)
    produce(settings, setup)
    setup_ids = {e.event_id for r in rooms for e in r.events[:CHAT_ROOM_SETUP]}
    wait_in_chunks(chunks, setup_ids, 90, "the rooms created", workers.values())
    # The setup may have moved partitions (a worker joining late): read the owners again.
    owners = _wait_group_stable(settings, 2)

    paced = Paced(settings, stream, RATE, clock="wall")
    producer = threading.Thread(target=paced.run)
    producer.start()
    time.sleep(BEFORE_KILL_S)
    victim = "wa"
    killed_at = time.time()
    workers[victim].kill9()
    workers[victim] = procs.worker(victim)
    producer.join(AFTER_KILL_S + 60)
    assert not producer.is_alive()
    assert paced.produced, "nothing produced"
    last_produced = max(paced.produced.values())
    assert last_produced > killed_at + 5, "the stream ended too soon after the kill"

    want = valid_event_ids(lines)
    wait_in_chunks(chunks, want, 120, "every event in a chunk", workers.values())
    chunks.poll(2)

    # Nothing lost, nothing doubled.
    folded, _ = fold_chunks(m.value() for m in chunks.messages)
    assert {r: v.as_replay() for r, v in folded.items()} == expected_rooms(lines)
    events = [e for v in folded.values() for e in v.events]
    assert len(events) == len(set(events)) == len(want)

    victim_member = f"{group_id(settings)}-{victim}"
    partitions = settings.pdu_partitions
    theirs = {
        r.room_id for r in rooms if owners[owner_partition(r.room_id, partitions)] == victim_member
    }
    seen = around_kill(rooms, paced.produced, _first_seen(chunks), killed_at, theirs)
    assert seen.back and seen.waits, f"both workers should own rooms: {owners}"
    seen.check(killed_at, RECOVERY_BOUND_S, PAUSE_BOUND_S)
