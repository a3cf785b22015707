"""``roomstream explain`` (against the database) and ``roomstream replay FILE --explain``.

Both rebuild the explanation by running PDUs through the room processor with a recorder
(``pipeline.room.explain``): the database command reads the room's stored PDUs from
``event_json`` in stream order, which is the order the workers decided them in, so it needs no
table of its own and explains with the very code that decided. It also sets what the database
recorded beside what the replay decided, and says so when they differ (a room processed by an
older version of the rules, say).

Events the database does not hold were dead-lettered (see the dead-letter topic and
``roomstream status``) or are still parked in a worker; ``replay --explain`` over the input
explains those too.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from typing import Any

import orjson

from pipeline import pg
from pipeline.config import Settings
from pipeline.errors import RoomstreamError
from pipeline.room.explain import Explained, explain, render_event, render_room


def main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream explain EVENT_ID`` / ``roomstream explain --room ROOM_ID``."""
    if (args.event_id is None) == (args.room is None):
        raise RoomstreamError("give an EVENT_ID or --room ROOM_ID (one of them)")
    with closing(pg.connect(settings)) as conn, conn.cursor() as cur:
        room_id = args.room
        if room_id is None:
            cur.execute("SELECT room_id FROM events WHERE event_id = %s", (args.event_id,))
            row = cur.fetchone()
            if row is None:
                raise RoomstreamError(
                    f"{args.event_id} is not in the database: it was dead-lettered (see the "
                    "dead-letter topic and `roomstream status`), is still parked in a worker, or "
                    "never arrived; `roomstream replay FILE --explain` explains it from the input"
                )
            room_id = row[0]
        cur.execute(
            "SELECT e.event_id, j.json, e.rejection_reason, e.soft_failed FROM events e "
            "JOIN event_json j USING (event_id) WHERE e.room_id = %s AND NOT e.outlier "
            "ORDER BY e.stream_ordering",
            (room_id,),
        )
        rows = cur.fetchall()
    if not rows:
        raise RoomstreamError(f"room {room_id} has no events in the database")
    explained = explain(r[1] for r in rows)
    stored = {r[0]: _stored_outcome(r[2], r[3]) for r in rows}
    if args.event_id is not None:
        out = explained.event(args.event_id)
        out["stored_outcome"] = stored.get(args.event_id)
        if out["stored_outcome"] != out["outcome"]:
            out["differs"] = (
                f"the database recorded {out['stored_outcome']}; the rules of this version "
                f"decide {out['outcome']}"
            )
    else:
        out = explained.room(room_id)
        decided = explained.rooms[room_id].events
        diverged = [
            e for e, outcome in stored.items() if e in decided and decided[e].outcome != outcome
        ]
        if diverged:
            out["differs_from_database"] = diverged
    _print(out, args.json, room=args.event_id is None)
    return 0


def replay_main(args: argparse.Namespace, settings: Settings) -> int:
    """``roomstream replay FILE --explain [--event EVENT_ID] [--room ROOM_ID]``."""
    try:
        with open(args.file, "rb") as f:
            explained = explain(f)
    except FileNotFoundError:
        raise RoomstreamError(
            f"{args.file}: no such file; give a JSON-lines file of PDUs"
        ) from None
    if args.event is not None:
        _print(explained.event(args.event), args.json, room=False)
        return 0
    rooms = [args.room] if args.room is not None else sorted(explained.rooms)
    out = _every_room(explained, rooms)
    if args.json:
        _write_json(out)
    else:
        for room in out["rooms"]:
            print(render_room(room))
            for event in room["explained_events"]:
                print()
                print(render_event(event))
            print()
    return 0


def _every_room(explained: Explained, rooms: list[str]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for room_id in rooms:
        room = explained.room(room_id)
        # Every event that was not simply accepted, explained in full.
        room["explained_events"] = [
            explained.event(n["event_id"]) for n in room.get("not_accepted", ())
        ]
        out.append(room)
    return {"rooms": out, "dead_letter": explained.dead_letters}


def _stored_outcome(rejection_reason: str | None, soft_failed: bool) -> str:
    if rejection_reason is not None:
        return "rejected"
    return "soft-failed" if soft_failed else "accepted"


def _print(out: dict[str, Any], as_json: bool, *, room: bool) -> None:
    if as_json:
        _write_json(out)
        return
    print(render_room(out) if room else render_event(out))
    if out.get("differs"):
        print(f"note: {out['differs']}")


def _write_json(out: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    sys.stdout.buffer.write(b"\n")
