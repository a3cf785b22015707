"""Room processor workers against the real broker: what they emit equals the offline replay.

Each test runs real worker processes (faust, aiokafka) on its own topic prefix, produces PDUs with
the project's producer and with kcat, and folds the chunks the workers sent, as the committer
would, into per-room state compared with ``roomstream replay`` over the same input.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.worker.app import owner_partition
from tests.integration.harness import (
    Processes,
    TopicReader,
    fold_chunks,
    produce,
    wait_for,
)
from tests.integration.replayed import (
    assert_all_processed_as_replayed,
    assert_matches_replay,
    events_in,
    expected_rooms,
    valid_event_ids,
)
from tests.integration.rooms import ALICE, alices_room, busy_room, interleaved, lines_of
from tests.integration.test_metrics import free_port, sample, scrape
from topics import chunk as chunk_codec
from topics import dead_letter
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def _produce_paced(settings: Settings, lines: list[bytes], per_second: float) -> None:
    step = 20
    for i in range(0, len(lines), step):
        produce(settings, lines[i : i + step])
        time.sleep(step / per_second)


def test_worker_output_equals_replay_with_bad_input_and_duplicates(
    settings: Settings, procs: Processes
) -> None:
    rooms = [busy_room(f"r{i}") for i in range(3)] + [busy_room("v12", version="12")]
    arrival = interleaved(rooms)
    bad = [
        b"{not json",
        b"[1, 2, 3]",
        orjson.dumps({"type": "m.room.message", "room_id": rooms[0].room_id, "content": {}}),
    ]
    duplicates = arrival[5:8]
    everything = arrival + bad + duplicates
    chunks = TopicReader(settings, Topic.CHUNKS)
    dead = TopicReader(settings, Topic.DEAD_LETTER)
    worker = procs.worker("w1")
    produce(settings, everything)
    want = valid_event_ids(everything)
    wait_for(
        lambda: events_in(chunks) >= want and len(dead.messages) >= len(bad),
        120,
        "every event in a chunk and every bad input dead-lettered",
        readers=[chunks, dead],
        processes=[worker],
    )
    chunks.poll(2)
    dead.poll(1)
    assert_matches_replay(chunks, everything)
    # Duplicates had no effect: each event is in exactly one chunk.
    rooms_seen, by_id = fold_chunks(m.value() for m in chunks.messages)
    all_events = [e for v in rooms_seen.values() for e in v.events]
    assert len(all_events) == len(set(all_events)) == len(want)
    assert len(by_id) == len(chunks.messages), "no chunk was sent twice without a crash"
    letters = [dead_letter.decode(m.value()) for m in dead.messages]
    assert len(letters) == len(bad)
    for letter in letters:
        assert letter.reason and letter.source.topic == settings.topic(Topic.PDUS)
        assert letter.source.offset >= 0
    reasons = " | ".join(sorted(letter.reason for letter in letters))
    assert "not valid JSON" in reasons and "not an object" in reasons and "sender" in reasons
    assert {letter.original() for letter in letters} == set(bad)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is installed by make setup")
def test_events_produced_with_kcat_reach_their_rooms_owner(
    settings: Settings, procs: Processes, tmp_path: Path
) -> None:
    """kcat partitions with librdkafka's CRC32, not murmur2: events arrive on partitions that
    do not own their room and are forwarded there, in order, then processed once."""
    rooms = [busy_room(f"k{i}", messages=2) for i in range(6)]
    lines = [line for r in rooms for line in lines_of(r)]
    data = tmp_path / "kcat.txt"
    data.write_bytes(
        b"".join(r.room_id.encode() + b"\t" + line + b"\n" for r in rooms for line in lines_of(r))
    )
    chunks = TopicReader(settings, Topic.CHUNKS)
    worker = procs.worker("w1")
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            settings.kafka_bootstrap,
            "-t",
            settings.topic(Topic.PDUS),
            "-K",
            "\t",
            "-l",
            str(data),
        ],
        check=True,
        timeout=60,
    )
    pdus = TopicReader(settings, Topic.PDUS)
    pdus.poll(3)
    wrong = [
        m
        for m in pdus.messages[: len(lines)]
        if owner_partition(m.key().decode(), settings.pdu_partitions) != m.partition()
    ]
    assert wrong, "kcat's partitioner should put some rooms on a partition that does not own them"
    assert_all_processed_as_replayed(
        chunks, lines, within=120, what="every kcat event processed", processes=[worker], settle=2
    )


def test_parked_event_is_released_when_its_prev_event_arrives_and_expires_otherwise(
    settings: Settings, procs: Processes
) -> None:
    room = busy_room("p", messages=2)
    lines = lines_of(room)
    orphan_room = alices_room("orphan")
    missing = orphan_room.message(ALICE, "never sent")
    orphan = orphan_room.message(ALICE, "waits forever")
    chunks = TopicReader(settings, Topic.CHUNKS)
    dead = TopicReader(settings, Topic.DEAD_LETTER)
    worker = procs.worker("w1", ROOMSTREAM_PARK_EXPIRY_S="8")
    # The room's last five events first: they wait for what comes before them.
    produce(settings, lines[-5:] + [e.line for e in orphan_room.events[:3]] + [orphan.line])
    time.sleep(2)
    chunks.poll(3)
    early = events_in(chunks)
    assert room.events[-1].event_id not in early
    produce(settings, lines[:-5])
    want = valid_event_ids(lines) | {e.event_id for e in orphan_room.events[:3]}
    wait_for(
        lambda: events_in(chunks) >= want and len(dead.messages) >= 1,
        90,
        "parked events released, the orphan expired",
        readers=[chunks, dead],
        processes=[worker],
    )
    letters = [dead_letter.decode(m.value()) for m in dead.messages]
    assert len(letters) == 1
    assert letters[0].event_id == orphan.event_id
    assert missing.event_id in letters[0].reason
    assert orphan.event_id not in events_in(chunks)
    rooms_seen, _ = fold_chunks(m.value() for m in chunks.messages)
    assert rooms_seen[room.room_id].as_replay() == expected_rooms(lines)[room.room_id]


@pytest.mark.slow
def test_worker_killed_with_sigkill_is_replaced_with_nothing_lost_or_doubled(
    settings: Settings, procs: Processes
) -> None:
    lines = interleaved([busy_room(f"c{i}", messages=20) for i in range(30)])
    chunks = TopicReader(settings, Topic.CHUNKS)
    first = procs.worker("w1")
    want = valid_event_ids(lines)
    # A steady stream, so the worker is killed while inputs keep arriving.
    producer = threading.Thread(target=_produce_paced, args=(settings, lines, 400.0))
    producer.start()
    wait_for(
        lambda: len(events_in(chunks)) > len(want) // 4,
        120,
        "a quarter of the events processed",
        readers=[chunks],
        processes=[first],
    )
    first.kill9()
    assert producer.is_alive(), "the stream ended before the worker was killed"
    second = procs.worker("w2")
    producer.join(120)
    # fold_chunks fails on a chunk id re-sent with different content.
    assert_all_processed_as_replayed(
        chunks,
        lines,
        within=180,
        what="every event after the restart",
        processes=[second],
        settle=3,
    )
    rooms_seen, _ = fold_chunks(m.value() for m in chunks.messages)
    events = [e for v in rooms_seen.values() for e in v.events]
    assert len(events) == len(set(events)) == len(want)


@pytest.mark.slow
def test_workers_joining_and_leaving_mid_stream_lose_nothing(
    settings: Settings, procs: Processes
) -> None:
    lines = interleaved([busy_room(f"s{i}", messages=16) for i in range(24)])
    half = len(lines) // 2
    chunks = TopicReader(settings, Topic.CHUNKS)
    w1 = procs.worker("w1")
    produce(settings, lines[:half])
    wait_for(
        lambda: len(events_in(chunks)) > half // 3,
        120,
        "w1 under way",
        readers=[chunks],
        processes=[w1],
    )
    w2 = procs.worker("w2")
    w3 = procs.worker("w3")
    produce(settings, lines[half:])
    time.sleep(5)
    assert w1.stop() == 0, w1.log_tail()
    assert_all_processed_as_replayed(
        chunks, lines, within=180, what="every event after w1 left", processes=[w2, w3], settle=3
    )


def test_a_slow_room_does_not_hold_up_other_rooms_on_its_partition(
    settings: Settings, procs: Processes
) -> None:
    slow = alices_room("slow")
    base = slow.forward_extremities
    slow.state("m.room.topic", ALICE, {"topic": "a"}, prev=base)
    slow.state("m.room.topic", ALICE, {"topic": "b"}, prev=base)
    merge = slow.message(ALICE, "merge needs state resolution")
    partition = owner_partition(slow.room_id, settings.pdu_partitions)
    others = []
    i = 0
    while len(others) < 4:
        r = busy_room(f"fast{i}", messages=3)
        i += 1
        if owner_partition(r.room_id, settings.pdu_partitions) == partition:
            others.append(r)
    chunks = TopicReader(settings, Topic.CHUNKS)
    worker = procs.worker(
        "w1", ROOMSTREAM_DEBUG_SLOW_ROOM=slow.room_id, ROOMSTREAM_DEBUG_SLOW_S="8"
    )
    # The slow room's fork resolves slowly; its merge is produced before every other room.
    produce(settings, lines_of(slow))
    produce(settings, [line for r in others for line in lines_of(r)])
    want = {e.event_id for r in others for e in r.events}
    wait_for(
        lambda: events_in(chunks) >= want | {merge.event_id},
        120,
        "all rooms processed",
        readers=[chunks],
        processes=[worker],
    )
    order = [e for m in chunks.messages for e in chunk_codec.decode(m.value()).events]
    position = {e.event_id: i for i, e in enumerate(order)}
    later_rooms_done = max(position[e] for e in want)
    assert later_rooms_done < position[merge.event_id], (
        "rooms produced after the slow room's merge, on the same partition, should be "
        "processed while its state resolution runs"
    )


def test_rooms_read_back_after_the_room_cache_dropped_them_decide_as_the_replay(
    settings: Settings, procs: Processes
) -> None:
    """A worker whose room cache (``ROOMSTREAM_WORKER_ROOM_CACHE_MB``) holds a few of its rooms
    drops the least recently used and reads them back from its store at their next input; with
    inputs trickling in over more rooms than it holds, rooms are dropped and read back while
    their events go on arriving, and the rooms still decide what the offline replay decides."""
    rooms = [busy_room(f"cache{i}", messages=20) for i in range(40)]
    lines = interleaved(rooms)
    chunks = TopicReader(settings, Topic.CHUNKS)
    port = free_port()
    worker = procs.worker(
        "w1", ROOMSTREAM_WORKER_ROOM_CACHE_MB="1", ROOMSTREAM_METRICS_PORT=str(port)
    )
    _produce_paced(settings, lines, per_second=400)
    assert_all_processed_as_replayed(
        chunks, lines, within=120, what="every room's events", processes=[worker], settle=2
    )
    samples = scrape(port)
    held = sample(samples, "roomstream_worker_room_cache_rooms")
    held_bytes = sample(samples, "roomstream_worker_room_cache_bytes")
    assert 0 < held < len(rooms), f"the cache held {held:.0f} of {len(rooms)} rooms"
    assert 0 < held_bytes <= 2**20 + 200_000, f"the cache held {held_bytes:.0f} bytes"


def test_inputs_dropped_on_their_way_to_the_worker_with_nothing_after_them_are_read_again(
    settings: Settings, procs: Processes
) -> None:
    """faust's stream drops records it was handed as a rebalance or a restore ends, and the last
    ones handed over may have nothing after them to show they never arrived. The worker is made
    to drop a whole room's events that way (``ROOMSTREAM_DEBUG_DROP_INPUTS``), all produced at
    once with nothing after them: it reads them again once it has waited for input with none on
    its way, and the room is processed."""
    room = busy_room("dropped", messages=3)
    lines = lines_of(room)
    chunks = TopicReader(settings, Topic.CHUNKS)
    worker = procs.worker("w1", ROOMSTREAM_DEBUG_DROP_INPUTS=str(len(lines)))
    produce(settings, lines)
    assert_all_processed_as_replayed(
        chunks, lines, within=60, what="the dropped room's events", processes=[worker], settle=1
    )
    log = worker.log.read_text(errors="replace")
    assert log.count("dropped on its way to the worker") == len(lines), worker.log_tail()
    assert "has waited 1 s for input with none on its way" in log, worker.log_tail()


def test_inputs_dropped_before_others_are_read_again_as_soon_as_those_arrive(
    settings: Settings, procs: Processes
) -> None:
    """faust's stream hands records on in the order they were handed over, whatever their
    partition: once the worker takes one, those handed over before it that it never took will
    never come, and they are read again at once. Two rooms of two partitions produced together:
    the worker drops the first room's worth of inputs it is handed, and takes the rest."""
    first = busy_room("first", messages=2)
    second = next(
        r
        for r in (busy_room(f"second{i}", messages=2) for i in range(100))
        if owner_partition(r.room_id, settings.pdu_partitions)
        != owner_partition(first.room_id, settings.pdu_partitions)
    )
    lines = lines_of(first) + lines_of(second)
    chunks = TopicReader(settings, Topic.CHUNKS)
    worker = procs.worker("w1", ROOMSTREAM_DEBUG_DROP_INPUTS=str(len(first.events)))
    produce(settings, lines)
    assert_all_processed_as_replayed(
        chunks, lines, within=60, what="both rooms' events", processes=[worker], settle=1
    )
    log = worker.log.read_text(errors="replace")
    assert log.count("dropped on its way to the worker") == len(first.events), worker.log_tail()
    assert "handed over after them" in log, worker.log_tail()
