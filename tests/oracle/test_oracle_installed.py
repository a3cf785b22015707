"""The oracle must be present: a differential test skipped for want of it proves nothing."""

from __future__ import annotations

import importlib.util

import pytest


def test_matrix_synapse_is_installed() -> None:
    if importlib.util.find_spec("synapse") is None:
        pytest.fail("matrix-synapse is not installed; install it with: pip install -e '.[oracle]'")
