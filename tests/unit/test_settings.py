"""Settings (README, "Configuration"): defaults, the YAML file, environment overrides, errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lockoutd.errors import ConfigError
from lockoutd.settings import DEFAULT_CONFIG_PATH, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "pat-that-must-never-be-shown"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockoutd.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the default file, every setting has its documented default."""
    monkeypatch.chdir(tmp_path)
    assert not DEFAULT_CONFIG_PATH.exists()
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "localhost:9092"
    assert settings.kafka.topics == ["auth.events"]
    assert settings.kafka.group_id == "lockoutd"
    assert settings.kafka.max_event_bytes == 1_048_576
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.zitadel.base_url == "http://localhost:8080"
    assert settings.zitadel.api == "v1"
    assert settings.zitadel.timeout == 5.0
    assert settings.zitadel.max_concurrency == 16
    assert settings.engine.rule_paths == [Path("rules")]
    assert settings.engine.max_event_age == 3600.0
    assert settings.safety.max_locks_per_minute == 60
    listen = ("0.0.0.0", 9464)  # noqa: S104 - the documented default, not a bind
    assert (settings.metrics.host, settings.metrics.port) == listen
    assert (settings.log.level, settings.log.format) == ("info", "json")


def test_the_default_file_is_read_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``config/lockoutd.yaml`` in the working directory is read without being named."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "lockoutd.yaml").write_text("kafka:\n  group_id: from-default\n")
    assert load_settings().kafka.group_id == "from-default"


def test_the_shipped_example_configuration_loads() -> None:
    """``config/lockoutd.yaml`` in the repository is valid."""
    settings = load_settings(REPO / "config" / "lockoutd.yaml")
    assert settings.kafka.dead_letter_topic == "auth.events.dlq"
    assert settings.zitadel.pat_file == Path("/run/secrets/zitadel-pat")


def test_values_come_from_the_yaml_file(tmp_path: Path) -> None:
    """Values written in the file replace the defaults, durations in their written units."""
    path = _config(
        tmp_path,
        """\
        kafka:
          bootstrap_servers: kafka-0:9092,kafka-1:9092
          topics: [auth.events, zitadel.events]
          dead_letter_topic: auth.events.dlq
        zitadel:
          base_url: https://auth.example.com/
          api: v2
          timeout: 1500ms
        engine:
          rule_paths: [/etc/lockoutd/rules, extra.yaml]
          max_event_age: 30m
        safety:
          max_locks_per_minute: 5
        log:
          level: DEBUG
          format: console
        """,
    )
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert settings.kafka.topics == ["auth.events", "zitadel.events"]
    assert settings.kafka.dead_letter_topic == "auth.events.dlq"
    assert settings.zitadel.base_url == "https://auth.example.com"
    assert (settings.zitadel.api, settings.zitadel.timeout) == ("v2", 1.5)
    # A relative path in the file is read from the file's folder.
    assert settings.engine.rule_paths == [Path("/etc/lockoutd/rules"), tmp_path / "extra.yaml"]
    assert settings.engine.max_event_age == 1800.0
    assert settings.safety.max_locks_per_minute == 5
    assert (settings.log.level, settings.log.format) == ("debug", "console")


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    """A file with only comments is a valid configuration of defaults."""
    assert load_settings(_config(tmp_path, "# nothing\n")) == Settings()


