"""``FreedMemory``: freed memory goes back to the system after work, and an idle process is left
alone (``pipeline/malloc_trim.py``)."""

from __future__ import annotations

import sys

import pytest

from pipeline.malloc_trim import FreedMemory


def test_freed_memory_is_released_once_after_work_and_not_while_idle() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    freed = FreedMemory(trim)
    assert not freed.due and not freed.release(), "nothing was done yet"
    freed.worked()
    freed.worked()
    assert freed.due
    assert freed.release()
    assert calls == [0]
    assert not freed.due and not freed.release(), "idle since"
    assert calls == [0]


def test_without_the_c_librarys_call_nothing_is_done() -> None:
    freed = FreedMemory(None, find=False)
    freed.worked()
    assert not freed.due and not freed.release()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_s_malloc_trim_is_found_and_called() -> None:
    freed = FreedMemory()
    freed.worked()
    assert freed.due, "malloc_trim not found in this process's C library"
    assert freed.release()
