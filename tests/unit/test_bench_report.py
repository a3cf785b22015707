"""The benchmark report's layout: every section, every figure, ratios and verdicts as stated."""

from __future__ import annotations

import concurrent.futures
import math

import pytest

from pipeline.bench.report import (
    CpuRow,
    Figure,
    Machine,
    Report,
    Section,
    format_ratio,
    format_value,
    render_markdown,
    render_table,
)
from pipeline.bench.suite import describe_failure

MACHINE = Machine(
    cpus=2,
    cpu_model="Example CPU",
    memory_gib=23.5,
    kernel="Linux 6.1",
    python="CPython 3.11.7",
    kafka="Apache Kafka 4.1.1",
    librdkafka="2.16.0",
    postgres="PostgreSQL 15.18",
    commit="abc1234",
    load_average="0.10 0.20 0.30",
)


def _report() -> Report:
    b1 = Section(
        "B1",
        "End-to-end throughput",
        "Produce, then wait for the last invalidation.",
        figures=[
            Figure(
                "B1",
                "throughput, 2 worker(s)",
                400.0,
                "events/s",
                baseline=8000.0,
                baseline_name="floor",
                ratio=0.05,
                target=">= 0.5x the floor",
                met=False,
                bound="worker1 at 98% of a core",
            )
        ],
        cpu=[
            CpuRow("worker1", 98.0, 101.0),
            CpuRow("everything else on the machine", 3.0, math.nan),
        ],
        cpu_window="during B1",
    )
    b2 = Section(
        "B2",
        "Latency",
        "Paced produce.",
        figures=[
            Figure("B2", "latency p99", 42.0, "ms", target="<= 100 ms", met=True),
            Figure("B2", "latency p50", math.nan, "ms"),
        ],
    )
    b5 = Section("B5", "State resolution", "Beside Synapse.", error="not available (no module)")
    return Report(
        started_utc="2026-01-01 00:00 UTC",
        mode="quick",
        duration_s=120.0,
        command="roomstream bench --quick",
        machine=MACHINE,
        sections=[b1, b2, b5],
    )


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (1234.4, "events/s", "1,234 events/s"),
        (56.78, "events/s", "56.8 events/s"),
        (123.4, "ms", "123 ms"),
        (12.345, "ms", "12.3 ms"),
        (5.0, "ms", "5.00 ms"),
        (300.04, "MB", "300.0 MB"),
        (0.5, "x", "0.50x"),
        (None, "ms", "n/a"),
        (math.nan, "events/s", "n/a"),
    ],
)
def test_a_value_is_shown_with_its_unit_and_sensible_precision(
    value: float | None, unit: str, text: str
) -> None:
    assert format_value(value, unit) == text


@pytest.mark.parametrize(
    ("ratio", "text"), [(0.05, "0.05x"), (1.5, "1.50x"), (None, "n/a"), (math.nan, "n/a")]
)
def test_a_ratio_is_shown_with_two_decimals(ratio: float | None, text: str) -> None:
    assert format_ratio(ratio) == text


@pytest.mark.parametrize(
    ("target", "met", "verdict"),
    [("", None, ""), ("<= 100 ms", None, "not checked"), ("<= 100 ms", True, "met"),
     (">= 0.5x", False, "MISSED")],
)  # fmt: skip
def test_a_missed_target_says_so(target: str, met: bool | None, verdict: str) -> None:
    assert Figure("B1", "x", 1.0, "ms", target=target, met=met).verdict == verdict


def test_the_markdown_has_the_machine_every_section_and_every_figure() -> None:
    text = render_markdown(_report())
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Results",
        "## B1. End-to-end throughput",
        "## B2. Latency",
        "## B5. State resolution",
    ):
        assert heading in text.splitlines()
    for fact in ("2 cores, Example CPU", "Apache Kafka 4.1.1", "PostgreSQL 15.18", "abc1234"):
        assert fact in text
    assert (
        "| B1 | throughput, 2 worker(s) | 400 events/s | 8,000 events/s (floor) | 0.05x | "
        ">= 0.5x the floor | MISSED |" in text
    )
    assert "| B2 | latency p99 | 42.0 ms | - | - | <= 100 ms | met |" in text
    assert "Bounded by: worker1 at 98% of a core." in text
    assert "| worker1 | 98% | 101% |" in text


