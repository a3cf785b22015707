"""The examples of docs/topics.md that the code makes: an invalidation message, missing-event
requests, a server-keys record.

Each is produced by the code that produces it in the pipeline (the room processor, the
committer's message builder and the topic codecs), never written by hand, so
``tests/unit/test_docs.py`` can require the page to show exactly what this module makes.
``python -m tests.unit.docs_examples`` prints them, to paste into the page after a change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from nacl.signing import SigningKey

from pipeline.invalidations import build_message
from pipeline.room.batch import Incoming
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from topics import chunk as chunk_codec
from topics import missing_events, server_keys
from topics.invalidation import encode_parts

TOPICS_PAGE = Path(__file__).parents[2] / "docs" / "topics.md"
RECEIVED_TS = 1_767_225_600_000
# The chunk example's join is committed at this stream ordering, the lobby's message after it.
JOIN_ORDERING = 1042


def page_example(name: str, page: Path = TOPICS_PAGE) -> bytes:
    """The first JSON block of ``page`` marked ``<!-- example: name -->``."""
    text = page.read_text(encoding="utf-8")
    found = re.search(rf"<!-- example: {name} -->\s*\n```json\n(.*?)\n```", text, re.DOTALL)
    assert found, f"{page.name} has no example {name!r}"
    return found.group(1).encode()


def _lobby() -> tuple[RoomBuilder, RoomProcessor, list[Any]]:
    """Another room: its base, then a message in a batch of its own, then a message whose prev
    event is withheld (parked, asked for), then that event (the request answered)."""
    b = RoomBuilder("10", room_id="!lobby:a.example")
    base = b.base()
    b.message("M1", BOB, body="hello")
    b.message("M2", ALICE, body="hi bob")
    b.message("M3", BOB, body="how are you?")
    proc = RoomProcessor(b.room_id)
    batches = [base, ["M1"], ["M3"], ["M2"]]
    results = []
    ts = RECEIVED_TS
    for names in batches:
        incoming = []
        for n in names:
            ts += 250
            incoming.append(Incoming(b.raw(n), received_ts=ts))
        results.append(proc.process(incoming))
    return b, proc, results


def invalidation() -> bytes:
    """One committer transaction of two chunks: the join of the chunk example and a message of
    another room, as the committer encodes it (one part)."""
    join = chunk_codec.decode(page_example("chunk"))
    _, _, results = _lobby()
    (message,) = results[1].chunks
    changes = [
        (join, {e.event_id: JOIN_ORDERING for e in join.events}),
        (message, {e.event_id: JOIN_ORDERING + 1 for e in message.events}),
    ]
    (part,) = encode_parts(build_message(changes, JOIN_ORDERING + 1, JOIN_ORDERING - 1))
    return part


def missing_event_requests() -> list[bytes]:
    """The lobby's request for the withheld message, opened, then answered."""
    _, _, results = _lobby()
    opened = [missing_events.encode_request(r) for r in results[2].missing_requests]
    answered = [missing_events.encode_request(r) for r in results[3].missing_requests]
    return [*opened, *answered]


def server_key() -> tuple[bytes, bytes]:
    """The record of other.example's current key, as a front end publishes it."""
    key = SigningKey(bytes(range(32))).verify_key.encode()
    return server_keys.encode(
        "other.example",
        "ed25519:1",
        key,
        valid_until_ts=1_767_312_000_000,
        from_server="other.example",
        ts_added_ms=1_767_225_540_000,
    )


def pretty(value: bytes) -> str:
    """A message as the page shows it: a field a line, a list's items a line each."""
    lines = []
    for field, v in orjson.loads(value).items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            items = ",\n".join("    " + orjson.dumps(i).decode() for i in v)
            lines.append(f'  "{field}": [\n{items}\n  ]')
        else:
            lines.append(f'  "{field}": {orjson.dumps(v).decode()}')
    return "{\n" + ",\n".join(lines) + "\n}"


def main() -> None:
    def show(name: str, value: bytes) -> None:
        print(f"<!-- example: {name} -->\n```json\n{pretty(value)}\n```\n")

    show("invalidation", invalidation())
    for request in missing_event_requests():
        show("missing_events", request)
    key, value = server_key()
    print(f"key: {key.decode()}")
    show("server_keys", value)


if __name__ == "__main__":
    main()
