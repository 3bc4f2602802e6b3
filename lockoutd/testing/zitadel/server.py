"""The emulator: the instance served over real HTTP on loopback, with faults and a call log.

The aiohttp server runs its own event loop in a daemon thread, so synchronous tests, asyncio
tests (whatever their loop) and daemon subprocesses can all talk to it. One ``threading.Lock``
guards the instance, the faults and the call log; handlers hold it only while they run, never
across a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl

from aiohttp import web

from lockoutd.testing.zitadel.api import ApiRequest, Reply
from lockoutd.testing.zitadel.errors import (
    ApiError,
    Errors,
    GrpcCode,
    code_for_status,
    gateway_error,
)
from lockoutd.testing.zitadel.faults import Fault, FaultKind, FaultPlan
from lockoutd.testing.zitadel.oauth import new_key_file
from lockoutd.testing.zitadel.routes import LOCK_OPERATIONS, Match, resolve
from lockoutd.testing.zitadel.state import DEFAULT_SERVICE_ACCOUNT_ID, Instance, UserState

logger = logging.getLogger("lockoutd.testing.zitadel")

_SHUTDOWN_TIMEOUT: Final = 0.25
_START_TIMEOUT: Final = 10.0

Roles = Mapping[str, Set[str]]


@dataclass(frozen=True, slots=True)
class Call:
    """One request the emulator received.

    ``path`` is the raw path as sent (percent-encoding kept, no query string); ``headers`` have
    lower-case names; ``body`` is the parsed JSON, the form fields of a form-encoded request, or
    None. ``status`` is None while the request is in flight or when its connection was dropped.
    ``operation`` names the endpoint (``"v1.lock"``, ``"v2.get_user"``, ``"oauth.token"``...) and
    ``user_id`` the (decoded) user id in the path, when there is one.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None
    at: float
    operation: str | None = None
    user_id: str | None = None
    query: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Record:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    operation: str | None
    user_id: str | None
    query: dict[str, str]
    status: int | None = None

    def freeze(self) -> Call:
        return Call(
            self.method,
            self.path,
            dict(self.headers),
            self.body,
            self.status,
            self.at,
            self.operation,
            self.user_id,
            dict(self.query),
        )


def _parsed_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_reply(error: ApiError) -> Reply:
    return Reply(error.status, error.row.body(), error.headers)


# The cookie ZITADEL's gateway sets on every 429 (Quotas.Access.ExhaustedCookieKey and
# ExhaustedCookieMaxAge in its defaults), for its console; it never sends Retry-After.
_EXHAUSTED_COOKIE: Final = (
    "zitadel.quota.exhausted=true; Path=/; Domain={domain}; Max-Age=300; SameSite=Lax"
)


def _fault_reply(fault: Fault, host: str) -> Reply:
    if fault.kind is FaultKind.RATE_LIMITED:
        cookie = _EXHAUSTED_COOKIE.format(domain=host.rsplit(":", 1)[0].strip("[]"))
        headers = {"Set-Cookie": cookie, "Vary": "Cookie"}
        return _error_reply(ApiError(Errors.QUOTA_EXHAUSTED, headers=headers))
    try:
        reason = http.HTTPStatus(fault.http_status).phrase
    except ValueError:
        reason = "Error"
    row = gateway_error(code_for_status(fault.http_status), reason)
    return _error_reply(ApiError(row, status=fault.http_status))


