"""B0, the anchor: matrix-synapse persisting the same generated rooms into the same PostgreSQL.

Synapse runs in a child process (``python -m pipeline.bench.synapse_persist``), as a
``SynapseHomeServer`` built from a config dict against a fresh database of its own (C collation,
as Synapse requires) on the local stack; no listener, federation sender or background worker is
started. For every event, in its room's arrival order, it does what its federation path does
with an event whose prev events it has, minus signature checks and network:

1. ``StateHandler.compute_event_context``: the state before the event, resolved across its prev
   events (state resolution v2 where they differ), and a new state group for a state event;
2. the auth rules: ``check_state_independent_auth_rules`` against the store, then
   ``check_state_dependent_auth_rules`` against the event's own auth events; a failure marks
   the context rejected, as ``FederationEventHandler._check_event_auth`` does;
3. ``EventsPersistenceStorageController.persist_event``, one event per call: stream ordering,
   the events and state tables, forward extremities and current state.

Latency is from step 1's start to ``persist_event``'s return. Two phases, each over rooms of
its own: *closed loop*, ``in_flight`` rooms at a time (each room's events one after another,
the next room started when one is done), which gives the rate Synapse sustains; and *paced*,
events started at a fixed rate in arrival order (an event whose room's previous event is still
being persisted waits for it, and that wait counts), which gives its latency at a low load.
Synapse's soft-fail check, push actions and notifier are not run: the figure is its storage path,
which is the part Roomstream replaces.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import psycopg2

from pipeline.bench.cpu import CpuSampler
from pipeline.bench.report import CpuRow
from pipeline.bench.runs import stack_groups
from pipeline.config import Settings
from pipeline.dev.local import ROOT, database_url_for
from pipeline.dev.local import percentile as _percentile
from pipeline.errors import RoomstreamError

PROCESS = "Synapse (persist process)"
SERVER_NAME = "bench.synapse"
# A fixed test key: nothing is signed with it that leaves the process.
SIGNING_KEY = "ed25519 a_lPym qvioDNmfExFBRPgdTU+wtFYKq4JfwFRv7sYVgWvmgJg"
CONNECTIONS = 10  # Synapse's default database pool (cp_max)


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One phase of the Synapse run: ``rate`` is events persisted over the phase's wall time."""

    mode: str  # "closed" or "paced"
    events: int
    rejected: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    in_flight: int = 0  # closed loop: rooms at a time
    target_rate: float = 0.0  # paced: events/s asked for

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class SynapseResult:
    version: str
    closed: PhaseResult
    paced: PhaseResult | None
    cpu: list[CpuRow] = field(default_factory=list)  # of the closed-loop phase
    setup_s: float = 0.0


