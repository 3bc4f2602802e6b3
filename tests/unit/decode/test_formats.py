"""Input formats: ZITADEL execution bodies, Keycloak login events and CloudEvents envelopes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lockoutd.decide.engine import Engine
from lockoutd.decode.event import LOGIN_FAILED, LOGIN_SUCCEEDED, Event
from lockoutd.decode.formats import (
    MAPPED_EXTRA_FIELDS,
    ZITADEL_FAILURES,
    FormatName,
    decoder_for,
)
from lockoutd.decode.native import InvalidEvent, decode_native
from tests.unit.helpers import rule, ruleset

MAX_BYTES = 1_048_576

# The Actions v2 event execution body of reference/zitadel-api.md section 7 (PAYLOAD_TYPE_JSON).
ZITADEL_BODY: dict[str, Any] = {
    "aggregateID": "259242039378444290",
    "aggregateType": "user",
    "resourceOwner": "259242039378444289",
    "instanceID": "259242039378444288",
    "version": "v2",
    "sequence": 12,
    "event_type": "user.human.password.check.failed",
    "created_at": "2025-09-05T08:55:36.156333Z",
    "userID": "259242039378444290",
    "event_payload": {
        "id": "312909075211944357",
        "userAgentID": "312909075211879781",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "acceptLanguage": "en",
        "remoteIP": "203.0.113.7",
    },
}
ZITADEL_CREATED_AT = 1_757_062_536.156333

# A Keycloak LOGIN_ERROR as an event listener publishes it (EventRepresentation).
KEYCLOAK_EVENT: dict[str, Any] = {
    "id": "5d3e5c42-6f1e-4bd5-9c1a-7d1b2f0c1e11",
    "time": 1_732_889_587_123,
    "type": "LOGIN_ERROR",
    "realmId": "acme",
    "clientId": "account-console",
    "userId": "0b6f1c3e-8a5d-4f7b-9e2c-1d4a6b8c0e2f",
    "sessionId": None,
    "ipAddress": "203.0.113.7",
    "error": "invalid_user_credentials",
    "details": {
        "auth_method": "openid-connect",
        "auth_type": "code",
        "redirect_uri": "https://sso.example.com/realms/acme/account/",
        "code_id": "c0b1a2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d",
        "username": "Alice@Example.com",
    },
}

# A CloudEvents 1.0 structured-mode envelope whose data is a native event.
CLOUD_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "9f1c2b7e-3d4a-4c5b-8e6f-7a8b9c0d1e2f",
    "source": "//login.example.com/bridge",
    "type": "com.example.auth.login.failed",
    "time": "2026-11-29T14:03:07Z",
    "datacontenttype": "application/json",
    "subject": "259242039378444290",
    "data": {
        "type": "auth.login.failed",
        "user_id": "259242039378444290",
        "ip": "203.0.113.7",
        "reason": "password",
    },
}

SAMPLES: dict[FormatName, dict[str, Any]] = {
    "zitadel": ZITADEL_BODY,
    "keycloak": KEYCLOAK_EVENT,
    "cloudevents": CLOUD_EVENT,
}


def _decode(name: FormatName, document: Any) -> Event:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return decoder_for(name, max_bytes=MAX_BYTES)(raw)


def _changed(document: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``fields`` set; a value of ``...`` removes the field."""
    changed = copy.deepcopy(document)
    for name, value in fields.items():
        if value is ...:
            changed.pop(name, None)
        else:
            changed[name] = value
    return changed


