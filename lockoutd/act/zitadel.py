"""The ZITADEL client: lock and unlock users, read a user's state, resolve a login name.

ZITADEL's answers are classified by HTTP status, gRPC code and error id (``details[0].id``, or
the ``(ID)`` suffix of ``message``), never by message text, which ZITADEL translates::

    answer                                        lock               unlock
    200                                           locked             unlocked
    400/9 COMMAND-3NN8v, COMMAND-lgws8wtsqf       read the state *
    400/9 COMMAND-4M0ds, COMMAND-olb9vb0oca                          not_locked
    404 user-not-found ids (_USER_NOT_FOUND)      unknown_user       unknown_user
    401                                           fetch a new token once, then ZitadelConfigError
    403 AUTH-5mWD2/-AWfge/-Swrgg2, AUTH-Bs7Ds,
    404 AUTHZ-cdgFk                               ZitadelConfigError (lockoutd itself is refused)
    429, 500, 502-504, timeout, connection error  retried, then ZitadelUnavailable
    anything else                                 ZitadelUnavailable, not retried

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
import json
import re
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote

import httpx
import stamina
import structlog
from pydantic import SecretStr

from lockoutd import __version__
from lockoutd.act.login_names import LoginNameCache
from lockoutd.act.zitadel_auth import TOKEN_PATH, TokenSource, token_source
from lockoutd.errors import (
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
    "UnlockOutcome",
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


class UserStore(Protocol):
    """What the action executor needs from ZITADEL."""

    async def lock(self, user_id: str, org_id: str | None) -> LockOutcome: ...

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome: ...

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> str | None:
        """The user id for ``login_name``, or None when there is no such user."""
        ...


# ZITADEL ids are decimal snowflakes. Anything else could change the request path, so it is
# refused before it reaches a URL (and quoted anyway).
MAX_ID_LENGTH = 64
_ID = re.compile(r"[0-9]+")
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
_MISSING_PERMISSION = frozenset({"AUTH-5mWD2", "AUTH-AWfge", "AUTH-Swrgg2"})
_NO_MEMBERSHIP = "AUTHZ-cdgFk"
_UNKNOWN_ORG = "AUTH-Bs7Ds"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
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


_APIS = {
    "v1": _Api(
        lock="/management/v1/users/{id}/_lock",
        unlock="/management/v1/users/{id}/_unlock",
        get="/management/v1/users/{id}",
        search="/management/v1/users/_search",
        org_header=True,
        id_field="id",
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
        body: Any = json.loads(content)
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
    """``value`` if it is a ZITADEL id (a digit string), else :class:`InvalidUserId`."""
    # [0-9] is ASCII only; str.isdigit() would also take full-width and Arabic-Indic digits.
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _ID.fullmatch(value):
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
    ) -> None:
        self.operation = operation
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.attempt = 0  # set by the retry loop
        super().__init__(self.describe())

    def describe(self) -> str:
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
        self._wait = {
            "wait_initial": wait_initial,
            "wait_max": wait_max,
            "wait_jitter": wait_jitter,
        }
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._healthy = True
        # Read the credentials first: a missing file must stop the start before any network.
        self._auth: TokenSource = token_source(
            settings, request_token=self._request_token, clock=clock
        )
        self._names: LoginNameCache[tuple[str, str | None]] = LoginNameCache(
            ttl=settings.login_name_cache_ttl,
            miss_ttl=settings.login_name_miss_ttl,
            max_size=settings.login_name_cache_size,
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
            headers={"user-agent": f"lockoutd/{__version__}"},
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
        path = self._user_path(self._api.lock, user_id)
        get_path = self._user_path(self._api.get, user_id)
        org = self._org(org_id)
        deadline = self._deadline()
        for attempt in (1, 2):
            response = await self._call("lock", "POST", path, org, body={}, deadline=deadline)
            if response.is_success:
                return LockOutcome.LOCKED
            answer = read_error(response.status_code, response.content)
            if answer.status == 404 and answer.id in _USER_NOT_FOUND:
                return LockOutcome.UNKNOWN_USER
            if not (answer.status == 400 and answer.id in _LOCK_REFUSED):
                raise _unexpected("lock", answer)
            state = await self._state(get_path, org, deadline)
            if state is None or state is UserState.DELETED:
                return LockOutcome.UNKNOWN_USER
            if state is UserState.LOCKED:
                return LockOutcome.ALREADY_LOCKED
            if state not in (UserState.ACTIVE, UserState.INITIAL):
                # INACTIVE, SUSPEND, or UNSPECIFIED, which is how v2 shows a suspended user.
                return LockOutcome.NOT_LOCKABLE
            # Refused as "not active", yet active now: someone else changed the user meanwhile.
            log.info("zitadel_lock_raced", user_id=user_id, state=str(state), attempt=attempt)
        raise UnexpectedAnswer(
            "ZITADEL refused lock twice while reporting the user as lockable; the user's state "
            "keeps changing"
        )

    async def unlock(self, user_id: str, org_id: str | None) -> UnlockOutcome:
        """Unlock a user; a user that is not locked, or unknown, is an outcome."""
        path = self._user_path(self._api.unlock, user_id)
        org = self._org(org_id)
        response = await self._call("unlock", "POST", path, org, body={}, deadline=self._deadline())
        if response.is_success:
            return UnlockOutcome.UNLOCKED
        answer = read_error(response.status_code, response.content)
        if answer.status == 400 and answer.id in _NOT_LOCKED:
            return UnlockOutcome.NOT_LOCKED
        if answer.status == 404 and answer.id in _USER_NOT_FOUND:
            return UnlockOutcome.UNKNOWN_USER
        raise _unexpected("unlock", answer)

    async def get_state(self, user_id: str, org_id: str | None) -> UserState | None:
        """The user's state, or None when ZITADEL knows no such user (in that org, for v1)."""
        path = self._user_path(self._api.get, user_id)
        return await self._state(path, self._org(org_id), self._deadline())

    async def resolve_login_name(self, login_name: str, org_id: str | None) -> str | None:
        """The user id for ``login_name`` (case-insensitive), or None when there is none.

        Answers are cached; concurrent calls for the same name and org share one request.
        """
        org = self._org(org_id)
        name = login_name.strip().lower()
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

    async def _state(self, path: str, org: str | None, deadline: float) -> UserState | None:
        response = await self._call("get_user", "GET", path, org, body=None, deadline=deadline)
        if not response.is_success:
            answer = read_error(response.status_code, response.content)
            if answer.status == 404 and answer.id in _USER_NOT_FOUND:
                return None
            raise _unexpected("get_user", answer)
        try:
            user = response.json()["user"]
            # protojson omits an enum at its zero value, USER_STATE_UNSPECIFIED.
            state = user.get("state", UserState.UNSPECIFIED.value)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unexpected("get_user", ErrorAnswer(response.status_code)) from None
        try:
            return UserState(state)
        except ValueError:
            return UserState.UNSPECIFIED

    async def _find_user(self, name: str, org: str | None) -> str | None:
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
            results = response.json().get("result") or []
            ids = [str(user[self._api.id_field]) for user in results]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _unexpected("find_user", ErrorAnswer(response.status_code)) from None
        if len(ids) > 1:
            log.warning("login_name_ambiguous", org_id=org, matches=len(ids))
            return None
        return ids[0] if ids else None

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
    ) -> httpx.Response:
        """One API request with a bearer token; faults in lockoutd's own setup raise here.

        A 401 earns one new token: the PAT file may have been rotated, the access token may have
        been revoked. A second 401 means the credentials themselves are refused. ``org_header``
        sends ``org`` as ``x-zitadel-orgid`` whatever the API.
        """
        send_org = self._api.org_header if org_header is None else org_header
        headers = {"x-zitadel-orgid": org} if org is not None and send_org else {}
        try:
            token = await self._auth.token()
        except ZitadelConfigError:
            self._healthy = False
            raise
        send = functools.partial(
            self._send, operation, method, path, headers=headers, body=body, deadline=deadline
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
            if (fault := _config_fault(answer, operation, org)) is not None:
                self._healthy = False
                raise fault
        return response

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
    ) -> httpx.Response:
        """Send until an answer is usable or the retries are spent (ZitadelUnavailable).

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
                attempts=self._settings.retry_attempts,
                timeout=remaining,
                **self._wait,
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
                        response = await self._attempt(operation, request, auth)
                    except _Retryable as exc:
                        exc.attempt = attempt.num
                        last = exc
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
        self, operation: str, request: httpx.Request, auth: _Bearer | None
    ) -> httpx.Response:
        async with self._semaphore:
            started = time.perf_counter()
            try:
                response = await self._http.send(request, auth=auth or httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:  # timeouts, refused and dropped connections
                self._observe(operation, "error", started)
                raise _Retryable(operation, None, reason=type(exc).__name__) from None
            except httpx.RequestError as exc:  # a body that cannot be decoded, say: not retried
                self._observe(operation, "error", started)
                raise ZitadelUnavailable(
                    f"ZITADEL's answer to {operation} could not be read ({type(exc).__name__})"
                ) from None
            self._observe(operation, str(response.status_code), started)
        if response.status_code in _RETRY_STATUSES:
            raise _Retryable(operation, response.status_code, retry_after=_retry_after(response))
        return response

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


def _backoff_hook(deadline: float) -> Callable[[Exception], bool | float]:
    """Retry only :class:`_Retryable`; a ``Retry-After`` sets the wait unless it overruns."""

    def hook(exc: Exception) -> bool | float:
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
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _config_fault(
    answer: ErrorAnswer, operation: str, org: str | None
) -> ZitadelConfigError | None:
    """The error for answers that refuse lockoutd itself; the ids alone are unambiguous."""
    where = f"org {org}" if org is not None else "the users' orgs"
    grant = (
        f"grant the service account ORG_USER_MANAGER in {where} or IAM_USER_MANAGER on the instance"
    )
    if answer.id in _MISSING_PERMISSION:
        return ZitadelConfigError(
            f"ZITADEL denies lockoutd the permission for {operation} ({answer.describe()}): {grant}"
        )
    if answer.id == _NO_MEMBERSHIP:
        return ZitadelConfigError(
            f"the service account has no membership in ZITADEL ({answer.describe()}): {grant}"
        )
    if answer.id == _UNKNOWN_ORG:
        return ZitadelConfigError(
            f"ZITADEL knows no org {org} ({answer.describe()}): check the org ids the events "
            "carry and that zitadel.base_url names the right instance"
        )
    return None


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
