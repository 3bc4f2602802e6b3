"""Small builders shared by the unit tests: events, rules and rule sets with readable defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockoutd.decode.event import LOGIN_FAILED, Event
from lockoutd.rules.model import Rule, RuleFile, RuleSet

T0 = 1_700_000_000.0
"""2023-11-14T22:13:20Z: the origin of every test timeline; times are given relative to it."""

MINUTE = 60.0


def event(
    at_minutes: float = 0.0,
    *,
    type: str = LOGIN_FAILED,
    user_id: str | None = "42",
    reason: str | None = "password",
    **fields: Any,
) -> Event:
    """An event ``at_minutes`` after :data:`T0`; unknown keyword arguments become extra fields."""
    standard = {
        name: fields.pop(name)
        for name in ("login_name", "org_id", "ip", "event_id", "user_agent")
        if name in fields
    }
    return Event(
        type=type,
        occurred_at=T0 + at_minutes * MINUTE,
        user_id=user_id,
        reason=reason,
        extra=fields,
        **standard,
    )


def rule(name: str = "password-bruteforce", **overrides: Any) -> Rule:
    """A valid lock rule (3 password failures per user in 10m) with ``overrides`` applied."""
    data: dict[str, Any] = {
        "name": name,
        "match": {"type": LOGIN_FAILED, "reason": ["password"]},
        "key": ["user_id"],
        "threshold": 3,
        "window": "10m",
        "action": {"lock": {}},
    }
    data.update(overrides)
    return Rule.model_validate(data)


def ruleset(*rules: Rule, users: list[str] | None = None, ips: list[str] | None = None) -> RuleSet:
    """The rule set one file holding ``rules`` and the given allowlist would load into."""
    rule_file = RuleFile.model_validate(
        {"rules": [], "allowlist": {"users": users or [], "ips": ips or []}}
    )
    rule_file = rule_file.model_copy(update={"rules": list(rules)})
    return RuleSet.build([(Path("rules/test.yaml"), rule_file)])
