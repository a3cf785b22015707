"""Missing events are asked for on ``<prefix>.missing-events``, by a real worker on the real broker.

A PDU whose prev event is unknown parks and the worker publishes a request for that event, keyed
by room; when the event is produced the parked one goes on and the request is closed as answered.
"""

from __future__ import annotations

import pytest

from pipeline.config import Settings
from tests.integration.harness import Processes, TopicReader, fold_chunks, produce, wait_for
from tests.integration.rooms import ALICE, alices_room
from topics import missing_events
from topics.definitions import Topic

pytestmark = pytest.mark.integration


def test_a_pdu_whose_prev_event_is_missing_is_asked_for_and_the_request_answered(
    settings: Settings, procs: Processes
) -> None:
    room = alices_room("gap")
    gap = room.message(ALICE, "not sent at first")
    after = room.message(ALICE, "needs the one before")
    requests = TopicReader(settings, Topic.MISSING_EVENTS)
    chunks = TopicReader(settings, Topic.CHUNKS)
    worker = procs.worker("w1")
    produce(settings, [e.line for e in room.events[:3]] + [after.line])
    wait_for(
        lambda: len(requests.messages) >= 1,
        90,
        "the request for the missing prev event",
        readers=[requests],
        processes=[worker],
    )
    (first,) = requests.messages
    assert first.key() == room.room_id.encode()
    opened = missing_events.decode(first.value())
    assert (opened.room_id, opened.missing, opened.needed_by, opened.status) == (
        room.room_id,
        (gap.event_id,),
        after.event_id,
        "open",
    )
    assert opened.first_seen_ts > 0

    produce(settings, [gap.line])
    wait_for(
        lambda: len(requests.messages) >= 2,
        60,
        "the request closed as answered",
        readers=[requests, chunks],
        processes=[worker],
    )
    closed = missing_events.decode(requests.messages[1].value())
    assert (closed.missing, closed.status, closed.first_seen_ts) == (
        opened.missing,
        "answered",
        opened.first_seen_ts,
    )
    assert closed.closed_ts is not None and closed.closed_ts >= opened.first_seen_ts
    wait_for(
        lambda: (
            after.event_id
            in fold_chunks(m.value() for m in chunks.messages)[0][room.room_id].events
        ),
        60,
        "the parked event processed",
        readers=[chunks],
        processes=[worker],
    )
    requests.poll(1)
    assert len(requests.messages) == 2, "nothing asked twice"
