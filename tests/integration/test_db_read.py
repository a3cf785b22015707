"""The read API against the real PostgreSQL: format versions, current state, state in one query,
a room's rows to rebuild its processor from."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest

from db.read import RoomStore, RoomWithStreamOrdering, load_room_rows
from db.writer import write_batch
from pipeline.bench.room_cost import CREATOR, LinearRoom
from pipeline.config import Settings
from pipeline.matrix.room_versions import room_version
from pipeline.room.batch import Incoming
from pipeline.room.chunk import Chunk
from pipeline.room.processor import RoomProcessor
from pipeline.room.rebuild import fold_chunks
from tests.integration._chunks import RoomSim, Spec, member, msg, state
from tests.unit.room.test_determinism import _lagging_room
from tests.unit.room.test_rebuild import _comparable
from topics.definitions import Topic

pytestmark = pytest.mark.integration


class CountingCursor(psycopg2.extensions.cursor):
    """Counts the statements sent, to check the one-query promise of invariant 6."""

    executed = 0

    def execute(self, query: Any, vars: Any = None) -> Any:
        CountingCursor.executed += 1
        return super().execute(query, vars)


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    c = psycopg2.connect(settings.database_url, cursor_factory=CountingCursor)
    yield c
    c.close()


def commit(conn: Any, *chunks: Chunk) -> None:
    with conn.cursor() as cur:
        write_batch(cur, chunks, {})
    conn.commit()


@pytest.mark.parametrize("version", ["1", "3", "6", "10", "11", "12"])
def test_invariant_5_events_are_read_back_with_their_format_version(
    conn: Any, version: str
) -> None:
    room = RoomSim("!fmt" + version + "room:example.org", version=version)
    if room_version(version).room_id_is_create_event_hash:
        room = RoomSim("!fmtv12createhash", version=version)
    create = room.create_chunk()
    chat = room.chunk(msg(room.creator, "hello"))
    commit(conn, create, chat)
    ids = [e.event_id for c in (create, chat) for e in c.events]
    got = RoomStore(conn).get_events([*ids, "$unknown"])
    assert set(got) == set(ids)
    rv = room_version(version)
    for c in (create, chat):
        for ce in c.events:
            stored = got[ce.event_id]
            assert stored.format_version == int(rv.event_format) == ce.format_version
            assert stored.event.room_version is rv
            assert stored.event.room_id == room.room_id
            assert dict(stored.event.pdu) == ce.pdu
    message = got[chat.events[0].event_id].event
    assert message.content["body"] == "hello"
    # v1/v2 references are [id, hashes] pairs in the JSON; the event gives plain ids.
    assert message.prev_event_ids == (create.events[-1].event_id,)
    assert got[create.events[0].event_id].stream_ordering == 1


def test_current_state_forward_extremities_and_joined_rooms(conn: Any) -> None:
    bob = "@bob:example.org"
    r1, r2, r3 = (RoomSim(f"!r{i}:example.org") for i in range(3))
    commit(conn, r1.create_chunk(), r2.create_chunk(), r3.create_chunk())
    commit(conn, r1.chunk(member(bob)), r2.chunk(member(bob)), r3.chunk(member(bob)))
    commit(conn, r2.chunk(member(bob, "leave")), r3.chunk(msg(bob)))
    store = RoomStore(conn)
    assert store.get_current_state_ids(r2.room_id) == r2.state
    assert store.get_forward_extremities(r3.room_id) == frozenset(r3.extremities)
    joins = store.get_events([r1.state[("m.room.member", bob)], r3.state[("m.room.member", bob)]])
    assert store.get_rooms_for_user_with_stream_ordering(bob) == frozenset(
        {
            RoomWithStreamOrdering(
                r1.room_id, joins[r1.state[("m.room.member", bob)]].stream_ordering
            ),
            RoomWithStreamOrdering(
                r3.room_id, joins[r3.state[("m.room.member", bob)]].stream_ordering
            ),
        }
    )
    assert store.get_rooms_for_user_with_stream_ordering("@nobody:example.org") == frozenset()


def _busy_room(conn: Any) -> RoomSim:
    """A room whose state is a long delta chain with keys overwritten along the way."""
    room = RoomSim("!busy:example.org")
    commit(conn, room.create_chunk())
    for i in range(6):
        commit(
            conn,
            room.chunk(
                member(f"@u{i}:example.org"),
                state("m.room.name", room.creator, {"name": f"name {i}"}),
                msg(room.creator),
            ),
        )
    commit(conn, room.chunk(member("@u0:example.org", "leave")))
    return room


def test_invariant_6_state_for_many_events_is_one_query(conn: Any) -> None:
    room = _busy_room(conn)
    events = list(room.groups_of)
    store = RoomStore(conn)
    before = CountingCursor.executed
    got = store.get_state_ids_for_events(events)
    assert CountingCursor.executed - before == 1
    # The nearest group wins: the state of the last event is the room's current state.
    assert got[events[-1]] == room.state
    # And every event sees the state of its own group, not a later one.
    name_events = [e for e in events if e in got and ("m.room.name", "") in got[e]]
    assert len({got[e][("m.room.name", "")] for e in name_events}) == 6


@pytest.mark.parametrize(
    "types",
    [
        [("m.room.member", None)],
        [("m.room.name", "")],
        [("m.room.member", "@u0:example.org"), ("m.room.create", "")],
        [("m.room.member", None), ("m.room.name", None)],
        [("m.room.topic", "")],
    ],
    ids=["all members", "one non-member key", "member and non-member pairs", "two types", "absent"],
)
def test_invariant_6_filtered_state_is_one_query_and_matches_the_unfiltered(
    conn: Any, types: list[tuple[str, str | None]]
) -> None:
    room = _busy_room(conn)
    events = list(room.groups_of)
    store = RoomStore(conn)
    full = store.get_state_ids_for_events(events)
    before = CountingCursor.executed
    got = store.get_state_ids_for_events(events, types=types)
    assert CountingCursor.executed - before == 1

    def wanted(key: tuple[str, str]) -> bool:
        return any(t == key[0] and (sk is None or sk == key[1]) for t, sk in types)

    assert set(got) == set(full)
    for eid, st in full.items():
        assert got[eid] == {k: v for k, v in st.items() if wanted(k)}


def test_a_rejected_event_has_the_state_before_it(conn: Any) -> None:
    room = RoomSim("!r:example.org")
    commit(conn, room.create_chunk())
    bad = Spec("m.room.name", "@mallory:example.org", "", {"name": "pwned"}, rejected="4.b.")
    c = room.chunk(bad)
    commit(conn, c)
    got = RoomStore(conn).get_state_ids_for_events([c.events[0].event_id])
    assert got[c.events[0].event_id] == room.state
    assert ("m.room.name", "") not in room.state


def test_events_without_a_state_group_are_absent(conn: Any) -> None:
    assert RoomStore(conn).get_state_ids_for_events(["$nope"]) == {}


def test_state_read_back_through_groups_stored_over_earlier_ancestors(conn: Any) -> None:
    """A room processor's groups rest on ancestors several steps back (and on a snapshot once
    overwritten rows pile up): the one-query read gives every event the processor's state."""
    room = LinearRoom(room_id="!ancestors:example.org")
    raws = room.setup(150)
    for i in range(450):
        user = f"@u{(i * 37) % 149}:example.org"
        if i % 3:
            raws.append(
                room.send(
                    "m.room.member", user, {"membership": "join", "displayname": f"n{i}"}, user
                )
            )
        else:
            raws.append(room.send("m.room.topic", CREATOR, {"topic": f"t{i}"}, ""))
    proc = RoomProcessor(room.room_id)
    chunks = [c for i in range(0, len(raws), 60) for c in proc.process(raws[i : i + 60]).chunks]
    commit(conn, *chunks)
    groups = {g.id: g for c in chunks for g in c.state_groups}
    # Deltas over ancestors further back than their parent, and a snapshot after the first.
    assert any(len(g.delta) >= 100 and g.prev_group is not None for g in groups.values())
    assert sum(g.prev_group is None for g in groups.values()) >= 2
    events = [e.event_id for c in chunks for e in c.events]
    store = RoomStore(conn)
    got = store.get_state_ids_for_events(events)
    for eid in events:
        assert got[eid] == dict(proc.state_of_group(proc.state_group_of(eid)))
    topics = store.get_state_ids_for_events(events, types=[("m.room.topic", "")])
    assert {e: s for e, s in topics.items() if s} == {
        e: {("m.room.topic", ""): s[("m.room.topic", "")]}
        for e, s in got.items()
        if ("m.room.topic", "") in s
    }


