"""The report's two pictures, as PNG files beside BENCHMARKS.md: the latency curve (p50, p99 and
max against the paced rate, with Synapse's latency and rate from the same run) and the capacity
search (every probe's rate and p99, in the order it ran, for each worker count).

matplotlib is imported here only, with its file-only backend, so nothing else of the suite
needs it; a missing matplotlib means no pictures, said in the report, not a failed run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench.paced import LIMIT_MS, Probe

CURVE_FILE = "benchmarks-latency.png"
SEARCH_FILE = "benchmarks-capacity.png"


@dataclass(frozen=True, slots=True)
class Anchor:
    """Synapse's figures from B0 that the pictures draw beside Roomstream's."""

    rate: float | None  # events/s, 10 rooms in flight
    p50_ms: float | None  # at the fixed low rate
    p99_ms: float | None
    fixed_rate: float


def _plain_ticks(ax: Any) -> None:
    """Tick labels as plain numbers (20, 300) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.4g}")
    # Between powers of ten, only 2x and 5x are labelled, so the labels do not run together.
    sparse = FuncFormatter(lambda v, _pos: f"{v:,.4g}" if f"{v:.0e}"[0] in "25" else "")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(sparse)


def plot_curve(
    points: Sequence[tuple[str, Probe]], anchor: Anchor | None, path: Path, title: str
) -> Path:
    """p50, p99 and max latency against the rate, log-scaled; Synapse's marks beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted((p for _, p in points), key=lambda p: p.rate)
    rates = [p.rate for p in ordered]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    ax.plot(rates, [p.p50_ms for p in ordered], "o-", label="Roomstream p50")
    ax.plot(rates, [p.p99_ms for p in ordered], "s-", label="Roomstream p99")
    ax.plot(rates, [p.max_ms for p in ordered], "^:", label="Roomstream max")
    ax.axhline(LIMIT_MS, color="grey", linestyle="--", linewidth=1, label="p99 limit (100 ms)")
    if anchor is not None:
        if anchor.p50_ms is not None and anchor.p99_ms is not None:
            ax.plot(
                [anchor.fixed_rate, anchor.fixed_rate],
                [anchor.p50_ms, anchor.p99_ms],
                "x",
                color="black",
                markersize=9,
                label=f"Synapse p50 / p99 at {anchor.fixed_rate:g} events/s (B0)",
            )
        if anchor.rate is not None:
            ax.axvline(
                anchor.rate,
                color="black",
                linestyle=":",
                linewidth=1,
                label=f"Synapse's rate, 10 rooms in flight ({anchor.rate:,.0f}/s)",
            )
    return _finish(fig, ax, path, title, "produce → invalidation (ms)")


def plot_search(
    searches: Mapping[str, Sequence[Probe]],
    capacities: Mapping[str, float | None],
    anchor_rate: float | None,
    path: Path,
    title: str,
) -> Path:
    """Each search's probes: rate against p99 (log-log), numbered in the order they ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for label, probes in searches.items():
        xs = [p.rate for p in probes]
        ys = [p.p99_ms for p in probes]
        # A thin line in the order the probes ran; filled marks passed, crosses failed.
        line = ax.plot(xs, ys, "-", alpha=0.35, linewidth=1)[0]
        color = line.get_color()
        passed = [p for p in probes if p.ok]
        failed = [p for p in probes if not p.ok]
        ax.plot([p.rate for p in passed], [p.p99_ms for p in passed], "o", color=color,
                label=f"{label}: probe passed")  # fmt: skip
        ax.plot([p.rate for p in failed], [p.p99_ms for p in failed], "x", color=color,
                markersize=8, label=f"{label}: probe failed")  # fmt: skip
        for k, p in enumerate(probes, 1):
            ax.annotate(
                str(k), (p.rate, p.p99_ms), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        capacity = capacities.get(label)
        if capacity is not None:
            ax.axvline(
                capacity,
                color=color,
                linewidth=1.5,
                label=f"{label}: capacity {capacity:,.0f}/s",
            )
    ax.axhline(LIMIT_MS, color="grey", linestyle="--", linewidth=1, label="p99 limit (100 ms)")
    if anchor_rate is not None:
        ax.axvline(
            anchor_rate,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"Synapse's rate (B0, {anchor_rate:,.0f}/s)",
        )
    return _finish(fig, ax, path, title, "p99 produce → invalidation (ms)")


def _finish(fig: Any, ax: Any, path: Path, title: str, ylabel: str) -> Path:
    """Both pictures' axes (log-log, rate against latency), legend, and the file."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("paced produce rate (events/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