@pytest.mark.parametrize(("mode", "warned"), [("quick", True), ("full", False)])
def test_a_report_of_smaller_inputs_says_so(mode: str, warned: bool) -> None:
    report = _report()
    report.mode = mode
    assert ("This is quick mode" in render_markdown(report)) is warned


def test_the_results_count_met_and_missed_targets() -> None:
    assert "Targets: 1 met, 1 missed." in render_markdown(_report())


def test_a_benchmark_that_did_not_run_is_reported_with_its_reason() -> None:
    text = render_markdown(_report())
    assert "- B5 did not run: not available (no module)" in text
    assert "**Not measured:** not available (no module)" in text


def test_no_nan_reaches_the_report() -> None:
    text = render_markdown(_report()) + render_table(_report().figures())
    assert "nan" not in text.lower()


def test_the_terminal_table_has_a_row_per_figure() -> None:
    report = _report()
    lines = render_table(report.figures()).splitlines()
    assert len(lines) == 2 + len(report.figures())
    assert lines[2].split()[0] == "B1"
    assert "MISSED" in lines[2]


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([CpuRow("worker1", 97.0, 100.0), CpuRow("machine total", 120.0, 150.0)],
         "worker1 at 97% of a core"),
        ([CpuRow("committer", 40.0, 60.0), CpuRow("machine total", 195.0, 200.0)],
         "the machine's 2 cores were saturated (195%)"),
        ([CpuRow("committer", 40.0, 60.0), CpuRow("machine total", 60.0, 80.0)],
         "no process was CPU-bound (waiting on I/O, acks or batching); busiest: committer at 40%"),
        ([CpuRow("committer", 40.0, 60.0),
          CpuRow("everything else on the machine", 50.0, math.nan),
          CpuRow("machine total", 90.0, 95.0)],
         "(other processes on the machine took 50% of a core meanwhile)"),
    ],
)  # fmt: skip
def test_the_bound_names_the_saturated_process_or_says_none_was(
    rows: list[CpuRow], says: str
) -> None:
    from pipeline.bench.cpu import bound_of

    assert says in bound_of(rows, cores=2)


def test_cpu_time_of_a_live_process_is_read_and_of_a_gone_one_is_none() -> None:
    import os

    from pipeline.bench.cpu import process_ticks, rss_kib

    ticks, rss = process_ticks(os.getpid()), rss_kib(os.getpid())
    assert ticks is not None
    assert ticks >= 0
    assert rss is not None
    assert rss > 0
    assert process_ticks(2**22 + 12345) is None


def test_cpu_rows_cover_only_the_window_up_to_the_cut() -> None:
    from pipeline.bench.cpu import CLOCK_TICKS, CpuSampler, _Sample

    sampler = CpuSampler({"worker1": lambda: []}, interval=1.0)
    busy = CLOCK_TICKS  # one second of CPU per second: a full core
    sampler.samples = [
        _Sample(0.0, {"worker1": 0}, (0, 200)),
        _Sample(1.0, {"worker1": busy}, (100, 400)),
        _Sample(2.0, {"worker1": 2 * busy}, (200, 600)),
        _Sample(3.0, {"worker1": 2 * busy}, (200, 800)),  # idle: waiting for what never came
        _Sample(4.0, {"worker1": 2 * busy}, (200, 1000)),
    ]
    cut = {r.process: r for r in sampler.rows(until=1.5)}
    whole = {r.process: r for r in sampler.rows()}
    assert round(cut["worker1"].average) == 100
    assert round(whole["worker1"].average) == 50
    assert round(whole["worker1"].peak) == 100


def _times_out() -> None:
    concurrent.futures.Future().result(0.001)


def test_a_failure_without_a_message_names_where_it_was_raised() -> None:
    # A future's TimeoutError says nothing; the report must still point at the wait.
    with pytest.raises(TimeoutError) as caught:
        _times_out()
    text = describe_failure(caught.value)
    assert text.startswith("TimeoutError:")
    assert "test_bench_report.py" in text and "_times_out" in text


def test_a_failure_with_a_message_is_reported_as_it_is() -> None:
    assert describe_failure(ValueError("no rooms")) == "ValueError: no rooms"
