"""Running the whole pipeline on this machine: workers and a committer as child processes, a
workload produced into them, and what came out measured. Used by ``roomstream run`` and the
benchmarks.

Each run gets a topic prefix and a database of its own (``<prefix>`` and ``roomstream_<prefix>``),
so a run never mixes with an earlier one and can be repeated with the same workload.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline import pg
from pipeline.config import Settings, settings_environ
from pipeline.errors import RoomstreamError
from pipeline.kafka_clients import confluent_config, consumer_config
from pipeline.matrix.errors import MatrixError
from pipeline.matrix.hashes import compute_event_id
from pipeline.matrix.room_versions import room_version
from pipeline.ops.produce import produce_lines
from pipeline.pg import url_with_database
from topics import apply_topics, pdu_input
from topics.definitions import Topic
from topics.invalidation import decode_invalidation

ROOT = Path(__file__).resolve().parents[2]


def database_url_for(database_url: str, dbname: str) -> str:
    """``database_url`` pointing at database ``dbname`` on the same server."""
    return url_with_database(database_url, dbname)


def prepare_run(settings: Settings, prefix: str, *, partitions: int | None = None) -> Settings:
    """Settings for a fresh run: topics under ``prefix`` applied, database created and migrated."""
    from db.migrate import migrate

    dbname = f"roomstream_{prefix.replace('-', '_')}"
    s = replace(
        settings,
        topic_prefix=prefix,
        database_url=database_url_for(settings.database_url, dbname),
        pdu_partitions=partitions or settings.pdu_partitions,
    )
    conn = pg.connect(settings, "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{dbname}"')
    conn.close()
    report = apply_topics(s)
    if not report.ok:
        raise RoomstreamError("topics of the run drifted: " + "; ".join(report.drift))
    migrate(pg.database_dsn(s))
    return s


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process: ours, with every setting of ``settings`` (credentials
    included: the environment, unlike the arguments, is not readable by other users)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSTREAM_")}
    env.update(settings_environ(settings))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


@dataclass
class Cluster:
    """The child processes of a run."""

    settings: Settings
    logdir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self, command: str, *args: str, name: str, module: str = "pipeline.cli", **env: str
    ) -> Child:
        """Run ``python -m <module> <command> <args>`` with the run's settings; its output goes
        to ``<logdir>/<name>.log``."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, command, *args],
                cwd=ROOT,
                env=settings_env(self.settings, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        for c in self.children:
            if c.popen.poll() is not None:
                raise RoomstreamError(
                    f"{c.name} exited with code {c.popen.returncode}; last lines of {c.log}:\n"
                    + c.tail()
                )

    def stop(self) -> dict[str, int]:
        return {c.name: c.stop() for c in self.children}


def event_ids_of(lines: Sequence[bytes], version: str) -> list[str | None]:
    """The event ID of each line (None for a line that is not a PDU of that room version)."""
    rv = room_version(version)
    out: list[str | None] = []
    for line in lines:
        try:
            pdu = orjson.loads(line)
            out.append(compute_event_id(pdu, rv) if isinstance(pdu, dict) else None)
        except (orjson.JSONDecodeError, MatrixError, KeyError, TypeError, ValueError):
            out.append(None)
    return out


class InvalidationWatcher(threading.Thread):
    """Reads the invalidation topic; records when each event was announced (monotonic clock)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True, name="invalidation-watcher")
        self.settings = settings
        self.announced: dict[str, float] = {}
        self.messages = 0
        self.position = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._stop_event = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        consumer = self._consumer()
        self.ready.set()
        try:
            while not self._stop_event.is_set():
                for msg in consumer.consume(500, 0.1):
                    if not msg.error():
                        self._record(decode_invalidation(msg.value() or b""), time.monotonic())
        finally:
            consumer.close()

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            consumer_config(
                self.settings,
                f"watcher-{os.getpid()}-{id(self)}",
                **{"enable.auto.commit": False, "fetch.wait.max.ms": 10},
            )
        )
        consumer.assign([TopicPartition(self.settings.topic(Topic.INVALIDATIONS), 0, 0)])
        return consumer

    def _record(self, body: dict[str, Any], now: float) -> None:
        if body["position"] <= self.position:
            return
        for e in body["events"]:
            self.announced.setdefault(e["event_id"], now)
        if body.get("part", 0) < body.get("parts", 1) - 1:
            return  # the position is reached with a split message's last part
        self.position = body["position"]
        self.messages += 1
        self.first_at = self.first_at or now
        self.last_at = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def count_committed(settings: Settings) -> tuple[int, int]:
    """(events stored, invalidation messages sent) in the run's database."""
    with contextlib.closing(pg.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM events),"
            " (SELECT count(*) FROM invalidation_outbox WHERE sent)"
        )
        row = cur.fetchone()
    return int(row[0]), int(row[1])


