"""Where lockoutd's bearer token comes from: a personal access token, or a service-account key.

A personal access token (PAT) is used as it is. A key file is traded for an access token through
the JWT profile grant at ``/oauth/v2/token``; the token is cached and fetched again shortly before
it expires, or when ZITADEL rejects it.

Tokens, keys and assertions are held as :class:`~pydantic.SecretStr` or key objects so that they
never appear in ``repr()``, logs or exception messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from lockoutd.act.answers import answer_json
from lockoutd.errors import ZitadelConfigError, ZitadelUnavailable
from lockoutd.settings import ZitadelSettings

TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 - a URL path, not a secret
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Without the ZITADEL audience scope the API rejects the token with 401 AUTH-7fs1e.
SCOPE = "openid urn:zitadel:iam:org:project:id:zitadel:aud"
ASSERTION_LIFETIME = 3600  # ZITADEL refuses assertions whose iat is older than an hour
# Refresh this long before expiry: a tenth of the lifetime, at most a minute.
_REFRESH_FRACTION = 0.1
_REFRESH_MARGIN_MAX = 60.0
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")

RequestToken = Callable[[SecretStr], Awaitable[httpx.Response]]
"""Posts a url-encoded form (a secret: it holds the assertion) to the token endpoint, with the
client's retries and metrics, and returns the answer, which is never a 429 or 5xx."""


class TokenSource(Protocol):
    """Hands out the bearer token for ZITADEL API calls."""

    async def token(self) -> SecretStr:
        """The token to send now, fetching one first if needed."""
        ...

    async def refresh(self, rejected: SecretStr) -> bool:
        """Forget ``rejected`` after a 401; True when a different token may now be obtained."""
        ...

    def describe(self) -> str:
        """Where the token comes from, for error messages (never the token itself)."""
        ...


class StaticToken:
    """A personal access token from the environment (``LOCKOUTD_ZITADEL__PAT``)."""

    def __init__(self, token: SecretStr) -> None:
        if not token.get_secret_value().strip():
            raise ZitadelConfigError(
                "LOCKOUTD_ZITADEL__PAT is empty: set it to the service account's personal "
                "access token"
            )
        self._token = SecretStr(token.get_secret_value().strip())

    def __repr__(self) -> str:
        return "StaticToken(token='**********')"

    async def token(self) -> SecretStr:
        return self._token

    async def refresh(self, rejected: SecretStr) -> bool:
        # The environment cannot change under a running process.
        return False

    def describe(self) -> str:
        return "the personal access token in LOCKOUTD_ZITADEL__PAT"


