"""The invalidation message codec: encoding (split into parts under a size limit) and decoding.

Wire format (contract: DESIGN.md, 'Messages'; consumers' rules: docs/invalidations.md). One
message per committer transaction that stored events; a message whose encoding would exceed
``PART_LIMIT`` bytes is sent as several parts with the same ``position`` and ``prev_position``,
numbered ``part`` = 0 .. ``parts`` - 1, in that order. Every part carries the message's
``rooms``; ``events`` and ``invalidate`` entries are spread over the parts (a cache's keys may be
spread too), invalidations before events. A consumer has the whole message once it has every
part; it may apply each part's invalidations as the part arrives, but notifies only after the
last part.

``decode_invalidation`` checks the shape of every field it hands on and raises
``MalformedMessage`` naming the field; it never returns half-checked data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from pipeline.errors import MalformedMessage

__all__ = [
    "PART_LIMIT",
    "Message",
    "decode_invalidation",
    "encode_invalidation",
    "encode_parts",
    "merge_parts",
]

Message = dict[str, Any]

# Well below Kafka's default 1 MB record limit (the broker's message.max.bytes and the topic's
# max.message.bytes, 1,048,588 bytes), with room for the record's headers and framing.
PART_LIMIT = 512 * 1024

_FORMAT = "invalidation"
_ENVELOPE = ("position", "prev_position", "part", "parts", "rooms")


def encode_invalidation(message: Mapping[str, Any]) -> bytes:
    """One message or part as JSON bytes, exactly as given."""
    return orjson.dumps(message)


def encode_parts(message: Mapping[str, Any], limit: int = PART_LIMIT) -> list[bytes]:
    """``message`` (without ``part``/``parts``) as one or more encoded parts, each ≤ ``limit``.

    Raises ValueError if one single entry (an event or a cache key) is larger than a part can
    hold; entries are bounded far below any sensible limit (event IDs, user IDs, room IDs).
    """
    whole = encode_invalidation({**message, "part": 0, "parts": 1})
    if len(whole) <= limit:
        return [whole]
    envelope = {
        "position": message["position"],
        "prev_position": message["prev_position"],
        "part": 0,
        "parts": 1,
        "rooms": message["rooms"],
        "invalidate": [],
        "events": [],
    }
    # The envelope with the largest part numbers it could carry, plus slack for separators.
    base = len(encode_invalidation({**envelope, "part": 10**6, "parts": 10**6})) + 16
    if base >= limit:
        raise ValueError(f"the envelope of position {message['position']} fills a part")
    # The entries in order, invalidations before events: (cache, key) or (None, event).
    entries: list[tuple[str | None, Any]] = [
        (e["cache"], key) for e in message["invalidate"] for key in e["keys"]
    ]
    entries += [(None, ev) for ev in message["events"]]
    # Parts are cut by count from the average entry's size and encoded whole; a part that
    # comes out over the limit is halved. One encoding per part, not one per entry.
    per_part = max(1, len(entries) * (limit - base) * 9 // (10 * len(whole)))
    slices = [entries[i : i + per_part] for i in range(0, len(entries), per_part)]
    bodies: list[tuple[list[dict[str, Any]], list[Any]]] = []
    while slices:
        piece = slices.pop(0)
        grouped = _regroup(piece)
        size = len(
            encode_invalidation({**envelope, "invalidate": grouped[0], "events": grouped[1]})
        )
        # Encoded as part 0 of 1: 16 bytes leave room for the real part numbers.
        if size + 16 <= limit:
            bodies.append(grouped)
        elif len(piece) == 1:
            what = "event entry" if piece[0][0] is None else f"key of cache {piece[0][0]}"
            raise ValueError(f"one {what} is larger than a part ({limit} B)")
        else:
            half = len(piece) // 2
            slices[:0] = [piece[:half], piece[half:]]
    out = []
    for i, (p_inv, p_events) in enumerate(bodies):
        body = {
            **envelope,
            "part": i,
            "parts": len(bodies),
            "invalidate": p_inv,
            "events": p_events,
        }
        data = encode_invalidation(body)
        if len(data) > limit:  # the margin above is conservative; this is its check
            raise ValueError(f"part {i} of position {message['position']} is {len(data)} B")
        out.append(data)
    return out


def _regroup(
    piece: Sequence[tuple[str | None, Any]],
) -> tuple[list[dict[str, Any]], list[Any]]:
    """A part's entries as its ``invalidate`` (consecutive keys of a cache together) and
    ``events`` lists."""
    invalidate: list[dict[str, Any]] = []
    events: list[Any] = []
    for cache, item in piece:
        if cache is None:
            events.append(item)
        elif invalidate and invalidate[-1]["cache"] == cache:
            invalidate[-1]["keys"].append(item)
        else:
            invalidate.append({"cache": cache, "keys": [item]})
    return invalidate, events


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise MalformedMessage(_FORMAT, reason)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_event_entry(e: object) -> bool:
    return (
        isinstance(e, dict)
        and isinstance(e.get("event_id"), str)
        and isinstance(e.get("room_id"), str)
        and _is_int(e.get("stream_ordering"))
    )


def _is_invalidate_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("cache"), str)
        and isinstance(entry.get("keys"), list)
        and all(isinstance(k, list) for k in entry["keys"])
    )


def _need_each(msg: Message, name: str, valid: Callable[[object], bool], problem: str) -> None:
    """``msg[name]`` is a list of entries that are all ``valid``; else MalformedMessage saying
    ``problem`` of the first that is not."""
    entries = msg[name]
    _need(isinstance(entries, list), f"{name} must be a list")
    for entry in entries:
        _need(valid(entry), f"{problem}: {entry!r:.80}")


def decode_invalidation(data: bytes | str) -> Message:
    """Parse and check one message (or part); raise MalformedMessage naming the bad field."""
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(_FORMAT, f"not JSON ({exc}): {data[:80]!r}") from None
    _need(isinstance(msg, dict), f"not a JSON object: {data[:80]!r}")
    for name in (*_ENVELOPE, "events", "invalidate"):
        _need(name in msg, f"lacks {name!r}: {data[:80]!r}")
    position, prev, part, parts = msg["position"], msg["prev_position"], msg["part"], msg["parts"]
    _need(_is_int(position) and _is_int(prev), "position and prev_position must be integers")
    _need(prev < position, f"prev_position {prev} is not below position {position}")
    _need(_is_int(parts) and parts >= 1, f"parts must be a positive integer, not {parts!r}")
    _need(_is_int(part) and 0 <= part < parts, f"part must be in 0..{parts - 1}, not {part!r}")
    rooms = msg["rooms"]
    _need(
        isinstance(rooms, list) and all(isinstance(r, str) for r in rooms),
        "rooms must be a list of room IDs",
    )
    _need_each(
        msg,
        "events",
        _is_event_entry,
        "an event lacks event_id, room_id or an integer stream_ordering",
    )
    _need_each(
        msg, "invalidate", _is_invalidate_entry, "an invalidate entry is not {cache, keys: [[...]]}"
    )
    checked: Message = msg
    return checked


def merge_parts(parts: Sequence[Message]) -> Message:
    """The whole message from its parts (in order): events and invalidations concatenated."""
    first = parts[0]
    return {
        "position": first["position"],
        "prev_position": first["prev_position"],
        "part": 0,
        "parts": 1,
        "rooms": first["rooms"],
        "events": [e for p in parts for e in p["events"]],
        "invalidate": [i for p in parts for i in p["invalidate"]],
    }
