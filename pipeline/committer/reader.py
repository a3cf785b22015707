"""Step 1 of the committer, done ahead: the chunks partition read and decoded in a thread.

While the committer's thread waits for PostgreSQL to write one batch, this thread polls and
decodes the next one, so reading costs the committer no time of its own. Only reading is done
ahead: batches are handed over in offset order, and all that decides or writes (stream
orderings, rows, the outbox, dead letters, the stored read position) stays on the committer's
thread, batch after batch. A batch read ahead and never committed is read again by the next
active committer, from the offset stored in PostgreSQL.

A batch holds up to ``most`` records and ``max_bytes`` of their values (at least one record,
however large). The consumer belongs to this thread, so it also tells Kafka the offsets the
committer has committed (step 5, for lag monitoring only). An error of the consumer that
retrying cannot fix is handed over in place of a batch, and raised on the committer's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
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

__all__ = ["DEPTH", "Batch", "ChunkReader", "decode_batch", "split_batches"]

log = logging.getLogger(__name__)

DEPTH = 1  # batches decoded ahead of the one being committed
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


class ChunkReader(threading.Thread):
    """Reads and decodes batches ahead; ``next_batch`` hands them over in order."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        most: int,
        max_bytes: int,
        poll_timeout: float,
        depth: int = DEPTH,
    ) -> None:
        super().__init__(daemon=True, name="chunk-reader")
        self.consumer = consumer
        self.most = max(1, most)
        self.max_bytes = max_bytes
        self.poll_timeout = poll_timeout
        self._ready: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=max(1, depth))
        self._halt = threading.Event()
        self._committed: dict[tuple[str, int], int] | None = None
        self._told: dict[tuple[str, int], int] | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._tell_kafka()
                records = self._take()
                for run in split_batches(records, self.most, self.max_bytes):
                    self._hand_over(decode_batch(run))
        except BaseException as exc:  # raised again on the committer's thread
            self._hand_over(exc)

    def next_batch(self, timeout: float) -> Batch | None:
        """The next batch in offset order, or None when none came within ``timeout``; raises
        what stopped the reader."""
        try:
            item = self._ready.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._halt.set()
            raise item
        return item

    def committed(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """The offsets the committer has committed up to, for Kafka (informational)."""
        self._committed = next_offsets

    def halt(self) -> None:
        """Stop reading; returns once the thread is done with the consumer."""
        self._halt.set()
        self.join(self.poll_timeout + 10)

    def _take(self) -> list[KafkaMessage]:
        """Wait up to ``poll_timeout`` for one record, then take what else is already fetched.

        A batch never waits to fill: under load records pile up while the previous batch
        commits, so batches grow by themselves, and a lone chunk is committed at once.
        """
        first = self.consumer.poll(self.poll_timeout)
        if first is None:
            return []
        rest: list[KafkaMessage] = (
            self.consumer.consume(num_messages=self.most - 1, timeout=0) if self.most > 1 else []
        )
        return [first, *rest]

    def _hand_over(self, item: Batch | BaseException) -> None:
        while not self._halt.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _tell_kafka(self) -> None:
        offsets = self._committed
        if offsets is None or offsets is self._told:
            return
        self._told = offsets
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=True,
        )
        for (t, p), o in offsets.items():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)
            if high is not None and high >= 0:
                metrics.CONSUMER_LAG.labels("committer", str(p)).set(max(0, high - o))
