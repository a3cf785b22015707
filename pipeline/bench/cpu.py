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
    ticks: int = 0
    peak: float = 0.0


class CpuSampler(threading.Thread):
    """Samples the groups every ``interval`` seconds between ``start()`` and ``stop()``."""

    def __init__(self, groups: Mapping[str, PidSource], interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="cpu-sampler")
        self.interval = interval
        self.groups = {name: _Group(src, {}) for name, src in groups.items()}
        self._stop_event = threading.Event()
        self._started_at = 0.0
        self._ended_at = 0.0
        self._machine_start = (0, 0)
        self._machine_end = (0, 0)
        self._machine_peak = 0.0
        self.cores = os.cpu_count() or 1

    def start(self) -> None:
        self._machine_start = machine_ticks()
        self._started_at = time.monotonic()
        for g in self.groups.values():
            g.last = self._read(g.pids)
        super().start()

    def run(self) -> None:
        last_at = self._started_at
        last_machine = self._machine_start
        while not self._stop_event.wait(self.interval):
            now = time.monotonic()
            self._sample(now - last_at)
            machine = machine_ticks()
            span = machine[1] - last_machine[1]
            if span > 0:
                pct = 100.0 * self.cores * (machine[0] - last_machine[0]) / span
                self._machine_peak = max(self._machine_peak, pct)
            last_at, last_machine = now, machine

    def stop(self) -> list[CpuRow]:
        """Stop sampling; each group's average and peak, busiest first, then everything else."""
        self._stop_event.set()
        self.join(5)
        self._ended_at = time.monotonic()
        self._sample(0.0)
        self._machine_end = machine_ticks()
        return self.rows()

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

    def _sample(self, elapsed: float) -> None:
        for g in self.groups.values():
            now = self._read(g.pids)
            # A pid first seen now started during the window: all its CPU time is in it.
            delta = sum(t - g.last.get(pid, 0) for pid, t in now.items())
            g.ticks += max(0, delta)
            if elapsed > 0:
                g.peak = max(g.peak, 100.0 * delta / CLOCK_TICKS / elapsed)
            g.last.update(now)

    @property
    def elapsed(self) -> float:
        return max(1e-9, (self._ended_at or time.monotonic()) - self._started_at)

    def rows(self) -> list[CpuRow]:
        rows = []
        for name, g in self.groups.items():
            average = 100.0 * g.ticks / CLOCK_TICKS / self.elapsed
            # A window shorter than one sample has no peak of its own: the average stands in.
            rows.append(CpuRow(name, average, max(g.peak, average)))
        rows.sort(key=lambda r: -r.average)
        busy = self._machine_end[0] - self._machine_start[0]
        total = self._machine_end[1] - self._machine_start[1]
        if total > 0:
            machine = 100.0 * self.cores * busy / total
            ours = sum(r.average for r in rows)
            rows.append(CpuRow(OTHERS, max(0.0, machine - ours), float("nan")))
            label = f"machine total ({self.cores} cores = {100 * self.cores}%)"
            rows.append(CpuRow(label, machine, max(self._machine_peak, machine)))
        return rows


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
