"""Token sources: choosing one, reading key files, and caching JWT-profile access tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from lockoutd.act.zitadel_auth import (
    GRANT_TYPE,
    SCOPE,
    JwtProfile,
    PatFile,
    StaticToken,
    load_key_file,
    token_source,
)
from lockoutd.errors import ZitadelConfigError, ZitadelUnavailable
from lockoutd.settings import ZitadelSettings

BASE = "https://zitadel.example"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "key.json"
    path.write_text(
        json.dumps(
            {
                "type": "serviceaccount",
                "keyId": "k1",
                "key": _pem(rsa_key),
                "expirationDate": "9999-12-31T23:59:59.999999999Z",
                "userId": "42",
            }
        )
    )
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """Stands in for the client's token request; hands out numbered tokens."""

    def __init__(self, *, expires_in: float | None = 100, status: int = 200) -> None:
        self.forms: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.status = status
        self.delay = 0.0

    async def __call__(self, form: SecretStr) -> httpx.Response:
        self.forms.append(dict(parse_qsl(form.get_secret_value())))
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return httpx.Response(
                self.status, json={"error": "invalid_grant", "error_description": "x"}
            )
        body: dict[str, object] = {"access_token": f"at-{len(self.forms)}", "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)


def _profile(key_file: Path, endpoint: TokenEndpoint, clock: Clock) -> JwtProfile:
    return JwtProfile(load_key_file(key_file), audience=BASE, request_token=endpoint, clock=clock)


def test_exactly_one_credential_is_required(tmp_path: Path) -> None:
    """Neither or several of pat_file, pat and key_file is a config error naming the choice."""
    with pytest.raises(ZitadelConfigError, match="exactly one"):
        token_source(ZitadelSettings(), request_token=TokenEndpoint())
    both = ZitadelSettings(pat=SecretStr("x"), pat_file=tmp_path / "pat")
    with pytest.raises(
        ZitadelConfigError, match=r"found: zitadel\.pat_file, LOCKOUTD_ZITADEL__PAT"
    ):
        token_source(both, request_token=TokenEndpoint())


def test_a_missing_pat_file_says_what_to_do(tmp_path: Path) -> None:
    """An unreadable pat_file is a config error that names the file and the fix."""
    with pytest.raises(ZitadelConfigError, match=r"cannot read zitadel.pat_file .*personal access"):
        token_source(ZitadelSettings(pat_file=tmp_path / "nope"), request_token=TokenEndpoint())


def test_an_empty_pat_file_is_refused(tmp_path: Path) -> None:
    """A pat_file holding only whitespace is a config error."""
    (tmp_path / "pat").write_text(" \n")
    with pytest.raises(ZitadelConfigError, match="is empty"):
        PatFile(tmp_path / "pat")


async def test_the_pat_file_is_stripped_and_reread_after_a_rejection(tmp_path: Path) -> None:
    """Whitespace is stripped, and a rotated file is picked up by refresh()."""
    path = tmp_path / "pat"
    path.write_text("old-token\n")
    source = PatFile(path)
    old = await source.token()
    assert old.get_secret_value() == "old-token"
    assert not await source.refresh(old)
    path.write_text("new-token\n")
    assert await source.refresh(old)
    assert (await source.token()).get_secret_value() == "new-token"


async def test_an_environment_pat_cannot_be_refreshed() -> None:
    """A PAT from the environment is used as it is; refresh() says no."""
    source = StaticToken(SecretStr(" env-token "))
    token = await source.token()
    assert token.get_secret_value() == "env-token"
    assert not await source.refresh(token)


def test_sources_never_show_their_secret(tmp_path: Path, key_file: Path) -> None:
    """repr() of every token source masks the token and the key."""
    (tmp_path / "pat").write_text("pat-secret")
    key_pem = json.loads(key_file.read_text())["key"]
    for source in (
        PatFile(tmp_path / "pat"),
        StaticToken(SecretStr("env-secret")),
        _profile(key_file, TokenEndpoint(), Clock()),
    ):
        shown = repr(source)
        assert "secret" not in shown
        assert "PRIVATE KEY" not in shown
        assert key_pem[40:80] not in shown


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "is not JSON"),
        ('{"keyId": "k1", "userId": "42"}', "lacks or mistypes key"),
        ('{"keyId": "k1", "key": "-----BEGIN RSA PRIVATE KEY-----\\nxx", "userId": "42"}', "PEM"),
    ],
)
def test_broken_key_files_say_what_to_do(tmp_path: Path, content: str, match: str) -> None:
    """A key file that cannot be used is a config error pointing at a new key."""
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(ZitadelConfigError, match=match) as info:
        load_key_file(path)
    assert "new key" in str(info.value)


