"""What a wire format's decoder does with a value it cannot read: it raises MalformedMessage
naming its wire format (and, the tests check, what is wrong)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.errors import MalformedMessage


def refusal(decode: Callable[[Any], object], value: object, wire_format: str) -> MalformedMessage:
    """The MalformedMessage ``decode(value)`` raises, checked to name ``wire_format``."""
    with pytest.raises(MalformedMessage) as caught:
        decode(value)
    assert caught.value.wire_format == wire_format
    return caught.value
