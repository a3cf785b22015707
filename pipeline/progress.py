"""A one-line progress display for long commands: count, rate and (when known) a bar."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = self.stream.isatty()

    def update(self, n: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        text = f"{self.label} {n}"
        if self.total:
            frac = min(n / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"{self.label} [{bar:<30}] {n}/{self.total}"
        text += f"  {n / elapsed:,.0f}/s"
        end = "\n" if final or not self._tty else ""
        prefix = "\r" if self._tty else ""
        self.stream.write(f"{prefix}{text}{end}")
        self.stream.flush()
