"""The parking lot: release in arrival order, bounds per room and per worker, expiry."""

from __future__ import annotations

import orjson
import pytest

from pipeline.room.parking import Parked, ParkingBudget, ParkingFull, ParkingLimits, ParkingLot


def _item(seq: int, *missing: str, at: int = 0, event_id: str | None = None) -> Parked:
    return Parked(seq=seq, raw="{}", missing=set(missing), parked_at=at, event_id=event_id)


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
    ("per_room", "total", "bound"),
    [(2, 100, "limit per room 2"), (100, 2, "limit 2")],
    ids=["per room", "per worker"],
)
def test_parking_beyond_a_bound_raises_parking_full_naming_it(
    per_room: int, total: int, bound: str
) -> None:
    budget = ParkingBudget(total)
    lot = ParkingLot("!r:x", ParkingLimits(per_room=per_room, total=total), budget)
    lot.park(_item(1, "$a"))
    lot.park(_item(2, "$a"))
    with pytest.raises(ParkingFull, match=bound):
        lot.park(_item(3, "$a"))
    assert len(lot) == 2 and budget.used == 2


def test_budget_is_shared_between_rooms_and_given_back_on_release() -> None:
    budget = ParkingBudget(2)
    one = ParkingLot("!one:x", ParkingLimits(), budget)
    two = ParkingLot("!two:x", ParkingLimits(), budget)
    one.park(_item(1, "$a"))
    two.park(_item(1, "$b"))
    with pytest.raises(ParkingFull):
        two.park(_item(2, "$b"))
    one.arrived("$a")
    two.park(_item(2, "$b"))
    assert budget.used == 2


@pytest.mark.parametrize(
    ("now", "expired"), [(999, []), (1000, [1]), (1500, [1, 2])], ids=["early", "one", "both"]
)
def test_expiry_after_the_time_to_live_on_the_callers_clock(now: int, expired: list[int]) -> None:
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
