"""The differential tests against matrix-synapse: every test here carries the ``oracle`` marker,
so ``pytest -m "not oracle"`` leaves them out where Synapse is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.oracle)
