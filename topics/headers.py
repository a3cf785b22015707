"""Kafka record headers as either client hands them over: aiokafka (under faust) gives a list of
(name, bytes) pairs, confluent-kafka a list or a mapping; producers may pass text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Headers = Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]] | None


def header_items(headers: Headers) -> list[tuple[str, bytes | None]]:
    """The headers as (name, bytes or None) pairs, in order."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]
