"""Properties over random room graphs: what must hold whatever order the events arrive in."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.room.chunk import ChunkEvent
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, CAROL, RoomBuilder

# One step of a random room: (kind, sender index, prev choice, second prev choice or None).
STEP = st.tuples(
    st.sampled_from(["message", "topic", "join", "leave"]),
    st.integers(0, 2),
    st.integers(0, 1000),
    st.none() | st.integers(0, 1000),
)
USERS = [ALICE, BOB, CAROL]


def _build(steps: list[tuple[str, int, int, int | None]]) -> tuple[RoomBuilder, list[str]]:
    b = RoomBuilder()
    names = b.base()
    for n, (kind, who, p1, p2) in enumerate(steps):
        name = f"E{n}"
        prev = sorted({names[p1 % len(names)], names[(p2 if p2 is not None else p1) % len(names)]})
        sender = USERS[who]
        if kind == "message":
            b.message(name, sender, prev=prev)
        elif kind == "topic":
            b.topic(name, sender, name, prev=prev)
        else:
            b.member(name, sender, kind, prev=prev)
        names.append(name)
    return b, names


@settings(max_examples=30, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_rejection_and_state_after_do_not_depend_on_arrival_order(
    steps: list[tuple[str, int, int, int | None]], rnd: random.Random
) -> None:
    b, names = _build(steps)
    shuffled = list(names)
    rnd.shuffle(shuffled)

    def decide(order: list[str]) -> dict[str, tuple[bool, bytes]]:
        proc = RoomProcessor(b.room_id)
        result = proc.process(b.raws(order))
        assert result.dead_letters == () and result.parked == 0
        assert result.chunk is not None
        decided = {
            b.name_of(e.event_id): (
                e.rejected is not None,
                orjson.dumps(sorted(proc.state_of_group(e.state_group).items())),
            )
            for e in result.chunk.events
        }
        # Every forward extremity is an accepted event no accepted event builds on.
        accepted = {e.event_id for e in result.chunk.events if not e.rejected and not e.soft_failed}
        assert proc.forward_extremities <= accepted
        return decided

    in_order = decide(names)
    assert set(in_order) == set(names)
    assert decide(shuffled) == in_order


@settings(max_examples=20, deadline=None)
@given(
    st.lists(STEP, min_size=1, max_size=10),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 6), min_size=1, max_size=8),
)
def test_batching_and_restarts_do_not_change_any_result(
    steps: list[tuple[str, int, int, int | None]],
    rnd: random.Random,
    sizes: list[int],
) -> None:
    b, names = _build(steps)
    order = list(names)
    rnd.shuffle(order)
    straight = RoomProcessor(b.room_id)
    expected = straight.process(b.raws(order))
    assert expected.chunk is not None

    # The same arrival order cut into batches, with the state saved and restored between them.
    proc = RoomProcessor(b.room_id)
    events: list[ChunkEvent] = []
    start = 0
    for size in [*sizes, len(order)]:
        batch = order[start : start + size]
        start += len(batch)
        result = proc.process(b.raws(batch))
        events.extend(result.chunk.events if result.chunk else ())
        proc = RoomProcessor.from_dict(orjson.loads(orjson.dumps(proc.to_dict())))
        if start >= len(order):
            break
    assert events == list(expected.chunk.events)
    assert proc.forward_extremities == straight.forward_extremities
    assert dict(proc.current_state) == dict(straight.current_state)
