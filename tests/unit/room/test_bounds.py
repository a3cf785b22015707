"""Size bounds: a room's parked events are bounded in bytes, so its stored record stays far
below a changelog record's limit (64 MB), and a batch's chunks each stay below the chunks
topic's record limit (16 MB), cut at the same events whatever else happened."""

from __future__ import annotations

import orjson

from pipeline.room import storage
from pipeline.room.batch import MAX_CHUNK_BYTES, Incoming, ProcessorConfig
from pipeline.room.parking import MAX_BYTES_PER_ROOM
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import BOB, RoomBuilder
from tests.unit.room.fold import fold
from topics import chunk as chunk_codec

CHANGELOG_RECORD_LIMIT = 64 * 1024 * 1024
CHUNKS_RECORD_LIMIT = 16 * 1024 * 1024
BIG = 60_000


def _big_chain(n: int) -> tuple[RoomBuilder, list[str], list[str]]:
    """A room's base events, then ``n`` messages of about 60 KB, each on the one before."""
    b = RoomBuilder()
    base = b.base()
    names = [f"M{i}" for i in range(n)]
    for name in names:
        b.message(name, BOB, body=name + "x" * BIG)
    return b, base, names


def test_520_parked_60kb_pdus_are_refused_beyond_the_rooms_byte_bound_with_a_reason() -> None:
    b, base, names = _big_chain(521)
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(base))
    # M0 is withheld: all later messages wait for it.
    result = proc.process([Incoming(b.raw(n), received_ts=1) for n in names[1:]])
    parked = result.parked
    assert 0 < parked < 520 and len(result.dead_letters) == 520 - parked
    assert proc.parked_bytes <= MAX_BYTES_PER_ROOM
    assert all("bytes of parked events" in dl.reason for dl in result.dead_letters)
    assert all(
        f"limit per room {MAX_BYTES_PER_ROOM} bytes" in dl.reason for dl in result.dead_letters
    )

    record = max(len(v) for _, v in storage.save(proc, None))
    plain = len(orjson.dumps(proc.to_dict()))
    assert plain < CHANGELOG_RECORD_LIMIT // 8, plain
    assert record < CHANGELOG_RECORD_LIMIT // 8, record

    released = proc.process([Incoming(b.raw(names[0]), received_ts=2)])
    assert released.parked == 0
    assert sum(len(c.events) for c in released.chunks) == parked + 1
    assert all(len(chunk_codec.encode(c)) < CHUNKS_RECORD_LIMIT for c in released.chunks)


def test_a_batch_over_the_chunk_budget_is_cut_into_consecutive_chunks_the_same_way_again() -> None:
    b, base, names = _big_chain(40)
    config = ProcessorConfig(max_chunk_bytes=500_000)
    inputs = [Incoming(raw) for raw in b.raws([*base, *names])]

    def chunks() -> list[bytes]:
        return [
            chunk_codec.encode(c)
            for c in RoomProcessor(b.room_id, config=config).process(inputs).chunks
        ]

    first = chunks()
    assert len(first) > 1 and first == chunks()
    decoded = [orjson.loads(c) for c in first]
    assert all(len(c) < 500_000 + 70_000 for c in first)
    # Consecutive ranges of event sequence numbers, ids naming the last.
    assert [d["seq"][0] for d in decoded[1:]] == [d["seq"][1] + 1 for d in decoded[:-1]]
    assert all(d["chunk_id"] == f"{b.room_id}/{d['seq'][1]}" for d in decoded)
    one_by_one = RoomProcessor(b.room_id)
    per_input = [c for inc in inputs for c in one_by_one.process([inc]).chunks]
    cut = RoomProcessor(b.room_id, config=config).process(inputs).chunks
    assert fold(list(cut)).rows() == fold(per_input).rows()


def test_the_default_chunk_budget_keeps_chunks_far_below_the_topics_record_limit() -> None:
    assert MAX_CHUNK_BYTES + 65_536 < CHUNKS_RECORD_LIMIT // 2
