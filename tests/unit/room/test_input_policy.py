"""The input policy of docs/input-policy.md through the room processor: what is processed, what
is dead-lettered with which reason, and that whatever is accepted can be written by every later
stage (the chunk, the room record, the committer's rows)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from pipeline.matrix.hashes import add_content_hash, compute_event_id
from pipeline.matrix.pdu import MAX_PDU_NESTING
from pipeline.room import storage
from pipeline.room.batch import BatchResult, Incoming, ProcessorConfig
from pipeline.room.headers import InvalidHeader, parse_received_ts, storable_received_ts
from pipeline.room.parking import ParkingLimits
from pipeline.room.processor import RoomProcessor
from tests.unit.room.builder import ALICE, BOB, RoomBuilder
from topics import chunk as chunk_codec

HASH_ID_VERSIONS = ["3", "10", "11", "12"]


def events_of(result: BatchResult) -> dict[str, Any]:
    return {e.event_id: e for e in (result.chunk.events if result.chunk else ())}


def nested(levels: int) -> Any:
    """A value crossing ``levels`` arrays."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# --- event_id copy --------------------------------------------------------------------------


@pytest.mark.parametrize("version", HASH_ID_VERSIONS)
def test_event_id_copy_equal_to_the_reference_hash_is_processed_and_stored_without_it(
    version: str,
) -> None:
    b = RoomBuilder(version)
    names = b.base()
    b.message("M", BOB)
    proc = RoomProcessor(b.room_id)
    annotated = [orjson.dumps({**b.pdus[n], "event_id": b.ids[n]}) for n in [*names, "M"]]
    result = proc.process(annotated)
    assert not result.dead_letters
    stored = events_of(result)
    assert set(stored) == {b.ids[n] for n in [*names, "M"]}
    assert all(e.rejected is None for e in stored.values())
    assert all("event_id" not in e.pdu for e in stored.values())
    assert proc.forward_extremities == {b.ids["M"]}


@pytest.mark.parametrize("version", HASH_ID_VERSIONS)
def test_event_id_copy_that_differs_is_dead_lettered_naming_both_ids(version: str) -> None:
    b = RoomBuilder(version)
    names = b.base()
    b.message("M", BOB)
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(names))
    wrong = b.ids["MB"]
    result = proc.process([orjson.dumps({**b.pdus["M"], "event_id": wrong})])
    assert result.chunk is None
    [dl] = result.dead_letters
    assert wrong in dl.reason and b.ids["M"] in dl.reason


# --- nesting: the deepest accepted PDU survives every envelope ------------------------------


def test_deepest_accepted_pdu_is_written_by_the_chunk_and_the_room_record() -> None:
    b = RoomBuilder("10")
    names = b.base()
    b.message("GAP", BOB)  # never delivered: the next event parks behind it
    # The PDU, content and MAX_PDU_NESTING - 2 arrays.
    b.add("DEEP", "m.room.message", BOB, {"n": nested(MAX_PDU_NESTING - 2)})
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(names))
    result = proc.process(b.raws(["DEEP"]))
    assert not result.dead_letters and [p.event_id for p in proc.parked()] == [b.ids["DEEP"]]
    # Parked: the room record holds it.
    writes = storage.save(proc, None)
    record = dict(writes)[storage.record_key(b.room_id)]
    assert b.ids["DEEP"].encode() in record
    # Released: the chunk holds it, and the committer's event_json is its orjson text.
    result = proc.process(b.raws(["GAP"]))
    deep = events_of(result)[b.ids["DEEP"]]
    assert deep.rejected is None
    assert result.chunk is not None
    orjson.loads(chunk_codec.encode(result.chunk))
    orjson.dumps(deep.pdu)


@pytest.mark.parametrize("levels", [MAX_PDU_NESTING + 1, 250])
def test_pdu_nested_past_the_limit_is_dead_lettered_with_the_path(levels: int) -> None:
    b = RoomBuilder("10")
    names = b.base()
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(names))
    # Built by hand, and written by the stdlib: canonical JSON (and so the builder's hashing)
    # and orjson stop at 254 levels.
    pdu = {**b.pdus["MB"], "type": "m.room.message", "content": {"n": nested(levels - 2)}}
    pdu.pop("state_key")
    result = proc.process([json.dumps(pdu).encode()])
    [dl] = result.dead_letters
    assert f"deeper than {MAX_PDU_NESTING} levels" in dl.reason
    assert "content.n[0]" in dl.reason


# --- NUL: what reaches a text column --------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_membership_with_nul_is_rejected_by_the_rules_and_nothing_raw_reaches_a_text_column(
    version: str,
) -> None:
    # Synapse rejects an unknown membership (and stores the event as rejected); the rejection
    # reason may quote it, so the reason is written with the escape.
    b = RoomBuilder(version)
    names = b.base()
    b.add("BAD", "m.room.member", BOB, {"membership": "jo\x00in"}, state_key=BOB)
    proc = RoomProcessor(b.room_id)
    result = proc.process(b.raws([*names, "BAD"]))
    assert not result.dead_letters
    assert result.chunk is not None
    bad = events_of(result)[b.ids["BAD"]]
    assert bad.rejected is not None and "\x00" not in bad.rejected
    assert all(m.event_id != b.ids["BAD"] for m in result.chunk.memberships)


