"""The parking lot: release in arrival order, bounds per room (count and bytes), the worker's
gauge, expiry on the room's logical clock."""

from __future__ import annotations

import orjson
import pytest

from pipeline.room.parking import Parked, ParkingBudget, ParkingFull, ParkingLimits, ParkingLot


def _item(
    seq: int, *missing: str, at: int = 0, event_id: str | None = None, size: int = 2
) -> Parked:
    return Parked(
        seq=seq, raw="{}", missing=set(missing), parked_at=at, event_id=event_id, size=size
    )


def test_released_only_when_everything_it_waits_for_arrived_in_arrival_order() -> None:
    lot = ParkingLot("!r:x", ParkingLimits())
    lot.park(_item(3, "$a", "$b", event_id="$p3"))
    lot.park(_item(1, "$a", event_id="$p1"))
    lot.park(_item(2, "$b", event_id="$p2"))
    assert [p.seq for p in lot.arrived("$a")] == [1]
    assert lot.get("$p3") is not None and lot.get("$p1") is None
    assert [p.seq for p in lot.arrived("$b")] == [2, 3]
    assert len(lot) == 0
    assert lot.arrived("$b") == []


@pytest.mark.parametrize(
    ("limits", "size", "bound"),
    [
        (ParkingLimits(per_room=2), 2, "limit per room 2"),
        (ParkingLimits(max_bytes_per_room=250), 100, "limit per room 250 bytes"),
    ],
    ids=["count", "bytes"],
)
def test_parking_beyond_a_per_room_bound_raises_parking_full_naming_it(
    limits: ParkingLimits, size: int, bound: str
) -> None:
    lot = ParkingLot("!r:x", limits)
    lot.park(_item(1, "$a", size=size))
    lot.park(_item(2, "$a", size=size))
    with pytest.raises(ParkingFull, match=bound):
        lot.park(_item(3, "$a", size=size))
    assert len(lot) == 2 and lot.bytes == 2 * size
    lot.arrived("$a")
    assert lot.bytes == 0


def test_the_worker_budget_counts_across_rooms_and_never_refuses() -> None:
    # A room's output must not depend on other rooms: the budget is back-pressure for the
    # shell (pause intake when ``over``), not a reason to refuse an event.
    budget = ParkingBudget(2)
    one = ParkingLot("!one:x", ParkingLimits(), budget)
    two = ParkingLot("!two:x", ParkingLimits(), budget)
    one.park(_item(1, "$a"))
    two.park(_item(1, "$b"))
    two.park(_item(2, "$b"))
    assert budget.used == 3 and budget.over
    one.arrived("$a")
    two.arrived("$b")
    assert budget.used == 0 and not budget.over


@pytest.mark.parametrize(
    ("now", "expired"), [(999, []), (1000, [1]), (1500, [1, 2])], ids=["early", "one", "both"]
)
def test_expiry_after_the_time_to_live_on_the_logical_clock(now: int, expired: list[int]) -> None:
    lot = ParkingLot("!r:x", ParkingLimits(ttl_ms=1000))
    lot.park(_item(1, "$a", at=0))
    lot.park(_item(2, "$a", at=500))
    assert [p.seq for p in lot.expire(now)] == expired
    assert len(lot) == 2 - len(expired)


def test_round_trip_rebuilds_the_index_and_counts_against_the_budget() -> None:
    lot = ParkingLot("!r:x", ParkingLimits())
    lot.park(_item(1, "$a", "$b", event_id="$p1"))
    lot.park(_item(2, "$b", event_id="$p2"))
    budget = ParkingBudget(10)
    restored = ParkingLot.restore(
        "!r:x", orjson.loads(orjson.dumps(lot.to_dict())), ParkingLimits(), budget
    )
    assert budget.used == 2
    assert restored.get("$p1") is not None
    assert [p.seq for p in restored.arrived("$b")] == [2]
    assert [p.seq for p in restored.arrived("$a")] == [1]
    assert budget.used == 0


def test_the_worker_budget_counts_bytes_across_rooms_and_is_over_at_its_byte_bound() -> None:
    budget = ParkingBudget(1000, total_bytes=3 * 60_000)
    lots = [ParkingLot(f"!r{i}:x", ParkingLimits(), budget) for i in range(3)]
    for i, lot in enumerate(lots):
        lot.park(_item(1, f"$m{i}", size=60_000))
    assert budget.used == 3 and budget.used_bytes == 180_000 and budget.over
    lots[0].arrived("$m0")
    assert budget.used_bytes == 120_000 and not budget.over
    restored = ParkingLot.restore(
        "!r1:x", orjson.loads(orjson.dumps(lots[1].to_dict())), ParkingLimits(), budget
    )
    assert len(restored) == 1 and budget.used_bytes == 180_000
