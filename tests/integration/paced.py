"""A steady stream of chat rooms' events produced one at a time in a thread, for the tests that
kill workers under load (``pipeline.dev.local.produce_paced`` does the producing), and what each
room saw of a kill."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.config import Settings
from pipeline.dev.local import PacedClock, produce_paced
from pipeline.dev.workload_builder import RoomBuilder
from tests.integration.rooms import CHAT_ROOM_SETUP, chat_room


@dataclass
class Paced:
    """Events produced one at a time at ``rate``, each stamped with its ``received_ts``; when
    each was produced, by ``clock`` (s; see ``produce_paced``)."""

    settings: Settings
    events: list[tuple[str, bytes]]  # (event_id, line)
    rate: float
    clock: PacedClock = "monotonic"
    produced: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        produce_paced(
            self.settings,
            self.events,
            self.rate,
            clock=self.clock,
            received_ts=True,
            sent=self.produced,
        )

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="paced", daemon=True)
        thread.start()
        return thread


def chat_rooms(tag: str, rooms: int, rate: float, seconds: float) -> list[RoomBuilder]:
    """``rooms`` chat rooms with messages enough for a stream of ``seconds`` at ``rate``."""
    messages = int(rate * seconds / rooms) + 1
    return [chat_room(f"{tag}{i}", messages=messages) for i in range(rooms)]


def setup_lines(rooms: list[RoomBuilder]) -> list[bytes]:
    """The chat rooms' founding events, room after room."""
    return [e.line for r in rooms for e in r.events[:CHAT_ROOM_SETUP]]


def round_robin(rooms: list[RoomBuilder]) -> list[tuple[str, bytes]]:
    """The chat rooms' events after their founding ones, one room after another in turn, each
    room's order kept: (event_id, line)."""
    return [
        (r.events[k].event_id, r.events[k].line)
        for k in range(CHAT_ROOM_SETUP, len(rooms[0].events))
        for r in rooms
    ]


@dataclass
class AroundKill:
    """What the rooms saw of a worker's kill, by the times their events arrived (announced, or
    first in a chunk): ``back``, each killed room's first arrival of an event produced after the
    kill; ``waits``, each other room's longest latency of an event produced from a second
    before the kill on; ``before``, the other rooms' latencies of events produced before it."""

    back: dict[str, float] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)
    before: list[float] = field(default_factory=list)

    def check(self, since: float, recovery_bound: float, pause_bound: float) -> None:
        """Print the figures; assert that every killed room was back within ``recovery_bound``
        seconds of ``since`` and that no other room waited more than ``pause_bound``."""
        assert self.back and self.waits, "both workers should own rooms"
        recovery = sorted(at - since for at in self.back.values())
        waits = sorted(self.waits.values())
        before = f", {max(self.before) * 1000:.0f} ms before it" if self.before else ""
        print(
            f"\nthe killed worker's {len(recovery)} rooms processing again {recovery[-1]:.2f} s "
            f"at worst ({recovery[0]:.2f} s at best); the other worker's {len(waits)} rooms: "
            f"longest wait {waits[-1] * 1000:.0f} ms after the kill{before}"
        )
        assert recovery[-1] <= recovery_bound, f"recovery times (s): {recovery}"
        assert waits[-1] <= pause_bound, f"longest waits (s): {waits}"


def around_kill(
    rooms: list[RoomBuilder],
    produced: Mapping[str, float],
    arrived: Mapping[str, float],
    killed_at: float,
    killed: set[str],
) -> AroundKill:
    """The figures of ``AroundKill``; ``killed``: the room IDs of the killed worker's rooms.
    ``produced``, ``arrived`` and ``killed_at`` are read off one clock."""
    out = AroundKill()
    for room in rooms:
        ids = [e.event_id for e in room.events[CHAT_ROOM_SETUP:]]
        if room.room_id in killed:
            out.back[room.room_id] = min(arrived[e] for e in ids if produced[e] >= killed_at)
        else:
            window = [e for e in ids if produced[e] >= killed_at - 1]
            out.waits[room.room_id] = max(arrived[e] - produced[e] for e in window)
            out.before += [arrived[e] - produced[e] for e in ids if produced[e] < killed_at]
    return out
