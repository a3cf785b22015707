"""Which process bounds a figure: CPU time of process groups, sampled from /proc while a
benchmark runs.

Each group (a worker, the committer, the broker, PostgreSQL with all its backends, the load
generator) names a function that lists its pids now, so backends that come and go are counted.
CPU time is utime + stime from ``/proc/<pid>/stat``, all threads included; the difference
between two samples over the wall time between them is the share of one core the group used.
The machine's total comes from ``/proc/stat``, so CPU taken by anything else on the machine
shows up as "everything else" rather than being blamed on a part of the pipeline.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.report import CpuRow

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BUSY = 85.0  # percent of one core at which a single-threaded process is taken as the bound
OTHERS = "everything else on the machine"

PidSource = Callable[[], list[int]]


def process_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return total - idle, total


def children_of(parent: int) -> list[int]:
    """``parent`` and every process whose parent it is (PostgreSQL's backends)."""
    pids = [parent]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == parent:
            pids.append(int(entry.name))
    return pids


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int | None:
    """Peak resident set size of ``pid`` (VmHWM), in KiB."""
    return _status_kib(pid, "VmHWM")


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class _Group:
    pids: PidSource
    last: dict[int, int]
    ticks: int = 0  # cumulative since start


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # monotonic
    ticks: dict[str, int]  # cumulative per group
    machine: tuple[int, int]  # (busy, total) since boot


class CpuSampler(threading.Thread):
    """Samples the groups every ``interval`` seconds between ``start()`` and ``stop()``.

    Samples are kept, so the rows can cover a shorter window than the sampling did (a run that
    stalled is measured up to its last progress, not through the wait that followed).
    """

    def __init__(self, groups: Mapping[str, PidSource], interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="cpu-sampler")
        self.interval = interval
        self.groups = {name: _Group(src, {}) for name, src in groups.items()}
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.samples: list[_Sample] = []
        self.cores = os.cpu_count() or 1

    def start(self) -> None:
        for g in self.groups.values():
            g.last = self._read(g.pids)
        self.samples.append(
            _Sample(time.monotonic(), dict.fromkeys(self.groups, 0), machine_ticks())
        )
        super().start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._sample()

    def stop(self, until: float | None = None) -> list[CpuRow]:
        """Stop sampling; the rows of the window from start to ``until`` (default: now)."""
        self._stop_event.set()
        self.join(5)
        self._sample()
        return self.rows(until)

    def _read(self, source: PidSource) -> dict[int, int]:
        out: dict[int, int] = {}
        try:
            pids = source()
        except (OSError, ValueError):
            return out
        for pid in pids:
            ticks = process_ticks(pid)
            if ticks is not None:
                out[pid] = ticks
        return out

    def _sample(self) -> None:
        with self._lock:
            for g in self.groups.values():
                now = self._read(g.pids)
                # A pid first seen now started during the window: all its CPU time is in it.
                g.ticks += max(0, sum(t - g.last.get(pid, 0) for pid, t in now.items()))
                g.last.update(now)
            self.samples.append(
                _Sample(
                    time.monotonic(),
                    {name: g.ticks for name, g in self.groups.items()},
                    machine_ticks(),
                )
            )

    def rows(self, until: float | None = None) -> list[CpuRow]:
        """Each group's average and peak, busiest first, then everything else and the total."""
        samples = self.samples
        if until is not None:
            # The sample that closes the interval holding ``until`` is the window's end.
            cut = next((k for k, x in enumerate(samples) if x.at >= until), len(samples) - 1)
            samples = samples[: max(2, cut + 1)]
        first, last = samples[0], samples[-1]
        elapsed = max(1e-9, last.at - first.at)
        pairs = list(itertools.pairwise(samples))
        rows = []
        for name in self.groups:
            average = 100.0 * (last.ticks[name] - first.ticks[name]) / CLOCK_TICKS / elapsed
            peak = max(
                (
                    100.0 * (b.ticks[name] - a.ticks[name]) / CLOCK_TICKS / (b.at - a.at)
                    for a, b in pairs
                    if b.at - a.at >= 0.5 * self.interval
                ),
                default=average,
            )
            rows.append(CpuRow(name, average, max(peak, average)))
        rows.sort(key=lambda r: -r.average)
        machine = _machine_share(first.machine, last.machine, self.cores)
        if machine is not None:
            ours = sum(r.average for r in rows)
            peaks = [
                m for a, b in pairs
                if b.at - a.at >= 0.5 * self.interval
                and (m := _machine_share(a.machine, b.machine, self.cores)) is not None
            ]  # fmt: skip
            rows.append(CpuRow(OTHERS, max(0.0, machine - ours), float("nan")))
            label = f"machine total ({self.cores} cores = {100 * self.cores}%)"
            rows.append(CpuRow(label, machine, max([machine, *peaks])))
        return rows


def _machine_share(a: tuple[int, int], b: tuple[int, int], cores: int) -> float | None:
    total = b[1] - a[1]
    return 100.0 * cores * (b[0] - a[0]) / total if total > 0 else None


def bound_of(rows: list[CpuRow], cores: int | None = None) -> str:
    """What the CPU rows say limited the measurement, in words."""
    cores = cores or os.cpu_count() or 1
    parts = [r for r in rows if r.process != OTHERS and not r.process.startswith("machine")]
    machine = next((r for r in rows if r.process.startswith("machine")), None)
    others = next((r for r in rows if r.process == OTHERS), None)
    saturated = [r for r in parts if r.average >= BUSY]
    words: list[str] = []
    if saturated:
        words.append(
            ", ".join(f"{r.process} at {r.average:.0f}% of a core" for r in saturated)
            + " (single-threaded Python is bound near 100% of one core by the GIL)"
        )
    if machine is not None and machine.average >= 0.9 * 100 * cores:
        words.append(f"the machine's {cores} cores were saturated ({machine.average:.0f}%)")
    if not words:
        top = parts[0] if parts else None
        busiest = f"; busiest: {top.process} at {top.average:.0f}%" if top else ""
        words.append(f"no process was CPU-bound (waiting on I/O, acks or batching){busiest}")
    text = "; ".join(words)
    if others is not None and others.average >= 25:
        text += f" (other processes on the machine took {others.average:.0f}% of a core meanwhile)"
    return text
