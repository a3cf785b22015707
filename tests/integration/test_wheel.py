"""The wheel built from the repository works on its own: installed into a fresh virtualenv, run
from outside the checkout, ``roomstream --help`` and ``roomstream replay`` work, and the package
data (the Kafka pom, the migrations) resolves from the installed package, not the checkout.

The fresh virtualenv gets the wheel with ``--no-deps`` and finds the dependencies through a
``.pth`` naming this interpreter's site-packages directories, so nothing is downloaded for them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

from tests.unit.room.builder import ALICE, BOB, RoomBuilder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(out: Path) -> Path:
    # From a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = out / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".stack", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    # setuptools 77 reads the SPDX licence string; an older one here builds in isolation.
    recent = int(metadata.version("setuptools").split(".")[0]) >= 77
    args = ["--no-build-isolation"] if recent else []
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *args, "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (wheel,) = out.glob("roomstream-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel installed; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(base)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # This interpreter's site-packages, for the dependencies; never the checkout itself.
    ours = [p for p in sys.path if p.endswith("site-packages")] or [
        sysconfig.get_paths()["purelib"]
    ]
    Path(purelib, "00-dependencies.pth").write_text("\n".join(ours) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMSTREAM_", "PYTHON"))}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_help_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, tmp_path, "roomstream", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("stack", "replay", "worker", "committer", "status"):
        assert command in proc.stdout


def test_replay_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    b = RoomBuilder("10")
    names = b.base()
    b.message("M", ALICE)
    b.message("BAD", BOB, prev=["M"])  # fine as a PDU; the line after it is not JSON
    lines = [b.raw(n) for n in [*names, "M", "BAD"]] + [b"{not json"]
    path = tmp_path / "room.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = _run(installed, tmp_path, "roomstream", "replay", str(path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    room = out["rooms"][b.room_id]
    assert room["room_version"] == "10"
    assert room["forward_extremities"] == [b.ids["BAD"]]
    assert [d["line"] for d in out["dead_letter"]] == [len(lines)]


def test_package_data_and_the_stack_dir_come_from_the_install(
    installed: Path, tmp_path: Path
) -> None:
    code = (
        "import json, pipeline, pipeline.dev.stack as stack\n"
        "from db.migrate import known_migrations\n"
        "from pipeline.config import load_settings\n"
        "print(json.dumps({'pipeline': pipeline.__file__, 'pom': stack.POM.read_text(),\n"
        "  'migrations': [n for n, _ in known_migrations()],\n"
        "  'stack_dir': str(load_settings().stack_dir)}))\n"
    )
    proc = _run(installed, tmp_path, "python", "-c", code)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert Path(got["pipeline"]).is_relative_to(installed.parent), got["pipeline"]
    assert got["pom"] == (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert got["migrations"] == sorted(p.stem for p in (ROOT / "db" / "migrations").glob("*.sql"))
    assert got["stack_dir"] == str(tmp_path / ".stack")
