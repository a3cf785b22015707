"""The room processor worker: the faust agent and the parts it wires together.

    routing      which partition owns a room; forward, dead-letter or queue each input
    scheduling   per-room queues and jobs, when state is stored, when inputs are acked
    processing   a job in a processing thread: the pure room processor, outputs serialised
    room_threads the threads that run jobs off the event loop
    resolve_pool large state resolutions in other processes
    emit         send, wait for the broker, store, then ack
    room_state   the changelogged rooms table and the processors kept in memory
    expiry       parked events of idle rooms expired on a timer
    high_water   the committed chunk high-water of a room, read from PostgreSQL
    rebuild      a room's state checked against PostgreSQL and the chunks in flight, and
                 rebuilt from them when it is behind
    lifecycle    lifecycle logs, readiness, the ownership fence, the exit code
    faults       whose fault an error is; bounded retries
    faust_app    the faust app's settings

The agent reads ``<prefix>.pdus`` and hands each input to ``routing``; a room's inputs queue in
``scheduling``, whose jobs run in ``room_threads``; their outputs go through ``emit``. One slow
room holds one processing thread while the others go on with the other rooms, of any partition.

Crash at any point: every input the last stored state does not cover is unacked, so it is
delivered again and processed against that state, with the same outcome; a room whose stored
state is behind the chunks it had sent is first rebuilt from PostgreSQL and those chunks
(``rebuild``), and its inputs decided before are duplicates of what it holds. On revocation faust
waits until every input taken is acked (``stream_wait_empty``), so the next owner never starts
from a state older than chunks already sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from collections.abc import Coroutine
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import faust

from pipeline import health, metrics
from pipeline.config import Settings
from pipeline.connection_log import quiet_aiokafka
from pipeline.gc_tuning import tune_gc
from pipeline.malloc_trim import FreedMemory
from pipeline.room.parking import ParkingBudget, ParkingLimits
from pipeline.room.processor import ProcessorConfig
from pipeline.server_keys import signature_checker
from pipeline.worker import dead_letters, expiry, lifecycle
from pipeline.worker.consumer import Consumer
from pipeline.worker.emit import Outputs, Sender
from pipeline.worker.faults import WorkerStopped
from pipeline.worker.faust_app import MAX_RECORD_BYTES, group_id, instance_id, make_app
from pipeline.worker.high_water import PgHighWaters
from pipeline.worker.lifecycle import EXIT_STOPPED, Lifecycle
from pipeline.worker.processing import Processed, Processing, Work
from pipeline.worker.rebuild import StoredRooms
from pipeline.worker.recall import PgRecall
from pipeline.worker.resolve_pool import ResolvePool, pooled_resolver
from pipeline.worker.room_state import RoomStates
from pipeline.worker.room_threads import JobThreads
from pipeline.worker.routing import Forward, Owners, Unroutable, owner_partition, route
from pipeline.worker.scheduling import Input, Job, Scheduler
from topics.apply import cluster_replication
from topics.definitions import Replication, Topic

__all__ = ["QuietFaustWorker", "Worker", "main", "owner_partition"]

log = logging.getLogger("roomstream.worker")

# Threads processing rooms: a slow room holds one of them while the others go on.
ROOM_THREADS = 4
# Jobs being processed or queued for a thread: rooms beyond that wait with their inputs
# accumulating, so a burst is processed in a few large batches (pipeline.worker.scheduling).
MAX_JOBS = 2 * ROOM_THREADS
# Processes that run large state resolutions (pipeline.worker.resolve_pool).
RESOLVE_PROCESSES = 1
# Per partition's RocksDB (faust's defaults: 64 MiB memtables, three of them, 2 GiB block cache).
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 16 * 1024 * 1024,
}
# How often rooms due a store are looked for, and the loop's liveness is noted (the fence).
TICK_S = 0.05
# How long the intake waits for input, with none on its way, before records handed over and never
# taken are read again (faust dropped them): an input reaches it within milliseconds otherwise.
DROPPED_AFTER_S = 1.0
# After a system fault, the most a stop may take before the process exits anyway.
STOP_GRACE_S = 20.0


class Worker:
    """The faust app of one worker process, and the room jobs it runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        worker_id: str | None = None,
        replicas: Replication | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        # The local store is the group's (the topic prefix names it): another prefix is
        # another changelog, never restored over this one.
        datadir = settings.workers_dir / self.worker_id / group_id(settings)
        datadir.mkdir(parents=True, exist_ok=True)
        # A worker without an id cannot find its store again after a restart (the next one
        # has another name): its store goes when it stops.
        self.scratch = datadir.parent if worker_id is None else None
        self.instance_id = instance_id(settings, worker_id)
        self.lifecycle = Lifecycle(
            self.worker_id, pause_limit_s=settings.worker_session_timeout_s / 2
        )
        replicas = replicas or cluster_replication(settings)
        self.app = make_app(settings, datadir, worker_id, replicas)
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
            # faust opens one RocksDB per partition with a 2 GiB block cache and up to three
            # 64 MiB memtables each: a worker of 12 partitions could grow by gigabytes. The
            # processors a worker uses are cached as objects (``RoomStates``), so RocksDB's
            # own caches need only be small.
            options=ROCKSDB_OPTIONS if settings.worker_store.startswith("rocksdb") else None,
            extra_topic_configs={
                "max.message.bytes": str(MAX_RECORD_BYTES),
                "min.insync.replicas": str(replicas.min_insync),
            },
        )
        self.budget = ParkingBudget(settings.park_max_total, settings.park_max_total_bytes)
        self.resolve_pool = ResolvePool(RESOLVE_PROCESSES)
        self.config = ProcessorConfig(
            parking=ParkingLimits(
                per_room=settings.park_max_per_room,
                total=settings.park_max_total,
                ttl_ms=int(settings.park_expiry_s * 1000),
            )
        )
        # Off unless ROOMSTREAM_VERIFY_SIGNATURES: then the server keys published so far are
        # read before the first input, and a reader thread follows the topic.
        checker, self.key_reader = signature_checker(settings)
        self.missing_topic = settings.topic(Topic.MISSING_EVENTS)
        self.config = replace(
            self.config,
            signatures=checker,
            resolver=pooled_resolver(
                self.resolve_pool,
                slow_room=settings.debug_slow_room,
                slow_s=settings.debug_slow_s,
                on_broken=self._fault_from_thread,
            ),
        )
        high_waters = PgHighWaters(settings)
        # A room's event index and its state groups' rows are bounded; older committed ones are
        # read back from PostgreSQL when needed (``pipeline.worker.recall``).
        recall = PgRecall(settings)
        if settings.worker_known_events > 0:
            self.config = replace(
                self.config,
                recall=recall,
                redaction_recall=recall.redactions,
                known_limit=settings.worker_known_events,
            )
        if settings.worker_state_rows > 0:
            self.config = replace(
                self.config, group_recall=recall.groups, group_rows_limit=settings.worker_state_rows
            )
        self.owners = Owners(settings.pdu_partitions)
        self.scheduler = Scheduler(
            clock=time.monotonic,
            generation=lambda: int(self.app.consumer_generation_id),
            hurry=self._hurry,
            max_jobs=MAX_JOBS,
            parking_full=lambda: self.budget.over,
        )
        # What jobs freed goes back to the system at the next idle tick (``_expire_parked``).
        self.freed_memory = FreedMemory.of_this_process()
        self.states = RoomStates(
            self.rooms_table.data,
            in_use=self.scheduler.holds,
            owner=self.owners,
            cache_bytes=settings.worker_room_cache_mb * 1024 * 1024,
        )
        self.stored_rooms = StoredRooms(settings, high_waters)
        self.processing = Processing(
            config=self.config,
            budget=self.budget,
            pdus_topic=settings.topic(Topic.PDUS),
            chunks_topic=settings.topic(Topic.CHUNKS),
            dead_letter_topic=settings.topic(Topic.DEAD_LETTER),
            missing_topic=self.missing_topic,
            rooms=self.stored_rooms,
            committed=high_waters,
        )
        self.sender = Sender(lambda: self.app.producer, self.lifecycle.check_owner)
        self.dead_letter_topic = settings.topic(Topic.DEAD_LETTER)
        # Rooms whose state was checked against PostgreSQL since partitions were assigned.
        self.checked: set[str] = set()
        self.outputs = Outputs(
            self.sender,
            self.states,
            self.scheduler,
            owner=self.owners,
            changelog=self._changelog_topic,
            submit=self._submit,
            checked=self.checked,
            acking=self._worker_acks,
        )
        self.threads: JobThreads[Work, Processed] | None = None
        # faust's consumer, once the agent runs (the app builds it as it starts).
        self._consumer: Consumer
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._header_problems = 0
        # The agent's intake: faust's queue of inputs on their way to it, whether it waits for
        # room capacity, and when it last was not free to take input with none on its way.
        self._intake_queue: Any = None
        self._intake_blocked = False
        self._intake_busy_at = time.monotonic()
        self._drop_inputs = settings.debug_drop_inputs
        self.capacity = asyncio.Event()
        self.capacity.set()
        self.app.agent(self.pdus, name="rooms")(self._agent)
        self.app.timer(interval=expiry.INTERVAL_S)(self._expire_parked)
        self.app.timer(interval=1.0)(self._readiness)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.lifecycle.started(group_id(settings), self.instance_id)

    # ------------------------------------------------------------------ the agent

    async def _agent(self, stream: Any) -> None:
        if self.threads is None:
            self._consumer = self.app.consumer
            self.loop = asyncio.get_running_loop()
            self.threads = JobThreads(
                self.loop,
                self.processing,
                self._on_processed,
                threads=ROOM_THREADS,
                name="room",
            )
            self._spawn(self._tick_loop())
        self._intake_queue = _intake_queue(stream)
        async for event in stream.noack().events():
            if self._drop_inputs:
                self._drop(event)
                continue
            self._take(event)
            if self.scheduler.full:
                for job in self.scheduler.end_hold():  # only jobs that end free capacity
                    self._submit(job)
                parking = self.budget.over
                if parking:
                    log.warning(
                        "intake paused: this worker's rooms hold %d parked events, %d bytes "
                        "(ROOMSTREAM_PARK_MAX_TOTAL=%d, ROOMSTREAM_PARK_MAX_TOTAL_BYTES=%d); "
                        "it reads again once some are released or expire. Raise the bounds, or "
                        "look for the events they wait for in `roomstream status`",
                        self.budget.used,
                        self.budget.used_bytes,
                        self.budget.total,
                        self.budget.total_bytes,
                    )
                self.capacity.clear()
                self._intake_blocked = True
                try:
                    await self.capacity.wait()
                finally:
                    self._intake_blocked = False
                if parking:
                    log.info("intake resumed: %d parked events", self.budget.used)

    def _drop(self, event: Any) -> None:
        # As faust's stream drops a record it was handed: never taken, never acked.
        self._drop_inputs -= 1
        m = event.message
        log.warning(
            "input %s[%d] offset %d dropped on its way to the worker "
            "(ROOMSTREAM_DEBUG_DROP_INPUTS: %d more to drop)",
            m.topic,
            m.partition,
            m.offset,
            self._drop_inputs,
        )

    def _take(self, event: Any) -> None:
        m = event.message
        self._consumer.taken(m)
        where = route(m.value, m.headers, m.partition, self.owners)
        if isinstance(where, Unroutable):
            self._spawn(self._dead_letter_unroutable(event, where.reason))
            return
        if isinstance(where, Forward):
            self._spawn(self._forward(event, where))
            return
        if where.header_problem is not None:
            self._header_problems += 1
            # A producer that sets a header wrong sets it wrong on every record: say so, not flood.
            if self._header_problems % 1000 == 1:
                log.warning(
                    "%s; using the record's timestamp instead (%d such headers so far)",
                    where.header_problem,
                    self._header_problems,
                )
        item = Input(
            event,
            where,
            m.partition,
            m.offset,
            int(m.timestamp * 1000) if m.timestamp else None,
            m.generation_id,
            m.headers,
        )
        for job in self.scheduler.take(where.room_id, item, backlog=self._behind(m)):
            self._submit(job)

    def _behind(self, message: Any) -> bool:
        """Whether the partition of ``message`` holds more inputs after it, as the last fetch
        saw it (the consumer's high-water mark)."""
        try:
            high = self.app.consumer.highwater(message.tp)
        except AssertionError:  # aiokafka's way of saying the partition is not assigned now
            return False
        return high is not None and high - message.offset > 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._fatal_on_error(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fatal_on_error(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except WorkerStopped as e:
            await self._stop(e)
        except Exception as e:
            await self._stop(
                WorkerStopped(
                    "bug",
                    f"the worker raised {type(e).__name__}: {e}; a bug, not a fault of any "
                    "input: its inputs stay unacked and are processed again after a restart",
                )
            )
            log.exception("the worker's error")

    def _fault_from_thread(self, fault: WorkerStopped) -> None:
        self.lifecycle.fatal(fault)  # no write from now on, whatever the loop does next
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._spawn, self._stop(fault))

    async def _stop(self, fault: WorkerStopped) -> None:
        self.lifecycle.fatal(fault)
        # Whatever faust does while it stops, the process ends, non-zero.
        asyncio.get_running_loop().call_later(STOP_GRACE_S, os._exit, EXIT_STOPPED)
        await self.app.crash(fault)

    async def _forward(self, event: Any, where: Forward) -> None:
        m = event.message
        fut = await self.sender.send(
            self.pdus.get_topic_name(), where.room_id.encode(), m.value, where.partition, m.headers
        )
        await self.sender.delivered([fut], f"an input forwarded to partition {where.partition}")
        metrics.FORWARDED.inc()
        with self._worker_acks():
            event.ack()

    async def _dead_letter_unroutable(self, event: Any, reason: str) -> None:
        body = dead_letters.unroutable(reason, event.message)
        fut = await self.sender.send(self.dead_letter_topic, None, body)
        await self.sender.delivered([fut], "a dead letter")
        metrics.DEAD_LETTERED.inc()
        with self._worker_acks():
            event.ack()

    def _worker_acks(self) -> AbstractContextManager[Any]:
        return self._consumer.worker_acks()

    # ------------------------------------------------------------------ rooms

    def _submit(self, job: Job) -> None:
        proc, stored, segments = self.states.processor(job.room_id)
        check = job.room_id not in self.checked and bool(job.inputs)
        assert self.threads is not None  # started with the agent, before any input
        self.threads.submit(Work(job, proc, stored, segments, check))

    def _hurry(self) -> bool:
        # A rebalance (flow suspended) or a stop is waiting for every input taken to be acked.
        return bool(self.app.should_stop or not self.app.flow_control.is_active())

    async def _tick_loop(self) -> None:
        # Not a faust timer: those stop as soon as the app stops, while the consumer still
        # waits for every input taken to be acked.
        recovery = self.app.tables.recovery
        # While stopping it goes on as long as a room is held: a job handed out before the
        # stop may end after it with inputs unstored, which only a tick's store job acks (the
        # consumer waits for them, and would wait for ever).
        while not (self.app.should_stop and not self.scheduler.rooms):
            await asyncio.sleep(TICK_S)
            self.lifecycle.tick()
            if self.lifecycle.fault is not None:
                return
            # The reader may be held up (a paused flow, a rebalance) while holding.
            for job in self.scheduler.hold_expired():
                self._submit(job)
            for job in self.scheduler.due():
                self._submit(job)
            self._watch_recovery(recovery)
            self._look_for_dropped()

    def _look_for_dropped(self) -> None:
        # Records faust dropped with nothing handed over after them show only as a wait: the
        # intake free to take input, faust's stream holding none, records handed over not taken.
        # On its way from the consumer to that queue faust holds a record only while its flow is
        # suspended (a rebalance: not looked at then) or its producer's buffer is over its limit
        # (the worker awaits its own sends and never fills it).
        now = time.monotonic()
        queue = self._intake_queue
        if (
            self._intake_blocked
            or queue is None
            or not queue.empty()
            or self._hurry()
            or self.app.rebalancing
        ):
            self._intake_busy_at = now
        elif now - self._intake_busy_at >= DROPPED_AFTER_S:
            self._consumer.read_again_overdue(DROPPED_AFTER_S)

    def _watch_recovery(self, recovery: Any) -> None:
        if recovery.in_recovery:
            # Offsets are None where nothing is known yet (a new local store, an empty topic).
            remaining = sum(
                max(
                    0,
                    (recovery.active_highwaters.get(tp) or 0)
                    - (recovery.active_offsets.get(tp) or 0),
                )
                for tp in recovery.active_tps
            )
            self.lifecycle.restoring(remaining, "rooms")
            return
        self.lifecycle.restored("rooms")
        self.lifecycle.set_ready(
            recovery.completed.is_set() and not self.app.rebalancing and not self.app.should_stop
        )

    def _on_processed(self, done: list[tuple[Work, Processed | Exception]]) -> None:
        self.freed_memory.worked()
        for work, _ in done:
            for job in self.scheduler.processed(work.job):
                self._submit(job)
        self._spawn(self._emit(done))

    async def _emit(self, done: list[tuple[Work, Processed | Exception]]) -> None:
        await self.outputs.emit(done)
        metrics.PARKED.set(self.budget.used)
        if self.scheduler.has_capacity:
            self.capacity.set()

    def _changelog_topic(self) -> str:
        return str(self.rooms_table.changelog_topic.get_topic_name())

    async def _expire_parked(self) -> None:
        self._room_gauges()
        await expiry.expire_idle_rooms(self, int(time.time() * 1000))
        if self.freed_memory.due:  # after the idle rooms were compacted
            await asyncio.to_thread(self.freed_memory.release)
        if self.scheduler.has_capacity:  # expired events may have freed a full parking
            self.capacity.set()

    async def _readiness(self) -> None:
        """``/readyz`` follows the lifecycle's readiness (pipeline.health); and the lag."""
        ready = self.lifecycle.ready
        if ready:
            parts = len(self.app.consumer.assignment())
            health.WORKER.set(True, f"assigned {parts} partition(s), processing them")
        else:
            health.WORKER.set(False, self._not_ready())
        self._lag()

    def _not_ready(self) -> str:
        if self.lifecycle.fault is not None:
            return f"stopping: {self.lifecycle.fault}"
        if self.app.rebalancing:
            return "rebalancing"
        if self.app.in_recovery:
            return "recovering room states from the changelog"
        return "not a member of the processors' group yet"

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
        procs = self.states.cache
        oldest = min((p.parked_at for proc in procs.values() for p in proc.parked()), default=0)
        metrics.OLDEST_PARKED.set(oldest / 1000)
        counts = {rid: len(proc.forward_extremities) for rid, proc in procs.items()}
        metrics.set_top_rooms(metrics.FORWARD_EXTREMITIES, counts)
        metrics.FORWARD_EXTREMITIES_MAX.set(max(counts.values(), default=0))
        metrics.MISSING_EVENT_REQUESTS.set(
            sum(len(proc.open_requests()) for proc in procs.values())
        )

    # ------------------------------------------------------------------ rebalances

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        tps = sorted((tp.topic, tp.partition) for tp in assigned)
        self.lifecycle.assigned(tps, int(self.app.consumer_generation_id))
        mine = {tp.partition for tp in assigned if tp.topic == self.pdus.get_topic_name()}
        self.checked.clear()
        # The chunks in flight of the rooms of these partitions are read again, for the checks
        # of the rooms' states (pipeline.worker.rebuild).
        partitions = self.settings.pdu_partitions
        in_flight = self.stored_rooms.in_flight
        in_flight.reset(lambda room_id: owner_partition(room_id, partitions) in mine)
        if mine:
            in_flight.prefetch()

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        self.lifecycle.revoked(sorted((tp.topic, tp.partition) for tp in revoked))
        # Rooms of revoked partitions move to another owner, which rebuilds them from the
        # changelog; cached processors here may be stale from now on.
        self.states.forget_all()
        self.budget.reset()
        self.scheduler.revoked()


def _intake_queue(stream: Any) -> Any:
    """faust's queue of inputs on their way to the agent's ``stream``: checked at the agent's
    start, so that a faust that moved it fails the start rather than never finding the records
    it dropped."""
    queue = getattr(stream.channel, "queue", None)
    if queue is None or not callable(getattr(queue, "empty", None)):
        raise RuntimeError(
            "this faust's agent channel has no queue with empty(): the worker cannot tell when "
            "inputs faust dropped must be read again; install the faust-streaming version "
            "pyproject.toml names"
        )
    return queue


def main(args: Any, settings: Settings) -> int:
    """``roomstream worker``: run one room processor until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    port = getattr(args, "web_port", None) or settings.metrics_port
    health.serve(port, settings.metrics_addr, health.WORKER)
    worker = Worker(settings, worker_id=getattr(args, "id", None))
    tune_gc()
    faust_worker = QuietFaustWorker(
        worker.app, loglevel="WARNING", quiet=True, redirect_stdouts=False
    )
    status: object = None
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as e:
        status = e.code
    finally:
        worker.resolve_pool.close()
        if worker.key_reader is not None:
            worker.key_reader.stop()
        if worker.scratch is not None:
            shutil.rmtree(worker.scratch, ignore_errors=True)
    worker.lifecycle.stop("stopped")
    code, why = exit_status(worker.lifecycle, status, faust_worker.crash_reason)
    if code:
        log.critical("worker %s exits %d: %s", worker.worker_id, code, why)
    else:
        log.info("worker %s stopped", worker.worker_id)
    return code


def exit_status(
    life: Lifecycle, faust_status: object, crash: BaseException | None
) -> tuple[int, str]:
    """The worker's exit code and why: non-zero when the lifecycle recorded a fault, and also
    when faust itself stopped on an error of its own (a crashed service, an exception out of
    its loop), so that a supervisor restarts the worker rather than taking it for a clean stop."""
    code = life.exit_code()
    if code:
        return code, str(life.fault)
    if crash is not None:
        return EXIT_STOPPED, f"faust crashed: {type(crash).__name__}: {crash}"
    if faust_status not in (None, 0):
        return EXIT_STOPPED, f"faust stopped with status {faust_status!r}"
    return 0, "stopped"


class QuietFaustWorker(faust.Worker):  # type: ignore[misc]  # faust ships no types for it
    """faust's worker, logging at the level it is given and saying when it is told to stop."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # faust's terminal spinner handler sets the root logger to DEBUG, so every debug call
        # of faust and aiokafka (several per record sent) built a record nobody printed.
        self.spinner = None
        logger.setLevel(level)
        quiet_aiokafka()
        # Our own lifecycle lines stay at INFO under faust's WARNING: faust's handler is set to
        # its level too, so it is opened to INFO and the loggers' levels do the choosing.
        for handler in logger.handlers:
            handler.setLevel(logging.INFO)
        logging.getLogger("roomstream").setLevel(logging.INFO)

    def _on_sigterm(self) -> None:
        _lifecycle_stop("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _lifecycle_stop("SIGINT")
        super()._on_sigint()


def _lifecycle_stop(why: str) -> None:
    life = lifecycle.current()
    if life is not None:
        life.stop(why)