@pytest.mark.parametrize("version", ["1", "10"])
def test_create_event_creator_with_nul_stores_the_sender_as_creator(version: str) -> None:
    b = RoomBuilder(version)
    b.add(
        "C",
        "m.room.create",
        ALICE,
        {"room_version": version, "creator": "@ali\x00ce:a.example"},
        state_key="",
        prev=[],
    )
    result = RoomProcessor(b.room_id).process(b.raws(["C"]))
    assert result.chunk is not None and result.chunk.creator == ALICE


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "m.room.mess\x00age"), ("state_key", "x\x00")],
)
def test_nul_in_type_or_state_key_is_dead_lettered_not_left_to_the_committer(
    field: str, value: str
) -> None:
    b = RoomBuilder("10")
    names = b.base()
    proc = RoomProcessor(b.room_id)
    proc.process(b.raws(names))
    pdu = add_content_hash({**b.pdus["MB"], field: value, "hashes": {}})
    result = proc.process([orjson.dumps(pdu)])
    assert result.chunk is None
    [dl] = result.dead_letters
    assert field in dl.reason and "U+0000" in dl.reason
    assert dl.event_id is None and compute_event_id(pdu, b.rv) not in proc.forward_extremities


# --- received_ts ----------------------------------------------------------------------------

RECEIVED_TS: list[tuple[Any, int | None, str | None]] = [
    # header value, parsed, or the words the InvalidHeader reason holds
    (None, None, None),
    (b"", None, None),
    (b"1700000000000", 1_700_000_000_000, None),
    ("1700000000000", 1_700_000_000_000, None),
    (b"0", 0, None),
    (b"-1", -1, None),
    (str(2**63 - 1).encode(), 2**63 - 1, None),
    (str(-(2**63)).encode(), -(2**63), None),
    (str(2**63).encode(), None, "64 bits"),
    (str(-(2**63) - 1).encode(), None, "64 bits"),
    (b"9" * 400, None, "64 bits"),
    (b"0" * 30 + b"12", 12, None),
    (b"12.5", None, "whole number"),
    (b" 12", None, "whole number"),
    (b"1_000", None, "whole number"),
    (b"+12", None, "whole number"),
    ("１２".encode(), None, "whole number"),
    (b"\xff", None, "whole number"),
    (b"-", None, "whole number"),
]


@pytest.mark.parametrize(("value", "parsed", "refused"), RECEIVED_TS)
def test_received_ts_header_is_a_decimal_int64_or_refused_with_a_reason(
    value: Any, parsed: int | None, refused: str | None
) -> None:
    if refused is None:
        assert parse_received_ts(value) == parsed
    else:
        with pytest.raises(InvalidHeader) as exc:
            parse_received_ts(value)
        assert exc.value.header == "received_ts" and refused in exc.value.reason


@pytest.mark.parametrize(
    ("given", "stored"), [(2**63 - 1, 2**63 - 1), (2**63, None), (-(2**63) - 1, None), (None, None)]
)
def test_received_ts_the_database_cannot_hold_is_not_put_in_a_chunk(
    given: int | None, stored: int | None
) -> None:
    assert storable_received_ts(given) == stored
    b = RoomBuilder("10")
    b.create()
    result = RoomProcessor(b.room_id).process([Incoming(b.raw("C"), received_ts=given)])
    [event] = events_of(result).values()
    assert event.received_ts == stored


# --- an auth event from another room --------------------------------------------------------


def test_auth_event_from_another_room_is_never_known_here_so_the_event_parks_then_expires() -> None:
    # A processor knows only its own room's events: an auth event of another room never arrives
    # here (its PDU is routed to its own room), so the event waits for it and then goes to the
    # dead-letter topic naming it. Where both are known, the rules reject it (the Matrix tests).
    b = RoomBuilder("10")
    names = b.base()
    other = RoomBuilder("10", room_id="!other:b.example")
    other.create("OC", creator=BOB)
    other.member("OMB", BOB)
    foreign = other.ids["OMB"]
    pdu = b.message("M", BOB)
    pdu = add_content_hash({**pdu, "auth_events": [*pdu["auth_events"], foreign], "hashes": {}})
    ttl = 1_000
    proc = RoomProcessor(b.room_id, config=ProcessorConfig(parking=ParkingLimits(ttl_ms=ttl)))
    proc.process(b.raws(names), now=0)
    assert proc.process([orjson.dumps(pdu)], now=0).parked == 1
    # The foreign event, should it be delivered here, is refused as another room's.
    [dl] = proc.process(other.raws(["OMB"]), now=1).dead_letters
    assert "belongs to room !other:b.example" in dl.reason
    [dl] = proc.expire(ttl).dead_letters
    assert foreign in dl.reason and "never arrived" in dl.reason
