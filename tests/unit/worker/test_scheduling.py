"""Per-room scheduling without a broker: one job per room at a time, waiting inputs batched,
state stored on a schedule, inputs acked only once a stored state covers them, inputs of a
revoked generation dropped unacked."""

from __future__ import annotations

from pipeline.worker.scheduling import Scheduler

from .fakes import Clock, an_input


def _scheduler(clock: Clock, **kw: int | float) -> Scheduler:
    return Scheduler(clock=clock, generation=lambda: 1, hurry=lambda: False, **kw)  # type: ignore[arg-type]


def test_inputs_waiting_while_a_room_is_busy_become_its_next_job_together() -> None:
    s = _scheduler(Clock())
    first = s.add("!a", an_input("!a", 0))
    assert first is not None and [i.offset for i in first.inputs] == [0]
    for off in (1, 2, 3):
        assert s.add("!a", an_input("!a", off)) is None
    other = s.add("!b", an_input("!b", 4))
    assert other is not None and other.room_id == "!b"
    _, following = s.finish(first, stored=False)
    assert following is not None and [i.offset for i in following.inputs] == [1, 2, 3]


def test_a_job_takes_at_most_max_batch_inputs() -> None:
    s = _scheduler(Clock(), max_batch=2)
    first = s.add("!a", an_input("!a", 0))
    assert first is not None
    for off in (1, 2, 3):
        s.add("!a", an_input("!a", off))
    _, following = s.finish(first, stored=False)
    assert following is not None and [i.offset for i in following.inputs] == [1, 2]


def test_inputs_are_acked_only_by_the_job_that_stores_the_state_covering_them() -> None:
    clock = Clock()
    s = _scheduler(clock, store_interval_s=0.5)
    job = s.add("!a", an_input("!a", 0))
    assert job is not None and not job.store
    to_ack, _ = s.finish(job, stored=False)
    assert to_ack == []
    job2 = s.add("!a", an_input("!a", 1))
    assert job2 is not None and not job2.store  # the first unstored input is not due yet
    s.finish(job2, stored=False)
    clock.advance(0.6)
    job3 = s.add("!a", an_input("!a", 2))
    assert job3 is not None and job3.store  # due: the job ends with the room's state
    to_ack, _ = s.finish(job3, stored=True)
    assert [i.offset for i in to_ack] == [0, 1, 2]
    assert not s.holds("!a")


def test_an_idle_room_due_a_store_gets_a_store_only_job() -> None:
    clock = Clock()
    s = _scheduler(clock, store_interval_s=0.5)
    job = s.add("!a", an_input("!a", 0))
    assert job is not None
    s.finish(job, stored=False)
    assert s.due() == []
    clock.advance(0.5)
    (store,) = s.due()
    assert store.room_id == "!a" and store.store and store.inputs == []
    assert s.due() == []  # the room is busy with it
    to_ack, following = s.finish(store, stored=True)
    assert [i.offset for i in to_ack] == [0] and following is None


def test_max_unstored_inputs_force_a_store() -> None:
    s = _scheduler(Clock(), max_unstored=3, max_batch=1)
    job = s.add("!a", an_input("!a", 0))
    for off in (1, 2):
        s.add("!a", an_input("!a", off))
    stores = []
    while job is not None:
        stores.append(job.store)
        _, job = s.finish(job, stored=job.store)
    assert stores == [False, False, True]


def test_a_rebalance_or_stop_stores_at_once() -> None:
    s = Scheduler(clock=Clock(), generation=lambda: 1, hurry=lambda: True)
    job = s.add("!a", an_input("!a", 0))
    assert job is not None and job.store


def test_inputs_of_a_revoked_generation_are_dropped_unacked() -> None:
    generation = [1]
    s = Scheduler(clock=Clock(), generation=lambda: generation[0], hurry=lambda: False)
    job = s.add("!a", an_input("!a", 0))
    old = an_input("!a", 1)
    s.add("!a", old)
    generation[0] = 2
    s.add("!a", an_input("!a", 2, generation=2))
    assert job is not None
    _, following = s.finish(job, stored=False)
    assert following is not None and [i.offset for i in following.inputs] == [2]
    assert following.taken == 2  # the dropped input no longer counts as held
    assert not old.event.acked  # type: ignore[attr-defined]


def test_revocation_drops_unstored_inputs_unacked() -> None:
    s = _scheduler(Clock())
    job = s.add("!a", an_input("!a", 0))
    assert job is not None
    s.finish(job, stored=False)
    assert s.has_unstored("!a")
    s.revoked()
    assert not s.has_unstored("!a") and not s.holds("!a")
    assert not job.inputs[0].event.acked  # type: ignore[attr-defined]


def test_the_reader_waits_when_full_until_half_is_done() -> None:
    s = _scheduler(Clock(), max_in_flight=4, max_batch=1)
    jobs = [s.add(f"!r{i}", an_input(f"!r{i}", i)) for i in range(4)]
    assert s.full
    s.finish(jobs[0], stored=True)  # type: ignore[arg-type]
    assert not s.full and not s.has_capacity
    s.finish(jobs[1], stored=True)  # type: ignore[arg-type]
    assert not s.has_capacity  # half held
    s.finish(jobs[2], stored=True)  # type: ignore[arg-type]
    assert s.has_capacity


def test_a_claimed_room_queues_inputs_until_released() -> None:
    s = _scheduler(Clock())
    assert s.claim("!a")
    assert s.add("!a", an_input("!a", 0)) is None
    assert not s.claim("!a")
    job = s.release("!a")
    assert job is not None and [i.offset for i in job.inputs] == [0]


def test_rooms_wait_for_a_free_job_slot_and_take_every_input_that_came_meanwhile() -> None:
    s = _scheduler(Clock(), max_jobs=2)
    a = s.add("!a", an_input("!a", 0))
    b = s.add("!b", an_input("!b", 1))
    assert a is not None and b is not None
    # Both slots are taken: !c's inputs wait together, in line.
    for off in (2, 3, 4):
        assert s.add("!c", an_input("!c", off)) is None
    assert s.add("!d", an_input("!d", 5)) is None
    (c,) = s.processed(a)
    assert c.room_id == "!c" and [i.offset for i in c.inputs] == [2, 3, 4]
    assert s.processed(c) != []  # !d next, once a slot is free
    # A room finished while every slot is taken waits in line too, not over the limit.
    assert s.add("!a", an_input("!a", 6)) is None  # !a is busy until finished
    _, following = s.finish(a, stored=False)
    assert following is None and "!a" in s.ready
    (again,) = s.processed(b)
    assert again.room_id == "!a" and [i.offset for i in again.inputs] == [6]


def test_the_reader_waits_while_parking_is_full_and_reads_again_once_it_is_not() -> None:
    parked = [True]
    s = Scheduler(
        clock=Clock(),
        generation=lambda: 1,
        hurry=lambda: False,
        parking_full=lambda: parked[0],
    )
    job = s.add("!a", an_input("!a", 0))
    assert s.full and not s.has_capacity  # one input held, yet parking is at its bound
    assert job is not None  # the input itself is processed: no room's decision changes
    parked[0] = False
    assert not s.full and s.has_capacity
