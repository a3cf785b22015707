"""A worker that lost its stored room state rebuilds it from PostgreSQL and the chunks in flight.

DESIGN.md invariant 8: the worker's changelog is a cache of the database. Rooms run through the
whole pipeline; then, with the committer stopped, more of their events are processed (their
chunks are in flight: sent, not committed); the worker stops and loses its stored state (its
local RocksDB directory deleted, its changelog topic deleted), and comes back. New
events of those rooms then build on old events (prev and auth events from long before, a state
change on a fork whose merge needs state resolution), repeat old ones (committed and in flight),
and are rejected or soft-failed by the state the room reached. Every outcome, state group,
forward extremity and current-state entry must be what an uninterrupted run leaves, and the
committer must see no divergence and no gap.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import psycopg2
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.config import Settings
from pipeline.dev.workload_builder import (
    REJECTED,
    SOFT_FAILED,
    BuiltEvent,
    RoomBuilder,
    default_power_levels,
)
from pipeline.kafka_clients import confluent_config, consumer_config
from pipeline.room.batch import Incoming
from pipeline.room.processor import RoomProcessor
from pipeline.room.replay import replay
from pipeline.worker.faust_app import group_id
from tests.integration.harness import (
    Processes,
    TopicReader,
    produce,
    wait_for,
    wait_in_chunks,
)
from tests.integration.rooms import ALICE, BOB, CAROL
from tests.unit.room.fold import Stored
from topics.definitions import Topic

pytestmark = pytest.mark.integration


class _Room:
    """One room's PDUs in three phases: committed, in flight when the state is lost, after."""

    def __init__(self, version: str, tag: str) -> None:
        self.b = b = RoomBuilder(version, tag=tag)
        b.create(ALICE)
        b.join(ALICE)
        b.state("m.room.power_levels", ALICE, default_power_levels(ALICE, b.rv, {BOB: 50}))
        b.state("m.room.join_rules", ALICE, {"join_rule": "public"})
        b.join(BOB)
        early = b.message(BOB, "early")
        for i in range(3):
            b.message(ALICE if i % 2 else BOB, f"message {i}")
        base = b.forward_extremities
        b.state("m.room.topic", ALICE, {"topic": "left"}, prev=base)
        b.state("m.room.topic", BOB, {"topic": "right"}, prev=base)
        b.message(ALICE, "merge")
        b.message(CAROL, "not a member", expect=REJECTED)
        self.committed = list(b.events)

        b.state("m.room.name", ALICE, {"name": "in flight"})
        b.message(BOB, "in flight 1")
        b.message(ALICE, "in flight 2")
        self.in_flight = b.events[len(self.committed) :]

        # After the loss: a message whose prev and auth events are old; a topic on a fork from
        # long ago, merged (state resolution against the topics resolved before); a ban, then
        # the banned user's message on the new extremities (rejected by the state before it)
        # and on an old view of the room (soft-failed); repeats of old events.
        n = len(b.events)
        b.message(ALICE, "on an old event", prev=[early.event_id])
        b.state("m.room.topic", BOB, {"topic": "from the past"}, prev=[early.event_id])
        b.message(ALICE, "merge again")
        before_ban = b.forward_extremities
        b.member(BOB, "ban", sender=ALICE)
        b.message(BOB, "banned", expect=REJECTED)
        b.message(BOB, "too late", prev=before_ban, expect=SOFT_FAILED)
        b.message(CAROL, "still not a member", expect=REJECTED)
        b.redact(ALICE, early.event_id)
        b.message(ALICE, "the end")
        self.after = b.events[n:]
        # Repeats: a committed state event, a committed message, an event in flight.
        self.repeats: list[BuiltEvent] = [self.committed[2], early, self.in_flight[0]]

    @property
    def room_id(self) -> str:
        return self.b.room_id


def _lines(events: list[BuiltEvent]) -> list[bytes]:
    return [e.line for e in events]


def _interleave(parts: list[list[bytes]]) -> list[bytes]:
    out: list[bytes] = []
    queues = [list(p) for p in parts]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _count(settings: Settings, sql: str, *args: Any) -> int:
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def _delete_changelogs(settings: Settings) -> list[str]:
    """Delete the workers' changelog topics (a compacted topic refuses record deletion); the
    topics deleted, once the broker no longer lists them."""
    admin = AdminClient(confluent_config(settings))
    prefix = group_id(settings)
    names = [
        t
        for t in admin.list_topics(timeout=10).topics
        if t.startswith(prefix) and t.endswith("-changelog")
    ]
    assert names, "the worker made no changelog topic"
    for fut in admin.delete_topics(names).values():
        fut.result(30)
    wait_for(
        lambda: not set(names) & set(admin.list_topics(timeout=10).topics),
        30,
        "the changelog topics gone",
    )
    return names


def _uninterrupted(room_id: str, lines: list[bytes]) -> tuple[Stored, RoomProcessor]:
    """What a processor that never lost anything stores for the room's inputs."""
    proc = RoomProcessor(room_id)
    stored = Stored()
    for i, line in enumerate(lines):
        for chunk in proc.process([Incoming(line, received_ts=i)]).chunks:
            stored.apply(chunk)
    return stored, proc


