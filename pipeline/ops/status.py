"""``roomstream status``: one screen of what an operator needs to know about a deployment.

It owns reading the pipeline's progress from where each stage keeps it, never from the processes
themselves, so it works with any number of workers and committers running, or none:

* ``pdus``: the room processors' consumer group (``<prefix>-processors``, faust's app id), its
  committed offsets against each partition's high watermark;
* ``chunks``: the committer's next offset, stored in PostgreSQL with the rows it produced,
  against the chunks topic's high watermark;
* ``invalidations``: the last stream ordering handed out, the last position published, and the
  outbox rows committed but not yet published;
* parked events: the last value per room of the processors' ``rooms`` changelog, whose
  ``parked`` list holds the events waiting for prev or auth events;
* open requests for missing events: from the same records (``requests``, the processors' ledger
  of what ``<prefix>.missing-events`` asked for and has not seen answered or expired);
* dead letters: how many the dead-letter topic holds, and the newest reasons;
* whether a committer holds the advisory lock, i.e. one is active.

``collect_status`` gathers a ``Status``; ``render_text`` and ``status_json`` present it.
"""

from __future__ import annotations

import argparse
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg2
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata

from db.migrate import check_schema
from db.outbox import committer_progress
from pipeline.committer.loop import lock_key
from pipeline.config import Settings
from pipeline.errors import MalformedMessage, RoomstreamError
from topics import dead_letter
from topics.definitions import Topic

__all__ = [
    "CommitterLock",
    "DeadLetters",
    "InvalidationProgress",
    "OpenRequest",
    "Parked",
    "PartitionLag",
    "StageLag",
    "Status",
    "Unreachable",
    "collect_status",
    "kafka_metadata",
    "main",
    "render_text",
    "status_json",
]

KAFKA_TIMEOUT_S = 5.0
PG_CONNECT_TIMEOUT_S = 5

# librdkafka logs every failed connection attempt; the error raised here says it once, better.
_quiet = logging.getLogger("roomstream.status.kafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


class Unreachable(RoomstreamError, ConnectionError):
    """Kafka or PostgreSQL cannot be reached, or holds nothing of this topic prefix."""


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    next_offset: int | None  # the consumer's next offset; None before its first commit
    low: int
    high: int

    @property
    def lag(self) -> int:
        # Before the first commit everything still in the topic is unconsumed.
        start = self.low if self.next_offset is None else max(self.next_offset, self.low)
        return max(0, self.high - start)


@dataclass(frozen=True, slots=True)
class StageLag:
    stage: str
    topic: str
    consumer: str  # who consumes it, in words an operator can look up
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True, slots=True)
class InvalidationProgress:
    topic: str
    last_stream_ordering: int  # the highest stream ordering committed
    last_published: int | None  # position of the newest invalidation message published
    unsent: int  # outbox rows committed, not yet published
    messages: int  # messages the invalidations topic holds


@dataclass(frozen=True, slots=True)
class OpenRequest:
    room_id: str
    missing: tuple[str, ...]
    needed_by: str | None
    first_seen_ts: int  # the room's logical clock (ms) when it was asked


@dataclass(frozen=True, slots=True)
class Parked:
    total: int
    rooms: int  # rooms with at least one parked event
    top: tuple[tuple[str, int], ...]  # (room_id, parked events), most first
    requests: int = 0  # open requests for missing events
    oldest_requests: tuple[OpenRequest, ...] = ()  # oldest first


@dataclass(frozen=True, slots=True)
class DeadLetter:
    offset: int
    timestamp_ms: int | None
    room_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class DeadLetters:
    topic: str
    count: int
    latest: tuple[DeadLetter, ...]  # newest last


@dataclass(frozen=True, slots=True)
class CommitterLock:
    active: bool
    pid: int | None = None  # the PostgreSQL backend holding the lock
    client: str | None = None
    since: str | None = None  # when that connection was opened (ISO 8601)


@dataclass(frozen=True, slots=True)
class Status:
    topic_prefix: str
    kafka: str
    database: str  # the URL without its password
    stages: tuple[StageLag, ...]
    invalidations: InvalidationProgress
    parked: Parked
    dead_letters: DeadLetters
    committer: CommitterLock
    notes: tuple[str, ...] = field(default=())
    divergences: int = 0  # chunk ids delivered again with other content (chunk_divergences)
    last_divergence: str | None = None

    @property
    def last_position(self) -> int:
        return self.invalidations.last_stream_ordering


