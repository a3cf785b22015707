"""Canonical JSON: the one byte encoding that event hashes, event IDs and signatures are taken over.

The appendix's rule: the shortest UTF-8 encoding, object keys sorted by Unicode code point, no
insignificant whitespace, non-ASCII characters written as themselves, and numbers that are integers
in ``[-(2**53)+1, (2**53)-1]``. orjson with ``OPT_SORT_KEYS`` writes exactly that form for strings
(control characters as ``\\b \\t \\n \\f \\r`` or lowercase ``\\u00XX``, ``"`` and ``\\`` escaped,
everything else raw) and sorts keys by code point, so it does the writing; this module decides
which values may be written at all. For the common value, made only of exact builtin types and
free of floats, orjson decides that too; the Python walk runs when it refuses (to say what and
where) or cannot tell.

Three levels of strictness, because the protocol has three:

* ``check_canonical_values`` is the wire rule of room versions 6 and later ("Servers MUST strictly
  enforce the JSON format"): no floats at all, integers in range.
* ``encode_canonical_json(value)`` (strict, the default) is the appendix's encoding: a float that
  holds an integer in range is written as that integer (the appendix turns ``1e10`` into
  ``10000000000`` and ``-0`` into ``0``); any other float, or an integer out of range, is refused.
* ``encode_canonical_json(value, strict=False)`` is for hashing events of room versions 1–5, which
  may hold floats and big integers: those are written as Python's ``json`` module writes them
  (``1.5``, ``1e+100``, arbitrary-precision integers), the encoding the senders of such events
  used when they hashed and signed them.

``encode_pdu_json`` is what a received PDU passes once: the room version's rule, plus what every
later stage must be able to write (the stages serialise with orjson, so integers past 64 bits and
nesting past a caller's limit are refused), in the one scan that also yields the bytes to measure.

For any value that passes ``check_canonical_values`` the strict and lenient encodings are the same
bytes, so hashes do not depend on which one computed them.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.matrix.errors import MatrixError

CANONICAL_INT_MIN = -(2**53) + 1
CANONICAL_INT_MAX = 2**53 - 1
# orjson writes at most 254 levels of objects and arrays (it reads 1024) and raises a bare
# TypeError past that; refusing deeper values in the scan says where instead, and keeps every walk
# here and in redaction far from Python's recursion limit.
MAX_NESTING = 254

JsonValue = Any
"""A parsed JSON value: dict with str keys, list, str, int, float, bool or None."""


class CanonicalJsonError(MatrixError, ValueError):
    """A value cannot be written as (or is not allowed in) canonical JSON.

    ``path`` names the offending value: dotted keys and ``[index]`` for arrays, ``''`` for the root.
    """

    def __init__(self, reason: str, path: str) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"not canonical JSON at {path or '(root)'}: {reason}")


def join_path(path: str, key: str) -> str:
    """The dotted path of ``key`` inside the object at ``path``."""
    return f"{path}.{key}" if path else key


_STRICT_WIRE = 0  # v6+ wire rule: no floats
_STRICT_ENCODE = 1  # appendix encoding: integral floats become integers
_LENIENT = 2  # v1–v5 hashing: floats and big integers written as Python's json writes them
_LENIENT_STORABLE = 3  # v1–v5 input: as _LENIENT, but only the integers orjson can write

# orjson writes integers in [-(2**63), 2**64); the chunk, the stored JSON and the room record are
# all written by it.
ORJSON_INT_MIN = -(2**63)
ORJSON_INT_MAX = 2**64 - 1

# What a scan found beyond plain dict/list/str/int/bool/None that orjson writes as they are.
_NEEDS_STDLIB = 1  # floats or integers past 64 bits (lenient mode): Python's json writes them
_NEEDS_COPY = 2  # tuples, other Mappings, subclasses, integral floats: normalise before writing


_DEEP_PATH_SHOWN = 8


class _Bad(Exception):
    """A refused value; the path is collected while the exception unwinds, so the common (valid)
    case never builds paths."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.segments: list[str | int] = []

    def error(self, prefix: str, max_nesting: int = MAX_NESTING) -> CanonicalJsonError:
        segments = self.segments[::-1]
        more = ""
        if isinstance(self, _TooDeep):
            self.reason = (
                f"objects and arrays are nested deeper than {max_nesting} levels (the outermost "
                "counts as one)"
            )
            # The path is as deep as the limit: its start says where, the rest is noise.
            if len(segments) > _DEEP_PATH_SHOWN:
                more = f"...({len(segments) - _DEEP_PATH_SHOWN} levels more)"
                segments = segments[:_DEEP_PATH_SHOWN]
        path = prefix
        for seg in segments:
            path = f"{path}[{seg}]" if isinstance(seg, int) else join_path(path, seg)
        return CanonicalJsonError(self.reason, path + more)


