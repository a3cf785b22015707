"""Canonical JSON: the appendix's worked examples, its string grammar, and its number rules."""

from __future__ import annotations

import enum
import json
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.matrix.canonical_json import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    MAX_NESTING,
    CanonicalJsonError,
    check_canonical_values,
    copy_json,
    encode_canonical_json,
    parse_json,
)
from tests.unit.matrix.json_strategies import json_documents

# The appendix's "Examples" section, input as JSON text and the canonical JSON it must produce.
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com",
            "profile": {"display_name": "John Doe", "three_pids": [
                {"medium": "email", "address": "john.doe@example.org"},
                {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize(("text", "expected"), SPEC_EXAMPLES)
def test_appendix_examples_produce_the_given_canonical_json(text: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(text)) == expected.encode("utf-8")


# escaped = b / t / n / f / r / " / \ / u000X (X in 0-7, b, e, f) / u001X (X in 0-9, a-f)
_NAMED = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
CONTROL_ESCAPES = [(chr(c), _NAMED.get(c, f"\\u{c:04x}")) for c in range(0x20)]


@pytest.mark.parametrize(("char", "escape"), CONTROL_ESCAPES, ids=[f"U+{c:04X}" for c in range(32)])
def test_grammar_escapes_ascii_control_characters_with_short_or_lowercase_hex_escapes(
    char: str, escape: str
) -> None:
    assert encode_canonical_json(char) == f'"{escape}"'.encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"', b'"\\""'),
        ("\\", b'"\\\\"'),
        # unescaped = %x20-21 / %x23-5B / %x5D-10FFFF: everything else is written raw.
        ("/", b'"/"'),
        ("\x7f", b'"\x7f"'),
        ("\u2028\u2029", '"\u2028\u2029"'.encode()),
        ("é😀", '"é😀"'.encode()),
        (" ~", b'" ~"'),
    ],
)
def test_grammar_writes_only_quote_and_backslash_escaped_above_control_range(
    value: str, expected: bytes
) -> None:
    assert encode_canonical_json(value) == expected


def test_keys_sort_by_unicode_code_point_not_utf16_units() -> None:
    # U+FFFF < U+10000 by code point; UTF-16 ordering would put the astral key first.
    value = {"\U00010000": 1, "\uffff": 2, "é": 3, "Z": 4, "a": 5}
    assert encode_canonical_json(value) == '{"Z":4,"a":5,"é":3,"\uffff":2,"\U00010000":1}'.encode()


@pytest.mark.parametrize("n", [CANONICAL_INT_MIN, -1, 0, 1, CANONICAL_INT_MAX])
def test_integers_in_the_canonical_range_are_written_plainly(n: int) -> None:
    assert encode_canonical_json({"n": n}) == f'{{"n":{n}}}'.encode()
    check_canonical_values({"n": n})


@pytest.mark.parametrize("n", [CANONICAL_INT_MAX + 1, CANONICAL_INT_MIN - 1, 2**64, -(2**70)])
def test_integers_outside_the_canonical_range_are_refused_naming_the_path(n: int) -> None:
    value = {"a": {"b": [0, n]}}
    with pytest.raises(CanonicalJsonError) as exc:
        encode_canonical_json(value)
    assert exc.value.path == "a.b[1]"
    with pytest.raises(CanonicalJsonError) as exc:
        check_canonical_values(value, "content")
    assert exc.value.path == "content.a.b[1]"


@pytest.mark.parametrize("f", [1.5, -0.25, 1e300, float("nan"), float("inf")])
def test_non_integral_floats_are_not_permitted_by_the_encoding(f: float) -> None:
    with pytest.raises(CanonicalJsonError) as exc:
        encode_canonical_json({"x": [f]})
    assert exc.value.path == "x[0]"


@pytest.mark.parametrize("f", [0.0, 1.0, 1e10, -0.0])
def test_strict_rooms_refuse_any_float_on_the_wire_even_integral(f: float) -> None:
    with pytest.raises(CanonicalJsonError) as exc:
        check_canonical_values({"depth": f})
    assert exc.value.path == "depth"


def test_booleans_are_not_numbers() -> None:
    assert encode_canonical_json([True, False, None]) == b"[true,false,null]"
    check_canonical_values({"x": True})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Room versions 1-5 may carry floats and big integers; they hash as their senders wrote
        # them (Python's json module).
        ({"a": 1.5}, b'{"a":1.5}'),
        ({"a": 1e100}, b'{"a":1e+100}'),
        ({"a": 10.0}, b'{"a":10.0}'),
        ({"a": 2**64 + 1}, b'{"a":18446744073709551617}'),
        ({"a": -(2**63)}, b'{"a":-9223372036854775808}'),
        ({"a": "日", "b": [1]}, '{"a":"日","b":[1]}'.encode()),
    ],
)
def test_lenient_encoding_writes_legacy_numbers(value: object, expected: bytes) -> None:
    assert encode_canonical_json(value, strict=False) == expected


