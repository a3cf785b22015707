"""The invalidation client against the real broker: invalidate before notify, with real caches."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest

from db.read import RoomStore
from pipeline.config import Settings
from pipeline.invalidations import InvalidationClient, format_for_tail
from tests.integration._chunks import RoomSim, member, msg
from tests.integration.committer_harness import WAIT_S, RunningCommitter, produce
from topics.definitions import Topic

pytestmark = pytest.mark.integration

BOB = "@bob:example.org"


class RoomsForUserCache:
    """A read-through cache of get_rooms_for_user_with_stream_ordering, as a worker keeps one."""

    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self.entries: dict[str, frozenset[str]] = {}

    def get(self, user_id: str) -> frozenset[str]:
        if user_id not in self.entries:
            rooms = self.store.get_rooms_for_user_with_stream_ordering(user_id)
            self.store.conn.commit()  # a fresh snapshot on every miss
            self.entries[user_id] = frozenset(r.room_id for r in rooms)
        return self.entries[user_id]

    def invalidate(self, key: tuple[Any, ...]) -> None:
        self.entries.pop(key[0], None)


def test_invariant_4_a_membership_change_is_invalidated_before_it_is_notified(
    settings: Settings,
) -> None:
    conn = psycopg2.connect(settings.database_url)
    cache = RoomsForUserCache(RoomStore(conn))
    assert cache.get(BOB) == frozenset()  # cached before the join: stale once bob joins
    room = RoomSim("!r:example.org")
    chunks = [room.create_chunk(), room.chunk(member(BOB)), room.chunk(msg(BOB))]

    journal: list[tuple[str, object]] = []
    seen_by_notifier: list[frozenset[str]] = []

    def notified(message: dict[str, Any]) -> None:
        journal.append(("notify", message["position"]))
        for e in message["events"]:
            if e["type"] == "m.room.member" and e["state_key"] == BOB:
                seen_by_notifier.append(cache.get(BOB))

    def invalidated(key: tuple[Any, ...]) -> None:
        journal.append(("invalidate", key))
        cache.invalidate(key)

    with (
        RunningCommitter(settings),
        InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS)) as inv,
    ):
        inv.register_cache("get_rooms_for_user_with_stream_ordering", invalidated)
        inv.add_notifier(notified)
        # One at a time, so that each change is a transaction (and a message) of its own.
        for chunk, position in zip(chunks, (2, 3, 4), strict=True):
            produce(settings, [chunk])
            assert inv.wait_for_position(position, WAIT_S)
    conn.close()

    # The notifier, reading through the cache, saw the join: the stale entry was gone.
    assert seen_by_notifier == [frozenset({room.room_id})]
    join_message = [i for i, j in enumerate(journal) if j == ("notify", 3)]
    assert journal[join_message[0] - 1] == ("invalidate", (BOB,))
    assert ("invalidate", (room.creator,)) in journal[: journal.index(("notify", 2))]


def test_iter_messages_and_tail_lines_follow_the_stream(settings: Settings) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    stop = threading.Event()
    lines: list[str] = []
    with (
        RunningCommitter(settings),
        InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS)) as inv,
    ):
        for message in inv.iter_messages(stop):
            lines.append(format_for_tail(message))
            if message["position"] == 2:
                produce(settings, [room.chunk(msg(room.creator))])
            if message["position"] >= 3:
                stop.set()
    assert lines[0].startswith("2 (prev 0) !r:example.org: 2 event(s)")
    assert lines[-1].startswith("3 (prev 2) !r:example.org: 1 event(s)")


def test_a_client_starting_at_the_end_takes_the_first_message_as_its_baseline(
    settings: Settings,
) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    with RunningCommitter(settings):
        with InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS)) as a:
            assert a.wait_for_position(2, WAIT_S)
        gaps: list[int] = []
        with InvalidationClient(
            settings.kafka_bootstrap,
            settings.topic(Topic.INVALIDATIONS),
            start_position=None,
            start_offset=1,  # past the first message, as a late joiner
            on_gap=lambda expected, m: gaps.append(expected),
        ) as late:
            produce(settings, [room.chunk(msg(room.creator))])
            assert late.wait_for_position(3, WAIT_S)
    assert gaps == []


def test_a_cache_that_fails_gets_the_message_again_on_the_next_poll(settings: Settings) -> None:
    room = RoomSim("!r:example.org")
    produce(settings, [room.create_chunk()])
    calls: list[tuple[Any, ...]] = []

    def flaky(key: tuple[Any, ...]) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise ConnectionError("cache server unreachable")

    with (
        RunningCommitter(settings),
        InvalidationClient(settings.kafka_bootstrap, settings.topic(Topic.INVALIDATIONS)) as inv,
    ):
        inv.register_cache("get_current_state_ids", flaky)
        with pytest.raises(ConnectionError):
            inv.wait_for_position(2, WAIT_S)
        assert inv.position == 0  # the failed message was not counted as applied
        assert inv.wait_for_position(2, WAIT_S)
        produce(settings, [room.chunk(member(BOB))])
        assert inv.wait_for_position(3, WAIT_S)
    assert calls == [(room.room_id,), (room.room_id,), (room.room_id,)]
    assert inv.gaps == 0
