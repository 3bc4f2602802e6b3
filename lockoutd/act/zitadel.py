"""The ZITADEL client: lock and unlock users, read a user's state, resolve a login name.

ZITADEL's answers are classified by HTTP status, gRPC code and error id (``details[0].id``, or
the ``(ID)`` suffix of ``message``), never by message text, which ZITADEL translates::

    answer                                        lock               unlock
    200                                           locked             unlocked
    400/9 COMMAND-3NN8v, COMMAND-lgws8wtsqf       read the state *
    400/9 COMMAND-4M0ds, COMMAND-olb9vb0oca                          not_locked
    404 user-not-found ids (_USER_NOT_FOUND)      unknown_user       unknown_user
    401                                           fetch a new token once, then ZitadelConfigError
    403 AUTH-Bs7Ds (the event's org is unknown)   EventRefused (that action fails)
    403 AUTH-5mWD2/-AWfge/-Swrgg2,                EventRefused when the account may act in its
    404 AUTHZ-cdgFk                               own org, else ZitadelConfigError (refusals.py)
    429, 500, 502-504, timeout, connection error  retried, then ZitadelUnavailable
    anything else                                 ZitadelUnavailable, not retried
    v2 search that finds nobody                   ask ListMyZitadelPermissions; without user.read
                                                  there, UnexpectedAnswer (ZITADEL hides users)

    * "already locked" and "deactivated" share one error, so the state decides:
      LOCKED -> already_locked; DELETED or gone -> unknown_user; ACTIVE or INITIAL (states
      ZITADEL locks) -> a race with another writer: lock once more; anything else (INACTIVE,
      SUSPEND, and UNSPECIFIED, which is how v2 shows SUSPEND) -> not_lockable.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import functools
import re
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, urlencode

import httpx
import stamina
import structlog
from pydantic import SecretStr

from lockoutd import __version__
from lockoutd.act import refusals
from lockoutd.act.answers import answer_json
from lockoutd.act.login_names import LoginNameCache
from lockoutd.act.ownership import Version, read_version
from lockoutd.act.user_facts import user_facts
from lockoutd.act.zitadel_auth import TOKEN_PATH, TokenSource, token_source
from lockoutd.decode.limits import is_zitadel_id
from lockoutd.decode.login_name import normalize_login_name
from lockoutd.errors import (
    EventRefused,
    InvalidUserId,
    UnexpectedAnswer,
    ZitadelConfigError,
    ZitadelUnavailable,
)
from lockoutd.report.metrics import Metrics
from lockoutd.settings import ZitadelSettings

__all__ = [
    "ErrorAnswer",
    "LockOutcome",
    "LockReceipt",
    "ResolvedUser",
    "UnlockOutcome",
    "UserSnapshot",
    "UserState",
    "UserStore",
    "ZitadelClient",
    "check_id",
    "read_error",
]

log = structlog.get_logger(__name__)


class LockOutcome(enum.StrEnum):
    LOCKED = "locked"
    ALREADY_LOCKED = "already_locked"
    NOT_LOCKABLE = "not_lockable"
    UNKNOWN_USER = "unknown_user"


class UnlockOutcome(enum.StrEnum):
    UNLOCKED = "unlocked"
    NOT_LOCKED = "not_locked"
    UNKNOWN_USER = "unknown_user"


class UserState(enum.StrEnum):
    """A user's state by name; v1 and v2 number them differently but name them alike."""

    ACTIVE = "USER_STATE_ACTIVE"
    INACTIVE = "USER_STATE_INACTIVE"
    LOCKED = "USER_STATE_LOCKED"
    INITIAL = "USER_STATE_INITIAL"
    DELETED = "USER_STATE_DELETED"
    SUSPEND = "USER_STATE_SUSPEND"
    UNSPECIFIED = "USER_STATE_UNSPECIFIED"


@dataclass(frozen=True, slots=True)
class ResolvedUser:
    """The user a login name names, and the org that owns them (where ZITADEL said)."""

    user_id: str
    org_id: str | None


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """A user as one read shows it: who it is and which version of it lockoutd saw.

    ``state`` and ``version`` tell lockoutd's own lock from anyone else's; ``org_id`` (the org
    the user belongs to, ``details.resourceOwner``) and ``login_names`` are what allowlists and
    the per-org cap match against. ``version`` is None when ZITADEL's answer carried none.
    """

    state: UserState
    version: Version | None
    org_id: str | None = None
    login_names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LockReceipt:
    """A lock's outcome and the user's version after it: the lock's fingerprint when LOCKED,
    the version of the lock found in place when ALREADY_LOCKED, else None."""

    outcome: LockOutcome
    version: Version | None = None
    unanswered: bool = False
    """ALREADY_LOCKED: an attempt of this very call got no answer (a dropped connection, a
    timeout, a gateway's 502 or 504), so the lock found may be the one that attempt made. When
    every earlier attempt was answered (a 503, a 429), none of them locked anyone, and a lock
    found is someone else's, made meanwhile."""


