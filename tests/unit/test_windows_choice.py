"""Which windows run (README, "Installing"): the compiled core only when it offers everything the
pure-Python windows do, so that a method added to the reference alone (and a build that lags
behind its source) makes lockoutd run the reference rather than fail when the method is called."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lockoutd.decide import core
from lockoutd.decide import windows as reference


class _Lacking:
    """A stand-in for a compiled class that lacks one of the reference's methods."""

    def add(self) -> None: ...


def test_a_core_lacking_a_method_of_the_reference_is_not_chosen() -> None:
    lacking = SimpleNamespace(EventWindows=_Lacking, DistinctWindows=reference.DistinctWindows)
    assert core.choose(lacking, no_extensions=False) == (
        reference.EventWindows,
        reference.DistinctWindows,
        core.PURE_PYTHON,
    )


def test_the_switch_and_a_missing_build_choose_the_reference() -> None:
    chosen = (reference.EventWindows, reference.DistinctWindows, core.PURE_PYTHON)
    assert core.choose(None, no_extensions=False) == chosen
    assert core.choose(SimpleNamespace(), no_extensions=True) == chosen


def test_the_built_core_offers_what_the_reference_does() -> None:
    compiled = pytest.importorskip(
        "lockoutd.decide._cwindows", reason="the compiled windows are not built here"
    )
    assert core.choose(compiled, no_extensions=False) == (
        compiled.EventWindows,
        compiled.DistinctWindows,
        core.COMPILED,
    )
