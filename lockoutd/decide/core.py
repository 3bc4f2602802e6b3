"""Which windows run: the compiled core, or the pure-Python reference it must agree with.

The compiled core (``lockoutd.decide._cwindows``) is built by ``pip install`` where a C compiler
is present. ``LOCKOUTD_NO_EXTENSIONS=1`` selects the reference even where it is built; the
variable is read once, when lockoutd starts (README, "Installing").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

NO_EXTENSIONS_VARIABLE = "LOCKOUTD_NO_EXTENSIONS"

COMPILED = "compiled"
PURE_PYTHON = "pure Python"


def _wants_reference() -> bool:
    return os.environ.get(NO_EXTENSIONS_VARIABLE, "") not in ("", "0")


if TYPE_CHECKING:
    from lockoutd.decide.windows import DistinctWindows, EventWindows

    WINDOWS = COMPILED
else:
    from lockoutd.decide import windows as _reference

    try:
        if _wants_reference():
            raise ImportError(NO_EXTENSIONS_VARIABLE)
        from lockoutd.decide._cwindows import DistinctWindows, EventWindows
    except ImportError:
        EventWindows, DistinctWindows = _reference.EventWindows, _reference.DistinctWindows
        WINDOWS = PURE_PYTHON
    else:
        WINDOWS = COMPILED

__all__ = ["COMPILED", "PURE_PYTHON", "WINDOWS", "DistinctWindows", "EventWindows"]