def test_lenient_encoding_still_refuses_nan() -> None:
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json({"a": float("nan")}, strict=False)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({1: "x"}, ""),
        ({"a": {"b": object()}}, "a.b"),
        ({"a": b"bytes"}, "a"),
        ({"a": ["\ud800"]}, "a[0]"),
        ({"k\udc00": 1}, "k\udc00"),
    ],
)
def test_values_json_cannot_hold_are_refused_naming_the_path(value: object, path: str) -> None:
    with pytest.raises(CanonicalJsonError) as exc:
        encode_canonical_json(value)
    assert exc.value.path == path


def test_tuples_and_read_only_mappings_encode_as_arrays_and_objects() -> None:
    value = types.MappingProxyType({"b": (1, 2), "a": types.MappingProxyType({"c": None})})
    assert encode_canonical_json(value) == b'{"a":{"c":null},"b":[1,2]}'
    assert copy_json(value) == {"a": {"c": None}, "b": [1, 2]}


class _Level(enum.IntEnum):
    HIGH = 100


class _Name(str):
    pass


def test_subclasses_of_json_types_are_written_as_the_plain_type() -> None:
    value = {_Name("k"): [_Level.HIGH, _Name("v"), (1.0, -0.0)]}
    assert encode_canonical_json(value) == b'{"k":[100,"v",[1,0]]}'
    assert encode_canonical_json(value, strict=False) == b'{"k":[100,"v",[1.0,-0.0]]}'
    with pytest.raises(CanonicalJsonError) as exc:
        check_canonical_values(value)
    assert exc.value.path == "k[2][0]"


def test_nesting_past_the_limit_is_refused_not_a_crash() -> None:
    value: object = 1
    for _ in range(MAX_NESTING + 5):
        value = [value]
    with pytest.raises(CanonicalJsonError):
        encode_canonical_json(value)


def test_parse_json_keeps_big_integers_exact_and_refuses_non_json() -> None:
    assert parse_json(b'{"a": 18446744073709551617, "b": 1.5}') == {
        "a": 18446744073709551617,
        "b": 1.5,
    }
    for bad in (b"{", b"NaN", b'{"a": Infinity}', b"\xff", "[1,]"):
        with pytest.raises(CanonicalJsonError):
            parse_json(bad)


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(CANONICAL_INT_MIN, CANONICAL_INT_MAX)
    | st.text(max_size=8)
)
_json_values = json_documents(_json_leaf, keys=st.text(max_size=6), size=4, max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(_json_values)
def test_strict_and_lenient_encodings_agree_on_strict_values_and_round_trip(value: object) -> None:
    strict = encode_canonical_json(value)
    assert strict == encode_canonical_json(value, strict=False)
    # The same bytes as the appendix's reference encoder (Python json, sorted, no whitespace).
    reference = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert strict == reference.encode("utf-8")
    assert parse_json(strict) == value
