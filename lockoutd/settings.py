"""Daemon settings: one YAML file, every key overridable from the environment.

``LOCKOUTD_<SECTION>__<KEY>`` wins over the file (``LOCKOUTD_KAFKA__BOOTSTRAP_SERVERS=...``).
Secrets are read from files named here, or from the environment, never from the YAML file itself,
and they are masked wherever settings are printed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from lockoutd import settings_sources as sources
from lockoutd.decode.limits import DEFAULT_MAX_CLOCK_SKEW
from lockoutd.durations import Duration, format_duration, parse_duration
from lockoutd.errors import ConfigError
from lockoutd.validation_messages import plain_message
from lockoutd.yamlfile import LineMap, YamlFileError, load_yaml, validation_problems

DEFAULT_CONFIG_PATH = Path("config/lockoutd.yaml")
ENV_PREFIX = "LOCKOUTD_"

# Keys that hold a secret themselves. They may come from the environment, never from the file,
# which is usually world-readable and kept in git.
_SECRET_KEYS = {
    ("zitadel", "pat"),
    ("kafka", "sasl_password"),
    ("kafka", "schedule_signing_key"),
    ("ingest", "signing_key"),
}


def _split_list(value: Any) -> Any:
    # LOCKOUTD_KAFKA__TOPICS=a,b reads naturally; JSON lists work as well. List fields are marked
    # NoDecode, so pydantic-settings hands the raw string over instead of failing on non-JSON.
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("expected a JSON list or comma-separated values") from None
    return [item.strip() for item in value.split(",") if item.strip()]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    topics: Annotated[list[str], NoDecode] = Field(default=["auth.events"], min_length=1)
    group_id: str = Field(default="lockoutd", min_length=1)
    client_id: str = "lockoutd"
    dead_letter_topic: str | None = None
    decisions_topic: str | None = "lockoutd.decisions"
    formats: dict[str, Literal["native", "zitadel", "keycloak", "cloudevents"]] = Field(
        default_factory=dict
    )
    """Input format per topic; topics not named here carry native events."""
    require_zitadel_signature: bool = False
    """Records of the ``zitadel`` topics must carry ZITADEL's signature, as ``lockoutd ingest``
    passes it on, checked with ``ingest.signing_key``; others are dead-lettered
    (``bad_signature``)."""
    schedule_topic: str = "lockoutd.schedule"
    """Temporary locks and their unlock times, shared by every instance (compacted)."""
    schedule_signing_key_file: Path | None = None
    """A key shared by every instance: schedule entries are signed with it (HMAC-SHA256) and
    entries without a valid signature are refused."""
    schedule_signing_key: SecretStr | None = None
    repartition_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    """Rules keyed on something other than the user are counted on internal topics named
    ``<prefix>.<key fields>`` (one per distinct key); unset: ``<group_id>.repartition``."""
    repartition_partitions: int | None = Field(default=None, gt=0)
    """Partitions of an internal topic lockoutd creates; unset: as many as the source topic
    with the most has."""
    checkpoint_topic: str | None = "lockoutd.checkpoints"
    """Window state per consumed partition, so that an assigned partition replays only the
    records after its newest checkpoint (compacted; signed with the schedule signing key, and
    off without one). ``null`` turns checkpoints off: assigned partitions are rewound by the
    longest rule window."""
    checkpoint_interval: Duration = Field(default=60.0, gt=0)
    """At most one checkpoint per partition this often, each written after a commit."""
    checkpoint_chunk_bytes: int = Field(default=524_288, ge=1024, le=1_000_000)
    """The largest record of a checkpoint; a larger (compressed) state is split into records of
    this size. Below the 1 MiB a broker accepts by default."""
    checkpoint_max_bytes: int = Field(default=268_435_456, gt=0)
    """The largest state a checkpoint may hold, uncompressed; a larger one is neither written
    nor read, and its partition is rewound instead."""
    max_event_bytes: int = Field(default=1_048_576, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a new consumer group starts; old evidence read from the start never acts (stale)."""
    max_batch_records: int = Field(default=5000, gt=0)
    """Records taken from the broker in one ``getmany``; one batch is one commit.

    Each batch waits for its lock calls, its audit records and its commit to be answered, about
    7 ms against a local broker: with 1,000 records a batch, a backlog is read at 70 % of a core.
    A fetch returns what has arrived, so at a steady rate batches stay small whatever the bound;
    it matters when catching up, where the locks of a batch go out once all of it is judged
    (5,000 records: about 50 ms)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _formats_name_consumed_topics(self) -> KafkaSettings:
        unknown = sorted(set(self.formats) - set(self.topics))
        if unknown:
            raise ValueError(f"formats names topics that are not consumed: {', '.join(unknown)}")
        return self

    @field_validator("require_zitadel_signature")
    @classmethod
    def _signatures_need_a_zitadel_topic(cls, value: bool, info: ValidationInfo) -> bool:
        formats = info.data.get("formats") or {}
        if value and "zitadel" not in formats.values():
            raise ValueError("no topic has format zitadel, whose records the signature is for")
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        return _split_list(value)


class ZitadelSettings(_Section):
    base_url: str = "http://localhost:8080"
    api: Literal["v1", "v2"] = "v1"
    pat_file: Path | None = None
    pat: SecretStr | None = None
    key_file: Path | None = None
    """Service-account key JSON for the JWT profile grant, instead of a personal access token."""
    audience: str | None = None
    """``aud`` of the JWT assertion; the instance URL (``base_url``) when unset."""
    timeout: Duration = 5.0
    max_concurrency: int = Field(default=16, gt=0)
    ca_file: Path | None = None
    """A private CA bundle; TLS is always verified unless ``verify_tls`` is switched off."""
    verify_tls: bool = True
    retry_attempts: int = Field(default=10, gt=0)
    retry_timeout: Duration = 60.0
    """How long one action may be retried before its outcome is ``failed``."""
    login_name_cache_ttl: Duration = 300.0
    login_name_miss_ttl: Duration = 30.0
    login_name_cache_size: int = Field(default=100_000, gt=0)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class EngineSettings(_Section):
    rule_paths: Annotated[list[Path], NoDecode] = Field(default=[Path("rules")], min_length=1)
    max_event_age: Duration = 3600.0
    """Evidence older than this (by event time, at the moment of deciding) never acts."""
    max_clock_skew: Duration = DEFAULT_MAX_CLOCK_SKEW
    """Events stamped further ahead of the wall clock than this are invalid records."""
    dry_run: bool = False
    """Shadow mode for every rule: decisions are published as ``dry_run`` and nothing is called."""
    drain_timeout: Duration = 20.0
    """On SIGTERM, how long in-flight decisions may take before the daemon exits without them."""
    max_tracked_keys: int = Field(default=1_000_000, gt=0)
    """Windows kept per instance, every rule and partition together; past it the least filled
    are forgotten (README, "Operations")."""
    max_window_bytes: int = Field(default=268_435_456, ge=1_048_576)
    """What those windows may hold, in bytes (keys, times, values and kept events); past it the
    least filled are forgotten as well (README, "Operations")."""
    rule_check_interval: Duration = Field(default=5.0, ge=0)
    """How often the rule files are looked at for a change that reloads them; 0: only SIGHUP."""

    @field_validator("rule_paths", mode="before")
    @classmethod
    def _split_rule_paths(cls, value: Any) -> Any:
        return _split_list(value)


class SafetySettings(_Section):
    max_locks_per_minute: int = Field(default=60, gt=0)
    """A token bucket over all locks of the whole consumer group (each instance holds the share
    of it that its partitions are of all): beyond it, locks are ``suppressed`` and reported."""
    max_locks_per_minute_per_org: int | None = Field(default=None, gt=0)
    """The same, for each organization on its own, counted on the org ZITADEL reports for the
    user (unset: no cap per org); also for the whole group."""


class _Listening(_Section):
    """A section with a ``listen: HOST:PORT`` address."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected HOST:PORT, for example 0.0.0.0:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class MetricsSettings(_Listening):
    listen: str = "0.0.0.0:9464"


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class IngestSettings(_Listening):
    """``lockoutd ingest``: the HTTP endpoint for ZITADEL Actions v2 that publishes to Kafka."""

    listen: str = "0.0.0.0:8088"
    path: str = "/zitadel/events"
    """Where ZITADEL's target posts; other paths answer 404."""
    topic: str = "zitadel.events"
    """Verified bodies are published here, keyed by ``aggregateID``; consume it with format
    ``zitadel``."""
    signing_key_file: Path | None = None
    """The target's signing key, as ZITADEL returned it when the target was created."""
    signing_key: SecretStr | None = None
    max_body_bytes: int = Field(default=65_536, gt=0)
    """Larger bodies are refused with 413 before their signature is checked."""
    tolerance: Duration = 300.0
    """How far the signature's timestamp may be from now, either way."""
    max_connections: int = Field(default=512, gt=0)
    """Open connections at most. A new one beyond it closes the one that has waited longest
    for a request (one still sending its headers, or idle between requests); when every one is
    in the middle of a request, the new one is closed."""
    header_timeout: Duration = 10.0
    """How long a client may take to send a request's headers, from the moment the connection
    opens or the request's first byte arrives."""
    body_timeout: Duration = 10.0
    """How long a client may take to send a request's body once its headers arrived (408)."""
    keepalive_timeout: Duration = 30.0
    """How long a connection may stay idle between two requests."""

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value