class _TooDeep(_Bad):
    """Nesting past the limit; the reason is written once the limit the caller set is known."""


def _check_utf8(s: str) -> None:
    # Lone surrogates cannot be written as UTF-8 (callers skip ASCII strings, which cannot hold
    # them).
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("string holds a lone UTF-16 surrogate") from None


def _check_int(value: int, mode: int) -> int:
    if CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
        return 0
    if mode >= _LENIENT:
        # orjson writes up to 64-bit integers; past that only the stdlib can.
        if ORJSON_INT_MIN <= value <= ORJSON_INT_MAX:
            return 0
        if mode == _LENIENT:
            return _NEEDS_STDLIB
        raise _Bad(
            f"integer {value} is outside the 64-bit range [-(2**63), (2**64)-1] that Roomstream "
            "can store"
        )
    raise _Bad(f"integer {value} is outside the canonical range [-(2**53)+1, (2**53)-1]")


def _check_float(value: float, mode: int) -> int:
    if not math.isfinite(value):
        raise _Bad(f"{value} is not a JSON number")
    if mode >= _LENIENT:
        return _NEEDS_STDLIB
    if (
        mode == _STRICT_ENCODE
        and value.is_integer()
        and CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX
    ):
        return _NEEDS_COPY
    raise _Bad(f"float {value!r} is not allowed; numbers must be integers")


def _scan(value: Any, mode: int, depth: int) -> int:
    """Validate ``value``; return _NEEDS_* flags. Exact types first: they are nearly all. One
    stack frame per nesting level, so MAX_NESTING stays well inside the recursion limit."""
    t = type(value)
    if t is str:
        if not value.isascii():
            _check_utf8(value)
        return 0
    if t is int:
        return _check_int(value, mode)
    if value is None or t is bool:
        return 0
    if t is float:
        return _check_float(value, mode)
    flags = 0
    if t is dict or t is list:
        pass
    elif isinstance(value, bool):
        return _NEEDS_COPY
    elif isinstance(value, str):
        if not value.isascii():
            _check_utf8(value)
        return _NEEDS_COPY
    elif isinstance(value, int):
        return _check_int(value, mode) | _NEEDS_COPY
    elif isinstance(value, float):
        return _check_float(value, mode) | _NEEDS_COPY
    elif isinstance(value, (Mapping, tuple, list)):
        # Subclasses and other containers: accepted, then normalised to plain types.
        flags = _NEEDS_COPY
    else:
        raise _Bad(f"{type(value).__name__} is not a JSON type")
    if depth >= MAX_NESTING:
        # Callers with a lower limit start ``depth`` above 0 (see _scan_or_raise).
        raise _TooDeep("")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise _Bad(f"object key {k!r} is not a string")
                flags |= _NEEDS_COPY
            try:
                if not k.isascii():
                    _check_utf8(k)
                # Inline the commonest leaves (ASCII strings, small integers): a call per value
                # is most of the cost of a scan.
                tv = type(v)
                if (tv is str and v.isascii()) or (
                    tv is int and CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX
                ):
                    continue
                flags |= _scan(v, mode, depth + 1)
            except _Bad as e:
                e.segments.append(k)
                raise
        return flags
    for i, v in enumerate(value):
        tv = type(v)
        if (tv is str and v.isascii()) or (
            tv is int and CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX
        ):
            continue
        try:
            flags |= _scan(v, mode, depth + 1)
        except _Bad as e:
            e.segments.append(i)
            raise
    return flags


