"""The ``roomstream`` command: argument parsing and dispatch to the shells. No logic lives here.

Exit codes: 0 success, 1 a Roomstream error (the message says what to do), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import Settings, load_settings
from pipeline.errors import RoomstreamError


def _progress(msg: str) -> None:
    print(f"roomstream: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- stack


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.dev.stack import Stack

    if args.action != "up" and (args.brokers is not None or args.secure):
        raise RoomstreamError(
            "--brokers and --secure are for `stack up`; down, status and env read what up built"
        )
    stack = Stack(settings, brokers=args.brokers, secure=True if args.secure else None)
    if args.action == "up":
        started = stack.up(_progress)
        for st in stack.status():
            print(st.line())
        if not started:
            _progress("the stack was already running; nothing started")
        _progress('point your shell at it with: eval "$(roomstream stack env)"')
    elif args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.action == "status":
        statuses = stack.status()
        for st in statuses:
            print(st.line())
        return 0 if all(st.running for st in statuses) else 3
    elif args.action == "env":
        for line in stack.env_lines():
            print(line)
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from topics import apply_topics

    report = apply_topics(settings)
    for line in report.lines():
        print(line)
    if not report.ok:
        print(
            "roomstream: the topics above differ from their definitions; fix them or the "
            "settings before running workers",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import migrate
    from pipeline.pg import database_dsn

    applied = migrate(database_dsn(settings))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    if args.explain:
        from pipeline.ops.explain import replay_main

        return replay_main(args, settings)
    if args.json or args.event is not None or args.room is not None:
        raise RoomstreamError("--json, --event and --room go with --explain")

    from pipeline.room.replay import replay

    try:
        with open(args.file, "rb") as f:
            result = replay(f, state_after=args.state_after)
    except FileNotFoundError:
        raise RoomstreamError(
            f"{args.file}: no such file; give a JSON-lines file of PDUs"
        ) from None
    sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    sys.stdout.buffer.write(b"\n")
    return 0


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import importlib

        handler = getattr(importlib.import_module(module), func)
        return int(handler(args, settings))

    return run


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomstream",
        description="Persist Matrix room events through Kafka into PostgreSQL. "
        "Settings come from ROOMSTREAM_* environment variables; flags override them.",
    )
    p.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (ROOMSTREAM_KAFKA_BOOTSTRAP)")
    p.add_argument("--database-url", help="libpq URL of PostgreSQL (ROOMSTREAM_DATABASE_URL)")
    p.add_argument("--topic-prefix", help="topic name prefix (ROOMSTREAM_TOPIC_PREFIX)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("stack", help="the local Kafka and PostgreSQL of this machine")
    s.add_argument("action", choices=["up", "down", "status", "env"])
    s.add_argument(
        "--brokers", type=int, default=None, help="Kafka brokers of a new stack (default 1)"
    )
    s.add_argument(
        "--secure",
        action="store_true",
        help="a new stack whose Kafka takes SCRAM-SHA-512 users over TLS with a CA of its own",
    )
    s.set_defaults(handler=cmd_stack)

    t = sub.add_parser("topics", help="create or verify the topics; report drift")
    t.add_argument("action", choices=["apply"])
    t.set_defaults(handler=cmd_topics)

    d = sub.add_parser("db", help="database schema")
    d.add_argument("action", choices=["migrate"])
    d.set_defaults(handler=cmd_db)

    w = sub.add_parser("worker", help="run a room processor (start several to scale out)")
    w.add_argument("--id", default=None, help="worker id (default: host and pid)")
    w.add_argument("--web-port", type=int, default=None, help="faust web/metrics port")
    w.set_defaults(handler=_lazy("pipeline.worker.app", "main"))

    c = sub.add_parser("committer", help="run the committer (a second one is a hot standby)")
    c.set_defaults(handler=_lazy("pipeline.committer.loop", "main"))

    pr = sub.add_parser("produce", help="produce PDUs from a JSON-lines file, keyed by room_id")
    pr.add_argument("file")
    pr.set_defaults(handler=_lazy("pipeline.ops.produce", "main"))

    tl = sub.add_parser("tail", help="print the invalidation stream")
    tl.add_argument("--from-beginning", action="store_true")
    tl.add_argument("--count", type=int, default=None, help="stop after this many messages")
    tl.add_argument("--json", action="store_true", help="print each message as JSON")
    tl.set_defaults(handler=_lazy("pipeline.ops.tail", "main"))

    st = sub.add_parser("status", help="lag per stage, parked events, dead letters, last position")
    st.add_argument("--json", action="store_true", help="print one JSON object instead")
    st.set_defaults(handler=_lazy("pipeline.ops.status", "main"))

    r = sub.add_parser("replay", help="run the room logic offline over a JSON-lines file of PDUs")
    r.add_argument("file")
    r.add_argument("--state-after", action="store_true", help="include the state after each event")
    r.add_argument(
        "--explain",
        action="store_true",
        help="why each room is as it is: outcomes with their rules, resolutions, extremities",
    )
    r.add_argument("--event", default=None, help="with --explain: explain this event only")
    r.add_argument("--room", default=None, help="with --explain: this room only")
    r.add_argument("--json", action="store_true", help="with --explain: JSON instead of a tree")
    r.set_defaults(handler=cmd_replay)

    ex = sub.add_parser(
        "explain", help="why an event was accepted, rejected or soft-failed; why a room's state is"
    )
    ex.add_argument("event_id", nargs="?", default=None, metavar="EVENT_ID")
    ex.add_argument("--room", default=None, metavar="ROOM_ID", help="explain a whole room")
    ex.add_argument("--json", action="store_true", help="one JSON object instead of a tree")
    ex.set_defaults(handler=_lazy("pipeline.ops.explain", "main"))

    rn = sub.add_parser("run", help="everything on this machine over a generated workload")
    rn.add_argument("--rooms", type=int, default=50)
    rn.add_argument("--events-per-room", type=int, default=20)
    rn.add_argument("--workers", type=int, default=2)
    rn.add_argument("--seed", type=int, default=1)
    rn.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the end")
    rn.add_argument("--show-rooms", type=int, default=12, help="rooms listed in the summary")
    rn.set_defaults(handler=_lazy("pipeline.dev.demo", "main"))

    b = sub.add_parser("bench", help="the benchmark suite")
    b.add_argument("--quick", action="store_true", help="smaller inputs (about 7 minutes)")
    b.add_argument("--only", default=None, help="comma-separated benchmarks, e.g. B1,B4")
    b.add_argument("--workers", type=int, default=2, help="worker processes of B1-B3")
    b.add_argument(
        "--output", default=None, help="where to write the report (default: BENCHMARKS.md)"
    )
    b.set_defaults(handler=_lazy("pipeline.bench", "main"))
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every command's cleanup (child processes, producers)
    # runs; the worker, committer and tail install handlers of their own over this one.
    signal.signal(signal.SIGTERM, _interrupt)
    overrides: dict[str, Any] = {
        "kafka_bootstrap": args.kafka_bootstrap,
        "database_url": args.database_url,
        "topic_prefix": args.topic_prefix,
    }
    try:
        from pipeline.pg import refuse_password_in_argv

        refuse_password_in_argv(args.database_url)
        settings = load_settings(**overrides)
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except RoomstreamError as e:
        print(f"roomstream: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roomstream: interrupted; stopped cleanly", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
