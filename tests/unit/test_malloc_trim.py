"""``FreedMemory``: freed memory goes back to the system once work has stopped for a while, once
per stretch of work; never under a steady load, and an idle process is left alone
(``pipeline/malloc_trim.py``)."""

from __future__ import annotations

import sys

import pytest

from pipeline.malloc_trim import FreedMemory


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _freed(calls: list[int], clock: _Clock) -> FreedMemory:
    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    return FreedMemory(trim, quiet_s=2.0, clock=clock)


def test_freed_memory_is_released_once_work_has_stopped_for_the_quiet_time() -> None:
    calls: list[int] = []
    clock = _Clock()
    freed = _freed(calls, clock)
    assert not freed.release(), "nothing was done yet"
    freed.worked()
    clock.now += 1.9
    assert not freed.due and not freed.release(), "not quiet long enough"
    clock.now += 0.1
    assert freed.due and freed.release()
    assert calls == [0]
    clock.now += 60
    assert not freed.due and not freed.release(), "idle since: nothing new was freed"
    assert calls == [0]


def test_nothing_is_released_under_a_steady_load() -> None:
    calls: list[int] = []
    clock = _Clock()
    freed = _freed(calls, clock)
    for _ in range(100):
        freed.worked()
        clock.now += 0.5
        freed.release()
    assert calls == []


def test_without_the_c_librarys_call_nothing_is_done() -> None:
    clock = _Clock()
    freed = FreedMemory(None, clock=clock)
    freed.worked()
    clock.now += 10
    assert not freed.due and not freed.release()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_s_malloc_trim_is_found_and_called() -> None:
    clock = _Clock()
    freed = FreedMemory.of_this_process(clock=clock)
    freed.worked()
    clock.now += 10
    assert freed.due, "malloc_trim not found in this process's C library"
    assert freed.release()
