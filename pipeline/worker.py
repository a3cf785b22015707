"""The room processor worker: a faust app around ``pipeline.room.processor.RoomProcessor``.

What it holds (and nothing else): routing, per-room queues, offsets, retries, the table.

1. One agent reads ``<prefix>.pdus``. An input whose room's owner partition (Java's murmur2 of the
   room ID, as aiokafka and faust partition) is not the partition it was read from is forwarded
   there unchanged and acked: one owner per room whatever partitioner the producer used.
2. Inputs that name no room (bad JSON, no room_id) go to ``<prefix>.dead-letter`` with a reason.
3. Everything else is queued on its room. Each room drains its queue in arrival order in a task
   of its own, running the pure processor in a thread, so one room's slow state resolution does
   not hold up other rooms of the same partition, nor the event loop that serves the others.
4. Per input, the room task: processes it; sends the chunk and any dead letters and waits for the
   broker's acknowledgement; then stores the room's new state in the ``rooms`` table (changelog);
   then acks the input. faust commits an offset only once every input before it is acked, and
   flushes the changelog first.

Crash at any point: the input is delivered again and processed against the last stored state.
Processing is deterministic, so it yields the same chunk (same chunk id, same state group ids),
which the committer drops as already committed; an input whose state change was stored is a
duplicate to the processor and yields nothing. Nothing is lost and nothing takes effect twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from pipeline import metrics
from pipeline.config import Settings
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import (
    BatchResult,
    DeadLetter,
    Incoming,
    ProcessorConfig,
    RoomProcessor,
)
from pipeline.room.routing import room_id_of

log = logging.getLogger("roomstream.worker")

# Inputs queued in rooms but not processed yet; the agent waits above this.
MAX_IN_FLIGHT = 5000
# Inputs of one room taken into one trip to a processing thread (still one chunk each).
MAX_ROOM_BATCH = 200
# Room processors kept deserialised; the table keeps every room's bytes regardless.
PROCESSOR_CACHE = 2000


class _SlowResolution(RoomProcessor):
    """A room processor whose state resolutions take ``DEBUG_SLOW_S`` seconds more, of CPU.

    For the isolation test and benchmark only (ROOMSTREAM_DEBUG_SLOW_ROOM): it burns CPU in the
    room's thread, as an expensive resolution does, rather than sleeping.
    """

    slow_s = 0.0

    def _resolve(self, state_sets: Any) -> Any:
        deadline = time.process_time() + self.slow_s
        while time.process_time() < deadline:
            sum(range(1000))
        return super()._resolve(state_sets)


def owner_partition(room_id: str, partitions: int) -> int:
    """The partition that owns ``room_id``: Java's default partitioner (murmur2, positive mod)."""
    return int(murmur2(room_id.encode()) & 0x7FFFFFFF) % partitions


def dead_letter_message(
    reason: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Any = None,
    event_id: str | None = None,
) -> bytes:
    """The dead-letter JSON of DESIGN.md: reason, source, key, and the original value."""
    msg: dict[str, Any] = {
        "reason": reason,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": _text(key),
        "event_id": event_id,
        "headers": {k: _text(v) for k, v in (_headers(headers))},
        "dead_lettered_ts": int(time.time() * 1000),
    }
    value = value or b""
    try:
        msg["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        msg["value_b64"] = base64.b64encode(value).decode()
    return orjson.dumps(msg)


def _text(b: bytes | None) -> str | None:
    if b is None:
        return None
    return b.decode("utf-8", errors="replace")


def _headers(headers: Any) -> list[tuple[str, bytes | None]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) or v is None else str(v).encode()) for k, v in items]


def _received_ts(headers: Any, fallback_ms: int) -> int:
    for k, v in _headers(headers):
        if k == "received_ts" and v:
            try:
                return int(v)
            except ValueError:
                break
    return fallback_ms


