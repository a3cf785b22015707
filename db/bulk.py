"""Bulk statements: rows into PostgreSQL as COPY text, and columns as array literals.

``copy_rows`` sends rows that cannot conflict with one ``COPY ... FROM STDIN`` (``copy_data``
sends rows its caller formatted, ``copy_line`` formats one); ``unnest`` runs
one statement over any number of rows given as one array per column, for upserts, deletes and
lookups. Both build their text column by column, so the common cases (plain text, integers)
run as C loops, and both refuse a NUL character, which PostgreSQL text cannot hold, with
ValueError, as an INSERT would.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = [
    "NULL",
    "Statement",
    "array_literal",
    "copy_data",
    "copy_in",
    "copy_line",
    "copy_rows",
    "copy_statement",
    "copy_text",
    "execute_all",
    "unnest",
    "unnest_statement",
]

Statement = tuple[str, list[Any]]
"""SQL with ``%s`` placeholders, and its parameters."""


def unnest_statement(sql: str, types: str, rows: Sequence[tuple[Any, ...]]) -> Statement | None:
    """``sql`` run once for all ``rows``: its ``{rows}`` is a row source made of one array per
    column (``types`` names their element types, comma-separated), so the statement is the
    same whatever the number of rows, and each column travels as one array literal. None when
    there is no row."""
    if not rows:
        return None
    kinds = [t.strip() for t in types.split(",")]
    source = "unnest(" + ", ".join(f"%s::{k}[]" for k in kinds) + ")"
    columns = zip(*rows, strict=True)
    params = [array_literal(col, k) for col, k in zip(columns, kinds, strict=True)]
    return sql.replace("{rows}", source), params


def unnest(cur: Any, sql: str, types: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``unnest_statement``, run."""
    statement = unnest_statement(sql, types, rows)
    if statement is not None:
        cur.execute(*statement)


def execute_all(cur: Any, statements: Iterable[Statement | None]) -> None:
    """The statements in one round trip, in order (one query string; an error in any one aborts
    the transaction, as it would one by one). None entries are skipped."""
    given = [s for s in statements if s is not None]
    if given:
        cur.execute("; ".join(sql for sql, _ in given), [p for _, params in given for p in params])


NULL = _NULL = "\\N"  # COPY's text for a NULL
# What COPY's text format must escape (backslash, tab, newline, carriage return), and NUL,
# which a text value cannot hold.
_SPECIAL = ("\\", "\t", "\n", "\r", "\x00")
_COPY_READ = 1 << 20  # bytes handed to the server per write
_NONE = type(None)
_BOOL = {True: "t", False: "f"}


def _refuse_nul(text: str) -> NoReturn:
    # COPY would cut the value short and an array would end it; refuse it as an INSERT would.
    raise ValueError(f"text value contains a NUL character: {text[:40]!r}")


def array_literal(values: Iterable[Any], kind: str = "text") -> str:
    """``values`` as one PostgreSQL array literal of ``kind`` (text, bigint or bytea; None is
    NULL): adapting one string is far cheaper than adapting a list value by value."""
    vals = tuple(values)
    if not vals:
        return "{}"
    if kind == "bytea":
        return "{" + ",".join("NULL" if v is None else '"\\\\x' + v.hex() + '"' for v in vals) + "}"
    if kind != "text":
        if None in vals:
            return "{" + ",".join("NULL" if v is None else str(int(v)) for v in vals) + "}"
        return "{" + ",".join(map(str, map(int, vals))) + "}"
    plain = "".join(filter(None, vals))
    if "\\" in plain or '"' in plain or "\x00" in plain:
        return "{" + ",".join(map(_array_element, vals)) + "}"
    if None in vals:
        return "{" + ",".join("NULL" if v is None else '"' + v + '"' for v in vals) + "}"
    return '{"' + '","'.join(vals) + '"}'


def _array_element(v: str | None) -> str:
    if v is None:
        return "NULL"
    if "\x00" in v:
        _refuse_nul(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _copy_field(v: Any) -> str:
    if v is None:
        return _NULL
    if isinstance(v, str):
        text: str = v
        if "\x00" in text:
            _refuse_nul(text)
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return "\\\\x" + v.hex()
    return str(v)


def _copy_column(values: tuple[Any, ...]) -> Sequence[str] | Iterator[str]:
    """One column's values in COPY's text format.

    Column by column, so that the common cases run as C loops: a column of plain text is
    scanned once for characters to escape (there rarely are any) and used as it is, a column
    of integers is mapped through ``str``. Anything else goes value by value.
    """
    types = set(map(type, values))
    if types <= {str, _NONE}:
        # filter(None, ...) drops the NULLs (and empty strings, which need no escape); a
        # search for one character is a memchr, so five of them over the column are cheap.
        text = "".join(filter(None, values))
        if any(c in text for c in _SPECIAL):
            return [_copy_field(v) for v in values]
        if _NONE in types:
            return [_NULL if v is None else v for v in values]
        return values
    if types == {int}:
        return map(str, values)
    if types == {int, _NONE}:
        return [_NULL if v is None else str(v) for v in values]
    if types == {bool}:
        return map(_BOOL.__getitem__, values)
    if types <= {bytes, _NONE}:
        return [_NULL if v is None else "\\\\x" + v.hex() for v in values]
    return [_copy_field(v) for v in values]


def copy_line(*values: Any) -> str:
    """One row in COPY's text format, newline included, each value escaped."""
    return "\t".join(map(_copy_field, values)) + "\n"


def copy_data(cur: Any, table: str, columns: str, data: bytes) -> None:
    """COPY ``data``, rows already in COPY's text format, into ``table``."""
    copy_in(cur, copy_statement(table, columns), data)


def copy_statement(table: str, columns: str) -> str:
    return f"COPY {table} ({columns}) FROM STDIN"


def copy_in(cur: Any, statement: str, data: bytes) -> None:
    """Run the COPY ... FROM STDIN ``statement`` with ``data`` (nothing when there is none)."""
    if data:
        cur.copy_expert(statement, io.BytesIO(data), size=_COPY_READ)


def copy_text(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """``rows`` in COPY's text format."""
    if not rows:
        return b""
    columns_text = map(_copy_column, zip(*rows, strict=True))
    lines = map("\t".join, zip(*columns_text, strict=True))
    return "\n".join(itertools.chain(lines, ("",))).encode()  # every line ends in a newline


def copy_rows(cur: Any, table: str, columns: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """COPY ``rows`` into ``table``: the fastest bulk path, for rows that cannot conflict."""
    copy_data(cur, table, columns, copy_text(rows))
