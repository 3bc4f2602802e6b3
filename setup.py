"""Builds the compiled window core where a C compiler is present; installs without it where not.

Everything else about the package is in pyproject.toml. The extension is optional: without a
compiler (or without Python's headers) the build says so in one line and lockoutd runs the
pure-Python windows, which keep the same rules (README, "Installing").
"""

from __future__ import annotations

from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class _OptionalBuildExt(build_ext):
    """``build_ext`` that says in one line which windows this install will run."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            print(
                f"lockoutd: compiled windows not built ({error}); the pure-Python windows will run"
            )
            return

    def build_extension(self, ext: Any) -> None:
        what, fallback = _WHAT.get(ext.name, ("windows", "the pure-Python windows"))
        try:
            super().build_extension(ext)
        except Exception as error:
            print(f"lockoutd: compiled {what} not built ({error}); {fallback} will run")
            return
        print(f"lockoutd: compiled {what} built")


_WHAT = {
    "lockoutd.decide._cdispatch": ("rule loop", "the engine's Python loop"),
    "lockoutd.decode._cnative": ("decoder check", "the decoder's Python check"),
}
"""What each extension other than the windows is called in the build's one line about it."""


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("lockoutd: Cython is not installed; the pure-Python windows will run")
        return []
    # The windows' layout is declared once, in the .pxd both modules compile against: a change
    # to it rebuilds both, and a source distribution carries it.
    layout = ["lockoutd/decide/_cwindows.pxd"]
    ipv4 = ["lockoutd/decode/_ipv4.pxd"]
    core = Extension(
        "lockoutd.decide._cwindows",
        ["lockoutd/decide/_cwindows.pyx"],
        depends=layout,
        optional=True,
    )
    dispatch = Extension(
        "lockoutd.decide._cdispatch",
        ["lockoutd/decide/_cdispatch.pyx"],
        depends=layout + ipv4,
        optional=True,
    )
    decoder = Extension(
        "lockoutd.decode._cnative",
        ["lockoutd/decode/_cnative.pyx"],
        depends=ipv4,
        optional=True,
    )
    return list(cythonize([core, dispatch, decoder], language_level=3, quiet=True))


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