@dataclass
class _Attempts:
    """What the attempts of one call leave unknown (see :attr:`LockReceipt.unanswered`)."""

    unanswered: bool = False


class UserStore(Protocol):
    """What the action executor needs from ZITADEL."""

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome: ...

    async def lock_user(self, user_id: str, org_id: str | None) -> LockReceipt:
        """Lock as :meth:`lock` does, and say which version of the user the lock left."""
        ...

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome: ...

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        """The user ``login_name`` names (in ``org_id`` if given), or None when there is none."""
        ...

    async def read_user(self, user_id: str, org_id: str | None) -> UserSnapshot | None:
        """The user's state, version, org and login names, or None when ZITADEL knows no such
        user (in that org)."""
        ...


MAX_LOGIN_NAME_LENGTH = 200  # loginNameQuery.loginName maxLength in the API

_LOCK_REFUSED = frozenset({"COMMAND-3NN8v", "COMMAND-lgws8wtsqf"})
_NOT_LOCKED = frozenset({"COMMAND-4M0ds", "COMMAND-olb9vb0oca"})
_USER_NOT_FOUND = frozenset(
    {
        "COMMAND-5M9fs",  # v1 lock
        "COMMAND-450yxuqrh1",  # v2 lock
        "COMMAND-M0dos",  # v1 unlock
        "COMMAND-x377t913pw",  # v2 unlock
        "QUERY-Dfbg2",  # v1 and v2 get
        "MANAG-fpo4B",  # v1 get, user in another org
    }
)
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_UNANSWERED = frozenset({None, 502, 504})
"""Attempts that ended without ZITADEL's answer (no HTTP status: a dropped connection or a
timeout; a gateway that lost ZITADEL): the request may have taken effect all the same."""
MAX_ANSWER_BYTES = 1 << 20
"""The largest answer body read (ZITADEL's are a few kilobytes): a larger one is not read."""
# ListMyZitadelPermissions: what the caller may do in the context org and on the instance.
_MY_PERMISSIONS = "/auth/v1/permissions/zitadel/me/_search"
_MY_MEMBERSHIPS = "/auth/v1/memberships/me/_search"
_MAX_MEMBER_ORGS = 16
"""Orgs of the account's memberships asked about when a refusal is judged (each one request)."""
_ID_SUFFIX = re.compile(r"\(([A-Za-z0-9]+-[A-Za-z0-9]+)\)\s*$")


@dataclass(frozen=True, slots=True)
class _Api:
    lock: str
    unlock: str
    get: str
    search: str
    org_header: bool
    """v1 scopes every call to the org in ``x-zitadel-orgid``; v2 looks users up instance-wide."""
    id_field: str
    global_lookup: str | None = None
    """v1's instance-wide exact lookup, for login names that come without an org."""


_APIS = {
    "v1": _Api(
        lock="/management/v1/users/{id}/_lock",
        unlock="/management/v1/users/{id}/_unlock",
        get="/management/v1/users/{id}",
        search="/management/v1/users/_search",
        org_header=True,
        id_field="id",
        global_lookup="/management/v1/global/users/_by_login_name",
    ),
    "v2": _Api(
        lock="/v2/users/{id}/lock",
        unlock="/v2/users/{id}/unlock",
        get="/v2/users/{id}",
        search="/v2/users",
        org_header=False,
        id_field="userId",
    ),
}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """The parts of a ZITADEL error that classify it; never the (translated) message."""

    status: int
    code: int | None = None
    id: str | None = None

    def describe(self) -> str:
        parts = [f"HTTP {self.status}"]
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.id is not None:
            parts.append(self.id)
        return ", ".join(parts)


def read_error(status: int, content: bytes) -> ErrorAnswer:
    """Classify an error body: ``{"code": 9, "message": "... (ID)", "details": [{"id": ...}]}``.

    Bodies that are not ZITADEL's (a proxy's HTML page, say) leave ``code`` and ``id`` unset.
    """
    try:
        body: Any = answer_json(content)
    except ValueError:
        return ErrorAnswer(status)
    if not isinstance(body, dict):
        return ErrorAnswer(status)
    code = body.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    error_id = None
    details = body.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        first = details[0].get("id")
        error_id = first if isinstance(first, str) and first else None
    message = body.get("message")
    if error_id is None and isinstance(message, str) and (match := _ID_SUFFIX.search(message)):
        error_id = match.group(1)
    return ErrorAnswer(status, code, error_id)