@dataclass
class _Room:
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class Worker:
    """The faust app of one worker process, and the room tasks it runs."""

    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        datadir = settings.stack_dir / "workers" / self.worker_id
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            f"{settings.topic_prefix}-processors",
            broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
            store="memory://",
            datadir=str(datadir),
            topic_partitions=settings.pdu_partitions,
            topic_replication_factor=1,
            processing_guarantee="at_least_once",
            broker_commit_every=1000,
            broker_commit_interval=2.0,
            producer_linger=0.005,
            producer_max_batch_size=512 * 1024,
            consumer_auto_offset_reset="earliest",
            # On revocation faust waits until every input taken is acked (room tasks finish
            # their batch, send, store), then flushes the changelog: the next owner never
            # starts from a state older than chunks already sent.
            stream_wait_empty=True,
            web_enabled=False,
            table_standby_replicas=0,
            producer_acks=-1,
            # aiokafka's default partitioner (murmur2) for table changelogs and forwarding.
        )
        self.pdus = self.app.topic(
            settings.topic("pdus"),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.chunks = self.app.topic(
            settings.topic("chunks"),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.dead_letter = self.app.topic(
            settings.topic("dead-letter"),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.rooms_table = self.app.Table(
            "rooms",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.pdu_partitions,
        )
        self.config = ProcessorConfig(
            parking=ParkingLimits(
                per_room=settings.park_max_per_room,
                total=settings.park_max_total,
                ttl_ms=int(settings.park_expiry_s * 1000),
            )
        )
        self.budget = ParkingBudget(settings.park_max_total)
        self.slow_room = os.environ.get("ROOMSTREAM_DEBUG_SLOW_ROOM")
        _SlowResolution.slow_s = float(os.environ.get("ROOMSTREAM_DEBUG_SLOW_S", "5"))
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="room")
        self.rooms: dict[str, _Room] = {}
        self.cache: OrderedDict[str, tuple[bytes, RoomProcessor]] = OrderedDict()
        self.in_flight = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self.capacity = asyncio.Event()
        self.capacity.set()
        self.app.agent(self.pdus, name="rooms")(self._agent)
        self.app.timer(interval=5.0)(self._expire_parked)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    # ------------------------------------------------------------------ the agent

    async def _agent(self, stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            self._route(event, message)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.capacity.clear()
                await self.capacity.wait()

    def _route(self, event: Any, message: Any) -> None:
        room_id = room_id_of(message.value) if message.value is not None else None
        if room_id is None:
            self._spawn(self._dead_letter_unroutable(event))
            return
        owner = owner_partition(room_id, self.settings.pdu_partitions)
        if owner != message.partition:
            self._spawn(self._forward(event, room_id, owner))
            return
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room()
        room.queue.put_nowait(event)
        self.in_flight += 1
        if room.task is None or room.task.done():
            room.task = asyncio.ensure_future(self._drain(room_id, room))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, event: Any, room_id: str, owner: int) -> None:
        m = event.message
        fut = await self.pdus.send(
            key=room_id.encode(), value=m.value, partition=owner, headers=m.headers
        )
        await fut
        metrics.FORWARDED.inc()
        event.ack()

    async def _dead_letter_unroutable(self, event: Any) -> None:
        m = event.message
        reason = _unroutable_reason(m.value)
        await self._send_dead_letter(reason, m, key=None)
        event.ack()

    async def _send_dead_letter(
        self,
        reason: str,
        m: Any,
        *,
        key: str | None,
        event_id: str | None = None,
        value: bytes | None = None,
    ) -> None:
        body = dead_letter_message(
            reason,
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=m.key,
            value=m.value if value is None else value,
            headers=m.headers,
            event_id=event_id,
        )
        fut = await self.dead_letter.send(key=key.encode() if key else None, value=body)
        await fut
        metrics.DEAD_LETTERED.inc()

    # ------------------------------------------------------------------ rooms

    async def _drain(self, room_id: str, room: _Room) -> None:
        loop = asyncio.get_running_loop()
        while not room.queue.empty():
            events: list[Any] = []
            while not room.queue.empty() and len(events) < MAX_ROOM_BATCH:
                events.append(room.queue.get_nowait())
            try:
                await self._process_batch(loop, room_id, events)
            finally:
                self.in_flight -= len(events)
                if self.in_flight < MAX_IN_FLIGHT // 2:
                    self.capacity.set()
        if room.queue.empty():
            self.rooms.pop(room_id, None)

    def _processor(self, room_id: str) -> RoomProcessor:
        stored = self.rooms_table.data.get(room_id.encode())
        cached = self.cache.get(room_id)
        if cached is not None:
            if cached[0] is stored:
                self.cache.move_to_end(room_id)
                return cached[1]
            self._forget(room_id)
        cls = _SlowResolution if room_id == self.slow_room else RoomProcessor
        if stored is None:
            return cls(room_id, config=self.config, budget=self.budget)
        return cls.from_dict(orjson.loads(stored), config=self.config, budget=self.budget)

    async def _process_batch(
        self, loop: asyncio.AbstractEventLoop, room_id: str, events: list[Any]
    ) -> None:
        """Process the room's queued inputs one by one (one chunk each, as a replay would), in
        one trip to a thread; send every output and wait for the broker; store the room's state
        once; then ack them all."""
        # An input of a partition revoked meanwhile is left unacked: its new owner has it.
        current = [e for e in events if e.message.generation_id == self.app.consumer_generation_id]
        if not current:
            return
        proc = self._processor(room_id)
        now = int(time.time() * 1000)
        incomings = [
            Incoming(
                e.message.value,
                received_ts=_received_ts(
                    e.message.headers,
                    int(e.message.timestamp * 1000) if e.message.timestamp else now,
                ),
                source={"partition": e.message.partition, "offset": e.message.offset},
            )
            for e in current
        ]

        def work() -> tuple[list[BatchResult], bytes]:
            results = []
            for incoming in incomings:
                started = time.perf_counter()
                results.append(proc.process([incoming], now=now))
                metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
            return results, orjson.dumps(proc.to_dict())

        results, state = await loop.run_in_executor(self.pool, work)
        pending: list[Any] = []
        for result, event in zip(results, current, strict=True):
            pending += await self._emit(room_id, result, event.message)
        for fut in pending:
            await fut
        self._store(room_id, state, proc, current[0].message.partition)
        metrics.PARKED.set(self.budget_used())
        for event in current:
            event.ack()

    async def _emit(self, room_id: str, result: BatchResult, m: Any) -> list[Any]:
        """Hand the result's chunk and dead letters to the producer; return their futures."""
        pending = []
        if result.chunk is not None:
            pending.append(
                await self.chunks.send(key=room_id.encode(), value=result.chunk.to_json())
            )
            metrics.CHUNK_EVENTS.observe(len(result.chunk.events))
            for ce in result.chunk.events:
                if ce.rejected:
                    metrics.EVENTS.labels("rejected").inc()
                elif ce.soft_failed:
                    metrics.EVENTS.labels("soft_failed").inc()
                else:
                    metrics.EVENTS.labels("accepted").inc()
        for dl in result.dead_letters:
            pending.append(await self._send_dead_letter_of(room_id, dl, m))
        if result.duplicates:
            metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        return pending

    async def _send_dead_letter_of(self, room_id: str, dl: DeadLetter, m: Any) -> Any:
        src = dl.source or {}
        raw = dl.raw
        value = (
            raw
            if isinstance(raw, bytes)
            else (raw.encode() if isinstance(raw, str) else orjson.dumps(raw))
        )
        body = dead_letter_message(
            dl.reason,
            topic=m.topic,
            partition=int(src.get("partition", m.partition)),
            offset=int(src.get("offset", m.offset)),
            key=room_id.encode(),
            value=value,
            headers=m.headers if src.get("offset", m.offset) == m.offset else None,
            event_id=dl.event_id,
        )
        metrics.DEAD_LETTERED.inc()
        return await self.dead_letter.send(key=room_id.encode(), value=body)

    def _store(self, room_id: str, state: bytes, proc: RoomProcessor, partition: int) -> None:
        key = room_id.encode()
        # Set the table's data and changelog directly: room tasks run outside faust's stream
        # iteration, where Table.__setitem__ cannot tell the partition.
        self.rooms_table.data[key] = state
        self.rooms_table.send_changelog(partition, key, state)
        self.cache[room_id] = (state, proc)
        self.cache.move_to_end(room_id)
        if len(self.cache) > PROCESSOR_CACHE:
            # Rooms with parked events stay: the parking budget counts what is in memory.
            for rid in [r for r, (_, p) in self.cache.items() if not p.parked()]:
                if len(self.cache) <= PROCESSOR_CACHE:
                    break
                del self.cache[rid]

    def _forget(self, room_id: str) -> None:
        _, proc = self.cache.pop(room_id)
        self.budget.used = max(0, self.budget.used - len(proc.parked()))

    def budget_used(self) -> int:
        return self.budget.used

    async def _expire_parked(self) -> None:
        """Dead-letter parked events past their expiry, in rooms that see no new input."""
        # Only rooms this worker holds in memory are checked here; a room's parked events are
        # also expired whenever it processes an input.
        now = int(time.time() * 1000)
        for room_id, (state, proc) in list(self.cache.items()):
            if not proc.parked() or room_id in self.rooms:
                continue
            if self.rooms_table.data.get(room_id.encode()) is not state:
                continue
            ttl = proc.config.parking.ttl_ms
            if not any(p.parked_at + ttl <= now for p in proc.parked()):
                continue
            result = proc.expire(now)
            for dl in result.dead_letters:
                body = dead_letter_message(
                    dl.reason,
                    topic=self.settings.topic("pdus"),
                    partition=int((dl.source or {}).get("partition", -1)),
                    offset=int((dl.source or {}).get("offset", -1)),
                    key=room_id.encode(),
                    value=dl.raw if isinstance(dl.raw, bytes) else str(dl.raw).encode(),
                    event_id=dl.event_id,
                )
                await (await self.dead_letter.send(key=room_id.encode(), value=body))
                metrics.DEAD_LETTERED.inc()
            partition = owner_partition(room_id, self.settings.pdu_partitions)
            self._store(room_id, orjson.dumps(proc.to_dict()), proc, partition)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Rooms of revoked partitions move to another owner, which rebuilds them from the
        # changelog; cached processors here may be stale from now on.
        for room_id in list(self.cache):
            self._forget(room_id)


def _unroutable_reason(value: bytes | None) -> str:
    if value is None:
        return "the message has no value (a tombstone); a PDU was expected"
    try:
        pdu = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        return f"the value is not valid JSON ({e}); produce one PDU as a JSON object per message"
    if not isinstance(pdu, dict):
        return f"the value is JSON {type(pdu).__name__}, not an object; a PDU is a JSON object"
    if "room_id" not in pdu:
        return "the PDU has no room_id (only a room version 12 create event may omit it)"
    return f"the PDU's room_id {pdu.get('room_id')!r} is not a room ID"


def main(args: Any, settings: Settings) -> int:
    """``roomstream worker``: run one room processor until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics.serve(getattr(args, "web_port", None) or settings.metrics_port)
    worker = Worker(settings, getattr(args, "id", None))
    _FaustWorker(worker.app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0


class _FaustWorker(faust.Worker):  # type: ignore[misc]  # faust ships no types for it
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # faust's terminal spinner handler sets the root logger to DEBUG, so every debug call
        # of faust and aiokafka (several per record sent) built a record nobody printed.
        self.spinner = None
        logger.setLevel(level)