def _plain(value: object, integral_floats: bool) -> JsonValue:
    """A deep copy of an already scanned value as plain dicts, lists and builtin scalars."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, integral_floats) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, integral_floats) for v in value]
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value) if integral_floats else float(value)
    raise AssertionError(f"unscanned {type(value).__name__}")  # _scan refused it already


# The fast path: a value built only of these exact types is written by orjson exactly as the walk
# above would have it written, and orjson refuses what the walk refuses (integers out of range,
# given OPT_STRICT_INTEGER in the strict modes; lone surrogates; keys that are not strings). Any
# refusal, or any other type, goes to the walk, which then says what and where. Subclasses would
# be written by orjson without the walk's normalising, and floats as each mode wants only by the
# walk (orjson even writes NaN as null).
_PLAIN_TYPES = frozenset({dict, list, tuple, str, int, bool, type(None)})
_CONTAINER_TYPES = frozenset({dict, list, tuple})
# Shared or cyclic references make the levels grow without end (the walk follows every path too,
# but fails fast on a cycle); past this width the walk decides.
_PLAIN_MAX_WIDTH = 1 << 16


def _is_plain(value: object, max_nesting: int) -> bool:
    """Whether ``value`` is made only of _PLAIN_TYPES, containers nested at most ``max_nesting``
    levels. Breadth first, so the per-object work is done in C: gc.get_referents yields the next
    level (the items of lists and tuples, the values of dicts, and their keys too unless every key
    is an exact str)."""
    level: list[object] = [value]
    depth = 0
    while level:
        if len(level) > _PLAIN_MAX_WIDTH or not _PLAIN_TYPES.issuperset(map(type, level)):
            return False
        if depth >= max_nesting and not _CONTAINER_TYPES.isdisjoint(map(type, level)):
            return False
        depth += 1
        level = gc.get_referents(*level)
    return True


def _fast_encode(value: object, mode: int, max_nesting: int, option: int) -> bytes | None:
    """orjson's bytes for ``value`` when the walk in ``mode`` would accept it (and, given
    OPT_SORT_KEYS, write those very bytes); None when the walk must decide."""
    if not _is_plain(value, max_nesting):
        return None
    if mode <= _STRICT_ENCODE:
        option |= orjson.OPT_STRICT_INTEGER
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        return None


def _scan_or_raise(
    value: object, mode: int, prefix: str = "", max_nesting: int = MAX_NESTING
) -> int:
    # A lower limit is a higher starting depth: the walk itself is the same.
    try:
        return _scan(value, mode, MAX_NESTING - max_nesting)
    except _Bad as e:
        raise e.error(prefix, max_nesting) from None


def _write(value: object, flags: int, *, integral_floats: bool) -> bytes:
    """Write a scanned ``value``: orjson, unless the scan's ``flags`` say a value needs a plain
    copy first or the stdlib's encoder (numbers orjson cannot write)."""
    if flags & _NEEDS_COPY:
        value = _plain(value, integral_floats=integral_floats)
    if flags & _NEEDS_STDLIB:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        ).encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def encode_canonical_json(value: object, *, strict: bool = True) -> bytes:
    """``value`` as canonical JSON bytes.

    ``strict`` (the default) follows the appendix; ``strict=False`` also writes the floats and
    out-of-range integers that events of room versions 1–5 may carry. Raises CanonicalJsonError
    naming the path of the first value that cannot be written.
    """
    mode = _STRICT_ENCODE if strict else _LENIENT
    encoded = _fast_encode(value, mode, MAX_NESTING, orjson.OPT_SORT_KEYS)
    if encoded is not None:
        return encoded
    return _write(value, _scan_or_raise(value, mode), integral_floats=strict)


