"""What cannot be a real login event is refused at decoding, in every input format (README,
"Events"): nesting beyond a small depth, times outside a sane range, times from the future,
identity fields longer than an identity server writes (and a user agent is cut, not refused)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from lockoutd.decide.decision import rfc3339
from lockoutd.decode import native
from lockoutd.decode.event import Event
from lockoutd.decode.formats import FormatName, decoder_for
from lockoutd.decode.limits import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    MAX_NESTING,
    MAX_USER_AGENT_CHARACTERS,
    Horizon,
)
from lockoutd.decode.native import InvalidEvent, RefusedElement, bundle_decoder, bundle_element
from tests.unit.decode.test_formats import CLOUD_EVENT, KEYCLOAK_EVENT, ZITADEL_BODY
from tests.unit.helpers import Clock

MAX_BYTES = 1_048_576
NOW = 1_795_960_987.0  # 2026-11-29T14:03:07Z
FORMATS: list[FormatName] = ["native", "zitadel", "keycloak", "cloudevents"]


def _nested(depth: int) -> Any:
    """An array nested ``depth`` deep: ``[[...]]`` holding a string at the bottom."""
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _native(**fields: Any) -> dict[str, Any]:
    return {
        "type": "auth.login.failed",
        "occurred_at": rfc3339(NOW - 60),
        "user_id": "42",
        "reason": "password",
        **fields,
    }


def _with_time(name: FormatName, at: str) -> dict[str, Any]:
    """A valid record of format ``name`` stamped ``at`` (RFC 3339) where the format keeps time."""
    if name == "native":
        return _native(occurred_at=at)
    if name == "zitadel":
        return {**ZITADEL_BODY, "created_at": at}
    if name == "keycloak":
        millis = round(datetime.fromisoformat(at).timestamp() * 1000)
        return {**KEYCLOAK_EVENT, "time": millis}
    return {**CLOUD_EVENT, "time": at}


def _with_extra(name: FormatName, value: Any) -> dict[str, Any]:
    """A valid record of format ``name`` carrying ``value`` in a field nobody reads."""
    if name == "native":
        return _native(x=value)
    if name == "zitadel":
        return {**ZITADEL_BODY, "event_payload": {**ZITADEL_BODY["event_payload"], "x": value}}
    if name == "keycloak":
        return {**KEYCLOAK_EVENT, "details": {**KEYCLOAK_EVENT["details"], "x": value}}
    return {**CLOUD_EVENT, "data": {**CLOUD_EVENT["data"], "x": value}}


def _decode(name: FormatName, document: Any, *, horizon: Horizon | None = None) -> Event:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    decode = decoder_for(name, max_bytes=MAX_BYTES, horizon=horizon or Horizon(clock=lambda: NOW))
    return decode(raw)


def _reason(name: FormatName, document: Any, *, horizon: Horizon | None = None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        _decode(name, document, horizon=horizon)
    return caught.value.reason


# Nesting


@pytest.mark.parametrize("name", FORMATS)
def test_a_field_nested_a_thousand_deep_is_too_deep(name: FormatName) -> None:
    """The 2 KB record that once crash-looped the daemon is an invalid record, not an error."""
    # Written by hand: json.dumps itself gives up on a thousand levels.
    raw = json.dumps(_with_extra(name, "DEEP")).replace('"DEEP"', "[" * 1000 + "]" * 1000)
    assert len(raw) < 2600
    assert _reason(name, raw.encode()) == "too_deep"


@pytest.mark.parametrize("name", FORMATS)
def test_nesting_just_beyond_the_limit_is_too_deep(name: FormatName) -> None:
    """The record's own object counts as one level; a field may nest up to the limit."""
    assert _reason(name, _with_extra(name, _nested(MAX_NESTING))) == "too_deep"


def test_nesting_within_the_limit_is_kept() -> None:
    """An extra field nested as deep as allowed is kept as it was written."""
    value = _nested(MAX_NESTING - 1)
    assert _decode("native", _native(x=value)).extra == {"x": value}


