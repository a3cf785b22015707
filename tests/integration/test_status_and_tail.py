"""``roomstream status`` and ``roomstream tail`` against the real stack and real processes.

A worker and a committer run as subprocesses over rooms with every outcome (accepted, rejected,
soft-failed), an input that is not JSON and an event whose prev event never arrives; status
must then show each stage caught up, the parked event, the dead letter and its reason, and the
last position, and tail must print exactly the messages the committer published.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace

import orjson
import pytest

from pipeline.config import Settings
from pipeline.dev.workload_builder import RoomBuilder, default_power_levels
from pipeline.invalidations import format_for_tail
from pipeline.ops.status import Status, Unreachable, collect_status, render_text, status_json
from tests.integration.harness import (
    ROOT,
    Processes,
    TopicReader,
    produce,
    roomstream,
    settings_env,
    wait_for,
)
from tests.integration.rooms import ALICE, busy_room, lines_of
from topics.definitions import Topic

pytestmark = pytest.mark.integration

WAIT_S = 90.0  # an upper bound; each step takes seconds


def test_status_of_a_fresh_prefix_shows_every_stage_at_zero(settings: Settings) -> None:
    run = roomstream(settings, "status", "--json")
    assert run.returncode == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert {name: stage["lag"] for name, stage in doc["stages"].items()} == {"pdus": 0, "chunks": 0}
    assert len(doc["stages"]["pdus"]["partitions"]) == settings.pdu_partitions
    assert all(p["next_offset"] is None for p in doc["stages"]["pdus"]["partitions"])
    assert doc["invalidations"] == {
        "topic": settings.topic(Topic.INVALIDATIONS),
        "last_stream_ordering": 0,
        "last_published": None,
        "unsent": 0,
        "messages": 0,
    }
    assert doc["parked"] == {"total": 0, "rooms": 0, "top": []}
    assert doc["missing_events"] == {"open_requests": 0, "oldest": []}
    assert (doc["dead_letters"]["count"], doc["dead_letters"]["latest"]) == (0, [])
    assert doc["committer"]["active"] is False
    assert doc["last_position"] == 0
    text = roomstream(settings, "status")
    assert text.returncode == 0, text.stderr
    assert "last position    0" in text.stdout and "committer        none active" in text.stdout


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ({"kafka_bootstrap": "127.0.0.1:1"}, "Kafka at 127.0.0.1:1"),
        (
            {"database_url": "postgresql://roomstream:secret@127.0.0.1:1/roomstream"},
            "PostgreSQL at postgresql://roomstream:***@127.0.0.1:1/roomstream",
        ),
    ],
)
def test_status_names_the_server_it_cannot_reach_and_how_to_start_it(
    settings: Settings, broken: dict[str, str], named: str
) -> None:
    with pytest.raises(Unreachable) as err:
        collect_status(settings.with_overrides(**broken))
    assert named in str(err.value) and "roomstream stack up" in str(err.value)
    assert "secret" not in str(err.value)


def test_status_of_a_prefix_without_topics_says_to_apply_them(settings: Settings) -> None:
    with pytest.raises(Unreachable, match="roomstream topics apply"):
        collect_status(replace(settings, topic_prefix=settings.topic_prefix + "-none"))


def _orphan_room() -> tuple[RoomBuilder, list[bytes], str]:
    """A room whose last event's prev event is never sent: the last event stays parked."""
    room = RoomBuilder("10", tag="orphan")
    room.create(ALICE)
    room.join(ALICE)
    room.state("m.room.power_levels", ALICE, default_power_levels(ALICE, room.rv))
    room.message(ALICE, "never sent")
    orphan = room.message(ALICE, "waits for the one never sent")
    return room, [e.line for e in room.events[:3]] + [orphan.line], orphan.event_id


def _caught_up(s: Status, position: int) -> bool:
    return (
        all(stage.lag == 0 for stage in s.stages)
        and s.invalidations.unsent == 0
        and s.invalidations.last_published == position
        and s.parked.total == 1
        and s.dead_letters.count == 1
    )


def test_status_and_tail_after_a_worker_and_committer_ran_some_rooms(
    settings: Settings, procs: Processes
) -> None:
    rooms = [busy_room(f"s{i}", messages=2) for i in range(2)]
    orphan_room, orphan_lines, _ = _orphan_room()
    room_lines = [line for r in rooms for line in lines_of(r)]
    lines = room_lines + orphan_lines + [b"{not json"]
    # Every event but the parked one is committed, rejected and soft-failed ones too.
    first = len(room_lines)
    committed = first + 3
    worker = procs.worker("w1")
    committer = procs.start("committer", name="committer")
    # The rooms first, then the rest once they are published: the committer publishes at least
    # two invalidation messages, which the tail below reads (it may take one burst in one).
    produce(settings, room_lines)
    wait_for(
        lambda: collect_status(settings).invalidations.last_published == first,
        WAIT_S,
        "the rooms' events published",
        processes=[worker, committer],
    )
    produce(settings, lines[first:])
    latest: list[Status] = []

    def caught_up() -> bool:
        latest[:] = [collect_status(settings)]
        return _caught_up(latest[0], committed)

    wait_for(
        caught_up, WAIT_S, "status to show the pipeline caught up", processes=[worker, committer]
    )
    s = latest[0]
    assert s.last_position == committed
    assert s.invalidations.messages > 0
    assert sum(p.high for p in s.stages[0].partitions) >= len(lines)
    assert all(p.next_offset == p.high for p in s.stages[0].partitions if p.high)
    assert s.stages[1].partitions[0].next_offset == s.stages[1].partitions[0].high > 0
    assert s.parked.top == ((orphan_room.room_id, 1),)
    # The parked event's missing prev event is asked for, and the request shows until answered.
    never_sent, orphan = orphan_room.events[3].event_id, orphan_room.events[4].event_id
    assert s.parked.requests == 1
    assert [(r.room_id, r.missing, r.needed_by) for r in s.parked.oldest_requests] == [
        (orphan_room.room_id, (never_sent,), orphan)
    ]
    assert status_json(s)["missing_events"]["open_requests"] == 1
    assert len(s.dead_letters.latest) == 1
    assert "not valid JSON" in s.dead_letters.latest[0].reason
    assert s.committer.active and s.committer.pid is not None
    text = render_text(s)
    assert f"last position    {committed}" in text and orphan_room.room_id in text
    assert "missing events   1 open request(s), oldest:" in text and never_sent in text
    assert status_json(s)["stages"]["chunks"]["lag"] == 0

    # tail --count N prints the first N messages the committer published, one line each.
    published = TopicReader(settings, Topic.INVALIDATIONS)
    wait_for(
        lambda: len(published.messages) >= s.invalidations.messages,
        WAIT_S,
        "the published invalidation messages",
        readers=[published],
    )
    messages = published.values()
    assert len(messages) >= 2
    want = len(messages) - 1
    run = roomstream(settings, "tail", "--from-beginning", "--count", str(want))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [format_for_tail(m) for m in messages[:want]]
    raw = roomstream(settings, "tail", "--from-beginning", "--count", "2", "--json")
    assert raw.returncode == 0, raw.stderr
    assert [orjson.loads(line) for line in raw.stdout.splitlines()] == messages[:2]

    # The committer stopped: status no longer sees an active one.
    assert committer.stop() == 0
    assert collect_status(settings).committer.active is False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_stops_cleanly_on_sigint_and_sigterm(settings: Settings, signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "tail"],
        cwd=ROOT,
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()  # blocks until tail reads the stream
        assert f"tailing {settings.topic(Topic.INVALIDATIONS)} from the end" in ready
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err
