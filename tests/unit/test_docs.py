"""docs/ and the README against the code: what the pages claim that a test can check.

- every JSON example marked ``<!-- example: NAME -->`` decodes with the decoder of its format
  (``DECODERS``, the one place that says which decoder reads which example);
- every relative link leads to a file (and heading) that exists;
- every repository path and ``file::test`` named in docs/ exists;
- every ``ROOMSTREAM_*`` variable named is a setting of ``pipeline.config.Settings``, and the
  README's configuration table lists every setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import ENV_PREFIX, Settings
from pipeline.errors import MalformedMessage
from pipeline.matrix.pdu import parse_pdu
from pipeline.matrix.room_versions import room_version
from tests.unit import docs_examples
from topics import chunk as chunk_codec
from topics import dead_letter as dead_letter_codec
from topics import missing_events, pdu_input, server_keys
from topics.invalidation import decode_invalidation

ROOT = Path(__file__).parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [*DOCS, ROOT / "README.md"]

# docs/topics.md gives its PDU example as "in a room of version 10".
PDU_EXAMPLE_ROOM_VERSION = "10"


def _pdu_input(raw: bytes) -> Any:
    """What a worker does with a record of <prefix>.pdus: route it, then parse it."""
    routed = pdu_input.decode(raw)
    event = parse_pdu(raw, room_version(PDU_EXAMPLE_ROOM_VERSION))
    assert event.room_id == routed.room_id
    assert not event.redacted_on_receipt, "the example's content hash does not match its content"
    return event


def _chunk(raw: bytes) -> Any:
    """What the committer does with a record of <prefix>.chunks; the example must also say
    nothing the decoder would drop, so it is encoded back and compared."""
    chunk = chunk_codec.decode(raw)
    room_version(chunk.room_version)
    assert orjson.loads(chunk_codec.encode(chunk)) == orjson.loads(raw), (
        "fields the chunk codec ignores"
    )
    assert chunk.digest == chunk.compute_digest(), "the example's digest is not its content's"
    return chunk


def _dead_letter(raw: bytes) -> Any:
    """What ``roomstream status`` does with a record of <prefix>.dead-letter."""
    return dead_letter_codec.decode(raw)


def _invalidation(raw: bytes) -> Any:
    """What ``InvalidationClient`` does with a record of <prefix>.invalidations."""
    return decode_invalidation(raw)


def _missing_events(raw: bytes) -> Any:
    """What a federation front end does with a record of <prefix>.missing-events."""
    return missing_events.decode(raw)


def _server_keys(raw: bytes) -> Any:
    """What a worker's key ring does with a record of <prefix>.server-keys."""
    return server_keys.decode(None, raw)


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "pdu": _pdu_input,
    "chunk": _chunk,
    "dead_letter": _dead_letter,
    "invalidation": _invalidation,
    "missing_events": _missing_events,
    "server_keys": _server_keys,
}


_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*\n```json\n(.*?)\n```", re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_REPO_PATH = re.compile(r"`((?:pipeline|db|topics|tests|deploy|docs)/[^`\s:*<]+)")
_TEST_REF = re.compile(r"`(tests/[^`\s:]+\.py)::(\w+)`")
_VARIABLE = re.compile(r"ROOMSTREAM_[A-Z0-9_]+")


def _examples() -> list[tuple[str, str, str]]:
    return [
        (page.name, name, body)
        for page in DOCS
        for name, body in _EXAMPLE.findall(page.read_text(encoding="utf-8"))
    ]


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {
        _slug(line.lstrip("#"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def _settings_variables() -> set[str]:
    # A setting read under a variable of its own (JAVA_HOME) is not a ROOMSTREAM_* one.
    return {ENV_PREFIX + f.name.upper() for f in fields(Settings) if "env" not in f.metadata}


@pytest.mark.parametrize(("page", "name", "body"), _examples())
def test_each_marked_example_decodes_with_its_formats_decoder(
    page: str, name: str, body: str
) -> None:
    assert name in DECODERS, f"{page}: no decoder for example {name!r}; add it to DECODERS"
    DECODERS[name](body.encode())


def test_every_decoder_has_an_example_in_the_docs() -> None:
    shown = {name for _, name, _ in _examples()}
    assert set(DECODERS) <= shown, f"no example in docs/ for {sorted(set(DECODERS) - shown)}"


def test_a_broken_example_is_caught() -> None:
    (_, _, body) = next(e for e in _examples() if e[1] == "chunk")
    broken = orjson.loads(body)
    broken["forward_extremity"] = broken.pop("forward_extremities")
    with pytest.raises((AssertionError, MalformedMessage)):
        DECODERS["chunk"](orjson.dumps(broken))
    with pytest.raises(MalformedMessage):
        DECODERS["dead_letter"](orjson.dumps({"reason": "x", "key": None, "value": ""}))
    (_, _, body) = next(e for e in _examples() if e[1] == "missing_events")
    with pytest.raises(MalformedMessage):
        DECODERS["missing_events"](orjson.dumps({**orjson.loads(body), "missing": []}))


def test_the_examples_the_code_makes_are_shown_as_it_makes_them() -> None:
    shown: dict[str, list[Any]] = {}
    for page, name, body in _examples():
        if page == "topics.md":
            shown.setdefault(name, []).append(orjson.loads(body))
    made = {
        "invalidation": [docs_examples.invalidation()],
        "missing_events": docs_examples.missing_event_requests(),
        "server_keys": [docs_examples.server_key()[1]],
    }
    for name, values in made.items():
        assert shown.get(name) == [orjson.loads(v) for v in values], (
            f"docs/topics.md's {name} example is not what the code makes; "
            "paste `python -m tests.unit.docs_examples`"
        )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_and_tests_named_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = [p for p in _REPO_PATH.findall(text) if not (ROOT / p.rstrip("/.,")).exists()]
    for path, test in _TEST_REF.findall(text):
        source = ROOT / path
        if not source.exists() or f"def {test}(" not in source.read_text(encoding="utf-8"):
            missing.append(f"{path}::{test}")
    assert not missing, f"{page.name} names what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_variable_named_is_a_setting(page: Path) -> None:
    named = set(_VARIABLE.findall(page.read_text(encoding="utf-8")))
    unknown = named - _settings_variables()
    assert not unknown, f"{page.name} names variables pipeline/config.py does not read: {unknown}"


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = {
        v for line in section.splitlines() if line.startswith("|") for v in _VARIABLE.findall(line)
    }
    missing = _settings_variables() - table
    assert not missing, f"the README's configuration table lacks {sorted(missing)}"
