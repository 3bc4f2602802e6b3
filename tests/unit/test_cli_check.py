"""``lockoutd check``: every problem at once, and the effective settings with secrets masked."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from lockoutd.cli import main

REPO = Path(__file__).resolve().parents[2]
PAT = "pat-value-never-shown"
SASL_PASSWORD = "sasl-password-never-shown"
SIGNING_KEY = "signing-key-never-shown"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockoutd.yaml"
    path.write_text(textwrap.dedent(text).replace("RULES", str(REPO / "rules")), encoding="utf-8")
    return path


def test_check_prints_the_effective_configuration_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secrets from the environment show as ``**********``; secret file paths show as they are."""
    password_file = tmp_path / "sasl-password"
    password_file.write_text("from-a-file\n", encoding="utf-8")
    config = _config(
        tmp_path,
        f"""\
        kafka:
          security_protocol: SASL_PLAINTEXT
          sasl_mechanism: SCRAM-SHA-512
          sasl_username: lockoutd
          sasl_password_file: {password_file}
        zitadel:
          pat_file: /run/secrets/zitadel-pat
        engine:
          rule_paths: [RULES]
        ingest:
          topic: zitadel.events
        """,
    )
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", PAT)
    monkeypatch.setenv("LOCKOUTD_KAFKA__SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("LOCKOUTD_INGEST__SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("LOCKOUTD_SAFETY__MAX_LOCKS_PER_MINUTE", "7")
    assert main(["check", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    for secret in (PAT, SASL_PASSWORD, SIGNING_KEY, "from-a-file"):
        assert secret not in captured.out + captured.err
    first, _comment, *rest = captured.out.splitlines()
    assert first.startswith("ok: ")
    effective = yaml.safe_load("\n".join(rest))
    assert effective["zitadel"]["pat"] == "**********"
    assert effective["zitadel"]["pat_file"] == "/run/secrets/zitadel-pat"
    assert effective["kafka"]["sasl_password"] == "**********"
    assert effective["kafka"]["sasl_password_file"] == str(password_file)
    assert effective["ingest"]["signing_key"] == "**********"
    assert effective["safety"]["max_locks_per_minute"] == 7  # the environment won
    assert effective["engine"]["rule_paths"] == [str(REPO / "rules")]


def test_check_reports_rule_and_connection_problems_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken rule file and Kafka security settings that cannot work are reported in one run."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text(
        "rules:\n  - name: Broken\n    key: [user_id]\n    threshold: 1\n    window: 1m\n"
        "    action: {lock: {}}\n",
        encoding="utf-8",
    )
    config = _config(
        tmp_path,
        f"""\
        kafka:
          security_protocol: SASL_SSL
          sasl_mechanism: PLAIN
          ssl_cafile: {tmp_path / "missing-ca.pem"}
        engine:
          rule_paths: [{rules}]
        """,
    )
    assert main(["check", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = captured.err.splitlines()
    assert problems[0].startswith(f"{rules / 'broken.yaml'}:2: rules.0.name:")
    assert problems[1:] == [
        f"kafka.ssl_cafile: {tmp_path / 'missing-ca.pem'} is not a readable file",
        "kafka: security_protocol SASL_SSL needs kafka.sasl_username",
        "kafka: security_protocol SASL_SSL needs kafka.sasl_password_file or the "
        "LOCKOUTD_KAFKA__SASL_PASSWORD environment variable",
    ]


def test_check_names_an_unreadable_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CA bundle that does not exist is a check failure naming the setting and the path."""
    missing = tmp_path / "missing-ca.pem"
    config = _config(
        tmp_path,
        f"""\
        kafka:
          security_protocol: SSL
          ssl_cafile: {missing}
        engine:
          rule_paths: [RULES]
        """,
    )
    assert main(["check", "-c", str(config)]) == 1
    assert capsys.readouterr().err == f"kafka.ssl_cafile: {missing} is not a readable file\n"


def test_a_signing_key_written_in_the_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ingest.signing_key`` in the YAML file is an error that names the variable to use."""
    config = _config(
        tmp_path,
        f"""\
        engine:
          rule_paths: [RULES]
        ingest:
          signing_key: {SIGNING_KEY}
        """,
    )
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{config}:4: ingest.signing_key: secrets do not belong")
    assert "LOCKOUTD_INGEST__SIGNING_KEY" in err
    assert SIGNING_KEY not in err


def test_check_names_an_unreadable_schedule_signing_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The schedule signing key file is read by ``check`` as by the daemon; an empty one is an
    error that names the setting and the path, never any content."""
    key_file = tmp_path / "schedule-key"
    key_file.write_text("\n")
    config = _config(
        tmp_path,
        f"""\
        kafka:
          schedule_signing_key_file: {key_file}
        engine:
          rule_paths: [RULES]
        """,
    )
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == f"kafka.schedule_signing_key_file: secret file {key_file} is empty\n"
