"""Standby takeover: how long after kill -9 of the active committer the standby is active.

Two committer processes of one fresh run: the first becomes active, the second stands by; the
active one is killed with SIGKILL and the time runs until the standby logs that it is active.
PostgreSQL sees the killed process's socket close, ends its session and releases its advisory
lock; the standby's next ``pg_try_advisory_lock`` (every second) takes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.runs import cleanup, fresh_run, logdir_of
from pipeline.config import Settings
from pipeline.dev.local import ROOT, settings_env
from pipeline.errors import RoomstreamError

__all__ = ["Takeover", "measure_takeover"]

TARGET_S = 5.0  # issue target: the standby active within 5 s of kill -9


@dataclass(frozen=True, slots=True)
class Takeover:
    seconds: list[float]  # one per repeat

    @property
    def worst(self) -> float:
        return max(self.seconds)


def _start(run: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "committer"],
            cwd=ROOT,
            env=settings_env(run),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _wait_for(log: Path, text: str, timeout: float, after: int = 0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count(text) > after:
            return time.monotonic()
        time.sleep(0.02)
    raise RoomstreamError(f"{log.name} never logged {text!r} within {timeout:.0f} s")


def measure_takeover(settings: Settings, repeats: int = 3, timeout: float = 60.0) -> Takeover:
    """Kill -9 the active committer ``repeats`` times; each time, the standby's takeover time."""
    run = fresh_run(settings, "takeover")
    logs = logdir_of(run)
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    seconds: list[float] = []
    try:
        active_log = logs / "committer-0.log"
        procs.append(_start(run, active_log))
        _wait_for(active_log, "committer is active, generation", timeout)
        active = procs[0]
        for i in range(repeats):
            standby_log = logs / f"committer-{i + 1}.log"
            standby = _start(run, standby_log)
            procs.append(standby)
            _wait_for(standby_log, "standing by", timeout)
            killed_at = time.monotonic()
            os.kill(active.pid, signal.SIGKILL)
            active.wait(10)
            took_over = _wait_for(standby_log, "committer is active (took over)", timeout)
            seconds.append(took_over - killed_at)
            active, active_log = standby, standby_log
        return Takeover(seconds)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        cleanup(run)
