"""The floor: the same PDUs moved from Kafka into PostgreSQL with no Matrix logic at all.

It is the baseline of the throughput benchmarks: what this machine's broker, client library
and database can do for the same rows when nothing is validated, authorised or resolved. A
consumer process (``python -m pipeline.bench.floor``, started by ``measure_floor``) reads the
run's PDU topic with confluent-kafka, takes batches of what is fetched (up to the committer's
batch size), and for each batch COPYs the events table's columns and the event_json rows into
the run's own database (the real tables of the schema, with their indexes) in one
transaction. The only per-event work beyond copying bytes is parsing the JSON and computing
the event ID, which the rows need.

The time runs from the first produce to the commit of the last row, as the pipeline's runs
from the first produce to the last invalidation.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline import pg
from pipeline.bench.cpu import CpuSampler
from pipeline.bench.report import CpuRow
from pipeline.bench.runs import cleanup, fresh_run, stack_groups
from pipeline.config import Settings, load_settings
from pipeline.dev.local import ROOT, settings_env
from pipeline.errors import RoomstreamError
from pipeline.kafka_clients import confluent_config
from pipeline.matrix.hashes import compute_event_id
from pipeline.matrix.room_versions import room_version
from pipeline.ops.produce import produce_lines
from topics import pdu_input
from topics.definitions import Topic

CONSUMER = "floor consumer"
EVENT_COLUMNS = (
    "stream_ordering, topological_ordering, event_id, room_id, type, state_key, sender,"
    " origin_server_ts, received_ts, format_version, rejection_reason, soft_failed, outlier"
)


@dataclass(frozen=True, slots=True)
class FloorResult:
    rows: int
    seconds: float
    cpu: list[CpuRow]
    consumer_cpu_s: float = float("nan")  # the floor consumer's own CPU time

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def _text(value: object) -> str:
    """A value in COPY's text format."""
    if value is None:
        return "\\N"
    s = str(value)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy(cur: object, table: str, columns: str, rows: Sequence[Sequence[object]]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(_text(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)  # type: ignore[attr-defined]


def consume(
    settings: Settings, expect: int, version: str, idle_timeout: float = 120.0
) -> tuple[float, float]:
    """Consume until ``expect`` rows are committed.

    Returns the monotonic time of the last commit and the CPU seconds spent since ready (the
    process is gone before its parent's last CPU sample, so it reports its own).
    """
    rv = room_version(version)
    fmt = int(rv.event_format)
    topic = settings.topic(Topic.PDUS)
    consumer = Consumer(
        {
            **confluent_config(settings),
            "group.id": f"{settings.topic_prefix}.floor",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.pdu_partitions)]
    )
    conn = pg.connect(settings)
    written = 0
    cpu_at_start = time.process_time()
    last_commit = time.monotonic()
    idle_since = time.monotonic()
    print("ready", flush=True)
    try:
        while written < expect:
            # One record, then what else is fetched: consume(n, timeout) would wait for n.
            first = consumer.poll(0.2)
            batch = [first, *consumer.consume(settings.commit_batch_max - 1, 0)] if first else []
            msgs = [m for m in batch if m.error() is None]
            if not msgs:
                if time.monotonic() - idle_since > idle_timeout:
                    raise RoomstreamError(f"floor: only {written} of {expect} rows arrived")
                continue
            idle_since = time.monotonic()
            events: list[tuple[object, ...]] = []
            jsons: list[tuple[object, ...]] = []
            for m in msgs:
                value = m.value() or b""
                pdu = orjson.loads(value)
                event_id = compute_event_id(pdu, rv)
                received = pdu_input.received_ts_of(m.headers())
                written += 1
                events.append(
                    (
                        written,
                        pdu["depth"],
                        event_id,
                        pdu["room_id"],
                        pdu["type"],
                        pdu.get("state_key"),
                        pdu["sender"],
                        pdu.get("origin_server_ts"),
                        received,
                        fmt,
                        None,
                        "f",
                        "f",
                    )
                )
                jsons.append((event_id, pdu["room_id"], fmt, value.decode()))
            with conn.cursor() as cur:
                _copy(cur, "events", EVENT_COLUMNS, events)
                _copy(cur, "event_json", "event_id, room_id, format_version, json", jsons)
            conn.commit()
            last_commit = time.monotonic()
            consumer.commit(asynchronous=True)
    finally:
        consumer.close()
        conn.close()
    return last_commit, time.process_time() - cpu_at_start


def measure_floor(
    settings: Settings, lines: Sequence[bytes], version: str, timeout: float = 600.0
) -> FloorResult:
    """Produce ``lines`` to a fresh run's PDU topic and time the floor consumer over them."""
    run = fresh_run(settings, "floor")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.bench.floor", str(len(lines)), version],
            cwd=ROOT,
            env=settings_env(run),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if first.strip() != "ready":
                raise RoomstreamError(f"the floor consumer did not start: {first.strip()}")
            groups = {CONSUMER: lambda: [proc.pid], **stack_groups(settings)}
            groups["bench process (producer)"] = lambda: [os.getpid()]
            sampler = CpuSampler(groups)
            sampler.start()
            started = time.monotonic()
            produce_lines(run, lines, show_progress=False)
            out, _ = proc.communicate(timeout=timeout)
            cpu = sampler.stop()
            if proc.returncode != 0:
                raise RoomstreamError(f"the floor consumer failed: {out.strip()[-500:]}")
            done = orjson.loads(out.strip().splitlines()[-1])
            seconds = float(done["done_at"]) - started
            own = 100.0 * float(done["cpu_s"]) / seconds
            cpu = sorted(
                [
                    CpuRow(c.process, own, max(c.peak, own)) if c.process == CONSUMER else c
                    for c in cpu
                ],
                key=lambda c: (c.process.startswith(("machine", "everything")), -c.average),
            )
            return FloorResult(int(done["rows"]), seconds, cpu, float(done["cpu_s"]))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        cleanup(run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the floor consumer of the benchmarks")
    parser.add_argument("expect", type=int)
    parser.add_argument("room_version")
    args = parser.parse_args(argv)
    done_at, cpu_s = consume(load_settings(), args.expect, args.room_version)
    print(
        orjson.dumps({"rows": args.expect, "done_at": done_at, "cpu_s": cpu_s}).decode(),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
