"""Step 2's database half on a thread of its own: built batches executed, one at a time, in order.

The committer's thread reads, decodes and builds batches (``db.writer.build_batch``: no
database touched); this thread executes each one on the committer's connection: the batch's
first statement (``db.writer.read_state``: row-locking the fence and the stream position,
checking both, and reading ahead what the batch after it is built from), its COPYs and other
statements, and its COMMIT. While it waits for PostgreSQL, the committer's thread builds the
next batch from the state read ahead, carried over the batch in flight (``Plan.after``).

So the database writes one batch while Python builds the next, and nothing is reordered: a
batch is handed over only once the one before it is committed (``Job.done``), the committer's
thread publishes its invalidation message only then, and it touches the connection only while
no batch is in flight. A batch built on state carried over a batch that then failed is thrown
away, never executed. Errors (the database's, a fence, a crash point's) are the job's, raised
on the committer's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from db.writer import Fence, Plan, Reads, execute_batch, read_state
from pipeline.committer.connection import PgConnection
from topics.chunk import CommitChunk

__all__ = ["BatchWriter", "Job"]


@dataclass(eq=False)
class Job:
    """One built batch handed to the writer, and what became of it."""

    plan: Plan
    verify: bool  # its transaction starts here: lock and check the fence and the position
    ahead: Sequence[CommitChunk]  # the next batch's chunks, whose state to read ahead
    marks_sent: bool  # the plan marks published messages sent
    ahead_reads: Reads | None = None  # the next batch's state before this batch
    error: BaseException | None = None
    read: threading.Event = field(default_factory=threading.Event)  # first statement run
    done: threading.Event = field(default_factory=threading.Event)  # committed, or failed

    def wait_ahead(self) -> Reads | None:
        """The next batch's state before this batch, once read (None when the job failed)."""
        self.read.wait()
        return self.ahead_reads if self.error is None else None

    def wait(self) -> None:
        """Return once the batch is committed; raise what made it fail."""
        self.done.wait()
        if self.error is not None:
            raise self.error


class BatchWriter(threading.Thread):
    """Executes the jobs handed to ``submit``, one at a time, on ``conn``."""

    def __init__(
        self, conn: PgConnection, fence: Fence | None, crash: Callable[[str], None]
    ) -> None:
        super().__init__(daemon=True, name="batch-writer")
        self.conn = conn
        self.fence = fence
        self.crash = crash
        self._jobs: queue.Queue[Job | None] = queue.Queue()

    def submit(
        self, plan: Plan, *, verify: bool, ahead: Sequence[CommitChunk], marks_sent: bool
    ) -> Job:
        job = Job(plan, verify, ahead, marks_sent)
        self._jobs.put(job)
        return job

    def close(self) -> None:
        """Stop once the job in hand (if any) is done."""
        self._jobs.put(None)
        self.join()

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._execute(job)
            except BaseException as exc:  # raised on the committer's thread, by Job.wait
                job.error = exc
            finally:
                job.read.set()
                job.done.set()

    def _execute(self, job: Job) -> None:
        with self.conn.cursor() as cur:
            if job.verify or job.ahead:
                expect = job.plan.position if job.verify else None
                reads = read_state(cur, self.fence, job.ahead, expect_position=expect)
                job.ahead_reads = reads if job.ahead else None
            job.read.set()
            execute_batch(cur, job.plan)
        self.crash("before_commit")
        self.conn.commit()
        if job.marks_sent:
            self.crash("after_mark_sent")
        self.crash("after_commit")
