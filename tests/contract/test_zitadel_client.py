"""The ZITADEL client against the ZITADEL emulator, over real HTTP on loopback.

Every classification row runs on both APIs (v1 management, v2 user service) and with both kinds of
credentials (a personal access token, a service-account key traded for an access token).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from structlog.tracebacks import ExceptionDictTransformer

from lockoutd.act.zitadel import (
    LockOutcome,
    ResolvedUser,
    UnlockOutcome,
    UserState,
    ZitadelClient,
)
from lockoutd.errors import (
    EventRefused,
    InvalidUserId,
    UnexpectedAnswer,
    ZitadelConfigError,
    ZitadelError,
    ZitadelUnavailable,
)
from lockoutd.report.metrics import Metrics
from lockoutd.settings import ZitadelSettings
from lockoutd.testing.zitadel_emulator import DEFAULT_SERVICE_ACCOUNT_ID as SERVICE_ACCOUNT_OF_PAT
from lockoutd.testing.zitadel_emulator import Fault, ZitadelEmulator
from lockoutd.testing.zitadel_emulator import UserState as EmulatedState

pytestmark = pytest.mark.timeout(20)

ORG = "100000000000000001"
OTHER_ORG = "100000000000000002"
SERVICE_ACCOUNT = "300000000000000001"
PAT = "pat-0123456789-secret"
USER = "200000000000000001"
TOKEN_PATH = "/oauth/v2/token"
INSTANCE_ROLES: dict[str, set[str]] = {"instance": {"IAM_USER_MANAGER"}}


# --- fixtures and helpers -------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emu() -> Iterator[ZitadelEmulator]:
    with ZitadelEmulator() as emulator:
        emulator.add_org(ORG)
        emulator.add_org(OTHER_ORG)
        yield emulator


@pytest.fixture(params=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["pat", "key"])
def auth(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def credentials(
    emu: ZitadelEmulator, auth: str, tmp_path: Path, roles: dict[str, set[str]] | None
) -> dict[str, Any]:
    """Register a service account with ``roles`` and return the settings that name it."""
    if auth == "pat":
        emu.add_pat(PAT, roles=roles)
        return {"pat": SecretStr(PAT)}
    key = emu.add_service_account_key(user_id=SERVICE_ACCOUNT, roles=roles)
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key))
    return {"key_file": path}


def settings_for(
    emu: ZitadelEmulator, api: str, creds: dict[str, Any], **overrides: Any
) -> ZitadelSettings:
    values: dict[str, Any] = {
        "base_url": emu.base_url,
        "api": api,
        "timeout": 2.0,
        "retry_attempts": 4,
        "retry_timeout": 5.0,
    }
    values.update(creds)
    values.update(overrides)
    return ZitadelSettings(**values)


@asynccontextmanager
async def connect(
    settings: ZitadelSettings,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[ZitadelClient]:
    client = ZitadelClient(
        settings,
        metrics=metrics or Metrics(),
        clock=clock,
        wait_initial=0.01,
        wait_max=0.05,
        wait_jitter=0.0,
    )
    async with client:
        yield client


@pytest.fixture
async def client(
    emu: ZitadelEmulator, api: str, auth: str, tmp_path: Path
) -> AsyncIterator[ZitadelClient]:
    """A client with instance-wide user-manager rights, on each API and credential kind."""
    creds = credentials(emu, auth, tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, api, creds)) as zitadel:
        yield zitadel


def api_calls(emu: ZitadelEmulator) -> list[Any]:
    return [call for call in emu.calls if call.path != TOKEN_PATH]


def key_material(path: Path) -> str:
    """A line of the private key's base64 body, which must never be shown."""
    return str(json.loads(path.read_text())["key"]).splitlines()[1]


def token_calls(emu: ZitadelEmulator) -> list[Any]:
    return [call for call in emu.calls if call.path == TOKEN_PATH]


def requests(metrics: Metrics, operation: str, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "lockoutd_zitadel_requests_total", {"operation": operation, "code": code}
    )
    return value or 0.0


# --- versions: what tells lockoutd's own lock apart ------------------------------------------


async def test_a_lock_answers_its_version_and_a_read_shows_it_until_the_next_change(
    emu: ZitadelEmulator, client: ZitadelClient
) -> None:
    """The lock's version is what a later read shows; an administrator's unlock and re-lock
    leaves another one, and "already locked" reports the version found."""
    emu.add_user(USER, org_id=ORG)
    before = await client.read_user(USER, ORG)
    assert before is not None
    assert (before.state, before.version is not None) == (UserState.ACTIVE, True)

    receipt = await client.lock_user(USER, ORG)
    assert receipt.outcome is LockOutcome.LOCKED
    assert receipt.version is not None
    assert before.version is not None
    assert receipt.version.sequence == before.version.sequence + 1
    after = await client.read_user(USER, ORG)
    assert after is not None
    assert (after.state, after.version) == (UserState.LOCKED, receipt.version)

    emu.set_state(USER, EmulatedState.ACTIVE)
    emu.set_state(USER, EmulatedState.LOCKED)
    again = await client.lock_user(USER, ORG)
    assert again.outcome is LockOutcome.ALREADY_LOCKED
    assert again.version is not None
    assert again.version.sequence == receipt.version.sequence + 2
    assert await client.read_user("999", ORG) is None


# --- classification -------------------------------------------------------------------------

LOCK_ROWS = [
    # state before           outcome                      state after
    (UserState.ACTIVE, LockOutcome.LOCKED, UserState.LOCKED),
    (UserState.INITIAL, LockOutcome.LOCKED, UserState.LOCKED),
    (UserState.LOCKED, LockOutcome.ALREADY_LOCKED, UserState.LOCKED),
    (UserState.INACTIVE, LockOutcome.NOT_LOCKABLE, UserState.INACTIVE),
]


@pytest.mark.parametrize(("before", "outcome", "after"), LOCK_ROWS)
async def test_lock_outcomes(
    emu: ZitadelEmulator,
    client: ZitadelClient,
    before: UserState,
    outcome: LockOutcome,
    after: UserState,
) -> None:
    """Locking gives an outcome per user state and leaves the user in the expected state."""
    emu.add_user(USER, org_id=ORG, state=EmulatedState(before))
    assert await client.lock(USER, ORG) is outcome
    assert emu.state_of(USER) == after
    assert len(emu.lock_calls(USER)) == 1
    assert client.healthy


async def test_locking_an_unknown_user_is_an_outcome(
    emu: ZitadelEmulator, client: ZitadelClient
) -> None:
    """A user ZITADEL does not know is unknown_user after one request."""
    assert await client.lock(USER, ORG) is LockOutcome.UNKNOWN_USER
    assert len(api_calls(emu)) == 1


