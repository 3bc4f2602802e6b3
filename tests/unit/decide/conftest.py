"""Every test of the windows and the engine runs against both window implementations: the
compiled core and the pure-Python reference (README, "Installing"). Where the core was not built
(no C compiler at install), its cases skip and say why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lockoutd.decide import core
from lockoutd.decide import windows as reference

try:
    from lockoutd.decide import _cwindows as compiled
except ImportError:  # built without a compiler: the reference alone
    compiled = None


@pytest.fixture(autouse=True, params=[core.COMPILED, core.PURE_PYTHON])
def windows_implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which windows the engine builds (``core.EventWindows`` and ``core.DistinctWindows``), and
    the loop over the rules that goes with them (``core.DISPATCH``)."""
    chosen = reference if request.param == core.PURE_PYTHON else compiled
    if chosen is None:
        pytest.skip("the compiled windows are not built here (no C compiler at install)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "EventWindows", chosen.EventWindows)
        patch.setattr(core, "DistinctWindows", chosen.DistinctWindows)
        patch.setattr(core, "DISPATCH", core.dispatch_for(request.param))
        yield request.param
