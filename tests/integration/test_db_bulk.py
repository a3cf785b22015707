"""``db.bulk``'s array literals against the real PostgreSQL: every value comes back as it went."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from db.bulk import array_literal
from pipeline.config import Settings
from pipeline.dev.local import database_url_for

pytestmark = pytest.mark.integration

ODD_TEXT = [
    "plain",
    "",
    'quote " inside',
    "back\\slash",
    "\\",
    '"',
    "comma, brace { } and space",
    "NULL",
    "tab\tnew\nline\r",
    "ünïcødé 🎉",
]


@pytest.fixture
def conn(stack_settings: Settings) -> Iterator[Any]:
    c = psycopg2.connect(database_url_for(stack_settings.database_url, "postgres"))
    yield c
    c.close()


def back(conn: Any, literal: str, kind: str) -> list[Any]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT %s::{kind}[]", (literal,))
        row = cur.fetchone()
    conn.rollback()
    return list(row[0])


@pytest.mark.parametrize(
    "values",
    [ODD_TEXT, [*ODD_TEXT, None], [None], ["$event:example.org", "!room:example.org"]],
    ids=["odd", "odd-and-null", "null", "ids"],
)
def test_a_text_array_literal_gives_back_exactly_its_values(conn: Any, values: list[Any]) -> None:
    assert back(conn, array_literal(values), "text") == values


def test_an_empty_array_literal_is_an_empty_array(conn: Any) -> None:
    assert back(conn, array_literal([]), "text") == []


def test_bigint_and_bytea_array_literals_give_back_their_values(conn: Any) -> None:
    ints = [0, -1, 2**63 - 1, -(2**63), None]
    assert back(conn, array_literal(ints, "bigint"), "bigint") == ints
    blobs = [b"", b'\x00\xff\\"', None]
    got = back(conn, array_literal(blobs, "bytea"), "bytea")
    assert [None if b is None else bytes(b) for b in got] == blobs


def test_a_nul_character_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="NUL"):
        array_literal(["fine", "nul\x00here"])
