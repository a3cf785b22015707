"""Running the local stack's command-line tools (keytool, Kafka's storage tool) to completion."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from pipeline.errors import StackError


def run_tool(
    cmd: Sequence[str], failed: str, *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with its output captured; when it exits non-zero, StackError saying
    ``failed``, with the end of what it wrote."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise StackError(f"{failed}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc
