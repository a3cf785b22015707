"""pipeline/room is pure: no Kafka, SQL, faust or I/O, not even through what it imports."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pipeline.room

SHELL_MODULES = ("faust", "mode", "aiokafka", "confluent_kafka", "psycopg2", "kafka")
IO_MODULES = ("os", "io", "pathlib", "socket", "subprocess", "shutil", "tempfile", "asyncio")
ROOM_DIR = Path(pipeline.room.__file__).parent
MODULES = sorted(f"pipeline.room.{m.name}" for m in pkgutil.iter_modules([str(ROOM_DIR)]))


def test_importing_every_room_module_loads_no_shell_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SHELL_MODULES!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"pipeline.room pulls in {out}"


def test_room_modules_neither_import_io_modules_nor_open_files() -> None:
    offences = []
    for path in sorted(ROOM_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offences += [
                f"{path.name}: import {n}"
                for n in names
                if n.split(".")[0] in SHELL_MODULES + IO_MODULES
            ]
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "open"
            ):
                offences.append(f"{path.name}:{node.lineno}: open()")
    assert offences == []
