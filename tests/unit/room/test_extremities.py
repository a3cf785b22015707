"""Forward extremities: an accepted event replaces its prev_events, also through chains of
soft-failed and rejected events that never displaced theirs."""

from __future__ import annotations

import pytest

from pipeline.room.extremities import advance

# event -> its prev_events, for the soft-failed or rejected events of each case
Hidden = dict[str, tuple[str, ...]]

CASES: list[tuple[str, set[str], str, tuple[str, ...], Hidden, set[str]]] = [
    ("linear: the new event replaces its prev event", {"A"}, "B", ("A",), {}, {"B"}),
    ("fork: the other branch stays", {"A", "X"}, "B", ("A",), {}, {"B", "X"}),
    ("merge: both branches are replaced", {"A", "X"}, "M", ("A", "X"), {}, {"M"}),
    (
        "prev event not an extremity (already replaced) changes nothing else",
        {"B"},
        "C",
        ("A",),
        {},
        {"B", "C"},
    ),
    (
        "through one soft-failed event: its prev leaves too",
        {"Y", "BAN"},
        "E",
        ("S", "BAN"),
        {"S": ("Y",)},
        {"E"},
    ),
    (
        "through a chain of soft-failed and rejected events",
        {"Y", "BAN"},
        "E",
        ("S2", "BAN"),
        {"S2": ("R1",), "R1": ("S0",), "S0": ("Y",)},
        {"E"},
    ),
    (
        "a cycle among hidden events terminates",
        {"Y", "Z"},
        "E",
        ("S1",),
        {"S1": ("S2",), "S2": ("S1", "Y")},
        {"E", "Z"},
    ),
]


@pytest.mark.parametrize(
    ("extremities", "event", "prevs", "hidden", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_accepted_event_replaces_its_prev_events_as_forward_extremity(
    extremities: set[str],
    event: str,
    prevs: tuple[str, ...],
    hidden: Hidden,
    expected: set[str],
) -> None:
    before = set(extremities)
    added, removed = advance(extremities, event, prevs, hidden.get)
    assert extremities == expected
    assert added == expected - before
    assert removed == before - expected