def test_a_key_file_error_never_quotes_the_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A key file missing userId is refused without echoing the key material."""
    path = tmp_path / "key.json"
    pem = _pem(rsa_key)
    path.write_text(json.dumps({"keyId": "k1", "key": pem}))
    with pytest.raises(ZitadelConfigError, match="userId") as info:
        load_key_file(path)
    assert "PRIVATE" not in str(info.value)
    assert pem.splitlines()[1] not in str(info.value)


def test_an_expired_or_non_rsa_key_is_refused(tmp_path: Path, key_file: Path) -> None:
    """An expired key and an EC key are config errors."""
    data = json.loads(key_file.read_text())
    data["expirationDate"] = "2020-01-01T00:00:00Z"
    key_file.write_text(json.dumps(data))
    with pytest.raises(ZitadelConfigError, match="expired"):
        load_key_file(key_file)
    data["expirationDate"] = None
    data["key"] = _pem(ec.generate_private_key(ec.SECP256R1()))
    key_file.write_text(json.dumps(data))
    with pytest.raises(ZitadelConfigError, match="not an RSA key"):
        load_key_file(key_file)


async def test_the_assertion_follows_the_jwt_profile(
    key_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The grant posts an RS256 assertion with kid, iss=sub=userId, aud and an hour's exp."""
    endpoint = TokenEndpoint()
    profile = _profile(key_file, endpoint, Clock())
    assert (await profile.token()).get_secret_value() == "at-1"
    (form,) = endpoint.forms
    assert form["grant_type"] == GRANT_TYPE
    assert form["scope"] == SCOPE
    header = jwt.get_unverified_header(form["assertion"])
    assert header == {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(
        form["assertion"], rsa_key.public_key(), algorithms=["RS256"], audience=BASE
    )
    assert claims["iss"] == claims["sub"] == "42"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - dt.datetime.now(dt.UTC).timestamp()) < 5


async def test_the_token_is_cached_until_shortly_before_it_expires(key_file: Path) -> None:
    """A 100 s token is reused for 90 s (a tenth kept as margin), then fetched anew."""
    endpoint, clock = TokenEndpoint(expires_in=100), Clock()
    profile = _profile(key_file, endpoint, clock)
    assert (await profile.token()).get_secret_value() == "at-1"
    clock.now += 89
    assert (await profile.token()).get_secret_value() == "at-1"
    clock.now += 2
    assert (await profile.token()).get_secret_value() == "at-2"


async def test_a_long_lived_token_is_refreshed_a_minute_early(key_file: Path) -> None:
    """A 12 h token is refreshed 60 s before it runs out."""
    endpoint, clock = TokenEndpoint(expires_in=43199), Clock()
    profile = _profile(key_file, endpoint, clock)
    await profile.token()
    clock.now += 43199 - 61
    await profile.token()
    clock.now += 2
    await profile.token()
    assert len(endpoint.forms) == 2


async def test_concurrent_callers_share_one_token_request(key_file: Path) -> None:
    """Fifty callers with no token cached cause one token request."""
    endpoint = TokenEndpoint()
    endpoint.delay = 0.02
    profile = _profile(key_file, endpoint, Clock())
    tokens = await asyncio.gather(*(profile.token() for _ in range(50)))
    assert {t.get_secret_value() for t in tokens} == {"at-1"}
    assert len(endpoint.forms) == 1


async def test_refresh_drops_only_the_rejected_token(key_file: Path) -> None:
    """A 401 on a token already replaced does not throw the new one away."""
    endpoint = TokenEndpoint()
    profile = _profile(key_file, endpoint, Clock())
    first = await profile.token()
    assert await profile.refresh(first)
    second = await profile.token()
    assert second.get_secret_value() == "at-2"
    assert await profile.refresh(first)  # a late 401 for the old token
    assert (await profile.token()).get_secret_value() == "at-2"
    assert len(endpoint.forms) == 2


async def test_a_refused_grant_is_a_config_error(key_file: Path) -> None:
    """invalid_grant from the token endpoint stops the daemon with a hint about the key."""
    profile = _profile(key_file, TokenEndpoint(status=400), Clock())
    with pytest.raises(ZitadelConfigError, match=r"HTTP 400, invalid_grant\).*registered"):
        await profile.token()


async def test_a_token_answer_without_a_token_is_unavailable(key_file: Path) -> None:
    """A 200 without access_token is not usable."""

    async def empty(form: SecretStr) -> httpx.Response:
        return httpx.Response(200, json={"token_type": "Bearer"})

    profile = JwtProfile(load_key_file(key_file), audience=BASE, request_token=empty)
    with pytest.raises(ZitadelUnavailable, match="no access_token"):
        await profile.token()
