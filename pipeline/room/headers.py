"""The input headers a producer may set on a PDU, read for the shell: ``received_ts``.

A header is the producer's metadata, not part of the event: a malformed one never refuses the
event. ``parse_received_ts`` says why a value is unusable (``InvalidHeader``); the shell then uses
the record's own timestamp and logs the reason. ``storable_received_ts`` is the processor's last
guard, for callers that build ``Incoming`` themselves: the value lands in a BIGINT column.
"""

from __future__ import annotations

from pipeline.matrix.errors import RoomstreamError

# events.received_ts is BIGINT.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Enough digits for any int64; a longer value is refused before it is converted.
_MAX_DIGITS = 19


class InvalidHeader(RoomstreamError, ValueError):
    """A header value Roomstream cannot use. ``header`` names it; the message says why."""

    def __init__(self, header: str, reason: str) -> None:
        self.header = header
        self.reason = reason
        super().__init__(f"header {header!r}: {reason}")


def parse_received_ts(value: bytes | str | None) -> int | None:
    """The ``received_ts`` header (milliseconds since the epoch, base-10 ASCII digits with an
    optional leading "-") as an integer; None when the header is absent or empty.

    Raises InvalidHeader when it is not such an integer or does not fit in 64 bits (the
    database column is BIGINT): the caller falls back to the record's timestamp.
    """
    if value is None:
        return None
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
    if not text:
        return None
    # int() would also take spaces, "+", "_" and non-ASCII digits; the header is plainer.
    digits = text[1:] if text[0] == "-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidHeader(
            "received_ts",
            f"{text[:40]!r} is not a whole number of milliseconds; set it to the decimal time "
            "the event was received, or leave it out",
        )
    if len(digits.lstrip("0")) > _MAX_DIGITS or not INT64_MIN <= int(text) <= INT64_MAX:
        raise InvalidHeader(
            "received_ts",
            f"{text[:40]} does not fit in 64 bits; set it to the time the event was received "
            "in milliseconds since the epoch, or leave it out",
        )
    return int(text)


def storable_received_ts(value: int | None) -> int | None:
    """``value`` if the database can store it, else None (the event is kept without it)."""
    if value is None or INT64_MIN <= value <= INT64_MAX:
        return value
    return None
