"""The benchmark report: what one run measured, printed as a table and written as BENCHMARKS.md.

Pure formatting over plain dataclasses; nothing here measures or reads the machine, so the
layout can be tested on its own. A figure that has a baseline measured in the same run carries
the ratio to it; a target is shown as met or missed, and a figure without a checkable target
says so rather than guessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "CpuRow",
    "Figure",
    "Machine",
    "Report",
    "Section",
    "cpu_rows",
    "format_ratio",
    "format_value",
    "render_markdown",
    "render_table",
]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, with the baseline it is compared to (when there is one)."""

    bench: str  # "B1"
    name: str
    value: float | None  # None: not measured (the note says why)
    unit: str  # "events/s", "ms", "MB", "x"
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None  # value / baseline, unless the section's method says otherwise
    target: str = ""  # as the issue states it, e.g. ">= 0.5x the floor"
    met: bool | None = None  # None: no target, or not checkable in this run
    bound: str = ""  # what limited the figure
    note: str = ""

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        if self.met is None:
            return "not checked"
        return "met" if self.met else "MISSED"


@dataclass(frozen=True, slots=True)
class CpuRow:
    """A process's CPU use over a measured window, in percent of one core."""

    process: str
    average: float
    peak: float


@dataclass(slots=True)
class Section:
    bench: str
    title: str
    method: str  # markdown paragraphs
    figures: list[Figure] = field(default_factory=list)
    cpu: list[CpuRow] = field(default_factory=list)
    cpu_window: str = ""  # which measurement the CPU rows belong to
    details: list[str] = field(default_factory=list)  # extra markdown lines
    error: str | None = None  # set when the benchmark could not run


@dataclass(frozen=True, slots=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    kernel: str
    python: str
    kafka: str
    librdkafka: str
    postgres: str
    commit: str
    load_average: str


@dataclass(slots=True)
class Report:
    started_utc: str
    mode: str  # "full" or "quick" (or "tiny" in tests)
    duration_s: float
    command: str
    machine: Machine
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]


# --------------------------------------------------------------------------- numbers


def format_value(value: float | None, unit: str) -> str:
    """A figure with its unit, rounded to what the measurement can tell apart."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "x":
        return format_ratio(value)
    if unit in ("ms", "s"):
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
        return f"{value:,.{digits}f} {unit}"
    if unit in ("MB", "KB"):
        return f"{value:,.1f} {unit}"
    digits = 0 if abs(value) >= 100 else 1
    return f"{value:,.{digits}f} {unit}"


def format_ratio(ratio: float | None) -> str:
    if ratio is None or math.isnan(ratio):
        return "n/a"
    return f"{ratio:.2f}x"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}%"


def cpu_rows(rows: Sequence[CpuRow]) -> list[str]:
    """Markdown table rows of CPU use (the header is the caller's)."""
    return [f"| {_cell(c.process)} | {_percent(c.average)} | {_percent(c.peak)} |" for c in rows]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tally(figures: Sequence[Figure]) -> str:
    verdicts = [f.verdict for f in figures if f.target]
    met, missed = verdicts.count("met"), verdicts.count("MISSED")
    unchecked = len(verdicts) - met - missed
    text = f"Targets: {met} met, {missed} missed"
    return text + (f", {unchecked} not checked in this mode." if unchecked else ".")


# --------------------------------------------------------------------------- stdout


def render_table(figures: Sequence[Figure]) -> str:
    """A fixed-width table of every figure, for the terminal."""
    rows = [("", "benchmark", "result", "baseline (same run)", "ratio", "target", "")]
    for f in figures:
        base = (
            f"{format_value(f.baseline, f.unit)} ({f.baseline_name})"
            if f.baseline is not None
            else "-"
        )
        rows.append(
            (
                f.bench,
                f.name,
                format_value(f.value, f.unit),
                base,
                format_ratio(f.ratio) if f.ratio is not None else "-",
                f.target or "-",
                f.verdict,
            )
        )
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c[:48].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown


def render_markdown(report: Report) -> str:
    m = report.machine
    out: list[str] = [
        "# Benchmarks",
        "",
        f"Written by `{report.command}` on {report.started_utc} ({report.mode} mode, "
        f"{report.duration_s:,.0f} s). Every number below was measured by that run; none is "
        "written by hand. Where a benchmark has a baseline, the baseline was measured in the "
        "same run, on the same machine, with the same input, and the ratio is to it. Each "
        "figure is one measurement; what else ran on the machine meanwhile is shown with it "
        '("everything else on the machine").',
        *(
            [
                "",
                f"This is {report.mode} mode: smaller inputs and so shorter measurement "
                "windows, in which start-up effects weigh more. The full mode "
                "(`roomstream bench`) is the one to compare against the targets.",
            ]
            if report.mode != "full"
            else []
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m.cpus} cores, {_cell(m.cpu_model)} |",
        f"| memory | {m.memory_gib:.1f} GiB |",
        f"| kernel | {_cell(m.kernel)} |",
        f"| Python | {_cell(m.python)} |",
        f"| Kafka | {_cell(m.kafka)} (one combined broker and controller, local stack) |",
        f"| librdkafka | {_cell(m.librdkafka)} |",
        f"| PostgreSQL | {_cell(m.postgres)} (local stack) |",
        f"| commit measured | {_cell(m.commit)} |",
        f"| load average at start | {_cell(m.load_average)} |",
        "",
        "Everything runs on this one machine: the broker, the database, the workers, the "
        "committer and the load generator share its cores, so a figure here is a lower bound "
        "of what the same code does with a machine per part.",
        "",
        "## Results",
        "",
        _tally(report.figures()),
        "",
        "| | benchmark | result | baseline (same run) | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in report.figures():
        base = (
            f"{format_value(f.baseline, f.unit)} ({_cell(f.baseline_name or 'baseline')})"
            if f.baseline is not None
            else "-"
        )
        out.append(
            f"| {f.bench} | {_cell(f.name)} | {format_value(f.value, f.unit)} | {base} | "
            f"{format_ratio(f.ratio) if f.ratio is not None else '-'} | "
            f"{_cell(f.target) or '-'} | {f.verdict} |"
        )
    missing = [s for s in report.sections if s.error]
    if missing:
        out.append("")
        for s in missing:
            out.append(f"- {s.bench} did not run: {_cell(s.error or '')}")
    for s in report.sections:
        out += ["", f"## {s.bench}. {s.title}", "", s.method.strip(), ""]
        if s.error:
            out += [f"**Not measured:** {s.error}", ""]
        for f in s.figures:
            line = f"- **{f.name}**: {format_value(f.value, f.unit)}"
            if f.baseline is not None:
                line += (
                    f" against {format_value(f.baseline, f.unit)} ({f.baseline_name}), "
                    f"ratio {format_ratio(f.ratio)}"
                )
            elif f.ratio is not None:
                line += f", ratio {format_ratio(f.ratio)}"
            if f.target:
                line += f". Target {f.target}: {f.verdict}"
            line += "."
            if f.bound:
                line += f" Bounded by: {f.bound}."
            if f.note:
                line += f" {f.note}"
            out.append(line)
        if s.cpu:
            out += [
                "",
                f"CPU use {s.cpu_window or 'during the measurement'} "
                "(percent of one core; 100% is a core fully busy):",
                "",
                "| process | average | peak (1 s) |",
                "|---|---|---|",
            ]
            out += cpu_rows(s.cpu)
        if s.details:
            out += ["", *s.details]
    out.append("")
    return "\n".join(out)