def _reason(name: FormatName, document: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        _decode(name, document)
    return caught.value.reason


# ZITADEL


def test_a_zitadel_password_failure_maps_every_field() -> None:
    """The execution body becomes a failed login with user, org, address, agent and a unique id."""
    assert _decode("zitadel", ZITADEL_BODY) == Event(
        type=LOGIN_FAILED,
        occurred_at=ZITADEL_CREATED_AT,
        user_id="259242039378444290",
        org_id="259242039378444289",
        ip="203.0.113.7",
        reason="password",
        event_id="259242039378444288:259242039378444290:12",
        user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        extra={"zitadel_event_type": "user.human.password.check.failed"},
    )


def test_zitadel_nanosecond_times_are_read() -> None:
    """``created_at`` with nine fractional digits is read (to the microsecond)."""
    body = _changed(ZITADEL_BODY, created_at="2025-09-05T08:55:36.156333123Z")
    assert _decode("zitadel", body).occurred_at == pytest.approx(ZITADEL_CREATED_AT, abs=1e-6)


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [
        ("user.human.password.check.failed", "password"),
        ("user.password.check.failed", "password"),
        ("user.human.mfa.otp.check.failed", "otp"),
        ("user.mfa.otp.check.failed", "otp"),
        ("user.human.mfa.otp.sms.check.failed", "otp_sms"),
        ("user.human.mfa.otp.email.check.failed", "otp_email"),
        ("user.human.mfa.u2f.token.check.failed", "u2f"),
        ("user.human.passwordless.token.check.failed", "passwordless"),
        ("user.human.mfa.recoverycode.check.failed", "recovery_code"),
    ],
)
def test_every_zitadel_failed_check_is_a_failure(event_type: str, reason: str) -> None:
    """Each failed check of the reference (v1 names included) is a failure with its reason."""
    event = _decode("zitadel", _changed(ZITADEL_BODY, event_type=event_type))
    assert (event.type, event.reason) == (LOGIN_FAILED, reason)
    assert event.extra["zitadel_event_type"] == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        "user.human.password.check.succeeded",
        "user.human.mfa.otp.check.succeeded",
        "user.human.passwordless.token.check.succeeded",
        "user.human.mfa.u2f.token.check.succeeded",
        "user.human.mfa.otp.sms.check.succeeded",
        "user.human.mfa.otp.email.check.succeeded",
        "user.human.mfa.recoverycode.check.succeeded",
        "user.password.check.succeeded",  # v1 name
        "user.mfa.otp.check.succeeded",  # v1 name
    ],
)
def test_zitadel_successful_checks_are_successes(event_type: str) -> None:
    """A succeeded check is ``auth.login.succeeded`` with no reason, so it can reset a count."""
    event = _decode("zitadel", _changed(ZITADEL_BODY, event_type=event_type))
    assert (event.type, event.reason, event.user_id) == (
        LOGIN_SUCCEEDED,
        None,
        "259242039378444290",
    )


def test_every_failed_check_has_its_success() -> None:
    """Each check ZITADEL reports as failed also reports a success that can reset the window."""
    for failed in ZITADEL_FAILURES:
        succeeded = failed.removesuffix(".failed") + ".succeeded"
        event = _decode("zitadel", _changed(ZITADEL_BODY, event_type=succeeded))
        assert event.type == LOGIN_SUCCEEDED, succeeded


@pytest.mark.parametrize("event_type", ["user.locked", "user.unlocked", "user.human.added"])
def test_other_zitadel_events_pass_through(event_type: str) -> None:
    """Other event types keep their type (the daemon counts them as ignored) and need no payload."""
    event = _decode("zitadel", _changed(ZITADEL_BODY, event_type=event_type, event_payload=...))
    assert (event.type, event.reason, event.ip) == (event_type, None, None)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(..., id="no payload"),
        pytest.param({}, id="empty payload"),
        pytest.param({"remoteIP": "", "userAgent": ""}, id="empty strings"),
        pytest.param("eyJyZW1vdGVJUCI6IjEuMi4zLjQifQ==", id="base64 text"),
        pytest.param(None, id="null"),
    ],
)
def test_a_session_api_failure_has_no_address(payload: Any) -> None:
    """Checks made through the Session API carry no request info: no address, no agent."""
    event = _decode("zitadel", _changed(ZITADEL_BODY, event_payload=payload))
    assert (event.type, event.ip, event.user_agent) == (LOGIN_FAILED, None, None)


def test_a_zitadel_body_without_sequence_has_no_event_id() -> None:
    """Without ``sequence`` there is nothing that identifies the event uniquely."""
    assert _decode("zitadel", _changed(ZITADEL_BODY, sequence=...)).event_id is None


def test_a_zitadel_body_delivered_twice_counts_once() -> None:
    """The same body twice (a bridge's retry) has one ``event_id``, so a window counts it once."""
    engine = Engine(ruleset(rule(threshold=2, window="1h")))
    event = _decode("zitadel", ZITADEL_BODY)
    assert engine.process(event, ZITADEL_CREATED_AT) == []
    assert engine.process(_decode("zitadel", ZITADEL_BODY), ZITADEL_CREATED_AT) == []
    later = _decode("zitadel", _changed(ZITADEL_BODY, sequence=13))
    assert len(engine.process(later, ZITADEL_CREATED_AT)) == 1


