"""Big rooms (B8): what an event costs in a room of 20,000 members against one of 50.

One room is built (``room_lines``): its creation, then ``members`` joins, then messages, then
state changes (topics, members changing their display names, power levels naming a member,
custom state).

- Joins are produced as fast as the producer goes; each join's announcement time tells when the
  room's thread got through it, so the cost of a join at a given room size is the time between
  announcements over a slice of joins: the first slice (the room under ``slice`` members)
  against the last (the room at its full size). Pipeline latency falls out, as it is the same
  for every join of the burst.
- Messages and state changes are produced one at a time, each once the one before it was
  announced (one room's events one after another, as its clients send them), and the latency of
  each is its cost in that room. The small room gets the same messages and state changes.

A room is one partition and one worker's room thread, so this is where a room's size weighs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.bench.e2e import PipelineRun
from pipeline.bench.runs import wait_for_progress
from pipeline.dev.local import event_ids_of, percentile, produce_timed
from pipeline.dev.workload import HOME, REMOTE, user_id
from pipeline.dev.workload_builder import RoomBuilder, default_power_levels, opaque_tag
from pipeline.errors import RoomstreamError
from pipeline.ops.produce import make_producer
from topics import pdu_input
from topics.definitions import Topic

ONE_AT_A_TIME = ("messages", "state changes")


@dataclass(frozen=True, slots=True)
class JoinCost:
    """ms per join over the first and the last ``slice`` joins of a burst."""

    members: int
    slice: int
    first_ms: float
    last_ms: float
    seconds: float  # the whole burst, first produce to last announcement


@dataclass(frozen=True, slots=True)
class OneByOne:
    """Latencies of a phase's events, each produced once the previous one was announced."""

    name: str
    events: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def room_lines(members: int, messages: int, state_changes: int, tag: str) -> dict[str, list[bytes]]:
    """A room's PDUs by phase: "setup" (create, creator, power levels, join rule), "joins",
    then ``ONE_AT_A_TIME``."""
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


def _burst(pr: PipelineRun, lines: list[bytes], timeout: float, what: str) -> float:
    target = pr.watcher.position + len(lines)
    started = time.monotonic()
    produce_timed(pr.settings, lines, [None] * len(lines))
    wait_for_progress(
        pr.settings, lambda: pr.watcher.position, target, timeout, what, cluster=pr.cluster
    )
    return (pr.watcher.last_at or time.monotonic()) - started


def _one_by_one(
    pr: PipelineRun, name: str, lines: list[bytes], version: str, timeout: float
) -> OneByOne:
    ids = event_ids_of(lines, version)
    announced = pr.watcher.announced
    # One producer for the phase, linger 0, as a front end sending one event at a time.
    producer = make_producer(pr.settings, **{"linger.ms": 0})
    topic = pr.settings.topic(Topic.PDUS)
    latencies = []
    try:
        for line, eid in zip(lines, ids, strict=True):
            assert eid is not None
            record = pdu_input.encode(line)
            producer.produce(topic, value=record.value, key=record.key)
            sent = time.monotonic()
            deadline = sent + timeout
            while eid not in announced:
                producer.poll(0.001)
                if time.monotonic() > deadline:
                    raise RoomstreamError(f"{name}: {eid} was not announced within {timeout} s")
            latencies.append((announced[eid] - sent) * 1000)
    finally:
        producer.flush(10)
    return OneByOne(
        name,
        len(latencies),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        max(latencies, default=float("nan")),
    )


def measure_room(
    pr: PipelineRun,
    *,
    members: int,
    messages: int,
    state_changes: int,
    tag: str,
    timeout: float,
    version: str = "10",
    join_slice: int = 1000,
) -> tuple[JoinCost, list[OneByOne]]:
    """The room's joins in three bursts (cost per join of the first slice against the last) and its
    messages and state changes one at a time. Every event of the room is accepted, so each
    takes a stream ordering and the position tells when a burst is done."""
    phases = room_lines(members, messages, state_changes, tag)
    _burst(pr, phases["setup"], timeout, f"the {tag} room's creation")
    joins = phases["joins"]
    # The first and the last slice are bursts of their own, each timed from its produce to its
    # last announcement: a worker takes a room's waiting inputs as one batch, so the joins of
    # one burst share a few commits and announcement times inside it say nothing per join.
    k = max(1, min(join_slice, len(joins) // 2 - 1))
    first_s = _burst(pr, joins[:k], timeout, f"the {tag} room's first {k:,} joins")
    middle_s = (
        _burst(pr, joins[k:-k], timeout, f"the {tag} room's next joins")
        if len(joins) > 2 * k
        else 0.0
    )
    last_s = _burst(pr, joins[-k:], timeout, f"the {tag} room's last {k:,} joins")
    cost = JoinCost(
        members=len(joins),
        slice=k,
        first_ms=1000 * first_s / k,
        last_ms=1000 * last_s / k,
        seconds=first_s + middle_s + last_s,
    )
    return cost, [
        _one_by_one(pr, name, phases[name], version, timeout)
        for name in ONE_AT_A_TIME
        if phases[name]
    ]
