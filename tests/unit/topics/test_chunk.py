"""``topics.chunk``: a chunk survives the wire unchanged, its bytes are the format's, and a value
that is not a chunk is refused naming the field."""

from __future__ import annotations

import orjson
import pytest

from pipeline.room.chunk import Chunk
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from tests.unit.topics.refusals import refusal
from topics import chunk as chunk_codec


def _chunks() -> list[Chunk]:
    b = RoomBuilder("10")
    b.base()
    b.message("M", ALICE)
    b.member("LB", BOB, "leave")
    proc = RoomProcessor(b.room_id)
    out = []
    for names in (["C", "MA", "PL", "JR", "MB"], ["M"], ["LB"]):
        chunk = proc.process([orjson.dumps(b.pdus[n]) for n in names]).chunk
        assert chunk is not None
        out.append(chunk)
    return out


CHUNKS = _chunks()


@pytest.mark.parametrize("chunk", CHUNKS, ids=["create", "message", "leave"])
def test_a_chunk_decodes_to_itself(chunk: Chunk) -> None:
    assert chunk_codec.decode(chunk_codec.encode(chunk)) == chunk


@pytest.mark.parametrize("chunk", CHUNKS, ids=["create", "message", "leave"])
def test_the_bytes_group_extremities_and_current_state_as_the_format_says(chunk: Chunk) -> None:
    doc = orjson.loads(chunk_codec.encode(chunk))
    assert list(doc) == [
        "chunk_id",
        "seq",
        "room_id",
        "room_version",
        "creator",
        "events",
        "state_groups",
        "forward_extremities",
        "current_state",
        "memberships",
        "redactions",
        "inputs",
        "digest",
        "meta",
    ]
    assert doc["forward_extremities"] == {
        "added": list(chunk.forward_extremities_added),
        "removed": list(chunk.forward_extremities_removed),
    }
    assert doc["current_state"]["set"] == [
        [r.type, r.state_key, r.event_id, r.membership] for r in chunk.current_state_set
    ]
    assert [e["event_id"] for e in doc["events"]] == [e.event_id for e in chunk.events]


def _without(path: list[str | int]) -> bytes:
    doc = orjson.loads(chunk_codec.encode(CHUNKS[0]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return orjson.dumps(doc)


def _with(path: list[str | int], value: object) -> bytes:
    doc = orjson.loads(chunk_codec.encode(CHUNKS[0]))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "Expected `object`"),
        (_without(["chunk_id"]), "`chunk_id`"),
        (_without(["events"]), "`events`"),
        (_without(["events", 0, "format_version"]), "`format_version`"),
        (_with(["events", 0, "format_version"], "3"), "$.events[0].format_version"),
        (_with(["events", 0, "soft_failed"], None), "$.events[0].soft_failed"),
        (_with(["state_groups", 0, "delta"], [["a", "b"]]), "$.state_groups[0].delta[0]"),
        (_with(["current_state", "set"], [["t", "k"]]), "$.current_state.set[0]"),
        (_with(["room_version"], 10), "$.room_version"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_value_that_is_not_a_chunk_is_refused_naming_the_field(value: bytes, names: str) -> None:
    assert names in str(refusal(chunk_codec.decode, value, "chunk"))


@pytest.mark.parametrize("chunk", CHUNKS, ids=["create", "message", "leave"])
def test_the_committer_reads_the_same_chunk_with_each_pdu_as_its_json_text(chunk: Chunk) -> None:
    got = chunk_codec.decode_for_commit(chunk_codec.encode(chunk))
    assert (got.chunk_id, got.room_id, got.room_version, got.creator, got.seq) == (
        chunk.chunk_id,
        chunk.room_id,
        chunk.room_version,
        chunk.creator,
        chunk.seq,
    )
    assert [orjson.loads(bytes(e.pdu)) for e in got.events] == [e.pdu for e in chunk.events]
    assert [(p.type, p.sender, p.state_key, p.depth, p.prev_events) for p in got.pdus] == [
        (
            e.pdu["type"],
            e.pdu["sender"],
            e.pdu.get("state_key"),
            e.pdu["depth"],
            e.pdu["prev_events"],
        )
        for e in chunk.events
    ]
    assert [tuple(r) for r in got.current_state.set] == [
        (r.type, r.state_key, r.event_id, r.membership) for r in chunk.current_state_set
    ]
    assert got.content_digest() == chunk.digest


def test_the_committer_computes_the_content_digest_whatever_digest_a_chunk_carries() -> None:
    doc = orjson.loads(chunk_codec.encode(CHUNKS[1]))
    doc["events"][0]["pdu"]["content"]["body"] = "altered after the digest was computed"
    got = chunk_codec.decode_for_commit(orjson.dumps(doc))
    assert got.digest == CHUNKS[1].digest
    assert got.content_digest() != CHUNKS[1].digest


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"{not json", "not JSON"),
        (_without(["events", 0, "format_version"]), "`format_version`"),
        (_with(["state_groups", 0, "delta"], [["a", "b"]]), "$.state_groups[0].delta[0]"),
        (_without(["events", 0, "pdu", "type"]), "`type` - at `$.events[0].pdu`"),
        (_with(["events", 0, "pdu", "depth"], "1"), "$.events[0].pdu.depth"),
        (_with(["events", 0, "pdu", "state_key"], 5), "$.events[0].pdu.state_key"),
        (_with(["digest"], "not hex"), "$.digest"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_committer_refuses_a_value_that_is_not_a_chunk_naming_the_field(
    value: bytes, names: str
) -> None:
    assert names in str(refusal(chunk_codec.decode_for_commit, value, "chunk"))


@pytest.mark.parametrize(
    ("text", "plain"),
    [("plain words, ünïcødé", True), ("tab\there", False), ("back\\slash", False), ('"', False)],
)
def test_a_chunk_is_plain_when_no_string_in_it_holds_a_character_to_escape(
    text: str, plain: bool
) -> None:
    doc = orjson.loads(chunk_codec.encode(CHUNKS[1]))
    doc["events"][0]["pdu"]["content"]["body"] = text
    assert chunk_codec.decode_for_commit(orjson.dumps(doc)).plain is plain