class ZitadelEmulator:
    """A stand-in for the parts of ZITADEL lockoutd uses, on ``http://host:port``.

    Setup, faults and observation are thread-safe and may be called while the server runs.
    Service accounts are machine users; each :meth:`add_pat` or :meth:`add_service_account_key`
    call replaces the account's memberships with ``roles`` (None or ``{}``: no membership).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, instance_url: str | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port = port or None
        self._instance_url = instance_url
        self._lock = threading.Lock()
        self._instance = Instance()
        self._faults = FaultPlan()
        self._records: list[_Record] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._port else "not started"
        return f"<ZitadelEmulator {where}>"

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has no port yet: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def instance_url(self) -> str:
        """What a JWT assertion's ``aud`` must contain (the issuer); ``base_url`` by default."""
        return self._instance_url or self.base_url

    @property
    def access_token_lifetime(self) -> float:
        """Seconds an access token from the token endpoint stays valid (default 12h)."""
        with self._lock:
            return self._instance.access_token_lifetime

    @access_token_lifetime.setter
    def access_token_lifetime(self, seconds: float) -> None:
        with self._lock:
            self._instance.access_token_lifetime = float(seconds)

    # -- setup ------------------------------------------------------------------------------

    def add_org(self, org_id: str, name: str = "") -> None:
        with self._lock:
            self._instance.add_org(org_id, name)

    def add_user(
        self,
        user_id: str,
        *,
        org_id: str,
        login_name: str | None = None,
        state: UserState = UserState.ACTIVE,
        machine: bool = False,
    ) -> None:
        """Add a user (its org is created if needed); ``login_name`` defaults to ``user-<id>``."""
        with self._lock:
            self._instance.add_user(
                user_id, org_id=org_id, login_name=login_name, state=state, machine=machine
            )

    def add_login_name(self, user_id: str, login_name: str) -> None:
        """Give a user a further login name (ZITADEL has one per verified domain of the org)."""
        with self._lock:
            self._instance.add_login_name(user_id, login_name)

    def set_state(self, user_id: str, state: UserState) -> None:
        with self._lock:
            self._instance.change_state(self._instance.user(user_id), state)

    def state_of(self, user_id: str) -> UserState:
        with self._lock:
            return self._instance.user(user_id).state

    def remove_user(self, user_id: str) -> None:
        """The user is deleted: every endpoint answers as for an unknown id."""
        self.set_state(user_id, UserState.DELETED)

    def set_roles(self, user_id: str, roles: Roles | None) -> None:
        """Replace a user's memberships, e.g. ``{"instance": {"IAM_USER_MANAGER"}}``."""
        with self._lock:
            self._instance.user(user_id)
            self._instance.set_roles(user_id, roles)

    def add_pat(
        self,
        token: str,
        *,
        roles: Roles | None = None,
        user_id: str = DEFAULT_SERVICE_ACCOUNT_ID,
        org_id: str | None = None,
    ) -> None:
        """Register a personal access token of service account ``user_id`` (created if new,
        in ``org_id`` or the default org)."""
        with self._lock:
            self._instance.service_account(user_id, org_id)
            self._instance.set_roles(user_id, roles)
            self._instance.add_pat(token, user_id)

    def add_service_account_key(
        self,
        *,
        user_id: str = DEFAULT_SERVICE_ACCOUNT_ID,
        roles: Roles | None = None,
        org_id: str | None = None,
    ) -> dict[str, str]:
        """Generate and register an RSA key; return the key file JSON as ZITADEL produces it."""
        with self._lock:
            self._instance.service_account(user_id, org_id)
            self._instance.set_roles(user_id, roles)
            return new_key_file(self._instance, user_id)

    def revoke_token(self, token: str) -> None:
        """A PAT or issued access token stops working (401 ``AUTH-7fs1e``)."""
        with self._lock:
            try:
                self._instance.tokens[token].revoked = True
            except KeyError:
                raise KeyError(f"no token {token[:6]!r}... in the emulator") from None

    # -- faults -----------------------------------------------------------------------------

    def set_fault(self, fault: Fault, *, path_contains: str | None = None) -> None:
        """Arm a fault (faults add up; see :mod:`.faults`), optionally only for some paths."""
        with self._lock:
            self._faults.add(fault, path_contains)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- observation ------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received since the last :meth:`reset_calls`, in arrival order."""
        with self._lock:
            return [record.freeze() for record in self._records]

    def lock_calls(self, user_id: str | None = None) -> list[Call]:
        """Lock requests (v1, v2, v2beta), answered or not, optionally for one user."""
        return [
            call
            for call in self.calls
            if call.operation in LOCK_OPERATIONS and (user_id is None or call.user_id == user_id)
        ]

    def reset_calls(self) -> None:
        with self._lock:
            self._records.clear()

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Bind the port and serve in a background thread; return once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("the emulator is running already")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self._requested_port), family=family)
        self._port = sock.getsockname()[1]
        with self._lock:
            self._instance.issuer = self.instance_url
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(loop, sock, ready, failures),
            name=f"zitadel-emulator:{self._port}",
            daemon=True,
        )
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(_START_TIMEOUT) or failures:
            self.stop()
            raise RuntimeError("the ZITADEL emulator did not start") from (
                failures[0] if failures else None
            )
        logger.debug("ZITADEL emulator serving on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port; a no-op when not running."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # closed already: serving failed to start
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)
        self._loop = self._thread = None

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failures: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # handed to start(), which raises it
            failures.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # -- serving ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.rel_url.raw_path
        routed = resolve(request.method, path)
        match = routed if isinstance(routed, Match) else None
        api_request = ApiRequest(
            request.method,
            match.params if match else (),
            {name.lower(): value for name, value in request.headers.items()},
            dict(request.query),
            raw,
        )
        record = _Record(
            method=request.method,
            path=path,
            headers=dict(api_request.headers),
            body=_parsed_body(raw, request.content_type),
            at=time.time(),
            operation=match.route.operation if match else None,
            user_id=match.user_id if match else None,
            query=dict(api_request.query),
        )
        with self._lock:
            self._records.append(record)
            delay, fault = self._faults.draw(path)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.kind is FaultKind.DROP_AFTER_APPLYING:
            if isinstance(routed, Match):
                applied = self._run(routed, api_request)
                logger.info("%s %s -> %s, reply dropped", request.method, path, applied.status)
            fault = Fault.drop_connection()
        if fault is not None and fault.kind is FaultKind.DROP_CONNECTION:
            logger.info("%s %s -> connection dropped", request.method, path)
            if request.transport is not None:
                request.transport.close()
            # aiohttp takes this for a vanished client and writes nothing.
            raise asyncio.CancelledError
        if fault is not None and fault.kind is FaultKind.ANSWER:
            logger.info("%s %s -> %s, a proxy's answer", request.method, path, fault.http_status)
            with self._lock:
                record.status = fault.http_status
            return web.Response(body=fault.body, status=fault.http_status, headers=fault.headers)
        if fault is not None and fault.kind is FaultKind.TRICKLE:
            return await self._trickle(request, record, fault.seconds)
        if fault is not None:
            reply = _fault_reply(fault, request.host)
        elif isinstance(routed, ApiError):
            reply = _error_reply(routed)
        else:
            reply = self._run(routed, api_request)
        with self._lock:
            record.status = reply.status
        logger.info("%s %s -> %s", request.method, path, reply.status)
        return web.Response(
            body=json.dumps(reply.body, separators=(",", ":")).encode(),
            status=reply.status,
            headers=dict(reply.headers),
            content_type="application/json",
        )

    async def _trickle(
        self, request: web.Request, record: _Record, seconds: float
    ) -> web.StreamResponse:
        logger.info("%s %s -> 200, trickled", request.method, record.path)
        with self._lock:
            record.status = 200
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Content-Length": "1000000"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(1_000_000):
                await response.write(b" ")
                await asyncio.sleep(seconds)
        return response

    def _run(self, match: Match, request: ApiRequest) -> Reply:
        try:
            with self._lock:
                return match.route.handler(self._instance, request)
        except ApiError as error:
            return _error_reply(error)
        except Exception as exc:  # an emulator bug: answer like ZITADEL's internal error
            logger.exception("ZITADEL emulator failed on %s", match.route.operation)
            return _error_reply(ApiError(gateway_error(GrpcCode.INTERNAL, repr(exc))))
