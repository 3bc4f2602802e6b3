"""Which compiled extensions run: each one, or the pure-Python reference it must agree with.

``pip install`` builds the extensions where a C compiler is present (README, "Installing"): the
window core and the engine's loop (:mod:`lockoutd.decide.core`), and the decoder's check of a
record (:mod:`lockoutd.decode.native`). ``LOCKOUTD_NO_EXTENSIONS=1`` selects every reference even
where the extensions are built; the variable is read once, when lockoutd starts.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

NO_EXTENSIONS_VARIABLE = "LOCKOUTD_NO_EXTENSIONS"

COMPILED = "compiled"
PURE_PYTHON = "pure Python"

DISABLED: bool = os.environ.get(NO_EXTENSIONS_VARIABLE, "") not in ("", "0")
"""Whether ``LOCKOUTD_NO_EXTENSIONS`` asked for the pure-Python references."""


def built(module: str) -> Any:
    """The compiled ``module`` (a dotted name), or None where it was not built."""
    try:
        return importlib.import_module(module)
    except ImportError:  # installed without a compiler
        return None


def chosen(module: str) -> Any:
    """The compiled ``module`` when it is built and not switched off, else None."""
    return None if DISABLED else built(module)
