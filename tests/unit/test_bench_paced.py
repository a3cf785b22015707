"""The paced-capacity search and the latency curve's arithmetic, over fake probes: a pipeline
whose p99 is a known function of the rate, so the capacity the search must find is known."""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson
import pytest

from pipeline.bench.paced import (
    CURVE_FRACTIONS,
    LIMIT_MS,
    Probe,
    curve_rates,
    latency_stats,
    probe_workload_shape,
    ready_times,
    search_capacity,
)
from pipeline.dev.workload import BASE_EVENTS


def fake(p99_of: Callable[[float], float], lost_at: float = math.inf) -> Callable[[float], Probe]:
    def probe(rate: float) -> Probe:
        p99 = p99_of(rate)
        return Probe(rate, rate, 100, p99 / 2, p99, p99 * 1.5, lost=int(rate >= lost_at))

    return probe


def knee(capacity: float) -> Callable[[float], float]:
    """p99 far under the limit up to ``capacity``, far over it beyond (a queue that grows)."""
    return lambda rate: 30.0 if rate <= capacity else 5_000.0


@pytest.mark.parametrize("capacity", [37.0, 130.0, 260.0, 999.0])
def test_the_search_finds_the_knee_within_its_precision(capacity: float) -> None:
    s = search_capacity(fake(knee(capacity)), start=25.0, max_rate=4000.0, bisections=8)
    assert s.capacity is not None
    assert s.capacity <= capacity
    assert s.capacity >= 0.9 * capacity
    assert s.confirmed is True


def test_the_search_doubles_then_bisects() -> None:
    s = search_capacity(fake(knee(130.0)), start=25.0, max_rate=4000.0, bisections=2)
    rates = [p.rate for p in s.probes]
    # 25, 50, 100 pass, 200 fails twice; then 150 (fails twice), 125 (passes); 125 confirmed.
    assert rates == [25.0, 50.0, 100.0, 200.0, 200.0, 150.0, 150.0, 125.0, 125.0]
    assert s.capacity == 125.0
    assert s.rechecked == 0


def noisy_once(at: float, capacity: float) -> Callable[[float], Probe]:
    """A pipeline whose capacity is ``capacity``, and whose first probe at ``at`` hits one noisy
    window (another process, a broker's flush) and goes over the limit."""
    calls: dict[float, int] = {}

    def probe(rate: float) -> Probe:
        calls[rate] = calls.get(rate, 0) + 1
        p99 = 500.0 if rate > capacity or (rate == at and calls[rate] == 1) else 30.0
        return Probe(rate, rate, 100, 10.0, p99, p99)

    return probe


def test_a_probe_over_the_limit_once_is_run_again_and_a_rate_fails_only_twice_over() -> None:
    # Before, the search halved from the noisy 25 events/s, and the capacity stayed under 25
    # however far the pipeline went.
    s = search_capacity(noisy_once(25.0, 130.0), start=25.0, max_rate=4000.0, bisections=2)
    assert [p.rate for p in s.probes][:3] == [25.0, 25.0, 50.0]
    assert s.capacity == 125.0
    assert s.rechecked == 1


def test_without_recheck_one_probe_over_the_limit_fails_its_rate() -> None:
    s = search_capacity(
        noisy_once(25.0, 130.0), start=25.0, max_rate=4000.0, bisections=0, recheck=False
    )
    assert s.capacity is not None and s.capacity < 25.0


def test_a_probe_that_lost_events_is_not_run_again() -> None:
    s = search_capacity(
        fake(lambda _r: 10.0, lost_at=100.0), start=25.0, max_rate=4000.0, bisections=0
    )
    assert [p.rate for p in s.probes] == [25.0, 50.0, 100.0, 50.0]


def test_a_start_rate_that_fails_halves_down() -> None:
    s = search_capacity(fake(knee(7.0)), start=25.0, max_rate=4000.0, bisections=0)
    assert [p.rate for p in s.probes][:5] == [25.0, 25.0, 12.5, 12.5, 6.2]
    assert s.capacity == 6.2