def summarise(latencies_ms: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``latencies_ms``; NaN when empty."""
    return (
        _percentile(latencies_ms, 0.5),
        _percentile(latencies_ms, 0.99),
        max(latencies_ms, default=float("nan")),
    )


# --------------------------------------------------------------------------- the parent side


def _create_database(settings: Settings, dbname: str) -> str:
    conn = psycopg2.connect(database_url_for(settings.database_url, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        # Synapse refuses a database whose collation is not C (its ordering of text keys).
        cur.execute(
            f"CREATE DATABASE \"{dbname}\" TEMPLATE template0 ENCODING 'UTF8' "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    conn.close()
    return database_url_for(settings.database_url, dbname)


def _drop_database(settings: Settings, dbname: str) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn = psycopg2.connect(database_url_for(settings.database_url, "postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.close()


def measure_synapse(
    settings: Settings,
    closed_lines: Sequence[bytes],
    paced_lines: Sequence[bytes] = (),
    *,
    version: str,
    in_flight: int = 10,
    paced_rate: float = 20.0,
    timeout: float = 900.0,
) -> SynapseResult:
    """Run Synapse's persistence over ``closed_lines`` (``in_flight`` rooms at a time) and then
    ``paced_lines`` (at ``paced_rate`` events/s) in a child process; its figures and CPU use."""
    dbname = f"synapse_bench_{os.getpid()}_{int(time.time())}"
    url = _create_database(settings, dbname)
    with tempfile.TemporaryDirectory(prefix="synapse-bench-") as tmp:
        closed_file = Path(tmp) / "closed.jsonl"
        closed_file.write_bytes(b"\n".join(closed_lines) + b"\n")
        paced_file = Path(tmp) / "paced.jsonl"
        paced_file.write_bytes(b"\n".join(paced_lines) + (b"\n" if paced_lines else b""))
        log = (settings.stack_dir / "runs" / f"{dbname}.log").resolve()
        log.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "pipeline.bench.synapse_persist",
            url,
            tmp,
            version,
            "--closed",
            str(closed_file),
            "--in-flight",
            str(in_flight),
            "--paced-rate",
            str(paced_rate),
        ]
        if paced_lines:
            args += ["--paced", str(paced_file)]
        try:
            with (
                log.open("wb") as err,
                # Leaving the block closes its pipes and waits for it.
                subprocess.Popen(
                    args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
                ) as proc,
            ):
                try:
                    return _drive(proc, settings, timeout, log)
                finally:
                    if proc.poll() is None:
                        proc.kill()
        finally:
            _drop_database(settings, dbname)


def _drive(
    proc: subprocess.Popen[bytes], settings: Settings, timeout: float, log: Path
) -> SynapseResult:
    assert proc.stdout is not None and proc.stdin is not None
    deadline = time.monotonic() + timeout
    ready = proc.stdout.readline()
    if not ready.startswith(b"ready"):
        raise RoomstreamError(
            f"Synapse did not start (exit {proc.poll()}); its log: {log}\n" + _tail(log)
        )
    setup_s = float(ready.split()[1])
    pid = proc.pid
    groups = {PROCESS: lambda: [pid], **stack_groups(settings)}
    sampler = CpuSampler(groups)
    sampler.start()
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    phases: dict[str, PhaseResult] = {}
    cpu: list[CpuRow] = []
    try:
        while True:
            if time.monotonic() > deadline:
                raise RoomstreamError(f"Synapse did not finish within {timeout:.0f} s ({log})")
            line = proc.stdout.readline()
            if not line:
                raise RoomstreamError(
                    f"Synapse exited with code {proc.wait(10)} before it finished; its log: "
                    f"{log}\n" + _tail(log)
                )
            msg = orjson.loads(line)
            if msg.get("done"):
                break
            # orjson writes NaN (no latencies) as null.
            body: dict[str, Any] = {
                k: float("nan") if v is None else v for k, v in msg["phase"].items()
            }
            phase = PhaseResult(**body)
            phases[phase.mode] = phase
            if phase.mode == "closed":
                cpu = sampler.stop()
    finally:
        if not cpu:
            cpu = sampler.stop()
    if "closed" not in phases:
        raise RoomstreamError(f"Synapse reported no closed-loop phase ({log})")
    version = _synapse_version()
    return SynapseResult(version, phases["closed"], phases.get("paced"), cpu, setup_s)


def _tail(log: Path, n: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


def _synapse_version() -> str:
    from importlib.metadata import version

    return f"matrix-synapse {version('matrix-synapse')}"


# --------------------------------------------------------------------------- the child side


def in_dependency_order(pdus: Sequence[dict[str, Any]], ids: Sequence[str]) -> list[int]:
    """Indexes of ``pdus`` in arrival order, except that an event comes only after its prev and
    auth events (``ids`` are the events' IDs). The generated arrival order now and then puts an
    event a moment before one it references, which Roomstream parks until it arrives; Synapse's
    storage path has no parking, so it gets them as its federation handler would have fetched
    them. References to events not in ``pdus`` are ignored; events in a reference cycle come
    last, in arrival order."""
    known = set(ids)
    done: set[str] = set()
    waiting: dict[str, list[int]] = {}
    out: list[int] = []

    def release(i: int) -> None:
        ready = [i]
        while ready:
            k = ready.pop()
            out.append(k)
            done.add(ids[k])
            ready.extend(reversed(waiting.pop(ids[k], [])))

    for i, pdu in enumerate(pdus):
        missing = [
            e
            for e in (*pdu.get("prev_events", ()), *pdu.get("auth_events", ()))
            if e in known and e not in done
        ]
        if missing:
            waiting.setdefault(missing[0], []).append(i)
        else:
            release(i)
    # What never became ready (a reference cycle, which no valid room has) keeps its place.
    placed = set(out)
    return out + [i for i in range(len(pdus)) if i not in placed]


def _rooms_in_order(lines: Sequence[bytes], version: str) -> dict[str, list[dict[str, Any]]]:
    """Each room's PDUs, in arrival order put in dependency order."""
    from pipeline.matrix.hashes import compute_event_id
    from pipeline.matrix.room_versions import room_version

    rv = room_version(version)
    by_room: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            pdu = orjson.loads(line)
            by_room.setdefault(pdu["room_id"], []).append(pdu)
    rooms: dict[str, list[dict[str, Any]]] = {}
    for room_id, pdus in by_room.items():
        order = in_dependency_order(pdus, [compute_event_id(p, rv) for p in pdus])
        rooms[room_id] = [pdus[i] for i in order]
    return rooms


def _homeserver(database_url: str, data_dir: str) -> Any:
    from synapse.app.homeserver import SynapseHomeServer
    from synapse.config.homeserver import HomeServerConfig

    parts = urlsplit(database_url)
    db_args: dict[str, Any] = {
        "dbname": parts.path.lstrip("/"),
        "user": parts.username or "postgres",
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "cp_min": 5,
        "cp_max": CONNECTIONS,
    }
    if parts.password:
        db_args["password"] = parts.password
    # libpq's own parameters (the local stack's passfile, sslmode): Synapse hands its database
    # args to psycopg2.connect.
    db_args.update(parse_qsl(parts.query))
    config = HomeServerConfig()
    config.parse_config_dict(
        {
            "server_name": SERVER_NAME,
            "report_stats": False,
            "signing_key": SIGNING_KEY,
            "database": {"name": "psycopg2", "args": db_args},
            "listeners": [],
            "enable_metrics": False,
            "trusted_key_servers": [],
            "media_store_path": str(Path(data_dir) / "media"),
        },
        data_dir,
        data_dir,
    )
    hs = SynapseHomeServer(SERVER_NAME, config=config)
    hs.setup()
    return hs


class _Persister:
    """Synapse's path for one event at a time (the module docstring's steps 1–3)."""

    def __init__(self, hs: Any, version: str) -> None:
        from synapse.api.room_versions import KNOWN_ROOM_VERSIONS

        self.hs = hs
        self.version = version
        self.rv = KNOWN_ROOM_VERSIONS[version]
        self.state = hs.get_state_handler()
        self.store = hs.get_datastores().main
        self.persistence = hs.get_storage_controllers().persistence
        self.rejected = 0

    async def persist(self, pdu: dict[str, Any]) -> float:
        """Persist one event; its latency in ms."""
        from synapse.api.constants import RejectedReason
        from synapse.api.errors import AuthError
        from synapse.event_auth import (
            check_state_dependent_auth_rules,
            check_state_independent_auth_rules,
        )
        from synapse.events import make_event_from_dict

        started = time.monotonic()
        event = make_event_from_dict(dict(pdu), self.rv)
        if event.type == "m.room.create" and event.get_state_key() == "":
            # What Synapse does on learning of a room (creating or joining it): its row in
            # ``rooms``, which persisting checks for.
            await self.store.store_room(event.room_id, event.sender, False, self.rv)
        context = await self.state.compute_event_context(event)
        try:
            await check_state_independent_auth_rules(self.store, event)
            auth = await self.store.get_events_as_list(event.auth_event_ids())
            check_state_dependent_auth_rules(event, auth)
        except AuthError:
            context.rejected = RejectedReason.AUTH_ERROR
            self.rejected += 1
        await self.persistence.persist_event(event, context)
        return (time.monotonic() - started) * 1000


def _phase(mode: str, latencies: list[float], rejected: int, seconds: float, **kw: Any) -> bytes:
    p50, p99, peak = summarise(latencies)
    body = {
        "mode": mode,
        "events": len(latencies),
        "rejected": rejected,
        "seconds": seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": peak,
        **kw,
    }
    return orjson.dumps({"phase": body}) + b"\n"


async def _closed_loop(p: _Persister, lines: Sequence[bytes], in_flight: int) -> bytes:
    from twisted.internet import defer

    rooms = list(_rooms_in_order(lines, p.version).values())
    latencies: list[float] = []
    rejected_before = p.rejected

    async def lane() -> None:
        while rooms:
            for pdu in rooms.pop(0):
                latencies.append(await p.persist(pdu))

    started = time.monotonic()
    await defer.gatherResults(
        [defer.ensureDeferred(lane()) for _ in range(in_flight)], consumeErrors=True
    )
    seconds = time.monotonic() - started
    return _phase("closed", latencies, p.rejected - rejected_before, seconds, in_flight=in_flight)


async def _paced(p: _Persister, lines: Sequence[bytes], rate: float) -> bytes:
    from twisted.internet import defer, reactor, task

    # Arrival order across rooms, each room's events in dependency order.
    rooms = _rooms_in_order(lines, p.version)
    firsts = [orjson.loads(line)["room_id"] for line in lines if line.strip()]
    pdus = [rooms[room].pop(0) for room in firsts]
    latencies: list[float] = []
    rejected_before = p.rejected
    # Each event opens a gate when done; the next event of its room waits at it.
    gates: dict[str, defer.Deferred[None]] = {}
    pending: list[defer.Deferred[None]] = []

    async def one(
        pdu: dict[str, Any], due: float, before: defer.Deferred[None] | None, gate: Any
    ) -> None:
        try:
            if before is not None:
                await before
            await p.persist(pdu)
            # Waiting for the room's previous event counts: it is part of what the event waits.
            latencies.append((time.monotonic() - due) * 1000)
        finally:
            gate.callback(None)

    started = time.monotonic()
    for i, pdu in enumerate(pdus):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await task.deferLater(reactor, delay)
        room = pdu["room_id"]
        gate: defer.Deferred[None] = defer.Deferred()
        pending.append(defer.ensureDeferred(one(pdu, due, gates.get(room), gate)))
        gates[room] = gate
    await defer.gatherResults(pending, consumeErrors=True)
    seconds = time.monotonic() - started
    return _phase("paced", latencies, p.rejected - rejected_before, seconds, target_rate=rate)


def _child(args: argparse.Namespace) -> int:
    warnings.simplefilter("ignore")  # Twisted and Synapse warn about their own deprecations
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    from twisted.internet import defer
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor  # its interfaces are declared on the module, not the object
    started = time.monotonic()
    hs = _homeserver(args.database_url, args.data_dir)
    closed = Path(args.closed).read_bytes().splitlines()
    paced = Path(args.paced).read_bytes().splitlines() if args.paced else []
    out = sys.stdout.buffer
    out.write(f"ready {time.monotonic() - started:.2f}\n".encode())
    out.flush()
    sys.stdin.readline()  # the parent's CPU sampler is running
    status: list[int] = [0]

    async def run() -> None:
        try:
            p = _Persister(hs, args.room_version)
            out.write(await _closed_loop(p, closed, args.in_flight))
            out.flush()
            if paced:
                out.write(await _paced(p, paced, args.paced_rate))
                out.flush()
            out.write(b'{"done": true}\n')
            out.flush()
        except Exception:
            logging.exception("the Synapse benchmark failed")
            status[0] = 1
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()))
    reactor.run()
    return status[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="B0: Synapse's persistence of a workload")
    parser.add_argument("database_url")
    parser.add_argument("data_dir")
    parser.add_argument("room_version")
    parser.add_argument("--closed", required=True, help="JSONL of the closed-loop phase")
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--paced", default=None, help="JSONL of the paced phase")
    parser.add_argument("--paced-rate", type=float, default=20.0)
    return _child(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