class PatFile:
    """A personal access token read from ``pat_file``.

    The file is read again after a 401, so that a rotated secret (a Kubernetes secret update,
    say) is picked up without a restart.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._token = _read_pat(path)

    def __repr__(self) -> str:
        return f"PatFile(path={str(self._path)!r}, token='**********')"

    async def token(self) -> SecretStr:
        return self._token

    async def refresh(self, rejected: SecretStr) -> bool:
        try:
            fresh = await asyncio.to_thread(_read_pat, self._path)
        except ZitadelConfigError:
            return False
        self._token = fresh
        return not _same(fresh, rejected)

    def describe(self) -> str:
        return f"the personal access token in zitadel.pat_file {self._path}"


def _read_pat(path: Path) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZitadelConfigError(
            f"cannot read zitadel.pat_file {path} ({_reason(exc)}): put the service account's "
            "personal access token there, or set zitadel.key_file instead"
        ) from None
    if not text:
        raise ZitadelConfigError(
            f"zitadel.pat_file {path} is empty: put the service account's personal access token "
            "there"
        )
    return SecretStr(text)


class _KeyFile(BaseModel):
    """The service-account key JSON that ZITADEL generates (``MachineKeyMarshalJSON``)."""

    model_config = ConfigDict(extra="ignore")

    keyId: str
    key: SecretStr
    userId: str
    expirationDate: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class ServiceAccountKey:
    """A parsed key file: the private key object never prints its material."""

    key_id: str
    user_id: str
    private_key: RSAPrivateKey
    path: Path

    def __repr__(self) -> str:
        return f"ServiceAccountKey(key_id={self.key_id!r}, user_id={self.user_id!r}, key=<hidden>)"


def load_key_file(path: Path, *, now: dt.datetime | None = None) -> ServiceAccountKey:
    """Read and check a service-account key file; every fault is a :class:`ZitadelConfigError`."""
    hint = "download a new key for the service account in the ZITADEL console"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ZitadelConfigError(
            f"cannot read zitadel.key_file {path} ({_reason(exc)}): {hint}"
        ) from None
    except ValueError:
        raise ZitadelConfigError(f"zitadel.key_file {path} is not JSON: {hint}") from None
    try:
        data = _KeyFile.model_validate(raw)
    except ValidationError as exc:
        # Name the fields only: pydantic's own message quotes the input, which holds the key.
        fields = sorted({".".join(map(str, err["loc"])) or "(file)" for err in exc.errors()})
        raise ZitadelConfigError(
            f"zitadel.key_file {path} lacks or mistypes {', '.join(fields)}: {hint}"
        ) from None
    try:
        private_key = serialization.load_pem_private_key(
            data.key.get_secret_value().encode(), password=None
        )
    except (ValueError, TypeError):
        raise ZitadelConfigError(
            f"zitadel.key_file {path}: 'key' is not an unencrypted PEM private key: {hint}"
        ) from None
    if not isinstance(private_key, RSAPrivateKey):
        raise ZitadelConfigError(f"zitadel.key_file {path}: 'key' is not an RSA key: {hint}")
    expires = _parse_time(data.expirationDate)
    if expires is not None and expires <= (now or dt.datetime.now(dt.UTC)):
        raise ZitadelConfigError(
            f"zitadel.key_file {path}: the key {data.keyId} expired at {data.expirationDate}: "
            f"{hint}"
        )
    return ServiceAccountKey(
        key_id=data.keyId, user_id=data.userId, private_key=private_key, path=path
    )


@dataclass(frozen=True, slots=True, repr=False)
class _AccessToken:
    value: SecretStr
    refresh_at: float

    def __repr__(self) -> str:
        return f"_AccessToken(value='**********', refresh_at={self.refresh_at})"


class _TokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr
    expires_in: float | None = None


class JwtProfile:
    """Access tokens from the JWT profile grant, signed with a service-account key.

    Concurrent callers that find no valid token share one token request (the lock), and a 401
    refreshes at most once per rejected token.
    """

    def __init__(
        self,
        key: ServiceAccountKey,
        *,
        audience: str,
        request_token: RequestToken,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._audience = audience
        self._request_token = request_token
        self._clock = clock
        self._wall_clock = wall_clock
        self._current: _AccessToken | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JwtProfile(key={self._key!r}, audience={self._audience!r})"

    async def token(self) -> SecretStr:
        if (current := self._valid()) is not None:
            return current
        async with self._lock:
            # Whoever held the lock before us may have fetched one already.
            if (current := self._valid()) is not None:
                return current
            fetched = await self._fetch()
            self._current = fetched
            return fetched.value

    async def refresh(self, rejected: SecretStr) -> bool:
        current = self._current
        if current is not None and _same(current.value, rejected):
            self._current = None
        return True

    def describe(self) -> str:
        return f"the service-account key {self._key.key_id} in zitadel.key_file {self._key.path}"

    def _valid(self) -> SecretStr | None:
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        return None

    def assertion(self) -> str:
        """A fresh RS256 assertion; it is a credential, so it is only ever sent, never logged."""
        issued = int(self._wall_clock())
        claims = {
            "iss": self._key.user_id,
            "sub": self._key.user_id,
            "aud": self._audience,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
        }
        return jwt.encode(
            claims, self._key.private_key, algorithm="RS256", headers={"kid": self._key.key_id}
        )

    async def _fetch(self) -> _AccessToken:
        # Never bound to a plain local: tracebacks rendered with locals must not show it.
        form = SecretStr(
            urlencode({"grant_type": GRANT_TYPE, "scope": SCOPE, "assertion": self.assertion()})
        )
        started = self._clock()
        response = await self._request_token(form)
        if response.status_code != 200:
            raise _token_refused(response, self.describe())
        try:
            answer = _TokenAnswer.model_validate_json(response.content)
        except ValidationError:
            raise ZitadelUnavailable(
                f"ZITADEL answered the token request at {TOKEN_PATH} with HTTP 200 but no "
                "access_token"
            ) from None
        if answer.expires_in is None:
            # No lifetime given: keep it until ZITADEL rejects it, then fetch another.
            return _AccessToken(answer.access_token, float("inf"))
        lifetime = max(0.0, answer.expires_in)
        margin = min(_REFRESH_MARGIN_MAX, lifetime * _REFRESH_FRACTION)
        return _AccessToken(answer.access_token, started + lifetime - margin)


def _token_refused(response: httpx.Response, source: str) -> Exception:
    """Turn a refused token request into an error that says what to do."""
    error = "unknown"
    try:
        body: Any = answer_json(response.content)
    except ValueError:
        body = None
    # Only the OAuth error code is quoted (a fixed vocabulary); the description is free text.
    if (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and _OAUTH_ERROR.fullmatch(body["error"])
    ):
        error = body["error"]
    status = response.status_code
    if status in (400, 401, 403):
        return ZitadelConfigError(
            f"ZITADEL refused {source} at {TOKEN_PATH} (HTTP {status}, {error}): check that "
            "the key is still registered on the service account and not expired, and that "
            "zitadel.audience (or zitadel.base_url) is the instance URL"
        )
    if status == 404:
        return ZitadelConfigError(
            f"ZITADEL has no token endpoint at {TOKEN_PATH} (HTTP 404): check zitadel.base_url"
        )
    return ZitadelUnavailable(
        f"ZITADEL answered the token request at {TOKEN_PATH} with HTTP {status} ({error})"
    )


def token_source(
    settings: ZitadelSettings,
    *,
    request_token: RequestToken,
    clock: Callable[[], float] = time.monotonic,
) -> TokenSource:
    """The token source ``settings`` name; exactly one of pat_file, pat and key_file is set."""
    named = [
        name
        for name, value in (
            ("zitadel.pat_file", settings.pat_file),
            ("LOCKOUTD_ZITADEL__PAT", settings.pat),
            ("zitadel.key_file", settings.key_file),
        )
        if value is not None
    ]
    if len(named) != 1:
        found = ", ".join(named) if named else "none"
        raise ZitadelConfigError(
            "set exactly one of zitadel.pat_file, LOCKOUTD_ZITADEL__PAT and zitadel.key_file "
            f"(found: {found}): lockoutd authenticates as one ZITADEL service account"
        )
    if settings.pat_file is not None:
        return PatFile(settings.pat_file)
    if settings.pat is not None:
        return StaticToken(settings.pat)
    assert settings.key_file is not None  # one of the three is set, checked above
    return JwtProfile(
        load_key_file(settings.key_file),
        audience=settings.audience or settings.base_url,
        request_token=request_token,
        clock=clock,
    )


def _same(a: SecretStr, b: SecretStr) -> bool:
    return hmac.compare_digest(a.get_secret_value().encode(), b.get_secret_value().encode())


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    # ZITADEL writes nanoseconds; fromisoformat takes at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = dt.datetime.fromisoformat(trimmed)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
