"""``topics.dead_letter``: the fields DESIGN.md requires, the original value kept exactly, and
a message that is not a dead letter refused naming the field."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.unit.topics.refusals import refusal
from topics import dead_letter

SOURCE = {"topic": "rs.pdus", "partition": 3, "offset": 41}


def _letter(value: bytes | None, **extra: object) -> bytes:
    return dead_letter.encode(
        "the PDU has no sender",
        topic="rs.pdus",
        partition=3,
        offset=41,
        key=b"!r:example.org",
        value=value,
        now_ms=1_700_000_000_000,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b'{"type": "m.room.message"}', "value"),
        ("é".encode(), "value"),
        (b"\xff\xfe not UTF-8", "value_b64"),
        (b"", "value"),
        (None, "value"),
    ],
)
def test_the_original_value_is_text_when_it_is_utf8_else_base64(
    value: bytes | None, field: str
) -> None:
    raw = _letter(value)
    doc = orjson.loads(raw)
    assert field in doc and ({"value", "value_b64"} - {field}).isdisjoint(doc)
    assert dead_letter.decode(raw).original() == (value or b"")


def test_a_dead_letter_carries_the_fields_of_the_contract() -> None:
    doc = orjson.loads(
        _letter(b"{}", headers=[("origin", b"a.example"), ("received_ts", b"5")], event_id="$e")
    )
    assert doc == {
        "reason": "the PDU has no sender",
        "source": SOURCE,
        "key": "!r:example.org",
        "event_id": "$e",
        "headers": {"origin": "a.example", "received_ts": "5"},
        "dead_lettered_ts": 1_700_000_000_000,
        "value": "{}",
    }


def test_a_dead_letter_without_a_key_says_null() -> None:
    raw = dead_letter.encode("x", topic="t", partition=0, offset=0, key=None, value=b"v")
    assert orjson.loads(raw)["key"] is None
    assert dead_letter.decode(raw).key is None


def test_headers_come_as_either_client_gives_them() -> None:
    as_pairs = dead_letter.decode(_letter(b"{}", headers=[("origin", b"a")]))
    as_mapping = dead_letter.decode(_letter(b"{}", headers={"origin": "a"}))
    assert as_pairs.headers == as_mapping.headers == {"origin": "a"}


def test_the_minimal_letter_of_the_contract_decodes() -> None:
    minimal = orjson.dumps({"reason": "r", "source": SOURCE, "key": None, "value": "v"})
    letter = dead_letter.decode(minimal)
    assert (letter.reason, letter.source.offset, letter.original()) == ("r", 41, b"v")


def _doc(**change: object) -> bytes:
    doc: dict[str, object] = {"reason": "r", "source": SOURCE, "key": None, "value": "v"}
    doc.update(change)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


@pytest.mark.parametrize(
    ("value", "names"),
    [
        (b"not json", "not JSON"),
        (None, "not JSON"),
        (_doc(reason=...), "`reason`"),
        (_doc(reason=""), "`reason` is empty"),
        (_doc(source=...), "`source`"),
        (_doc(source={"topic": "t", "partition": "0", "offset": 1}), "$.source.partition"),
        (_doc(key=...), "`key`"),
        (_doc(value=...), "exactly one of `value` and `value_b64`"),
        (_doc(value_b64=base64.b64encode(b"v").decode()), "exactly one"),
        (_doc(value=..., value_b64="@@@"), "`value_b64` is not base64"),
        (_doc(dead_lettered_ts="soon"), "$.dead_lettered_ts"),
    ],
)
def test_a_message_that_is_not_a_dead_letter_is_refused_naming_the_field(
    value: bytes | None, names: str
) -> None:
    assert names in str(refusal(dead_letter.decode, value, "dead-letter"))