async def test_a_removed_user_is_unknown(emu: ZitadelEmulator, client: ZitadelClient) -> None:
    """A removed user cannot be locked, unlocked or read."""
    emu.add_user(USER, org_id=ORG)
    emu.remove_user(USER)
    assert await client.lock(USER, ORG) is LockOutcome.UNKNOWN_USER
    assert await client.unlock(USER, ORG) is UnlockOutcome.UNKNOWN_USER
    assert await client.get_state(USER, ORG) is None


@pytest.mark.parametrize(
    ("before", "outcome", "after"),
    [
        (UserState.LOCKED, UnlockOutcome.UNLOCKED, UserState.ACTIVE),
        (UserState.ACTIVE, UnlockOutcome.NOT_LOCKED, UserState.ACTIVE),
        (UserState.INACTIVE, UnlockOutcome.NOT_LOCKED, UserState.INACTIVE),
        (None, UnlockOutcome.UNKNOWN_USER, None),
    ],
)
async def test_unlock_outcomes(
    emu: ZitadelEmulator,
    client: ZitadelClient,
    before: UserState | None,
    outcome: UnlockOutcome,
    after: UserState | None,
) -> None:
    """Unlocking a locked user unlocks it; not locked and unknown are outcomes, not errors."""
    if before is not None:
        emu.add_user(USER, org_id=ORG, state=EmulatedState(before))
    assert await client.unlock(USER, ORG) is outcome
    if after is not None:
        assert emu.state_of(USER) == after
    assert len(api_calls(emu)) == 1


@pytest.mark.parametrize("state", [UserState.ACTIVE, UserState.LOCKED, UserState.INACTIVE])
async def test_get_state_reads_the_state(
    emu: ZitadelEmulator, client: ZitadelClient, state: UserState
) -> None:
    """get_state returns the user's state, and None for an unknown user."""
    emu.add_user(USER, org_id=ORG, state=EmulatedState(state))
    assert await client.get_state(USER, ORG) is state
    assert await client.get_state("999", ORG) is None


async def test_read_user_says_which_org_the_user_is_in_and_its_login_names(
    emu: ZitadelEmulator, client: ZitadelClient
) -> None:
    """read_user reports the user's own org and login names; an unknown user is None."""
    emu.add_user(USER, org_id=ORG, login_name="Alice@acme.example")
    emu.add_login_name(USER, "alice@acme.internal")
    facts = await client.read_user(USER, ORG)
    assert facts is not None
    assert facts.org_id == ORG
    assert facts.login_names == {"Alice@acme.example", "alice@acme.internal"}
    assert await client.read_user("999", ORG) is None


async def test_v1_reads_no_user_of_another_org(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """On v1 a user outside the header's org cannot be read: None, as lock would say."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=OTHER_ORG)
    async with connect(settings_for(emu, "v1", creds)) as client:
        assert await client.read_user(USER, ORG) is None


async def test_requests_follow_the_api(
    emu: ZitadelEmulator, client: ZitadelClient, api: str
) -> None:
    """Lock and unlock use the API's paths, a JSON body {}, a bearer token, on v1 the org header."""
    emu.add_user(USER, org_id=ORG)
    await client.lock(USER, ORG)
    await client.unlock(USER, ORG)
    lock, unlock = api_calls(emu)
    if api == "v1":
        assert (lock.method, lock.path) == ("POST", f"/management/v1/users/{USER}/_lock")
        assert unlock.path == f"/management/v1/users/{USER}/_unlock"
        assert lock.headers.get("x-zitadel-orgid") == ORG
    else:
        assert (lock.method, lock.path) == ("POST", f"/v2/users/{USER}/lock")
        assert unlock.path == f"/v2/users/{USER}/unlock"
        assert lock.headers.get("x-zitadel-orgid") is None
    for call in (lock, unlock):
        assert call.headers.get("content-type") == "application/json"
        assert call.headers.get("authorization", "").startswith("Bearer ")
        assert call.body == {}


async def test_without_an_org_v1_uses_the_service_accounts_org(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """With no org known, v1 sends no org header."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, "v1", creds)) as client:
        await client.get_state(USER, None)
    (call,) = api_calls(emu)
    assert "x-zitadel-orgid" not in {name.lower() for name in call.headers}


async def test_v1_does_not_find_a_user_of_another_org(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """On v1 a user outside the header's org is unknown_user, as ZITADEL cannot tell them apart."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=OTHER_ORG)
    async with connect(settings_for(emu, "v1", creds)) as client:
        assert await client.lock(USER, ORG) is LockOutcome.UNKNOWN_USER
    assert emu.state_of(USER) == UserState.ACTIVE


# --- faults of lockoutd's own setup -----------------------------------------------------------


async def test_no_membership_stops_with_what_to_grant(
    emu: ZitadelEmulator, api: str, auth: str, tmp_path: Path
) -> None:
    """A service account without any membership is a config error naming the roles to grant."""
    creds = credentials(emu, auth, tmp_path, None)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, api, creds)) as client:
        with pytest.raises(ZitadelConfigError, match=r"ORG_USER_MANAGER.*IAM_USER_MANAGER"):
            await client.lock(USER, ORG)
    assert emu.state_of(USER) == UserState.ACTIVE
    assert len(emu.lock_calls(USER)) == 1


async def test_a_missing_permission_stops_with_what_to_grant(
    emu: ZitadelEmulator, api: str, auth: str, tmp_path: Path
) -> None:
    """A read-only role is a config error naming the roles to grant."""
    creds = credentials(emu, auth, tmp_path, {ORG: {"ORG_OWNER_VIEWER"}})
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, api, creds)) as client:
        with pytest.raises(ZitadelConfigError, match=r"\(HTTP 403.*grant the service account"):
            await client.lock(USER, ORG)
        assert not client.healthy


async def test_an_unknown_pat_stops_after_one_request(emu: ZitadelEmulator, api: str) -> None:
    """A PAT ZITADEL rejects is a config error; a PAT from the environment is not retried."""
    settings = settings_for(emu, api, {"pat": SecretStr("not-registered")})
    async with connect(settings) as client:
        with pytest.raises(ZitadelConfigError, match=r"HTTP 401.*LOCKOUTD_ZITADEL__PAT") as info:
            await client.lock(USER, ORG)
    assert len(api_calls(emu)) == 1
    assert "not-registered" not in str(info.value)


