"""Input formats: other producers' records mapped onto the native event (README, "Events").

Each format is a function from the decoded JSON object to a native event object; validation is
then the native format's, so a record that does not map is an invalid record like any other
(dead-lettered and counted), never a crash. The format is chosen per topic in the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from lockoutd.decode.event import LOGIN_FAILED, LOGIN_SUCCEEDED, Event
from lockoutd.decode.limits import WALL_CLOCK, Horizon
from lockoutd.decode.native import (
    InvalidEvent,
    bounded_decoder,
    decode_object,
    event_from_mapping,
    native_decoder,
)

FormatName = Literal["native", "zitadel", "keycloak", "cloudevents"]

MAPPED_EXTRA_FIELDS = frozenset(
    {"zitadel_event_type", "client_id", "keycloak_user_id", "keycloak_realm"}
)
"""The fields beyond the native ones that the formats below give an event (rules may match
them); a test keeps this in step with the mappers."""
Decoder = Callable[[bytes], Event]

# ZITADEL's failed checks (Actions v2 event executions) and the reason each stands for.
ZITADEL_FAILURES = {
    "user.human.password.check.failed": "password",
    "user.password.check.failed": "password",  # v1 name, still in old event stores
    "user.human.mfa.otp.check.failed": "otp",
    "user.mfa.otp.check.failed": "otp",  # v1 name
    "user.human.mfa.otp.sms.check.failed": "otp_sms",
    "user.human.mfa.otp.email.check.failed": "otp_email",
    "user.human.mfa.u2f.token.check.failed": "u2f",
    "user.human.passwordless.token.check.failed": "passwordless",
    "user.human.mfa.recoverycode.check.failed": "recovery_code",
}
# The succeeded counterpart of every failed check above: each can reset a window.
ZITADEL_SUCCESSES = frozenset(
    {
        "user.human.password.check.succeeded",
        "user.password.check.succeeded",  # v1 name
        "user.human.mfa.otp.check.succeeded",
        "user.mfa.otp.check.succeeded",  # v1 name
        "user.human.mfa.otp.sms.check.succeeded",
        "user.human.mfa.otp.email.check.succeeded",
        "user.human.mfa.u2f.token.check.succeeded",
        "user.human.passwordless.token.check.succeeded",
        "user.human.mfa.recoverycode.check.succeeded",
    }
)

# Keycloak's `error` of a LOGIN_ERROR, in lockoutd's reasons; others pass through unchanged.
KEYCLOAK_REASONS = {
    "invalid_user_credentials": "password",
    "user_not_found": "unknown_user",
    "invalid_totp": "otp",
    "invalid_authentication": "mfa",
}
# Keycloak reports every wrong secret as `invalid_user_credentials`, a wrong one-time code too;
# the credential it checked tells them apart: `details.credential_type` where Keycloak records
# it (its credential types), or `details.selected_credential_id`, which only its OTP form sets.
KEYCLOAK_CREDENTIAL_REASONS = {
    "password": "password",
    "otp": "otp",
    "webauthn": "u2f",
    "webauthn-passwordless": "passwordless",
    "recovery-authn-code": "recovery_code",
}
_KEYCLOAK_LOGINS = {"LOGIN_ERROR": LOGIN_FAILED, "LOGIN": LOGIN_SUCCEEDED}


def from_zitadel(document: dict[str, Any]) -> dict[str, Any]:
    """An Actions v2 event execution body (``PAYLOAD_TYPE_JSON``)."""
    event_type = _text(document, "event_type")
    payload = document.get("event_payload")
    payload = payload if isinstance(payload, dict) else {}
    if event_type in ZITADEL_FAILURES:
        mapped_type, reason = LOGIN_FAILED, ZITADEL_FAILURES[event_type]
    elif event_type in ZITADEL_SUCCESSES:
        mapped_type, reason = LOGIN_SUCCEEDED, None
    else:
        mapped_type, reason = event_type, None  # counted as ignored
    sequence = document.get("sequence")
    return _without_none(
        {
            "type": mapped_type,
            "occurred_at": document.get("created_at"),
            "user_id": document.get("aggregateID"),
            "org_id": document.get("resourceOwner"),
            "ip": payload.get("remoteIP") or None,
            "user_agent": payload.get("userAgent") or None,
            "reason": reason,
            # instance, aggregate and sequence identify a ZITADEL event uniquely.
            "event_id": (
                f"{document.get('instanceID')}:{document.get('aggregateID')}:{sequence}"
                if sequence is not None
                else None
            ),
            "zitadel_event_type": event_type,
        }
    )


def from_keycloak(document: dict[str, Any]) -> dict[str, Any]:
    """A Keycloak login event (``type`` ``LOGIN`` or ``LOGIN_ERROR``, ``time`` in milliseconds).

    Keycloak's ids mean nothing to ZITADEL: its ``userId`` is a UUID and its ``realmId`` no
    org. The user is named by ``details.username``, resolved to a ZITADEL user through its
    login name when a lock is due; Keycloak's ids travel along as ``keycloak_user_id`` and
    ``keycloak_realm`` (README, "Other producers' formats").
    """
    event_type = _text(document, "type")
    mapped_type = _KEYCLOAK_LOGINS.get(event_type, event_type)
    error = document.get("error")
    millis = document.get("time")
    if not isinstance(millis, int) or isinstance(millis, bool):
        raise InvalidEvent("bad_time", "a Keycloak event needs `time` in milliseconds")
    try:
        occurred_at = datetime.fromtimestamp(millis / 1000, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent("time_out_of_range", f"`time` {millis} is out of range") from None
    details = document.get("details")
    details = details if isinstance(details, dict) else {}
    username = details.get("username") or None
    keycloak_user = document.get("userId") or None
    if username is None and event_type in _KEYCLOAK_LOGINS:
        raise InvalidEvent(
            "missing_subject",
            "a Keycloak login event names its ZITADEL user by details.username, and this one "
            "has none (Keycloak's userId is not a ZITADEL user id)",
        )
    return _without_none(
        {
            "type": mapped_type,
            "occurred_at": occurred_at,
            # Another kind of Keycloak event is counted as ignored and never reaches a rule;
            # without a username its Keycloak user stands in as the subject, as a name: it is no
            # ZITADEL id (bad_id).
            "login_name": username or keycloak_user,
            "ip": document.get("ipAddress") or None,
            "reason": _keycloak_reason(error, details) if isinstance(error, str) else None,
            "event_id": document.get("id"),
            "client_id": document.get("clientId"),
            "keycloak_user_id": keycloak_user,
            "keycloak_realm": document.get("realmId"),
        }
    )


def _keycloak_reason(error: str, details: dict[str, Any]) -> str:
    if error == "invalid_user_credentials":
        credential = details.get("credential_type")
        if isinstance(credential, str) and credential in KEYCLOAK_CREDENTIAL_REASONS:
            return KEYCLOAK_CREDENTIAL_REASONS[credential]
        if details.get("selected_credential_id"):
            return "otp"
    return KEYCLOAK_REASONS.get(error, error)


def from_cloudevents(document: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvents 1.0 JSON envelope whose ``data`` is a native event."""
    if document.get("specversion") != "1.0":
        raise InvalidEvent("bad_envelope", "not a CloudEvents 1.0 envelope (specversion)")
    data = document.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("bad_envelope", "the CloudEvent's data is not a JSON object")
    # The envelope's id and time stand in where the event has none of its own; an absent one
    # stays absent, so that a missing time is reported as missing rather than as a bad time.
    envelope = _without_none({"event_id": document.get("id"), "occurred_at": document.get("time")})
    return {**envelope, **data}


_MAPPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "zitadel": from_zitadel,
    "keycloak": from_keycloak,
    "cloudevents": from_cloudevents,
}


def decoder_for(name: FormatName, *, max_bytes: int, horizon: Horizon = WALL_CLOCK) -> Decoder:
    """A function from a record value to an :class:`Event` in format ``name``.

    Every format refuses what the native one does: records nested too deep, times outside the
    sane range and times past ``horizon`` (README, "Events").
    """
    bounded_decoder()  # made at start, not while the first batch with an odd record waits
    if name == "native":
        return native_decoder(max_bytes=max_bytes, horizon=horizon)
    mapper = _MAPPERS[name]
    return lambda raw: event_from_mapping(mapper(decode_object(raw, max_bytes=max_bytes)), horizon)


def _text(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidEvent("missing_field", f"the record has no `{field}` string")
    return value


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}