def test_the_environment_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LOCKOUTD_<SECTION>__<KEY>`` replaces the file's value and leaves its neighbours alone."""
    path = _config(
        tmp_path,
        """\
        kafka:
          bootstrap_servers: file:9092
          group_id: from-file
        engine:
          max_event_age: 1h
        """,
    )
    monkeypatch.setenv("LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("LOCKOUTD_ENGINE__MAX_EVENT_AGE", "2h")
    monkeypatch.setenv("LOCKOUTD_SAFETY__MAX_LOCKS_PER_MINUTE", "7")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.group_id == "from-file"
    assert settings.engine.max_event_age == 7200.0
    assert settings.safety.max_locks_per_minute == 7


@pytest.mark.parametrize(
    ("value", "topics"),
    [
        ("auth.events,zitadel.events", ["auth.events", "zitadel.events"]),
        (" auth.events , zitadel.events ,", ["auth.events", "zitadel.events"]),
        ("auth.events", ["auth.events"]),
        ('["auth.events", "zitadel.events"]', ["auth.events", "zitadel.events"]),
    ],
)
def test_topics_from_the_environment_are_comma_separated_or_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, topics: list[str]
) -> None:
    """``LOCKOUTD_KAFKA__TOPICS=a,b`` and a JSON list both name two topics."""
    monkeypatch.setenv("LOCKOUTD_KAFKA__TOPICS", value)
    assert load_settings(_config(tmp_path, "kafka:\n  topics: [other]\n")).kafka.topics == topics