# --------------------------------------------------------------------------- Kafka


def _kafka_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": _quiet}


def kafka_metadata(
    settings: Settings, topics: Sequence[str], timeout: float = KAFKA_TIMEOUT_S
) -> ClusterMetadata:
    """The cluster's metadata; Unreachable, naming the address, if the broker does not answer
    or any of ``topics`` (names under the prefix, e.g. ``pdus``) does not exist."""
    admin = AdminClient(_kafka_config(settings))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise Unreachable(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.args[0]}); is it running? "
            "Start the local stack with `roomstream stack up`, or set ROOMSTREAM_KAFKA_BOOTSTRAP"
        ) from None
    missing = [settings.topic(t) for t in topics if settings.topic(t) not in md.topics]
    if missing:
        raise Unreachable(
            f"Kafka at {settings.kafka_bootstrap} has no topic {', '.join(missing)}; "
            f"create the topics of prefix {settings.topic_prefix!r} with `roomstream topics apply`"
        )
    return md


def _partitions(md: ClusterMetadata, topic: str) -> list[int]:
    t = md.topics.get(topic)
    return sorted(t.partitions) if t is not None else []


def _watermarks(consumer: Any, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=KAFKA_TIMEOUT_S
        )
        out[p] = (int(low), int(high))
    return out


def _group_offsets(
    admin: AdminClient, group: str, topic: str, partitions: Sequence[int]
) -> dict[int, int | None]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    futures = admin.list_consumer_group_offsets([request], request_timeout=KAFKA_TIMEOUT_S)
    result = futures[group].result()
    return {
        tp.partition: None if tp.offset == OFFSET_INVALID or tp.offset < 0 else int(tp.offset)
        for tp in result.topic_partitions
    }