def check_id(value: str, *, what: str = "user id") -> str:
    """``value`` if it is a ZITADEL id (a digit string), else :class:`InvalidUserId`.

    ZITADEL ids are decimal snowflakes. Anything else could change the request path, so it is
    refused before it reaches a URL (and quoted anyway)."""
    if not isinstance(value, str) or not is_zitadel_id(value):
        shown = value[:80] if isinstance(value, str) else value
        raise InvalidUserId(f"{what} {shown!r} is not a ZITADEL id (expected a digit string)")
    return value


class _Retryable(Exception):
    """One attempt failed in a way worth another try; never leaves this module."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        *,
        reason: str = "",
        retry_after: float | None = None,
        answer: ErrorAnswer | None = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.answer = answer
        self.attempt = 0  # set by the retry loop
        super().__init__(self.describe())

    def describe(self) -> str:
        # The code and id tell ZITADEL's own 429s (an exhausted quota, a blocked instance) from
        # a proxy's, which is what an operator needs to know to end the outage.
        if self.answer is not None:
            return self.answer.describe()
        return f"HTTP {self.status}" if self.status is not None else self.reason


class _Bearer(httpx.Auth):
    """Adds the bearer token to a request; its repr never shows the token."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "_Bearer(token='**********')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["authorization"] = "Bearer " + self._token.get_secret_value()
        yield request


