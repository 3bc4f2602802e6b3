"""Decoding native events (README, "Events"): good records in all their fields, bad ones by why."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from lockoutd.decode.event import LOGIN_FAILED, LOGIN_SUCCEEDED, Event
from lockoutd.decode.native import (
    InvalidEvent,
    decode_native,
    event_from_mapping,
    native_decoder,
)

MAX_BYTES = 1_048_576


def _record(**fields: Any) -> bytes:
    """A valid failure for user 42 with ``fields`` changed; a value of ``...`` drops the field."""
    document: dict[str, Any] = {
        "type": LOGIN_FAILED,
        "occurred_at": "2026-11-29T14:03:07Z",
        "user_id": "42",
    }
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def _decode(raw: bytes, *, max_bytes: int = MAX_BYTES) -> Event:
    return decode_native(raw, max_bytes=max_bytes)


def test_a_full_event_keeps_every_field() -> None:
    """A record with every standard field decodes into an event that carries each of them."""
    raw = _record(
        user_id="259242039378444290",
        login_name="alice@example.com",
        org_id="259242039378444289",
        ip="192.0.2.7",
        reason="password",
        event_id="evt-1",
        user_agent="curl/8.5",
    )
    assert _decode(raw) == Event(
        type=LOGIN_FAILED,
        occurred_at=1_795_960_987.0,
        user_id="259242039378444290",
        login_name="alice@example.com",
        org_id="259242039378444289",
        ip="192.0.2.7",
        reason="password",
        event_id="evt-1",
        user_agent="curl/8.5",
        extra={},
    )


def test_a_success_decodes_with_its_type() -> None:
    """A success decodes like a failure, with its own type."""
    assert _decode(_record(type=LOGIN_SUCCEEDED)).type == LOGIN_SUCCEEDED


def test_an_unknown_type_is_an_event_not_an_error() -> None:
    """A type lockoutd does not know is decoded (and ignored later), not refused."""
    assert _decode(_record(type="auth.logout")).type == "auth.logout"


def test_the_login_name_is_lower_cased() -> None:
    """``Alice@Example.COM`` and ``alice@example.com`` are the same login name."""
    event = _decode(_record(user_id=..., login_name="Alice@Example.COM"))
    assert event.login_name == "alice@example.com"
    assert event.user_id is None


def test_the_login_name_is_trimmed_too() -> None:
    """ " BreakGlass@acme.example" and "breakglass@acme.example" are one user in every key."""
    event = _decode(_record(user_id=..., login_name=" \tBreakGlass@acme.example "))
    assert event.login_name == "breakglass@acme.example"


def test_a_login_name_of_spaces_names_no_one() -> None:
    """A name that is only whitespace is no name: without a user id the record is invalid."""
    with pytest.raises(InvalidEvent) as caught:
        _decode(_record(user_id=..., login_name="   "))
    assert caught.value.reason == "missing_subject"


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
    ],
)
def test_an_address_has_one_spelling(written: str, normalised: str) -> None:
    """Every spelling of one address decodes to the same text, so rule keys count it once."""
    assert _decode(_record(ip=written)).ip == normalised


@pytest.mark.parametrize(
    ("occurred_at", "epoch_seconds"),
    [
        ("2026-11-29T14:03:07Z", 1_795_960_987.0),
        ("2026-11-29T14:03:07+00:00", 1_795_960_987.0),
        ("2026-11-29T16:03:07+02:00", 1_795_960_987.0),
        ("2026-11-29T08:33:07-05:30", 1_795_960_987.0),
        ("2026-11-29T14:03:07.250Z", 1_795_960_987.25),
        ("2026-11-29T14:03:07.123456Z", 1_795_960_987.123456),
        ("2026-11-29T14:03:07.123456789Z", 1_795_960_987.123457),
        ("2026-11-29t14:03:07z", 1_795_960_987.0),
    ],
)
def test_the_time_with_any_offset_is_epoch_seconds(occurred_at: str, epoch_seconds: float) -> None:
    """An RFC 3339 time with any UTC offset becomes the same instant in epoch seconds."""
    assert _decode(_record(occurred_at=occurred_at)).occurred_at == epoch_seconds


def test_an_address_decodes_the_same_every_time() -> None:
    """An address met again decodes to the spelling it had the first time."""
    first = _decode(_record(ip="2001:DB8:0::7"))
    again = _decode(_record(ip="2001:DB8:0::7"))
    assert first.ip == again.ip == "2001:db8::7"


def test_text_that_is_no_address_is_kept_aside_every_time() -> None:
    """An ``ip`` that is no address refuses nothing (a client may have written it): the event
    has no address and keeps the text as ``ip_unparsed``, again when it comes back, never
    remembered as an address."""
    for _ in range(2):
        event = _decode(_record(ip="192.0.2.300", client="web"))
        assert (event.user_id, event.ip) == ("42", None)
        assert event.extra == {"client": "web", "ip_unparsed": "192.0.2.300"}
    assert _decode(_record(ip="192.0.2.30")).ip == "192.0.2.30"


def test_extra_fields_are_kept() -> None:
    """Fields the SPEC does not name are kept, with their JSON types, for rules to match."""
    event = _decode(_record(client="web", attempt=3, risk={"score": 0.9}))
    assert event.extra == {"client": "web", "attempt": 3, "risk": {"score": 0.9}}
    assert event.value_of("client") == "web"


def test_extra_fields_leave_the_standard_ones_alone() -> None:
    """A record with extra fields decodes its standard fields as the same record without them."""
    fields = {"login_name": "Bob", "ip": "::ffff:192.0.2.7", "reason": "otp", "event_id": "e1"}
    plain = _decode(_record(**fields))
    extended = _decode(_record(**fields, client="web"))
    assert extended == Event(**{**msgspec.structs.asdict(plain), "extra": {"client": "web"}})


def test_null_optional_fields_are_absent() -> None:
    """A JSON null in an optional field is the same as leaving the field out."""
    nulls = dict.fromkeys(("login_name", "org_id", "ip", "reason", "event_id", "user_agent"))
    assert _decode(_record(**nulls)) == _decode(_record())


def test_empty_optional_strings_are_absent() -> None:
    """An empty ``org_id``, ``ip`` or ``event_id`` is the same as none."""
    event = _decode(_record(org_id="", ip="", event_id=""))
    assert (event.org_id, event.ip, event.event_id) == (None, None, None)


def test_a_login_name_alone_names_the_subject() -> None:
    """With no user id, the login name stands in for it, marked as a name (README, "Events")."""
    event = _decode(_record(user_id=..., login_name="bob"))
    assert event.subject == "login_name:bob"
    assert event.value_of("user_id") == "login_name:bob"


def test_a_login_name_alone_in_an_org_names_the_subject_in_that_org() -> None:
    """The lock looks the name up in the org the event claims: the subject says which."""
    event = _decode(_record(user_id=..., login_name="bob", org_id="300"))
    assert event.subject == "org_id:300 login_name:bob"


@pytest.mark.parametrize("field", ["user_id", "org_id"])
@pytest.mark.parametrize(
    "value",
    ["bob@example.com", "login_name:bob", "\uff11\uff12", "12 3", "-1", "7" * 65],
    ids=["a login name", "a marked name", "full-width digits", "a space", "a sign", "too long"],
)
def test_an_id_that_is_no_zitadel_id_is_refused(field: str, value: str) -> None:
    """A user id that could spell a login name would count in that name's window: ids are ASCII
    digits, or the record is dead-lettered (README, "Events")."""
    with pytest.raises(InvalidEvent) as refused:
        _decode(_record(**{field: value}))
    assert refused.value.reason == ("field_too_long" if len(value) > 64 else "bad_id")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "invalid_json", id="empty bytes"),
        pytest.param(b"{not json", "invalid_json", id="not JSON"),
        pytest.param(b'{"type": "auth.login.failed",', "invalid_json", id="truncated"),
        pytest.param(b"\xff\xfe\x00", "invalid_json", id="invalid UTF-8 bytes"),
        pytest.param(
            b'{"type":"auth.login.failed","occurred_at":"2026-11-29T14:03:07Z","user_id":"\xff"}',
            "invalid_json",
            id="invalid UTF-8 inside a string",
        ),
        pytest.param(b"[1, 2]", "not_an_object", id="array"),
        pytest.param(b'"auth.login.failed"', "not_an_object", id="string"),
        pytest.param(b"42", "not_an_object", id="number"),
        pytest.param(b"null", "not_an_object", id="null"),
        pytest.param(_record(type=...), "missing_field", id="missing type"),
        pytest.param(_record(occurred_at=...), "missing_field", id="missing occurred_at"),
        pytest.param(_record(user_id=...), "missing_subject", id="no user_id nor login_name"),
        pytest.param(_record(user_id="", login_name=""), "missing_subject", id="both empty"),
        pytest.param(_record(occurred_at="yesterday"), "bad_time", id="not a time"),
        pytest.param(_record(occurred_at="2026-11-29"), "bad_time", id="a date only"),
        pytest.param(_record(occurred_at="2026-13-01T00:00:00Z"), "bad_time", id="month 13"),
        pytest.param(_record(occurred_at=1_795_960_987), "bad_time", id="epoch number"),
        pytest.param(_record(occurred_at="2026-11-29T14:03:07"), "bad_time", id="no offset"),
        pytest.param(_record(occurred_at="2026-12-31T23:59:60Z"), "bad_time", id="leap second"),
        pytest.param(_record(occurred_at="2026-11-29T14:03:07+24:00"), "bad_time", id="offset 24h"),
        pytest.param(_record(occurred_at=None), "bad_time", id="null time"),
        pytest.param(_record(type=5), "bad_field", id="type is a number"),
        pytest.param(_record(user_id=42), "bad_field", id="user_id is a number"),
        pytest.param(_record(login_name=["a"]), "bad_field", id="login_name is a list"),
        pytest.param(_record(reason={"a": 1}), "bad_field", id="reason is an object"),
    ],
)
def test_a_bad_record_is_refused_with_its_reason(raw: bytes, reason: str) -> None:
    """Every kind of bad record raises ``InvalidEvent`` with a stable reason code."""
    with pytest.raises(InvalidEvent) as caught:
        _decode(raw)
    assert caught.value.reason == reason


def test_a_record_over_max_bytes_is_too_large() -> None:
    """A record one byte over ``max_bytes`` is refused before it is parsed."""
    raw = _record()
    with pytest.raises(
        InvalidEvent, match=f"record of {len(raw)} bytes exceeds {len(raw) - 1}"
    ) as e:
        _decode(raw, max_bytes=len(raw) - 1)
    assert e.value.reason == "too_large"


def test_a_record_of_exactly_max_bytes_is_accepted() -> None:
    """``max_bytes`` is the largest size accepted, not the first refused."""
    raw = _record()
    assert _decode(raw, max_bytes=len(raw)).user_id == "42"


def test_the_message_says_what_was_wrong() -> None:
    """The message of a refusal names the field at fault."""
    with pytest.raises(InvalidEvent, match="occurred_at"):
        _decode(_record(occurred_at=...))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_record(login_name="Eve", ip="2001:DB8::1", client="web"), id="event"),
        pytest.param(_record(occurred_at="2026-11-29T14:03:07"), id="naive time"),
        pytest.param(b"[]", id="not an object"),
        pytest.param(_record(user_agent="x" * 200), id="too large"),
    ],
)
def test_the_one_argument_decoder_decodes_as_decode_native(raw: bytes) -> None:
    """``native_decoder`` gives the same event, or the same refusal, as ``decode_native``."""
    decode = native_decoder(max_bytes=200)
    try:
        expected: Event | tuple[str, str] = decode_native(raw, max_bytes=200)
    except InvalidEvent as error:
        expected = (error.reason, str(error))
    try:
        got: Event | tuple[str, str] = decode(raw)
    except InvalidEvent as error:
        got = (error.reason, str(error))
    assert got == expected


def test_other_formats_share_the_validation() -> None:
    """``event_from_mapping`` applies the same rules to a mapping another format produced."""
    with pytest.raises(InvalidEvent) as caught:
        event_from_mapping({"type": LOGIN_FAILED, "occurred_at": "2026-11-29T14:03:07Z"})
    assert caught.value.reason == "missing_subject"
