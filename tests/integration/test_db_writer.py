"""The bulk writer against the real PostgreSQL: stream orderings, replays, folded changes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import orjson
import psycopg2
import pytest

from db.chunk_marks import chunk_seq
from db.outbox import (
    CommitterProgress,
    OutboxRow,
    committer_progress,
    mark_sent,
    store_outbox,
    unsent_outbox,
)
from db.writer import (
    BatchResult,
    Change,
    Reads,
    build_batch,
    execute_batch,
    read_state,
    write_batch,
)
from pipeline.config import Settings
from pipeline.invalidations import build_message, decode_invalidation, encode_parts
from pipeline.room.chunk import Chunk
from tests.integration._chunks import RoomSim, member, msg, state
from topics.chunk import for_commit

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    c = psycopg2.connect(settings.database_url)
    yield c
    c.close()


def message(changes: Sequence[Change], position: int, prev: int) -> list[bytes]:
    return encode_parts(build_message(changes, position, prev))


def commit(conn: Any, chunks: Sequence[Chunk], offset: int | None = None) -> BatchResult:
    offsets = {("t.chunks", 0): offset} if offset is not None else {}
    with conn.cursor() as cur:
        result = write_batch(cur, chunks, offsets, message)
    conn.commit()
    return result


def rows(conn: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        out: list[tuple[Any, ...]] = cur.fetchall()
    conn.commit()
    return out


def test_invariant_1_stream_orderings_are_contiguous_across_many_rooms_in_commit_order(
    conn: Any,
) -> None:
    rooms = [RoomSim(f"!room{i}:example.org") for i in range(12)]
    batches: list[list[Chunk]] = [[r.create_chunk() for r in rooms]]
    for n in range(3):
        # Rooms interleave; a chunk's events stay together and in order.
        batches.append(
            [r.chunk(msg(r.creator, f"m{n}"), msg(r.creator)) for r in rooms[n % 2 :: 2]]
        )
    committed_order: list[str] = []
    for b in batches:
        commit(conn, b)
        committed_order += [e.event_id for c in b for e in c.events]
    stored = rows(conn, "SELECT event_id, stream_ordering FROM events ORDER BY stream_ordering")
    assert [so for _, so in stored] == list(range(1, len(committed_order) + 1))
    assert [eid for eid, _ in stored] == committed_order
    assert rows(conn, "SELECT stream_id FROM stream_positions WHERE stream_name = 'events'") == [
        (len(committed_order),)
    ]


def test_outbox_messages_chain_positions_and_position_is_the_highest_ordering(conn: Any) -> None:
    a, b = RoomSim("!a:example.org"), RoomSim("!b:example.org")
    first = commit(conn, [a.create_chunk(), b.create_chunk()])
    second = commit(conn, [a.chunk(msg(a.creator), msg(a.creator), msg(a.creator))])
    outbox = first.outbox + second.outbox
    # One message per transaction, whatever the number of chunks and rooms in it.
    assert [(o.prev_position, o.position) for o in outbox] == [(0, 4), (4, 7)]
    stored = rows(conn, "SELECT position, prev_position, sent FROM invalidation_outbox ORDER BY 1")
    assert stored == [(4, 0, False), (7, 4, False)]
    assert orjson.loads(outbox[0].message)["rooms"] == ["!a:example.org", "!b:example.org"]
    last = orjson.loads(outbox[-1].message)
    assert [e["stream_ordering"] for e in last["events"]] == [5, 6, 7]
    assert last["position"] == 7 and last["prev_position"] == 4


def test_invariant_3_a_redelivered_chunk_is_not_stored_twice(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    chat = room.chunk(msg(room.creator), member("@bob:example.org"))
    commit(conn, [create, chat], offset=2)
    again = commit(conn, [chat, create], offset=4)  # a replay after a crash
    assert sorted(again.skipped_chunk_ids) == sorted([create.chunk_id, chat.chunk_id])
    assert again.outbox == []
    assert rows(conn, "SELECT count(*) FROM events") == [(4,)]
    assert rows(conn, "SELECT count(*) FROM event_json") == [(4,)]
    assert rows(conn, "SELECT count(*) FROM invalidation_outbox") == [(1,)]
    assert rows(conn, "SELECT stream_id FROM stream_positions") == [(4,)]
    # The offset still moves on, so the replayed chunks are not read a third time.
    assert rows(conn, "SELECT next_offset FROM committer_offsets") == [(4,)]


def test_a_chunk_delivered_twice_in_one_batch_is_written_once(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    c = room.create_chunk()
    result = commit(conn, [c, c])
    assert result.skipped_chunk_ids == [c.chunk_id]
    assert rows(conn, "SELECT count(*) FROM events") == [(2,)]


def test_an_event_already_stored_gets_no_second_stream_ordering(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    commit(conn, [create])
    # The same events under another chunk id (a processor replayed with other chunking).
    renamed = Chunk(
        chunk_id="!r:example.org/2",
        room_id=create.room_id,
        room_version=create.room_version,
        events=create.events,
    )
    nxt = replace(room.chunk(msg(room.creator)), chunk_id="!r:example.org/3")
    result = commit(conn, [renamed, nxt])
    assert sorted(result.skipped_event_ids) == sorted(e.event_id for e in create.events)
    assert [c.position for c in result.committed] == [None, 3]
    assert [o.prev_position for o in result.outbox] == [2]
    assert rows(conn, "SELECT stream_ordering FROM events ORDER BY 1") == [(1,), (2,), (3,)]


def test_event_columns_take_depth_format_version_and_flags(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    rejected = msg("@mallory:example.org")
    rejected.rejected = "4.b. the sender is not joined to the room"
    soft = msg(room.creator)
    soft.soft_failed = True
    c = room.chunk(rejected, soft, msg(room.creator))
    commit(conn, [create, c])
    got = rows(
        conn,
        "SELECT event_id, topological_ordering, format_version, rejection_reason, soft_failed,"
        " outlier, received_ts FROM events WHERE room_id = %s ORDER BY stream_ordering",
        room.room_id,
    )
    assert [g[1] for g in got] == [1, 2, 3, 4, 5]
    assert {g[2] for g in got} == {3}
    assert got[2][3] == "4.b. the sender is not joined to the room"
    assert [g[4] for g in got] == [False, False, False, True, False]
    assert all(g[6] is not None for g in got)
    json_rows = rows(conn, "SELECT event_id, format_version, json FROM event_json")
    by_id = {e.event_id: e.pdu for ch in (create, c) for e in ch.events}
    for eid, fmt, text in json_rows:
        assert fmt == 3
        assert orjson.loads(text) == by_id[eid]


def test_edges_auth_state_groups_memberships_and_rooms_are_written(conn: Any) -> None:
    room = RoomSim("!r:example.org", version="9")
    create = room.create_chunk()
    bob = room.chunk(member("@bob:example.org"), msg("@bob:example.org"))
    commit(conn, [create, bob])
    assert rows(conn, "SELECT room_id, room_version, creator FROM rooms") == [
        ("!r:example.org", "9", room.creator)
    ]
    all_events = [e for ch in (create, bob) for e in ch.events]
    edges = set(rows(conn, "SELECT event_id, prev_event_id FROM event_edges"))
    assert edges == {(e.event_id, p) for e in all_events for p in e.pdu["prev_events"]}
    assert len(edges) == 3
    auth = set(rows(conn, "SELECT event_id, auth_id FROM event_auth"))
    assert auth == {(e.event_id, a) for e in all_events for a in e.pdu["auth_events"]}
    groups = rows(conn, "SELECT count(*) FROM state_groups")
    assert groups == [(3,)]  # create, alice's join, bob's join
    assert rows(conn, "SELECT count(*) FROM state_group_edges") == [(2,)]
    mapped = dict(rows(conn, "SELECT event_id, state_group FROM event_to_state_groups"))
    assert mapped == {e.event_id: e.state_group for e in all_events}
    members = rows(
        conn,
        "SELECT user_id, membership, event_stream_ordering FROM room_memberships ORDER BY 3",
    )
    assert members == [(room.creator, "join", 2), ("@bob:example.org", "join", 3)]


@pytest.mark.parametrize(("version", "expected"), [("9", "@carol:example.org"), ("11", None)])
def test_a_chunk_without_its_creator_takes_it_from_the_create_event(
    conn: Any, version: str, expected: str | None
) -> None:
    # Before v11 the creator is the create event's content key; since, its sender.
    room = RoomSim("!r:example.org", version=version)
    create = replace(room.create_chunk(), creator=None)
    create.events[0].pdu["content"]["creator"] = "@carol:example.org"
    commit(conn, [create])
    assert rows(conn, "SELECT creator FROM rooms") == [(expected or room.creator,)]


def test_current_state_and_extremities_fold_over_chunks_in_one_batch(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    chunks = [
        room.create_chunk(),
        room.chunk(state("m.room.name", room.creator, {"name": "one"})),
        room.chunk(state("m.room.name", room.creator, {"name": "two"})),
        room.chunk(msg(room.creator)),
    ]
    commit(conn, chunks)  # the same key and the same extremity row touched by several chunks
    current = dict(
        ((t, k), e)
        for t, k, e in rows(conn, "SELECT type, state_key, event_id FROM current_state_events")
    )
    assert current == room.state
    assert rows(conn, "SELECT event_id FROM event_forward_extremities") == [(room.extremities[0],)]
    assert rows(
        conn, "SELECT membership FROM current_state_events WHERE type = 'm.room.member'"
    ) == [("join",)]


def test_current_state_removal_deletes_the_row(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    named = room.chunk(state("m.room.name", room.creator, {"name": "x"}))
    commit(conn, [create, named])
    drop = Chunk(
        chunk_id="!r:example.org/3",
        room_id=room.room_id,
        room_version="10",
        events=room.chunk(msg(room.creator)).events,
        current_state_removed=(("m.room.name", ""),),
    )
    commit(conn, [drop])
    got = rows(conn, "SELECT type FROM current_state_events ORDER BY 1")
    assert got == [("m.room.create",), ("m.room.member",)]


def test_the_create_event_in_the_batch_wins_over_the_stored_room_row(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO rooms VALUES ('!r:example.org', '1', NULL)")
    conn.commit()
    room = RoomSim("!r:example.org", version="11", creator="@carol:example.org")
    commit(conn, [room.create_chunk()])
    assert rows(conn, "SELECT room_version, creator FROM rooms") == [("11", "@carol:example.org")]


@pytest.mark.parametrize("same_batch", [False, True])
def test_a_second_create_event_changes_neither_the_rooms_version_nor_its_creator(
    conn: Any, same_batch: bool
) -> None:
    # Rooms v1–v11 accept a create event without prev events in a room that has one; the
    # processor names the creator only on the chunk of the room's first create event.
    room = RoomSim("!r:example.org", version="9")
    create = room.create_chunk()
    second = room.chunk(
        state("m.room.create", "@dave:example.org", {"creator": "@dave:example.org"})
    )
    second = replace(second, creator=None)
    if same_batch:
        commit(conn, [create, second])
    else:
        commit(conn, [create])
        commit(conn, [second])
    assert rows(conn, "SELECT room_version, creator FROM rooms") == [("9", room.creator)]
    assert rows(conn, "SELECT count(*) FROM events WHERE type = 'm.room.create'") == [(2,)]


def test_redactions_are_recorded(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    hello = room.chunk(msg(room.creator))
    victim = hello.events[0].event_id
    red = msg(room.creator)
    red.type, red.redacts = "m.room.redaction", victim
    commit(conn, [create, hello, room.chunk(red)])
    assert rows(conn, "SELECT redacts FROM redactions") == [(victim,)]


def test_committer_progress_reports_offset_position_and_unsent_messages(conn: Any) -> None:
    with conn.cursor() as cur:
        assert committer_progress(cur, "t.chunks") == CommitterProgress(None, 0, None, 0)
    room = RoomSim("!r:example.org")
    commit(conn, [room.create_chunk()], offset=1)
    commit(conn, [room.chunk(msg(room.creator))], offset=2)
    with conn.cursor() as cur:
        assert [o.position for o in unsent_outbox(cur)] == [2, 3]
        mark_sent(cur, [2])
        assert committer_progress(cur, "t.chunks") == CommitterProgress(2, 3, 2, 1)


@pytest.mark.parametrize(
    "text",
    ["tab\there", "new\nline\r\n", "back\\slash \\N \\x00", "ünïcødé 🎉", "\\.", ""],
    ids=["tab", "newlines", "backslashes", "unicode", "end-of-data marker", "empty"],
)
def test_text_is_stored_exactly_whatever_characters_it_holds(conn: Any, text: str) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    odd = room.chunk(state("m.room.topic", room.creator, {"topic": text}, state_key=text))
    commit(conn, [create, odd])
    eid = odd.events[0].event_id
    assert rows(conn, "SELECT state_key FROM events WHERE event_id = %s", eid) == [(text,)]
    (stored,) = rows(conn, "SELECT json FROM event_json WHERE event_id = %s", eid)
    assert orjson.loads(stored[0])["content"]["topic"] == text
    got = rows(conn, "SELECT state_key FROM state_groups_state WHERE event_id = %s", eid)
    assert got == [(text,)]
    (message,) = rows(conn, "SELECT message FROM invalidation_outbox WHERE position = 3")
    announced = decode_invalidation(bytes(message[0]))["events"]
    assert [(e["event_id"], e["state_key"]) for e in announced][-1] == (eid, text)


def test_a_nul_character_is_refused_before_anything_is_written(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    create = room.create_chunk()
    create.events[0].pdu["sender"] = "@nul\x00:example.org"
    with conn.cursor() as cur, pytest.raises(ValueError, match="NUL"):
        write_batch(cur, [create], {})
    conn.rollback()
    assert rows(conn, "SELECT count(*) FROM events") == [(0,)]


def test_outbox_rows_come_back_byte_for_byte(conn: Any) -> None:
    rows_in = [
        OutboxRow(10, 7, None, bytes(range(256)) * 3, 0, 2),
        OutboxRow(10, 7, None, b"", 1, 2),
        OutboxRow(12, 10, "!ünï:example.org", b'{"position":12}', 0, 1),
    ]
    with conn.cursor() as cur:
        store_outbox(cur, rows_in)
        assert unsent_outbox(cur) == rows_in
    conn.rollback()


def test_state_read_ahead_of_a_batch_and_carried_over_it_is_what_the_database_holds_after_it(
    conn: Any,
) -> None:
    # What the committer builds the next batch from while this one is written: the next
    # batch's state read before this batch, with this batch's changes applied in Python.
    one, two, three = (RoomSim(f"!r{i}:example.org") for i in range(3))
    commit(conn, [one.create_chunk(), two.create_chunk()])
    this = [one.chunk(msg(one.creator)), three.create_chunk()]
    again = this[0]  # delivered again in the next batch: its digest must be found
    after_this = one.chunk(msg(one.creator))
    nxt = [for_commit(c) for c in (again, after_this, two.chunk(msg(two.creator)), this[1])]
    with conn.cursor() as cur:
        ahead = read_state(cur, None, nxt)
        plan = build_batch([for_commit(c) for c in this], {}, ahead_of(cur, this), message)
        execute_batch(cur, plan)
    conn.commit()
    carried = plan.after(ahead)
    with conn.cursor() as cur:
        actual = read_state(cur, None, nxt)
    conn.rollback()
    rooms = {c.room_id for c in nxt}
    events = {e.event_id for c in nxt for e in c.events}
    assert carried.position == actual.position == 7
    assert {r: m for r, m in carried.marks.items() if r in rooms} == actual.marks
    assert carried.stored & events == actual.stored
    assert actual.stored == {e.event_id for c in (again, this[1]) for e in c.events}
    older = {c.chunk_id for c in nxt if chunk_seq(c) <= actual.marks[c.room_id].last_seq}
    assert {k: v for k, v in carried.digests.items() if k in older} == actual.digests
    assert set(actual.digests) == {again.chunk_id, this[1].chunk_id}


def ahead_of(cur: Any, chunks: Sequence[Chunk]) -> Reads:
    return read_state(cur, None, [for_commit(c) for c in chunks])