class ZitadelClient:
    """Talks to one ZITADEL instance as one service account; implements :class:`UserStore`.

    Use it as an async context manager: it owns its HTTP client. Every public call is bounded by
    ``retry_timeout`` across all its requests, at most ``max_concurrency`` requests are in
    flight, and login names are resolved through a TTL cache.
    """

    def __init__(
        self,
        settings: ZitadelSettings,
        *,
        metrics: Metrics,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait_initial: float = 0.1,
        wait_max: float = 5.0,
        wait_jitter: float = 1.0,
    ) -> None:
        self._settings = settings
        self._api = _APIS[settings.api]
        self._metrics = metrics
        self._wait_initial = wait_initial
        self._wait_max = wait_max
        self._wait_jitter = wait_jitter
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._healthy = True
        # Read the credentials first: a missing file must stop the start before any network.
        self._auth: TokenSource = token_source(
            settings, request_token=self._request_token, clock=clock
        )
        self._names: LoginNameCache[tuple[str, str | None], ResolvedUser] = LoginNameCache(
            ttl=settings.login_name_cache_ttl,
            miss_ttl=settings.login_name_miss_ttl,
            max_size=settings.login_name_cache_size,
            clock=clock,
        )
        # What the account may do, per org asked about (None: its own org and the instance;
        # an org ZITADEL does not know holds nothing and is cached as None). Kept as briefly as
        # a miss, so a grant or a revocation takes effect as soon as a miss would.
        self._granted: LoginNameCache[str | None, frozenset[str] | None] = LoginNameCache(
            ttl=settings.login_name_miss_ttl,
            miss_ttl=settings.login_name_miss_ttl,
            max_size=settings.login_name_cache_size,
            clock=clock,
        )
        # The orgs the account is a member of (one entry), kept as briefly as its permissions.
        self._member_orgs: LoginNameCache[None, tuple[str, ...]] = LoginNameCache(
            ttl=settings.login_name_miss_ttl,
            miss_ttl=settings.login_name_miss_ttl,
            max_size=1,
            clock=clock,
        )
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            http2=True,
            timeout=settings.timeout,
            verify=tls_verification(settings),
            limits=httpx.Limits(
                max_connections=settings.max_concurrency,
                max_keepalive_connections=settings.max_concurrency,
                keepalive_expiry=30.0,
            ),
            headers={"user-agent": f"lockoutd/{__version__}", "accept-encoding": "identity"},
            transport=transport,
        )

    def __repr__(self) -> str:
        return (
            f"ZitadelClient(base_url={self._settings.base_url!r}, api={self._settings.api!r}, "
            f"auth={self._auth!r})"
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    @property
    def healthy(self) -> bool:
        """False once a call failed for want of a usable answer, True again after one got it."""
        return self._healthy

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome:
        """Lock a user; an already locked, deactivated or unknown user is an outcome."""
        return (await self.lock_user(user_id, org_id)).outcome

    async def lock_user(self, user_id: str, org_id: str | None) -> LockReceipt:
        """Lock a user, and say which version of the user the lock left (its fingerprint)."""
        path = self._user_path(self._api.lock, user_id)
        org = self._org(org_id)
        deadline = self._deadline()
        attempts = _Attempts()
        for attempt in (1, 2):
            response = await self._call(
                "lock", "POST", path, org, body={}, deadline=deadline, attempts=attempts
            )
            if response.is_success:
                return LockReceipt(LockOutcome.LOCKED, self._changed("lock", response))
            answer = read_error(response.status_code, response.content)
            if answer.status == 404 and answer.id in _USER_NOT_FOUND:
                return LockReceipt(LockOutcome.UNKNOWN_USER)
            if not (answer.status == 400 and answer.id in _LOCK_REFUSED):
                raise _unexpected("lock", answer)
            snapshot = await self._read(user_id, org, deadline)
            state = snapshot.state if snapshot is not None else None
            if snapshot is None or state is UserState.DELETED:
                return LockReceipt(LockOutcome.UNKNOWN_USER)
            if state is UserState.LOCKED:
                return LockReceipt(
                    LockOutcome.ALREADY_LOCKED, snapshot.version, attempts.unanswered
                )
            if state not in (UserState.ACTIVE, UserState.INITIAL):
                # INACTIVE, SUSPEND, or UNSPECIFIED, which is how v2 shows a suspended user.
                return LockReceipt(LockOutcome.NOT_LOCKABLE)
            # Refused as "not active", yet active now: someone else changed the user meanwhile.
            log.info("zitadel_lock_raced", user_id=user_id, state=str(state), attempt=attempt)
        raise UnexpectedAnswer(
            "ZITADEL refused lock twice while reporting the user as lockable; the user's state "
            "keeps changing"
        )

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        """Unlock a user; a user that is not locked, or unknown, is an outcome.

        Tried once: ZITADEL's unlock takes no expected version, and the caller read the user
        just before to judge that the lock is lockoutd's. A retry seconds later would undo
        whatever lock the user holds by then (an administrator's, another instance's), so an
        unlock that failed is judged again, from a new read, before it is tried again."""
        path = self._user_path(self._api.unlock, user_id)
        org = self._org(org_id)
        response = await self._call(
            "unlock", "POST", path, org, body={}, deadline=self._deadline(), once=True
        )
        if response.is_success:
            self._changed("unlock", response)
            return UnlockOutcome.UNLOCKED
        answer = read_error(response.status_code, response.content)
        if answer.status == 400 and answer.id in _NOT_LOCKED:
            return UnlockOutcome.NOT_LOCKED
        if answer.status == 404 and answer.id in _USER_NOT_FOUND:
            return UnlockOutcome.UNKNOWN_USER
        raise _unexpected("unlock", answer)

    async def get_state(self, user_id: str, org_id: str | None) -> UserState | None:
        """The user's state, or None when ZITADEL knows no such user (in that org, for v1)."""
        return await self._state(user_id, self._org(org_id), self._deadline())

    async def read_user(self, user_id: str, org_id: str | None) -> UserSnapshot | None:
        """The user as ZITADEL shows it now (state, version, org, login names); None for an
        unknown user (in that org, for v1). One ``get_user`` request, never cached."""
        return await self._read(user_id, self._org(org_id), self._deadline())

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> ResolvedUser | None:
        """The user ``login_name`` names (case-insensitive), or None when there is none.

        With an org, only that org is searched. Without one the whole instance is: v2's search
        is instance-wide, and v1 uses its global lookup, since v1's search only sees the service
        account's own org. The answer names the user's org, which v1 needs to act on them.
        Answers are cached; concurrent calls for the same name and org share one request.
        """
        org = self._org(org_id)
        name = normalize_login_name(login_name)
        if not name or len(name) > MAX_LOGIN_NAME_LENGTH:
            return None  # ZITADEL cannot hold such a name; asking would only cost a request
        return await self._names.get((name, org), lambda: self._find_user(name, org))

    async def ask(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        org_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One request about lockoutd's own account (``/auth/v1/...``), with the token,
        retries and refusals of every other call; the answer is the caller's to read.

        ``org_id`` is sent as ``x-zitadel-orgid`` whatever the API: the Auth API answers in the
        context of that org under v2 as well."""
        org = self._org(org_id)
        return await self._call(
            operation, method, path, org, body=body, deadline=self._deadline(), org_header=True
        )

    async def _state(self, user_id: str, org: str | None, deadline: float) -> UserState | None:
        snapshot = await self._read(user_id, org, deadline)
        return snapshot.state if snapshot is not None else None

    async def _read(self, user_id: str, org: str | None, deadline: float) -> UserSnapshot | None:
        path = self._user_path(self._api.get, user_id)
        response = await self._call("get_user", "GET", path, org, body=None, deadline=deadline)
        if not response.is_success:
            answer = read_error(response.status_code, response.content)
            if answer.status == 404 and answer.id in _USER_NOT_FOUND:
                return None
            raise _unexpected("get_user", answer)
        try:
            body = answer_json(response.content)
            user = body["user"]
            # protojson omits an enum at its zero value, USER_STATE_UNSPECIFIED.
            state = user.get("state", UserState.UNSPECIFIED.value)
            # v1 and v2 both carry the user's own details (v2 repeats them at the top level).
            version = read_version(user.get("details"))
            facts = user_facts(user_id, body)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unexpected("get_user", ErrorAnswer(response.status_code)) from None
        try:
            known = UserState(state)
        except ValueError:
            known = UserState.UNSPECIFIED
        return UserSnapshot(known, version, facts.org_id, facts.login_names)

    async def _find_user(self, name: str, org: str | None) -> ResolvedUser | None:
        if org is None and self._api.global_lookup is not None:
            return await self._find_user_globally(name, self._api.global_lookup)
        queries: list[dict[str, Any]] = [
            {
                "loginNameQuery": {
                    "loginName": name,
                    "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
                }
            }
        ]
        if org is not None and not self._api.org_header:
            queries.append({"organizationIdQuery": {"organizationId": org}})
        # Two, not one: a second match means the name is ambiguous and nobody is locked.
        body = {"query": {"limit": 2}, "queries": queries}
        response = await self._call(
            "find_user", "POST", self._api.search, org, body=body, deadline=self._deadline()
        )
        if not response.is_success:
            raise _unexpected("find_user", read_error(response.status_code, response.content))
        try:
            results = answer_json(response.content).get("result") or []
            found = [self._resolved(user, org) for user in results]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unexpected("find_user", ErrorAnswer(response.status_code)) from None
        if len(found) > 1:
            log.warning("login_name_ambiguous", org_id=org, matches=len(found))
            return None
        if not found and not self._api.org_header and not await self._may_read_users(org):
            raise self._users_hidden(org)
        return found[0] if found else None

    async def _may_read_users(self, org: str | None) -> bool:
        """Whether the account holds ``user.read`` in ``org`` (or its own org) or instance-wide.

        v2's ListUsers drops the users the caller may not read without saying so, so "found
        nobody" proves nothing until this is known. An org ZITADEL does not know holds nobody:
        that counts as readable (the name is simply unknown), never as lockoutd's own fault.
        """
        granted = await self._permissions(org)
        return granted is None or "user.read" in granted

    async def _permissions(self, org: str | None) -> frozenset[str] | None:
        """What the account may do in ``org`` (None: its own org) and on the instance, as
        ``ListMyZitadelPermissions`` answers; None when ZITADEL knows no such org. Cached."""

        async def ask() -> frozenset[str] | None:
            response = await self._about_the_account("permissions", _MY_PERMISSIONS, org)
            if not response.is_success:
                answer = read_error(response.status_code, response.content)
                if answer.id == refusals.UNKNOWN_ORG:
                    return None
                if refusals.asks_about_the_account(answer.id):
                    return frozenset()  # any caller may ask; a refusal grants nothing
                raise _unexpected("permissions", answer)
            try:
                granted = answer_json(response.content).get("result") or []
            except (ValueError, AttributeError):
                raise _unexpected("permissions", ErrorAnswer(response.status_code)) from None
            if not isinstance(granted, list):
                raise _unexpected("permissions", ErrorAnswer(response.status_code))
            return frozenset(name for name in granted if isinstance(name, str))

        return await self._granted.get(org, ask)

    async def _about_the_account(
        self, operation: str, path: str, org: str | None
    ) -> httpx.Response:
        """A question of the Auth API about lockoutd's own account, asked while a refusal may be
        judged. Its own refusal is an answer, never judged in turn: that judgement would ask the
        same question again, and wait on itself."""
        return await self._call(
            operation,
            "POST",
            path,
            org,
            body={},
            deadline=self._deadline(),
            org_header=True,
            tolerate=refusals.REFUSED,
        )

    def _users_hidden(self, org: str | None) -> UnexpectedAnswer:
        self._metrics.zitadel_hidden_users.inc()
        log.warning("zitadel_users_hidden", org_id=org, permission="user.read")
        if org is not None:
            where, grant = f"org {org}", f"ORG_USER_MANAGER in org {org} or IAM_USER_MANAGER"
        else:  # without an org, v2 searched every org
            where, grant = "its own org and on the instance", "IAM_USER_MANAGER"
        return UnexpectedAnswer(
            "ZITADEL found no user with this login name, but it hides the users lockoutd may not "
            f"read and the service account lacks user.read in {where}: grant it {grant} so that "
            "login names resolve"
        )

    async def _find_user_globally(self, name: str, path: str) -> ResolvedUser | None:
        """v1's ``GetUserByLoginNameGlobal``: an exact (case-insensitive) match in any org.

        ZITADEL answers 404 ``QUERY-Dfbg2`` both for no match and for more than one, so an
        ambiguous name resolves to nobody here as it does in a search.
        """
        response = await self._call(
            "find_user",
            "GET",
            f"{path}?{urlencode({'loginName': name})}",
            None,
            body=None,
            deadline=self._deadline(),
        )
        if not response.is_success:
            answer = read_error(response.status_code, response.content)
            if answer.status == 404 and answer.id in _USER_NOT_FOUND:
                return None
            raise _unexpected("find_user", answer)
        try:
            return self._resolved(answer_json(response.content)["user"], None)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unexpected("find_user", ErrorAnswer(response.status_code)) from None

    def _resolved(self, user: dict[str, Any], org: str | None) -> ResolvedUser:
        """A user of a search or lookup answer; a malformed one raises KeyError or TypeError."""
        user_id = str(user[self._api.id_field])
        owner = user.get("details", {}).get("resourceOwner")
        if isinstance(owner, str) and is_zitadel_id(owner):
            return ResolvedUser(user_id, owner)
        return ResolvedUser(user_id, org)

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        org: str | None,
        *,
        body: dict[str, Any] | None,
        deadline: float,
        org_header: bool | None = None,
        tolerate: frozenset[str] = frozenset(),
        attempts: _Attempts | None = None,
        once: bool = False,
    ) -> httpx.Response:
        """One API request with a bearer token; faults in lockoutd's own setup raise here.

        A 401 earns one new token: the PAT file may have been rotated, the access token may have
        been revoked. A second 401 means the credentials themselves are refused. ``org_header``
        sends ``org`` as ``x-zitadel-orgid`` whatever the API; error ids in ``tolerate`` are
        answered to the caller instead of being taken for a fault of lockoutd's setup. ``once``
        sends the request once: an outage raises ZitadelUnavailable instead of a retry.
        """
        send_org = self._api.org_header if org_header is None else org_header
        headers = {"x-zitadel-orgid": org} if org is not None and send_org else {}
        try:
            token = await self._auth.token()
        except ZitadelConfigError:
            self._healthy = False
            raise
        send = functools.partial(
            self._send,
            operation,
            method,
            path,
            headers=headers,
            body=body,
            deadline=deadline,
            attempts=attempts,
            once=once,
        )
        response = await send(auth=_Bearer(token))
        if response.status_code == 401:
            if not await self._auth.refresh(token):
                raise self._unauthorized(operation, response, refreshed=False)
            log.warning("zitadel_token_rejected", operation=operation)
            token = await self._auth.token()
            response = await send(auth=_Bearer(token))  # once more, with the refreshed token
            if response.status_code == 401:
                raise self._unauthorized(operation, response, refreshed=True)
        if not response.is_success:
            answer = read_error(response.status_code, response.content)
            if answer.id in tolerate:
                return response
            if answer.id in refusals.REFUSED:
                raise await self._refusal(answer, operation, path, org if headers else None)
        return response

    async def _refusal(
        self, answer: ErrorAnswer, operation: str, path: str, org: str | None
    ) -> EventRefused | ZitadelConfigError:
        """The error for ZITADEL refusing a call: of one event's claim, or of lockoutd itself.

        ``org`` is the org header the call sent, if any. A refused permission is lockoutd's own
        fault only if the account lacks it in its own org and on the instance too.
        """
        permission = self._permission_for(operation, path)
        own: frozenset[str] = frozenset()
        elsewhere: tuple[str, ...] = ()
        if refusals.asks_about_the_account(answer.id):
            own = await self._permissions(None) or frozenset()
            if permission not in own:
                elsewhere = await self._member_orgs_holding(permission)
        if org is not None:
            where = f"org {org}"
        else:
            where = "its own org" if self._api.org_header else "the user's org"
        error = refusals.classify(
            answer.id,
            answer.describe(),
            operation=operation,
            permission=permission,
            where=where,
            org=org,
            own=own,
            member_orgs=elsewhere,
        )
        if isinstance(error, EventRefused):
            self._metrics.refused_actions.labels(reason=error.reason).inc()
            return error
        self._healthy = False
        if error is None:  # pragma: no cover - REFUSED holds only ids classify knows
            raise AssertionError(f"unclassified refusal {answer.describe()}")
        return error

    async def _member_orgs_holding(self, permission: str) -> tuple[str, ...]:
        """The orgs (a few at most) the account is a member of and holds ``permission`` in.

        Asked only when a refusal would otherwise stop the daemon, and cached as briefly as the
        account's permissions are."""

        async def ask() -> tuple[str, ...]:
            response = await self._about_the_account("memberships", _MY_MEMBERSHIPS, None)
            if not response.is_success:
                return ()
            try:
                found = answer_json(response.content).get("result") or []
                orgs = [str(m["orgId"]) for m in found if isinstance(m, dict) and m.get("orgId")]
            except (ValueError, AttributeError, TypeError):
                return ()
            return tuple(dict.fromkeys(orgs))[:_MAX_MEMBER_ORGS]

        holding = []
        for org in await self._member_orgs.get(None, ask) or ():
            granted = await self._permissions(org)
            if granted is not None and permission in granted:
                holding.append(org)
        return tuple(holding)

    def _permission_for(self, operation: str, path: str) -> str:
        """The permission ZITADEL checks for ``operation`` (as the README's table lists it)."""
        if operation in ("lock", "unlock"):
            return "user.write"
        if self._api.global_lookup is not None and path.startswith(self._api.global_lookup):
            return "user.global.read"
        return "user.read"

    async def _request_token(self, form: SecretStr) -> httpx.Response:
        return await self._send(
            "token",
            "POST",
            TOKEN_PATH,
            headers={"content-type": "application/x-www-form-urlencoded"},
            form=form,
            deadline=self._deadline(),
        )

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        auth: _Bearer | None = None,
        headers: dict[str, str],
        body: dict[str, Any] | None = None,
        form: SecretStr | None = None,
        deadline: float,
        attempts: _Attempts | None = None,
        once: bool = False,
    ) -> httpx.Response:
        """Send until an answer is usable or the retries are spent (ZitadelUnavailable); with
        ``once``, a single attempt.

        ``attempts`` learns whether an attempt went unanswered (and may have taken effect).

        The token travels in ``auth`` and the token form as a secret: tracebacks rendered with
        their locals (structlog's, rich's) then show nothing worth stealing.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._healthy = False
            raise ZitadelUnavailable(
                f"ZITADEL {operation}: the retry budget of {self._settings.retry_timeout:g}s "
                "is spent"
            )
        last: _Retryable | None = None
        try:
            async for attempt in stamina.retry_context(
                on=_backoff_hook(deadline),
                attempts=1 if once else self._settings.retry_attempts,
                timeout=remaining,
                wait_initial=self._wait_initial,
                wait_max=self._wait_max,
                wait_jitter=self._wait_jitter,
            ):
                # A failed attempt leaves this block through stamina, which waits and loops.
                with attempt:
                    if last is not None:
                        # Debug detail: the action that waits logs its retries, with its
                        # rule and user (the executor's lock_retrying).
                        log.debug(
                            "zitadel_retrying",
                            operation=operation,
                            attempt=attempt.num,
                            status=last.status if last.status is not None else "error",
                            reason=last.describe(),
                        )
                    request = self._http.build_request(
                        method,
                        path,
                        headers=headers,
                        json=body,
                        content=form.get_secret_value().encode() if form is not None else None,
                    )
                    try:
                        response = await self._attempt(operation, request, auth, deadline)
                    except _Retryable as exc:
                        exc.attempt = attempt.num
                        last = exc
                        if attempts is not None and exc.status in _UNANSWERED:
                            attempts.unanswered = True
                        # Not ready from the first failed attempt: an operator watching /readyz
                        # should not wait for the retries to run out to learn of an outage.
                        self._healthy = False
                        raise
                    self._healthy = True
                    return response
        except _Retryable as exc:
            self._healthy = False
            # from None: the chained httpx frames hold the request headers among their locals.
            raise ZitadelUnavailable(
                f"ZITADEL did not answer {operation} usefully after {exc.attempt} attempt(s); "
                f"last: {exc.describe()}"
            ) from None
        raise AssertionError("stamina ended without an attempt")  # pragma: no cover

    async def _attempt(
        self, operation: str, request: httpx.Request, auth: _Bearer | None, deadline: float
    ) -> httpx.Response:
        async with self._semaphore:
            started = time.perf_counter()
            # httpx's timeout bounds each read, and a body trickled a byte at a time never trips
            # it: the whole answer gets zitadel.timeout, and never more than the budget left.
            seconds = min(self._settings.timeout, max(0.0, deadline - time.monotonic()))
            try:
                async with asyncio.timeout(seconds):
                    response = await self._answer(request, auth)
            except TimeoutError:
                self._observe(operation, "error", started)
                raise _Retryable(
                    operation, None, reason="Timeout: the whole answer took over zitadel.timeout"
                ) from None
            except httpx.TransportError as exc:  # timeouts, refused and dropped connections
                self._observe(operation, "error", started)
                raise _Retryable(operation, None, reason=type(exc).__name__) from None
            except (httpx.RequestError, _Unreadable) as exc:  # not retried here
                self._observe(operation, "error", started)
                why = str(exc) if isinstance(exc, _Unreadable) else type(exc).__name__
                raise ZitadelUnavailable(
                    f"ZITADEL's answer to {operation} could not be read ({why})"
                ) from None
            self._observe(operation, str(response.status_code), started)
        if response.status_code in _RETRY_STATUSES:
            raise _Retryable(
                operation,
                response.status_code,
                retry_after=_retry_after(response),
                answer=read_error(response.status_code, response.content),
            )
        return response

    async def _answer(self, request: httpx.Request, auth: _Bearer | None) -> httpx.Response:
        """The answer to ``request``, its body read whole if it is no larger than
        :data:`MAX_ANSWER_BYTES` and not compressed (lockoutd asks for no compression: a few
        kilobytes of a compressed bomb would otherwise be gigabytes in memory)."""
        response = await self._http.send(
            request, auth=auth or httpx.USE_CLIENT_DEFAULT, stream=True
        )
        try:
            coding = response.headers.get("content-encoding", "identity").strip().lower()
            if coding not in ("", "identity"):
                raise _Unreadable(
                    f"it is compressed ({coding[:40]}), which lockoutd did not ask for"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # as sent: nothing to inflate
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise _Unreadable(f"it is larger than {MAX_ANSWER_BYTES} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            request=request,
            extensions=response.extensions,
        )

    def _changed(self, operation: str, response: httpx.Response) -> Version | None:
        """The version a successful lock or unlock left (in its ``details``; None when they do
        not say). ZITADEL answers a change with a JSON object: any other success (a proxy's page,
        a ``base_url`` that names another service) is no proof that anything changed, and the
        call is unavailable until ZITADEL itself answers."""
        try:
            body = answer_json(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._healthy = False
            raise ZitadelUnavailable(
                f"the answer to {operation} (HTTP {response.status_code}) is not ZITADEL's: it is "
                "not a JSON object; check that zitadel.base_url names the instance, not a proxy's "
                "page or another service"
            )
        return read_version(body.get("details"))

    def _observe(self, operation: str, code: str, started: float) -> None:
        self._metrics.zitadel_requests.labels(operation, code).inc()
        self._metrics.zitadel_request_duration.labels(operation).observe(
            time.perf_counter() - started
        )

    def _user_path(self, template: str, user_id: str) -> str:
        try:
            checked = check_id(user_id)
        except InvalidUserId:
            self._metrics.invalid_user_ids.inc()
            raise
        return template.format(id=quote(checked, safe=""))

    def _org(self, org_id: str | None) -> str | None:
        if org_id is None or org_id == "":
            return None
        try:
            return check_id(org_id, what="org id")
        except InvalidUserId:
            self._metrics.invalid_user_ids.inc()
            raise

    def _deadline(self) -> float:
        return time.monotonic() + self._settings.retry_timeout

    def _unauthorized(
        self, operation: str, response: httpx.Response, *, refreshed: bool
    ) -> ZitadelConfigError:
        self._healthy = False
        answer = read_error(response.status_code, response.content)
        again = " even after fetching a new one" if refreshed else ""
        return ZitadelConfigError(
            f"ZITADEL rejected lockoutd's token for {operation} ({answer.describe()}){again}: "
            f"check {self._auth.describe()} (revoked or expired?) and, for a key file, that "
            "zitadel.audience or zitadel.base_url is the instance URL"
        )


class _Unreadable(Exception):
    """An answer lockoutd does not read: compressed, or larger than :data:`MAX_ANSWER_BYTES`."""


def _backoff_hook(deadline: float) -> Callable[[BaseException], bool | float]:
    """Retry only :class:`_Retryable`; a ``Retry-After`` sets the wait unless it overruns."""

    def hook(exc: BaseException) -> bool | float:
        if not isinstance(exc, _Retryable):
            return False
        if exc.retry_after is None:
            return True
        if time.monotonic() + exc.retry_after > deadline:
            return False  # waiting as asked would overrun the budget: give up now
        return exc.retry_after

    return hook


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):  # a date no calendar holds is no date
        return None
    return max(0.0, seconds)


def _unexpected(operation: str, answer: ErrorAnswer) -> UnexpectedAnswer:
    # Not retried (a 4xx would only repeat), but failed rather than fatal: one odd user must not
    # stop every other lock.
    hint = ""
    if answer.id is None and answer.status == 404:
        hint = "; check zitadel.base_url and zitadel.api"
    return UnexpectedAnswer(
        f"ZITADEL answered {operation} with {answer.describe()}, which lockoutd does not "
        f"expect{hint}"
    )


def tls_verification(settings: ZitadelSettings) -> ssl.SSLContext | bool:
    """What httpx verifies ZITADEL's certificate with; an unreadable ``ca_file`` is an error."""
    if settings.ca_file is None:
        return settings.verify_tls
    try:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ZitadelConfigError(
            f"cannot load zitadel.ca_file {settings.ca_file} ({exc.strerror or exc}): point it at "
            "a PEM bundle of the CA that signed ZITADEL's certificate"
        ) from None
