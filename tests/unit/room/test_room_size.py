"""A room's work per event does not grow with the room: a join, a message or a state change in
a room of thousands of members makes the same chunk, writes the same state group rows and
saves the same record as in a room of fifty. Work is counted (rows, bytes, entries visited),
never timed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pipeline.bench.room_cost import CREATOR, LinearRoom
from pipeline.room import storage
from pipeline.room.appended import items_after
from pipeline.room.chunk import Chunk
from pipeline.room.processor import RoomProcessor

SMALL, LARGE = 50, 3_000


def _chunk_bytes(chunk: Chunk) -> int:
    return len(orjson.dumps(chunk._body()))


def _group_rows(chunks: list[Chunk]) -> int:
    return sum(len(g.delta) for c in chunks for g in c.state_groups)


def _joined(members: int) -> tuple[LinearRoom, RoomProcessor, list[Chunk]]:
    """A room of ``members`` members, their joins processed in batches of 50 (a burst)."""
    room = LinearRoom()
    setup = room.setup(members)
    proc = RoomProcessor(room.room_id)
    chunks: list[Chunk] = []
    for i in range(0, len(setup), 50):
        result = proc.process(setup[i : i + 50])
        assert not result.dead_letters and not proc.parked()
        chunks.extend(result.chunks)
    return room, proc, chunks


def _state_changes(room: LinearRoom, members: int, count: int) -> list[bytes]:
    """Display-name changes of members all over the room, and topic changes."""
    out = []
    for i in range(count):
        if i % 2:
            out.append(room.send("m.room.topic", CREATOR, {"topic": f"t{i}"}, ""))
        else:
            user = f"@u{(i * 7919) % (members - 1)}:example.org"
            content = {"membership": "join", "displayname": f"n{i}"}
            out.append(room.send("m.room.member", user, content, user))
    return out


@pytest.fixture(scope="module")
def joined() -> dict[int, tuple[LinearRoom, RoomProcessor, list[Chunk]]]:
    return {m: _joined(m) for m in (SMALL, LARGE)}


def test_a_join_writes_a_few_state_group_rows_and_the_same_chunk_whatever_the_room_size(
    joined: dict[int, tuple[LinearRoom, RoomProcessor, list[Chunk]]],
) -> None:
    # A snapshot of the whole state every 100 joins would be 15 rows per join here.
    per_join = {m: _group_rows(chunks) / m for m, (_, _, chunks) in joined.items()}
    assert per_join[LARGE] < 5
    size = {m: sum(map(_chunk_bytes, chunks)) / m for m, (_, _, chunks) in joined.items()}
    assert size[LARGE] <= 1.25 * size[SMALL], size


def test_a_state_change_makes_the_same_chunk_and_save_in_a_room_of_3000_members_as_of_50(
    joined: dict[int, tuple[LinearRoom, RoomProcessor, list[Chunk]]],
) -> None:
    work: dict[int, dict[str, float]] = {}
    for members, (room, proc, _) in joined.items():
        record = storage.save(proc, None)[-1][1]
        rows = chunk_bytes = record_bytes = current = 0
        changes = _state_changes(room, members, 400)
        for raw in changes:
            (chunk,) = proc.process([raw]).chunks
            assert chunk.events[0].rejected is None and not chunk.events[0].soft_failed
            rows += _group_rows([chunk])
            current += len(chunk.current_state_set) + len(chunk.current_state_removed)
            chunk_bytes += _chunk_bytes(chunk)
            record = storage.save(proc, record)[-1][1]
            record_bytes += len(record)
        n = len(changes)
        work[members] = {
            "rows": rows / n,
            "current": current / n,
            "chunk": chunk_bytes / n,
            "record": record_bytes / n,
        }
    small, large = work[SMALL], work[LARGE]
    assert large["current"] == small["current"] == 1
    # A snapshot every 100 hops would write 30 rows per change in the large room.
    assert large["rows"] < 5
    assert large["chunk"] <= 1.25 * small["chunk"], work
    assert large["record"] <= 1.25 * small["record"], work


class _Counting(dict[int, int]):
    """A dict that counts the entries iterated, from either end."""

    visited = 0

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        for x in it:
            self.visited += 1
            yield x

    def __iter__(self) -> Iterator[int]:
        return self._count(super().__iter__())

    def __reversed__(self) -> Iterator[int]:
        return self._count(super().__reversed__())

    def items(self) -> Any:
        return self._count(iter(super().items()))


@pytest.mark.parametrize("history", [10, 10_000])
def test_a_save_visits_what_was_appended_since_its_mark_not_the_history(history: int) -> None:
    data = _Counting((n, n) for n in range(history + 5))
    assert items_after(data, history) == [(n, n) for n in range(history, history + 5)]
    assert data.visited == 5
