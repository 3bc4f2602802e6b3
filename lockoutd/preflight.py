"""What ``lockoutd run`` checks before it connects to anything; ``lockoutd check`` runs the same.

Both commands call :func:`load_for_run`, so that ``check`` cannot say ok to a configuration that
``run`` refuses: the rules, the Kafka TLS and SASL files, the schedule signing key (required
when a rule locks temporarily), and the ZITADEL credential (exactly one, readable, not empty) and
CA bundle, each read by the very functions the daemon uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from lockoutd.errors import ConfigError, ZitadelConfigError
from lockoutd.rules import RuleSet, load_rules
from lockoutd.settings import LoadedSettings, Settings, read_settings

if TYPE_CHECKING:
    import httpx


async def _never_called(form: SecretStr) -> httpx.Response:  # pragma: no cover - never awaited
    raise AssertionError("the preflight check must not request a token")


def startup_problems(settings: Settings, rules: RuleSet) -> list[str]:
    """Every problem ``run`` would stop on before its first connection, without connecting."""
    # Imported here: the Kafka and HTTP clients are only paid for by the commands that use them.
    from lockoutd.act.zitadel import tls_verification
    from lockoutd.act.zitadel_auth import token_source
    from lockoutd.source.kafka import connection_options
    from lockoutd.source.schedule_seal import schedule_seal, unsigned_temporary_locks

    problems: list[str] = []
    # TLS files, SASL users and password files, and the schedule signing key, each read as
    # the daemon reads it.
    try:
        connection_options(settings.kafka)
    except ConfigError as error:
        problems += error.problems
    try:
        problems += unsigned_temporary_locks(rules.rules, schedule_seal(settings.kafka))
    except ConfigError as error:
        problems += error.problems
    for check in (
        lambda: token_source(settings.zitadel, request_token=_never_called),
        lambda: tls_verification(settings.zitadel),
    ):
        try:
            check()
        except ZitadelConfigError as error:
            problems.append(str(error))
    return problems


def load_for_run(config: Path | None) -> tuple[LoadedSettings, RuleSet]:
    """The settings and rules ``run`` starts with; :class:`ConfigError` lists every problem."""
    loaded = read_settings(config)
    problems: list[str] = []
    rules = RuleSet(rules=())
    try:
        rules = load_rules(loaded.settings.engine.rule_paths)
    except ConfigError as error:
        problems += error.problems
    problems += startup_problems(loaded.settings, rules)
    if problems:
        raise ConfigError(problems)
    return loaded, rules
