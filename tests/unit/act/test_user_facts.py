"""Reading who a user is from ZITADEL's "get user by id" answers (v1 and v2 shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from lockoutd.act.user_facts import UserFacts, user_facts

V1_ANSWER: dict[str, Any] = {
    "user": {
        "id": "2002",
        "details": {"sequence": "7", "resourceOwner": "300"},
        "state": "USER_STATE_ACTIVE",
        "userName": "oncall",
        "loginNames": ["oncall@acme.example", "oncall@acme.internal"],
        "preferredLoginName": "OnCall@acme.example",
    }
}
V2_ANSWER: dict[str, Any] = {
    "details": {"sequence": "7", "resourceOwner": "300"},
    "user": {
        "userId": "2002",
        "details": {"sequence": "7", "resourceOwner": "300"},
        "username": "oncall",
        "loginNames": ["oncall@acme.example", "oncall@acme.internal"],
        "preferredLoginName": "OnCall@acme.example",
    },
}


@pytest.mark.parametrize("answer", [V1_ANSWER, V2_ANSWER], ids=["v1", "v2"])
def test_every_login_name_and_the_org_are_read(answer: dict[str, Any]) -> None:
    """All login names and the preferred one count; the username alone is not a login name."""
    assert user_facts("2002", answer) == UserFacts(
        "2002",
        "300",
        frozenset({"oncall@acme.example", "oncall@acme.internal", "OnCall@acme.example"}),
    )


def test_a_user_without_names_or_org_has_none() -> None:
    """protojson leaves empty fields out: no login names, no org."""
    assert user_facts("1", {"user": {"userId": "1"}}) == UserFacts("1", None, frozenset())


@pytest.mark.parametrize("answer", [[], {"user": "x"}, {"details": {}}])
def test_an_answer_without_a_user_is_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match="no user"):
        user_facts("1", answer)
