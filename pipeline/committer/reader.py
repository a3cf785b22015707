"""Step 1 of the committer: batches of chunks read from the chunks partition and decoded.

A batch holds up to ``most`` records and ``max_bytes`` of their values (at least one record,
however large). It is taken as it is: the reader waits up to ``poll_timeout`` for one record,
then takes what else is already fetched, so a batch never waits to fill. Under load records pile
up while the previous batch commits, so batches grow by themselves, and a lone chunk is
committed at once. A record that is not a chunk stays in its batch with the reason, to be
dead-lettered; an error of the consumer that retrying cannot fix raises KafkaException.

Reading runs on the committer's thread. Decoding the next batch on a thread of its own, while
PostgreSQL writes the one before, was measured: the two threads contending for the
interpreter lock cost more CPU per event than decoding costs, and gained no throughput.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from db.chunk_marks import chunk_seq
from pipeline import metrics
from pipeline.errors import MalformedMessage
from pipeline.matrix.errors import UnknownRoomVersion
from pipeline.matrix.room_versions import room_version
from topics.chunk import CommitChunk, decode_for_commit

__all__ = ["Batch", "ChunkReader", "decode_batch", "split_batches"]

log = logging.getLogger(__name__)

# Consumer errors that only say a broker connection went or came back (the connection log
# reports those) or that the end of the partition was reached.
_QUIET_ERRORS = (KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
# What a record that is not a chunk raises while it is read.
_UNREADABLE = (
    MalformedMessage,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    UnknownRoomVersion,
)


@dataclass(slots=True)
class Batch:
    """Decoded records, in offset order: each with its chunk, or why it is not one."""

    items: list[tuple[KafkaMessage, CommitChunk | None, str | None]] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def chunks(self) -> list[tuple[KafkaMessage, CommitChunk]]:
        return [(rec, c) for rec, c, _ in self.items if c is not None]

    @property
    def unreadable(self) -> list[tuple[KafkaMessage, str]]:
        return [(rec, why) for rec, _, why in self.items if why is not None]


def decode_batch(records: Sequence[KafkaMessage]) -> Batch:
    """The records as chunks. Error records are skipped (a fatal one raises KafkaException);
    a record that is not a chunk stays in the batch with the reason, to be dead-lettered."""
    batch = Batch()
    for rec in records:
        err = rec.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            # Broker connections going and coming are told once by the connection log.
            if err.code() not in _QUIET_ERRORS:
                log.warning("chunks consumer: %s", err)
            continue
        topic, partition, offset = rec.topic(), rec.partition(), rec.offset()
        if topic is None or partition is None or offset is None:
            continue  # only error records lack these, and those were skipped above
        batch.next_offsets[(topic, partition)] = offset + 1
        try:
            chunk = decode_for_commit(rec.value() or b"")
            room_version(chunk.room_version)
            chunk_seq(chunk)
        except _UNREADABLE as exc:
            batch.items.append((rec, None, f"chunk could not be read: {exc!r}"))
        else:
            batch.items.append((rec, chunk, None))
    return batch


def split_batches(
    records: Sequence[KafkaMessage], most: int, max_bytes: int
) -> list[list[KafkaMessage]]:
    """``records`` in order, cut into runs of at most ``most`` records and ``max_bytes`` of
    values; a record larger than ``max_bytes`` makes a run of its own."""
    runs: list[list[KafkaMessage]] = []
    run: list[KafkaMessage] = []
    size = 0
    for rec in records:
        n = len(rec.value() or b"")
        if run and (len(run) >= most or size + n > max_bytes):
            runs.append(run)
            run, size = [], 0
        run.append(rec)
        size += n
    if run:
        runs.append(run)
    return runs


class ChunkReader:
    """Hands out the chunks partition's records as decoded batches, in offset order."""

    def __init__(
        self, consumer: Consumer, *, most: int, max_bytes: int, poll_timeout: float
    ) -> None:
        self.consumer = consumer
        self.most = max(1, most)
        self.max_bytes = max_bytes
        self.poll_timeout = poll_timeout
        self._left: list[KafkaMessage] = []  # taken, beyond the last batch's bounds

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next batch, or None when no record came within ``timeout`` (default
        ``poll_timeout``)."""
        records = self._left or self._take(self.poll_timeout if timeout is None else timeout)
        if not records:
            return None
        first, *rest = split_batches(records, self.most, self.max_bytes)
        self._left = [rec for run in rest for rec in run]
        return decode_batch(first)

    def committed(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Tell Kafka the offsets committed up to (step 5: for lag monitoring only)."""
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=True,
        )
        for (t, p), o in next_offsets.items():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            if high is not None and high >= 0:
                metrics.CONSUMER_LAG.labels("committer", str(p)).set(max(0, high - o))

    def _take(self, timeout: float) -> list[KafkaMessage]:
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        rest: list[KafkaMessage] = (
            self.consumer.consume(num_messages=self.most - 1, timeout=0) if self.most > 1 else []
        )
        return [first, *rest]
