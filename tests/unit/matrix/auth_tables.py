"""Tables of authorization cases: rows named and bounded by room versions, and their outcome
(allowed, or rejected with a reason that says why)."""

from __future__ import annotations

from typing import Any

import pytest

ALL = (1, 12)
ALLOWED = None
REJECTED = ""  # rejected, for any reason


def table(*rows: tuple[Any, ...]) -> list[Any]:
    """Rows ``(name, (lo, hi), *values)`` as pytest params ``(version, *values)``, one for each
    room version lo..hi, with ids ``name-vN``."""
    return [
        pytest.param(str(n), *values, id=f"{name}-v{n}")
        for name, (lo, hi), *values in rows
        for n in range(lo, hi + 1)
    ]


def assert_outcome(reason: str | None, expected: str | None) -> None:
    """``reason`` (a rejection's, or None) is what a table row expects: ALLOWED, REJECTED, or a
    rejection whose reason contains ``expected``."""
    if expected is ALLOWED:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason
