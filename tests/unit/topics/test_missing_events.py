"""``topics.missing_events``: the request DESIGN.md describes, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from pipeline.room.missing import MissingRequest
from tests.unit.topics.refusals import refusal
from topics import missing_events


def test_a_request_names_room_missing_events_needing_event_and_first_seen() -> None:
    raw = missing_events.encode("!r:example.org", ["$b", "$a", "$b"], "$c", 1700)
    assert orjson.loads(raw) == {
        "room_id": "!r:example.org",
        "missing": ["$a", "$b"],
        "needed_by": "$c",
        "first_seen_ts": 1700,
        "status": "open",
        "closed_ts": None,
    }
    assert missing_events.decode(raw) == missing_events.MissingEventsRequest(
        room_id="!r:example.org", missing=("$a", "$b"), needed_by="$c", first_seen_ts=1700
    )


GOOD = {"room_id": "!r:example.org", "missing": ["$a"], "needed_by": "$c", "first_seen_ts": 1}


def _doc(**change: object) -> bytes:
    return orjson.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not ...})


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"{", "not JSON"),
        (_doc(room_id=...), "`room_id`"),
        (_doc(room_id="r"), "`room_id` 'r' is not a room ID"),
        (_doc(missing=[]), "`missing` is empty"),
        (_doc(missing="$a"), "$.missing"),
        (_doc(missing=["a"]), "'a' is not an event ID"),
        (_doc(needed_by="$a"), "among the events it needs"),
        (_doc(first_seen_ts=...), "`first_seen_ts`"),
        (_doc(first_seen_ts="now"), "$.first_seen_ts"),
        (_doc(status="done"), "$.status"),
        (_doc(status="answered"), "must have `closed_ts`"),
        (_doc(closed_ts=5), "must not have `closed_ts`"),
        (_doc(needed_by=None, missing=["x"]), "'x' is not an event ID"),
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(value: bytes, names: str) -> None:
    assert names in str(refusal(missing_events.decode, value, "missing-events"))


def test_a_request_for_nothing_is_not_built() -> None:
    with pytest.raises(ValueError, match="`missing` is empty"):
        missing_events.encode("!r:example.org", [], "$c", 1)


def test_a_close_record_and_an_unnamed_waiting_event_round_trip() -> None:
    closed = MissingRequest("!r:example.org", ("$a",), None, 5, "expired", 9)
    decoded = missing_events.decode(missing_events.encode_request(closed))
    assert (decoded.needed_by, decoded.status, decoded.closed_ts) == (None, "expired", 9)
    # A record without the fields added later reads as an open request.
    assert missing_events.decode(orjson.dumps(GOOD)).status == "open"
