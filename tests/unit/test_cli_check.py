"""``lockoutd check``: every problem at once, and the effective settings with secrets masked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lockoutd.cli import main

REPO = Path(__file__).resolve().parents[2]
PAT = "pat-value-never-shown"
SIGNING_KEY = "signing-key-never-shown"
SCHEDULE_KEY = "schedule-signing-key-never-shown"


@pytest.fixture(autouse=True)
def _schedule_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped rules lock temporarily, so ``check`` needs a schedule signing key: the tests
    that are about something else get one from the environment."""
    monkeypatch.setenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY", SCHEDULE_KEY)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockoutd.yaml"
    path.write_text(textwrap.dedent(text).replace("RULES", str(REPO / "rules")), encoding="utf-8")
    return path


def test_check_prints_the_effective_configuration_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Secrets from the environment show as ``**********``; secret file paths show as they are,
    never the secrets they hold."""
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
          base_url: http://localhost:8080
        engine:
          rule_paths: [RULES]
        ingest:
          topic: zitadel.events
        """,
    )
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", PAT)
    monkeypatch.setenv("LOCKOUTD_INGEST__SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("LOCKOUTD_SAFETY__MAX_LOCKS_PER_MINUTE", "7")
    assert main(["check", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    for secret in (PAT, SIGNING_KEY, SCHEDULE_KEY, "from-a-file"):
        assert secret not in captured.out + captured.err
    first, _comment, *rest = captured.out.splitlines()
    assert first.startswith("ok: ")
    effective = yaml.safe_load("\n".join(rest))
    assert effective["zitadel"]["pat"] == "**********"
    assert effective["kafka"]["sasl_password"] is None
    assert effective["kafka"]["sasl_password_file"] == str(password_file)
    assert effective["ingest"]["signing_key"] == "**********"
    assert effective["kafka"]["schedule_signing_key"] == "**********"
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
        zitadel:
          pat_file: {_pat_file(tmp_path)}
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
        zitadel:
          pat_file: {_pat_file(tmp_path)}
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


# What `run` refuses before it connects, `check` refuses too (README, "Checking a configuration").


def _pat_file(tmp_path: Path) -> Path:
    path = tmp_path / "zitadel-pat"
    path.write_text(PAT + "\n", encoding="utf-8")
    return path


def test_a_token_in_the_environment_replaces_the_files_pat_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's own example: the shipped file names a pat_file that does not exist here, and
    ``LOCKOUTD_ZITADEL__PAT`` replaces it, with a note saying so."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", PAT)
    assert main(["check", "-c", "config/lockoutd.yaml"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "note: LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY is set, so kafka.schedule_signing_key_file "
        "from config/lockoutd.yaml is ignored",
        "note: LOCKOUTD_ZITADEL__PAT is set, so zitadel.pat_file from config/lockoutd.yaml "
        "is ignored",
    ]
    effective = yaml.safe_load(captured.out.split("\n", 2)[2])
    assert effective["zitadel"]["pat_file"] is None
    assert effective["zitadel"]["pat"] == "**********"


def test_run_and_check_refuse_an_unreadable_pat_file_alike(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped file as it is: its pat_file is not there, so check fails as run would."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("LOCKOUTD_ZITADEL__PAT", raising=False)
    expected = "cannot read zitadel.pat_file /run/secrets/zitadel-pat"
    assert main(["check", "-c", "config/lockoutd.yaml"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(expected)
    assert main(["run", "-c", "config/lockoutd.yaml"]) == 1  # refused before any connection
    assert capsys.readouterr().err.startswith(expected)


@pytest.mark.parametrize(
    ("zitadel", "environment", "expected"),
    [
        pytest.param(
            "pat_file: <PAT_FILE>\n  key_file: <PAT_FILE>\n",
            {},
            "set exactly one of zitadel.pat_file, LOCKOUTD_ZITADEL__PAT and zitadel.key_file "
            "(found: zitadel.pat_file, zitadel.key_file)",
            id="two credentials in the file",
        ),
        pytest.param(
            "base_url: http://localhost:8080\n",
            {"LOCKOUTD_ZITADEL__PAT": PAT, "LOCKOUTD_ZITADEL__PAT_FILE": "<PAT_FILE>"},
            "set exactly one of zitadel.pat_file, LOCKOUTD_ZITADEL__PAT and zitadel.key_file "
            "(found: zitadel.pat_file, LOCKOUTD_ZITADEL__PAT)",
            id="two credentials in the environment",
        ),
        pytest.param(
            "base_url: http://localhost:8080\n",
            {},
            "set exactly one of zitadel.pat_file, LOCKOUTD_ZITADEL__PAT and zitadel.key_file "
            "(found: none)",
            id="no credential",
        ),
        pytest.param(
            "pat_file: <PAT_FILE>\n",
            {"LOCKOUTD_ZITADEL__PAT_FILE": ""},
            "environment LOCKOUTD_ZITADEL__PAT_FILE: is empty; name a file, or unset the variable",
            id="an empty path variable",
        ),
        pytest.param(
            "base_url: http://localhost:8080\n",
            {"LOCKOUTD_ZITADEL__PAT": " "},
            "LOCKOUTD_ZITADEL__PAT is empty",
            id="an empty token",
        ),
        pytest.param(
            "pat_file: <PAT_FILE>\n",
            {"LOCKOUTD_ZITADEL__KEY_FILE": "<NOT_A_KEY>"},
            "zitadel.key_file <NOT_A_KEY> is not JSON",
            id="a key file from the environment replaces the pat_file, and is read",
        ),
        pytest.param(
            "pat_file: <PAT_FILE>\n  ca_file: <MISSING>\n",
            {},
            "cannot load zitadel.ca_file <MISSING>",
            id="an unreadable CA bundle",
        ),
    ],
)
def test_check_refuses_what_run_refuses_before_connecting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    zitadel: str,
    environment: dict[str, str],
    expected: str,
) -> None:
    """Credentials and TLS files are checked by one function that both commands call."""
    pat_file = _pat_file(tmp_path)
    not_a_key = tmp_path / "key.json"
    not_a_key.write_text("not json", encoding="utf-8")
    names = {"<PAT_FILE>": str(pat_file), "<NOT_A_KEY>": str(not_a_key)}
    names["<MISSING>"] = str(tmp_path / "missing-ca.pem")

    def named(text: str) -> str:
        for name, value in names.items():
            text = text.replace(name, value)
        return text

    config = _config(tmp_path, f"zitadel:\n  {named(zitadel)}engine:\n  rule_paths: [RULES]\n")
    for name, value in environment.items():
        monkeypatch.setenv(name, named(value))
    assert main(["check", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert named(expected) in captured.err
    assert PAT not in captured.err
    assert main(["run", "-c", str(config)]) == 1
    assert named(expected) in capsys.readouterr().err


# Paths in the configuration file are read from the file's folder.


def test_relative_paths_in_the_file_are_read_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From another working directory, ``rule_paths`` and ``pat_file`` still find their files."""
    deployment = tmp_path / "lockoutd"
    (deployment / "config").mkdir(parents=True)
    (deployment / "secrets").mkdir()
    (deployment / "secrets" / "pat").write_text(PAT, encoding="utf-8")
    (deployment / "rules").symlink_to(REPO / "rules")
    config = deployment / "config" / "lockoutd.yaml"
    config.write_text(
        "zitadel:\n  pat_file: ../secrets/pat\nengine:\n  rule_paths: [../rules]\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["check", "-c", "../lockoutd/config/lockoutd.yaml"]) == 0
    effective = yaml.safe_load(capsys.readouterr().out.split("\n", 2)[2])
    assert Path(effective["zitadel"]["pat_file"]) == elsewhere / "../lockoutd/config/../secrets/pat"
    assert effective["engine"]["rule_paths"] == [str(elsewhere / "../lockoutd/config/../rules")]


def test_a_missing_rule_path_names_the_setting_and_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error names ``engine.rule_paths`` and the resolved path, not ``rules:1``."""
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "lockoutd.yaml"
    config.write_text(
        f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\nengine:\n  rule_paths: [rules]\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-c", "config/lockoutd.yaml"]) == 1
    assert capsys.readouterr().err == (
        f"engine.rule_paths: {tmp_path / 'config' / 'rules'} does not exist\n"
    )


def test_relative_paths_from_the_environment_are_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``LOCKOUTD_ENGINE__RULE_PATHS=rules`` means ``./rules``, as a shell user expects."""
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "lockoutd.yaml"
    config.write_text(f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\n", encoding="utf-8")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("LOCKOUTD_ENGINE__RULE_PATHS", "rules")
    assert main(["check", "-c", str(config)]) == 0
    effective = yaml.safe_load(capsys.readouterr().out.split("\n", 2)[2])
    assert effective["engine"]["rule_paths"] == ["rules"]


# Typos are refused or warned about, never silently ignored.


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("LOCKOUTD_SAFETY_MAX_LOCKS_PER_MINUTE", "LOCKOUTD_SAFETY__MAX_LOCKS_PER_MINUTE"),
        ("LOCKOUTD_SAFTEY__MAX_LOCKS_PER_MINUTE", "LOCKOUTD_SAFETY__MAX_LOCKS_PER_MINUTE"),
        ("LOCKOUTD_KAFKA__BOOTSTRAP", "LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS"),
        ("LOCKOUTD_ZITADEL_PAT", "LOCKOUTD_ZITADEL__PAT"),
    ],
)
def test_an_unknown_lockoutd_variable_is_refused_with_the_nearest_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    suggestion: str,
) -> None:
    """A misspelt variable stops check (and run) instead of leaving the default in force."""
    config = _config(tmp_path, f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv(variable, "5")
    assert main(["check", "-c", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"environment {variable}: not a lockoutd setting; did you mean {suggestion}?\n"
    )


def test_variables_that_are_not_settings_but_documented_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``LOCKOUTD_TEST_BOOTSTRAP_SERVERS`` (the test suite's broker) and
    ``LOCKOUTD_NO_EXTENSIONS`` (the pure-Python windows) are not typos."""
    config = _config(tmp_path, f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("LOCKOUTD_TEST_BOOTSTRAP_SERVERS", "localhost:9092")
    monkeypatch.setenv("LOCKOUTD_NO_EXTENSIONS", "1")
    assert main(["check", "-c", str(config)]) == 0
    assert capsys.readouterr().err == ""


def test_a_match_on_a_field_no_format_produces_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``match: {reasn: password}`` would never fire on the standard events: check says so.
    ``ip_unparsed`` is no typo: every input format gives it to an event whose ip is no address."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: typo\n    match:\n      reasn: password\n      tenant: acme\n"
        "      ip_unparsed: unknown\n"
        "    key: [user_id]\n    threshold: 3\n    window: 5m\n    action: {lock: {}}\n",
        encoding="utf-8",
    )
    config = _config(
        tmp_path, f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\nengine:\n  rule_paths: [{rules}]\n"
    )
    assert main(["check", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ok: 1 rule from 1 file (typo)\n")
    assert captured.err.splitlines() == [
        f"{rules}:4: warning: rules.0.match.reasn: no input format produces this field; "
        "did you mean reason? (an extra field of your own events is fine)",
        f"{rules}:5: warning: rules.0.match.tenant: no input format produces this field "
        "(an extra field of your own events is fine)",
    ]


# Small things an operator notices.


def test_durations_are_printed_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``timeout: 5s``, not ``timeout: 5.0``."""
    config = _config(
        tmp_path,
        f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\n  timeout: 1500ms\n"
        "engine:\n  rule_paths: [RULES]\n  max_event_age: 90m\n",
    )
    assert main(["check", "-c", str(config)]) == 0
    effective = yaml.safe_load(capsys.readouterr().out.split("\n", 2)[2])
    assert effective["zitadel"]["timeout"] == "1.5s"
    assert effective["zitadel"]["retry_timeout"] == "1m"
    assert effective["engine"]["max_event_age"] == "90m"


def test_a_rule_error_says_what_is_expected_in_lockoutds_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No "Input should be a valid dictionary or instance of Action"."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: r\n    key: [user_id]\n    threshold: many\n    window: 5m\n"
        "    action: lock\n",
        encoding="utf-8",
    )
    config = _config(tmp_path, f"engine:\n  rule_paths: [{rules}]\n")
    assert main(["check", "-c", str(config)]) == 1
    assert capsys.readouterr().err.splitlines()[:2] == [
        f"{rules}:4: rules.0.threshold: expected a whole number",
        f"{rules}:6: rules.0.action: expected a mapping: lock: {{}} (or lock: {{duration: 15m}}) "
        "or report: {}",
    ]


def test_check_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``lockoutd check | head -1``: the reader going away is no error and no traceback."""
    config = _config(
        tmp_path, f"zitadel:\n  pat_file: {_pat_file(tmp_path)}\nengine:\n  rule_paths: [RULES]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKOUTD_")}
    env["LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY"] = SCHEDULE_KEY  # the shipped rules need one
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "lockoutd", "check", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the interpreter has even started: every write finds it gone
    _, err_bytes = process.communicate(timeout=60)
    err = err_bytes.decode()
    assert process.returncode == 0
    assert "Traceback" not in err
    assert err == ""


def test_check_names_an_unreadable_schedule_signing_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The schedule signing key file is read by ``check`` as by the daemon; an empty one is an
    error that names the setting and the path, never any content."""
    monkeypatch.delenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY")
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
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", PAT)
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == f"kafka.schedule_signing_key_file: secret file {key_file} is empty\n"


# Temporary locks need a schedule signing key (README, "Temporary locks and escalation").


def _rule(name: str, lock: str, mode: str = "enforce") -> str:
    """One rule of a rule file, locking as ``lock`` says (``{}``: permanently)."""
    return (
        f"  - name: {name}\n    key: [user_id]\n    threshold: 3\n    window: 5m\n"
        f"    action: {{lock: {lock}}}\n    mode: {mode}\n"
    )


PERMANENT = _rule("password-bruteforce", "{}")
TEMPORARY_AND_PERMANENT = (
    "rules:\n"
    + _rule("otp-bruteforce", "{duration: 15m}")
    + PERMANENT
    + _rule("mfa-shadow", "{duration: 1h}", mode="dry-run")
)


def _rules_config(tmp_path: Path, rules_text: str, kafka: str = "") -> Path:
    """A configuration with ``rules_text`` as its only rule file and ``kafka`` (lines of that
    section, indented), if any."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text, encoding="utf-8")
    kafka_section = f"kafka:\n{kafka}" if kafka else ""
    return _config(
        tmp_path,
        f"{kafka_section}zitadel:\n  pat_file: {_pat_file(tmp_path)}\n"
        f"engine:\n  rule_paths: [{rules}]\n",
    )


def test_run_and_check_refuse_temporary_locks_without_a_schedule_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a key, whoever may write the schedule topic could steer lockoutd's unlocks: a
    configuration whose rules lock temporarily is refused, with the rules, the setting, the
    variable and how to make a key named (a rule in dry-run mode is meant to enforce one day)."""
    monkeypatch.delenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY")
    config = _rules_config(tmp_path, TEMPORARY_AND_PERMANENT)
    assert main(["check", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    [problem] = captured.err.splitlines()
    assert problem.startswith("kafka.schedule_signing_key_file: ")
    assert "rules otp-bruteforce, mfa-shadow lock temporarily" in problem
    assert "password-bruteforce" not in problem
    assert "LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY" in problem
    assert "head -c 32 /dev/urandom | base64 > schedule-key" in problem
    assert main(["run", "-c", str(config)]) == 1  # refused before any connection
    assert capsys.readouterr().err.splitlines() == [problem]


def test_permanent_locks_need_no_schedule_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """lockoutd undoes no permanent lock, so rules without a duration run without a key."""
    monkeypatch.delenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY")
    config = _rules_config(tmp_path, "rules:\n" + PERMANENT)
    assert main(["check", "-c", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 rule from 1 file (password-bruteforce)\n")


@pytest.mark.parametrize("where", ["file", "environment"])
def test_a_schedule_signing_key_shorter_than_16_bytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A short key can be guessed; the error names the setting and the length, never the key."""
    short = "fifteen-bytes-k"
    kafka = ""
    if where == "file":
        monkeypatch.delenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY")
        key_file = tmp_path / "schedule-key"
        key_file.write_text(short + "\n", encoding="utf-8")
        kafka = f"  schedule_signing_key_file: {key_file}\n"
        setting = f"kafka.schedule_signing_key_file: the key in {key_file}"
    else:
        monkeypatch.setenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY", short)
        setting = "kafka.schedule_signing_key: LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY"
    config = _rules_config(tmp_path, TEMPORARY_AND_PERMANENT, kafka)
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{setting} is 15 bytes long; use at least 16 ")
    assert short not in err


def test_the_daemon_itself_refuses_temporary_locks_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever starts the daemon without ``run``'s preflight meets the same refusal, before
    anything connects."""
    monkeypatch.delenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY")
    from lockoutd.daemon import Daemon
    from lockoutd.errors import ConfigError
    from lockoutd.rules import load_rules
    from lockoutd.settings import Settings

    settings = Settings(engine={"rule_paths": [REPO / "rules"]})
    with pytest.raises(ConfigError) as refused:
        asyncio.run(Daemon(settings, load_rules(settings.engine.rule_paths)).run())
    [problem] = refused.value.problems
    assert "rule otp-bruteforce locks temporarily" in problem


@pytest.mark.parametrize(
    ("own", "limit_file", "limit", "refused"),
    [
        # cgroup v2 in a container, 300 MiB: 256 MiB of windows is too much
        ("0::/\n", "memory.max", "314572800\n", True),
        ("0::/\n", "memory.max", "536870912\n", False),  # the shipped deployment's 512 MiB
        ("0::/\n", "memory.max", "max\n", False),  # no limit
        # a systemd service: its limit is in its own cgroup, not at the root
        (
            "0::/system.slice/lockoutd.service\n",
            "system.slice/lockoutd.service/memory.max",
            "314572800\n",
            True,
        ),
        # cgroup v1
        ("5:memory:/\n", "memory/memory.limit_in_bytes", "314572800\n", True),
        ("5:memory:/\n", "memory/memory.limit_in_bytes", "9223372036854771712\n", False),
        ("5:memory:/docker/0f3a\n", "memory/memory.limit_in_bytes", "314572800\n", True),
    ],
)
def test_check_refuses_windows_allowed_most_of_the_memory_limit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own: str,
    limit_file: str,
    limit: str,
    refused: bool,
) -> None:
    """The bound on the windows' bytes exists so that a flood cannot get the daemon killed: one
    that leaves the rest of the daemon less than a quarter of its cgroup's memory would."""
    cgroup = tmp_path / "cgroup"
    (cgroup / limit_file).parent.mkdir(parents=True, exist_ok=True)
    (cgroup / limit_file).write_text(limit, encoding="ascii")
    (tmp_path / "own").write_text(own, encoding="utf-8")
    monkeypatch.setattr("lockoutd.preflight.CGROUP", cgroup)
    monkeypatch.setattr("lockoutd.preflight.OWN_CGROUP", tmp_path / "own")
    config = _config(
        tmp_path,
        f"""\
        zitadel:
          pat_file: {_pat_file(tmp_path)}
        engine:
          rule_paths: [RULES]
        """,
    )
    assert main(["check", "-c", str(config)]) == (1 if refused else 0)
    problems = capsys.readouterr().err.splitlines()
    if refused:
        assert problems == [
            "engine.max_window_bytes: 268435456 is more than three quarters of the memory limit "
            "of its cgroup (314572800 bytes): a flood of windows would get the daemon killed "
            "before it forgets any; set it to about half the limit"
        ]
    else:
        assert problems == []
