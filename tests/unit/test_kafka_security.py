"""Kafka connection security (README, "Configuration"): TLS and SASL as aiokafka gets them."""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from lockoutd.errors import ConfigError, KafkaUnavailable
from lockoutd.report.metrics import Metrics
from lockoutd.settings import KafkaSettings, Settings
from lockoutd.source.kafka import KafkaSink, KafkaSource, connection_options
from lockoutd.testing.broker import free_port

PASSWORD = "kafka-password-that-must-never-show"


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lockoutd-client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_settings_reach_the_consumer_and_the_producer(
    tmp_path: Path, mechanism: str
) -> None:
    """The mechanism, the user and the password read from its file are what aiokafka uses."""
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="lockoutd",
        sasl_password_file=_password_file(tmp_path),
    )
    source = KafkaSource(settings, metrics=Metrics())
    sink = KafkaSink(settings)
    try:
        for client in (source._consumer._client, sink._producer.client):
            assert client._security_protocol == "SASL_PLAINTEXT"
            assert client._sasl_mechanism == mechanism
            assert client._sasl_plain_username == "lockoutd"
            assert client._sasl_plain_password == PASSWORD
    finally:
        await source._consumer.stop()
        await sink._producer.stop()


def test_a_password_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    """``LOCKOUTD_KAFKA__SASL_PASSWORD`` is used instead of ``sasl_password_file``."""
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="lockoutd",
        sasl_password_file=_password_file(tmp_path),
        sasl_password=SecretStr("from-the-environment"),
    )
    options = connection_options(settings)
    assert options["sasl_plain_password"] == "from-the-environment"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_tls_verifies_the_broker_and_loads_the_client_certificate(tmp_path: Path) -> None:
    """With SSL the context checks the host name and the chain, and presents the client cert."""
    cert, key = _self_signed(tmp_path)
    settings = KafkaSettings(
        security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key
    )
    context: ssl.SSLContext = connection_options(settings)["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "lockoutd-client"),),)
    ]


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        (
            {"ssl_cafile": "ca.pem"},
            [
                "kafka.ssl_cafile is set, but security_protocol PLAINTEXT does not use TLS "
                "(use SSL or SASL_SSL)"
            ],
        ),
        (
            {"security_protocol": "SSL", "sasl_username": "lockoutd"},
            [
                "kafka.sasl_username is set, but security_protocol SSL does not use SASL "
                "(use SASL_SSL or SASL_PLAINTEXT)"
            ],
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT"},
            [
                "kafka: security_protocol SASL_PLAINTEXT needs kafka.sasl_mechanism",
                "kafka: security_protocol SASL_PLAINTEXT needs kafka.sasl_username",
                "kafka: security_protocol SASL_PLAINTEXT needs kafka.sasl_password_file or the "
                "LOCKOUTD_KAFKA__SASL_PASSWORD environment variable",
            ],
        ),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "client.key"},
            [
                "kafka.ssl_keyfile: client.key is not a readable file",
                "kafka.ssl_keyfile is set without kafka.ssl_certfile",
            ],
        ),
    ],
)
def test_security_settings_that_cannot_work_are_refused_together(
    fields: dict[str, Any], problems: list[str]
) -> None:
    """A TLS or SASL setting the protocol ignores, or one that is missing, is a config error."""
    with pytest.raises(ConfigError) as caught:
        connection_options(KafkaSettings(**fields))
    assert caught.value.problems == problems


def test_a_file_that_is_not_pem_is_named_without_its_content(tmp_path: Path) -> None:
    """A CA file that is not a certificate is reported by setting and path only."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text(PASSWORD, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        connection_options(KafkaSettings(security_protocol="SSL", ssl_cafile=bogus))
    [problem] = caught.value.problems
    assert problem.startswith(f"kafka: cannot use the TLS files (ssl_cafile={bogus}):")
    assert PASSWORD not in problem


def test_an_unreadable_password_file_is_named_without_a_secret(tmp_path: Path) -> None:
    """A missing password file is a config error that names the setting and the path."""
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="lockoutd",
        sasl_password_file=tmp_path / "missing",
    )
    with pytest.raises(ConfigError) as caught:
        connection_options(settings)
    assert caught.value.problems == [
        f"kafka.sasl_password_file: cannot read secret file {tmp_path / 'missing'}: "
        "No such file or directory"
    ]


async def test_the_password_never_reaches_logs_repr_or_masked_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Connecting and failing logs nothing that holds the password; settings never show it."""
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{free_port()}",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="lockoutd",
            sasl_password=SecretStr(PASSWORD),
        )
    )
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as structured, pytest.raises(KafkaUnavailable) as caught:
        async with KafkaSink(settings.kafka):
            pass
    shown = [
        repr(settings),
        str(settings.masked()),
        repr(settings.kafka),
        str(caught.value),
        repr(caught.value),
        caplog.text,
        repr(structured),
    ]
    assert not [text for text in shown if PASSWORD in text]
    assert settings.masked()["kafka"]["sasl_password"] == "**********"
