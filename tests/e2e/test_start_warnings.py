"""What ``lockoutd check`` warns about, the daemon logs at start (README, "Checking a
configuration"), for operators who start it without running check first."""

from __future__ import annotations

import time
from pathlib import Path

from lockoutd.decide import core
from lockoutd.decode import native
from lockoutd.testing.broker import LocalBroker
from tests.e2e.conftest import REPO, start_stack, stop_stack

TYPO_RULE = """\
rules:
  - name: password-typo
    match: {reasn: password}
    key: [user_id]
    threshold: 3
    window: 5m
    action: {lock: {}}
"""


def test_a_rule_on_a_field_no_format_produces_is_logged_at_start(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A ``rules_warning`` line names the file, the line and the field it probably meant."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "typo.yaml").write_text(TYPO_RULE, encoding="utf-8")
    stack = start_stack(broker, tmp_path, rule_paths=[rules, REPO / "rules" / "bruteforce.yaml"])
    try:
        deadline = time.monotonic() + 30
        warnings: list[str] = []
        while not warnings and time.monotonic() < deadline:
            warnings = [
                line["warning"] for line in stack.daemon.logs() if line["event"] == "rules_warning"
            ]
            time.sleep(0.2)
        assert warnings == [
            f"{rules / 'typo.yaml'}:3: warning: rules.0.match.reasn: no input format produces "
            "this field; did you mean reason? (an extra field of your own events is fine)"
        ]
    finally:
        stop_stack(stack)


def test_the_start_line_says_which_windows_run(broker: LocalBroker, tmp_path: Path) -> None:
    """``daemon_started`` says whether the compiled windows or the pure-Python ones count, and
    which check decodes."""
    stack = start_stack(broker, tmp_path)
    try:
        deadline = time.monotonic() + 30
        started: list[dict[str, object]] = []
        while not started and time.monotonic() < deadline:
            started = [line for line in stack.daemon.logs() if line["event"] == "daemon_started"]
            time.sleep(0.2)
        assert [(line["windows"], line["decoder"]) for line in started] == [
            (core.WINDOWS, native.DECODER)
        ]
    finally:
        stop_stack(stack)
