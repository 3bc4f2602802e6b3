"""The demo's metrics output says which alarming-looking lines are the expected story."""

from __future__ import annotations

from typing import Any, cast

from lockoutd.testing import demo


class FakeDaemon:
    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {("lockoutd_zitadel_requests_total", (("code", "400"), ("operation", "lock"))): 2.0}


def test_the_400_answers_to_lock_are_explained_as_expected() -> None:
    (line,) = demo._metric_lines(cast(Any, FakeDaemon()))
    assert "expected" in demo._explained(line)
    assert "already locked" in demo._explained(line)
    assert demo._explained('lockoutd_zitadel_requests_total{code="200",operation="lock"}') == ""
