"""The committer against the real broker and database: ordering, replays, crashes, standby."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import orjson
import pytest

from pipeline.committer.loop import APPLICATION_NAME
from pipeline.config import Settings
from tests.integration._chunks import RoomSim, member, msg
from tests.integration.committer_harness import (
    WAIT_S,
    RunningCommitter,
    SimulatedCrash,
    crash_at,
    invalidations,
    message_count,
    produce,
    query,
    read_all,
)
from topics import dead_letter
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def crashed_committing_a_create_chunk(settings: Settings, point: str) -> RoomSim:
    """Produce a new room's create chunk and run a committer until it crashes at ``point`` (a
    step of its commit) committing it; the room."""
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    crashed = RunningCommitter(settings, crash_hook=crash_at(point))
    assert isinstance(crashed.wait_ended(), SimulatedCrash)
    return room


def test_invariant_1_contiguous_orderings_and_chained_messages_across_many_rooms(
    settings: Settings,
) -> None:
    settings = replace(settings, commit_batch_max=7)  # several batches
    rooms = [RoomSim(f"!r{i}:example.org") for i in range(15)]
    chunks = [r.create_chunk() for r in rooms]
    for n in range(3):
        chunks += [r.chunk(msg(r.creator, str(n)), member(f"@u{n}:x.org")) for r in rooms]
    total = sum(len(c.events) for c in chunks)
    produce(settings, chunks)
    seen: list[dict[str, object]] = []
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        inv.add_notifier(seen.append)
        assert inv.wait_for_position(total, WAIT_S)
        assert rc.committer.stats.batches > 1
    assert inv.gaps == 0 and inv.duplicates == 0
    assert [m["prev_position"] for m in seen] == [0] + [m["position"] for m in seen[:-1]]
    # One message per transaction, not one per chunk; together they announce every event.
    assert len(seen) == rc.committer.stats.batches < len(chunks)
    notified = [e["event_id"] for m in seen for e in m["events"]]  # type: ignore[attr-defined]
    assert notified == [e.event_id for c in chunks for e in c.events]
    stored = query(settings, "SELECT event_id FROM events ORDER BY stream_ordering")
    # Commit order is the chunks topic's order: one partition, read in order.
    assert [r[0] for r in stored] == [e.event_id for c in chunks for e in c.events]
    orderings = query(settings, "SELECT stream_ordering FROM events ORDER BY 1")
    assert [r[0] for r in orderings] == list(range(1, total + 1))
    assert query(settings, "SELECT count(*) FROM invalidation_outbox WHERE NOT sent") == [(0,)]


def test_invariant_3_chunks_delivered_twice_are_committed_once(settings: Settings) -> None:
    room = RoomSim("!r:example.org")
    create, chat = room.create_chunk(), room.chunk(msg(room.creator))
    produce(settings, [create, chat, create, chat])  # a processor replayed after a crash
    tail = room.chunk(msg(room.creator))
    produce(settings, [tail])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(4, WAIT_S)
        assert rc.committer.stats.skipped_chunks == 2
    assert query(settings, "SELECT count(*) FROM events") == [(4,)]
    assert inv.duplicates == 0 and inv.gaps == 0
    # One message per transaction that stored events; the replayed chunks stored none.
    assert message_count(settings, Topic.INVALIDATIONS) == len(
        query(settings, "SELECT position FROM invalidation_outbox")
    )


def test_a_restarted_committer_resumes_from_the_offset_stored_in_postgres(
    settings: Settings,
) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(2, WAIT_S)
        rc.stop()
    produce(settings, [room.chunk(msg(room.creator))])
    with RunningCommitter(settings) as rc2, invalidations(settings) as inv:
        assert inv.wait_for_position(3, WAIT_S)
        # It did not re-read the first chunk: it seeked past it.
        assert rc2.committer.stats.skipped_chunks == 0
        assert rc2.committer.stats.chunks == 1
    assert query(settings, "SELECT next_offset FROM committer_offsets") == [(2,)]


def test_crash_between_commit_and_publish_resends_the_outbox_with_the_same_position(
    settings: Settings,
) -> None:
    room = crashed_committing_a_create_chunk(settings, "after_commit")
    assert query(settings, "SELECT position, prev_position, sent FROM invalidation_outbox") == [
        (2, 0, False)
    ]
    assert message_count(settings, Topic.INVALIDATIONS) == 0  # committed, not announced

    produce(settings, [room.chunk(msg(room.creator))])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(3, WAIT_S)
        assert rc.committer.stats.resent == 1
    assert inv.gaps == 0 and inv.duplicates == 0
    published = [orjson.loads(m) for m in read_all(settings, Topic.INVALIDATIONS, 2)]
    assert [(m["prev_position"], m["position"]) for m in published] == [(0, 2), (2, 3)]
    assert query(settings, "SELECT count(*) FROM invalidation_outbox WHERE NOT sent") == [(0,)]


def test_crash_between_publish_and_mark_sent_yields_a_duplicate_the_client_drops(
    settings: Settings,
) -> None:
    room = crashed_committing_a_create_chunk(settings, "after_publish")
    produce(settings, [room.chunk(msg(room.creator))])
    with RunningCommitter(settings), invalidations(settings) as inv:
        assert inv.wait_for_position(3, WAIT_S)
    published = [orjson.loads(m) for m in read_all(settings, Topic.INVALIDATIONS, 3)]
    assert [m["position"] for m in published] == [2, 2, 3]
    assert published[0] == published[1]
    assert inv.duplicates == 1 and inv.gaps == 0


def test_crash_before_the_database_commit_leaves_nothing_behind(settings: Settings) -> None:
    crashed_committing_a_create_chunk(settings, "before_commit")
    assert query(settings, "SELECT count(*) FROM events") == [(0,)]
    assert query(settings, "SELECT count(*) FROM committer_offsets") == [(0,)]
    with RunningCommitter(settings), invalidations(settings) as inv:
        assert inv.wait_for_position(2, WAIT_S)
    assert query(settings, "SELECT count(*) FROM events") == [(2,)]


def test_a_standby_takes_over_when_the_active_committer_stops(settings: Settings) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    with RunningCommitter(settings) as first, invalidations(settings) as inv:
        first.wait_active()
        assert inv.wait_for_position(2, WAIT_S)
        with RunningCommitter(settings, standby_interval=0.2) as second:
            assert second.standing_by.wait(WAIT_S)
            assert not second.active.is_set()
            first.stop()
            second.wait_active()
            produce(settings, [room.chunk(msg(room.creator))])
            assert inv.wait_for_position(3, WAIT_S)
            assert second.committer.stats.chunks == 1
            assert first.committer.stats.chunks == 1
    assert inv.gaps == 0


def test_invariant_7_an_unreadable_chunk_is_dead_lettered_and_the_partition_goes_on(
    settings: Settings,
) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [b"{not json", room.create_chunk()])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(2, WAIT_S)
        assert rc.committer.stats.dead_lettered == 1
    (dead,) = [dead_letter.decode(m) for m in read_all(settings, Topic.DEAD_LETTER, 1)]
    assert dead.source == dead_letter.Source(settings.topic(Topic.CHUNKS), 0, 0)
    assert dead.value == "{not json"
    assert "chunk could not be read" in dead.reason


def test_invariant_7_a_chunk_the_database_refuses_is_dead_lettered_and_the_rest_commit(
    settings: Settings,
) -> None:
    good1, good2 = RoomSim("!g1:example.org"), RoomSim("!g2:example.org")
    bad = RoomSim("!bad:example.org")
    poison = bad.create_chunk()
    # PostgreSQL text cannot hold a NUL character; the whole batch fails on it at first.
    poison.events[1].pdu["sender"] = "@nul\x00:example.org"
    produce(settings, [good1.create_chunk(), poison, good2.create_chunk()])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(4, WAIT_S)
        assert rc.committer.stats.dead_lettered == 1
    rooms = query(settings, "SELECT DISTINCT room_id FROM events ORDER BY 1")
    assert rooms == [("!g1:example.org",), ("!g2:example.org",)]
    assert [r[0] for r in query(settings, "SELECT stream_ordering FROM events ORDER BY 1")] == [
        1,
        2,
        3,
        4,
    ]
    (dead,) = [dead_letter.decode(m) for m in read_all(settings, Topic.DEAD_LETTER, 1)]
    assert dead.source.offset == 1
    assert "the database refused chunk" in dead.reason
    assert query(settings, "SELECT next_offset FROM committer_offsets") == [(3,)]


def test_invariant_3_a_lost_database_connection_is_survived(settings: Settings) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    with RunningCommitter(settings) as rc, invalidations(settings) as inv:
        assert inv.wait_for_position(2, WAIT_S)
        dbname = urlsplit(settings.database_url).path.lstrip("/")
        # As a database restart looks to the committer: its session, and the lock, are gone.
        killed = query(
            settings,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = %s",
            APPLICATION_NAME,
            dbname,
        )
        assert killed == [(True,)]
        produce(settings, [room.chunk(msg(room.creator))])
        assert inv.wait_for_position(3, WAIT_S)
        assert rc.committer.stats.chunks == 2
    assert inv.gaps == 0
    assert [r[0] for r in query(settings, "SELECT stream_ordering FROM events ORDER BY 1")] == [
        1,
        2,
        3,
    ]