@pytest.mark.parametrize("name", FORMATS)
def test_a_deep_object_is_too_deep_as_a_deep_array_is(name: FormatName) -> None:
    """Objects within objects count like arrays within arrays."""
    value: Any = {}
    for _ in range(MAX_NESTING):
        value = {"a": value}
    assert _reason(name, _with_extra(name, value)) == "too_deep"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"x": ' + b"[" * 100_000, id="deep and truncated"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="a deep array, not an object"),
        pytest.param(b'{"type": ' + b"[" * 3000 + b"]" * 3000 + b"}", id="deep standard field"),
    ],
)
@pytest.mark.parametrize("name", FORMATS)
def test_deep_records_of_every_shape_are_refused(name: FormatName, raw: bytes) -> None:
    """Whatever is wrong besides, a deep record never raises anything but ``InvalidEvent``."""
    assert _reason(name, raw) in {"too_deep", "not_an_object", "invalid_json", "bad_field"}


# Times outside a sane range


OUT_OF_RANGE = [
    "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
    "0001-01-01T00:30:00+01:00",  # year 0 in UTC
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
]


@pytest.mark.parametrize(
    ("name", "at"),
    [
        (name, at)
        for name in FORMATS
        for at in OUT_OF_RANGE
        # Milliseconds since 1970 cannot spell years 0 and 10000; they have a test of their own.
        if name != "keycloak" or at.startswith(("1999", "2100"))
    ],
)
def test_a_time_outside_the_sane_range_is_refused(name: FormatName, at: str) -> None:
    """Times no login event can carry are refused with their own reason."""
    skew_off = Horizon(max_clock_skew=None)
    assert _reason(name, _with_time(name, at), horizon=skew_off) == "time_out_of_range"


@pytest.mark.parametrize("millis", [0, -1, 253_402_300_799_999, 10**16])
def test_a_keycloak_time_outside_the_sane_range_is_refused(millis: int) -> None:
    """``time`` in milliseconds is held to the same range."""
    document = {**KEYCLOAK_EVENT, "time": millis}
    assert _reason("keycloak", document, horizon=Horizon(max_clock_skew=None)) == (
        "time_out_of_range"
    )


def test_the_ends_of_the_sane_range() -> None:
    """The range's first second is accepted, its end is not."""
    skew_off = Horizon(max_clock_skew=None)
    first = _native(occurred_at=rfc3339(EARLIEST_EVENT_TIME))
    assert _decode("native", first, horizon=skew_off).occurred_at == EARLIEST_EVENT_TIME
    last = _native(occurred_at=rfc3339(LATEST_EVENT_TIME))
    assert _reason("native", last, horizon=skew_off) == "time_out_of_range"


# Times from the future


@pytest.mark.parametrize("name", FORMATS)
def test_a_time_beyond_the_clock_skew_is_from_the_future(name: FormatName) -> None:
    """An event stamped further ahead of the wall clock than the allowed skew is refused."""
    horizon = Horizon(max_clock_skew=300.0, clock=lambda: NOW)
    ahead = _with_time(name, rfc3339(NOW + 301))
    assert _reason(name, ahead, horizon=horizon) == "future_time"
    a_year_ahead = _with_time(name, rfc3339(NOW + 365 * 86400))
    assert _reason(name, a_year_ahead, horizon=horizon) == "future_time"


@pytest.mark.parametrize("name", FORMATS)
def test_a_time_within_the_clock_skew_is_accepted(name: FormatName) -> None:
    """A producer whose clock runs a little ahead is not refused."""
    horizon = Horizon(max_clock_skew=300.0, clock=lambda: NOW)
    at = NOW + 299
    assert _decode(name, _with_time(name, rfc3339(at)), horizon=horizon).occurred_at == (
        pytest.approx(at)
    )


def test_the_future_is_measured_against_the_clock_at_decoding() -> None:
    """A time refused as future is accepted once the wall clock has caught up with it."""
    clock = Clock(NOW)
    decode = decoder_for(
        "native", max_bytes=MAX_BYTES, horizon=Horizon(max_clock_skew=60.0, clock=clock)
    )
    near = json.dumps(_native(occurred_at=rfc3339(NOW + 30))).encode()
    ahead = json.dumps(_native(occurred_at=rfc3339(NOW + 600))).encode()
    assert decode(near).occurred_at == NOW + 30
    with pytest.raises(InvalidEvent):
        decode(ahead)
    clock.advance(600)
    assert decode(ahead).occurred_at == NOW + 600


def test_the_default_skew_is_a_few_minutes() -> None:
    """Without a setting, five minutes of skew are allowed."""
    horizon = Horizon(clock=lambda: NOW)
    assert _decode("native", _native(occurred_at=rfc3339(NOW + 290)), horizon=horizon)
    assert _reason("native", _native(occurred_at=rfc3339(NOW + 310)), horizon=horizon) == (
        "future_time"
    )