@pytest.mark.parametrize(
    ("failed", "succeeded"),
    [
        ("user.human.mfa.otp.sms.check.failed", "user.human.mfa.otp.sms.check.succeeded"),
        ("user.human.mfa.otp.email.check.failed", "user.human.mfa.otp.email.check.succeeded"),
        ("user.human.mfa.recoverycode.check.failed", "user.human.mfa.recoverycode.check.succeeded"),
        ("user.password.check.failed", "user.password.check.succeeded"),
    ],
)
def test_a_zitadel_success_resets_the_window(failed: str, succeeded: str) -> None:
    """Two failures, the check then passes, two more failures: a threshold of 3 never fires."""
    reason = ZITADEL_FAILURES[failed]
    engine = Engine(
        ruleset(rule(match={"reason": [reason]}, threshold=3, window="1h", reset_on_success=True))
    )
    fired = []
    for sequence, event_type in enumerate([failed, failed, succeeded, failed, failed]):
        body = _changed(ZITADEL_BODY, event_type=event_type, sequence=sequence)
        fired += engine.process(_decode("zitadel", body), ZITADEL_CREATED_AT)
    assert fired == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"event_type": ...}, "missing_field", id="no event type"),
        pytest.param({"event_type": 7}, "missing_field", id="event type not a string"),
        pytest.param({"created_at": ...}, "missing_field", id="no time"),
        pytest.param({"created_at": "yesterday"}, "bad_time", id="not a time"),
        pytest.param({"created_at": "2025-09-05T08:55:36"}, "bad_time", id="time without offset"),
        pytest.param({"created_at": 1757062536}, "bad_time", id="time as a number"),
        pytest.param({"aggregateID": ...}, "missing_subject", id="no user"),
        pytest.param({"aggregateID": 259242039378444290}, "bad_field", id="user id a number"),
    ],
)
def test_a_zitadel_body_that_does_not_map_is_invalid(fields: dict[str, Any], reason: str) -> None:
    """A body that cannot become an event is an invalid record with a stable reason."""
    assert _reason("zitadel", _changed(ZITADEL_BODY, **fields)) == reason


@pytest.mark.parametrize(
    ("name", "document"),
    [
        pytest.param(
            "zitadel",
            _changed(ZITADEL_BODY, event_payload={"remoteIP": "not-an-ip"}),
            id="zitadel",
        ),
        pytest.param("keycloak", _changed(KEYCLOAK_EVENT, ipAddress="localhost"), id="keycloak"),
    ],
)
def test_an_address_that_is_none_counts_without_it_in_every_format(
    name: FormatName, document: dict[str, Any]
) -> None:
    """A client can write the address (a proxy's X-Forwarded-For): text that is no address
    refuses nothing, and is kept aside."""
    event = _decode(name, document)
    assert event.ip is None
    assert event.extra["ip_unparsed"] in ("not-an-ip", "localhost")


# Keycloak


def test_a_keycloak_login_error_maps_every_field() -> None:
    """A LOGIN_ERROR becomes a failure of the login name Keycloak was given; Keycloak's own ids,
    which ZITADEL does not know, travel as extra fields and never as the user or the org."""
    assert _decode("keycloak", KEYCLOAK_EVENT) == Event(
        type=LOGIN_FAILED,
        occurred_at=1_732_889_587.123,
        user_id=None,
        login_name="alice@example.com",
        org_id=None,
        ip="203.0.113.7",
        reason="password",
        event_id="5d3e5c42-6f1e-4bd5-9c1a-7d1b2f0c1e11",
        extra={
            "client_id": "account-console",
            "keycloak_user_id": "0b6f1c3e-8a5d-4f7b-9e2c-1d4a6b8c0e2f",
            "keycloak_realm": "acme",
        },
    )


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        pytest.param({"credential_type": "otp"}, "otp", id="credential type otp"),
        pytest.param({"selected_credential_id": "9b1e"}, "otp", id="the OTP form's credential"),
        pytest.param({"credential_type": "password"}, "password", id="credential type password"),
        pytest.param({"credential_type": "webauthn-passwordless"}, "passwordless", id="passkey"),
        pytest.param({}, "password", id="no credential named"),
    ],
)
def test_keycloak_wrong_credentials_are_told_apart_by_the_credential(
    details: dict[str, Any], reason: str
) -> None:
    """Keycloak says invalid_user_credentials for a wrong password and a wrong code alike."""
    document = _changed(KEYCLOAK_EVENT, details={**KEYCLOAK_EVENT["details"], **details})
    assert _decode("keycloak", document).reason == reason


