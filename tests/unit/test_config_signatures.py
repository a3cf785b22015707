"""The signature settings: off unless asked for, and a yes/no variable read as such."""

from __future__ import annotations

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.server_keys import signature_checker


@pytest.mark.parametrize(
    ("raw", "on"),
    [("1", True), ("true", True), ("On", True), ("yes", True), ("0", False), ("off", False)],
)
def test_verify_signatures_reads_yes_and_no(raw: str, on: bool) -> None:
    assert load_settings({"ROOMSTREAM_VERIFY_SIGNATURES": raw}).verify_signatures is on


def test_verify_signatures_is_off_by_default_and_then_nothing_is_checked() -> None:
    settings = load_settings({})
    assert settings.verify_signatures is False
    assert signature_checker(settings) == (None, None)


def test_a_verify_signatures_value_that_is_neither_yes_nor_no_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ROOMSTREAM_VERIFY_SIGNATURES='maybe'"):
        load_settings({"ROOMSTREAM_VERIFY_SIGNATURES": "maybe"})
