"""Which windows run: the compiled core, or the pure-Python reference it must agree with.

The compiled core (``lockoutd.decide._cwindows``) is built by ``pip install`` where a C compiler
is present, and switched off with every other extension (:mod:`lockoutd.extensions`). The core
is chosen only when it offers every method the reference does: a method added to the reference
alone (or a build older than its source) makes lockoutd run the reference rather than fail when
that is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lockoutd import extensions
from lockoutd.decide import windows as reference
from lockoutd.extensions import COMPILED, PURE_PYTHON

_REFERENCE_ONLY = frozenset({"by_key"})
"""Public attributes of the reference that the engine does not use (the reference's own dict)."""


def _offers(compiled: type, like: type) -> bool:
    wanted = {name for name in dir(like) if not name.startswith("_")} - _REFERENCE_ONLY
    return wanted <= set(dir(compiled))


def choose(compiled: Any, *, no_extensions: bool) -> tuple[Any, Any, str]:
    """``(EventWindows, DistinctWindows, which)`` given the compiled module (None if not built)."""
    if compiled is not None and not no_extensions:
        events, distinct = compiled.EventWindows, compiled.DistinctWindows
        if _offers(events, reference.EventWindows) and _offers(distinct, reference.DistinctWindows):
            return compiled.EventWindows, compiled.DistinctWindows, COMPILED
    return reference.EventWindows, reference.DistinctWindows, PURE_PYTHON


def dispatch_for(which: str) -> Any:
    """The compiled per-event loop over the rules (``lockoutd.decide._cdispatch``) to run with
    the windows ``which`` says run, or None for the engine's Python loop: the compiled loop goes
    with the compiled windows, the reference with the reference."""
    return extensions.built("lockoutd.decide._cdispatch") if which == COMPILED else None


if TYPE_CHECKING:
    from lockoutd.decide.windows import DistinctWindows, EventWindows

    WINDOWS = COMPILED
else:
    EventWindows, DistinctWindows, WINDOWS = choose(
        extensions.built("lockoutd.decide._cwindows"), no_extensions=extensions.DISABLED
    )
DISPATCH: Any = dispatch_for(WINDOWS)
"""The compiled loop of ``Engine.process`` over a plan's rules, or None: the Python loop."""

__all__ = [
    "COMPILED",
    "DISPATCH",
    "PURE_PYTHON",
    "WINDOWS",
    "DistinctWindows",
    "EventWindows",
    "choose",
    "dispatch_for",
]
