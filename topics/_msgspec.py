"""Decoding with msgspec, its errors as MalformedMessage: what every codec here shares."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from pipeline.errors import MalformedMessage

T = TypeVar("T")


def decode(decoder: msgspec.json.Decoder[T], value: bytes | str | None, wire_format: str) -> T:
    """``value`` decoded and validated; MalformedMessage names the field that does not fit."""
    try:
        return decoder.decode(value or b"")
    except msgspec.ValidationError as e:
        raise MalformedMessage(wire_format, str(e)) from None
    except msgspec.DecodeError as e:
        raise MalformedMessage(wire_format, f"the value is not JSON ({e})") from None