def dead_letter_count(settings: Settings) -> int:
    consumer = Consumer(consumer_config(settings, "counter"))
    try:
        lo, hi = consumer.get_watermark_offsets(
            TopicPartition(settings.topic(Topic.DEAD_LETTER), 0), timeout=5
        )
        return int(hi - lo)
    finally:
        consumer.close()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def remove_worker_data(run: Settings) -> None:
    """Delete the local stores of a run's workers (their ids start with the run's prefix)."""
    workers = run.workers_dir
    if workers.is_dir():
        for d in workers.iterdir():
            if d.name.startswith(f"{run.topic_prefix}-"):
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def running(
    settings: Settings,
    logdir: Path,
    *,
    workers: int = 1,
    committer: bool = True,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    cluster = Cluster(settings, logdir)
    try:
        for i in range(workers):
            cluster.start(
                "worker",
                "--id",
                f"{settings.topic_prefix}-w{i + 1}",
                name=f"worker{i + 1}",
                **(worker_env or {}),
            )
        if committer:
            cluster.start("committer", name="committer")
        yield cluster
    finally:
        cluster.stop()


def produce_timed(
    settings: Settings,
    lines: Sequence[bytes],
    ids: Sequence[str | None],
    rate: float | None = None,
) -> dict[str, float]:
    """Produce ``lines``; return when each event was handed to the producer (monotonic).

    With ``rate`` (events/s), lines are paced at that rate; otherwise sent as fast as possible.
    """
    if rate is not None:
        return produce_paced(settings, list(zip(ids, lines, strict=True)), rate)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for eid in ids:
        if eid:
            sent[eid] = start
    produce_lines(settings, lines, show_progress=False)
    return sent


PacedClock = Literal["monotonic", "wall"]


def produce_paced(
    settings: Settings,
    events: Sequence[tuple[str | None, bytes]],
    rate: float,
    *,
    clock: PacedClock = "monotonic",
    received_ts: bool = False,
    sent: dict[str, float] | None = None,
) -> dict[str, float]:
    """Produce ``events`` ((event_id or None, line)) one at a time, evenly spaced at ``rate``
    events/s with linger 0, as front ends produce them; when each event was produced, in ``sent``
    (filled as it goes, so another thread may read it) and returned.

    ``clock`` says which time that is: ``"monotonic"``, when the producer was handed the event
    (``time.monotonic()``, for comparing with other monotonic readings of this process);
    ``"wall"``, the wall-clock time stamped into its ``received_ts`` header (``time.time()``,
    for comparing with the broker's record timestamps). ``received_ts`` stamps that header with
    the wall clock under the monotonic clock too; the wall clock always stamps it.
    """
    from pipeline.ops.produce import make_producer

    sent = {} if sent is None else sent
    producer = make_producer(settings, **{"linger.ms": 0})
    topic = settings.topic(Topic.PDUS)
    start = time.monotonic()
    for i, (eid, line) in enumerate(events):
        due = start + i / rate
        while (now := time.monotonic()) < due:
            producer.poll(min(due - now, 0.005))
        at = time.time()
        stamp = int(at * 1000) if received_ts or clock == "wall" else None
        record = pdu_input.encode(line, received_ts=stamp)
        producer.produce(topic, value=record.value, key=record.key, headers=record.headers)
        if eid:
            sent[eid] = at if clock == "wall" else time.monotonic()
        producer.poll(0)
    producer.flush(60)
    return sent


def describe_group(admin: AdminClient, group: str, timeout: float = 10.0) -> Any | None:
    """The description of consumer group ``group``, or None when the broker cannot say now.

    A broker that has just started answers COORDINATOR_LOAD_IN_PROGRESS for a while, and a
    loaded one may not answer within ``timeout`` (the future then raises ``TimeoutError``, with
    no message): callers ask again until a deadline of their own.
    """
    try:
        return admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(
            timeout + 1.0
        )
    except (KafkaException, TimeoutError):
        return None


def wait_for_workers(run: Settings, cluster: Cluster, timeout: float = 120.0) -> None:
    """Wait until every worker of ``cluster`` is a member of the processors' group and the group
    is stable: a worker joining later would rebalance the group in the middle of a measurement,
    pausing every partition while the others finish what they hold."""

    workers = sum(1 for c in cluster.children if c.name.startswith("worker"))
    group = f"{run.topic_prefix}-processors"
    admin = AdminClient(confluent_config(run))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        described = describe_group(admin, group)
        if (
            described is not None
            and described.state == ConsumerGroupState.STABLE
            and len(described.members) >= workers
        ):
            return
        time.sleep(0.5)
    raise RoomstreamError(
        f"the {workers} worker(s) did not all join consumer group {group} within {timeout:.0f} s"
    )


def wait_until(
    done: Callable[[], bool],
    timeout: float,
    cluster: Cluster | None = None,
    tick: Callable[[], None] | None = None,
    interval: float = 0.5,
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick:
            tick()
        if done():
            return True
        if cluster:
            cluster.check_alive()
        time.sleep(interval)
    return done()


def describe_exit(codes: dict[str, int]) -> str:
    return ", ".join(f"{k} exit {v}" for k, v in codes.items())
