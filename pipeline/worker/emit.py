"""Sending what rooms produced, storing their state, acking their inputs — in that order.

For each processed job, on the event loop:

1. Its chunks and dead letters are handed to the producer, in order, and the worker waits for
   the broker to acknowledge every one of them.
2. If the job ended with the room's state: the changelog records of that state are handed to
   the producer and the worker waits for their acknowledgement too.
3. Only then are the inputs the stored state covers acked; faust commits an offset once every
   input before it is acked.

So a crash at any point leaves every input the stored state does not cover unacked: it is read
again and processed against that state, with the same outcome.

Before each send the ownership fence is checked (``lifecycle.Lifecycle.check_owner``): a worker
that was paused long enough to lose its partitions writes nothing more.

Failures are the system's, never the input's. Handing a record to the producer is retried with a
bound (nothing after it was handed over yet, so order is kept); a delivery the producer itself
gave up on after its own retries stops the worker (``WorkerStopped``): records after it may
already be written, and sending it again would put it after them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol

from pipeline.worker.faults import WorkerStopped, retry
from pipeline.worker.processing import Processed, Work
from pipeline.worker.scheduling import Job, Scheduler

__all__ = ["Outputs", "Producer", "Sender"]


class Producer(Protocol):
    """faust's producer, as far as the sender uses it."""

    async def send(  # noqa: PLR0917  # faust's producer takes them positionally
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        /,
    ) -> Awaitable[Any]:
        """Hand a record over; the result is awaited for the broker's acknowledgement."""
        ...


class Sender:
    """Records to the producer, each send fenced; deliveries awaited with failures classified."""

    def __init__(
        self,
        producer: Callable[[], Producer],
        check_owner: Callable[[str], None],
        *,
        retry_sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._producer = producer
        self.check_owner = check_owner
        self._retry_kwargs: dict[str, Any] = {}
        if retry_sleep is not None:
            self._retry_kwargs["sleep"] = retry_sleep

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: Any = None,
    ) -> Awaitable[Any]:
        """Hand one record to the producer; the future of the broker's acknowledgement.

        Straight to the producer: a faust topic's send would wrap every record in a
        FutureMessage and run it through serialisers that raw bytes do not need."""
        self.check_owner(f"sending a record to {topic}")

        async def attempt() -> Awaitable[Any]:
            return await self._producer().send(topic, key, value, partition, None, headers)

        return await retry(
            f"handing a record to the producer for {topic}", "send", attempt, **self._retry_kwargs
        )

    async def send_all(
        self, records: Sequence[tuple[str, bytes | None, bytes, int | None]]
    ) -> list[Awaitable[Any]]:
        return [await self.send(t, k, v, p) for t, k, v, p in records]

    @staticmethod
    async def delivered(futures: Sequence[Awaitable[Any]], what: str) -> list[Any]:
        """Wait for the broker to acknowledge every record; their metadata."""
        done = []
        for fut in futures:
            try:
                done.append(await fut)
            except Exception as e:
                raise WorkerStopped(
                    "delivery",
                    f"the broker did not take {what} ({type(e).__name__}: {e}) after the "
                    "producer's own retries; the worker stops with the inputs unacked, to "
                    "process them again once it is restarted (check the brokers' health and "
                    "the topics' max.message.bytes)",
                ) from e
        return done


class _States(Protocol):
    def put(self, writes: list[tuple[bytes, bytes]], partition: int) -> None: ...
    def persisted(self, changelog: str, partition: int, offset: int) -> None: ...
    def keep(self, room_id: str, proc: Any) -> None: ...


@dataclass(eq=False, repr=False)
class Outputs:
    """Processed jobs to the broker, their state to the table, their inputs acked (steps 1-3)."""

    sender: Sender
    states: _States
    scheduler: Scheduler
    _: KW_ONLY
    owner: Callable[[str], int]
    changelog: Callable[[], str]
    submit: Callable[[Job], None]
    checked: set[str]
    # Inside it the consumer counts acks as the worker's (pipeline.worker.consumer).
    acking: Callable[[], AbstractContextManager[Any]] = nullcontext

    async def emit(self, done: Sequence[tuple[Work, Processed | Exception]]) -> None:
        """Send every job's outputs, then every due state; wait for the broker; then ack.

        Everything is handed to the producer before anything is awaited, so a batch of jobs
        costs two round trips to the broker, not two per job."""
        sent: list[tuple[Job, Processed, list[Awaitable[Any]]]] = []
        for work, out in done:
            if isinstance(out, Exception):
                raise out
            key = work.job.room_id.encode()
            futures = [await self.sender.send(t, key, v) for t, v in out.outputs]
            sent.append((work.job, out, futures))
        changelog = self.changelog()
        stores: list[tuple[Job, Processed, int, list[Awaitable[Any]]]] = []
        for job, out, futures in sent:
            await self.sender.delivered(futures, f"room {job.room_id}'s chunks and dead letters")
            if out.checked:
                self.checked.add(job.room_id)
            if out.writes is None:
                self._finished(job, out, stored=False)
                continue
            partition = self.owner(job.room_id)
            writes = [await self.sender.send(changelog, k, v, partition) for k, v in out.writes]
            stores.append((job, out, partition, writes))
        for job, out, partition, writes in stores:
            meta = await self.sender.delivered(writes, f"room {job.room_id}'s stored state")
            assert out.writes is not None
            self.states.put(out.writes, partition)
            offset = getattr(meta[-1], "offset", None) if meta else None
            if offset is not None:
                self.states.persisted(changelog, partition, int(offset))
            self._finished(job, out, stored=True)

    def _finished(self, job: Job, out: Processed, *, stored: bool) -> None:
        self.states.keep(job.room_id, out.proc)
        to_ack, following = self.scheduler.finish(job, stored=stored)
        if to_ack:
            with self.acking():
                for item in to_ack:
                    item.event.ack()
        if following is not None:
            self.submit(following)
