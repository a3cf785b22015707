"""The homeserver-shaped benchmarks' arithmetic: which partitions a killed worker held, what
its outage and the other rooms' pause were, the order Synapse is fed events in, the figures'
ratios to B0, and the pictures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.bench.big_room import JoinCost, OneByOne, room_lines
from pipeline.bench.load_sections import (
    big_room_figures,
    capacity_figure,
    curve_details,
    fixed_rate_figures,
    takeover_figure,
)
from pipeline.bench.paced import Probe, Search
from pipeline.bench.plots import Anchor, plot_curve, plot_search
from pipeline.bench.recovery import Takeover, killed_partitions, partition_of, recovery_figures
from pipeline.bench.synapse_persist import PhaseResult, SynapseResult, in_dependency_order
from pipeline.errors import RoomstreamError


def b0(rate: float = 40.0, paced_p50: float = 30.0, paced_p99: float = 80.0) -> SynapseResult:
    closed = PhaseResult("closed", 400, 2, 400 / rate, 150.0, 400.0, 500.0, in_flight=10)
    paced = PhaseResult("paced", 100, 0, 5.0, paced_p50, paced_p99, 90.0, target_rate=20.0)
    return SynapseResult("matrix-synapse 1.163.2", closed, paced)


# --------------------------------------------------------------------------- recovery


def test_the_killed_member_is_the_one_gone_from_the_group() -> None:
    before = {"m1": {0, 2, 4}, "m2": {1, 3, 5}}
    after = {"m2": {1, 3, 5, 0}, "m3": {2, 4}}
    assert killed_partitions(before, after) == {0, 2, 4}


@pytest.mark.parametrize(
    "after",
    [
        {"m1": {0}, "m2": {1}},  # nobody left: the kill was not seen
        {"m3": {0, 1}},  # both gone: cannot tell which
    ],
)
def test_no_single_missing_member_tells_nothing(after: dict[str, set[int]]) -> None:
    assert killed_partitions({"m1": {0}, "m2": {1}}, after) is None


def test_the_outage_runs_until_the_last_killed_partition_is_back() -> None:
    # Partitions 0 and 1 were the killed worker's; 2 is another's. Kill at 10, restart at 10.5.
    sent = {"a0": 9.0, "b0": 10.2, "b1": 10.4, "c2": 9.5, "d2": 10.3, "e2": 11.0}
    announced = {"a0": 9.05, "b0": 13.0, "b1": 14.5, "c2": 9.56, "d2": 10.6, "e2": 11.02}
    partition = {"a0": 0, "b0": 0, "b1": 1, "c2": 2, "d2": 2, "e2": 2}
    back, others_max, others_p99, before_max = recovery_figures(
        sent, announced, partition, {0, 1}, kill_at=10.0, restart_at=10.5
    )
    assert back == pytest.approx(4.0)  # 14.5 - 10.5
    assert others_max == pytest.approx(300.0)  # d2: 10.3 -> 10.6
    assert others_p99 == pytest.approx(300.0)
    assert before_max == pytest.approx(60.0)  # c2, in the 4.5 s before the kill


def test_an_outage_with_no_event_after_the_kill_is_an_error() -> None:
    with pytest.raises(RoomstreamError, match="produce for longer"):
        recovery_figures({"a": 1.0}, {"a": 1.1}, {"a": 0}, {0}, kill_at=2.0, restart_at=2.1)


def test_rooms_land_on_the_partition_the_workers_own_them_by() -> None:
    from pipeline.worker.app import owner_partition

    for n in range(50):
        room = f"!room{n}:example.org"
        assert partition_of(room, 12) == owner_partition(room, 12)


# --------------------------------------------------------------------------- Synapse's input


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ([[], ["e0"], ["e1"]], [0, 1, 2]),  # already in order
        ([["e1"], [], ["e0"]], [1, 0, 2]),  # e0 arrived before e1, which it references
        ([["e2"], ["e0"], [], []], [2, 0, 1, 3]),  # a chain released at once, in order
        ([["zzz"], []], [0, 1]),  # a reference outside the input is no reason to wait
        ([["e1"], ["e0"], []], [2, 0, 1]),  # a cycle never resolves: left in arrival order
    ],
)
def test_events_come_after_what_they_reference(refs: list[list[str]], expected: list[int]) -> None:
    ids = [f"e{i}" for i in range(len(refs))]
    pdus = [{"prev_events": r, "auth_events": []} for r in refs]
    assert in_dependency_order(pdus, ids) == expected


# --------------------------------------------------------------------------- figures


def test_capacity_is_compared_to_synapses_rate_against_ten_times() -> None:
    s = Search(probes=[Probe(500.0, 500.0, 100, 20.0, 80.0, 90.0)], capacity=500.0)
    f = capacity_figure(2, s, b0(rate=40.0))
    assert f.ratio == pytest.approx(12.5)
    assert f.met is True
    assert capacity_figure(2, s, b0(rate=60.0)).met is False


def test_a_rate_that_passed_when_probed_again_is_said() -> None:
    probes = [Probe(50.0, 50.0, 100, 20.0, 300.0, 350.0), Probe(50.0, 50.0, 100, 20.0, 40.0, 50.0)]
    f = capacity_figure(1, Search(probes=probes, capacity=50.0, rechecked=1), b0())
    assert "1 rate(s) went over the limit once and passed when probed again" in f.note
    assert (
        "went over" not in capacity_figure(1, Search(probes=probes[1:], capacity=50.0), b0()).note
    )


def test_no_capacity_checks_no_target() -> None:
    f = capacity_figure(1, Search(capacity=None, note="no rate passed"), b0())
    assert f.value is None
    assert f.met is None
    assert "No rate passed." in f.note


def test_the_fixed_rate_latency_is_set_beside_synapses_at_the_same_rate() -> None:
    p50, p99 = fixed_rate_figures(Probe(20.0, 20.0, 200, 12.0, 60.0, 70.0), b0())
    assert (p50.baseline, p50.ratio, p50.met) == (30.0, pytest.approx(0.4), True)
    assert (p99.baseline, p99.ratio, p99.met) == (80.0, pytest.approx(0.75), False)


def test_a_run_that_lost_events_meets_no_latency_target() -> None:
    figs = fixed_rate_figures(Probe(20.0, 20.0, 200, 1.0, 2.0, 3.0, lost=4), b0())
    assert [f.met for f in figs] == [None, None]


def test_the_curve_table_has_a_row_per_point_with_its_ratio() -> None:
    points = [
        ("10% of capacity", Probe(50.0, 50.0, 150, 10.0, 40.0, 45.0, waited=4, longest_wait_ms=81))
    ]
    rows = curve_details(points, b0(paced_p99=80.0), 2)
    assert rows[-1] == "| 10% of capacity | 50.0 | 150 | 10.0 | 40.0 | 45.0 | 0.50x | 4 (81 ms) |"


def test_big_room_events_are_compared_to_the_small_room_and_to_b0() -> None:
    joins = JoinCost(members=20_000, slice=1000, first_ms=0.5, last_ms=1.5, seconds=30.0)
    big = [OneByOne("messages", 100, 60.0, 90.0, 95.0)]
    small = [OneByOne("messages", 100, 30.0, 50.0, 55.0)]
    j, m = big_room_figures(joins, big, small, 20_000, b0(paced_p50=30.0))
    assert (j.value, j.baseline, j.ratio) == (1.5, 0.5, pytest.approx(3.0))
    assert j.baseline_name == "first 1,000 joins"
    assert (m.value, m.baseline, m.ratio) == (60.0, 30.0, pytest.approx(2.0))
    assert "2.00x Synapse's p50 persist latency at low load (B0)" in m.note


def test_takeover_is_set_beside_synapses_p99_in_seconds() -> None:
    f = takeover_figure(Takeover(50.0, 2.0, 2100.0, 20.0, 60.0), b0())
    assert f.baseline == pytest.approx(0.4)
    assert f.ratio == pytest.approx(5.0)


def test_a_big_room_has_the_asked_phases_and_sizes() -> None:
    phases = room_lines(30, 7, 8, "t")
    assert [len(phases[k]) for k in ("setup", "joins", "messages", "state changes")] == [
        4,
        30,
        7,
        8,
    ]


# --------------------------------------------------------------------------- pictures


def test_the_pictures_are_png_files(tmp_path: Path) -> None:
    probes = [
        Probe(25.0, 25.0, 100, 10.0, 30.0, 40.0),
        Probe(50.0, 50.0, 100, 20.0, 300.0, 400.0),
        Probe(37.5, 37.5, 100, 15.0, 90.0, 95.0),
    ]
    anchor = Anchor(40.0, 30.0, 80.0, 20.0)
    curve = plot_curve([("a", p) for p in probes], anchor, tmp_path / "c.png", "curve")
    search = plot_search({"2": probes}, {"2": 37.5}, 40.0, tmp_path / "s.png", "search")
    for path in (curve, search):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_curve_without_synapse_still_draws(tmp_path: Path) -> None:
    p = Probe(25.0, 25.0, 100, 10.0, math.nan, 40.0)
    assert plot_curve([("a", p)], None, tmp_path / "c.png", "curve").exists()


def test_events_lost_around_a_kill_are_said_beside_the_figure() -> None:
    f = takeover_figure(
        Takeover(50.0, 2.0, 2100.0, 20.0, 60.0, 1, "nothing was dead-lettered"), b0()
    )
    assert "LOST 1 of the events produced around the kill" in f.note
    assert "nothing was dead-lettered" in f.note


def test_a_slice_of_joins_inside_one_transaction_is_not_timed() -> None:
    joins = JoinCost(members=100, slice=5, first_ms=0.3, last_ms=0.0, seconds=1.0)
    (j,) = big_room_figures(joins, [], [], 100, b0())
    assert j.value is None
    assert j.ratio is None
    assert "too few to time" in j.note
