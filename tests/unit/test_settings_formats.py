"""Settings for input formats, the schedule topic and global dry run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lockoutd.errors import ConfigError
from lockoutd.settings import load_settings


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockoutd.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


def test_the_defaults_read_native_events_and_act(tmp_path: Path) -> None:
    """Without settings, every topic is native, the schedule topic is named and nothing is dry."""
    settings = load_settings(_config(tmp_path, "{}\n"))
    assert settings.kafka.formats == {}
    assert settings.kafka.schedule_topic == "lockoutd.schedule"
    assert settings.engine.dry_run is False


def test_each_consumed_topic_may_name_its_format(tmp_path: Path) -> None:
    """``formats`` maps consumed topics to formats; the others stay native."""
    path = _config(
        tmp_path,
        """\
        kafka:
          topics: [auth.events, zitadel.events, keycloak.events, cloud.events]
          formats:
            zitadel.events: zitadel
            keycloak.events: keycloak
            cloud.events: cloudevents
          schedule_topic: team.lockoutd.schedule
        engine:
          dry_run: true
        """,
    )
    settings = load_settings(path)
    assert settings.kafka.formats == {
        "zitadel.events": "zitadel",
        "keycloak.events": "keycloak",
        "cloud.events": "cloudevents",
    }
    assert settings.kafka.schedule_topic == "team.lockoutd.schedule"
    assert settings.engine.dry_run is True


def test_a_format_for_a_topic_not_consumed_is_an_error(tmp_path: Path) -> None:
    """A format named for a topic lockoutd does not read (a typo, say) is refused at its line."""
    path = _config(
        tmp_path,
        """\
        kafka:
          topics: [zitadel.events]
          formats:
            zitadel.event: zitadel
        """,
    )
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:1: kafka: ")
    assert "formats names topics that are not consumed: zitadel.event" in problem


def test_an_unknown_format_is_an_error(tmp_path: Path) -> None:
    """Only the formats lockoutd knows are accepted, and the problem names the topic."""
    path = _config(tmp_path, "kafka:\n  topics: [a]\n  formats:\n    a: okta\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:4: kafka.formats.a: must be 'native', ")


def test_formats_come_from_the_environment_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LOCKOUTD_KAFKA__FORMATS`` takes a JSON object."""
    monkeypatch.setenv("LOCKOUTD_KAFKA__TOPICS", "auth.events,zitadel.events")
    monkeypatch.setenv("LOCKOUTD_KAFKA__FORMATS", '{"zitadel.events": "zitadel"}')
    monkeypatch.setenv("LOCKOUTD_ENGINE__DRY_RUN", "true")
    settings = load_settings(_config(tmp_path, "{}\n"))
    assert settings.kafka.formats == {"zitadel.events": "zitadel"}
    assert settings.engine.dry_run is True


def test_topics_from_the_environment_must_still_cover_the_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Topics overridden from the environment that drop a formatted topic are an error."""
    monkeypatch.setenv("LOCKOUTD_KAFKA__TOPICS", "auth.events")
    path = _config(
        tmp_path, "kafka:\n  topics: [zitadel.events]\n  formats: {zitadel.events: zitadel}\n"
    )
    (problem,) = _problems(path)
    assert "formats names topics that are not consumed: zitadel.events" in problem


def test_required_signatures_need_a_zitadel_topic(tmp_path: Path) -> None:
    """The signature is ZITADEL's: without a ``zitadel`` topic it would refuse nothing."""
    path = _config(
        tmp_path,
        """\
        kafka:
          topics: [auth.events]
          require_zitadel_signature: true
        ingest:
          signing_key_file: key
        """,
    )
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:3: kafka.require_zitadel_signature: ")
    assert "no topic has format zitadel" in problem


def test_required_signatures_need_the_key(tmp_path: Path) -> None:
    """Without the target's key nothing could be checked: refused, saying where to set it."""
    path = _config(
        tmp_path,
        """\
        kafka:
          topics: [zitadel.events]
          formats: {zitadel.events: zitadel}
          require_zitadel_signature: true
        """,
    )
    (problem,) = _problems(path)
    assert "set ingest.signing_key_file or LOCKOUTD_INGEST__SIGNING_KEY" in problem
