"""``lockoutd check --connect`` against the broker and the ZITADEL emulator, and the daemon's own
ZITADEL check at start (README, "Checking a configuration")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonConfig, write_schedule_key
from lockoutd.testing.zitadel_emulator import ZitadelEmulator

from .conftest import ORG_ID, PAT, REPO, launch
from .kafka_helpers import wait_until

pytestmark = pytest.mark.e2e

SERVICE_ACCOUNT = "100000000000000021"


@pytest.fixture
def emulator() -> Iterator[ZitadelEmulator]:
    with ZitadelEmulator() as running:
        running.add_org(ORG_ID)
        yield running


def config_for(
    broker: LocalBroker,
    emulator: ZitadelEmulator,
    tmp: Path,
    *,
    create: tuple[str, ...] = (),
    api: str = "v1",
) -> DaemonConfig:
    suffix = uuid.uuid4().hex[:8]
    config = DaemonConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topics=[f"auth-events-{suffix}"],
        group_id=f"lockoutd-{suffix}",
        zitadel_url=emulator.base_url,
        pat_file=tmp / "pat",
        rule_paths=[REPO / "rules"],
        metrics_port=free_port(),
        dead_letter_topic=f"auth-events-dlq-{suffix}",
        decisions_topic=f"lockoutd-decisions-{suffix}",
        schedule_topic=f"lockoutd-schedule-{suffix}",
        schedule_signing_key_file=write_schedule_key(tmp / "schedule-signing-key"),
    )
    config.pat_file.write_text(PAT + "\n")
    config.extra["zitadel"] = {"api": api}
    wanted = {
        "events": config.topics[0],
        "dead_letter": config.dead_letter_topic or "",
        "decisions": config.decisions_topic or "",
        "schedule": config.schedule_topic,
    }
    asyncio.run(broker.create_topics(*(wanted[name] for name in create)))
    config.write(tmp / "lockoutd.yaml")
    return config


ALL_TOPICS = ("events", "dead_letter", "decisions", "schedule")


def check_connect(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "lockoutd", "check", "--connect", "-c", str(tmp / "lockoutd.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_good_setup_is_ok_line_by_line(
    broker: LocalBroker, emulator: ZitadelEmulator, tmp_path: Path
) -> None:
    emulator.add_pat(
        PAT, roles={"instance": {"IAM_USER_MANAGER"}}, user_id=SERVICE_ACCOUNT, org_id=ORG_ID
    )
    config = config_for(broker, emulator, tmp_path, create=ALL_TOPICS)
    result = check_connect(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ok:", "FAIL:"))]
    assert not [line for line in lines if line.startswith("FAIL:")], lines
    kafka = next(line for line in lines if "Kafka" in line)
    for topic in (config.topics[0], config.decisions_topic, config.schedule_topic):
        assert str(topic) in kafka
    assert any(
        f"authenticated as service-account-{SERVICE_ACCOUNT} (user {SERVICE_ACCOUNT}, org "
        f"{ORG_ID})" in line
        for line in lines
    ), lines
    assert any("user.write" in line and "instance" in line for line in lines)


def test_a_missing_topic_is_named(
    broker: LocalBroker, emulator: ZitadelEmulator, tmp_path: Path
) -> None:
    emulator.add_pat(PAT, roles={"instance": {"IAM_USER_MANAGER"}}, org_id=ORG_ID)
    config = config_for(broker, emulator, tmp_path, create=("events", "decisions", "schedule"))
    result = check_connect(tmp_path)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL:")]
    assert len(fails) == 1, result.stdout
    assert str(config.dead_letter_topic) in fails[0]
    assert "kafka.dead_letter_topic" in fails[0]


def test_a_token_zitadel_rejects_fails_and_says_what_to_fix(
    broker: LocalBroker, emulator: ZitadelEmulator, tmp_path: Path
) -> None:
    emulator.add_pat("another-token", roles={"instance": {"IAM_USER_MANAGER"}})
    config_for(broker, emulator, tmp_path, create=ALL_TOPICS)
    result = check_connect(tmp_path)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL:")]
    assert len(fails) == 1, result.stdout
    assert "rejected lockoutd's token" in fails[0]
    assert "zitadel.pat_file" in fails[0]


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (None, "no membership"),
        ({"instance": {"IAM_OWNER_VIEWER"}}, "lacks user.write"),
    ],
)
def test_a_token_without_permission_fails_and_says_what_to_grant(
    broker: LocalBroker,
    emulator: ZitadelEmulator,
    tmp_path: Path,
    roles: dict[str, set[str]] | None,
    expected: str,
) -> None:
    emulator.add_pat(PAT, roles=roles, user_id=SERVICE_ACCOUNT, org_id=ORG_ID)
    config_for(broker, emulator, tmp_path, create=ALL_TOPICS)
    result = check_connect(tmp_path)
    assert result.returncode == 1
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL:")]
    assert len(fails) == 1, result.stdout
    assert expected in fails[0]
    assert "IAM_USER_MANAGER" in fails[0]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_an_org_membership_is_enough_and_says_its_limit(
    broker: LocalBroker, emulator: ZitadelEmulator, tmp_path: Path, api: str
) -> None:
    """The account lives in the default org and may lock in ORG_ID only."""
    emulator.add_pat(PAT, roles={ORG_ID: {"ORG_USER_MANAGER"}}, user_id=SERVICE_ACCOUNT)
    config_for(broker, emulator, tmp_path, create=ALL_TOPICS, api=api)
    result = check_connect(tmp_path)
    assert result.returncode == 0, result.stdout
    assert any(
        line.startswith("ok:") and f"org {ORG_ID}" in line and "other orgs" in line
        for line in result.stdout.splitlines()
    ), result.stdout


def test_the_daemon_with_a_rejected_token_fails_at_start(
    broker: LocalBroker, emulator: ZitadelEmulator, tmp_path: Path
) -> None:
    """Not at the first attack: ``daemon_failed`` names the token before anything is consumed."""
    emulator.add_pat("another-token", roles={"instance": {"IAM_USER_MANAGER"}})
    config = config_for(broker, emulator, tmp_path, create=ALL_TOPICS)
    daemon = launch(config, tmp_path)
    try:
        wait_until(lambda: daemon.returncode is not None, what="the daemon to exit", timeout=60)
    finally:
        if daemon.returncode is None:
            daemon.kill()
    assert daemon.returncode == 1
    failed = [line for line in daemon.logs() if line.get("event") == "daemon_failed"]
    assert failed
    assert "rejected lockoutd's token" in failed[0]["error"]
    assert not [line for line in daemon.logs() if line.get("event") == "daemon_started"]
