"""Hypothesis strategies for JSON documents, shared by the core's property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_documents(
    leaves: st.SearchStrategy[Any],
    *,
    keys: st.SearchStrategy[str],
    size: int = 3,
    max_leaves: int = 10,
) -> st.SearchStrategy[Any]:
    """JSON values built of ``leaves``: arrays and objects (keys drawn from ``keys``) of at most
    ``size`` members, nested up to ``max_leaves`` leaves in all."""
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=size) | st.dictionaries(keys, inner, max_size=size),
        max_leaves=max_leaves,
    )
