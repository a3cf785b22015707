"""``topics.missing_events``: the request DESIGN.md describes, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from pipeline.errors import MalformedMessage
from topics import missing_events


def test_a_request_names_room_missing_events_needing_event_and_first_seen() -> None:
    raw = missing_events.encode("!r:example.org", ["$b", "$a", "$b"], "$c", 1700)
    assert orjson.loads(raw) == {
        "room_id": "!r:example.org",
        "missing": ["$a", "$b"],
        "needed_by": "$c",
        "first_seen_ts": 1700,
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
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(value: bytes, names: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        missing_events.decode(value)
    assert caught.value.wire_format == "missing-events"
    assert names in str(caught.value)


def test_a_request_for_nothing_is_not_built() -> None:
    with pytest.raises(ValueError, match="`missing` is empty"):
        missing_events.encode("!r:example.org", [], "$c", 1)
