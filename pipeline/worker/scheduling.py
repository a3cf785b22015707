"""Per-room scheduling: which of a room's inputs go into its next job, when its state is stored,
when its inputs are acked, and how many inputs the worker holds. No broker, no faust, no
threads: the clock and the consumer's state are passed in, so it is tested on its own.

* Inputs queue on their room in arrival order. A room has at most one job under way; when it has
  none, its queued inputs (up to ``max_batch``) become its next job. Inputs of a partition
  revoked since they were read (an older consumer generation) are dropped unacked: their
  partition's new owner reads them again.
* A job says whether it ends with the room's state stored (``store``): when the room's first
  input not covered by the stored state is ``store_interval_s`` old, when ``max_unstored``
  inputs wait for a store, or when a rebalance or a stop waits (``hurry``). So a busy room is
  stored a few times a second, not per input, and a crash makes it process at most
  ``max_unstored`` inputs again. ``due`` gives a store-only job to each idle room due a store.
* A job's inputs are acked once the room's state that covers them is stored (``finish``
  returns them), never before: until then a crash delivers them again.
* ``full`` says the worker holds ``max_in_flight`` inputs queued or in jobs, or that its rooms
  hold as many parked events as it may (``parking_full``); the reader waits until
  ``has_capacity`` (half of the inputs, and parking below its bound) before it reads more. A
  full parking pauses intake rather than refusing an input: which inputs a room refuses must
  not depend on other rooms, or a replay of the room alone would decide otherwise. Parked
  events leave when what they wait for arrives or when they expire, so intake resumes.
* At most ``max_jobs`` jobs are being processed or waiting for a processing thread. A room that
  has inputs when every slot is taken waits in line (``ready``), its inputs accumulating, and
  gets a job when a slot frees (``processed``). So a burst of inputs over many rooms becomes a
  few jobs of many inputs each (one chunk, one send, one store each), not a job per input;
  when inputs trickle in, slots are free and an input is processed at once.
* While the reader has a backlog (its partition holds more inputs after the one just taken),
  new jobs are held (``take``): a room that gets inputs waits in line as it does for a slot, for
  at most ``hold_s`` or ``hold_inputs`` inputs, and the holding ends as soon as the reader has
  caught up, the worker is full, or a rebalance or a stop waits. So a backlog over many rooms,
  where a room's next input is hundreds of inputs away, is taken in before its rooms start, and
  each room's inputs go in one job (one chunk, one send, one store) instead of one job each.
  Inputs that trickle in find no backlog and start at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from topics.pdu_input import PduInput

__all__ = ["Input", "Job", "Scheduler"]

MAX_IN_FLIGHT = 5000
MAX_BATCH = 200
STORE_INTERVAL_S = 0.5
MAX_UNSTORED = 500
HOLD_S = 0.1
HOLD_INPUTS = 5000


class Ackable(Protocol):
    def ack(self) -> Any: ...


@dataclass(slots=True)
class Input:
    """An input taken off the topic: what to ack, what the routing parse read, where it was."""

    event: Ackable
    pdu: PduInput
    partition: int
    offset: int
    timestamp_ms: int | None  # the record's timestamp
    generation: int  # the consumer generation it was read in
    headers: Any = None


@dataclass(slots=True)
class Job:
    """One trip of a room to a processing thread."""

    room_id: str
    inputs: list[Input]  # of the current generation, in arrival order
    taken: int  # inputs taken off the room's queue, those of a revoked generation included
    store: bool  # end with the room's state, to be stored


@dataclass(slots=True)
class _Room:
    pending: deque[Input] = field(default_factory=deque)
    busy: bool = False
    # Inputs whose outputs the broker acknowledged and whose state is not stored yet.
    unstored: list[Input] = field(default_factory=list)


@dataclass(eq=False, repr=False, kw_only=True)
class Scheduler:
    clock: Callable[[], float]
    generation: Callable[[], int]
    hurry: Callable[[], bool]
    max_batch: int = MAX_BATCH
    store_interval_s: float = STORE_INTERVAL_S
    max_unstored: int = MAX_UNSTORED
    max_in_flight: int = MAX_IN_FLIGHT
    max_jobs: int | None = None
    hold_s: float = HOLD_S
    hold_inputs: int = HOLD_INPUTS
    parking_full: Callable[[], bool] = lambda: False
    rooms: dict[str, _Room] = field(init=False, default_factory=dict)
    # Rooms with unstored inputs, and since when; oldest first.
    unstored_since: dict[str, float] = field(init=False, default_factory=dict)
    in_flight: int = field(init=False, default=0)
    # Jobs handed out whose processing has not ended; idle rooms with inputs waiting for
    # a slot, in the order they started waiting.
    jobs: int = field(init=False, default=0)
    ready: dict[str, None] = field(init=False, default_factory=dict)
    holding: bool = field(init=False, default=False)
    _held_since: float = field(init=False, default=0.0)
    _held: int = field(init=False, default=0)

    # ------------------------------------------------------------------ inputs

    def add(self, room_id: str, item: Input) -> Job | None:
        """Queue ``item`` on its room; the room's next job if it was idle."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room()
        room.pending.append(item)
        self.in_flight += 1
        if room.busy:
            return None
        if self._waits():
            self.ready[room_id] = None
            return None
        return self._next(room_id, room)

    def _slots_taken(self) -> bool:
        return self.max_jobs is not None and self.jobs >= self.max_jobs

    def _waits(self) -> bool:
        return self.holding or self._slots_taken()

    def processed(self, job: Job) -> list[Job]:
        """``job`` was processed (its outputs are not sent yet): its slot is free again. The
        jobs of the rooms that waited for slots."""
        self.jobs -= 1
        return self.start_ready()

    def start_ready(self) -> list[Job]:
        """The jobs of the rooms waiting in line, as far as slots allow (none while holding)."""
        jobs: list[Job] = []
        while self.ready and not self._waits():
            room_id = next(iter(self.ready))
            del self.ready[room_id]
            room = self.rooms.get(room_id)
            if room is None or room.busy:
                continue  # gone with a revocation, or in a job that takes its inputs after
            following = self._next(room_id, room)
            if following is not None:
                jobs.append(following)
        return jobs

    def take(self, room_id: str, item: Input, *, backlog: bool) -> list[Job]:
        """Queue ``item`` on its room, the reader having (``backlog``) or not more inputs at
        hand after it: the jobs to start now (none while holding)."""
        jobs = self._hold() if backlog else []
        job = self.add(room_id, item)
        if job is not None:
            jobs.append(job)
        if not backlog:
            jobs += self.end_hold()
        return jobs

    def _hold(self) -> list[Job]:
        if self.hurry():
            return self.end_hold()
        now = self.clock()
        if not self.holding:
            self.holding, self._held_since, self._held = True, now, 0
        self._held += 1
        if self._held >= self.hold_inputs or now - self._held_since >= self.hold_s:
            return self.end_hold()
        return []

    def hold_expired(self) -> list[Job]:
        """End a holding that outlived ``hold_s`` (the reader stopped taking inputs) or that a
        rebalance or a stop waits for; the jobs of the rooms that waited."""
        if self.holding and (self.hurry() or self.clock() - self._held_since >= self.hold_s):
            return self.end_hold()
        return []

    def end_hold(self) -> list[Job]:
        """End the holding, if any: the jobs of the rooms that waited."""
        if not self.holding:
            return []
        self.holding = False
        return self.start_ready()

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight or self.parking_full()

    @property
    def has_capacity(self) -> bool:
        return self.in_flight < self.max_in_flight // 2 and not self.parking_full()

    def holds(self, room_id: str) -> bool:
        """Whether the room has inputs queued, a job under way or inputs not stored yet."""
        return room_id in self.rooms

    def has_unstored(self, room_id: str) -> bool:
        return room_id in self.unstored_since

    # ------------------------------------------------------------------ jobs

    def _next(self, room_id: str, room: _Room) -> Job | None:
        while room.pending:
            taken = min(len(room.pending), self.max_batch)
            batch = [room.pending.popleft() for _ in range(taken)]
            generation = self.generation()
            current = [i for i in batch if i.generation == generation]
            if not current:
                self.in_flight -= taken
                continue
            room.busy = True
            self.jobs += 1
            unstored = len(room.unstored) + len(current)
            return Job(room_id, current, taken, self._store_due(room_id, unstored))
        if room_id not in self.unstored_since:
            del self.rooms[room_id]
        return None

    def _store_due(self, room_id: str, unstored: int) -> bool:
        if self.hurry() or unstored >= self.max_unstored:
            return True
        since = self.unstored_since.get(room_id)
        return since is not None and self.clock() - since >= self.store_interval_s

    def finish(self, job: Job, *, stored: bool) -> tuple[list[Input], Job | None]:
        """The job's outputs are acknowledged, and its state stored if ``stored``: the inputs
        to ack now, and the room's next job."""
        room = self.rooms[job.room_id]
        room.unstored += job.inputs
        to_ack: list[Input] = []
        if stored:
            to_ack, room.unstored = room.unstored, []
            self.unstored_since.pop(job.room_id, None)
        elif room.unstored:
            self.unstored_since.setdefault(job.room_id, self.clock())
        self.in_flight -= job.taken
        room.busy = False
        if room.pending and self._waits():
            self.ready[job.room_id] = None
            return to_ack, None
        return to_ack, self._next(job.room_id, room)

    def due(self) -> list[Job]:
        """A store-only job for each idle room whose state is due to be stored."""
        urgent = self.hurry()
        due_before = self.clock() - self.store_interval_s
        jobs = []
        for room_id, since in self.unstored_since.items():
            if since > due_before and not urgent:
                break  # oldest first: the rest are younger
            room = self.rooms[room_id]
            if not room.busy:  # a room in a job is stored when the job ends, or next time
                room.busy = True
                self.jobs += 1  # over ``max_jobs`` if need be: a store acks inputs
                jobs.append(Job(room_id, [], 0, store=True))
        return jobs

    def claim(self, room_id: str) -> bool:
        """Mark an idle room busy for work of the worker's own (expiring parked events);
        False when the room is held (queued inputs, a job, or unstored inputs)."""
        if room_id in self.rooms:
            return False
        self.rooms[room_id] = _Room(busy=True)
        return True

    def release(self, room_id: str) -> Job | None:
        """End a ``claim``: the room's next job, if inputs arrived meanwhile."""
        room = self.rooms[room_id]
        room.busy = False
        if room.pending and self._waits():
            self.ready[room_id] = None
            return None
        return self._next(room_id, room)

    def revoked(self) -> None:
        """Partitions were revoked: inputs not stored are dropped unacked (their new owner
        processes them again from the stored state), never stored later from a processor
        rebuilt without them."""
        for room_id in self.unstored_since:
            room = self.rooms[room_id]
            room.unstored = []
            if not room.busy and not room.pending:
                del self.rooms[room_id]
        self.unstored_since.clear()
