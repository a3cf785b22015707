"""The worker's faust app: every client setting in one place.

Recovery after a crash is faust's and Kafka's: a worker started with ``--id`` joins its group as
a static member (KIP-345, ``group.instance.id``), so a restart within the session
(``ROOMSTREAM_WORKER_SESSION_TIMEOUT_S``) gets the same partitions back without a rebalance and
the other workers never pause; its rooms table is restored from the changelog (all of it with
``memory://``, only what is newer than the local copy with ``rocksdb://``,
``ROOMSTREAM_WORKER_STORE``); ``ROOMSTREAM_WORKER_STANDBY_REPLICAS`` keeps warm copies on other
workers for when a worker does not come back.
"""

from __future__ import annotations

from pathlib import Path

import faust

from pipeline.config import Settings
from pipeline.kafka_clients import faust_app_kwargs
from pipeline.worker.consumer import Consumer, Fetching, FetchingThread
from pipeline.worker.producer import Producer
from topics.definitions import Replication, Topic

__all__ = [
    "HEARTBEAT_S",
    "MAX_RECORD_BYTES",
    "PRODUCER_BATCH_BYTES",
    "group_id",
    "instance_id",
    "make_app",
]

# At most this long between heartbeats.
HEARTBEAT_S = 1.0
# The producer's batch per partition (faust's default is 16 KB).
PRODUCER_BATCH_BYTES = 512 * 1024
# The largest changelog record: a segment of a room's state, or a record with many parked
# events (each PDU up to 64 KiB); Kafka's default (1 MB) would stop a worker on a busy room.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}-processors"


def instance_id(settings: Settings, worker_id: str | None) -> str | None:
    """The static member id of a worker given an ``--id``; None for a dynamic member."""
    if worker_id is None or not settings.worker_static_membership:
        return None
    return f"{group_id(settings)}-{worker_id}"


def make_app(
    settings: Settings, datadir: Path, worker_id: str | None, replicas: Replication
) -> faust.App:
    session = settings.worker_session_timeout_s
    app = faust.App(
        group_id(settings),
        # The brokers, their credentials, acks=all.
        **faust_app_kwargs(settings),
        store=settings.worker_store,
        datadir=str(datadir),
        topic_partitions=settings.pdu_partitions,
        # The changelog topics faust creates get the replication of Roomstream's own topics.
        topic_replication_factor=replicas.factor,
        processing_guarantee="at_least_once",
        broker_commit_every=1000,
        broker_commit_interval=2.0,
        consumer_group_instance_id=instance_id(settings, worker_id),
        broker_session_timeout=session,
        # The broker counts the session from the last heartbeat, not from a crash: a restart
        # has the session less one interval to rejoin before its member is dropped.
        broker_heartbeat_interval=min(HEARTBEAT_S, session / 3),
        # How long a rebalance waits for members: a worker that joins waits this long at most.
        broker_rebalance_timeout=max(session, 10.0),
        # No linger: aiokafka has one request in flight per broker, so records queued while
        # it is out go together in the next one. Under load that batches as a linger would;
        # when events trickle in, a linger only adds its own length to every event's latency.
        producer_linger=0.0,
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
        table_standby_replicas=settings.worker_standby_replicas,
        # aiokafka's default partitioner (murmur2) for table changelogs and forwarding.
    )
    # faust's consumer, without the inputs it read past around a restore, its fetches gathering
    # inputs that trickle in (pipeline.worker.consumer).
    fetching = Fetching(
        settings.worker_fetch_wait_ms,
        settings.worker_fetch_min_bytes,
        settings.worker_fetch_gather_from,
    )
    thread = type("FetchingThread", (FetchingThread,), {"fetching": fetching})
    app.transport.Consumer = type(
        "Consumer", (Consumer,), {"thread_class": thread, "input_topic": settings.topic(Topic.PDUS)}
    )
    # faust's producer, asking the cluster about its own topics only (pipeline.worker.producer).
    app.transport.Producer = Producer
    return app
