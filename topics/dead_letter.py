"""The wire format of ``<prefix>.dead-letter``: an input that could not be processed, and why.

DESIGN.md ('Topics') names what every dead letter carries: ``reason`` (a sentence naming what
was wrong), ``source`` (where the input was read: topic, partition, offset), ``key`` (text or
null) and the original value, as ``value`` when it is UTF-8 text, else as ``value_b64``. Beyond
that: ``event_id`` when the input was an event whose ID is known, its ``headers`` (text), and
``dead_lettered_ts`` (ms since the epoch). Every process that dead-letters builds its message
with ``encode`` and every reader reads it with ``decode``.
"""

from __future__ import annotations

import base64
import binascii
import time

import msgspec

from pipeline.errors import MalformedMessage
from topics import _msgspec
from topics.headers import Headers, header_items

__all__ = ["DeadLetterMessage", "Source", "decode", "encode"]

WIRE_FORMAT = "dead-letter"


class Source(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int


class DeadLetterMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    reason: str
    source: Source
    key: str | None
    event_id: str | None = None
    headers: dict[str, str | None] = {}
    dead_lettered_ts: int | None = None
    value: str | None = None  # the original value, when it is UTF-8 text ...
    value_b64: str | None = None  # ... else base64 of its bytes

    def original(self) -> bytes:
        """The original value's bytes."""
        if self.value is not None:
            return self.value.encode("utf-8")
        return base64.b64decode(self.value_b64 or "")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetterMessage)


def encode(
    reason: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers = None,
    event_id: str | None = None,
    now_ms: int | None = None,
) -> bytes:
    """The dead letter of the input at ``topic``/``partition``/``offset``."""
    raw = value or b""
    try:
        text: str | None = raw.decode("utf-8")
        b64 = None
    except UnicodeDecodeError:
        text, b64 = None, base64.b64encode(raw).decode()
    return _encoder.encode(
        DeadLetterMessage(
            reason=reason,
            source=Source(topic, partition, offset),
            key=_text(key),
            event_id=event_id,
            headers={k: _text(v) for k, v in header_items(headers)},
            dead_lettered_ts=int(time.time() * 1000) if now_ms is None else now_ms,
            value=text,
            value_b64=b64,
        )
    )


def decode(value: bytes | str | None) -> DeadLetterMessage:
    """The dead letter in a message value; MalformedMessage names the field that does not fit."""
    msg = _msgspec.decode(_decoder, value, WIRE_FORMAT)
    if not msg.reason:
        raise MalformedMessage(WIRE_FORMAT, "`reason` is empty; a dead letter says why")
    if (msg.value is None) == (msg.value_b64 is None):
        raise MalformedMessage(
            WIRE_FORMAT, "a dead letter carries exactly one of `value` and `value_b64`"
        )
    if msg.value_b64 is not None:
        try:
            base64.b64decode(msg.value_b64, validate=True)
        except binascii.Error as e:
            raise MalformedMessage(WIRE_FORMAT, f"`value_b64` is not base64 ({e})") from None
    return msg


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", errors="replace")
