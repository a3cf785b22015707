"""A faust app built as the worker's is (``make_app``: its consumer, its fetches gathering inputs
that trickle in, its producer) whose agent does only what any stream processor must for each
input: take it, send one record for it, and ack it once the broker has that record. No room
logic, no room state stored, no table.

B9 runs it beside the worker, over the same inputs at the same rate: its CPU per event is what
faust and aiokafka cost for one input in and one record out at that rate, a floor under the
worker's own figure that no change to the room logic or the worker's shell can go below while
the worker is a faust app.

``python -m pipeline.bench.bare_agent --id ID``: settings from the ``ROOMSTREAM_`` environment;
it reads ``<prefix>.pdus`` and sends each input, as it is, to ``<prefix>.chunks`` (only counted
by the bench: nothing else may read that topic of the run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import faust

from pipeline.config import Settings, load_settings
from pipeline.gc_tuning import tune_gc
from pipeline.worker.app import QuietFaustWorker
from pipeline.worker.faust_app import make_app
from topics.apply import cluster_replication
from topics.definitions import Topic

__all__ = ["bare_app", "main"]


def bare_app(settings: Settings, datadir: Path, worker_id: str) -> faust.App:
    """The faust app: the worker's, with the bare agent over its input."""
    app = make_app(settings, datadir, worker_id, cluster_replication(settings))
    pdus = app.topic(
        settings.topic(Topic.PDUS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    out = settings.topic(Topic.CHUNKS)
    # asyncio keeps only weak references to tasks: these must live until their input is acked.
    pending: set[asyncio.Future[None]] = set()

    async def acked_once_delivered(delivery: Any, event: Any) -> None:
        await delivery
        with app.consumer.worker_acks():
            event.ack()

    async def bare(stream: Any) -> None:
        consumer = app.consumer
        producer = app.producer
        async for event in stream.noack().events():
            consumer.taken(event.message)
            delivery = await producer.send(out, None, event.message.value, None, None, None)
            task = asyncio.ensure_future(acked_once_delivered(delivery, event))
            pending.add(task)
            task.add_done_callback(pending.discard)

    app.agent(pdus, name="bare")(bare)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--id", required=True, help="its static member id in the group")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    datadir = Path(tempfile.mkdtemp(prefix="bare-agent-"))
    try:
        app = bare_app(load_settings(), datadir, args.id)
        tune_gc()
        QuietFaustWorker(
            app, loglevel="WARNING", quiet=True, redirect_stdouts=False
        ).execute_from_commandline()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


if __name__ == "__main__":
    main()
