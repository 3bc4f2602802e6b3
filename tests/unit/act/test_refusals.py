"""Whom ZITADEL refuses: one event's claim (that action fails) or lockoutd itself (it stops)."""

from __future__ import annotations

import pytest

from lockoutd.act.refusals import REFUSED, asks_about_the_account, classify
from lockoutd.errors import EventRefused, UnexpectedAnswer, ZitadelConfigError
from lockoutd.report.metrics import REFUSAL_REASONS

WRITER = frozenset({"user.read", "user.write"})
READER = frozenset({"user.read"})
NOTHING: frozenset[str] = frozenset()


def refusal(
    error_id: str,
    *,
    own: frozenset[str],
    permission: str = "user.write",
    org: str | None = "42",
    where: str = "org 42",
) -> EventRefused | ZitadelConfigError | None:
    return classify(
        error_id,
        f"HTTP 403, {error_id}",
        operation="lock",
        permission=permission,
        where=where,
        org=org,
        own=own,
    )


@pytest.mark.parametrize("own", [WRITER, NOTHING], ids=["a capable account", "a bare account"])
def test_an_org_zitadel_does_not_know_is_the_events_claim_whatever_the_account_holds(
    own: frozenset[str],
) -> None:
    """ZITADEL checks the token before the org header: the account is not in question."""
    error = refusal("AUTH-Bs7Ds", own=own)
    assert isinstance(error, EventRefused)
    assert error.reason == "unknown_org"
    assert str(error).startswith("ZITADEL knows no org 42 (HTTP 403, AUTH-Bs7Ds)")


@pytest.mark.parametrize("error_id", ["AUTH-5mWD2", "AUTH-AWfge", "AUTH-Swrgg2", "AUTHZ-cdgFk"])
def test_a_permission_the_account_holds_at_home_makes_the_refusal_the_events(
    error_id: str,
) -> None:
    error = refusal(error_id, own=WRITER)
    assert isinstance(error, EventRefused)
    assert error.reason == "no_permission"
    assert "lacks user.write in org 42 but holds it in its own org" in str(error)
    assert "grant it ORG_USER_MANAGER in org 42 or IAM_USER_MANAGER" in str(error)


@pytest.mark.parametrize("error_id", ["AUTH-5mWD2", "AUTH-AWfge", "AUTH-Swrgg2", "AUTHZ-cdgFk"])
@pytest.mark.parametrize("own", [READER, NOTHING], ids=["read-only at home", "nothing at home"])
def test_a_permission_the_account_lacks_at_home_stops_lockoutd(
    error_id: str, own: frozenset[str]
) -> None:
    error = refusal(error_id, own=own)
    assert isinstance(error, ZitadelConfigError)
    assert "holds user.write neither in its own org nor on the instance" in str(error)
    assert "grant the service account ORG_USER_MANAGER in its own org or IAM_USER_MANAGER" in str(
        error
    )


def test_the_permission_asked_about_is_the_one_the_call_needs() -> None:
    """An account that may write but not read users at home is refused a read by its own fault."""
    assert isinstance(refusal("AUTH-5mWD2", own=READER, permission="user.read"), EventRefused)
    stopped = refusal("AUTH-5mWD2", own=frozenset({"user.write"}), permission="user.read")
    assert isinstance(stopped, ZitadelConfigError)
    assert "user.read" in str(stopped)


def test_without_an_org_header_the_refusal_names_where_it_happened() -> None:
    error = refusal("AUTH-AWfge", own=WRITER, org=None, where="the user's org")
    assert isinstance(error, EventRefused)
    assert "lacks user.write in the user's org" in str(error)


@pytest.mark.parametrize("error_id", [None, "COMMAND-5M9fs", "QUERY-Dfbg2", "AUTH-7fs1e"])
def test_answers_about_users_or_tokens_are_no_refusal_here(error_id: str | None) -> None:
    """A missing user is an outcome; a 401 is the token's, decided before any of this."""
    assert error_id not in REFUSED
    assert not asks_about_the_account(error_id)
    assert classify(
        error_id, "HTTP 404", operation="lock", permission="user.write", where="org 42", org="42",
        own=NOTHING,
    ) is None  # fmt: skip


def test_a_refused_claim_fails_the_action_like_any_answer_lockoutd_does_not_expect() -> None:
    """The executor and the unlocker turn UnexpectedAnswer into a failed decision."""
    error = refusal("AUTH-Bs7Ds", own=NOTHING)
    assert isinstance(error, UnexpectedAnswer)


def test_every_reason_has_its_metric_series() -> None:
    reasons = {
        error.reason
        for error in (refusal("AUTH-Bs7Ds", own=NOTHING), refusal("AUTH-5mWD2", own=WRITER))
        if isinstance(error, EventRefused)
    }
    assert reasons == set(REFUSAL_REASONS)
