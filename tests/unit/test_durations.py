"""Durations as written in rules and configuration: ``30s``, ``10m``, ``1h``, ``1d``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from lockoutd.durations import Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5m", 90.0),
        (" 5m ", 300.0),
        ("5 m", 300.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_a_duration_is_seconds(written: Any, seconds: float) -> None:
    """Every accepted spelling gives its number of seconds."""
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0s", "longer than zero"),
        (0, "longer than zero"),
        (-5, "longer than zero"),
        ("-5m", "expected a duration"),
        ("10 minutes", "expected a duration"),
        ("5M", "expected a duration"),
        ("m", "expected a duration"),
        ("", "expected a duration"),
        ("1h30m", "expected a duration"),
        (True, "expected a duration"),
        (False, "expected a duration"),
        (None, "expected a duration"),
        ([5], "expected a duration"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
    ],
)
def test_a_bad_duration_is_refused(written: Any, message: str) -> None:
    """Zero, negative, non-finite, boolean and garbage durations are refused with a reason."""
    with pytest.raises(ValueError, match=message):
        parse_duration(written)


def test_the_duration_type_validates_in_models() -> None:
    """``Duration`` in a model accepts the spellings and reports a bad one as a validation error."""
    adapter = TypeAdapter(Duration)
    assert adapter.validate_python("10m") == 600.0
    with pytest.raises(ValidationError, match="expected a duration"):
        adapter.validate_python("ten minutes")


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(30, "30s"), (600, "10m"), (3600, "1h"), (86400, "1d"), (90, "90s"), (0.25, "0.25s")],
)
def test_a_duration_is_written_in_its_largest_exact_unit(seconds: float, written: str) -> None:
    """``format_duration`` spells a duration the way an operator would write it."""
    assert format_duration(seconds) == written
    assert parse_duration(written) == seconds
