"""The benchmark suite (``roomstream bench``): each module times one part of Roomstream beside a
baseline on the same input and returns one result dict per input.

``main`` runs the whole suite (``pipeline.bench.suite``): matrix-synapse's own persistence path
as the anchor (``synapse_persist``), end-to-end throughput and isolation (``e2e``) against the
no-Matrix-logic floor (``floor``), the paced capacity and latency curve (``paced``), recovery
from kill -9 (``recovery``), big rooms (``big_room``), the committer alone (``committer``),
worker memory (``memory``) and every module in ``MODULES``; it prints a table, writes
BENCHMARKS.md (``report``, ``load_sections``) and draws its pictures (``plots``). Each module
in ``MODULES`` also runs on its own with ``python -m pipeline.bench.<module>``. Everything
heavy is imported lazily, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
from typing import Any

MODULES = ["pipeline.bench.state_res"]


def main(args: argparse.Namespace, settings: Any = None) -> int:
    """The ``bench`` command: run the suite, print its table, write the report."""
    from pipeline.bench.suite import main as suite_main
    from pipeline.config import load_settings

    return suite_main(args, settings if settings is not None else load_settings())
