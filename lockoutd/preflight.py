"""What ``lockoutd run`` checks before it connects to anything; ``lockoutd check`` runs the same.

Both commands call :func:`load_for_run`, so that ``check`` cannot say ok to a configuration that
``run`` refuses: the rules, the Kafka TLS and SASL files, the schedule signing key (required
when a rule locks temporarily), and the ZITADEL credential (exactly one, readable, not empty) and
CA bundle, each read by the very functions the daemon uses; and the bound on what the windows
hold against the memory limit of the daemon's cgroup.
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


CGROUP = Path("/sys/fs/cgroup")
"""Where cgroups are mounted: the memory limit is cgroup v2's ``memory.max``, else v1's
``memory.limit_in_bytes``."""
OWN_CGROUP = Path("/proc/self/cgroup")
"""Which cgroup this process is in: a systemd service's limit is in its own, not at the root."""

_WINDOWS_SHARE = 0.75
"""The most of the memory limit the windows may be given: the rest of the daemon (Python, the
Kafka client's buffers, a batch in flight) needs the remainder."""


def memory_limit(cgroup: Path = CGROUP, own: Path = OWN_CGROUP) -> int | None:
    """The memory limit of the cgroup this process runs in, in bytes; None without one."""
    try:
        lines = own.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    candidates: list[Path] = []
    for line in lines:  # "0::/path" for v2, "N:memory,...:/path" for v1's memory controller
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            candidates.append(cgroup / path.lstrip("/") / "memory.max")
        elif "memory" in controllers.split(","):
            candidates.append(cgroup / "memory" / path.lstrip("/") / "memory.limit_in_bytes")
    # In a container the process's own path may not be mounted: its cgroup is the root there.
    candidates += [cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"]
    for candidate in candidates:
        try:
            text = candidate.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        # v2 writes "max" for none, v1 a number near 2**63.
        return int(text) if text.isdigit() and int(text) < 1 << 60 else None
    return None


def window_bound_problems(settings: Settings, limit: int | None) -> list[str]:
    """The bound on the windows' bytes against the memory ``limit``: past it, a flood would get
    the daemon killed (and crash-looping, blind) before the bound forgets a window."""
    wanted = settings.engine.max_window_bytes
    if limit is None or wanted <= limit * _WINDOWS_SHARE:
        return []
    return [
        f"engine.max_window_bytes: {wanted} is more than three quarters of the memory limit of "
        f"its cgroup ({limit} bytes): a flood of windows would get the daemon killed before "
        "it forgets any; set it to about half the limit"
    ]


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
    problems += window_bound_problems(settings, memory_limit(CGROUP, OWN_CGROUP))
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
