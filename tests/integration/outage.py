"""A workload streamed through one worker and one committer across an outage, and invariant 3
checked afterwards: every valid event stored once, in a stream order without gaps, every change
announced in one chain of positions, and each room's state the offline replay's.

A test starts the stream (the first half produced and partly stored), makes its outage, produces
the rest and waits for the last announcement; what the outage is stays the test's own.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import TracebackType

import orjson
import psycopg2

from pipeline import pg
from pipeline.config import Settings
from pipeline.dev.workload import generate_workload
from pipeline.room.replay import replay
from tests.integration.harness import Process, Processes, TopicReader, produce, wait_for
from topics.definitions import Topic


def stored_events(settings: Settings) -> int:
    """How many events the database holds; -1 while it cannot be reached (restarting)."""
    try:
        with pg.connect(settings) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    except psycopg2.OperationalError:
        return -1


class OutageStream:
    """A generated workload (30 rooms of 30 events from ``seed``) through a worker and a
    committer of their own. Entering the ``with`` block starts them, produces the first half of
    the workload and waits (up to ``first_part_s``) until a quarter of that is stored; leaving
    it stops them."""

    worker: Process
    committer: Process

    def __init__(self, settings: Settings, logdir: Path, *, seed: int, first_part_s: float) -> None:
        workload = generate_workload(30, 30, seed=seed)
        self.settings = settings
        self.lines = list(workload.lines)
        self.half = len(self.lines) // 2
        self.expected = replay(self.lines)
        self.n_valid = workload.event_count
        self.procs = Processes(settings, logdir)
        self.first_part_s = first_part_s

    def __enter__(self) -> OutageStream:
        self.worker = self.procs.worker("w1")
        self.committer = self.procs.start("committer", name="committer")
        produce(self.settings, self.lines[: self.half])
        wait_for(
            lambda: stored_events(self.settings) > self.half // 4,
            self.first_part_s,
            "a first part stored",
            processes=[self.worker, self.committer],
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.procs.stop_all()

    def produce_rest(self) -> None:
        produce(self.settings, self.lines[self.half :])

    def finish(self, timeout: float) -> TopicReader:
        """Wait until every valid event is stored and the last one announced; the reader of the
        invalidations, holding every message."""
        wait_for(
            lambda: stored_events(self.settings) >= self.n_valid,
            timeout,
            f"{self.n_valid} events stored",
            processes=[self.worker, self.committer],
        )
        invalidations = TopicReader(self.settings, Topic.INVALIDATIONS)
        wait_for(
            lambda: (
                bool(invalidations.messages)
                and orjson.loads(invalidations.messages[-1].value())["position"] >= self.n_valid
            ),
            120,
            "the last invalidation",
            readers=[invalidations],
            processes=[self.committer],
        )
        return invalidations

    def assert_nothing_lost_or_doubled(self, invalidations: TopicReader) -> None:
        n_valid = self.n_valid
        with pg.connect(self.settings) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT min(stream_ordering), max(stream_ordering), count(*),"
                " count(DISTINCT event_id) FROM events"
            )
            assert cur.fetchone() == (1, n_valid, n_valid, n_valid)
            for room_id, want in self.expected["rooms"].items():
                cur.execute(
                    "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = %s",
                    (room_id,),
                )
                assert sorted([t, k, e] for t, k, e in cur.fetchall()) == want["current_state"]
                cur.execute(
                    "SELECT event_id FROM event_forward_extremities WHERE room_id = %s", (room_id,)
                )
                assert sorted(r[0] for r in cur.fetchall()) == want["forward_extremities"]
        messages = [orjson.loads(m.value()) for m in invalidations.messages]
        # A re-sent outbox row carries the same position; without them the chain holds.
        unique = {m["position"]: m for m in messages}
        chain = [unique[p] for p in sorted(unique)]
        assert all(b["prev_position"] == a["position"] for a, b in itertools.pairwise(chain))
        assert chain[-1]["position"] == n_valid
