"""``roomstream produce FILE.jsonl``: produce PDUs to ``<prefix>.pdus``, keyed by room_id.

Lines are sent as they are (a bad line is the workers' to dead-letter, with its reason), keyed by
the PDU's room_id and partitioned with Java's murmur2 so the room's owner reads it first time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline.config import Settings
from pipeline.errors import RoomstreamError
from pipeline.kafka_clients import producer_config
from pipeline.progress import ProgressLine
from topics import pdu_input
from topics.definitions import Topic


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(
        producer_config(
            settings,
            **{
                "compression.type": "lz4",
                # Java's partitioner: the same partition faust and aiokafka compute for a room key.
                "partitioner": "murmur2_random",
                **extra,
            },
        )
    )


def produce_lines(
    settings: Settings,
    lines: Iterable[bytes],
    *,
    total: int | None = None,
    show_progress: bool = True,
    stamp_received: bool = True,
) -> int:
    """Produce every non-empty line; returns how many. Raises when any delivery fails."""
    producer = make_producer(settings)
    topic = settings.topic(Topic.PDUS)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    progress = ProgressLine("produced", total=total, enabled=show_progress)
    n = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        record = pdu_input.encode(
            line, received_ts=int(time.time() * 1000) if stamp_received else None
        )
        while True:
            try:
                producer.produce(
                    topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers or None,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
            progress.update(n)
    remaining = producer.flush(60)
    progress.update(n, final=True)
    if remaining or failures:
        raise RoomstreamError(
            f"{remaining + len(failures)} of {n} messages were not delivered to {topic}"
            + (f" (first error: {failures[0]})" if failures else "")
            + f"; check that Kafka at {settings.kafka_bootstrap} is up and the topic exists "
            "(roomstream topics apply)"
        )
    return n


def main(args: Any, settings: Settings) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise RoomstreamError(f"{path}: no such file; give a JSON-lines file of PDUs")
    with path.open("rb") as f:
        total = sum(1 for line in f if line.strip())
    with path.open("rb") as f:
        n = produce_lines(settings, f, total=total)
    print(f"produced {n} PDUs to {settings.topic(Topic.PDUS)}", file=sys.stderr)
    return 0
