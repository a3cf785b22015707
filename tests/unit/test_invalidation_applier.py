"""InvalidationApplier: invalidate before notify, drop duplicates, report gaps."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.invalidations import InvalidationApplier


def message(position: int, prev: int, *caches: tuple[str, list[list[Any]]]) -> dict[str, Any]:
    return {
        "position": position,
        "prev_position": prev,
        "room_id": "!r:example.org",
        "events": [{"event_id": f"$e{position}", "stream_ordering": position}],
        "invalidate": [{"cache": c, "keys": k} for c, k in caches],
    }


def test_every_invalidation_is_applied_before_any_notification() -> None:
    journal: list[tuple[str, Any]] = []
    a = InvalidationApplier()
    a.register_cache("get_users_in_room", lambda key: journal.append(("inv", key)))
    a.register_cache("get_rooms_for_user", lambda key: journal.append(("inv", key)))
    a.add_notifier(lambda msg: journal.append(("notify", msg["position"])))
    a.add_notifier(lambda msg: journal.append(("notify2", msg["position"])))
    m = message(
        3,
        0,
        ("get_users_in_room", [["!r:example.org"]]),
        ("get_rooms_for_user", [["@a:example.org"], ["@b:example.org"]]),
    )
    assert a.apply(m)
    assert journal == [
        ("inv", ("!r:example.org",)),
        ("inv", ("@a:example.org",)),
        ("inv", ("@b:example.org",)),
        ("notify", 3),
        ("notify2", 3),
    ]
    assert a.position == 3


def test_the_position_advances_before_notifiers_run() -> None:
    a = InvalidationApplier()
    seen: list[int | None] = []
    a.add_notifier(lambda msg: seen.append(a.position))
    a.apply(message(5, 0))
    assert seen == [5]


@pytest.mark.parametrize("position", [3, 2], ids=["same position", "older position"])
def test_a_message_at_or_below_the_position_is_a_duplicate_and_dropped(position: int) -> None:
    applied: list[int] = []
    a = InvalidationApplier()
    a.register_cache("c", lambda key: applied.append(-1))
    a.add_notifier(lambda msg: applied.append(msg["position"]))
    a.apply(message(3, 0, ("c", [["k"]])))
    applied.clear()
    assert not a.apply(message(position, 0, ("c", [["k"]])))
    assert applied == []
    assert a.position == 3
    assert a.duplicates == 1


def test_a_prev_position_other_than_the_current_position_is_reported_as_a_gap() -> None:
    gaps: list[tuple[int, int]] = []
    a = InvalidationApplier(on_gap=lambda expected, msg: gaps.append((expected, msg["position"])))
    a.apply(message(3, 0))
    a.apply(message(9, 7))  # positions 4..7 never arrived
    assert gaps == [(3, 9)]
    assert a.position == 9  # applied anyway: a gap is reported, not fatal
    a.apply(message(10, 9))
    assert gaps == [(3, 9)]


def test_without_a_start_position_the_first_message_is_the_baseline() -> None:
    gaps: list[int] = []
    a = InvalidationApplier(start_position=None, on_gap=lambda e, m: gaps.append(e))
    assert a.apply(message(100, 97))
    assert gaps == []
    assert a.position == 100


def test_unregistered_caches_are_ignored() -> None:
    a = InvalidationApplier()
    assert a.apply(message(1, 0, ("get_something_unknown", [["x"]])))
    assert a.position == 1