def test_nothing_passing_claims_no_capacity() -> None:
    s = search_capacity(fake(lambda _r: 500.0), start=25.0, max_rate=4000.0, min_rate=5.0)
    assert s.capacity is None
    assert "no rate" in s.note


def test_every_rate_passing_stops_at_the_ceiling_and_says_so() -> None:
    s = search_capacity(fake(lambda _r: 10.0), start=25.0, max_rate=400.0)
    assert s.capacity == 400.0
    assert "ceiling" in s.note


def test_lost_events_fail_a_probe_whatever_its_latency() -> None:
    s = search_capacity(fake(lambda _r: 10.0, lost_at=100.0), start=25.0, max_rate=4000.0)
    assert s.capacity is not None
    assert s.capacity < 100.0


def test_a_capacity_that_does_not_reproduce_falls_back_to_a_lower_pass() -> None:
    calls: dict[float, int] = {}

    def flaky(rate: float) -> Probe:
        calls[rate] = calls.get(rate, 0) + 1
        # 100 passes the first time only; everything below 100 always passes.
        good = rate < 100.0 or (rate == 100.0 and calls[rate] == 1)
        p99 = 30.0 if good else 500.0
        return Probe(rate, rate, 100, 10.0, p99, p99)

    s = search_capacity(flaky, start=25.0, max_rate=4000.0, bisections=0)
    assert s.confirmed is False
    assert s.capacity == 50.0
    assert "failed when probed again" in s.note


def test_the_limit_is_p99_inclusive() -> None:
    assert Probe(10.0, 10.0, 5, 1.0, LIMIT_MS, LIMIT_MS).ok
    assert not Probe(10.0, 10.0, 5, 1.0, LIMIT_MS + 0.1, LIMIT_MS).ok
    assert not Probe(10.0, 10.0, 0, math.nan, math.nan, math.nan).ok


def test_the_curve_is_the_fractions_of_capacity_then_the_fixed_rate() -> None:
    points = curve_rates(200.0, fixed=20.0)
    assert [r for _, r in points] == [200.0 * f for f in CURVE_FRACTIONS] + [20.0]
    assert points[0][0] == "10% of capacity"
    assert points[-1][0] == "fixed 20 events/s"


@pytest.mark.parametrize("events", [1, 49, 250, 5_000])
def test_a_probe_workload_holds_enough_events_in_at_most_fifty_rooms(events: int) -> None:
    rooms, per_room = probe_workload_shape(events)
    assert rooms * per_room >= events
    assert 1 <= rooms <= 50
    assert per_room >= BASE_EVENTS


def test_latency_counts_only_the_window_and_reports_the_missing() -> None:
    sent = {"$warm": 0.5, "$a": 1.0, "$b": 1.5, "$never": 2.0}
    announced = {"$warm": 0.6, "$a": 1.02, "$b": 1.6}
    latencies, missing = latency_stats(sent, announced, since=1.0)
    assert latencies == pytest.approx([20.0, 100.0])
    assert missing == 1


def _pdu(prev: list[str], auth: list[str] | None = None) -> bytes:
    return orjson.dumps({"prev_events": prev, "auth_events": auth or []})


def test_an_event_sent_before_an_event_it_references_is_ready_when_that_one_is_sent() -> None:
    # $c was sent before its prev event $b: it can be processed only once $b arrives, so its
    # latency runs from $b's send; $d, on $c, waits for it in turn.
    lines = [_pdu([]), _pdu(["$b"], ["$a"]), _pdu(["$a"]), _pdu(["$c"]), b"not json"]
    ids = ["$a", "$c", "$b", "$d", None]
    sent = {"$a": 0.0, "$c": 0.1, "$b": 0.4, "$d": 0.2}
    assert ready_times(lines, ids, sent) == {"$a": 0.0, "$c": 0.4, "$b": 0.4, "$d": 0.4}


def test_references_outside_the_workload_and_room_v1_pairs_are_read() -> None:
    lines = [_pdu([]), orjson.dumps({"prev_events": [["$a", {"sha256": "x"}], ["$gone", {}]]})]
    assert ready_times(lines, ["$a", "$b"], {"$a": 0.5, "$b": 0.1}) == {"$a": 0.5, "$b": 0.5}
