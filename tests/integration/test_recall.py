"""A room processor bounded to a few event index entries and state group rows, recalling the rest
from the real PostgreSQL, decides as an unbounded one.

A room's chunks are committed as the committer commits them (``db.writer.write_batch``); after
each batch the bounded processor is told the committed high-water read from PostgreSQL
(``PgHighWaters``) and drops all but a few entries, and it is saved and loaded through
``storage`` (compacted snapshots included). Then late events cite long-dropped events: a message
and a state change on old events (a fork whose merge resolves state over old groups), an
accepted event on a rejected one (its prev_events are recalled), and a repeat of an old event
(a duplicate, told by the recalled fingerprint), and a topic whose redaction came long before
it (the pending redaction was dropped and is read back from ``redactions``). Every output must
be the unbounded one's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg2
import pytest

from db.writer import write_batch
from pipeline.config import Settings
from pipeline.room import storage
from pipeline.room.batch import Incoming, ProcessorConfig
from pipeline.room.known_events import Recalled
from pipeline.room.processor import RoomProcessor
from pipeline.worker.high_water import PgHighWaters
from pipeline.worker.recall import PgRecall
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder
from tests.unit.room.test_bounded_index import _outputs

pytestmark = pytest.mark.integration

LIMIT = 8
ROWS_LIMIT = 4


class Counting:
    def __init__(self, recall: PgRecall) -> None:
        self.recall = recall
        self.asked: list[str] = []

    def __call__(self, room_id: str, event_ids: Sequence[str]) -> Mapping[str, Recalled]:
        self.asked.extend(event_ids)
        return self.recall(room_id, event_ids)


@pytest.fixture
def conn(settings: Settings) -> Iterator[Any]:
    c = psycopg2.connect(settings.database_url)
    yield c
    c.close()


def test_late_events_citing_dropped_events_are_decided_as_unbounded(
    settings: Settings, conn: Any
) -> None:
    b = RoomBuilder()
    names = b.base()
    for i in range(30):
        name = f"M{i}"
        if i == 4:
            # A topic held back until the end, redacted long before it comes.
            b.topic("held", ALICE, "held back", prev=[names[-1]])
            b.add(
                name,
                "m.room.redaction",
                ALICE,
                {},
                prev=[names[-1]],
                extra={"redacts": b.ids["held"]},
            )
        elif i == 10:
            b.topic(name, ALICE, "early topic", prev=[names[-1]])
        elif i == 12:
            b.message(name, CAROL, prev=[names[-1]])  # not a member: rejected
        else:
            b.message(name, ALICE if i % 2 else BOB, prev=[names[-1]])
        names.append(name)
    b.message("on old", BOB, prev=["M2"])
    b.topic("topic on old", BOB, "from the past", prev=["M3"])
    b.message("merge", ALICE, prev=[names[-1], "topic on old", "on old"])
    b.message("on rejected", ALICE, prev=["M12"])
    late = ["on old", "topic on old", "merge", "on rejected", "M1", "held"]

    pg = PgRecall(settings)
    recall = Counting(pg)
    group_calls: list[int] = []

    def group_recall(room_id: str, group_ids: Sequence[int]) -> Mapping[int, Any]:
        group_calls.extend(group_ids)
        return pg.groups(room_id, group_ids)

    config = ProcessorConfig(
        recall=recall,
        known_limit=LIMIT,
        redaction_recall=pg.redactions,
        group_recall=group_recall,
        group_rows_limit=ROWS_LIMIT,
    )
    committed = PgHighWaters(settings)
    bounded = RoomProcessor(b.room_id, config=config)
    unbounded = RoomProcessor(b.room_id)
    store: dict[bytes, bytes] = {}
    batches = [names[i : i + 6] for i in range(0, len(names), 6)] + [[n] for n in late]
    for batch in batches:
        inputs = [Incoming(b.raw(n), received_ts=1000) for n in batch]
        expected = unbounded.process(inputs)
        got = bounded.process(inputs)
        assert _outputs(got) == _outputs(expected), f"{batch} decided differently"
        with conn.cursor() as cur:
            write_batch(cur, got.chunks, {})
        conn.commit()
        mark = committed(b.room_id)
        assert mark == bounded.event_seq
        bounded.release_committed(mark)
        assert len(bounded._known) <= LIMIT
        assert bounded.group_rows[0] <= ROWS_LIMIT
        store.update(storage.save(bounded, store.get(storage.record_key(b.room_id))))
        bounded = storage.load(store[storage.record_key(b.room_id)], store.get, config=config)

    assert bounded.dropped_events >= len(names) - LIMIT
    for old in ("M2", "M3", "M12", "M1"):
        assert b.ids[old] in recall.asked
    assert group_calls  # the states of old groups were built from recalled rows
    # The held-back topic's redaction was dropped with its entry, and read back when it came.
    held = bounded.get_event(b.ids["held"])
    assert held is not None and held.content == {} and bounded._known._pending_dropped == 1
    assert dict(bounded.current_state) == dict(unbounded.current_state)
    assert bounded.forward_extremities == unbounded.forward_extremities
    # The recalled entries are the ones the unbounded index holds.
    for name in names:
        eid = b.ids[name]
        ours, theirs = bounded._known[eid], unbounded._known[eid]
        assert ours._replace(prevs=ours.prevs or None) == theirs._replace(
            prevs=theirs.prevs or None
        )
        sg = theirs.state_group
        assert dict(bounded.state_of_group(sg)) == dict(unbounded.state_of_group(sg))
