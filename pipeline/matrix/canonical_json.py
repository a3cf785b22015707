"""Canonical JSON: the one byte encoding that event hashes, event IDs and signatures are taken over.

The appendix's rule: the shortest UTF-8 encoding, object keys sorted by Unicode code point, no
insignificant whitespace, non-ASCII characters written as themselves, and numbers that are integers
in ``[-(2**53)+1, (2**53)-1]``. orjson with ``OPT_SORT_KEYS`` writes exactly that form for strings
(control characters as ``\\b \\t \\n \\f \\r`` or lowercase ``\\u00XX``, ``"`` and ``\\`` escaped,
everything else raw) and sorts keys by code point, so it does the writing; this module decides
which values may be written at all.

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

For any value that passes ``check_canonical_values`` the strict and lenient encodings are the same
bytes, so hashes do not depend on which one computed them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import orjson

from pipeline.matrix.errors import MatrixError

CANONICAL_INT_MIN = -(2**53) + 1
CANONICAL_INT_MAX = 2**53 - 1
# orjson refuses nesting past 1024 levels and Python's recursion limit is about 1000; a cap far
# below both keeps every walk here and in redaction from blowing the stack.
MAX_NESTING = 512

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


def _index_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _check_str(s: str, path: str) -> None:
    # Lone surrogates cannot be written as UTF-8; ASCII strings cannot hold them.
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalJsonError("string holds a lone UTF-16 surrogate", path) from None


_STRICT_WIRE = 0  # v6+ wire rule: no floats
_STRICT_ENCODE = 1  # appendix encoding: integral floats become integers
_LENIENT = 2  # v1–v5 hashing: floats and big integers written as Python's json writes them


def _walk(value: object, path: str, mode: int, depth: int) -> tuple[JsonValue, bool]:
    """Validate ``value`` and return (a plain copy, whether the stdlib writer is needed).

    The copy has dicts and lists only (tuples and other Mappings converted), and in strict encode
    mode integral floats already turned into integers.
    """
    if depth > MAX_NESTING:
        raise CanonicalJsonError(f"nested deeper than {MAX_NESTING} levels", path)
    # bool before int: bool is an int subclass, and true/false are not numbers.
    if value is None or isinstance(value, bool):
        return value, False
    if isinstance(value, str):
        _check_str(value, path)
        return value, False
    if isinstance(value, int):
        if CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
            return int(value), False
        if mode == _LENIENT:
            # orjson writes up to 64-bit integers; past that only the stdlib can.
            return int(value), not (-(2**63) <= value < 2**64)
        raise CanonicalJsonError(
            f"integer {value} is outside the canonical range [-(2**53)+1, (2**53)-1]", path
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalJsonError(f"{value} is not a JSON number", path)
        if mode == _LENIENT:
            return value, True
        if (
            mode == _STRICT_ENCODE
            and value.is_integer()
            and CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX
        ):
            return int(value), False
        raise CanonicalJsonError(f"float {value!r} is not allowed; numbers must be integers", path)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        fallback = False
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalJsonError(f"object key {k!r} is not a string", path)
            sub = join_path(path, k)
            _check_str(k, sub)
            out[k], fb = _walk(v, sub, mode, depth + 1)
            fallback = fallback or fb
        return out, fallback
    if isinstance(value, (list, tuple)):
        items: list[JsonValue] = []
        fallback = False
        for i, v in enumerate(value):
            item, fb = _walk(v, _index_path(path, i), mode, depth + 1)
            items.append(item)
            fallback = fallback or fb
        return items, fallback
    raise CanonicalJsonError(f"{type(value).__name__} is not a JSON type", path)


def _write(plain: JsonValue, stdlib: bool) -> bytes:
    if stdlib:
        return json.dumps(
            plain, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
        ).encode("utf-8")
    return orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)


def encode_canonical_json(value: object, *, strict: bool = True) -> bytes:
    """``value`` as canonical JSON bytes.

    ``strict`` (the default) follows the appendix; ``strict=False`` also writes the floats and
    out-of-range integers that events of room versions 1–5 may carry. Raises CanonicalJsonError
    naming the path of the first value that cannot be written.
    """
    plain, stdlib = _walk(value, "", _STRICT_ENCODE if strict else _LENIENT, 0)
    return _write(plain, stdlib)


def check_canonical_values(value: object, path: str = "") -> None:
    """Enforce the strict JSON of room versions 6+ on a parsed value.

    "Servers MUST strictly enforce the JSON format specified in the appendices": every number an
    integer in ``[-(2**53)+1, (2**53)-1]`` (a float, even ``1.0``, is refused), keys strings, no
    lone surrogates. Raises CanonicalJsonError naming the path (prefixed with ``path``).
    """
    _walk(value, path, _STRICT_WIRE, 0)


def copy_json(value: object) -> JsonValue:
    """A deep copy of a JSON value as plain dicts and lists (any floats and integers kept as they
    are). Raises CanonicalJsonError if ``value`` is not JSON."""
    plain, _ = _walk(value, "", _LENIENT, 0)
    return plain


def parse_json(raw: bytes | bytearray | memoryview | str) -> JsonValue:
    """Parse JSON text, keeping every number exactly.

    orjson parses; when the document holds a float (including integers past 64 bits, which orjson
    reads as floats) it is parsed again with the stdlib, which keeps big integers exact and reads
    floats as the senders of old events wrote them. NaN and Infinity are refused. Raises
    CanonicalJsonError (path '') for text that is not JSON.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CanonicalJsonError(f"not valid JSON: {e}", "") from None
    if not _has_float(value, 0):
        return value
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise CanonicalJsonError(f"not valid JSON: {e}", "") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _has_float(value: object, depth: int) -> bool:
    if isinstance(value, float):
        return True
    if depth > MAX_NESTING:
        return False  # too deep to matter: the caller's checks refuse it with a path
    if isinstance(value, dict):
        return any(_has_float(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v, depth + 1) for v in value)
    return False
