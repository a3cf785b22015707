"""``topics.pdu_input``: the routing parse of an input PDU, and the producers' record."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.room.builder import ALICE, RoomBuilder
from tests.unit.topics.refusals import refusal
from topics import pdu_input


def test_an_input_is_routed_to_the_room_it_names_with_what_its_headers_say() -> None:
    value = orjson.dumps({"room_id": "!r:example.org", "type": "m.room.message"})
    got = pdu_input.decode(value, [("origin", b"a.example"), ("received_ts", b"1700")])
    assert got == pdu_input.PduInput("!r:example.org", value, "a.example", 1700)


@pytest.mark.parametrize("version", ["10", "12"])
def test_a_create_event_is_routed_to_the_room_it_founds(version: str) -> None:
    b = RoomBuilder(version)
    b.create()
    b.member("MA", ALICE)
    assert pdu_input.decode(b.raw("C")).room_id == b.room_id
    assert pdu_input.decode(b.raw("MA")).room_id == b.room_id


@pytest.mark.parametrize(
    "headers",
    [None, [], [("received_ts", b"soon")], [("received_ts", None)], {"other": b"1"}],
    ids=["none", "empty", "not-an-integer", "null", "other-header"],
)
def test_a_received_ts_header_that_says_no_integer_is_ignored(headers: object) -> None:
    value = b'{"room_id": "!r:example.org"}'
    assert pdu_input.decode(value, headers).received_ts is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value (a tombstone)"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"type": "m.room.message"}', "has no room_id"),
        (b'{"room_id": 5}', "room_id 5 is not a room ID"),
        (b'{"type": "m.room.create", "content": {"room_version": "12"}, "x": 1e400}', "infinity"),
    ],
)
def test_an_input_that_names_no_room_is_refused_saying_why(
    value: bytes | None, reason: str
) -> None:
    assert reason in refusal(pdu_input.decode, value, "pdu").reason


def test_the_producers_record_is_keyed_by_room_and_stamped() -> None:
    value = b'{"room_id": "!r:example.org"}'
    record = pdu_input.encode(value, received_ts=1700, origin="a.example")
    assert record == pdu_input.PduRecord(
        b"!r:example.org", value, [("origin", b"a.example"), ("received_ts", b"1700")]
    )
    assert pdu_input.decode(record.value, record.headers) == pdu_input.PduInput(
        "!r:example.org", value, "a.example", 1700
    )


def test_a_line_that_names_no_room_is_produced_without_a_key_for_the_workers_to_refuse() -> None:
    assert pdu_input.encode(b"{not json") == pdu_input.PduRecord(None, b"{not json", [])