def encode_pdu_json(value: object, *, strict_wire: bool, max_nesting: int) -> bytes:
    """The canonical JSON of a received PDU, checked in one scan for everything later stages need.

    ``strict_wire`` applies the rule of room versions 6+ (as ``check_canonical_values``); without
    it floats and integers past the canonical range are written as ``strict=False`` writes them,
    except integers outside [-(2**63), (2**64)-1], which orjson (and so the chunk, the stored
    JSON and the room record) cannot write. Objects and arrays may nest ``max_nesting`` levels
    (at most MAX_NESTING), the outermost one counting. Raises CanonicalJsonError naming the path.

    For every value it accepts the bytes are ``encode_canonical_json(value, strict=False)``.
    """
    if not 0 < max_nesting <= MAX_NESTING:
        raise ValueError(f"max_nesting must be in [1, {MAX_NESTING}], not {max_nesting}")
    mode = _STRICT_WIRE if strict_wire else _LENIENT_STORABLE
    encoded = _fast_encode(value, mode, max_nesting, orjson.OPT_SORT_KEYS)
    if encoded is not None:
        return encoded
    return _write(value, _scan_or_raise(value, mode, "", max_nesting), integral_floats=False)


def check_canonical_values(value: object, path: str = "") -> None:
    """Enforce the strict JSON of room versions 6+ on a parsed value.

    "Servers MUST strictly enforce the JSON format specified in the appendices": every number an
    integer in ``[-(2**53)+1, (2**53)-1]`` (a float, even ``1.0``, is refused), keys strings, no
    lone surrogates. Raises CanonicalJsonError naming the path (prefixed with ``path``).
    """
    if _fast_encode(value, _STRICT_WIRE, MAX_NESTING, 0) is None:
        _scan_or_raise(value, _STRICT_WIRE, path)


def copy_json(value: object) -> JsonValue:
    """A deep copy of a JSON value as plain dicts and lists (any floats and integers kept as they
    are). Raises CanonicalJsonError if ``value`` is not JSON."""
    encoded = _fast_encode(value, _LENIENT, MAX_NESTING, 0)
    if encoded is not None:
        # Unsorted, so the copy keeps the key order; orjson reads back every integer it writes.
        return orjson.loads(encoded)
    _scan_or_raise(value, _LENIENT)
    return _plain(value, integral_floats=False)


def parse_json(
    raw: bytes | bytearray | memoryview | str, *, exact_numbers: bool = True
) -> JsonValue:
    """Parse JSON text.

    orjson parses. With ``exact_numbers``, a document holding a float (including integers past
    64 bits, which orjson reads as floats) is parsed again with the stdlib, which keeps big
    integers exact and reads floats as the senders of old events wrote them; strict rooms, which
    refuse both anyway, can skip that. NaN and Infinity are refused. Raises CanonicalJsonError
    (path '') for text that is not JSON.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CanonicalJsonError(f"not valid JSON: {e}", "") from None
    if not exact_numbers or not _has_float(value):
        return value
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise CanonicalJsonError(f"not valid JSON: {e}", "") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _has_float(value: object) -> bool:
    """Whether the parsed ``value`` holds a float within MAX_NESTING + 1 levels; deeper values are
    too deep to matter (the caller's checks refuse them with a path). Breadth first, as
    _is_plain: orjson's output holds only exact types, and only values need looking at."""
    level = [value]
    for _ in range(MAX_NESTING + 2):
        if not level:
            return False
        if float in map(type, level):
            return True
        level = gc.get_referents(*level)
    return False
