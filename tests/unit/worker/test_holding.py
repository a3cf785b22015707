"""Jobs held while the reader has a backlog (``Scheduler.take``), without a broker: a backlog's
inputs of a room go in one job; inputs that trickle in start at once; a holding ends when the
reader catches up, after ``hold_s`` or ``hold_inputs``, when the worker is full, or when a
rebalance or a stop waits."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.worker.scheduling import Job, Scheduler

from .fakes import Clock, an_input


def _scheduler(clock: Clock, *, hurry: list[bool] | None = None, **kw: int | float) -> Scheduler:
    flag = hurry if hurry is not None else [False]
    return Scheduler(clock=clock, generation=lambda: 1, hurry=lambda: flag[0], **kw)  # type: ignore[arg-type]


def _take(s: Scheduler, room: str, offset: int, *, backlog: bool) -> list[Job]:
    """What the worker does with each input: add it, then hold or end the holding."""
    return s.take(room, an_input(room, offset), backlog=backlog)


def _offsets(jobs: list[Job]) -> dict[str, list[int]]:
    return {j.room_id: [i.offset for i in j.inputs] for j in jobs}


def test_a_backlog_over_many_rooms_becomes_one_job_per_room() -> None:
    s = _scheduler(Clock())
    rooms = ["!a", "!b", "!c"]
    started: list[Job] = []
    for n in range(9):  # a, b, c, a, b, c, ...: each room's next input two inputs away
        started += _take(s, rooms[n % 3], n, backlog=n < 8)
    assert _offsets(started) == {"!a": [0, 3, 6], "!b": [1, 4, 7], "!c": [2, 5, 8]}
    assert not s.holding


def test_inputs_that_trickle_in_start_at_once() -> None:
    s = _scheduler(Clock())
    assert _offsets(_take(s, "!a", 0, backlog=False)) == {"!a": [0]}
    assert _offsets(_take(s, "!b", 1, backlog=False)) == {"!b": [1]}
    assert not s.holding


@pytest.mark.parametrize(
    ("name", "kw", "advance", "inputs_held"),
    [
        # The holding ends with the input that makes hold_inputs, backlog or not.
        ("hold_inputs", {"hold_inputs": 3}, 0.0, 2),
        # ... or with the first input taken hold_s after it began.
        ("hold_s", {"hold_s": 0.1}, 0.06, 2),
    ],
)
def test_a_holding_is_bounded(
    name: str, kw: dict[str, Any], advance: float, inputs_held: int
) -> None:
    clock = Clock()
    s = _scheduler(clock, **kw)
    for n in range(inputs_held):
        assert _take(s, f"!r{n}", n, backlog=True) == [], name
        clock.advance(advance)
    ended = _take(s, f"!r{inputs_held}", inputs_held, backlog=True)
    assert sorted(_offsets(ended)) == [f"!r{n}" for n in range(inputs_held + 1)], name
    assert not s.holding


def test_a_holding_the_reader_left_ends_at_the_tick() -> None:
    clock = Clock()
    s = _scheduler(clock, hold_s=0.1)
    assert _take(s, "!a", 0, backlog=True) == []
    clock.advance(0.05)
    assert s.hold_expired() == []  # not yet
    clock.advance(0.06)
    assert _offsets(s.hold_expired()) == {"!a": [0]}
    assert s.hold_expired() == []


def test_a_rebalance_or_a_stop_ends_a_holding_and_prevents_one() -> None:
    hurry = [False]
    s = _scheduler(Clock(), hurry=hurry)
    assert _take(s, "!a", 0, backlog=True) == []
    hurry[0] = True
    assert _offsets(s.hold_expired()) == {"!a": [0]}
    # While one waits, a backlog holds nothing: every input taken must be acked soon.
    assert _offsets(_take(s, "!b", 1, backlog=True)) == {"!b": [1]}


def test_a_room_whose_job_ends_while_holding_waits_with_its_new_inputs() -> None:
    s = _scheduler(Clock())
    (first,) = _take(s, "!a", 0, backlog=False)
    assert _take(s, "!a", 1, backlog=True) == []  # busy: queued on the room
    assert _take(s, "!a", 2, backlog=True) == []
    _, following = s.finish(first, stored=False)
    assert following is None  # held, not started
    assert _offsets(_take(s, "!b", 3, backlog=False)) == {"!a": [1, 2], "!b": [3]}


def test_slots_still_bound_the_jobs_a_holding_releases() -> None:
    s = _scheduler(Clock(), max_jobs=2)
    for n, room in enumerate(["!a", "!b", "!c"]):
        assert _take(s, room, n, backlog=True) == []
    released = s.end_hold()
    assert [j.room_id for j in released] == ["!a", "!b"]
    # The third waits for a slot, as without the holding.
    assert [j.room_id for j in s.processed(released[0])] == ["!c"]
