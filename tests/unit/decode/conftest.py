"""Every decoder test runs against both checks of a decoded record: the compiled one and the
pure-Python reference (README, "Installing"). Where the compiled check was not built (no C
compiler at install), its cases skip and say why."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from lockoutd.decode import native
from lockoutd.extensions import COMPILED, PURE_PYTHON


@pytest.fixture(autouse=True, params=[COMPILED, PURE_PYTHON])
def decoder_check(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which check turns a decoded record into an event (``native.Check``)."""
    if request.param == COMPILED and importlib.util.find_spec("lockoutd.decode._cnative") is None:
        pytest.skip("the compiled decoder check is not built here (no C compiler at install)")
    native.use_check(native.check_of(request.param))
    yield request.param
    native.use_check(native.check_of(native.DECODER))
