"""Fixtures every unit test gets."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``LOCKOUTD_*`` variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("LOCKOUTD_"):
            monkeypatch.delenv(name)
