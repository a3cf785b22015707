"""The room processor worker: a faust app around ``pipeline.room.processor.RoomProcessor``.

What it holds (and nothing else): routing, per-room queues, offsets, retries, the table.

1. One agent reads ``<prefix>.pdus``. An input whose room's owner partition (Java's murmur2 of the
   room ID, as aiokafka and faust partition) is not the partition it was read from is forwarded
   there unchanged and acked: one owner per room whatever partitioner the producer used.
2. Inputs that name no room (bad JSON, no room_id) go to ``<prefix>.dead-letter`` with a reason.
3. Everything else is queued on its room. A room with queued inputs and no job under way sends
   them, as one job, to a few long-lived processing threads (``room_threads``), which
   run the pure processor off the event loop: one room's slow state resolution holds one thread
   while the others go on with the other rooms, of any partition. Each input of a job is still
   processed on its own (one chunk each, as a replay would). A large state resolution goes
   further, to a process of its own (``resolve_pool``): in a thread it would hold the
   interpreter's lock and slow every other room down with it.
4. Per job, back on the loop: send its chunks and dead letters and wait for the broker's
   acknowledgement; then the room's next job may start. The room's inputs stay unacked until
   its state is stored in the ``rooms`` table (the changelog record handed to the producer),
   then they are acked. The state is stored as a record and append-only segments
   (``pipeline.room.storage``), so a store writes what is new, not the room's history. A job
   ends with the room's state when the room's first unstored input
   is ``STORE_INTERVAL_S`` old, when ``MAX_UNSTORED`` inputs wait, or when a rebalance or a stop
   waits; an idle room due a store gets a job of its own. So a room that sees an input every few
   milliseconds writes its state a few times a second, not per input, while chunks still leave
   as soon as each input is processed. faust commits an offset
   only once every input before it is acked, and flushes the producer first.

Crash at any point: every input the last stored state does not cover is unacked, so it is
delivered again and processed against that state. Processing is deterministic, so it yields the
same chunk (same chunk id, same state group ids), which the committer drops as already
committed; an input whose state change was stored is a duplicate to the processor and yields
nothing. Nothing is lost and nothing takes effect twice.
On revocation faust waits until every input taken is acked (``stream_wait_empty``), so the next
owner never starts from a state older than chunks already sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import faust
import orjson
from aiokafka.partitioner import murmur2

from pipeline import health, metrics
from pipeline.config import Settings
from pipeline.connection_log import quiet_aiokafka
from pipeline.errors import MalformedMessage, RoomstreamError
from pipeline.kafka_clients import faust_app_kwargs
from pipeline.room import storage
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import (
    DeadLetter,
    Incoming,
    ProcessorConfig,
    RoomProcessor,
)
from pipeline.worker.resolve_pool import ResolvePool, pooled_resolver
from pipeline.worker.room_threads import JobThreads
from topics import chunk as chunk_codec
from topics import dead_letter, pdu_input
from topics.apply import cluster_replication
from topics.definitions import Replication, Topic

log = logging.getLogger("roomstream.worker")

# Inputs queued in rooms but not processed yet; the agent waits above this.
MAX_IN_FLIGHT = 5000
# Inputs of one room taken into one trip to a processing thread (still one chunk each).
MAX_ROOM_BATCH = 200
# Room processors kept deserialised; the table keeps every room's bytes regardless. A room
# outside the cache is rebuilt from its stored state (about 0.1 ms for a small room), so this
# trades a little CPU on rooms that come back rarely for memory.
PROCESSOR_CACHE = 1000
# Threads processing rooms: a slow room holds one of them while the others go on.
ROOM_THREADS = 4
# Rooms whose owner partition is remembered.
OWNER_CACHE = 100_000
# The producer's batch per partition (faust's default is 16 KB).
PRODUCER_BATCH_BYTES = 512 * 1024
# Processes that run large state resolutions (pipeline.worker.resolve_pool).
RESOLVE_PROCESSES = 1
# The largest changelog record: a segment of a room's state, or a record with many parked
# events (each PDU up to 64 KiB); Kafka's default (1 MB) would stop a worker on a busy room.
MAX_RECORD_BYTES = 64 * 1024 * 1024
# A room's state is stored at most this long after the first input it does not cover yet...
STORE_INTERVAL_S = 0.5
# ... or once it leaves this many inputs uncovered (the most a crash makes it process again).
MAX_UNSTORED = 500
# How often rooms due a store are looked for.
STORE_TICK_S = 0.05


def owner_partition(room_id: str, partitions: int) -> int:
    """The partition that owns ``room_id``: Java's default partitioner (murmur2, positive mod)."""
    return int(murmur2(room_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(slots=True)
class _Input:
    """An input taken off the topic: the faust event (to ack) and what its routing parse read."""

    event: Any
    pdu: pdu_input.PduInput


@dataclass(slots=True)
class _Room:
    pending: deque[_Input] = field(default_factory=deque)  # in arrival order
    busy: bool = False  # a job of this room is being processed or its outputs sent
    # Inputs whose outputs the broker has acknowledged and whose state is not stored yet:
    # acked once it is.
    unstored: list[_Input] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    """One trip of a room to a processing thread: its queued inputs, and its processor (or the
    stored state to rebuild it from)."""

    room_id: str
    events: list[_Input]  # of the current generation, in arrival order
    taken: int  # inputs taken off the room's queue, those of a revoked generation included
    proc: RoomProcessor | None
    stored: bytes | None  # the room's stored record (storage.record_key)
    segments: dict[bytes, bytes | None]  # its stored segments, when proc is to be rebuilt
    now: int
    store: bool  # end with the room's state, to be stored


@dataclass(slots=True)
class _Processed:
    proc: RoomProcessor
    # The room's state after the job as table writes (pipeline.room.storage), if asked.
    writes: list[tuple[bytes, bytes]] | None
    outputs: list[tuple[str, bytes]]  # (topic, value) in the order a replay would emit them


# Metric children looked up once: labels() costs a lookup under a lock per call.
_ACCEPTED = metrics.EVENTS.labels("accepted")
_REJECTED = metrics.EVENTS.labels("rejected")
_SOFT_FAILED = metrics.EVENTS.labels("soft_failed")
_DUPLICATE = metrics.EVENTS.labels("duplicate")


class Worker:
    """The faust app of one worker process, and the room jobs it runs."""

    def __init__(
        self,
        settings: Settings,
        worker_id: str | None = None,
        replicas: Replication | None = None,
    ) -> None:
        self.settings = settings
        # The changelog topics faust creates get the replication of Roomstream's own topics.
        replicas = replicas or cluster_replication(settings)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        datadir = settings.stack_dir / "workers" / self.worker_id
        datadir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            f"{settings.topic_prefix}-processors",
            **faust_app_kwargs(settings),
            store="memory://",
            datadir=str(datadir),
            topic_partitions=settings.pdu_partitions,
            topic_replication_factor=replicas.factor,
            processing_guarantee="at_least_once",
            broker_commit_every=1000,
            broker_commit_interval=2.0,
            producer_linger=0.005,
            # aiokafka sends one request at a time to a broker, holding at most one batch per
            # partition: with the default 16 KB, a round trip carried about two room states
            # per changelog partition and ten chunks.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            producer_max_request_size=MAX_RECORD_BYTES,
            consumer_auto_offset_reset="earliest",
            # On revocation faust waits until every input taken is acked (room jobs finish,
            # send, store), then flushes the producer: the next owner never starts from a
            # state older than chunks already sent.
            stream_wait_empty=True,
            web_enabled=False,
            table_standby_replicas=0,
            # aiokafka's default partitioner (murmur2) for table changelogs and forwarding.
        )
        self.pdus = self.app.topic(
            settings.topic(Topic.PDUS),
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
            extra_topic_configs={
                "max.message.bytes": str(MAX_RECORD_BYTES),
                "min.insync.replicas": str(replicas.min_insync),
            },
        )
        self.chunks_topic = settings.topic(Topic.CHUNKS)
        self.dead_letter_topic = settings.topic(Topic.DEAD_LETTER)
        self.config = ProcessorConfig(
            parking=ParkingLimits(
                per_room=settings.park_max_per_room,
                total=settings.park_max_total,
                ttl_ms=int(settings.park_expiry_s * 1000),
            )
        )
        self.budget = ParkingBudget(settings.park_max_total)
        self.resolve_pool = ResolvePool(RESOLVE_PROCESSES)
        self.config = replace(
            self.config,
            resolver=pooled_resolver(
                self.resolve_pool,
                slow_room=settings.debug_slow_room,
                slow_s=settings.debug_slow_s,
            ),
        )
        self.threads: JobThreads[_Job, _Processed] | None = None
        self.rooms: dict[str, _Room] = {}
        self.cache: OrderedDict[str, tuple[bytes | None, RoomProcessor]] = OrderedDict()
        # Rooms with unstored inputs, and since when (monotonic); oldest first.
        self.unstored_since: dict[str, float] = {}
        self.in_flight = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._owners: dict[str, int] = {}
        self._header_problems = 0
        self.capacity = asyncio.Event()
        self.capacity.set()
        self.app.agent(self.pdus, name="rooms")(self._agent)
        self.app.timer(interval=5.0)(self._expire_parked)
        self.app.timer(interval=1.0)(self._readiness)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    # ------------------------------------------------------------------ the agent

    async def _agent(self, stream: Any) -> None:
        if self.threads is None:
            self.threads = JobThreads(
                asyncio.get_running_loop(),
                self._work,
                self._on_processed,
                threads=ROOM_THREADS,
                name="room",
            )
            self._spawn(self._store_loop())
        async for event in stream.noack().events():
            self._route(event, event.message)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.capacity.clear()
                await self.capacity.wait()

    def _route(self, event: Any, message: Any) -> None:
        try:
            pdu = pdu_input.decode(message.value, message.headers)
        except MalformedMessage as e:
            self._spawn(self._dead_letter_unroutable(event, e.reason))
            return
        if pdu.header_problem is not None:
            self._header_problems += 1
            # A producer that sets a header wrong sets it wrong on every record: say so, not flood.
            if self._header_problems % 1000 == 1:
                log.warning(
                    "%s; using the record's timestamp instead (%d such headers so far)",
                    pdu.header_problem,
                    self._header_problems,
                )
        room_id = pdu.room_id
        owner = self._owner(room_id)
        if owner != message.partition:
            self._spawn(self._forward(event, room_id, owner))
            return
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room()
        room.pending.append(_Input(event, pdu))
        self.in_flight += 1
        if not room.busy:
            self._next_job(room_id, room)

    def _owner(self, room_id: str) -> int:
        # murmur2 is pure Python: remember the answer for rooms seen recently.
        owner = self._owners.get(room_id)
        if owner is None:
            if len(self._owners) >= OWNER_CACHE:
                self._owners.clear()
            owner = self._owners[room_id] = owner_partition(room_id, self.settings.pdu_partitions)
        return owner

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: Any = None,
    ) -> Any:
        """Hand one record to the producer; returns the future of the broker's acknowledgement.

        Straight to faust's producer: a topic's send would wrap every record in a FutureMessage
        and run it through serializers and callbacks that raw bytes do not need."""
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    async def _forward(self, event: Any, room_id: str, owner: int) -> None:
        m = event.message
        await (
            await self._send(
                self.pdus.get_topic_name(), room_id.encode(), m.value, owner, m.headers
            )
        )
        metrics.FORWARDED.inc()
        event.ack()

    async def _dead_letter_unroutable(self, event: Any, reason: str) -> None:
        m = event.message
        body = dead_letter.encode(
            reason,
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=m.key,
            value=m.value,
            headers=m.headers,
        )
        await (await self._send(self.dead_letter_topic, None, body))
        metrics.DEAD_LETTERED.inc()
        event.ack()

    # ------------------------------------------------------------------ rooms

    def _next_job(self, room_id: str, room: _Room) -> None:
        """Send the room's queued inputs to a processing thread, or forget the room if none."""
        while room.pending:
            taken = min(len(room.pending), MAX_ROOM_BATCH)
            batch = [room.pending.popleft() for _ in range(taken)]
            # An input of a partition revoked meanwhile is left unacked: its new owner has it.
            generation = self.app.consumer_generation_id
            current = [i for i in batch if i.event.message.generation_id == generation]
            if not current:
                self._release(taken)
                continue
            self._submit(room_id, room, current, taken)
            return
        if room_id not in self.unstored_since:
            del self.rooms[room_id]

    def _submit(
        self, room_id: str, room: _Room, events: list[_Input], taken: int, *, store: bool = False
    ) -> None:
        proc, stored = self._processor(room_id)
        room.busy = True
        assert self.threads is not None  # started with the agent, before any input
        now = int(time.time() * 1000)
        store = store or self._store_due(room_id, len(room.unstored) + len(events))
        # Read on the loop: the table is not touched from processing threads.
        segments = {} if proc is not None or stored is None else self._segments(room_id, stored)
        self.threads.submit(_Job(room_id, events, taken, proc, stored, segments, now, store))

    def _segments(self, room_id: str, record: bytes) -> dict[bytes, bytes | None]:
        keys = storage.segment_keys(room_id, record)
        return {k: self.rooms_table.data.get(k) for k in keys}

    def _hurry(self) -> bool:
        # A rebalance (flow suspended) or a stop is waiting for every input taken to be acked.
        return self.app.should_stop or not self.app.flow_control.is_active()

    def _store_due(self, room_id: str, unstored: int) -> bool:
        if self._hurry():
            return True
        if unstored >= MAX_UNSTORED:
            return True
        since = self.unstored_since.get(room_id)
        return since is not None and time.monotonic() - since >= STORE_INTERVAL_S

    async def _store_loop(self) -> None:
        # Not a faust timer: those stop as soon as the app stops, while the consumer still
        # waits for every input taken to be acked.
        try:
            while not (self.app.should_stop and not self.unstored_since):
                await asyncio.sleep(STORE_TICK_S)
                self._store_due_rooms()
        except Exception as e:
            log.exception("storing room states failed; the worker stops")
            await self.app.crash(e)

    def _store_due_rooms(self) -> None:
        """Start a store-only job for each idle room whose state is due to be stored."""
        urgent = self._hurry()
        due_before = time.monotonic() - STORE_INTERVAL_S
        due = []
        for room_id, since in self.unstored_since.items():
            if since > due_before and not urgent:
                break  # oldest first: the rest are younger
            due.append(room_id)
        for room_id in due:
            room = self.rooms[room_id]
            if not room.busy:
                # A room in a job is stored when the job ends, or at the next tick.
                self._submit(room_id, room, [], 0, store=True)

    def _release(self, inputs: int) -> None:
        self.in_flight -= inputs
        if self.in_flight < MAX_IN_FLIGHT // 2:
            self.capacity.set()

    def _processor(self, room_id: str) -> tuple[RoomProcessor | None, bytes | None]:
        """The room's cached processor if it is the stored state's or ahead of it (inputs not
        stored yet); else the stored state."""
        stored = self.rooms_table.data.get(room_id.encode())
        cached = self.cache.get(room_id)
        if cached is not None:
            if cached[0] is stored or room_id in self.unstored_since:
                self.cache.move_to_end(room_id)
                return cached[1], stored
            self._forget(room_id)
        return None, stored

    def _work(self, job: _Job) -> _Processed:
        """In a processing thread: the job's inputs one by one (one chunk each, as a replay
        would), their outputs serialised, and the room's state after them."""
        proc = job.proc
        if proc is None:
            if job.stored is None:
                proc = RoomProcessor(job.room_id, config=self.config, budget=self.budget)
            else:
                proc = storage.load(
                    job.stored, job.segments.get, config=self.config, budget=self.budget
                )
        outputs: list[tuple[str, bytes]] = []
        for taken in job.events:
            m = taken.event.message
            received_ts = taken.pdu.received_ts
            if received_ts is None:
                received_ts = int(m.timestamp * 1000) if m.timestamp else job.now
            incoming = Incoming(
                taken.pdu.value,
                received_ts=received_ts,
                source={"partition": m.partition, "offset": m.offset},
            )
            started = time.perf_counter()
            result = proc.process([incoming], now=job.now)
            metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
            if result.chunk is not None:
                outputs.append((self.chunks_topic, chunk_codec.encode(result.chunk)))
                metrics.CHUNK_EVENTS.observe(len(result.chunk.events))
                for ce in result.chunk.events:
                    if ce.rejected:
                        _REJECTED.inc()
                    elif ce.soft_failed:
                        _SOFT_FAILED.inc()
                    else:
                        _ACCEPTED.inc()
            for dl in result.dead_letters:
                letter = _dead_letter_of(job.room_id, dl, m.topic, m)
                outputs.append((self.dead_letter_topic, letter))
                metrics.DEAD_LETTERED.inc()
            if result.duplicates:
                _DUPLICATE.inc(result.duplicates)
        return _Processed(proc, storage.save(proc, job.stored) if job.store else None, outputs)

    def _on_processed(self, done: list[tuple[_Job, _Processed | Exception]]) -> None:
        self._spawn(self._emit(done))

    async def _emit(self, done: list[tuple[_Job, _Processed | Exception]]) -> None:
        """For each processed job: send its outputs and wait for the broker; then, if the job
        ended with the room's state, store it and ack every input it covers."""
        try:
            sent: list[tuple[_Job, _Processed, list[Any]]] = []
            for job, out in done:
                if isinstance(out, Exception):
                    raise ProcessingFailed(job.room_id, out) from out
                key = job.room_id.encode()
                futures = [await self._send(topic, key, value) for topic, value in out.outputs]
                sent.append((job, out, futures))
            for job, out, futures in sent:
                for fut in futures:
                    await fut
                room = self.rooms[job.room_id]
                room.unstored += job.events
                if out.writes is not None:
                    await self._store(job.room_id, out.writes, out.proc, self._owner(job.room_id))
                    for taken in room.unstored:
                        taken.event.ack()
                    room.unstored = []
                    self.unstored_since.pop(job.room_id, None)
                elif room.unstored:
                    # The cached processor is now ahead of the stored state; it is the room's.
                    self._cache_put(
                        job.room_id, self.rooms_table.data.get(job.room_id.encode()), out.proc
                    )
                    self.unstored_since.setdefault(job.room_id, time.monotonic())
                metrics.PARKED.set(self.budget.used)
                self._release(job.taken)
                room.busy = False
                self._next_job(job.room_id, room)
        except Exception as e:
            # Inputs stay unacked: after the restart they are processed again, against the
            # last state stored, with the same outcome.
            log.exception("room processing failed; the worker stops")
            await self.app.crash(e)

    async def _store(
        self,
        room_id: str,
        writes: list[tuple[bytes, bytes]],
        proc: RoomProcessor,
        partition: int,
    ) -> None:
        # The table's data and changelog directly: room jobs run outside faust's stream
        # iteration, where Table.__setitem__ cannot tell the partition. The records go to the
        # producer itself (not faust's send-soon buffer), so the producer flush that precedes
        # every offset commit covers them. The room's record comes last (storage.save).
        topic = self._changelog_topic()
        for key, value in writes:
            self.rooms_table.data[key] = value
            await self._send(topic, key, value, partition)
        self._cache_put(room_id, writes[-1][1], proc)

    def _cache_put(self, room_id: str, state: bytes | None, proc: RoomProcessor) -> None:
        self.cache[room_id] = (state, proc)
        self.cache.move_to_end(room_id)
        excess = len(self.cache) - PROCESSOR_CACHE
        if excess > 0:
            # Least recently used first. Rooms with parked events stay (the parking budget
            # counts what is in memory), and so do rooms with inputs queued, in a job or not
            # stored yet (their processor is in use, or ahead of the stored state).
            victims = []
            for rid, (_, p) in self.cache.items():
                if rid not in self.rooms and not p.parked():
                    victims.append(rid)
                    if len(victims) >= excess:
                        break
            for rid in victims:
                del self.cache[rid]

    def _changelog_topic(self) -> str:
        return str(self.rooms_table.changelog_topic.get_topic_name())

    def _forget(self, room_id: str) -> None:
        _, proc = self.cache.pop(room_id)
        self.budget.used = max(0, self.budget.used - len(proc.parked()))

    def budget_used(self) -> int:
        return self.budget.used

    async def _readiness(self) -> None:
        """``/readyz``: a member of the group, not rebalancing, its tables caught up with their
        changelogs (pipeline.health)."""
        app = self.app
        if app.rebalancing:
            health.WORKER.set(False, "rebalancing")
        elif app.in_recovery:
            health.WORKER.set(False, "recovering room states from the changelog")
        elif not app.consumer_generation_id:
            health.WORKER.set(False, "not a member of the processors' group yet")
        else:
            parts = len(app.consumer.assignment())
            health.WORKER.set(True, f"assigned {parts} partition(s), caught up")
        self._lag()

    def _lag(self) -> None:
        """``roomstream_consumer_lag{stage="worker"}``: records of each owned pdus partition
        not read yet (the broker's high watermark less the next offset to read)."""
        consumer = self.app.consumer
        topic = self.pdus.get_topic_name()
        metrics.CONSUMER_LAG.clear()
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            high = consumer.highwater(tp)
            # faust's own records: the last offset read, else the committed one (next to read).
            read = consumer._read_offset.get(tp)
            done = read + 1 if read is not None else consumer._committed_offset.get(tp)
            if high is not None and high >= 0 and done is not None:
                metrics.CONSUMER_LAG.labels("worker", str(tp.partition)).set(max(0, high - done))

    def _room_gauges(self) -> None:
        """The oldest parked event and the rooms with the most forward extremities, over the
        rooms this worker holds in memory."""
        oldest = min(
            (p.parked_at for _, proc in self.cache.values() for p in proc.parked()), default=0
        )
        metrics.OLDEST_PARKED.set(oldest / 1000)
        counts = {rid: len(proc.forward_extremities) for rid, (_, proc) in self.cache.items()}
        metrics.set_top_rooms(metrics.FORWARD_EXTREMITIES, counts)
        metrics.FORWARD_EXTREMITIES_MAX.set(max(counts.values(), default=0))

    async def _expire_parked(self) -> None:
        """Dead-letter parked events past their expiry, in rooms that see no new input."""
        self._room_gauges()
        # Only rooms this worker holds in memory are checked here; a room's parked events are
        # also expired whenever it processes an input. A room with inputs queued or in a job
        # is left alone: its processor is in use.
        now = int(time.time() * 1000)
        for room_id, (state, proc) in list(self.cache.items()):
            if not proc.parked() or room_id in self.rooms:
                continue
            if self.rooms_table.data.get(room_id.encode()) is not state:
                continue
            ttl = proc.config.parking.ttl_ms
            if not any(p.parked_at + ttl <= now for p in proc.parked()):
                continue
            # The room is busy until its state is stored: inputs arriving meanwhile wait.
            room = self.rooms[room_id] = _Room(busy=True)
            try:
                await self._expire_room(room_id, proc, now)
            finally:
                room.busy = False
                self._next_job(room_id, room)

    async def _expire_room(self, room_id: str, proc: RoomProcessor, now: int) -> None:
        result = proc.expire(now)
        for dl in result.dead_letters:
            body = _dead_letter_of(room_id, dl, self.settings.topic(Topic.PDUS))
            await (await self._send(self.dead_letter_topic, room_id.encode(), body))
            metrics.DEAD_LETTERED.inc()
        partition = self._owner(room_id)
        record = self.rooms_table.data.get(room_id.encode())
        await self._store(room_id, storage.save(proc, record), proc, partition)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Rooms of revoked partitions move to another owner, which rebuilds them from the
        # changelog; cached processors here may be stale from now on.
        for room_id in list(self.cache):
            self._forget(room_id)
        # faust waited for every input taken to be acked, so no room has unstored inputs;
        # were one left (a stop cut the wait short), it is dropped unacked, not stored later
        # from a processor rebuilt without it.
        for room_id in self.unstored_since:
            room = self.rooms[room_id]
            room.unstored = []
            if not room.busy and not room.pending:
                del self.rooms[room_id]
        self.unstored_since.clear()


