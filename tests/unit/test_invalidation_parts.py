"""Split invalidation messages: the codec keeps each part under the limit, the applier
reassembles them and keeps invariant 4, drops duplicates and reports gaps."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.errors import MalformedMessage
from pipeline.invalidations import InvalidationApplier, build_message
from pipeline.room.chunk import Chunk, ChunkEvent, CurrentStateRow
from topics.invalidation import PART_LIMIT, decode_invalidation, encode_parts, merge_parts

ROOM = "!big:example.org"


def mass_join(n: int, first_so: int = 1) -> tuple[Chunk, dict[str, int]]:
    """One chunk of ``n`` joins (a state reset or a mass join in a big room)."""
    events = []
    rows = []
    for i in range(n):
        user = f"@user{i:05d}:server{i % 97}.example.org"
        eid = f"$join{i:05d}abcdefghijklmnopqrstuvwxyz0123456789"
        pdu = {"type": "m.room.member", "state_key": user, "sender": user}
        events.append(ChunkEvent(eid, 3, pdu, None, False, i + 1))
        rows.append(CurrentStateRow("m.room.member", user, eid, "join"))
    chunk = Chunk(f"{ROOM}/1", ROOM, "10", tuple(events), current_state_set=tuple(rows))
    return chunk, {e.event_id: first_so + i for i, e in enumerate(events)}


def whole_and_parts(n: int, limit: int = PART_LIMIT) -> tuple[dict[str, Any], list[bytes]]:
    chunk, orderings = mass_join(n)
    msg = build_message([(chunk, orderings)], n, 0)
    return msg, encode_parts(msg, limit)


def test_a_message_over_the_limit_is_split_into_numbered_parts_each_under_it() -> None:
    msg, parts = whole_and_parts(5_200)
    assert len(orjson.dumps(msg)) > 1_000_000  # over Kafka's default record limit
    assert len(parts) > 1
    decoded = [decode_invalidation(p) for p in parts]
    assert all(len(p) <= PART_LIMIT for p in parts)
    assert [d["part"] for d in decoded] == list(range(len(parts)))
    assert {d["parts"] for d in decoded} == {len(parts)}
    assert {(d["position"], d["prev_position"]) for d in decoded} == {(5_200, 0)}
    whole = merge_parts(decoded)
    assert whole["events"] == msg["events"]
    keys = {(i["cache"], tuple(k)) for i in msg["invalidate"] for k in i["keys"]}
    assert {(i["cache"], tuple(k)) for i in whole["invalidate"] for k in i["keys"]} == keys


@pytest.mark.parametrize("limit", [2_000, 10_000, 100_000])
def test_every_part_fits_whatever_the_limit(limit: int) -> None:
    _, parts = whole_and_parts(300, limit)
    assert all(len(p) <= limit for p in parts)
    assert len(parts) > 1


@pytest.mark.parametrize("limit", [3_000, 20_000, PART_LIMIT])
def test_entries_of_very_uneven_sizes_still_fit_and_merge_back_to_the_message(limit: int) -> None:
    chunk, orderings = mass_join(2_000)
    # One member with a name a hundred times longer than the others: estimates by average fail.
    long_user = "@" + "x" * 1_000 + ":example.org"
    first = chunk.events[0]
    events = (
        ChunkEvent(first.event_id, 3, {**first.pdu, "state_key": long_user}, None, False, 1),
        *chunk.events[1:],
    )
    rows = (CurrentStateRow("m.room.member", long_user, first.event_id, "join"),)
    chunk = Chunk(chunk.chunk_id, ROOM, "10", events, current_state_set=rows)
    msg = build_message([(chunk, orderings)], 2_000, 0)
    parts = encode_parts(msg, limit)
    assert all(len(p) <= limit for p in parts)
    whole = merge_parts([decode_invalidation(p) for p in parts])
    assert whole["events"] == msg["events"]
    keys = {(i["cache"], tuple(k)) for i in msg["invalidate"] for k in i["keys"]}
    assert {(i["cache"], tuple(k)) for i in whole["invalidate"] for k in i["keys"]} == keys


def test_a_small_message_is_one_part() -> None:
    msg, parts = whole_and_parts(3)
    assert len(parts) == 1
    assert decode_invalidation(parts[0]) == {**msg, "part": 0, "parts": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [("part", 2), ("parts", 0), ("position", "7"), ("prev_position", 99), ("rooms", "!r")],
)
def test_decode_refuses_inconsistent_envelopes(field: str, value: object) -> None:
    _, (data,) = whole_and_parts(2)
    doc = orjson.loads(data)
    doc[field] = value
    with pytest.raises(MalformedMessage, match=field.split("_", maxsplit=1)[0]):
        decode_invalidation(orjson.dumps(doc))


def parts_of(n: int, position: int, prev: int, limit: int = 20_000) -> list[dict[str, Any]]:
    chunk, _ = mass_join(n)
    orderings = {e.event_id: prev + 1 + i for i, e in enumerate(chunk.events)}
    assert prev + n == position
    msg = build_message([(chunk, orderings)], position, prev)
    return [decode_invalidation(p) for p in encode_parts(msg, limit)]


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.applier = InvalidationApplier(on_gap=lambda exp, m: self.log.append(("gap", exp)))
        self.applier.register_cache(
            "get_rooms_for_user", lambda key: self.log.append(("invalidate", key))
        )
        self.applier.add_notifier(lambda m: self.log.append(("notify", len(m["events"]))))


def test_invariant_4_every_part_is_invalidated_before_the_whole_message_is_notified() -> None:
    parts = parts_of(500, 500, 0)
    assert len(parts) > 2
    r = Recorder()
    results = [r.applier.apply(p) for p in parts]
    assert results == [False] * (len(parts) - 1) + [True]
    notify_at = r.log.index(("notify", 500))
    assert notify_at == len(r.log) - 1
    assert sum(1 for k, _ in r.log if k == "invalidate") == 500
    assert r.applier.position == 500
    assert r.applier.gaps == 0


def test_parts_delivered_again_are_dropped_and_a_resend_from_part_0_is_harmless() -> None:
    parts = parts_of(200, 200, 0)
    r = Recorder()
    # A committer crashed after sending two parts, then re-sent the whole message; then the
    # whole message came once more (crash between publish and mark sent).
    for p in [parts[0], parts[1], parts[1], *parts, *parts]:
        r.applier.apply(p)
    assert [x for x in r.log if x[0] == "notify"] == [("notify", 200)]
    assert r.applier.gaps == 0
    assert r.applier.duplicates == 1 + 2 + len(parts)
    assert r.applier.position == 200


def test_a_missing_part_is_reported_as_a_gap_and_never_notified() -> None:
    first = parts_of(200, 200, 0)
    second = parts_of(10, 210, 200)
    r = Recorder()
    for p in [first[0], *first[2:], *second]:
        r.applier.apply(p)
    assert r.applier.gaps >= 1
    assert ("notify", 200) not in r.log  # the message never completed
    assert ("notify", 10) in r.log
    assert r.applier.position == 210