def test_rule_paths_from_the_environment_are_comma_separated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LOCKOUTD_ENGINE__RULE_PATHS=a,b`` names two rule paths."""
    monkeypatch.setenv("LOCKOUTD_ENGINE__RULE_PATHS", "/etc/lockoutd/rules,local.yaml")
    settings = load_settings(_config(tmp_path, ""))
    assert settings.engine.rule_paths == [Path("/etc/lockoutd/rules"), Path("local.yaml")]


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """A file named with ``-c`` that does not exist is reported, not silently replaced."""
    missing = tmp_path / "nope.yaml"
    (problem,) = _problems(missing)
    assert problem.startswith(f"{missing}:1: cannot read file")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "kafka:\n  group_id: x\n  max_event_bytes: 0\n",
            "3: kafka.max_event_bytes: must be greater than 0",
            id="value out of range",
        ),
        pytest.param(
            "kafka:\n  bootstrap_server: x:9092\n",
            "2: kafka.bootstrap_server: unknown key",
            id="unknown key in a section",
        ),
        pytest.param("kafak:\n  topics: [a]\n", "1: kafak: unknown key", id="unknown section"),
        pytest.param(
            "log:\n  level: info\n  format: xml\n",
            "3: log.format: must be 'json' or 'console'",
            id="not one of the choices",
        ),
        pytest.param(
            "zitadel:\n  base_url: auth.example.com\n",
            "2: zitadel.base_url: must start with http:// or https://",
            id="URL without scheme",
        ),
        pytest.param(
            "engine:\n  rule_paths: [rules]\n  max_event_age: forever\n",
            "3: engine.max_event_age: expected a duration",
            id="bad duration",
        ),
        pytest.param(
            "metrics:\n  listen: 9464\n",
            "2: metrics.listen: expected text",
            id="listen without host",
        ),
        pytest.param("kafka: [a, b]\n", "1: kafka: expected a mapping (key: value)", id="list"),
        pytest.param("- kafka\n", "1: the configuration must be a mapping", id="top level list"),
        pytest.param("kafka:\n  topics: [a\n", "3: invalid YAML", id="invalid YAML"),
        pytest.param("1: x\n", "1: 1: unknown key", id="a number as a key"),
    ],
)
def test_a_problem_names_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    """A bad value in the file is reported as ``file:line: setting: message``."""
    path = _config(tmp_path, text)
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:{expected}")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Two bad values in two sections give two problems in one error."""
    path = _config(tmp_path, "kafka:\n  max_event_bytes: -1\nsafety:\n  max_locks_per_minute: 0\n")
    assert [problem.split(": ")[0] for problem in _problems(path)] == [f"{path}:2", f"{path}:4"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "LOCKOUTD_KAFKA__MAX_EVENT_BYTES",
            "lots",
            "environment LOCKOUTD_KAFKA__MAX_EVENT_BYTES: expected a whole number",
        ),
        (
            "LOCKOUTD_ENGINE__MAX_EVENT_AGE",
            "-5m",
            "environment LOCKOUTD_ENGINE__MAX_EVENT_AGE: expected a duration",
        ),
        (
            "LOCKOUTD_KAFKA__BOOTSTRAP",
            "x:9092",
            "environment LOCKOUTD_KAFKA__BOOTSTRAP: not a lockoutd setting; did you mean "
            "LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS?",
        ),
        (
            "LOCKOUTD_KAFKA__TOPICS",
            '["unterminated',
            "environment LOCKOUTD_KAFKA__TOPICS: expected a JSON list or comma-separated values",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """A bad value from the environment is reported with the variable's name, not a file line."""
    monkeypatch.setenv(name, value)
    (problem,) = _problems(_config(tmp_path, "kafka:\n  max_event_bytes: 1000\n"))
    assert problem.startswith(expected)


def test_a_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    """``zitadel.pat`` written in the file is an error that does not repeat the secret."""
    path = _config(tmp_path, f"zitadel:\n  base_url: http://z:8080\n  pat: {SECRET}\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:3: zitadel.pat: secrets do not belong in the configuration")
    assert "LOCKOUTD_ZITADEL__PAT" in problem
    assert SECRET not in problem


def test_a_kafka_password_in_the_file_is_refused(tmp_path: Path) -> None:
    """``kafka.sasl_password`` written in the file is refused the same way."""
    path = _config(tmp_path, f"kafka:\n  sasl_password: {SECRET}\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:2: kafka.sasl_password: secrets do not belong")
    assert SECRET not in problem


def test_a_secret_from_the_environment_is_accepted_and_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token may come from the environment; ``masked()`` never shows it."""
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", SECRET)
    monkeypatch.setenv("LOCKOUTD_KAFKA__SASL_PASSWORD", SECRET)
    settings = load_settings(_config(tmp_path, ""))
    assert settings.zitadel.pat is not None
    assert settings.zitadel.pat.get_secret_value() == SECRET
    masked = settings.masked()
    assert SECRET not in json.dumps(masked)
    assert masked["zitadel"]["pat"] == "**********"
    assert masked["kafka"]["sasl_password"] == "**********"
    assert SECRET not in repr(settings)


def test_masked_settings_are_plain_data(tmp_path: Path) -> None:
    """``masked()`` is JSON-ready: paths are plain values, durations spelt as written."""
    settings = load_settings(_config(tmp_path, "zitadel:\n  pat_file: /run/secrets/pat\n"))
    masked = settings.masked()
    assert masked["zitadel"]["pat_file"] == "/run/secrets/pat"
    assert masked["engine"]["max_event_age"] == "1h"
    assert json.loads(json.dumps(masked)) == masked


def test_settings_are_frozen() -> None:
    """Settings cannot be changed once loaded."""
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.safety.max_locks_per_minute = 1_000_000


def test_relative_paths_in_the_file_are_read_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path setting written in the file, as a list or as ``a,b``, is read from its folder;
    absolute paths and paths from the environment are left as they are."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "lockoutd.yaml"
    path.write_text(
        "zitadel:\n  pat_file: secrets/pat\n  ca_file: /etc/ssl/ca.pem\n"
        "engine:\n  rule_paths: rules,more/rules.yaml\n"
        "ingest:\n  signing_key_file: ../signing-key\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("LOCKOUTD_KAFKA__SSL_CAFILE", "kafka-ca.pem")
    monkeypatch.setenv("LOCKOUTD_KAFKA__SECURITY_PROTOCOL", "SSL")
    settings = load_settings(path)
    assert settings.zitadel.pat_file == folder / "secrets/pat"
    assert settings.zitadel.ca_file == Path("/etc/ssl/ca.pem")
    assert settings.engine.rule_paths == [folder / "rules", folder / "more/rules.yaml"]
    assert settings.ingest.signing_key_file == folder / "../signing-key"
    assert settings.kafka.ssl_cafile == Path("kafka-ca.pem")


def test_an_empty_path_in_the_file_is_an_error(tmp_path: Path) -> None:
    """``pat_file: ""`` would be the working directory; it is refused where it is written."""
    path = _config(tmp_path, 'zitadel:\n  pat_file: ""\n')
    assert _problems(path) == [
        f"{path}:2: zitadel.pat_file: is empty; name a file, or leave the key out"
    ]
