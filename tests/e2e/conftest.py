"""The end-to-end stack: the broker, the ZITADEL emulator and the real daemon in a child process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockoutd.testing.broker import LocalBroker, free_port
from lockoutd.testing.process import DaemonConfig, DaemonProcess, write_schedule_key
from lockoutd.testing.proxy import CuttableProxy
from lockoutd.testing.zitadel_emulator import ZitadelEmulator

REPO = Path(__file__).resolve().parents[2]
ORG_ID = "300"
PAT = "e2e-pat-token-value"


@dataclass
class Stack:
    broker: LocalBroker
    emulator: ZitadelEmulator
    daemon: DaemonProcess
    config: DaemonConfig

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def events_topic(self) -> str:
        return self.config.topics[0]


def start_stack(
    broker: LocalBroker,
    tmp: Path,
    *,
    rule_paths: list[Path] | None = None,
    event_format: str = "native",
    front: Callable[[str], str] | None = None,
    partitions: int = 3,
    env: dict[str, str] | None = None,
    **overrides: object,
) -> Stack:
    """Fresh topics (of ``partitions`` each) and group, an emulator with one org and a PAT, a
    schedule signing key (``schedule_signing_key_file=None`` runs without one), and a ready daemon.

    ``front``, given the emulator's URL, returns the URL the daemon calls instead (a proxy).
    ``env`` adds to the daemon's environment.
    """
    suffix = uuid.uuid4().hex[:8]
    config = DaemonConfig(
        bootstrap_servers=broker.bootstrap_servers,
        topics=[f"auth-events-{suffix}"],
        group_id=f"lockoutd-{suffix}",
        zitadel_url="",
        pat_file=tmp / "pat",
        rule_paths=rule_paths or [REPO / "rules"],
        metrics_port=free_port(),
        dead_letter_topic=f"auth-events-dlq-{suffix}",
        decisions_topic=f"lockoutd-decisions-{suffix}",
        schedule_topic=f"lockoutd-schedule-{suffix}",
        schedule_signing_key_file=tmp / "schedule-signing-key",
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    if (
        config.schedule_signing_key_file is not None
        and not config.schedule_signing_key_file.exists()
    ):
        write_schedule_key(config.schedule_signing_key_file)
    if event_format != "native":
        config.extra.setdefault("kafka", {})["formats"] = {config.topics[0]: event_format}
    asyncio.run(
        broker.create_topics(
            config.topics[0],
            config.dead_letter_topic or "",
            config.decisions_topic or "",
            partitions=partitions,
        )
    )
    emulator = ZitadelEmulator()
    emulator.start()
    emulator.add_org(ORG_ID)
    emulator.add_pat(PAT, roles={"instance": {"IAM_USER_MANAGER"}}, org_id=ORG_ID)
    config.zitadel_url = front(emulator.base_url) if front else emulator.base_url
    config.pat_file.write_text(PAT + "\n")
    daemon = DaemonProcess(
        config.write(tmp / "lockoutd.yaml"),
        metrics_port=config.metrics_port,
        log_path=tmp / "daemon.log",
        env=env,
    )
    daemon.start()
    try:
        daemon.wait_ready()
    except Exception:
        daemon.kill()
        emulator.stop()
        raise
    return Stack(broker, emulator, daemon, config)


def launch(config: DaemonConfig, tmp: Path, *, log_name: str = "daemon.log") -> DaemonProcess:
    """Write ``config`` and start a daemon with it (not yet waited for)."""
    daemon = DaemonProcess(
        config.write(tmp / "lockoutd.yaml"),
        metrics_port=config.metrics_port,
        log_path=tmp / log_name,
    )
    daemon.start()
    return daemon


def stop_stack(stack: Stack) -> None:
    try:
        if stack.daemon.returncode is None:
            stack.daemon.terminate()
    finally:
        stack.emulator.stop()


@pytest.fixture(scope="module")
def stack(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One daemon for a whole test module; each test uses users of its own."""
    running = start_stack(broker, tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)


@pytest.fixture
def cuttable_stack(tmp_path: Path) -> Iterator[tuple[Stack, CuttableProxy]]:
    """A stack on a broker of its own, reached through a proxy whose connections can be cut."""
    # The proxy binds its port first; the broker, which advertises that port, starts after it.
    with CuttableProxy() as proxy, LocalBroker(advertised_port=proxy.listen_port) as own_broker:
        assert own_broker.port is not None
        proxy.target_port = own_broker.port
        stack = start_stack(own_broker, tmp_path)
        try:
            yield stack, proxy
        finally:
            stop_stack(stack)