class ProcessingFailed(RoomstreamError):
    """A room's processing raised instead of returning an outcome: a bug, not bad input."""

    def __init__(self, room_id: str, cause: Exception) -> None:
        super().__init__(f"processing room {room_id} raised {cause!r}")
        self.room_id = room_id


def _dead_letter_of(room_id: str, dl: DeadLetter, topic: str, m: Any = None) -> bytes:
    """The dead letter of one of a room's inputs, read from ``topic``; ``m`` is the message being
    processed, if any (an input parked earlier names where it was read in its source)."""
    src = dl.source or {}
    partition = int(src.get("partition", m.partition if m is not None else -1))
    offset = int(src.get("offset", m.offset if m is not None else -1))
    raw = dl.raw
    value = (
        raw
        if isinstance(raw, bytes)
        else (raw.encode() if isinstance(raw, str) else orjson.dumps(raw))
    )
    return dead_letter.encode(
        dl.reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key=room_id.encode(),
        value=value,
        headers=m.headers if m is not None and offset == m.offset else None,
        event_id=dl.event_id,
    )


def main(args: Any, settings: Settings) -> int:
    """``roomstream worker``: run one room processor until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = getattr(args, "web_port", None) or settings.metrics_port
    health.serve(port, settings.metrics_addr, health.WORKER)
    worker = Worker(settings, getattr(args, "id", None))
    try:
        _FaustWorker(worker.app, loglevel="WARNING", quiet=True).execute_from_commandline()
    finally:
        worker.resolve_pool.close()
    return 0


class _FaustWorker(faust.Worker):  # type: ignore[misc]  # faust ships no types for it
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # faust's terminal spinner handler sets the root logger to DEBUG, so every debug call
        # of faust and aiokafka (several per record sent) built a record nobody printed.
        self.spinner = None
        logger.setLevel(level)
        quiet_aiokafka()
