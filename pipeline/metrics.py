"""Prometheus metrics of every Roomstream process, and the endpoint that serves them.

Each process serves them once through ``pipeline.health.serve`` (``ROOMSTREAM_METRICS_PORT``, 0
serves nothing; ``ROOMSTREAM_METRICS_ADDR``), with its health endpoints. Names carry the
``roomstream_`` prefix; the stage label tells the worker's from the committer's figures. A room
ID is a label only in the top-rooms gauges, bounded to ``TOP_ROOMS`` series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Rooms with a label of their own in a per-room gauge; the rest are summed up in a maximum.
TOP_ROOMS = 10


def _by_reason(name: str, documentation: str) -> Counter:
    """A counter of retries or stops with a series per ``reason`` (the reasons a process has
    are listed above each)."""
    return Counter(name, documentation, ["reason"])


EVENTS = Counter(
    "roomstream_events_processed_total",
    "Events processed by room processors, by outcome",
    ["outcome"],  # accepted, rejected, soft_failed, duplicate
)
DEAD_LETTERED = Counter("roomstream_dead_lettered_total", "Inputs sent to the dead-letter topic")
FORWARDED = Counter(
    "roomstream_forwarded_total", "Inputs read on a partition that does not own their room"
)
PARKED = Gauge("roomstream_parked_events", "Events parked, waiting for prev or auth events")
ROOM_CACHE_BYTES = Gauge(
    "roomstream_worker_room_cache_bytes",
    "Memory of the room processors a worker keeps (their own estimate), against "
    "ROOMSTREAM_WORKER_ROOM_CACHE_MB",
)
ROOM_CACHE_ROOMS = Gauge("roomstream_worker_room_cache_rooms", "Room processors a worker keeps")
PROCESS_SECONDS = Histogram(
    "roomstream_process_seconds",
    "Time to process one input in its room (auth, state resolution, chunk building)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STATE_RES_SECONDS = Histogram(
    "roomstream_state_resolution_seconds",
    "Time spent in one state resolution",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
)
CHUNK_EVENTS = Histogram(
    "roomstream_chunk_events", "Events per room chunk", buckets=(1, 2, 5, 10, 20, 50, 100, 500)
)
BATCH_CHUNKS = Histogram(
    "roomstream_commit_batch_chunks",
    "Chunks per committer transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
COMMIT_SECONDS = Histogram(
    "roomstream_commit_seconds",
    "Committer transaction latency (write rows, offsets and outbox; commit)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMITTED_EVENTS = Counter("roomstream_committed_events_total", "Events committed to PostgreSQL")
INVALIDATIONS_SENT = Counter(
    "roomstream_invalidations_sent_total", "Invalidation messages published"
)
CONSUMER_LAG = Gauge(
    "roomstream_consumer_lag",
    "Messages not yet consumed, by stage and partition",
    ["stage", "partition"],
)
POSITION = Gauge("roomstream_stream_position", "Highest committed stream ordering")
# Reasons: database, kafka, publish, fenced.
COMMITTER_RETRIES = _by_reason(
    "roomstream_committer_retries_total",
    "Committer attempts that failed and are retried, by reason",
)
# Reasons: schema, database, kafka, publish, or a retried reason past its bound.
COMMITTER_STOPPED = _by_reason(
    "roomstream_committer_stopped_total",
    "Errors that stopped the committer because retrying cannot fix them, by reason",
)
COMMITTER_GENERATION = Gauge(
    "roomstream_committer_generation", "Fencing generation of this committer while active"
)
DIVERGENCES = Counter(
    "roomstream_chunk_divergences_total",
    "Chunks delivered again with other content than the one committed under their id",
)
CHUNK_GAPS = Counter(
    "roomstream_chunk_gaps_total",
    "Chunks that started past their room's committed high-water + 1 (chunks missing before them)",
)
SKIPPED_CHUNKS = Counter(
    "roomstream_skipped_chunks_total", "Chunks delivered again and skipped (committed before)"
)

# Reasons: send, resolve_pool, marks, rebuild, recall.
WORKER_RETRIES = _by_reason(
    "roomstream_worker_retries_total", "Worker operations that failed and are retried, by reason"
)
# Reasons: send, delivery, processing, paused, resolve_pool, rebuild.
WORKER_STOPPED = _by_reason(
    "roomstream_worker_stopped_total", "Errors not of the input that stopped a worker, by reason"
)
WORKER_READY = Gauge(
    "roomstream_worker_ready", "1 while the worker owns its partitions and processes them"
)
RECALLED_EVENTS = Counter(
    "roomstream_worker_recalled_events_total",
    "Event index entries dropped from a room's bounded index and read back from PostgreSQL",
)
RECALLED_GROUPS = Counter(
    "roomstream_worker_recalled_state_groups_total",
    "State groups whose rows were dropped from a room's memory and read back from PostgreSQL",
)
DROPPED_EVENTS = Counter(
    "roomstream_worker_dropped_events_total",
    "Event index entries of committed events dropped to keep rooms within their bound",
)
STALE_ROOMS = Counter(
    "roomstream_worker_stale_rooms_total",
    "Rooms whose stored processing state was behind the chunks committed or in flight",
)
ROOMS_REBUILT = Counter(
    "roomstream_worker_rooms_rebuilt_total",
    "Rooms whose processing state was rebuilt from PostgreSQL and the chunks in flight",
)
# Reasons: overtaken (a record handed over after them reached the worker), waited (the worker
# waited for input with none on its way).
READ_AGAIN = _by_reason(
    "roomstream_worker_partitions_read_again_total",
    "Input partitions sought back to records handed over that never reached the worker",
)
for _reason in ("overtaken", "waited"):
    READ_AGAIN.labels(reason=_reason)  # served at 0 from the start, so rates start from there
REBUILD_SECONDS = Histogram(
    "roomstream_worker_rebuild_seconds",
    "Time to rebuild a room's processing state from PostgreSQL and the chunks in flight",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
COMMITTER_ACTIVE = Gauge(
    "roomstream_committer_active", "1 while this committer holds the lock and commits, else 0"
)
LAST_COMMIT = Gauge(
    "roomstream_last_commit_timestamp_seconds",
    "Unix time of this committer's last committed transaction",
)
OLDEST_PARKED = Gauge(
    "roomstream_oldest_parked_event_timestamp_seconds",
    "Unix time the oldest event parked at this worker was parked (0: none parked)",
)
MISSING_EVENT_REQUESTS = Gauge(
    "roomstream_missing_event_requests_open",
    "Requests for missing events sent and not answered yet",
)
FORWARD_EXTREMITIES = Gauge(
    "roomstream_forward_extremities",
    f"Forward extremities of the {TOP_ROOMS} rooms with the most, at this worker",
    ["room_id"],
)
FORWARD_EXTREMITIES_MAX = Gauge(
    "roomstream_forward_extremities_max",
    "The most forward extremities of any room held at this worker",
)


def set_top_rooms(gauge: Gauge, counts: dict[str, int], top: int = TOP_ROOMS) -> None:
    """Set ``gauge`` for the ``top`` rooms with the highest counts, and only them: a room label
    per room of a deployment would be millions of series."""
    gauge.clear()
    for room_id, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        gauge.labels(room_id).set(n)


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics, /healthz and /readyz on ``addr:port`` (``pipeline.health``); 0: none."""
    from pipeline import health

    health.serve(port, addr)