def test_a_time_now_is_accepted_with_the_wall_clock() -> None:
    """The default horizon reads the real wall clock."""
    now = rfc3339(datetime.now(UTC).timestamp())
    assert decoder_for("native", max_bytes=MAX_BYTES)(json.dumps(_native(occurred_at=now)).encode())


# Lengths

# The longest each standard field may be.
_LONGEST: list[tuple[str, int]] = [
    ("user_id", 64),
    ("org_id", 64),
    ("event_id", 512),
    ("type", 128),
    ("reason", 128),
]


@pytest.mark.parametrize(("field", "longest"), _LONGEST)
@pytest.mark.parametrize("extra", [False, True], ids=["standard fields only", "with an extra"])
def test_a_field_longer_than_any_identity_server_writes_is_refused(
    field: str, longest: int, extra: bool
) -> None:
    """One character more than the limit is ``field_too_long``, on both of the native decoder's
    paths; the limit itself is a field like any other."""
    more = {"x": 1} if extra else {}
    assert _reason("native", _native(**{field: "7" * (longest + 1)}, **more)) == "field_too_long"
    event = _decode("native", _native(**{field: "7" * longest}, **more))
    assert len(event.value_of(field)) == longest


@pytest.mark.parametrize("length", [65, 600_000])
def test_an_ip_of_any_length_refuses_nothing(length: int) -> None:
    """A client may write the ip (X-Forwarded-For): however long, it is no address and hides no
    failure. Its first 64 characters are kept aside, and it is remembered nowhere else."""
    event = _decode("native", _native(ip="9" * length))
    assert (event.user_id, event.ip) == ("42", None)
    assert event.extra["ip_unparsed"] == "9" * 64
    assert "9" * length not in native._NORMALIZED


def test_a_long_login_name_without_a_user_id_is_refused_and_beside_one_is_dropped() -> None:
    """The client types its login name: a long one beside a user id cannot hide the failure,
    which counts for the user id; alone it names no account that can exist. The limit is on
    the name as kept, trimmed and lower-cased."""
    alone = {k: v for k, v in _native(login_name="A" * 513).items() if k != "user_id"}
    assert _reason("native", alone) == "field_too_long"
    assert _decode("native", {**alone, "login_name": " " + "A" * 512 + " "}).login_name == "a" * 512
    beside = _decode("native", _native(login_name="a" * 600_000))
    assert (beside.user_id, beside.login_name) == ("42", None)


def test_other_formats_refuse_a_long_login_name_too() -> None:
    """A Keycloak user name becomes the login name, and is held to its limit."""
    long_name = {**KEYCLOAK_EVENT, "details": {**KEYCLOAK_EVENT["details"], "username": "a" * 513}}
    assert _reason("keycloak", long_name) == "field_too_long"
    data = {**CLOUD_EVENT["data"], "user_id": "7" * 201}
    assert _reason("cloudevents", {**CLOUD_EVENT, "data": data}) == "field_too_long"


def test_an_element_of_a_bundle_with_a_long_user_id_is_refused_alone() -> None:
    """An internal record is held to the limits of a source record, element by element."""
    good = _decode("native", _native())
    element = list(bundle_element(good, "e1"))
    long_id = [*element[:2], "7" * 201, *element[3:]]
    raw = json.dumps([element, long_id]).encode()
    decoded = bundle_decoder(max_bytes=MAX_BYTES, horizon=Horizon(clock=lambda: NOW))(raw)
    assert isinstance(decoded[0], Event)
    assert decoded[0].user_id == "42"
    assert isinstance(decoded[1], RefusedElement)
    assert decoded[1].error.reason == "field_too_long"


@pytest.mark.parametrize(
    "length", [MAX_USER_AGENT_CHARACTERS, MAX_USER_AGENT_CHARACTERS + 1, 600_000]
)
def test_a_long_user_agent_is_cut_and_the_failure_counts(length: int) -> None:
    """The client writes its user agent: refusing a long one would let an attacker hide every
    failure behind it. It is kept up to the limit, and the event is decoded."""
    agent = "Mozilla/5.0 " + "A" * (length - 12)
    event = _decode("native", _native(user_agent=agent))
    assert event.user_id == "42"
    assert event.user_agent == agent[:MAX_USER_AGENT_CHARACTERS]