def test_a_keycloak_login_without_a_username_cannot_name_a_zitadel_user() -> None:
    """Keycloak's userId is a UUID ZITADEL does not know: without the username, no user."""
    document = _changed(KEYCLOAK_EVENT, details={"auth_method": "openid-connect"})
    assert _reason("keycloak", document) == "missing_subject"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("invalid_user_credentials", "password"),
        ("user_not_found", "unknown_user"),
        ("invalid_totp", "otp"),
        ("invalid_authentication", "mfa"),
        ("user_temporarily_disabled", "user_temporarily_disabled"),
    ],
)
def test_keycloak_errors_become_reasons(error: str, reason: str) -> None:
    """Known Keycloak errors map onto lockoutd's reasons; others pass through unchanged."""
    assert _decode("keycloak", _changed(KEYCLOAK_EVENT, error=error)).reason == reason


def test_an_unknown_keycloak_user_is_known_by_login_name() -> None:
    """``user_not_found`` carries no ``userId``: the username stands in for the user."""
    document = _changed(KEYCLOAK_EVENT, userId=None, error="user_not_found")
    event = _decode("keycloak", document)
    assert (event.user_id, event.login_name, event.subject) == (
        None,
        "alice@example.com",
        "login_name:alice@example.com",
    )


def test_a_keycloak_login_is_a_success() -> None:
    """A LOGIN event is ``auth.login.succeeded`` without a reason."""
    event = _decode("keycloak", _changed(KEYCLOAK_EVENT, type="LOGIN", error=...))
    assert (event.type, event.reason) == (LOGIN_SUCCEEDED, None)


def test_other_keycloak_events_pass_through() -> None:
    """A LOGOUT keeps its own type, and is ignored by the daemon."""
    assert _decode("keycloak", _changed(KEYCLOAK_EVENT, type="LOGOUT", error=...)).type == "LOGOUT"


@pytest.mark.parametrize("kind", ["REFRESH_TOKEN", "LOGOUT", "CODE_TO_TOKEN"])
def test_other_keycloak_events_without_a_username_pass_through(kind: str) -> None:
    """Token refreshes and logouts name no username; their Keycloak user (a UUID, no ZITADEL
    id) stands in, so that they are counted as ignored rather than dead-lettered."""
    document = _changed(KEYCLOAK_EVENT, type=kind, error=..., details=...)
    event = _decode("keycloak", document)
    assert (event.type, event.user_id) == (kind, None)
    assert event.extra["keycloak_user_id"] == KEYCLOAK_EVENT["userId"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"time": ...}, "bad_time", id="no time"),
        pytest.param({"time": "2026-11-29T14:03:07Z"}, "bad_time", id="time as text"),
        pytest.param({"time": 1732889587.5}, "bad_time", id="fractional milliseconds"),
        pytest.param({"time": True}, "bad_time", id="time as a boolean"),
        pytest.param({"time": 10**20}, "time_out_of_range", id="time past the calendar"),
        pytest.param({"time": -(10**20)}, "time_out_of_range", id="time before the calendar"),
        pytest.param({"time": 10**400}, "time_out_of_range", id="time beyond a float"),
        pytest.param({"type": ...}, "missing_field", id="no type"),
        pytest.param({"userId": ..., "details": {}}, "missing_subject", id="no user at all"),
        pytest.param({"details": {"username": 7}}, "bad_field", id="username not a string"),
    ],
)
def test_a_keycloak_event_that_does_not_map_is_invalid(fields: dict[str, Any], reason: str) -> None:
    """A Keycloak event that cannot become an event is an invalid record with a stable reason."""
    assert _reason("keycloak", _changed(KEYCLOAK_EVENT, **fields)) == reason


# CloudEvents


def test_a_cloud_event_unwraps_its_data() -> None:
    """The native event in ``data`` is the event; the envelope's id and time fill in for it."""
    assert _decode("cloudevents", CLOUD_EVENT) == Event(
        type=LOGIN_FAILED,
        occurred_at=1_795_960_987.0,
        user_id="259242039378444290",
        ip="203.0.113.7",
        reason="password",
        event_id="9f1c2b7e-3d4a-4c5b-8e6f-7a8b9c0d1e2f",
    )


def test_the_data_of_a_cloud_event_wins_over_its_envelope() -> None:
    """An ``event_id`` or ``occurred_at`` inside ``data`` is the event's own and is kept."""
    data = {**CLOUD_EVENT["data"], "event_id": "own-id", "occurred_at": "2026-11-29T14:00:00Z"}
    event = _decode("cloudevents", _changed(CLOUD_EVENT, data=data))
    assert (event.event_id, event.occurred_at) == ("own-id", 1_795_960_800.0)


