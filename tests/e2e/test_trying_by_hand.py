"""Trying lockoutd by hand (README, "Trying it by hand"): the demo's stack on its own, the daemon
run against its configuration, and events sent from a shell."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from lockoutd.testing.broker import EXTERNAL_BROKER_ENV, LocalBroker
from lockoutd.testing.demo import ORG, PAT, USERS
from lockoutd.testing.process import DaemonProcess

from .kafka_helpers import wait_until

pytestmark = pytest.mark.e2e


def test_the_stack_runs_the_daemon_and_takes_events_from_a_shell(
    broker: LocalBroker, tmp_path: Path
) -> None:
    printed = tmp_path / "stack.out"
    env = {**os.environ, EXTERNAL_BROKER_ENV: broker.bootstrap_servers}  # the session's broker
    with printed.open("w") as out:
        stack = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "lockoutd.testing.stack", "--dir", str(tmp_path / "play")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    daemon: DaemonProcess | None = None
    try:
        wait_until(lambda: "Ctrl-C stops" in printed.read_text(), what="the stack's directions")
        text = printed.read_text()
        zitadel = re.search(r"^zitadel\s+(\S+)", text, re.MULTILINE)
        assert zitadel is not None, text
        config_file = tmp_path / "play" / "lockoutd.yaml"
        assert f"lockoutd run -c {config_file}" in text
        assert "python -m lockoutd.testing.produce" in text
        port = int(yaml.safe_load(config_file.read_text())["metrics"]["listen"].split(":")[-1])
        daemon = DaemonProcess(config_file, metrics_port=port, log_path=tmp_path / "daemon.log")
        daemon.start()
        daemon.wait_ready()

        alice = USERS[0][0]
        event = {"type": "auth.login.failed", "user_id": alice, "org_id": ORG, "reason": "password"}
        line = json.dumps(event) + "\n"
        sent = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "lockoutd.testing.produce", "-c", str(config_file)],
            input=line * 5 + "not json\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert "line 6: not JSON" in sent.stderr
        assert "sent 5 event(s) to auth.events" in sent.stderr

        def alice_state() -> str:
            answer = httpx.get(
                f"{zitadel.group(1)}/management/v1/users/{alice}",
                headers={"authorization": f"Bearer {PAT}", "x-zitadel-orgid": ORG},
            )
            state: str = answer.json()["user"]["state"]
            return state

        wait_until(lambda: alice_state() == "USER_STATE_LOCKED", what="alice locked")
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.terminate()
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0
