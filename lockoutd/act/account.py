"""Who lockoutd is in ZITADEL, and whether it may lock: asked once, before anyone is locked.

``lockoutd check --connect`` prints these findings; the daemon asks the same at start, so that a
token ZITADEL rejects, or an account without the permission to lock, stops it at once rather
than at the first attack. Only ZITADEL's Auth API is called (the caller's own user, memberships
and permissions); no user is read or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lockoutd.act.answers import answer_json
from lockoutd.act.zitadel import ZitadelClient, read_error
from lockoutd.errors import UnexpectedAnswer
from lockoutd.settings import ZitadelSettings

_ME = "/auth/v1/users/me"
_MEMBERSHIPS = "/auth/v1/memberships/me/_search"
_PERMISSIONS = "/auth/v1/permissions/zitadel/me/_search"
# Org memberships asked about one by one; an account in more orgs than this is reported on these.
_MAX_ORGS = 20
_GRANT = (
    "grant the service account IAM_USER_MANAGER on the instance, or ORG_USER_MANAGER in each "
    "org whose users it locks"
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of ``check --connect``: ``ok: ...`` or ``FAIL: what to grant or fix``."""

    ok: bool
    text: str

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'}: {self.text}"


def needed_permissions(settings: ZitadelSettings) -> tuple[str, ...]:
    """What locking needs: to lock and unlock, to read a user's state and find login names."""
    needed = ("user.write", "user.read")
    # The v1 API finds a login name outside the context org only with the global read.
    return (*needed, "user.global.read") if settings.api == "v1" else needed


async def account_findings(client: ZitadelClient, settings: ZitadelSettings) -> list[Finding]:
    """Whom ZITADEL authenticated, and whether that account holds what locking needs.

    A rejected token raises :class:`~lockoutd.errors.ZitadelConfigError` and an unreachable
    ZITADEL :class:`~lockoutd.errors.ZitadelUnavailable`, as every call does.
    """
    me = await _json(client, "whoami", "GET", _ME)
    found = me.get("user")
    user: dict[str, Any] = found if isinstance(found, dict) else {}
    name = user.get("preferredLoginName") or user.get("userName") or "?"
    own_org = str((user.get("details") or {}).get("resourceOwner") or "") or None
    findings = [
        Finding(
            True,
            f"ZITADEL at {settings.base_url} authenticated as {name} "
            f"(user {user.get('id', '?')}, org {own_org or '?'})",
        )
    ]
    memberships = (await _json(client, "memberships", "POST", _MEMBERSHIPS, body={})).get(
        "result"
    ) or []
    if not memberships:
        findings.append(Finding(False, f"{name} has no membership in ZITADEL: {_GRANT}"))
        return findings
    shown = "; ".join(_describe(m) for m in memberships)
    needed = needed_permissions(settings)
    org_ids = [str(m["orgId"]) for m in memberships if isinstance(m, dict) and m.get("orgId")]
    instance_wide = any(isinstance(m, dict) and m.get("iam") for m in memberships)
    if instance_wide:
        # Without x-zitadel-orgid the context is the account's own org: instance roles apply
        # there as in every org, so an org role elsewhere cannot be what grants them.
        missing = _missing(needed, await _permissions(client, None))
        if not missing and own_org not in org_ids:
            findings.append(
                Finding(True, f"holds {', '.join(needed)} on the whole instance ({shown})")
            )
            return findings
    full = [
        org for org in org_ids[:_MAX_ORGS] if not _missing(needed, await _permissions(client, org))
    ]
    if full:
        findings.append(
            Finding(
                True,
                f"holds {', '.join(needed)} in org {', '.join(full)} only ({shown}); a lock in "
                "other orgs is refused and fails that decision (no_permission): grant "
                "IAM_USER_MANAGER to lock in every org",
            )
        )
        return findings
    missing = _missing(needed, await _permissions(client, org_ids[0] if org_ids else None))
    findings.append(
        Finding(
            False, f"{name} lacks {', '.join(missing) or ', '.join(needed)} ({shown}): {_GRANT}"
        )
    )
    return findings


async def _permissions(client: ZitadelClient, org_id: str | None) -> set[str]:
    answer = await _json(client, "permissions", "POST", _PERMISSIONS, org_id=org_id, body={})
    result = answer.get("result") or []
    return {str(permission) for permission in result}


def _missing(needed: tuple[str, ...], granted: set[str]) -> list[str]:
    return [permission for permission in needed if permission not in granted]


def _describe(membership: Any) -> str:
    if not isinstance(membership, dict):
        return "?"
    roles = ", ".join(str(role) for role in membership.get("roles") or []) or "no role"
    if membership.get("iam"):
        return f"instance: {roles}"
    if membership.get("orgId"):
        return f"org {membership['orgId']}: {roles}"
    return f"project: {roles}"


async def _json(
    client: ZitadelClient,
    operation: str,
    method: str,
    path: str,
    *,
    org_id: str | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response = await client.ask(operation, method, path, org_id=org_id, body=body)
    if not response.is_success:
        answer = read_error(response.status_code, response.content)
        raise UnexpectedAnswer(
            f"ZITADEL answered {operation} ({path}) with {answer.describe()}: check "
            "zitadel.base_url names the instance, not a proxy or another service"
        )
    try:
        decoded = answer_json(response.content)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise UnexpectedAnswer(f"ZITADEL's answer to {operation} ({path}) is not a JSON object")
    return decoded
