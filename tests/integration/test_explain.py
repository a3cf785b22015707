"""``roomstream explain`` against a database the real pipeline filled: a worker and a committer
process a room with a rejected and a soft-failed event, and a fork whose branches both set the
topic; the command then explains each outcome by its rule and the merge's state by the resolution
of the conflicted topic, from the stored PDUs, and agrees with what the database recorded."""

from __future__ import annotations

from contextlib import closing

import orjson
import pytest

from pipeline import pg
from pipeline.config import Settings
from pipeline.dev.workload_builder import REJECTED, SOFT_FAILED
from tests.integration.harness import Processes, produce, roomstream, wait_for
from tests.integration.rooms import ALICE, busy_room, lines_of

pytestmark = pytest.mark.integration

WAIT_S = 90.0  # an upper bound; the room commits in seconds


def _stored(settings: Settings, room_id: str) -> int:
    with closing(pg.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events WHERE room_id = %s", (room_id,))
        row = cur.fetchone()
        return int(row[0]) if row else 0


def test_explain_names_the_rule_of_each_stored_rejection_and_soft_fail(
    settings: Settings, procs: Processes
) -> None:
    room = busy_room("explain", messages=2)
    # Both branches of a fork set the topic; the merge's state before is their resolution.
    base = room.forward_extremities
    left = room.state("m.room.topic", ALICE, {"topic": "left"}, prev=base)
    right = room.state("m.room.topic", ALICE, {"topic": "right"}, prev=base)
    merge = room.message(ALICE, "merge the topics")
    worker = procs.worker("w1")
    committer = procs.start("committer", name="committer")
    produce(settings, lines_of(room))
    wait_for(
        lambda: _stored(settings, room.room_id) == len(room.events),
        WAIT_S,
        "the room committed",
        processes=[worker, committer],
    )
    rejected = next(e for e in room.events if e.outcome == REJECTED)
    soft_failed = next(e for e in room.events if e.outcome == SOFT_FAILED)

    run = roomstream(settings, "explain", rejected.event_id, "--json")
    assert run.returncode == 0, run.stderr
    doc = orjson.loads(run.stdout)
    # v10 numbers "the sender's membership is not join" 5 (v12: 6).
    assert (doc["outcome"], doc["stored_outcome"], doc["rule"]) == ("rejected", "rejected", "5")
    assert "differs" not in doc

    run = roomstream(settings, "explain", soft_failed.event_id, "--json")
    doc = orjson.loads(run.stdout)
    assert (doc["outcome"], doc["check"], doc["rule"]) == ("soft-failed", "current state", "5")

    run = roomstream(settings, "explain", merge.event_id, "--json")
    assert run.returncode == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert (doc["outcome"], doc["stored_outcome"]) == ("accepted", "accepted")
    before = doc["state_before"]
    assert before["from"] == "state resolution over the states after its prev events"
    (topic,) = before["resolution"]["conflicted"]
    assert topic["key"] == ["m.room.topic", ""]
    assert topic["candidates"] == sorted([left.event_id, right.event_id])
    # Same sender, same power levels: the later origin_server_ts is applied last.
    assert (topic["winner"], topic["why"]) == (right.event_id, "origin_server_ts tie-break")
    assert ["m.room.topic", "", right.event_id] in before["state"]
    run = roomstream(settings, "explain", merge.event_id)
    assert "origin_server_ts tie-break" in run.stdout, run.stdout

    run = roomstream(settings, "explain", "--room", room.room_id)
    assert run.returncode == 0, run.stderr
    assert "forward extremities: 1" in run.stdout
    assert rejected.event_id in run.stdout and soft_failed.event_id in run.stdout

    run = roomstream(settings, "explain", "$never-stored")
    assert run.returncode == 1 and "dead-letter" in run.stderr
