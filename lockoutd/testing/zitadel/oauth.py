"""``POST /oauth/v2/token``: the JWT profile grant a service account uses with its key file.

The assertion is checked as zitadel/oidc's ``VerifyJWTAssertion`` does (reference §4): RS256
signature by the registered key named in ``kid``, ``iss`` = ``sub`` = the key's user id, ``aud``
contains the instance URL, ``exp`` not passed, ``iat`` present and at most an hour old (one
second of clock skew is allowed). Errors are OAuth errors (RFC 6749 §5.2), not gRPC ones.

A token granted without the ``urn:zitadel:iam:org:project:id:zitadel:aud`` scope is issued, but
the API rejects it with 401 ``AUTH-7fs1e``, as ZITADEL does.
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lockoutd.testing.zitadel.api import ApiRequest, Reply
from lockoutd.testing.zitadel.state import API_AUDIENCE_SCOPE, NO_EXPIRY, Instance, MachineKey

JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_AGE: Final = 3600.0
CLOCK_SKEW: Final = 1.0


class OAuthError(Exception):
    """An OAuth error response: ``{"error": ..., "error_description": ...}`` with 400."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def reply(self) -> Reply:
        return Reply(400, {"error": self.error, "error_description": self.description})


def new_key_file(instance: Instance, user_id: str) -> dict[str, str]:
    """Register a fresh RSA key for ``user_id``; return the key file ZITADEL would hand out.

    Same fields and order as ``MachineKeyMarshalJSON`` (internal/domain/machine_key.go); the
    private key is PKCS#1 PEM (``BEGIN RSA PRIVATE KEY``).
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = instance.new_id()
    instance.keys[key_id] = MachineKey(key_id, user_id, private_key.public_key(), NO_EXPIRY)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return {
        "type": "serviceaccount",
        "keyId": key_id,
        "key": pem.decode(),
        "expirationDate": NO_EXPIRY.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userId": user_id,
    }


def _verified_subject(instance: Instance, assertion: str) -> str:
    """The user id the assertion proves, or OAuthError("invalid_grant")."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", f"malformed assertion: {exc}") from None
    user_id = unverified.get("iss")
    if not isinstance(user_id, str) or unverified.get("sub") != user_id:
        raise OAuthError(
            "invalid_grant", "delegation not allowed, issuer and sub must be identical"
        )
    key = instance.machine_key(str(header.get("kid", "")), user_id)
    if key is None:
        raise OAuthError("invalid_grant", "error fetching keys: key not found for kid and issuer")
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            key.public_key,
            algorithms=["RS256"],
            audience=instance.issuer,
            leeway=CLOCK_SKEW,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_grant", f"assertion invalid: {exc}") from None
    if time.time() - float(claims["iat"]) > MAX_ASSERTION_AGE + CLOCK_SKEW:
        raise OAuthError("invalid_grant", "assertion invalid: iat is too old")
    if instance.find_user(user_id) is None:
        raise OAuthError("invalid_grant", "user not found")
    return user_id


def token_endpoint(instance: Instance, request: ApiRequest) -> Reply:
    """``POST /oauth/v2/token`` with a form-encoded body."""
    form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        grant_type = form.get("grant_type", "")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type missing")
        if grant_type != JWT_BEARER:
            raise OAuthError("unsupported_grant_type", f"{grant_type} not supported")
        assertion = form.get("assertion", "")
        if not assertion:
            raise OAuthError("invalid_request", "assertion missing")
        user_id = _verified_subject(instance, assertion)
    except OAuthError as exc:
        return exc.reply()
    scopes = form.get("scope", "").split()
    token, expires_at = instance.issue_token(user_id, api_audience=API_AUDIENCE_SCOPE in scopes)
    # uint64(validity.Seconds()), computed after issuing: 12h gives 43199, as in the reference.
    expires_in = max(0, int(expires_at - time.time()))
    return Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
