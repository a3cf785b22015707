"""Canonical JSON's fast path (orjson deciding for values of plain builtin types) against the
Python walk: every value accepted or refused alike, every error and path, every byte the same."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import functools
import gc
import json
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.matrix.canonical_json as cj
from pipeline.matrix.canonical_json import (
    MAX_NESTING,
    CanonicalJsonError,
    check_canonical_values,
    copy_json,
    encode_canonical_json,
    encode_pdu_json,
    parse_json,
)


@contextmanager
def _walk_only() -> Iterator[None]:
    with mock.patch.object(cj, "_is_plain", lambda value, max_nesting: False):
        yield


def _typed(value: object) -> object:
    """``value`` with every type and every key order spelled out, so equal means identical."""
    if isinstance(value, dict):
        return ("dict", type(value).__name__, [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", _typed(fn()))
    except CanonicalJsonError as e:
        return ("error", str(e), e.reason, e.path)
    except Exception as e:  # whatever the walk raises, the fast path must raise too
        return ("raised", type(e).__name__, str(e))


def _calls(value: object) -> list[tuple[str, Callable[[], object]]]:
    calls: list[tuple[str, Callable[[], object]]] = [
        ("encode strict", lambda: encode_canonical_json(value)),
        ("encode lenient", lambda: encode_canonical_json(value, strict=False)),
        ("check", lambda: check_canonical_values(value, "content")),
        ("copy", lambda: copy_json(value)),
    ]
    for strict_wire in (True, False):
        for limit in (1, 2, 3, 200, MAX_NESTING - 1, MAX_NESTING):
            calls.append(
                (
                    f"pdu strict_wire={strict_wire} max_nesting={limit}",
                    functools.partial(
                        encode_pdu_json, value, strict_wire=strict_wire, max_nesting=limit
                    ),
                )
            )
    return calls


def _assert_same_as_walk(value: object) -> None:
    for name, call in _calls(value):
        fast = _outcome(call)
        with _walk_only():
            walk = _outcome(call)
        assert fast == walk, name


def _nest(depth: int, leaf: object = 1, *, kind: str = "list") -> object:
    """``leaf`` inside ``depth`` containers, the outermost counting as one."""
    value = leaf
    for i in range(depth):
        if kind == "list" or (kind == "mixed" and i % 2):
            value = [value]
        elif kind == "tuple":
            value = (value,)
        else:
            value = {"k": value}
    return value


class _Str(str):
    pass


class _StrShown(str):
    def __str__(self) -> str:
        return "shown"


class _Int(int):
    pass


class _Float(float):
    pass


class _Dict(dict[str, Any]):
    pass


class _DictItems(dict[str, Any]):
    def items(self) -> Any:
        return [("other", 1)]


class _List(list[Any]):
    pass


class _Pair(NamedTuple):
    a: int
    b: str


class _Level(enum.IntEnum):
    HIGH = 100


class _Colour(enum.Enum):
    RED = "red"


class _Mixed(str, enum.Enum):  # noqa: UP042 - str() of this one is 'Mixed.A', not 'a'
    A = "a"


class _Named(enum.StrEnum):
    B = "b"


@dataclasses.dataclass
class _Point:
    x: int


_INT_BOUNDARIES = [
    b + d
    for b in (2**53, -(2**53), 2**63, -(2**63), 2**64, -(2**64), 2**70)
    for d in (-2, -1, 0, 1, 2)
]

_STRINGS = [
    "",
    "plain",
    "a.b",
    "1e5",
    "1E5",
    "1.0",
    'quote " 1.5',
    "back \\ slash 1e3",
    '\\"',
    '"',
    "\\",
    "\\u0000",
    "\x00\x1f\x7f",
    "日本語",
    "\U0001f600",
    "\u2028",
    "\ud800",
    "a\udfff",
    "\ud83d\ude00",  # a surrogate pair as two code points: still lone surrogates to UTF-8
    "true",
    "null",
]

_LEAVES: list[object] = [
    None,
    True,
    False,
    0,
    -1,
    *_INT_BOUNDARIES,
    0.0,
    -0.0,
    1.0,
    1.5,
    1e5,
    1e300,
    -1e-7,
    float(2**53),
    float("nan"),
    float("inf"),
    float("-inf"),
    *_STRINGS,
]

_ODD_VALUES: list[object] = [
    _Str("s"),
    _Str("\ud800"),
    _StrShown("x"),
    _Int(5),
    _Int(2**60),
    _Float(1.0),
    _Float(float("nan")),
    _Dict(a=1),
    _DictItems(a=1),
    _List([1, 2]),
    _Pair(1, "x"),
    _Level.HIGH,
    _Colour.RED,
    _Mixed.A,
    _Named.B,
    _Point(1),
    uuid.UUID(int=1),
    datetime.datetime(2024, 1, 1),
    datetime.date(2024, 1, 1),
    decimal.Decimal("1.5"),
    orjson.Fragment(b'"x"'),
    b"bytes",
    bytearray(b"x"),
    memoryview(b"x"),
    {1, 2},
    frozenset(),
    1j,
    object(),
    types.MappingProxyType({"a": 1}),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.defaultdict(list, {"a": [1]}),
    (),
    (1, "a", (2.0,)),
    ((1, 2), [3, (4,)]),
]

_KEYS: list[object] = [
    1,
    0,
    None,
    True,
    1.5,
    (1, 2),
    b"k",
    _Str("k"),
    _StrShown("k"),
    _Mixed.A,
    _Named.B,
    "\ud800",
    "k.e",
    "",
]


def _placements(leaf: object) -> list[object]:
    return [
        leaf,
        [leaf],
        {"a": leaf},
        {"b": "x", "a": [0, {"c": leaf}]},
        ("t", leaf),
        [{"z": 1}, [leaf, "after"]],
    ]


_TABLE: list[object] = [
    *(value for leaf in [*_LEAVES, *_ODD_VALUES] for value in _placements(leaf)),
    *({key: 1} for key in _KEYS),
    *({"a": 1, key: 2, "b": 3} for key in _KEYS),
    *({"z": {key: [1]}} for key in _KEYS),
    {},
    [],
    {"b": 2, "a": 1, "é": 3, "\U00010000": 4, "\uffff": 5},
    [[], {}, [[]], {"a": {}}],
    list(range(100)),
]


@pytest.mark.parametrize("value", _TABLE, ids=lambda v: repr(v)[:60])
def test_fast_path_accepts_refuses_and_writes_as_the_walk(value: object) -> None:
    _assert_same_as_walk(value)


_DEPTHS = sorted({d + i for d in (1, 2, 3, 200, MAX_NESTING) for i in (-1, 0, 1, 2)} - {0})


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "mixed"])
@pytest.mark.parametrize("depth", _DEPTHS)
@pytest.mark.parametrize("leaf", [1, [], {}, 1.0, "x", 2**60, "\ud800"], ids=repr)
def test_fast_path_agrees_with_the_walk_at_every_nesting_limit(
    kind: str, depth: int, leaf: object
) -> None:
    _assert_same_as_walk(_nest(depth, leaf, kind=kind))
    # A deep value beside a shallow one: the limit applies to each branch.
    _assert_same_as_walk({"a": 1, "b": [_nest(depth - 1, leaf, kind=kind)], "c": {"d": []}})


def test_shared_references_encode_as_the_walk_and_cycles_are_refused_the_same() -> None:
    shared = {"x": [1, 2]}
    _assert_same_as_walk([shared, shared, {"again": shared}])
    cycle: list[object] = []
    cycle.append(cycle)
    _assert_same_as_walk(cycle)
    # Each level of this one is twice as wide as the last: the width limit hands it to the walk.
    branching: list[object] = []
    branching.extend([branching, branching])
    _assert_same_as_walk(branching)


def test_values_wider_than_the_fast_path_takes_are_written_by_the_walk() -> None:
    wide = list(range(cj._PLAIN_MAX_WIDTH + 1))
    assert not cj._is_plain(wide, MAX_NESTING)
    _assert_same_as_walk(wide)


@pytest.mark.parametrize(
    "value",
    [
        {"type": "m.room.message", "content": {"body": "hi", "n": [1, None, True]}, "depth": 3},
        [(), ("a", 1)],
        _nest(MAX_NESTING - 1, {}),  # the empty object is the last level allowed
        "s",
        None,
    ],
    ids=lambda v: repr(v)[:40],
)
def test_plain_values_take_the_fast_path(value: object) -> None:
    assert cj._is_plain(value, MAX_NESTING)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.0},
        [[[_Str("x")]]],
        {_Str("k"): 1},
        {"a": 1, _Str("k"): 1},
        {"a": {1: 2, _Str("k"): 1}},
        _Dict(),
        [_Level.HIGH],
        (_Pair(1, "x"),),
        _nest(MAX_NESTING + 1, {}),
        _nest(MAX_NESTING, [1]),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_values_the_fast_path_cannot_vouch_for_go_to_the_walk(value: object) -> None:
    assert not cj._is_plain(value, MAX_NESTING)


def test_keys_that_are_not_exact_strings_are_seen_by_the_fast_path() -> None:
    # gc.get_referents leaves out the keys of a dict only while every key is an exact str.
    only = {_Str("k"): 1}
    assert any(type(k) is _Str for k in gc.get_referents(only))
    assert not cj._is_plain({"x": [only]}, MAX_NESTING)


def _has_float_by_walk(value: object, depth: int) -> bool:
    if isinstance(value, float):
        return True
    if depth > MAX_NESTING:
        return False
    if isinstance(value, dict):
        return any(_has_float_by_walk(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_float_by_walk(v, depth + 1) for v in value)
    return False


def _deep_text(depth: int, leaf: str, *, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"k":' * depth + leaf + "}" * depth


_NUMBER_TEXTS = [
    "0",
    "-0",
    "1",
    "1.0",
    "-0.0",
    "1e5",
    "1E5",
    "1e-5",
    "0.5",
    *(str(n) for n in _INT_BOUNDARIES),
    "9999999999999999999",
    "-9999999999999999999",
    "99999999999999999999999999",
]

_PARSE_TEXTS = [
    *_NUMBER_TEXTS,
    *(f'{{"a": [1, "x", {{"b": {n}}}]}}' for n in _NUMBER_TEXTS),
    '"1.5"',
    '{"a.b": "1e5", "c": "\\"2.0\\"", "d": "\\\\", "e": true, "f": false, "g": null}',
    '"\\ud800"',
    '{"\\udc00": 1}',
    "[]",
    "{}",
    " [ 1 , 2 ] ",
    *(
        _deep_text(d, leaf, kind=kind)
        for d in (MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, MAX_NESTING + 2, 300)
        for leaf in ("1.5", "1", str(2**64), "[]")
        for kind in ("list", "dict")
    ),
    "[" * 1030 + "]" * 1030,
    "{",
    "NaN",
    "[Infinity]",
    "[1,]",
    "\ufeff[1]",
]


@pytest.mark.parametrize("text", _PARSE_TEXTS, ids=lambda t: t[:40])
def test_parse_json_finds_floats_as_the_walk_did(text: str) -> None:
    for raw in (text, text.encode("utf-8", "surrogatepass")):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            assert cj._has_float(value) == _has_float_by_walk(value, 0)
        fast = _outcome(functools.partial(parse_json, raw))
        with mock.patch.object(cj, "_has_float", lambda v: _has_float_by_walk(v, 0)):
            walk = _outcome(functools.partial(parse_json, raw))
        assert fast == walk


# --- randomized --------------------------------------------------------------------------------

_random_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(_INT_BOUNDARIES)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(_STRINGS)
    | st.sampled_from([_Str("s"), _Int(3), _Level.HIGH, _Mixed.A, _Float(2.0), b"b", _Colour.RED])
)
_random_keys = st.text(max_size=4) | st.sampled_from(["\ud800", _Str("k"), 1, None, _Mixed.A])


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_random_keys, inner, max_size=4)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3).map(_Dict)
    )


_random_values = st.recursive(_random_leaves, _containers, max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_random_values)
def test_fast_path_agrees_with_the_walk_on_random_values(value: object) -> None:
    _assert_same_as_walk(value)


_plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        _plain_leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=25,
    )
)
def test_parse_json_agrees_with_the_walk_on_random_documents(value: object) -> None:
    text = json.dumps(value)
    fast = _outcome(lambda: parse_json(text))
    with mock.patch.object(cj, "_has_float", lambda v: _has_float_by_walk(v, 0)):
        walk = _outcome(lambda: parse_json(text))
    assert fast == walk
