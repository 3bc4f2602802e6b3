"""The rule file schema (README, "Rules"), validated strictly: unknown keys are errors."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lockoutd.decode.event import LOGIN_FAILED, Event, field_reader
from lockoutd.decode.login_name import normalize_login_name
from lockoutd.durations import Duration

_FAILURE_ONLY = frozenset({"type", "reason"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Escalation(_Strict):
    """Each repeat lock within ``memory`` of the previous one lasts ``factor`` times longer."""

    factor: float = Field(default=2.0, ge=1.0)
    max: Duration
    memory: Duration


class LockAction(_Strict):
    """Lock a user: permanently (until an administrator unlocks), or for ``duration``.

    ``targets: key`` locks the user the key names; ``targets: contributors`` locks every user
    whose failures were counted, for rules keyed on something else (an address, say).
    """

    duration: Duration | None = None
    escalate: Escalation | None = None
    targets: Literal["key", "contributors"] = "key"

    @model_validator(mode="after")
    def _escalation_needs_a_duration(self) -> LockAction:
        if self.escalate is not None:
            if self.duration is None:
                raise ValueError("escalate needs a duration: only temporary locks escalate")
            if self.escalate.max < self.duration:
                raise ValueError("escalate.max is shorter than the duration it escalates")
        return self

    def duration_for(self, strikes: int) -> float | None:
        """How long the lock lasts after ``strikes`` earlier locks within the memory."""
        if self.duration is None:
            return None
        if self.escalate is None or strikes <= 0:
            return self.duration
        # Grown step by step and stopped at the max: factor**strikes would overflow a float
        # long before strikes came near any bound worth checking.
        grown = self.duration
        for _ in range(strikes):
            grown *= self.escalate.factor
            if grown >= self.escalate.max or self.escalate.factor == 1.0:
                break
        return min(grown, self.escalate.max)


class ReportAction(_Strict):
    """Publish a decision and count it; call nothing."""


class Action(_Strict):
    lock: LockAction | None = None
    report: ReportAction | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        chosen = [name for name in ("lock", "report") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one action: lock: {} or report: {}")
        return self

    @property
    def name(self) -> Literal["lock", "report"]:
        return "lock" if self.lock is not None else "report"


Scalar = Annotated[str, Field(min_length=1)]


class Allowlist(_Strict):
    """Users that are never locked and addresses whose events are never counted."""

    users: list[Scalar] = Field(default_factory=list)
    ips: list[Network] = Field(default_factory=list)

    @field_validator("users", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("ips", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        try:
            return [ipaddress.ip_network(str(v), strict=False) for v in value]
        except ValueError as exc:
            raise ValueError(f"not an address or network: {exc}") from None


_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class AllowedSet:
    """One or more allowlists, compiled for lookups on the hot path.

    Entries and the names they are compared with are spelled one way
    (:func:`~lockoutd.decode.login_name.normalize_login_name`). An entry of digits only is taken
    for a user id; any other entry is a login name, which only ZITADEL can tie to a user id.
    """

    users: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allowlists: Iterable[Allowlist]) -> AllowedSet:
        allowlists = list(allowlists)
        return cls(
            users=frozenset(
                normal
                for a in allowlists
                for user in a.users
                if (normal := normalize_login_name(user))
            ),
            networks=tuple(net for a in allowlists for net in a.ips),
        )

    def union(self, other: AllowedSet) -> AllowedSet:
        return AllowedSet(self.users | other.users, self.networks + other.networks)

    @property
    def has_login_names(self) -> bool:
        """True when an entry is a login name: only a read of the user can tell who it spares."""
        return any(not _DIGITS.fullmatch(user) for user in self.users)

    def has_user(self, user_id: str | None, login_name: str | None) -> bool:
        """True when the user a lock would act on is allowlisted by what the event names: its
        id when there is one (the lock acts on the id; a login name beside it is only the
        event's claim, and the names ZITADEL reports for the id are matched with
        :meth:`has_any_login_name`), else the login name the lock resolves."""
        if user_id:
            return normalize_login_name(user_id) in self.users
        return bool(login_name and normalize_login_name(login_name) in self.users)

    def has_any_login_name(self, login_names: Iterable[str]) -> bool:
        """True when one of a user's login names (as ZITADEL reports them) is allowlisted."""
        return any(normalize_login_name(name) in self.users for name in login_names)

    def has_ip(self, ip: str | None) -> bool:
        if not ip or not self.networks:
            return False
        address = ipaddress.ip_address(ip)
        return any(address in network for network in self.networks)


