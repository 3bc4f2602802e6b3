"""Who a user is, as ZITADEL reports it: the org it belongs to and every login name it has.

A decision acts on a user id. Allowlists may name the user by any of its login names, and the
per-org safety cap must count the org the user really belongs to, not the org an event claims
(README, "Rules" and "Mass-lockout safety"). Both come from one read of the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UserFacts:
    user_id: str
    org_id: str | None
    """``details.resourceOwner``: the org the user belongs to (None if ZITADEL left it out)."""
    login_names: frozenset[str]
    """``loginNames`` and ``preferredLoginName``, as ZITADEL spells them."""


def user_facts(user_id: str, body: Any) -> UserFacts:
    """The facts in a v1 or v2 "get user by id" answer; ValueError when it has no ``user``.

    v1: ``{"user": {"details": {"resourceOwner"}, "loginNames", "preferredLoginName"}}``; v2 adds
    a top-level ``details`` too.
    """
    if not isinstance(body, dict) or not isinstance(body.get("user"), dict):
        raise ValueError("the answer holds no user object")
    user: dict[str, Any] = body["user"]
    names = user.get("loginNames")
    login_names = (
        {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()
    )
    preferred = user.get("preferredLoginName")
    if isinstance(preferred, str):
        login_names.add(preferred)
    org_id = _resource_owner(user) or _resource_owner(body)
    return UserFacts(user_id, org_id, frozenset(name for name in login_names if name))


def _resource_owner(holder: dict[str, Any]) -> str | None:
    details = holder.get("details")
    owner = details.get("resourceOwner") if isinstance(details, dict) else None
    return owner if isinstance(owner, str) and owner else None