def test_invariant_8_a_rooms_rows_are_read_in_five_queries_over_one_snapshot(
    conn: Any, settings: Settings
) -> None:
    # A room whose current state lags its extremities, with forks, redactions and power
    # changes, written by the committer's writer, one chunk per input.
    rnd = random.Random(11)
    b, names = _lagging_room(rnd, 14)
    proc = RoomProcessor(b.room_id)
    chunks = [c for n in names for c in proc.process([Incoming(b.raw(n), received_ts=5)]).chunks]
    commit(conn, *chunks[:-1])
    with conn.cursor() as cur:
        write_batch(cur, [], {(settings.topic(Topic.CHUNKS), 0): 41})
    conn.commit()

    before = CountingCursor.executed
    rows, offset = load_room_rows(conn, b.room_id, settings.topic(Topic.CHUNKS))
    # Committed after the snapshot was taken: not in the rows (it is what the chunks in flight
    # from offset 41 on hold).
    with psycopg2.connect(settings.database_url) as other, other.cursor() as cur:
        write_batch(cur, chunks[-1:], {})
    events = list(rows.events)
    conn.commit()
    # SET TRANSACTION, then the room, its high-water and the offset; the groups; the
    # extremities; the current state; the events (a server-side cursor).
    assert CountingCursor.executed - before == 6
    assert offset == 41
    assert rows.high_water == chunks[-2].seq[1]
    assert [e.event_id for e in events] == [e.event_id for c in chunks[:-1] for e in c.events]
    assert all(e.received_ts == 5 for e in events)
    rebuilt = RoomProcessor.from_database_rows(
        fold_chunks(replace(rows, events=events), chunks[-1:])
    )
    assert _comparable(rebuilt) == _comparable(proc)
    with pytest.raises(ValueError, match="needs a transaction"):
        conn.autocommit = True
        load_room_rows(conn, b.room_id, settings.topic(Topic.CHUNKS))