async def test_a_missing_pat_file_stops_at_start(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """A pat_file that does not exist is a config error before any request."""
    with pytest.raises(ZitadelConfigError, match=r"cannot read zitadel\.pat_file"):
        ZitadelClient(settings_for(emu, "v1", {"pat_file": tmp_path / "absent"}), metrics=Metrics())
    assert emu.calls == []


# --- tokens -----------------------------------------------------------------------------------


async def test_an_access_token_is_reused_and_refreshed_before_it_expires(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """One token serves many calls; shortly before expires_in runs out a new one is fetched."""
    emu.access_token_lifetime = 100
    clock = Clock()
    creds = credentials(emu, "key", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, api, creds), clock=clock) as client:
        for _ in range(3):
            await client.get_state(USER, ORG)
        assert len(token_calls(emu)) == 1
        clock.now += 95  # inside the refresh margin, before the token expires
        await client.get_state(USER, ORG)
        assert len(token_calls(emu)) == 2
    first, second = {c.headers["authorization"] for c in api_calls(emu)[:3]}, api_calls(emu)[3]
    assert len(first) == 1
    assert second.headers["authorization"] not in first


async def test_concurrent_first_calls_share_one_token_request(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """Many calls at start cause a single token request."""
    creds = credentials(emu, "key", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.latency(0.1), path_contains=TOKEN_PATH)
    async with connect(settings_for(emu, "v2", creds)) as client:
        states = await asyncio.gather(*(client.get_state(USER, ORG) for _ in range(10)))
    assert states == [UserState.ACTIVE] * 10
    assert len(token_calls(emu)) == 1


async def test_a_revoked_access_token_is_replaced_once(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """A 401 on a revoked access token fetches a new one and repeats the call."""
    creds = credentials(emu, "key", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, api, creds)) as client:
        await client.get_state(USER, ORG)
        emu.revoke_token(api_calls(emu)[-1].headers["authorization"].removeprefix("Bearer "))
        with structlog.testing.capture_logs() as logs:
            assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert [c.status for c in emu.lock_calls(USER)] == [401, 200]
    assert len(token_calls(emu)) == 2
    assert [e["event"] for e in logs if e["event"] == "zitadel_token_rejected"] == [
        "zitadel_token_rejected"
    ]


async def test_a_rotated_pat_file_is_picked_up(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """After a 401 the pat_file is read again, so a rotated PAT works without a restart."""
    path = tmp_path / "pat"
    path.write_text("old-pat\n")
    emu.add_pat("old-pat", roles=INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, "v1", {"pat_file": path})) as client:
        await client.get_state(USER, ORG)
        emu.revoke_token("old-pat")
        emu.add_pat("new-pat", roles=INSTANCE_ROLES)
        path.write_text("new-pat\n")
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert [c.status for c in emu.lock_calls(USER)] == [401, 200]


async def test_a_second_401_after_a_refresh_stops(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """When the fresh token is rejected too, the client stops with a config error."""
    path = tmp_path / "pat"
    path.write_text("old-pat\n")
    emu.add_pat("old-pat", roles=INSTANCE_ROLES)
    async with connect(settings_for(emu, "v2", {"pat_file": path})) as client:
        emu.revoke_token("old-pat")
        path.write_text("also-unknown\n")
        with pytest.raises(ZitadelConfigError, match="even after fetching a new one"):
            await client.lock(USER, ORG)
    assert [c.status for c in api_calls(emu)] == [401, 401]


async def test_a_revoked_pat_stops(emu: ZitadelEmulator, api: str, tmp_path: Path) -> None:
    """A PAT revoked while running, with an unchanged pat_file, is a config error."""
    path = tmp_path / "pat"
    path.write_text(PAT)
    emu.add_pat(PAT, roles=INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, api, {"pat_file": path})) as client:
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
        emu.revoke_token(PAT)
        with pytest.raises(ZitadelConfigError, match=r"HTTP 401.*zitadel.pat_file"):
            await client.unlock(USER, ORG)
        assert not client.healthy


async def test_a_revoked_key_token_that_cannot_be_renewed_stops(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """When every new access token is rejected as well, one refresh is tried, then it stops."""
    creds = credentials(emu, "key", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v1", creds)) as client:
        await client.get_state(USER, ORG)
        emu.access_token_lifetime = 0  # tokens issued from now on are dead on arrival
        emu.revoke_token(api_calls(emu)[-1].headers["authorization"].removeprefix("Bearer "))
        with pytest.raises(ZitadelConfigError, match=r"even after fetching a new one.*key_file"):
            await client.get_state(USER, ORG)
    assert len(token_calls(emu)) == 2
    assert [c.status for c in api_calls(emu)] == [404, 401, 401]


# --- retries ----------------------------------------------------------------------------------


async def test_a_few_503s_are_retried(emu: ZitadelEmulator, api: str, tmp_path: Path) -> None:
    """Three 503s then success: four requests, one lock, each 503 counted."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    metrics = Metrics()
    emu.set_fault(Fault.status(503, times=3))
    async with connect(settings_for(emu, api, creds), metrics=metrics) as client:
        with structlog.testing.capture_logs() as logs:
            assert await client.lock(USER, ORG) is LockOutcome.LOCKED
        assert client.healthy
    assert [c.status for c in emu.lock_calls(USER)] == [503, 503, 503, 200]
    assert requests(metrics, "lock", "503") == 3
    assert requests(metrics, "lock", "200") == 1
    retrying = [e for e in logs if e["event"] == "zitadel_retrying"]
    assert [(e["operation"], e["attempt"], e["status"]) for e in retrying] == [
        ("lock", 2, 503),
        ("lock", 3, 503),
        ("lock", 4, 503),
    ]
    # Debug detail: the action that waits logs its own retries, with its rule and user.
    assert all(e["log_level"] == "debug" for e in retrying)


async def test_persistent_503s_end_in_unavailable(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """A 503 that does not stop costs retry_attempts requests, then ZitadelUnavailable."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.status(503, times=1000))
    async with connect(settings_for(emu, "v1", creds, retry_attempts=3)) as client:
        with pytest.raises(ZitadelUnavailable, match=r"lock .*3 attempt.*HTTP 503"):
            await client.lock(USER, ORG)
        assert not client.healthy
        emu.clear_faults()
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
        assert client.healthy
    assert len(emu.lock_calls(USER)) == 4


async def test_an_unlock_is_sent_once_whatever_the_retries_allowed(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """ZitadelUnavailable after one 503: the unlocker reads the user again before it tries
    again, since a retry would undo whatever lock the user holds by then."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG, state=EmulatedState(UserState.LOCKED))
    emu.set_fault(Fault.status(503, times=1))
    async with connect(settings_for(emu, "v1", creds, retry_attempts=5)) as client:
        with pytest.raises(ZitadelUnavailable, match="HTTP 503"):
            await client.unlock(USER, ORG)
        assert emu.state_of(USER) == UserState.LOCKED
        assert await client.unlock(USER, ORG) is UnlockOutcome.UNLOCKED
    assert len([c for c in emu.calls if "_unlock" in c.path]) == 2


async def test_retries_stop_at_the_retry_timeout(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """With many attempts allowed, retry_timeout still bounds the whole call."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.set_fault(Fault.status(503, times=100_000))
    settings = settings_for(emu, "v2", creds, retry_attempts=1000, retry_timeout=0.5)
    async with connect(settings) as client:
        started = time.monotonic()
        with pytest.raises(ZitadelUnavailable):
            await client.lock(USER, ORG)
    assert 0.45 <= time.monotonic() - started < 1.5


async def test_retry_after_sets_the_wait(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """A proxy's 429 with Retry-After: 1 waits a second, far longer than the configured backoff."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.proxy_rate_limited(times=1, retry_after=1))
    async with connect(settings_for(emu, "v1", creds)) as client:
        started = time.monotonic()
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert time.monotonic() - started >= 0.95
    assert [c.status for c in emu.lock_calls(USER)] == [429, 200]


async def test_a_retry_after_beyond_the_budget_gives_up_at_once(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """A Retry-After longer than the time left ends the call instead of sleeping past it."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.set_fault(Fault.proxy_rate_limited(times=10, retry_after=1))
    async with connect(settings_for(emu, "v1", creds, retry_timeout=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(ZitadelUnavailable, match="HTTP 429"):
            await client.lock(USER, ORG)
    assert time.monotonic() - started < 0.5
    assert len(api_calls(emu)) == 1


@pytest.mark.parametrize(
    "retry_after",
    ["Mon, 01 Jan 99999999999999999999 00:00:00 +0000", "nan", "soon"],
)
async def test_a_retry_after_no_calendar_holds_is_ignored_and_the_call_retried(
    emu: ZitadelEmulator, tmp_path: Path, retry_after: str
) -> None:
    """A proxy's 503 whose ``Retry-After`` is no usable time is retried on lockoutd's own
    backoff: one answer's header must not stop the daemon."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.answer(503, b"busy", headers={"Retry-After": retry_after}, times=1))
    async with connect(settings_for(emu, "v1", creds)) as client:
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert [c.status for c in emu.lock_calls(USER)] == [503, 200]


DEEP_JSON = b"[" * 100_000


@pytest.mark.parametrize("status", [400, 404, 503])
async def test_an_error_answer_nested_past_any_depth_is_read_as_no_zitadel_answer(
    emu: ZitadelEmulator, tmp_path: Path, status: int
) -> None:
    """An error body nested a hundred thousand deep is not ZITADEL's: the call ends as an
    unexpected answer (or, for a 503, retried and unavailable), never as a crash."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.answer(status, DEEP_JSON, headers={"Content-Type": "application/json"}))
    async with connect(settings_for(emu, "v2", creds, retry_attempts=2)) as client:
        expected = ZitadelUnavailable if status == 503 else UnexpectedAnswer
        with pytest.raises(expected, match=f"HTTP {status}"):
            await client.lock(USER, ORG)


@pytest.mark.parametrize("operation", ["get_user", "find_user", "lock"])
async def test_a_success_nested_past_any_depth_is_read_as_no_zitadel_answer(
    emu: ZitadelEmulator, api: str, tmp_path: Path, operation: str
) -> None:
    """A 200 whose body is nested a hundred thousand deep is no answer of ZITADEL's; reading a
    user or a login name ends as an unexpected answer, and a lock waits for a real one."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG, login_name="alice@example.com")
    deep = Fault.answer(200, DEEP_JSON, headers={"Content-Type": "application/json"})
    emu.set_fault(deep)
    async with connect(settings_for(emu, api, creds, retry_timeout=0.5)) as client:
        if operation == "get_user":
            with pytest.raises(UnexpectedAnswer):
                await client.read_user(USER, ORG)
        elif operation == "find_user":
            with pytest.raises(UnexpectedAnswer):
                await client.resolve_login_name("alice@example.com", ORG)
        else:
            with pytest.raises(ZitadelUnavailable, match="not ZITADEL's"):
                await client.lock(USER, ORG)


@pytest.mark.parametrize("operation", ["lock", "unlock"])
async def test_a_success_that_is_a_page_and_not_zitadels_json_changes_nothing(
    emu: ZitadelEmulator, api: str, tmp_path: Path, operation: str
) -> None:
    """A 200 with an HTML page (a proxy's login page, a base_url naming another service) is no
    proof of a lock or an unlock: the call is unavailable, retried later, and says where to look;
    the client reports ZITADEL as not ready meanwhile."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    state = EmulatedState.LOCKED if operation == "unlock" else EmulatedState.ACTIVE
    emu.add_user(USER, org_id=ORG, state=state)
    page = b"<html><body>Sign in to continue</body></html>"
    emu.set_fault(Fault.answer(200, page, headers={"Content-Type": "text/html"}))
    async with connect(settings_for(emu, api, creds, retry_timeout=0.5)) as client:
        call = client.lock if operation == "lock" else client.unlock
        with pytest.raises(ZitadelUnavailable, match=r"not a JSON object.*zitadel\.base_url"):
            await call(USER, ORG)
        assert not client.healthy


async def test_an_answer_trickled_a_byte_at_a_time_is_cut_at_the_timeout_and_retried(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """A body that comes a byte every 0.1 s never trips a read timeout of 0.5 s; the whole
    answer gets the timeout, then the call is retried, and the lock happens."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.trickle(0.1, times=1), path_contains="/_lock")
    metrics = Metrics()
    async with connect(settings_for(emu, "v1", creds, timeout=0.5), metrics=metrics) as client:
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert requests(metrics, "lock", "error") == 1
    assert [c.status for c in emu.lock_calls(USER)] == [200, 200]


async def test_an_answer_larger_than_any_of_zitadels_is_not_read(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """Two megabytes of answer are not read into memory: the call is unavailable, retried later."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.answer(200, b" " * 2_000_000 + b"{}", times=1), path_contains="/_lock")
    async with connect(settings_for(emu, "v1", creds)) as client:
        with pytest.raises(ZitadelUnavailable, match="larger than 1048576 bytes"):
            await client.lock(USER, ORG)
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED


async def test_a_compressed_answer_lockoutd_did_not_ask_for_is_not_inflated(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """lockoutd asks for answers as they are. Two hundred kilobytes of gzip that would inflate
    to two hundred megabytes are not inflated: the call is unavailable, retried later."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    bomb = gzip.compress(b"0" * 200_000_000, compresslevel=9)
    assert len(bomb) < 300_000
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    emu.set_fault(Fault.answer(200, bomb, headers=headers, times=1), path_contains="/_lock")
    async with connect(settings_for(emu, "v1", creds)) as client:
        with pytest.raises(ZitadelUnavailable, match=r"compressed \(gzip\)"):
            await client.lock(USER, ORG)
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert all(c.headers.get("accept-encoding") == "identity" for c in emu.calls)


async def test_zitadels_own_429_is_retried_with_backoff(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """ZITADEL's 429 has no Retry-After: lockoutd backs off on its own and names the quota."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.rate_limited(times=2))
    async with connect(settings_for(emu, api, creds)) as client:
        with structlog.testing.capture_logs() as logs:
            assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert [c.status for c in emu.lock_calls(USER)] == [429, 429, 200]
    reasons = [e["reason"] for e in logs if e["event"] == "zitadel_retrying"]
    assert reasons == ["HTTP 429, code 8, QUOTA-vjAy8"] * 2


async def test_an_exhausted_quota_ends_in_unavailable_naming_it(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """A quota that stays exhausted is an outage (retried later), not a failed decision."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.rate_limited())
    async with connect(settings_for(emu, "v2", creds, retry_attempts=3)) as client:
        with pytest.raises(ZitadelUnavailable, match=r"3 attempt.*HTTP 429, code 8, QUOTA-vjAy8"):
            await client.lock(USER, ORG)
    assert len(emu.lock_calls(USER)) == 3


async def test_a_dropped_connection_is_retried(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """A connection closed without an answer is retried and counted as an error."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    metrics = Metrics()
    emu.set_fault(Fault.drop_connection(times=1))
    async with connect(settings_for(emu, api, creds), metrics=metrics) as client:
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert requests(metrics, "lock", "error") == 1
    assert emu.state_of(USER) == UserState.LOCKED


async def test_a_slow_answer_times_out_and_is_retried(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """An answer slower than the timeout is a retried error, and finally unavailable."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.set_fault(Fault.latency(1.0))
    settings = settings_for(emu, "v1", creds, timeout=0.2, retry_attempts=2)
    metrics = Metrics()
    async with connect(settings, metrics=metrics) as client:
        with pytest.raises(ZitadelUnavailable, match="Timeout"):
            await client.get_state(USER, ORG)
    assert requests(metrics, "get_user", "error") == 2


async def test_the_token_request_is_retried(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """503s from the token endpoint are retried like any other request."""
    creds = credentials(emu, "key", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    metrics = Metrics()
    emu.set_fault(Fault.status(503, times=2), path_contains=TOKEN_PATH)
    async with connect(settings_for(emu, "v2", creds), metrics=metrics) as client:
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert requests(metrics, "token", "503") == 2
    assert requests(metrics, "token", "200") == 1


async def test_no_other_4xx_is_retried(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """403 and 404 answers are final after one request."""
    creds = credentials(emu, "pat", tmp_path, {OTHER_ORG: {"ORG_USER_MANAGER"}})
    emu.add_user(USER, org_id=ORG)
    async with connect(settings_for(emu, "v2", creds)) as client:
        assert await client.lock("999", ORG) is LockOutcome.UNKNOWN_USER
        with pytest.raises(EventRefused):
            await client.lock(USER, ORG)
    assert len(emu.lock_calls()) == 2


async def test_concurrency_is_bounded(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """With max_concurrency 2, six slow requests take three rounds."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    emu.set_fault(Fault.latency(0.1))
    async with connect(settings_for(emu, "v1", creds, max_concurrency=2)) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.get_state(USER, ORG) for _ in range(6)))
    assert time.monotonic() - started >= 0.29


# --- login names ----------------------------------------------------------------------------


def search_calls(emu: ZitadelEmulator) -> list[Any]:
    return [c for c in emu.calls if c.path in ("/management/v1/users/_search", "/v2/users")]


async def test_a_login_name_resolves_once(
    emu: ZitadelEmulator, client: ZitadelClient, api: str
) -> None:
    """Many lookups of one name, in any case, cost one search."""
    emu.add_user(USER, org_id=ORG, login_name="Alice@Acme.example")
    for name in ("alice@acme.example", "ALICE@acme.example", " Alice@Acme.example ") * 5:
        assert await client.resolve_login_name(name, ORG) == ResolvedUser(USER, ORG)
    (call,) = search_calls(emu)
    body = call.body
    assert body["query"] == {"limit": 2}
    assert {
        "loginNameQuery": {
            "loginName": "alice@acme.example",
            "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
        }
    } in body["queries"]
    if api == "v1":
        assert call.path == "/management/v1/users/_search"
        assert call.headers.get("x-zitadel-orgid") == ORG
    else:
        assert call.path == "/v2/users"
        assert {"organizationIdQuery": {"organizationId": ORG}} in body["queries"]


async def test_an_unknown_login_name_is_none(emu: ZitadelEmulator, client: ZitadelClient) -> None:
    """A name nobody has resolves to None."""
    assert await client.resolve_login_name("nobody@acme.example", ORG) is None
    assert len(search_calls(emu)) == 1


async def test_misses_are_cached_shorter_than_hits(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """A miss is asked again after login_name_miss_ttl, a hit only after login_name_cache_ttl."""
    clock = Clock()
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    settings = settings_for(emu, api, creds, login_name_cache_ttl=300.0, login_name_miss_ttl=30.0)
    async with connect(settings, clock=clock) as client:
        assert await client.resolve_login_name("bob@acme.example", ORG) is None
        emu.add_user(USER, org_id=ORG, login_name="bob@acme.example")
        clock.now += 29
        assert await client.resolve_login_name("bob@acme.example", ORG) is None
        assert len(search_calls(emu)) == 1
        clock.now += 2
        assert await client.resolve_login_name("bob@acme.example", ORG) == ResolvedUser(USER, ORG)
        clock.now += 299
        assert await client.resolve_login_name("bob@acme.example", ORG) == ResolvedUser(USER, ORG)
        assert len(search_calls(emu)) == 2
        clock.now += 2
        assert await client.resolve_login_name("bob@acme.example", ORG) == ResolvedUser(USER, ORG)
        assert len(search_calls(emu)) == 3


async def test_concurrent_lookups_share_one_request(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """Twenty concurrent lookups of one name while the search is slow cost one search."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG, login_name="carol@acme.example")
    emu.set_fault(Fault.latency(0.2))
    async with connect(settings_for(emu, api, creds)) as client:
        ids = await asyncio.gather(
            *(client.resolve_login_name("carol@acme.example", ORG) for _ in range(20))
        )
    assert ids == [ResolvedUser(USER, ORG)] * 20
    assert len(search_calls(emu)) == 1


GLOBAL_LOOKUP = "/management/v1/global/users/_by_login_name"


async def test_v1_finds_a_login_name_without_an_org_in_any_org(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """v1's search sees only the service account's org; without an org the global lookup is
    used, and the user's own org then carries the lock."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=OTHER_ORG, login_name="Bob@Globex.example")
    async with connect(settings_for(emu, "v1", creds)) as client:
        found = await client.resolve_login_name(" bob@globex.EXAMPLE", None)
        assert found == ResolvedUser(USER, OTHER_ORG)
        assert await client.resolve_login_name("bob@globex.example", None) == found
        assert await client.lock(found.user_id, found.org_id) is LockOutcome.LOCKED
    lookup, lock = api_calls(emu)
    assert (lookup.method, lookup.path, lookup.query) == (
        "GET",
        GLOBAL_LOOKUP,
        {"loginName": "bob@globex.example"},
    )
    assert "x-zitadel-orgid" not in lookup.headers
    assert lock.headers["x-zitadel-orgid"] == OTHER_ORG
    assert emu.state_of(USER) is EmulatedState.LOCKED


async def test_v1_global_lookup_of_an_unknown_name_is_none(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """ZITADEL's 404 QUERY-Dfbg2 is no such user, remembered like any miss."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v1", creds)) as client:
        assert await client.resolve_login_name("nobody@globex.example", None) is None
        assert await client.resolve_login_name("nobody@globex.example", None) is None
    assert [(c.path, c.status) for c in api_calls(emu)] == [(GLOBAL_LOOKUP, 404)]


async def test_v1_with_an_org_searches_only_that_org(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """An event that names an org keeps v1's org-scoped search (and its header)."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=OTHER_ORG, login_name="bob@globex.example")
    async with connect(settings_for(emu, "v1", creds)) as client:
        assert await client.resolve_login_name("bob@globex.example", ORG) is None
        found = await client.resolve_login_name("bob@globex.example", OTHER_ORG)
    assert found == ResolvedUser(USER, OTHER_ORG)
    assert [c.headers.get("x-zitadel-orgid") for c in search_calls(emu)] == [ORG, OTHER_ORG]
    assert not [c for c in emu.calls if c.path == GLOBAL_LOOKUP]


async def test_v2_names_the_org_of_the_user_it_found(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """v2's search is instance-wide; the answer carries the user's org."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=OTHER_ORG, login_name="bob@globex.example")
    async with connect(settings_for(emu, "v2", creds)) as client:
        found = await client.resolve_login_name("bob@globex.example", None)
    assert found == ResolvedUser(USER, OTHER_ORG)


MY_PERMISSIONS = "/auth/v1/permissions/zitadel/me/_search"
THIRD_ORG = "100000000000000003"


def hidden_users(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("lockoutd_zitadel_hidden_users_total") or 0.0


async def test_v2_a_name_hidden_for_want_of_user_read_fails_naming_the_grant(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """v2 ListUsers drops users the caller may not read; an empty answer is then no proof the
    user does not exist: lockoutd says what to grant, counts it, and does not remember a miss."""
    creds = credentials(emu, "pat", tmp_path, {ORG: {"ORG_USER_MANAGER"}})
    emu.add_user(USER, org_id=OTHER_ORG, login_name="bob@globex.example")
    metrics = Metrics()
    async with connect(settings_for(emu, "v2", creds), metrics=metrics) as client:
        hidden = pytest.raises(UnexpectedAnswer, match=rf"user\.read in org {OTHER_ORG}")
        with structlog.testing.capture_logs() as logs, hidden:
            await client.resolve_login_name("bob@globex.example", OTHER_ORG)
        assert client.healthy
        assert hidden_users(metrics) == 1
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["zitadel_users_hidden"]
        probe = next(c for c in emu.calls if c.path == MY_PERMISSIONS)
        assert probe.headers["x-zitadel-orgid"] == OTHER_ORG

        emu.set_roles(SERVICE_ACCOUNT_OF_PAT, {OTHER_ORG: {"ORG_USER_MANAGER"}})
        found = await client.resolve_login_name("bob@globex.example", OTHER_ORG)
    assert found == ResolvedUser(USER, OTHER_ORG)


async def test_v2_without_an_org_checks_the_accounts_own_org_and_the_instance(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """No org in the event: ZITADEL searched every org, so lockoutd asks what the account may
    read in its own org and on the instance."""
    creds = credentials(emu, "pat", tmp_path, {OTHER_ORG: {"ORG_USER_MANAGER"}})
    emu.add_user(USER, org_id=THIRD_ORG, login_name="carol@initech.example")
    async with connect(settings_for(emu, "v2", creds)) as client:
        with pytest.raises(
            UnexpectedAnswer, match=r"user\.read in its own org and on the instance"
        ):
            await client.resolve_login_name("carol@initech.example", None)
    probe = next(c for c in emu.calls if c.path == MY_PERMISSIONS)
    assert "x-zitadel-orgid" not in probe.headers


async def test_v2_an_unknown_name_the_account_could_read_is_none(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """With user.read, an empty answer is no such user: None, and remembered as a miss. One
    permission check serves many unknown names."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v2", creds)) as client:
        for n in range(5):
            assert await client.resolve_login_name(f"nobody{n}@acme.example", ORG) is None
        assert await client.resolve_login_name("nobody0@acme.example", ORG) is None
    assert len(search_calls(emu)) == 5
    assert len([c for c in emu.calls if c.path == MY_PERMISSIONS]) == 1


async def test_v2_an_org_zitadel_does_not_know_is_an_unknown_user(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """An event may name any org: one that does not exist holds no user, and must not stop
    lockoutd as a refusal of lockoutd itself would."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v2", creds)) as client:
        assert await client.resolve_login_name("bob@globex.example", "999999") is None
        assert client.healthy


async def test_a_found_name_needs_no_permission_check(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """The check only runs when v2 finds nobody; v1 refuses a missing permission outright."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG, login_name="dave@acme.example")
    async with connect(settings_for(emu, api, creds)) as client:
        assert await client.resolve_login_name("dave@acme.example", ORG) is not None
        assert await client.resolve_login_name("nobody@acme.example", ORG) is None
    probes = [c for c in emu.calls if c.path == MY_PERMISSIONS]
    assert len(probes) == (1 if api == "v2" else 0)


async def test_the_cache_is_bounded(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """Beyond login_name_cache_size names, the oldest is looked up again."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v1", creds, login_name_cache_size=2)) as client:
        for name in ("a@x", "b@x", "c@x", "c@x", "a@x"):
            await client.resolve_login_name(name, ORG)
    assert len(search_calls(emu)) == 4


async def test_the_org_is_part_of_the_cache_key(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """One name looked up in two orgs is two lookups, each answered for its org."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG, login_name="dave@acme.example")
    async with connect(settings_for(emu, api, creds)) as client:
        assert await client.resolve_login_name("dave@acme.example", ORG) == ResolvedUser(USER, ORG)
        assert await client.resolve_login_name("dave@acme.example", OTHER_ORG) is None
        assert await client.resolve_login_name("dave@acme.example", ORG) == ResolvedUser(USER, ORG)
    assert len(search_calls(emu)) == 2


# --- ids that could change the request ------------------------------------------------------

BAD_IDS = [
    "",
    "..",
    "../1",
    "1/../2",
    "1/_unlock",
    "%2F",
    "1%2F2",
    "1?x",
    "1#",
    "1 ",
    "a1",
    "1" * 65,
]


@pytest.mark.parametrize("user_id", BAD_IDS)
async def test_bad_ids_never_reach_zitadel(
    emu: ZitadelEmulator, tmp_path: Path, user_id: str
) -> None:
    """Ids that are not digit strings are refused and counted before any request."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    metrics = Metrics()
    async with connect(settings_for(emu, "v1", creds), metrics=metrics) as client:
        with pytest.raises(InvalidUserId):
            await client.lock(user_id, ORG)
        with pytest.raises(InvalidUserId):
            await client.unlock(user_id, ORG)
        with pytest.raises(InvalidUserId):
            await client.get_state(user_id, ORG)
    assert emu.calls == []
    assert metrics.registry.get_sample_value("lockoutd_invalid_user_ids_total") == 3


async def test_bad_org_ids_never_reach_zitadel(emu: ZitadelEmulator, tmp_path: Path) -> None:
    """An org id that is not a digit string is refused before it becomes a header."""
    creds = credentials(emu, "pat", tmp_path, INSTANCE_ROLES)
    async with connect(settings_for(emu, "v1", creds)) as client:
        for org in ("../1", "1\r\nx-evil: 1", "1/2"):
            with pytest.raises(InvalidUserId, match="org id"):
                await client.lock(USER, org)
            with pytest.raises(InvalidUserId, match="org id"):
                await client.resolve_login_name("alice", org)
    assert emu.calls == []


# --- refusals of what an event claims ---------------------------------------------------------
# An event names the org (sent as x-zitadel-orgid) and the user; ZITADEL refusing either is about
# the event, not about lockoutd, as long as the service account can act in its own org.

ORG_MANAGER: dict[str, set[str]] = {ORG: {"ORG_USER_MANAGER"}}
OTHER_USER = "200000000000000002"


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("lockoutd_refused_actions_total", {"reason": reason})
    return value or 0.0


def account_of_org(emu: ZitadelEmulator, roles: dict[str, set[str]] | None) -> dict[str, Any]:
    """A service account that lives in ORG, with ``roles``."""
    emu.add_pat(PAT, roles=roles, org_id=ORG)
    return {"pat": SecretStr(PAT)}


def permission_checks(emu: ZitadelEmulator) -> list[Any]:
    return [c for c in emu.calls if c.path == MY_PERMISSIONS]


async def test_an_org_zitadel_does_not_know_fails_that_action_only(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """On v1 the event's org is the org header: an org ZITADEL does not know is the event's
    fault, so that lock fails, counted, and the next one works. The token was accepted (ZITADEL
    checks it first), so nothing needs checking about the account."""
    creds = account_of_org(emu, ORG_MANAGER)
    emu.add_user(USER, org_id=ORG)
    metrics = Metrics()
    async with connect(settings_for(emu, "v1", creds), metrics=metrics) as client:
        with pytest.raises(EventRefused, match=r"ZITADEL knows no org 999 \(HTTP 403.*AUTH-Bs7Ds"):
            await client.lock(USER, "999")
        assert client.healthy
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert refused(metrics, "unknown_org") == 1
    assert refused(metrics, "no_permission") == 0
    assert permission_checks(emu) == []


@pytest.mark.parametrize("call", ["resolve_login_name", "read_user", "get_state", "unlock"])
async def test_v1_every_call_naming_an_unknown_org_fails_alike(
    emu: ZitadelEmulator, tmp_path: Path, call: str
) -> None:
    """Login-name resolution and user reads send the event's org too."""
    creds = account_of_org(emu, ORG_MANAGER)
    async with connect(settings_for(emu, "v1", creds)) as client:
        first = "bob@acme.example" if call == "resolve_login_name" else USER
        with pytest.raises(EventRefused, match="ZITADEL knows no org 999"):
            await getattr(client, call)(first, "999")
        assert client.healthy


async def test_a_user_of_an_org_the_account_may_not_write_fails_naming_the_grant(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """The account manages the users of its own org; an event names a user of another org (v1:
    with that org as its claim). lockoutd asks what the account holds in its own org, finds
    user.write there, and fails this one lock with what to grant."""
    creds = account_of_org(emu, ORG_MANAGER)
    emu.add_user(USER, org_id=ORG)
    emu.add_user(OTHER_USER, org_id=OTHER_ORG)
    metrics = Metrics()
    where = f"org {OTHER_ORG}" if api == "v1" else "the user's org"
    async with connect(settings_for(emu, api, creds), metrics=metrics) as client:
        with pytest.raises(
            EventRefused,
            match=rf"lacks user\.write in {where} .*holds it in its own org.*"
            rf"grant it ORG_USER_MANAGER in {where} or IAM_USER_MANAGER",
        ):
            await client.lock(OTHER_USER, OTHER_ORG)
        assert client.healthy
        assert await client.lock(USER, ORG) is LockOutcome.LOCKED
    assert emu.state_of(OTHER_USER) == UserState.ACTIVE
    assert refused(metrics, "no_permission") == 1
    [check] = permission_checks(emu)
    assert "x-zitadel-orgid" not in check.headers  # its own org and the instance


async def test_v1_a_login_name_found_in_an_org_the_account_may_not_write_fails_naming_it(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """v1 without an org: the instance-wide lookup finds the user in another org, and the lock
    in that org (the one ZITADEL named) is refused: a failed action, not a stop."""
    creds = account_of_org(emu, ORG_MANAGER)
    emu.add_user(OTHER_USER, org_id=OTHER_ORG, login_name="erin@globex.example")
    async with connect(settings_for(emu, "v1", creds)) as client:
        found = await client.resolve_login_name("erin@globex.example", None)
        assert found == ResolvedUser(OTHER_USER, OTHER_ORG)
        with pytest.raises(EventRefused, match=rf"grant it ORG_USER_MANAGER in org {OTHER_ORG}"):
            await client.lock(found.user_id, found.org_id)
        assert client.healthy


async def test_v2_a_user_the_account_may_not_read_fails_naming_the_grant(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """Reading a user (allowlists by login name, the per-org cap) is refused the same way."""
    creds = account_of_org(emu, ORG_MANAGER)
    emu.add_user(OTHER_USER, org_id=OTHER_ORG)
    async with connect(settings_for(emu, "v2", creds)) as client:
        with pytest.raises(EventRefused, match=r"lacks user\.read in the user's org"):
            await client.read_user(OTHER_USER, None)


async def test_one_check_of_the_accounts_own_permissions_serves_many_refusals(
    emu: ZitadelEmulator, api: str, tmp_path: Path
) -> None:
    """A flood of events naming users the account may not write costs one check, not one each."""
    creds = account_of_org(emu, ORG_MANAGER)
    users = [f"20000000000000010{n}" for n in range(4)]
    for user in users:
        emu.add_user(user, org_id=OTHER_ORG)
    async with connect(settings_for(emu, api, creds)) as client:
        for user in users:
            with pytest.raises(EventRefused):
                await client.lock(user, OTHER_ORG)
    assert len(permission_checks(emu)) == 1


@pytest.mark.parametrize(
    "roles",
    [
        pytest.param({ORG: {"ORG_OWNER_VIEWER"}}, id="read-only in its own org"),
        pytest.param({OTHER_ORG: {"ORG_OWNER_VIEWER"}}, id="read-only in another org"),
        pytest.param(None, id="no membership"),
    ],
)
async def test_an_account_that_cannot_write_in_its_own_org_stops(
    emu: ZitadelEmulator, api: str, tmp_path: Path, roles: dict[str, set[str]] | None
) -> None:
    """Refused in its own org, and without user.write there or on the instance: lockoutd itself
    is refused, whatever the event claims, and stops with what to grant."""
    creds = account_of_org(emu, roles)
    emu.add_user(USER, org_id=ORG)
    metrics = Metrics()
    async with connect(settings_for(emu, api, creds), metrics=metrics) as client:
        with pytest.raises(
            ZitadelConfigError,
            match=r"grant the service account ORG_USER_MANAGER in its own org or IAM_USER_MANAGER",
        ):
            await client.lock(USER, ORG)
        assert not client.healthy
    assert refused(metrics, "no_permission") == 0


async def test_an_account_that_manages_another_org_only_fails_the_one_event(
    emu: ZitadelEmulator, api: str
) -> None:
    """An account that lives in one org and manages another's users (a tenant's) can act: an
    event naming a user of its own org fails that decision alone, saying where it may act."""
    creds = account_of_org(emu, {OTHER_ORG: {"ORG_USER_MANAGER"}})
    emu.add_user(USER, org_id=ORG)
    emu.add_user(OTHER_USER, org_id=OTHER_ORG)
    metrics = Metrics()
    async with connect(settings_for(emu, api, creds), metrics=metrics) as client:
        with pytest.raises(EventRefused, match=f"holds it in org {OTHER_ORG}"):
            await client.lock(USER, ORG)
        assert await client.lock(OTHER_USER, OTHER_ORG) is LockOutcome.LOCKED
    assert refused(metrics, "no_permission") == 1


async def test_a_refused_question_about_memberships_is_no_membership_and_never_hangs(
    emu: ZitadelEmulator,
) -> None:
    """Asked which orgs it is a member of, the account is refused (a proxy can answer so): that
    is no membership, and judging the lock's refusal ends; it once waited on its own question."""
    creds = account_of_org(emu, {OTHER_ORG: {"ORG_USER_MANAGER"}})
    emu.add_user(USER, org_id=ORG)
    refused = json.dumps(
        {"code": 7, "message": "No matching permissions found (AUTH-5mWD2)"}
    ).encode()
    emu.set_fault(
        Fault.answer(403, refused, headers={"Content-Type": "application/json"}),
        path_contains="/memberships/me/_search",
    )
    async with connect(settings_for(emu, "v2", creds)) as client:
        with pytest.raises(ZitadelConfigError):
            await asyncio.wait_for(client.lock(USER, ORG), timeout=5)


async def test_an_account_that_lost_its_own_permission_stops_once_the_check_is_renewed(
    emu: ZitadelEmulator, tmp_path: Path
) -> None:
    """The check is remembered for zitadel.login_name_miss_ttl: a revoked role stops lockoutd at
    the first refusal after that."""
    creds = account_of_org(emu, ORG_MANAGER)
    emu.add_user(USER, org_id=ORG)
    emu.add_user(OTHER_USER, org_id=OTHER_ORG)
    clock = Clock()
    settings = settings_for(emu, "v1", creds, login_name_miss_ttl=30.0)
    async with connect(settings, clock=clock) as client:
        with pytest.raises(EventRefused):
            await client.lock(OTHER_USER, OTHER_ORG)
        emu.set_roles(SERVICE_ACCOUNT_OF_PAT, {OTHER_ORG: {"ORG_OWNER_VIEWER"}})
        clock.now += 31
        with pytest.raises(ZitadelConfigError, match="neither in its own org nor on the instance"):
            await client.lock(USER, ORG)
    # Its own org, then again after the time, then the org it is still a member of (read-only).
    assert len(permission_checks(emu)) == 3


# --- secrets --------------------------------------------------------------------------------


async def test_credentials_never_show(
    emu: ZitadelEmulator, api: str, auth: str, tmp_path: Path
) -> None:
    """Tokens, keys and assertions stay out of repr(), logs, errors and their tracebacks."""
    creds = credentials(emu, auth, tmp_path, INSTANCE_ROLES)
    emu.add_user(USER, org_id=ORG)
    errors: list[ZitadelError] = []
    with structlog.testing.capture_logs() as logs:
        async with connect(settings_for(emu, api, creds, retry_attempts=2)) as client:
            emu.set_fault(Fault.status(503, times=1))
            await client.lock(USER, ORG)
            emu.revoke_token(bearer_of(api_calls(emu)[-1]))
            try:
                await client.unlock(USER, ORG)  # PAT: config error; key: refreshed
            except ZitadelConfigError as exc:
                errors.append(exc)
            emu.set_fault(Fault.drop_connection())
            with pytest.raises(ZitadelUnavailable) as dropped:
                await client.get_state(USER, ORG)
            errors.append(dropped.value)
            shown = [repr(client), str(vars(client)), repr(vars(client)["_auth"])]
    secrets = {bearer_of(call) for call in api_calls(emu) if call.status is not None}
    secrets |= {call.body["assertion"] for call in token_calls(emu)}
    if auth == "key":
        secrets.add(key_material(creds["key_file"]))
    assert len(secrets) >= (1 if auth == "pat" else 4)
    # Tracebacks as structlog renders them, locals included and not truncated; this test's own
    # frame (which holds the secrets it looks for) left out.
    render = ExceptionDictTransformer(show_locals=True, locals_max_string=100_000)
    frames = [
        frame
        for error in errors
        for stack in render((type(error), error, error.__traceback__))
        for frame in stack["frames"]
        if frame["filename"] != __file__
    ]
    assert any(frame["locals"] for frame in frames)
    tracebacks = [json.dumps(frames, default=str)]
    everything = "\n".join([*shown, *map(str, errors), *tracebacks, *map(repr, logs)])
    for secret in secrets:
        assert secret not in everything


def bearer_of(call: Any) -> str:
    return str(call.headers["authorization"]).removeprefix("Bearer ")