def _read_to_end(
    consumer: Any, topic: str, starts: dict[int, int], ends: dict[int, int]
) -> Iterator[Any]:
    """Every record of ``topic`` from ``starts`` up to the ``ends`` taken before reading."""
    pending = {p for p in starts if ends[p] > starts[p]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
    try:
        while pending:
            msg = consumer.poll(KAFKA_TIMEOUT_S)
            if msg is None:
                raise Unreachable(
                    f"no record of {topic} arrived within {KAFKA_TIMEOUT_S:.0f} s although the "
                    f"broker reports more; is Kafka overloaded?"
                )
            err = msg.error()
            p = msg.partition()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
                    continue
                raise Unreachable(f"reading {topic} failed: {err}")
            if msg.offset() + 1 >= ends[p]:
                pending.discard(p)
            if msg.offset() < ends[p]:
                yield msg
    finally:
        consumer.unassign()


def _parked(consumer: Any, md: ClusterMetadata, topic: str, top: int, oldest: int = 5) -> Parked:
    partitions = _partitions(md, topic)
    if not partitions:  # no worker has run yet
        return Parked(0, 0, ())
    marks = _watermarks(consumer, topic, partitions)
    last: dict[bytes, bytes | None] = {}
    records = _read_to_end(
        consumer,
        topic,
        {p: lo for p, (lo, _) in marks.items()},
        {p: hi for p, (_, hi) in marks.items()},
    )
    for msg in records:
        # Keep only bytes while reading: a room's state is parsed once, at its last value.
        last[msg.key() or b""] = msg.value()
    counts: dict[str, int] = {}
    requests: list[OpenRequest] = []
    for key, value in last.items():
        if not value:
            continue  # a tombstone: the room's state was deleted
        if b"\x00" in key:
            continue  # a segment of a room's state (pipeline.room.storage), never parked events
        try:
            state = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(state, dict):
            continue
        room_id = str(state.get("room_id") or key.decode("utf-8", "replace"))
        n = len(state.get("parked") or ())
        if n:
            counts[room_id] = n
        requests.extend(_open_requests(room_id, state.get("requests")))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    requests.sort(key=lambda r: (r.first_seen_ts, r.room_id, r.missing))
    return Parked(
        sum(counts.values()),
        len(counts),
        tuple(ranked[:top]),
        len(requests),
        tuple(requests[:oldest]),
    )


def _open_requests(room_id: str, stored: Any) -> Iterator[OpenRequest]:
    """The open requests of a room's stored ledger (``pipeline.room.missing``)."""
    for r in stored if isinstance(stored, list) else ():
        try:
            yield OpenRequest(
                room_id, tuple(r["missing"]), r.get("needed_by"), int(r["first_seen_ts"])
            )
        except (TypeError, KeyError, ValueError):
            continue


def _dead_letters(consumer: Any, md: ClusterMetadata, topic: str, last: int) -> DeadLetters:
    marks = _watermarks(consumer, topic, _partitions(md, topic))
    count = sum(hi - lo for lo, hi in marks.values())
    starts = {p: max(lo, hi - last) for p, (lo, hi) in marks.items()}
    letters: list[DeadLetter] = []
    for msg in _read_to_end(consumer, topic, starts, {p: hi for p, (_, hi) in marks.items()}):
        kind, ts = msg.timestamp()
        key = msg.key()
        letters.append(
            DeadLetter(
                msg.offset(),
                int(ts) if kind and ts >= 0 else None,
                key.decode("utf-8", "replace") if key else None,
                _reason(msg.value()),
            )
        )
    letters.sort(key=lambda d: (d.timestamp_ms or 0, d.offset))
    return DeadLetters(topic, count, tuple(letters[-last:] if last else ()))


def _reason(value: bytes | None) -> str:
    try:
        return dead_letter.decode(value).reason
    except MalformedMessage as e:
        return f"(not a dead-letter message: {e.reason})"


# --------------------------------------------------------------------------- PostgreSQL


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _database(settings: Settings) -> Iterator[Any]:
    try:
        conn = psycopg2.connect(settings.database_url, connect_timeout=PG_CONNECT_TIMEOUT_S)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(
            f"cannot reach PostgreSQL at {_redacted(settings.database_url)} ({first}); is it "
            "running? Start the local stack with `roomstream stack up`, or set "
            "ROOMSTREAM_DATABASE_URL"
        ) from None
    with closing(conn):
        conn.set_session(readonly=True, autocommit=True)
        yield conn


def _committer_lock(cur: Any, topic_prefix: str) -> CommitterLock:
    key = lock_key(topic_prefix)
    # A bigint advisory lock shows in pg_locks as its high and low 32 bits.
    cur.execute(
        "SELECT l.pid, host(a.client_addr), a.backend_start"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    )
    row = cur.fetchone()
    if row is None:
        return CommitterLock(False)
    pid, client, since = row
    return CommitterLock(
        True,
        int(pid),
        client or "local socket",
        since.isoformat(timespec="seconds") if isinstance(since, datetime) else None,
    )


# --------------------------------------------------------------------------- gathering


def collect_status(settings: Settings, *, top_rooms: int = 10, last_reasons: int = 5) -> Status:
    """Read every stage's progress; Unreachable when Kafka or PostgreSQL does not answer."""
    md = kafka_metadata(
        settings, [Topic.PDUS, Topic.CHUNKS, Topic.INVALIDATIONS, Topic.DEAD_LETTER]
    )
    with _database(settings) as conn:
        check_schema(conn)
        with conn.cursor() as cur:
            progress = committer_progress(cur, settings.topic(Topic.CHUNKS))
            lock = _committer_lock(cur, settings.topic_prefix)

    admin = AdminClient(_kafka_config(settings))
    consumer = Consumer(
        {
            **_kafka_config(settings),
            "group.id": f"roomstream-status-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        pdus, chunks = settings.topic(Topic.PDUS), settings.topic(Topic.CHUNKS)
        group = f"{settings.topic_prefix}-processors"
        pdu_parts = _partitions(md, pdus)
        pdu_marks = _watermarks(consumer, pdus, pdu_parts)
        committed = _group_offsets(admin, group, pdus, pdu_parts)
        chunk_marks = _watermarks(consumer, chunks, _partitions(md, chunks))
        stages = (
            StageLag(
                Topic.PDUS.value,
                pdus,
                f"room processors (consumer group {group})",
                tuple(
                    PartitionLag(p, committed.get(p), lo, hi) for p, (lo, hi) in pdu_marks.items()
                ),
            ),
            StageLag(
                Topic.CHUNKS.value,
                chunks,
                "committer (offset stored in PostgreSQL)",
                tuple(
                    # The committer consumes partition 0 only; the topic has no other.
                    PartitionLag(p, progress.next_offset if p == 0 else None, lo, hi)
                    for p, (lo, hi) in chunk_marks.items()
                ),
            ),
        )
        inv_topic = settings.topic(Topic.INVALIDATIONS)
        inv_marks = _watermarks(consumer, inv_topic, _partitions(md, inv_topic))
        invalidations = InvalidationProgress(
            inv_topic,
            progress.last_stream_ordering,
            progress.last_sent_position,
            progress.unsent_messages,
            sum(hi - lo for lo, hi in inv_marks.values()),
        )
        parked = _parked(consumer, md, f"{group}-rooms-changelog", top_rooms)
        dead = _dead_letters(consumer, md, settings.topic(Topic.DEAD_LETTER), last_reasons)
    finally:
        consumer.close()

    notes: list[str] = []
    if not lock.active and (stages[1].lag or invalidations.unsent):
        notes.append("chunks are waiting and no committer is active: start `roomstream committer`")
    if progress.divergences:
        notes.append(
            f"{progress.divergences} chunk(s) diverged from the content committed under their "
            "id (table chunk_divergences; the chunks are in the dead-letter topic)"
        )
    if stages[0].lag and all(p.next_offset is None for p in stages[0].partitions):
        notes.append("no room processor has committed an offset yet: start `roomstream worker`")
    return Status(
        settings.topic_prefix,
        settings.kafka_bootstrap,
        _redacted(settings.database_url),
        stages,
        invalidations,
        parked,
        dead,
        lock,
        tuple(notes),
        progress.divergences,
        progress.last_divergence,
    )


# --------------------------------------------------------------------------- presenting


def status_json(status: Status) -> dict[str, Any]:
    """The machine-readable form (``--json``): every figure, lags summed per stage."""
    doc = asdict(status)
    doc["stages"] = {
        s.stage: {
            "topic": s.topic,
            "consumer": s.consumer,
            "lag": s.lag,
            "partitions": [{**asdict(p), "lag": p.lag} for p in s.partitions],
        }
        for s in status.stages
    }
    doc["parked"]["top"] = [{"room_id": r, "parked": n} for r, n in status.parked.top]
    doc["missing_events"] = {
        "open_requests": status.parked.requests,
        "oldest": doc["parked"].pop("oldest_requests"),
    }
    del doc["parked"]["requests"]
    doc["last_position"] = status.last_position
    doc["notes"] = list(status.notes)
    return doc


def render_text(status: Status) -> str:
    """The operator's screen."""
    inv = status.invalidations
    out = [
        f"roomstream status: prefix {status.topic_prefix!r}, Kafka {status.kafka}, "
        f"PostgreSQL {status.database}",
        "",
        "lag",
    ]
    for s in status.stages:
        behind = [f"{p.partition}:{p.lag}" for p in s.partitions if p.lag]
        out.append(
            f"  {s.stage:<14}{s.lag:>10} behind   {s.consumer}"
            + (f"; by partition {' '.join(behind)}" if behind else "")
        )
    published = "none" if inv.last_published is None else str(inv.last_published)
    out.append(
        f"  {'invalidations':<14}{inv.unsent:>10} unsent   last published position {published}, "
        f"{inv.messages} message(s) in {inv.topic}"
    )
    out.append("")
    c = status.committer
    if c.active:
        out.append(f"committer        active (backend pid {c.pid}, {c.client}, since {c.since})")
    else:
        out.append("committer        none active")
    out.append(f"last position    {status.last_position}")
    out.append(
        f"divergences      {status.divergences}"
        + (f" (newest: chunk {status.last_divergence})" if status.last_divergence else "")
    )
    p = status.parked
    out.append(f"parked events    {p.total}" + (f" in {p.rooms} room(s)" if p.rooms else ""))
    out.extend(f"  {n:>8}  {room}" for room, n in p.top)
    out.append(
        f"missing events   {p.requests} open request(s)" + (", oldest:" if p.requests else "")
    )
    for r in p.oldest_requests:
        when = datetime.fromtimestamp(r.first_seen_ts / 1000, UTC).isoformat(timespec="seconds")
        needed_by = r.needed_by or "an event not identified yet"
        out.append(f"  {when} {r.room_id}: {', '.join(r.missing)} (needed by {needed_by})")
    d = status.dead_letters
    out.append(f"dead letters     {d.count} in {d.topic}")
    for letter in reversed(d.latest):
        when = (
            datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
            if letter.timestamp_ms is not None
            else "?"
        )
        out.append(f"  offset {letter.offset} ({when}) {letter.room_id or '-'}: {letter.reason}")
    if status.notes:
        out.append("")
        out.extend(f"note: {n}" for n in status.notes)
    return "\n".join(out)


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream status [--json]``."""
    status = collect_status(settings)
    if getattr(args, "json", False):
        print(orjson.dumps(status_json(status), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_text(status))
    return 0
