"""Big rooms (B8): what an event costs in a room of 20,000 members against one of 50.

One room is built (``room_lines``): its creation, then ``members`` joins, then messages, then
state changes (topics, members changing their display names, power levels naming a member,
custom state). Each phase is produced as fast as the producer goes into a running pipeline and
timed from its first produce to the invalidation that announces its last event; the per-event
cost of a phase is that time over its events. A room is one partition and one worker's room
thread, so this is the cost of one room's events one after another, where its size weighs.
The small room runs the same phases with 50 members and the same number of messages and state
changes, in the same pipeline run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.bench.e2e import PipelineRun
from pipeline.bench.runs import wait_for_progress
from pipeline.dev.local import produce_timed
from pipeline.dev.workload import HOME, REMOTE, user_id
from pipeline.dev.workload_builder import RoomBuilder, default_power_levels, opaque_tag

PHASES = ("joins", "messages", "state changes")


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    events: int
    seconds: float

    @property
    def ms_per_event(self) -> float:
        return 1000 * self.seconds / self.events


def room_lines(members: int, messages: int, state_changes: int, tag: str) -> dict[str, list[bytes]]:
    """A room's PDUs by phase: "setup" (create, creator, power levels, join rule), then
    ``PHASES``."""
    b = RoomBuilder("10", tag=opaque_tag("bench-big-room", tag))
    creator = user_id(HOME, 0)
    b.create(creator)
    b.join(creator)
    b.state("m.room.power_levels", creator, default_power_levels(creator, b.rv))
    b.state("m.room.join_rules", creator, {"join_rule": "public"})
    out: dict[str, list[bytes]] = {"setup": [e.line for e in b.events]}
    users = [user_id(REMOTE if n % 2 else HOME, n + 1) for n in range(members)]
    mark = len(b.events)
    for u in users:
        b.join(u)
    out["joins"] = [e.line for e in b.events[mark:]]
    mark = len(b.events)
    for i in range(messages):
        b.message(users[(i * 7919) % members] if members else creator, f"message {i}")
    out["messages"] = [e.line for e in b.events[mark:]]
    mark = len(b.events)
    levels = default_power_levels(creator, b.rv)
    for i in range(state_changes):
        who = users[(i * 104729) % members] if members else creator
        kind = i % 4
        if kind == 0:
            b.state("m.room.topic", creator, {"topic": f"topic {i}"})
        elif kind == 1:
            b.send(
                "m.room.member",
                who,
                {"membership": "join", "displayname": f"renamed {i}"},
                state_key=who,
            )
        elif kind == 2:
            levels = {**levels, "users": {**levels.get("users", {}), who: 10 + i % 40}}
            b.state("m.room.power_levels", creator, levels)
        else:
            b.state("org.example.setting", creator, {"i": i}, state_key=f"k{i % 16}")
    out["state changes"] = [e.line for e in b.events[mark:]]
    return out


def _timed_burst(pr: PipelineRun, lines: list[bytes], timeout: float, what: str) -> float:
    target = pr.watcher.position + len(lines)
    started = time.monotonic()
    produce_timed(pr.settings, lines, [None] * len(lines))
    wait_for_progress(
        pr.settings, lambda: pr.watcher.position, target, timeout, what, cluster=pr.cluster
    )
    return (pr.watcher.last_at or time.monotonic()) - started


def measure_room(
    pr: PipelineRun, *, members: int, messages: int, state_changes: int, tag: str, timeout: float
) -> list[Phase]:
    """Each phase's time through ``pr``; every event of this room is accepted, so each one
    takes a stream ordering and the position tells when a phase is done."""
    phases = room_lines(members, messages, state_changes, tag)
    _timed_burst(pr, phases["setup"], timeout, f"the {tag} room's creation")
    out = []
    for name in PHASES:
        lines = phases[name]
        if lines:
            seconds = _timed_burst(pr, lines, timeout, f"the {tag} room's {name}")
            out.append(Phase(name, len(lines), seconds))
    return out