def _text(value: Any) -> Any:
    # Rule values and event fields are compared as text: YAML reads `attempt: 3` as a number and
    # JSON carries `"mfa": true` as a boolean. Booleans are spelled as in JSON.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class Rule(_Strict):
    """One rule: ``threshold`` matching events per ``key`` within ``window`` seconds fire it."""

    name: str = Field(pattern=r"^[a-z0-9-]+$", max_length=64)
    description: str = ""
    match: dict[str, list[Scalar]] = Field(default_factory=dict)
    key: list[str] = Field(min_length=1)
    threshold: int = Field(ge=1, le=10_000, strict=True)
    window: Duration
    reset_on_success: bool = False
    distinct: str | None = None
    """Count distinct values of this field instead of events."""
    action: Action
    mode: Literal["enforce", "dry-run"] = "enforce"
    allowlist: Allowlist = Field(default_factory=lambda: Allowlist())
    """Users never locked and addresses never counted by this rule alone."""

    @field_validator("match", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # A single value is a list of one; numbers and booleans are matched as text.
        if not isinstance(value, dict):
            return value
        return {
            k: [_text(v) for v in vs] if isinstance(vs, list) else [_text(vs)]
            for k, vs in value.items()
        }

    @field_validator("key")
    @classmethod
    def _unique_fields(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a field appears twice in the key")
        return value

    @field_validator("distinct")
    @classmethod
    def _distinct_not_in_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Per key, a field that is part of the key has one value: such a rule could never fire.
        if value is not None and value in (info.data.get("key") or ()):
            raise ValueError(f"distinct counts {value!r}, which is part of the key")
        return value

    @field_validator("action")
    @classmethod
    def _lock_needs_a_user(cls, value: Action, info: ValidationInfo) -> Action:
        # A field validator, so that the error points at the action's line, not the rule's.
        key = info.data.get("key")
        lock = value.lock
        if lock is not None and lock.targets == "key" and key is not None and "user_id" not in key:
            # Every event a user_id window counts names one person (README, "Events"); a window
            # of a login name holds events whose user ids the producer chose, and the one that
            # crossed would pick whom to lock.
            raise ValueError(
                "action lock needs user_id in the key, which makes every event of a window name "
                "the same user; lock every contributor with targets: contributors, or use "
                "action report"
            )
        return value

    def matcher(self) -> EventMatcher:
        return EventMatcher.from_match(self.match)


@dataclass(frozen=True, slots=True)
class EventMatcher:
    """All conditions must hold; each condition is a set of allowed values.

    The engine splits them: the ``type`` and ``reason`` conditions are judged once per kind of
    event (:meth:`admits`), the others (``others``) per event.
    """

    conditions: tuple[tuple[str, frozenset[str]], ...]
    test: Callable[[Event], bool] = field(init=False, repr=False, compare=False)
    """The conditions compiled into one function, which is what calling the matcher runs."""
    others: Callable[[Event], bool] | None = field(init=False, repr=False, compare=False)
    """The conditions on fields other than ``type`` and ``reason``, compiled; None if none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", _compile(self.conditions))
        others = tuple(c for c in self.conditions if c[0] not in _FAILURE_ONLY)
        object.__setattr__(self, "others", _compile(others) if others else None)

    @classmethod
    def from_match(cls, match: dict[str, list[str]]) -> EventMatcher:
        allowed = {name: frozenset(values) for name, values in match.items()}
        # lockoutd counts failures: a rule that names no type means failed logins.
        allowed.setdefault("type", frozenset({LOGIN_FAILED}))
        return cls(tuple(sorted(allowed.items())))

    def __call__(self, event: Event) -> bool:
        return self.test(event)

    def admits(self, type_: str, reason: Any) -> bool:
        """True when an event of this type and reason meets the ``type`` and ``reason``
        conditions (those on other fields are not looked at)."""
        kind = {"type": type_, "reason": reason}
        return all(
            _text_in(kind[name], values)
            for name, values in self.conditions
            if name in _FAILURE_ONLY
        )

    def matches_success(self, event: Event) -> bool:
        """True when ``event`` (a success) concerns what this rule counts.

        A success has no failure ``type`` or ``reason``, so those conditions are left out; the
        others (an org, a client) still have to hold.
        """
        return self.others is None or self.others(event)


def _text_in(value: Any, values: frozenset[str]) -> bool:
    # An extra field may hold a JSON list or object: it matches nothing (and must not raise).
    value = _text(value)
    return isinstance(value, str) and value in values


def _compile(conditions: tuple[tuple[str, frozenset[str]], ...]) -> Callable[[Event], bool]:
    """Whether an event's fields (as :meth:`Event.value_of` reads them) meet ``conditions``, as
    one function that checks them in order.

    Rules with conditions beyond type and reason run this on every event they might count. Each
    field is read through a reader chosen once (:func:`field_reader`); a plain ``str`` (every
    standard field of a decoded event) is looked up directly, anything else goes through
    ``_text_in``.
    Rules name one or two conditions almost always, and those get a function without a loop.
    """
    checks = [(field_reader(name), values) for name, values in conditions]
    if not checks:
        return lambda event: True
    if len(checks) == 1:
        [(read, values)] = checks

        def one(event: Event) -> bool:
            value = read(event)
            return value in values if value.__class__ is str else _text_in(value, values)

        return one
    if len(checks) == 2:
        [(read_1, values_1), (read_2, values_2)] = checks

        def two(event: Event) -> bool:
            value = read_1(event)
            if not (value in values_1 if value.__class__ is str else _text_in(value, values_1)):
                return False
            value = read_2(event)
            return value in values_2 if value.__class__ is str else _text_in(value, values_2)

        return two

    def every(event: Event) -> bool:
        for read, values in checks:
            value = read(event)
            if not (value in values if value.__class__ is str else _text_in(value, values)):
                return False
        return True

    return every


class RuleFile(_Strict):
    """The top level of one file in the rule paths."""

    rules: list[Rule] = Field(default_factory=list)
    allowlist: Allowlist = Field(default_factory=Allowlist)


@dataclass(frozen=True)
class RuleSet:
    """Every loaded rule and the merged global allowlist, ready for the engine."""

    rules: tuple[Rule, ...]
    allowed: AllowedSet = AllowedSet()
    files: tuple[Path, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """``file:line: warning: ...`` for what is legal but likely a mistake (``lockoutd check``)."""
    _allowed_by_rule: dict[str, AllowedSet] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(
        cls, files: Iterable[tuple[Path, RuleFile]], *, warnings: Iterable[str] = ()
    ) -> RuleSet:
        files = list(files)
        return cls(
            rules=tuple(rule for _, f in files for rule in f.rules),
            allowed=AllowedSet.of(f.allowlist for _, f in files),
            files=tuple(path for path, _ in files),
            warnings=tuple(warnings),
        )

    def allowed_for(self, rule: Rule) -> AllowedSet:
        """The users ``rule`` never locks: the global allowlist and the rule's own, together."""
        allowed = self._allowed_by_rule.get(rule.name)
        if allowed is None:
            allowed = self.allowed.union(AllowedSet.of([rule.allowlist]))
            self._allowed_by_rule[rule.name] = allowed
        return allowed

    def user_allowlisted(self, user_id: str | None, login_name: str | None) -> bool:
        return self.allowed.has_user(user_id, login_name)

    def ip_allowlisted(self, ip: str | None) -> bool:
        return self.allowed.has_ip(ip)
