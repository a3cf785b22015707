"""``roomstream tail``: the invalidation stream, as it is published, for people to read.

One line per message (``format_for_tail``), or the message itself as one line of JSON with
``--json``. Starts at the end of the stream (only what is published from now on) unless
``--from-beginning``; stops after ``--count`` messages, or cleanly on SIGINT or SIGTERM. A
message at or below the last position shown is a duplicate (a committer re-sent it after a
crash) and is not shown again; a gap is reported on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import orjson

from pipeline.config import Settings
from pipeline.invalidations import InvalidationClient, Message, format_for_tail
from pipeline.kafka_clients import confluent_config
from pipeline.ops.status import kafka_metadata
from topics.definitions import Topic

__all__ = ["main", "tail"]


def tail(
    settings: Settings,
    *,
    from_beginning: bool = False,
    count: int | None = None,
    as_json: bool = False,
    stop: threading.Event | None = None,
    write: Callable[[str], None] = print,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Write each invalidation message until ``count`` were written or ``stop`` is set.

    Returns how many were written. ``on_ready`` is called once the stream is being read.
    """
    kafka_metadata(settings, [Topic.INVALIDATIONS])  # fail fast, naming the address
    show: Callable[[Message], str] = _as_json if as_json else format_for_tail
    written = 0
    if count is not None and count <= 0:
        return written
    with InvalidationClient(
        settings.kafka_bootstrap,
        settings.topic(Topic.INVALIDATIONS),
        start_position=None,
        start_offset="beginning" if from_beginning else "end",
        extra_config=confluent_config(settings),
    ) as client:
        if on_ready is not None:
            on_ready()
        for msg in client.iter_messages(stop, poll_timeout=0.25):
            write(show(msg))
            written += 1
            if count is not None and written >= count:
                break
    return written


def _as_json(msg: Message) -> str:
    return orjson.dumps(msg).decode()


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream tail [--from-beginning] [--count N] [--json]``."""
    logging.basicConfig(level=logging.WARNING, format="roomstream: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    where = "the beginning" if args.from_beginning else "the end"

    def ready() -> None:
        print(
            f"roomstream: tailing {settings.topic(Topic.INVALIDATIONS)} from {where}",
            file=sys.stderr,
            flush=True,
        )

    def write(line: str) -> None:
        print(line, flush=True)

    try:
        tail(
            settings,
            from_beginning=args.from_beginning,
            count=args.count,
            as_json=getattr(args, "json", False),
            stop=stop,
            write=write,
            on_ready=ready,
        )
    except BrokenPipeError:
        # The reader went away (`roomstream tail | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
