"""The benchmark suite (``roomstream bench``): each module times one part of Roomstream beside a
baseline on the same input and returns one result dict per input.

``main`` runs every module in ``MODULES``; each also runs on its own with
``python -m pipeline.bench.<module>``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

MODULES = ["pipeline.bench.state_res"]


def main(args: argparse.Namespace, settings: Any = None) -> int:
    quick = bool(getattr(args, "quick", False))
    for name in MODULES:
        importlib.import_module(name).run(quick=quick)
    return 0
