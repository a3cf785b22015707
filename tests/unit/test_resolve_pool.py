"""Resolutions in the process pool give the same answer as inline ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.dev.workload import Workload, fork_and_merge_scenario, slow_resolution_room
from pipeline.matrix.events import StateKey, StateMap
from pipeline.room.processor import RoomProcessor
from pipeline.worker.resolve_pool import ResolvePool, conflicted_count


@pytest.fixture(scope="module")
def pool() -> Iterator[ResolvePool]:
    p = ResolvePool(1)
    yield p
    p.close()


@pytest.mark.parametrize(
    "workload",
    [slow_resolution_room(40), fork_and_merge_scenario(), fork_and_merge_scenario("12")],
    ids=["slow-room-40", "fork-and-merge-v10", "fork-and-merge-v12"],
)
def test_every_resolution_of_a_room_is_the_same_in_the_pool(
    pool: ResolvePool, workload: Workload
) -> None:
    compared: list[int] = []

    class Comparing(RoomProcessor):
        def _resolve(self, state_sets: list[StateMap]) -> dict[StateKey, str]:
            inline = super()._resolve(state_sets)
            assert self.room_version is not None
            pooled = pool.resolve(
                self.room_version.identifier,
                state_sets,
                self._known.fetch,
                self._known.is_rejected,
            )
            assert pooled == inline
            compared.append(conflicted_count(state_sets))
            return inline

    (room_id,) = workload.rooms
    proc = Comparing(room_id)
    for line in workload.lines:
        proc.process([line])
    assert compared, "the room should need state resolution"
    assert max(compared) > 0


def test_a_resolution_over_unknown_events_is_left_to_the_inline_path(pool: ResolvePool) -> None:
    def fetch(event_id: str) -> None:
        return None

    assert pool.resolve("10", [{("m.room.topic", ""): "$a"}, {}], fetch, lambda e: False) is None


def test_conflicted_count_counts_keys_that_differ() -> None:
    a = {("m.room.topic", ""): "$1", ("m.room.name", ""): "$2"}
    b = {("m.room.topic", ""): "$3", ("m.room.name", ""): "$2", ("m.room.avatar", ""): "$4"}
    assert conflicted_count([a, b]) == 2
    assert conflicted_count([a, a]) == 0
