"""The README's configuration table is generated from the settings model and kept in step with it.

``UPDATE_README=1 pytest tests/docs`` rewrites the table between its markers; otherwise a table
that differs from the model fails the test with the lines to change.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import itertools
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from lockoutd.durations import format_duration, parse_duration
from lockoutd.settings import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- configuration table: generated from lockoutd/settings.py, see tests/docs -->"
END = "<!-- end of the configuration table -->"

# What each key means, where the model's own attribute docstring does not say it briefly.
MEANINGS = {
    "kafka.bootstrap_servers": "the cluster, `host:port[,host:port...]`",
    "kafka.topics": "topics to consume (`a,b` in the environment)",
    "kafka.group_id": "consumer group; instances with one group share the partitions",
    "kafka.client_id": "the client id the broker sees",
    "kafka.dead_letter_topic": "where invalid records go, unchanged (cut down when too large)",
    "kafka.decisions_topic": "the audit topic",
    "kafka.formats": "input format per topic, e.g. `{zitadel.events: zitadel}`; others are native",
    "kafka.repartition_prefix": "internal topics of rules keyed on something other than the "
    "user are `<prefix>.<key fields>`; unset: `<group_id>.repartition` (see Operations, "
    '"Scaling out")',
    "kafka.repartition_partitions": "partitions of an internal topic lockoutd creates; unset: as "
    "many as the source topic with the most",
    "kafka.schedule_topic": "temporary locks and their unlock times, shared by all instances "
    "(compacted)",
    "kafka.max_event_bytes": "larger records are invalid",
    "kafka.auto_offset_reset": "where a new group starts (old evidence is `stale`)",
    "kafka.max_batch_records": "records per fetch; one batch is one commit",
    "kafka.security_protocol": "TLS and SASL, see "
    "[Kafka connection security](#kafka-connection-security)",
    "kafka.sasl_mechanism": "SASL mechanism",
    "kafka.sasl_username": "SASL user",
    "kafka.sasl_password_file": "file holding the SASL password",
    "kafka.sasl_password": "the SASL password itself",
    "kafka.schedule_signing_key_file": (
        "file holding the key every instance signs schedule entries with (HMAC-SHA256, at "
        "least 16 bytes), required while a rule locks temporarily; entries without a valid "
        "signature are refused"
    ),
    "kafka.schedule_signing_key": "the schedule signing key itself",
    "kafka.require_zitadel_signature": "records of the `zitadel` topics must carry ZITADEL's "
    "signature, as `lockoutd ingest` passes it on, checked with `ingest.signing_key`; others are "
    "dead-lettered as `bad_signature` (see [Ingesting from ZITADEL](#ingesting-from-zitadel))",
    "kafka.checkpoint_topic": "window state per consumed partition, so an assigned partition "
    "replays only the records after its checkpoint (compacted; signed with the schedule signing "
    "key, off without one; `null`: off), see [Operations](#operations)",
    "kafka.checkpoint_interval": "at most one checkpoint per partition this often, each after a "
    "commit",
    "kafka.checkpoint_chunk_bytes": "the largest record of a checkpoint; a larger compressed "
    "state is split into records of this size (below a broker's default 1 MiB)",
    "kafka.checkpoint_max_bytes": "the largest state a checkpoint may hold, uncompressed; a "
    "larger one is neither written nor read (the partition is rewound)",
    "kafka.ssl_cafile": "CA bundle for the broker's certificate (default: the system's CAs)",
    "kafka.ssl_certfile": "client certificate (PEM), for brokers that ask for one",
    "kafka.ssl_keyfile": "the client certificate's key (PEM)",
    "zitadel.base_url": "the instance",
    "zitadel.api": "`v1`: the management API, with the org header; `v2`: the user service",
    "zitadel.pat_file": "file holding the service account's personal access token",
    "zitadel.pat": "the personal access token itself",
    "zitadel.key_file": "service-account key JSON, for the JWT profile grant instead of a PAT",
    "zitadel.audience": "`aud` of the JWT assertion (default: `base_url`)",
    "zitadel.timeout": "per request: the whole answer, body included, within it",
    "zitadel.max_concurrency": "requests in flight",
    "zitadel.ca_file": "a private CA bundle for ZITADEL's certificate",
    "zitadel.verify_tls": "verify ZITADEL's certificate (switch off only for a lab)",
    "zitadel.retry_attempts": "attempts for 429, 5xx and network errors, with backoff",
    "zitadel.retry_timeout": "how long one action is retried before its outcome is `failed`",
    "zitadel.login_name_cache_ttl": "how long a resolved login name is remembered",
    "zitadel.login_name_miss_ttl": "how long a login name that did not resolve is remembered",
    "zitadel.login_name_cache_size": "login names remembered at most",
    "engine.rule_paths": "rule files or folders (`a,b` in the environment)",
    "engine.max_event_age": "older evidence is counted but never acts",
    "engine.max_clock_skew": "events stamped further ahead of the clock are `future_time`, invalid",
    "engine.dry_run": "shadow mode for every rule: decide and report, call nothing",
    "engine.drain_timeout": "how long shutdown waits for the batches in flight",
    "engine.max_tracked_keys": "windows kept per instance, all rules and partitions together "
    "(compiled: about 110 to 150 bytes each, pure Python: 270 to 540; more for windows a "
    "producer fills on purpose); past it the least "
    "filled are forgotten, see "
    "[Operations](#operations)",
    "engine.max_window_bytes": "bytes those windows may hold, keys, times, values and kept "
    "events together (256 MiB); past it the least filled are forgotten as well, see "
    "[Operations](#operations)",
    "safety.max_locks_per_minute": "a token bucket over all locks of the whole group (every "
    "instance of one `group_id` together); beyond it locks are `suppressed`",
    "safety.max_locks_per_minute_per_org": (
        "the same for each organization, the one ZITADEL reports for the user, not the event's "
        "claim, also for the whole group (unset: no cap per org)"
    ),
    "engine.rule_check_interval": "how often rule files are checked for a change that reloads "
    "them (0: only on SIGHUP)",
    "metrics.listen": "`/metrics`, `/healthz`, `/readyz`",
    "log.level": "log level",
    "log.format": "`console` for humans",
    "ingest.listen": "where `lockoutd ingest` listens",
    "ingest.path": "the path ZITADEL's target posts to",
    "ingest.topic": "where verified bodies are published, keyed by `aggregateID`",
    "ingest.signing_key_file": "file holding the target's signing key (also read by a daemon "
    "with `kafka.require_zitadel_signature`)",
    "ingest.signing_key": "the signing key itself",
    "ingest.max_body_bytes": "larger bodies are refused with 413",
    "ingest.tolerance": "how far the signature's timestamp may be from now",
    "ingest.max_connections": "open connections at most; beyond it the one that has waited "
    "longest for a request is closed (none waiting: the new one is)",
    "ingest.header_timeout": "time to send a request's headers, from the connection's opening "
    "or the request's first byte",
    "ingest.body_timeout": "time to send a request's body once its headers arrived (else 408)",
    "ingest.keepalive_timeout": "how long a connection may stay idle between two requests",
}


def _attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The docstrings written under the fields of ``model``, by field name."""
    tree = ast.parse(inspect.getsource(model))
    body = tree.body[0].body  # type: ignore[attr-defined]
    found = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            found[field.target.id] = " ".join(after.value.value.split())
    return found


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(value) for value in typing.get_args(annotation)]
    return [choice for arg in typing.get_args(annotation) for choice in _choices(arg)]


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _default(value: Any, *, duration: bool) -> str:
    if value is None:
        return "none"
    if duration:
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(str(item) for item in value)}]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def configuration_table() -> str:
    """The Markdown table of every setting: key, default and meaning."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    missing = []
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        docstrings = _attribute_docstrings(model)
        for name, field in model.model_fields.items():
            key = f"{section}.{name}"
            meaning = MEANINGS.get(key) or docstrings.get(name, "").split(". ")[0].rstrip(".")
            if not meaning:
                missing.append(key)
                continue
            duration = any(getattr(m, "func", None) is parse_duration for m in field.metadata)
            choices = _choices(field.annotation)
            if choices and not all(f"`{choice}`" in meaning for choice in choices):
                meaning += "; one of " + ", ".join(f"`{choice}`" for choice in choices)
            if _is_secret(field.annotation):
                env = f"{ENV_PREFIX}{section}__{name}".upper()
                meaning += f"; from the environment only, as `{env}`"
            default = _default(field.get_default(call_default_factory=True), duration=duration)
            escaped = meaning.replace("|", "\\|")
            rows.append(f"| `{key}` | {default} | {escaped} |")
    assert not missing, f"describe these settings in MEANINGS or with a docstring: {missing}"
    return "\n".join(rows)


def test_every_meaning_names_a_setting_that_exists() -> None:
    """No description is left behind for a setting that was renamed or removed."""
    keys = {
        f"{section}.{name}"
        for section, field in Settings.model_fields.items()
        for name in field.annotation.model_fields  # type: ignore[union-attr]
    }
    assert set(MEANINGS) - keys == set()


def test_the_readme_configuration_table_matches_the_settings_model() -> None:
    """The table between the README's markers is the one the settings model generates."""
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text, f"the README lacks the marker {BEGIN!r}"
    assert END in text, f"the README lacks the marker {END!r}"
    before, rest = text.split(BEGIN, 1)
    current, after = rest.split(END, 1)
    wanted = "\n" + configuration_table() + "\n"
    if current != wanted and os.environ.get("UPDATE_README") == "1":
        README.write_text(before + BEGIN + wanted + END + after, encoding="utf-8")
        return
    diff = "\n".join(
        difflib.unified_diff(current.splitlines(), wanted.splitlines(), "README", "model", n=0)
    )
    assert current == wanted, f"UPDATE_README=1 pytest tests/docs rewrites the table:\n{diff}"