def _db_room(settings: Settings, room_id: str) -> dict[str, Any]:
    with psycopg2.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT e.event_id, e.rejection_reason IS NOT NULL, e.soft_failed, g.state_group"
            " FROM events e LEFT JOIN event_to_state_groups g USING (event_id)"
            " WHERE e.room_id = %s ORDER BY e.stream_ordering",
            (room_id,),
        )
        events = [tuple(r) for r in cur.fetchall()]
        cur.execute(
            "SELECT g.id, g.event_id, e.prev_state_group FROM state_groups g"
            " LEFT JOIN state_group_edges e ON e.state_group = g.id WHERE g.room_id = %s",
            (room_id,),
        )
        groups = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        cur.execute(
            "SELECT state_group, type, state_key, event_id FROM state_groups_state"
            " WHERE room_id = %s",
            (room_id,),
        )
        rows: dict[int, set[tuple[str, str, str]]] = {}
        for sg, t, k, e in cur.fetchall():
            rows.setdefault(sg, set()).add((t, k, e))
        cur.execute(
            "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
            (room_id,),
        )
        current = {(t, k): e for t, k, e in cur.fetchall()}
        cur.execute("SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,))
        extremities = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT last_seq FROM room_chunk_marks WHERE room_id = %s", (room_id,))
        mark = cur.fetchone()
    return {
        "events": events,
        "groups": groups,
        "rows": rows,
        "current": current,
        "extremities": extremities,
        "high_water": mark[0] if mark else 0,
    }


def test_a_worker_that_lost_its_stored_state_rebuilds_its_rooms_from_postgres_and_chunks_in_flight(
    settings: Settings, procs: Processes
) -> None:
    rooms = [_Room("10", "ra"), _Room("10", "rb"), _Room("12", "rc")]
    committed = _interleave([_lines(r.committed) for r in rooms])
    in_flight = _interleave([_lines(r.in_flight) for r in rooms])
    after = _interleave([_lines(r.after) + _lines(r.repeats) for r in rooms])
    chunks = TopicReader(settings, Topic.CHUNKS)

    # 1. Through the whole pipeline.
    worker = procs.worker("w1")
    committer = procs.start("committer", name="committer-1")
    produce(settings, committed)
    n_committed = sum(len(r.committed) for r in rooms)
    wait_for(
        lambda: _count(settings, "SELECT count(*) FROM events") == n_committed,
        120,
        f"{n_committed} events committed",
        processes=[worker, committer],
    )
    # 2. The committer stops; the worker goes on: these chunks stay in flight.
    assert committer.stop() == 0
    produce(settings, in_flight)
    flying = {e.event_id for r in rooms for e in r.in_flight}
    wait_in_chunks(chunks, flying, 60, "the events in flight in chunks", [worker])
    # 3. The worker stops and loses its stored state: the local store and the changelog
    # topic.
    assert worker.stop() == 0
    shutil.rmtree(procs.logdir / "workers" / "w1")
    _delete_changelogs(settings)

    # 4. Back with nothing stored; new events, decided while the chunks before them are still
    # in flight; then the committer.
    worker = procs.worker("w1")
    produce(settings, after)
    everything = committed + in_flight + after
    expected = replay(everything, state_after=True)["rooms"]
    # Every event of the rooms: those with a state after it (all but the rejected) and those
    # rejected.
    decided = {e for view in expected.values() for e in [*view["state_after"], *view["rejected"]]}
    wait_in_chunks(chunks, decided, 90, "the new events in chunks", [worker])
    committer = procs.start("committer", name="committer-2")
    n_all = sum(len(r.committed) + len(r.in_flight) + len(r.after) for r in rooms)
    wait_for(
        lambda: _count(settings, "SELECT count(*) FROM events") == n_all,
        120,
        f"{n_all} events committed",
        processes=[worker, committer],
    )
    wait_for(
        lambda: not _chunks_uncommitted(settings),
        60,
        "every chunk read by the committer",
        processes=[worker, committer],
    )

    for room in rooms:
        rid = room.room_id
        mine = set(_lines(room.b.events))
        room_lines = [line for line in everything if line in mine]
        want, straight = _uninterrupted(rid, room_lines)
        got = _db_room(settings, rid)
        # Every event's outcome and state group, in the order the uninterrupted run took them.
        assert got["events"] == [
            (eid, row[2] is not None, row[3], row[4]) for eid, row in want.events.items()
        ], rid
        assert got["groups"] == {sg: (g[0], g[1]) for sg, g in want.state_groups.items()}, rid
        assert got["rows"] == {sg: set(g[2]) for sg, g in want.state_groups.items() if g[2]}, rid
        assert got["current"] == {k: v[0] for k, v in want.current_state.items()}, rid
        assert got["extremities"] == want.extremities, rid
        assert got["high_water"] == straight.event_seq, rid
        # And what roomstream replay says of the same input.
        view = expected[rid]
        assert sorted([t, k, e] for (t, k), e in got["current"].items()) == view["current_state"]
        assert sorted(got["extremities"]) == view["forward_extremities"]
        assert {e for e, rejected, _, _ in got["events"] if rejected} == set(view["rejected"])
        assert sorted(e for e, _, soft, _ in got["events"] if soft) == view["soft_failed"]
        assert "parked" not in view
    assert _count(settings, "SELECT count(*) FROM chunk_divergences") == 0
    # Each room was rebuilt once, over the chunks in flight, and said so.
    log = (procs.logdir / "w1.log").read_text(errors="replace")
    for room in rooms:
        lines = [line for line in log.splitlines() if f"room {room.room_id}: its stored" in line]
        assert len(lines) == 1, log[-3000:]
        folded = re.search(r"(\d+) chunks in flight applied", lines[0])
        assert folded is not None and int(folded.group(1)) >= 1, lines[0]
        assert "Rebuilt from PostgreSQL" in lines[0]


def _chunks_uncommitted(settings: Settings) -> bool:
    """Whether the chunks topic holds records past the committer's stored offset."""
    topic = settings.topic(Topic.CHUNKS)
    consumer = Consumer(consumer_config(settings, "probe", **{"enable.auto.commit": False}))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()
    done = _count(settings, "SELECT next_offset FROM committer_offsets WHERE topic = %s", topic)
    return done < high
