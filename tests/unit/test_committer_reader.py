"""The committer's reader: batches cut by count and bytes, in order, and records that are not
chunks kept with their reason (for the dead-letter topic) instead of stopping the batch."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.committer.reader import ChunkReader, decode_batch, split_batches
from pipeline.room.chunk import Chunk, ChunkEvent
from topics import chunk as chunk_codec

ROOM = "!r:example.org"


class Record:
    """What the reader reads of a consumed record."""

    def __init__(self, offset: int, value: bytes, error: Any = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return "p.chunks"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


def chunk_value(n: int) -> bytes:
    pdu = {"type": "m.room.message", "sender": "@a:example.org", "depth": n, "content": {}}
    ev = ChunkEvent(f"$e{n}", 3, pdu, None, False, None)
    return chunk_codec.encode(Chunk(f"{ROOM}/{n}", ROOM, "10", (ev,), seq=(n, n)).with_digest())


@pytest.mark.parametrize(
    ("sizes", "most", "max_bytes", "runs"),
    [
        ([10] * 5, 2, 1_000, [2, 2, 1]),
        ([10] * 5, 10, 25, [2, 2, 1]),
        ([10, 100, 10], 10, 50, [1, 1, 1]),  # larger than the bound: a batch of its own
        ([], 10, 50, []),
    ],
)
def test_batches_hold_at_most_most_records_and_max_bytes_in_offset_order(
    sizes: list[int], most: int, max_bytes: int, runs: list[int]
) -> None:
    records = [Record(i, b"x" * n) for i, n in enumerate(sizes)]
    got = split_batches(records, most, max_bytes)  # type: ignore[arg-type]
    assert [len(r) for r in got] == runs
    assert [r.offset() for run in got for r in run] == list(range(len(sizes)))


def test_a_record_that_is_not_a_chunk_stays_in_its_batch_with_the_reason() -> None:
    bad_version = orjson.loads(chunk_value(3))
    bad_version["room_version"] = "999"
    bad_id = orjson.loads(chunk_value(4))
    bad_id["chunk_id"] = "no-room/4"
    records = [
        Record(0, chunk_value(1)),
        Record(1, b"{not json"),
        Record(2, orjson.dumps(bad_version)),
        Record(3, orjson.dumps(bad_id)),
        Record(4, chunk_value(5)),
    ]
    batch = decode_batch(records)  # type: ignore[arg-type]
    assert [rec.offset() for rec, _ in batch.chunks] == [0, 4]
    reasons = {rec.offset(): why for rec, why in batch.unreadable}
    assert sorted(reasons) == [1, 2, 3]
    assert "not JSON" in reasons[1]
    assert "999" in reasons[2]
    assert "no-room/4" in reasons[3]
    assert batch.next_offsets == {("p.chunks", 0): 5}


class Consumer:
    """Hands out its records once: the first by ``poll``, the rest by ``consume``."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.polls = 0

    def poll(self, timeout: float) -> Record | None:
        self.polls += 1
        return self.records.pop(0) if self.records else None

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        taken, self.records = self.records[:num_messages], self.records[num_messages:]
        return taken


def test_records_fetched_past_a_batch_bound_come_in_the_next_batch_in_order() -> None:
    consumer = Consumer([Record(n, chunk_value(n + 1)) for n in range(5)])
    size = len(chunk_value(1))
    reader = ChunkReader(consumer, most=10, max_bytes=2 * size + 1, poll_timeout=0)  # type: ignore[arg-type]
    batches = [reader.next_batch() for _ in range(4)]
    assert [None if b is None else [r.offset() for r, _ in b.chunks] for b in batches] == [
        [0, 1],
        [2, 3],
        [4],
        None,
    ]
    assert consumer.polls == 2  # the records taken once, then nothing more to take