class Settings(BaseSettings):
    """Everything the daemon is configured with (README, "Configuration")."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    zitadel: ZitadelSettings = ZitadelSettings()
    engine: EngineSettings = EngineSettings()
    safety: SafetySettings = SafetySettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    ingest: IngestSettings = IngestSettings()

    @model_validator(mode="after")
    def _signatures_need_a_key(self) -> Settings:
        ingest = self.ingest
        if self.kafka.require_zitadel_signature and not (
            ingest.signing_key is not None or ingest.signing_key_file is not None
        ):
            raise ValueError(
                "kafka.require_zitadel_signature needs the key ZITADEL signs with: set "
                "ingest.signing_key_file or LOCKOUTD_INGEST__SIGNING_KEY"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments; the environment is listed first so it wins.
        return (env_settings, init_settings)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by ``**********``, durations
        spelt as they are written (``5s``, ``1h``)."""
        dumped = self.model_dump(mode="json")
        for section, field in type(self).model_fields.items():
            for key, inner in field.annotation.model_fields.items():  # type: ignore[union-attr]
                value = dumped[section][key]
                if value is not None and any(
                    getattr(m, "func", None) is parse_duration for m in inner.metadata
                ):
                    dumped[section][key] = format_duration(value)
        return dumped


@dataclass(frozen=True)
class LoadedSettings:
    """Settings, and the notes worth telling whoever started lockoutd about them."""

    settings: Settings
    notes: list[str]


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from ``path`` (default ``config/lockoutd.yaml``) and the environment.

    An explicitly named file must exist; the default one may be absent, so that a container can be
    configured from the environment alone. Raises :class:`ConfigError` listing every problem.
    """
    return read_settings(path).settings


def read_settings(path: Path | None = None) -> LoadedSettings:
    """:func:`load_settings`, with notes such as a file's credential replaced by the environment.

    Relative paths written in the file are read from its folder; see
    :mod:`lockoutd.settings_sources` for what else the file and the environment mean.
    """
    explicit = path is not None
    path = path if path is not None else DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    line_map = LineMap(str(path))
    if explicit or path.exists():
        try:
            loaded, line_map = load_yaml(path)
        except YamlFileError as exc:
            raise ConfigError(exc.problems) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError([f"{path}:1: the configuration must be a mapping of sections"])
        # A key YAML reads as a number (`1: x`) would not even reach validation as a keyword.
        data = {str(key): value for key, value in (loaded or {}).items()}
    problems = _secret_problems(data, line_map)
    unknown = sources.unknown_variables(os.environ, Settings, ENV_PREFIX)
    problems += unknown.values()
    problems += sources.empty_paths(data, os.environ, Settings, ENV_PREFIX, line_map)
    sources.resolve_relative_paths(data, path.absolute().parent, Settings)
    notes = sources.credentials_from_the_environment(
        data, os.environ, Settings, ENV_PREFIX, str(path)
    )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems += _describe(exc, line_map, skip=set(unknown))
    except SettingsError as exc:  # an environment value pydantic-settings could not even parse
        problems.append(f"environment: {exc}")
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return LoadedSettings(settings, notes)


def _secret_problems(data: dict[str, Any], line_map: LineMap) -> list[str]:
    problems = []
    for section, key in sorted(_SECRET_KEYS):
        if isinstance(data.get(section), dict) and key in data[section]:
            env = f"{ENV_PREFIX}{section}__{key}".upper()
            problems.append(
                f"{line_map.where((section, key))}: {section}.{key}: secrets do not belong in the "
                f"configuration file; use {key}_file or the {env} environment variable"
            )
    return problems


def _describe(exc: ValidationError, line_map: LineMap, *, skip: set[str]) -> list[str]:
    """Name the environment variable for values that came from it, else ``file:line``.

    Variables in ``skip`` name no setting and are reported as such already.
    """
    problems = []
    for problem, error in zip(
        validation_problems(exc, line_map), exc.errors(include_url=False), strict=True
    ):
        env = ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper()
        if env in skip:
            continue
        if env in os.environ:
            problems.append(f"environment {env}: {plain_message(error)}")
        else:
            problems.append(problem)
    return problems