def test_a_cloud_event_without_an_id_has_no_event_id() -> None:
    """Neither the envelope nor the data naming an id leaves the event without one."""
    assert _decode("cloudevents", _changed(CLOUD_EVENT, id=...)).event_id is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"specversion": ...}, "bad_envelope", id="no specversion"),
        pytest.param({"specversion": "0.3"}, "bad_envelope", id="another version"),
        pytest.param({"data": ...}, "bad_envelope", id="no data"),
        pytest.param({"data": "a string"}, "bad_envelope", id="data not an object"),
        pytest.param({"data": ..., "data_base64": "e30="}, "bad_envelope", id="binary data"),
        pytest.param({"time": "soon"}, "bad_time", id="bad envelope time"),
        pytest.param({"time": ...}, "missing_field", id="no time anywhere"),
        pytest.param({"data": {"type": LOGIN_FAILED}}, "missing_subject", id="data without user"),
        pytest.param({"data": {"user_id": "1"}}, "missing_field", id="data without type"),
    ],
)
def test_a_cloud_event_that_does_not_map_is_invalid(fields: dict[str, Any], reason: str) -> None:
    """An envelope that is not CloudEvents 1.0 or carries no event is an invalid record."""
    assert _reason("cloudevents", _changed(CLOUD_EVENT, **fields)) == reason


# Every format


def test_native_is_the_native_decoder() -> None:
    """``decoder_for("native")`` decodes exactly as the native decoder does."""
    raw = json.dumps(CLOUD_EVENT["data"] | {"occurred_at": "2026-11-29T14:03:07Z"}).encode()
    assert decoder_for("native", max_bytes=MAX_BYTES)(raw) == decode_native(
        raw, max_bytes=MAX_BYTES
    )


@pytest.mark.parametrize("name", ["native", "zitadel", "keycloak", "cloudevents"])
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"{not json", "invalid_json", id="invalid JSON"),
        pytest.param(b"\xff\xfe", "invalid_json", id="not UTF-8"),
        pytest.param(b"[1, 2]", "not_an_object", id="a list"),
        pytest.param(b"null", "not_an_object", id="null"),
        pytest.param(b"{}", None, id="an empty object"),
    ],
)
def test_every_format_refuses_what_is_not_an_object(
    name: FormatName, raw: bytes, reason: str | None
) -> None:
    """Broken JSON and non-objects are invalid records whatever the format."""
    with pytest.raises(InvalidEvent) as caught:
        _decode(name, raw)
    if reason is not None:
        assert caught.value.reason == reason


@pytest.mark.parametrize("name", ["zitadel", "keycloak", "cloudevents"])
def test_every_format_refuses_records_over_the_size_limit(name: FormatName) -> None:
    """The size limit holds before any mapping."""
    raw = json.dumps(SAMPLES[name]).encode()
    with pytest.raises(InvalidEvent) as caught:
        decoder_for(name, max_bytes=len(raw) - 1)(raw)
    assert caught.value.reason == "too_large"


ODD_VALUES: list[Any] = [
    ...,
    None,
    True,
    0,
    -1,
    1.5,
    10**20,
    -(10**20),
    10**400,
    "",
    "x",
    "2025-13-45T99:99:99Z",
    "9999-12-31T23:59:59-23:59",
    "::ffff:1.2.3.4",
    [],
    ["a"],
    {},
    {"a": {"b": None}},
]


def _variants(document: dict[str, Any]) -> list[dict[str, Any]]:
    """``document`` with each field, and each field of each nested object, set to each odd value."""
    variants = []
    for name, value in document.items():
        for odd in ODD_VALUES:
            variants.append(_changed(document, **{name: odd}))
        if isinstance(value, dict):
            for inner in _variants(value):
                variants.append(_changed(document, **{name: inner}))
    return variants


@pytest.mark.parametrize("name", ["zitadel", "keycloak", "cloudevents"])
def test_no_record_raises_anything_but_invalid_event(name: FormatName) -> None:
    """Whatever odd value any field holds, decoding gives an event or an ``InvalidEvent``."""
    for document in _variants(SAMPLES[name]):
        try:
            event = _decode(name, document)
        except InvalidEvent:
            continue
        assert isinstance(event, Event)
        assert event.subject


@pytest.mark.parametrize("name", ["zitadel", "keycloak"])
def test_the_fields_a_format_adds_are_the_ones_rules_are_told_about(name: FormatName) -> None:
    """``lockoutd check`` warns about a match on a field no format produces; a mapper that gains
    a field must be listed in MAPPED_EXTRA_FIELDS, or rules on it would be warned about."""
    assert set(_decode(name, SAMPLES[name]).extra) <= MAPPED_EXTRA_FIELDS
    assert _decode(name, SAMPLES[name]).extra  # each of these two adds one
