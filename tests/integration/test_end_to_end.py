"""The whole pipeline: produce -> workers -> committer -> PostgreSQL and invalidations.

What PostgreSQL holds at the end must equal ``roomstream replay`` over the same input, stream
orderings must be contiguous, and every change must have its invalidation, in position order.
"""

from __future__ import annotations

import itertools

import orjson
import psycopg2
import pytest

from db.read import RoomStore
from pipeline.config import Settings
from pipeline.dev.workload import generate_workload
from pipeline.room.replay import replay
from tests.integration.harness import Processes, TopicReader, produce, wait_for
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def _count(settings: Settings, sql: str) -> int:
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def test_pipeline_end_to_end_matches_replay(settings: Settings, procs: Processes) -> None:
    workload = generate_workload(12, 30, seed=7, bad_inputs=4)
    lines = list(workload.lines)
    expected = replay(lines)
    n_valid = sum(len(r.event_ids) for r in workload.rooms.values())
    invalidations = TopicReader(settings, Topic.INVALIDATIONS)
    dead = TopicReader(settings, Topic.DEAD_LETTER)
    worker = procs.worker("w1")
    committer = procs.start("committer", name="committer")
    produce(settings, lines)
    wait_for(
        lambda: _count(settings, "SELECT count(*) FROM events") >= n_valid,
        180,
        f"{n_valid} events in PostgreSQL",
        readers=[invalidations, dead],
        processes=[worker, committer],
    )
    wait_for(
        lambda: (
            bool(invalidations.messages)
            and orjson.loads(invalidations.messages[-1].value())["position"]
            == _count(settings, "SELECT max(stream_ordering) FROM events")
        ),
        60,
        "the last invalidation",
        readers=[invalidations],
        processes=[committer],
    )

    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        store = RoomStore(conn)
        for room_id, want in expected["rooms"].items():
            state = store.get_current_state_ids(room_id)
            got = sorted([t, k, e] for (t, k), e in state.items())
            assert got == want["current_state"], room_id
            assert sorted(store.get_forward_extremities(room_id)) == want["forward_extremities"]
            cur.execute(
                "SELECT event_id, rejection_reason FROM events WHERE room_id = %s "
                "AND rejection_reason IS NOT NULL",
                (room_id,),
            )
            assert dict(cur.fetchall()) == want["rejected"]
            cur.execute(
                "SELECT event_id FROM events WHERE room_id = %s AND soft_failed", (room_id,)
            )
            assert sorted(r[0] for r in cur.fetchall()) == want["soft_failed"]
        # Invariant 1: stream orderings are contiguous and unique.
        cur.execute("SELECT min(stream_ordering), max(stream_ordering), count(*) FROM events")
        lo, hi, count = cur.fetchone()
        assert (lo, hi) == (1, count) and count == n_valid
        # Invariant 5: stored with the event format version, and read back with it.
        cur.execute("SELECT DISTINCT format_version FROM events")
        assert [r[0] for r in cur.fetchall()] == [3]
        cur.execute("SELECT event_id FROM events ORDER BY stream_ordering LIMIT 5")
        for stored in store.get_events([r[0] for r in cur.fetchall()]).values():
            assert stored.format_version == 3

    # Every change announced once, in order, each naming its predecessor.
    messages = [orjson.loads(m.value()) for m in invalidations.messages]
    positions = [m["position"] for m in messages]
    assert positions == sorted(set(positions))
    assert all(b["prev_position"] == a["position"] for a, b in itertools.pairwise(messages))
    notified = {e["event_id"] for m in messages for e in m["events"]}
    for room_id, want in expected["rooms"].items():
        assert not (set(want["rejected"]) | set(want["soft_failed"])) & notified, room_id
    # Dead letters: every bad input that fails on arrival.
    on_arrival = [b for b in workload.bad_inputs if b.on_arrival]
    wait_for(lambda: len(dead.messages) >= len(on_arrival), 30, "dead letters", readers=[dead])
    assert len(dead.messages) == len(on_arrival)
