"""The error tree drawn in ``pipeline/errors.py`` is the real one: every RoomstreamError subclass
of the product's packages is drawn under its real parent, with its builtin mixins and the module
it lives in, and nothing drawn is missing."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pipeline.errors
from pipeline.errors import RoomstreamError

PACKAGES = ("pipeline", "db", "topics")
LINE = re.compile(
    r"^(?P<indent>[│ ]*)(?:[├└]── )?(?P<name>[A-Z]\w+)(?:\((?P<mixins>[\w, ]+)\))?"
    r"(?:\s+\[(?P<module>[\w.]+)\])?"
)


def _drawn() -> dict[str, tuple[str | None, tuple[str, ...], str]]:
    """name -> (drawn parent, drawn builtin mixins, drawn module)."""
    doc = pipeline.errors.__doc__ or ""
    drawn: dict[str, tuple[str | None, tuple[str, ...], str]] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        text = line.removeprefix("    ")
        if not text or not (text.startswith(("RoomstreamError", "│", "├", "└", " "))):
            continue
        m = LINE.match(text)
        if m is None or not line.startswith("    "):
            continue
        depth = len(m["indent"]) // 4 + (0 if text.startswith("RoomstreamError") else 1)
        stack[depth:] = [m["name"]]
        mixins = tuple(x.strip() for x in m["mixins"].split(",")) if m["mixins"] else ()
        parent = stack[depth - 1] if depth else None
        drawn[m["name"]] = (parent, mixins, m["module"] or "pipeline.errors")
    return drawn


def _real() -> dict[str, tuple[str | None, tuple[str, ...], str]]:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(info.name)
    real: dict[str, tuple[str | None, tuple[str, ...], str]] = {}
    todo: list[type[BaseException]] = [RoomstreamError]
    while todo:
        cls = todo.pop()
        if not cls.__module__.startswith(PACKAGES):
            continue  # a test's own subclass
        ours = [b for b in cls.__bases__ if issubclass(b, RoomstreamError)]
        builtins = tuple(
            b.__name__ for b in cls.__bases__ if b.__module__ == "builtins" and b is not Exception
        )
        real[cls.__name__] = (ours[0].__name__ if ours else None, builtins, cls.__module__)
        todo += cls.__subclasses__()
    return real


def test_every_error_class_is_drawn_under_its_parent_where_it_lives() -> None:
    drawn, real = _drawn(), _real()
    assert set(drawn) == set(real), (
        f"not drawn: {sorted(set(real) - set(drawn))}; drawn, not real: "
        f"{sorted(set(drawn) - set(real))}"
    )
    for name, (parent, mixins, module) in real.items():
        assert drawn[name] == (parent, mixins, module), name
