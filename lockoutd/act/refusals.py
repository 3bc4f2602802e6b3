"""Whom ZITADEL refuses: lockoutd itself, or what one event claims.

An event names an org (sent as ``x-zitadel-orgid``) and a user, and anyone who can write a record
can name any. So a refusal stops the daemon only when it is about lockoutd's own setup::

    answer                                    the service account, in its    outcome
                                              own org or on the instance
    401 (after one new token)                 -                              stop (the token)
    403 AUTH-Bs7Ds (no such org)              -                              failed: unknown_org
    403 AUTH-5mWD2/-AWfge/-Swrgg2,            holds the permission, or       failed: no_permission
    404 AUTHZ-cdgFk (no role there)           holds it in an org it is a
                                              member of
                                              lacks it everywhere            stop (what to grant)

ZITADEL checks the token before the org header, so an unknown org proves the token good and says
nothing against the account. A permission refusal is the account's own fault only when it cannot
act anywhere: not where it lives (``ListMyZitadelPermissions`` without an org header answers
that), nor in an org it is a member of (an account that manages one tenant's users only). An
account that can act somewhere is working; an event naming a user elsewhere fails alone.
"""

from __future__ import annotations

from typing import Final

from lockoutd.errors import EventRefused, ZitadelConfigError

UNKNOWN_ORG: Final = "AUTH-Bs7Ds"
MISSING_PERMISSION: Final = frozenset({"AUTH-5mWD2", "AUTH-AWfge", "AUTH-Swrgg2"})
NO_MEMBERSHIP: Final = "AUTHZ-cdgFk"
REFUSED: Final = MISSING_PERMISSION | {UNKNOWN_ORG, NO_MEMBERSHIP}
"""Every error id that refuses the caller (rather than answering about a user)."""

_GRANT_OWN = (
    "grant the service account ORG_USER_MANAGER in its own org or IAM_USER_MANAGER on the instance"
)


def asks_about_the_account(error_id: str | None) -> bool:
    """Whether telling this refusal apart needs what the account holds in its own org."""
    return error_id in MISSING_PERMISSION or error_id == NO_MEMBERSHIP


def classify(
    error_id: str | None,
    described: str,
    *,
    operation: str,
    permission: str,
    where: str,
    org: str | None,
    own: frozenset[str],
    member_orgs: tuple[str, ...] = (),
) -> EventRefused | ZitadelConfigError | None:
    """The error for a refusal, or None when ``error_id`` refuses nobody.

    ``described`` is the answer as an operator reads it (``HTTP 403, code 7, AUTH-5mWD2``);
    ``permission`` is what ``operation`` needs; ``where`` names where it was refused (``org 42``,
    ``its own org``, ``the user's org``) and ``org`` the org header sent, if any; ``own`` is what
    the account holds in its own org and on the instance, ``member_orgs`` the other orgs where it
    holds ``permission``.
    """
    if error_id == UNKNOWN_ORG:
        if org is None:  # without a header ZITADEL has no org to look up; never seen
            return ZitadelConfigError(
                f"ZITADEL knows no org for {operation} ({described}): check that "
                "zitadel.base_url names the right instance"
            )
        return EventRefused(
            "unknown_org",
            f"ZITADEL knows no org {org} ({described}): the event names an org this instance "
            "does not have, so nothing was done",
        )
    if not asks_about_the_account(error_id):
        return None
    if permission in own:
        return EventRefused(
            "no_permission",
            f"ZITADEL refused {operation} ({described}): the service account lacks {permission} "
            f"in {where} but holds it in its own org; grant it ORG_USER_MANAGER in {where} or "
            "IAM_USER_MANAGER if lockoutd should act there",
        )
    if member_orgs:
        return EventRefused(
            "no_permission",
            f"ZITADEL refused {operation} ({described}): the service account lacks {permission} "
            f"in {where} but holds it in org {', '.join(member_orgs)}; grant it ORG_USER_MANAGER "
            f"in {where} or IAM_USER_MANAGER if lockoutd should act there",
        )
    if error_id == NO_MEMBERSHIP:
        return ZitadelConfigError(
            f"the service account has no membership in ZITADEL that covers {where} "
            f"({described}), and holds {permission} neither in its own org nor on the instance: "
            f"{_GRANT_OWN}"
        )
    return ZitadelConfigError(
        f"ZITADEL denies lockoutd {operation} in {where} ({described}), and the service account "
        f"holds {permission} neither in its own org nor on the instance: {_GRANT_OWN}"
    )
