"""JobThreads: every job's outcome reaches the loop once, a slow job does not hold up the others,
and finished jobs come back in batches."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pipeline.worker.room_threads import JobThreads


def _run(jobs: list[int], work: object, threads: int) -> list[list[tuple[int, object]]]:
    """Submit ``jobs``; return the batches delivered on the loop until every job is back."""

    async def main() -> list[list[tuple[int, object]]]:
        loop = asyncio.get_running_loop()
        batches: list[list[tuple[int, object]]] = []
        everything = asyncio.Event()

        def deliver(done: list[tuple[int, object]]) -> None:
            assert threading.current_thread() is threading.main_thread()
            batches.append(done)
            if sum(len(b) for b in batches) == len(jobs):
                everything.set()

        pool: JobThreads[int, object] = JobThreads(
            loop,
            work,  # type: ignore[arg-type]
            deliver,
            threads=threads,
            name="t",
        )
        for j in jobs:
            pool.submit(j)
        await asyncio.wait_for(everything.wait(), 30)
        pool.close()
        return batches

    return asyncio.run(main())


@pytest.mark.parametrize("threads", [1, 3])
def test_every_job_comes_back_once_with_its_result_or_exception(threads: int) -> None:
    def work(j: int) -> int:
        if j % 7 == 0:
            raise ValueError(f"job {j}")
        return j * 2

    batches = _run(list(range(50)), work, threads)
    outcomes = dict(o for b in batches for o in b)
    assert sorted(outcomes) == list(range(50))
    assert sum(len(b) for b in batches) == 50
    for j, out in outcomes.items():
        if j % 7 == 0:
            assert isinstance(out, ValueError) and str(out) == f"job {j}"
        else:
            assert out == j * 2


def test_a_slow_job_does_not_hold_up_jobs_submitted_after_it() -> None:
    release = threading.Event()

    def work(j: int) -> int:
        if j == 0:
            # Held until every other job has come back; a pool that queued behind it would
            # never get there and the run would time out.
            release.wait(20)
        return j

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        order: list[int] = []
        finished = asyncio.Event()

        def deliver(done: list[tuple[int, object]]) -> None:
            order.extend(j for j, _ in done)
            if len(order) == 9:
                release.set()
            if len(order) == 10:
                finished.set()

        pool: JobThreads[int, object] = JobThreads(loop, work, deliver, threads=2, name="s")
        for j in range(10):
            pool.submit(j)
        await asyncio.wait_for(finished.wait(), 30)
        pool.close()
        return order

    order = asyncio.run(main())
    assert order[-1] == 0
    assert sorted(order) == list(range(10))


def test_results_finished_while_the_loop_is_busy_come_back_in_one_batch() -> None:
    def work(j: int) -> int:
        return j

    async def main() -> list[list[tuple[int, object]]]:
        loop = asyncio.get_running_loop()
        batches: list[list[tuple[int, object]]] = []
        finished = asyncio.Event()

        def deliver(done: list[tuple[int, object]]) -> None:
            batches.append(done)
            if sum(len(b) for b in batches) == 20:
                finished.set()

        pool: JobThreads[int, object] = JobThreads(loop, work, deliver, threads=2, name="b")
        for j in range(20):
            pool.submit(j)
        # The loop is held (a blocking wait, on purpose) until every job has finished, so only
        # the first result's wakeup is queued.
        while True:
            with pool._lock:
                if len(pool._done) == 20:
                    break
            time.sleep(0.005)
        await asyncio.wait_for(finished.wait(), 30)
        pool.close()
        return batches

    batches = asyncio.run(main())
    assert len(batches) == 1
    assert sorted(j for j, _ in batches[0]) == list(range(20))


def test_no_threads_is_refused() -> None:
    async def main() -> None:
        JobThreads(asyncio.get_running_loop(), abs, print, threads=0, name="z")

    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(main())
