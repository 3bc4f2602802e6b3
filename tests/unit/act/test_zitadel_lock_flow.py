"""The lock flow's rarer branches, scripted over httpx.MockTransport.

The emulator cannot change a user between two requests, so the race after an ambiguous 400 and
the answers ZITADEL should never give are scripted here.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from lockoutd.act.zitadel import LockOutcome, UserState, ZitadelClient
from lockoutd.errors import UnexpectedAnswer
from lockoutd.report.metrics import Metrics
from lockoutd.settings import ZitadelSettings

LOCK_REFUSED = {
    "code": 9,
    "message": "User is not active or initial (COMMAND-3NN8v)",
    "details": [{"id": "COMMAND-3NN8v"}],
}


def _user(state: str) -> httpx.Response:
    return httpx.Response(200, json={"user": {"id": "7", "state": state}})


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> ZitadelClient:
    settings = ZitadelSettings(pat=SecretStr("pat"), retry_attempts=2, retry_timeout=2)
    return ZitadelClient(
        settings,
        metrics=Metrics(),
        transport=httpx.MockTransport(handler),
        wait_initial=0.001,
        wait_max=0.001,
        wait_jitter=0,
    )


class Script:
    """Answers requests in order and records what was asked."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return self.answers.pop(0)


async def test_a_lock_refused_for_an_active_user_is_tried_once_more() -> None:
    """A 400 whose user then reads ACTIVE is a race: the lock is sent again."""
    script = Script(
        httpx.Response(400, json=LOCK_REFUSED),
        _user("USER_STATE_ACTIVE"),
        httpx.Response(200, json={"details": {}}),
    )
    async with _client(script) as client:
        assert await client.lock("7", None) is LockOutcome.LOCKED
    assert script.seen == [
        "POST /management/v1/users/7/_lock",
        "GET /management/v1/users/7",
        "POST /management/v1/users/7/_lock",
    ]


async def test_a_race_that_persists_fails_the_action() -> None:
    """Refused twice while the state says lockable, the lock gives up as unavailable."""
    script = Script(
        httpx.Response(400, json=LOCK_REFUSED),
        _user("USER_STATE_INITIAL"),
        httpx.Response(400, json=LOCK_REFUSED),
        _user("USER_STATE_ACTIVE"),
    )
    async with _client(script) as client:
        with pytest.raises(UnexpectedAnswer, match="state keeps changing"):
            await client.lock("7", None)
    assert len(script.seen) == 4


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("USER_STATE_LOCKED", LockOutcome.ALREADY_LOCKED),
        ("USER_STATE_INACTIVE", LockOutcome.NOT_LOCKABLE),
        ("USER_STATE_SUSPEND", LockOutcome.NOT_LOCKABLE),
        ("USER_STATE_UNSPECIFIED", LockOutcome.NOT_LOCKABLE),
        ("USER_STATE_DELETED", LockOutcome.UNKNOWN_USER),
    ],
)
async def test_the_state_after_a_refusal_decides(state: str, outcome: LockOutcome) -> None:
    """After the shared 400, the user's state tells already locked from deactivated."""
    script = Script(httpx.Response(400, json=LOCK_REFUSED), _user(state))
    async with _client(script) as client:
        assert await client.lock("7", None) is outcome


async def test_a_user_gone_between_the_refusal_and_the_read_is_unknown() -> None:
    """A 404 on the state read after the refusal makes the user unknown."""
    gone = {"code": 5, "message": "User could not be found (QUERY-Dfbg2)"}
    script = Script(httpx.Response(400, json=LOCK_REFUSED), httpx.Response(404, json=gone))
    async with _client(script) as client:
        assert await client.lock("7", None) is LockOutcome.UNKNOWN_USER


async def test_an_unknown_state_name_reads_as_unspecified() -> None:
    """A state name lockoutd does not know becomes UNSPECIFIED rather than an error."""
    async with _client(Script(_user("USER_STATE_SOMETHING_NEW"))) as client:
        assert await client.get_state("7", None) is UserState.UNSPECIFIED


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(404, text="404 page not found"), r"HTTP 404.*check zitadel.base_url"),
        (httpx.Response(400, json={"code": 3, "details": [{"id": "USER-xyz"}]}), "USER-xyz"),
        (httpx.Response(409, json={"code": 6}), "HTTP 409, code 6"),
        (httpx.Response(501, json={"code": 12}), "HTTP 501"),
        (httpx.Response(302, headers={"location": "/login"}), "HTTP 302"),
    ],
)
async def test_unexpected_answers_fail_without_retrying(
    response: httpx.Response, match: str
) -> None:
    """An answer lockoutd does not know is one request and an UnexpectedAnswer."""
    script = Script(response)
    async with _client(script) as client:
        with pytest.raises(UnexpectedAnswer, match=match):
            await client.lock("7", None)
    assert len(script.seen) == 1


async def test_a_missing_state_reads_as_unspecified() -> None:
    """protojson omits the zero state; v2 shows a suspended user that way."""
    async with _client(Script(httpx.Response(200, json={"user": {"userId": "7"}}))) as client:
        assert await client.get_state("7", None) is UserState.UNSPECIFIED


async def test_a_garbled_state_read_is_unexpected() -> None:
    """A 200 without a user object is not usable."""
    async with _client(Script(httpx.Response(200, json={"details": {}}))) as client:
        with pytest.raises(UnexpectedAnswer, match="get_user"):
            await client.get_state("7", None)
