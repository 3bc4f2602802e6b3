"""Rules reload when their files change, without a signal (README, "Running it"): a Kubernetes
ConfigMap update (the ``..data`` symlink swapped to a new folder) and an edit in place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.zitadel_emulator import UserState

from .conftest import ORG_ID, Stack, start_stack, stop_stack
from .kafka_helpers import failure, produce, wait_until

pytestmark = pytest.mark.e2e


def rule(threshold: int) -> str:
    return f"""\
rules:
  - name: password-bruteforce
    match: {{reason: password}}
    key: [user_id]
    threshold: {threshold}
    window: 10m
    action: {{lock: {{}}}}
"""


def events(stack: Stack, name: str) -> list[dict[str, Any]]:
    return [line for line in stack.daemon.logs() if line.get("event") == name]


def swap_data(folder: Path, version: str) -> None:
    """What the kubelet does: write a new folder, then point ``..data`` at it in one rename."""
    link = folder / "..data_tmp"
    link.symlink_to(version)
    os.replace(link, folder / "..data")


def attacked_and_locked(stack: Stack, user: str, failures: int) -> None:
    stack.emulator.add_user(user, org_id=ORG_ID)
    produce(
        stack.bootstrap,
        stack.events_topic,
        [failure(user, m, org_id=ORG_ID) for m in range(failures)],
    )
    wait_until(lambda: stack.emulator.state_of(user) is UserState.LOCKED, what=f"{user} locked")


def test_a_changed_rule_file_is_reloaded_and_a_broken_one_keeps_the_old_rules(
    broker: LocalBroker, tmp_path: Path
) -> None:
    mounted = tmp_path / "rules"
    (mounted / "..v1").mkdir(parents=True)
    (mounted / "..v1" / "rules.yaml").write_text(rule(5), encoding="utf-8")
    (mounted / "..data").symlink_to("..v1")
    (mounted / "rules.yaml").symlink_to("..data/rules.yaml")
    stack = start_stack(broker, tmp_path, rule_paths=[mounted])
    try:
        # A ConfigMap update: the threshold goes from 5 to 3.
        (mounted / "..v2").mkdir()
        (mounted / "..v2" / "rules.yaml").write_text(rule(3), encoding="utf-8")
        swap_data(mounted, "..v2")
        wait_until(lambda: events(stack, "rules_reloaded"), what="rules_reloaded")
        attacked_and_locked(stack, "4300", failures=3)

        # An edit in place that breaks the file: the old rules (threshold 3) keep working.
        (mounted / "..v2" / "rules.yaml").write_text(
            rule(3).replace("threshold", "treshold"), encoding="utf-8"
        )
        failed = wait_until(lambda: events(stack, "rules_reload_failed"), what="reload failed")
        assert "treshold" in " ".join(failed[0]["problems"])
        attacked_and_locked(stack, "4301", failures=3)
        assert len(events(stack, "rules_reloaded")) == 1
        assert len(events(stack, "rules_reload_failed")) == 1  # not once per check
    finally:
        stop_stack(stack)
