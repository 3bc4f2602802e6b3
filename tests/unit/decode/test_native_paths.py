"""The native decoder's shortcut for the common record decides exactly as its general path.

A record of standard fields only is decoded straight into a struct; every other record goes
through a dict (README, "Events"). Whichever way a record takes, it must become the same event
or be refused for the same reason, so these properties throw valid and invalid records of every
field at both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockoutd.decode.event import Event
from lockoutd.decode.limits import Horizon
from lockoutd.decode.native import (
    InvalidEvent,
    decode_native,
    decode_object,
    event_from_mapping,
    native_decoder,
)
from tests.unit.decode.test_addresses import any_text

PROPERTY = settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW = 1_795_960_987.0
MAX_BYTES = 1 << 20

offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5.5))])
# Around the accepted range (2000 to the clock plus five minutes) and well beyond it.
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2110, 1, 1), timezones=offsets
)
near_now = st.floats(min_value=NOW - 86_400, max_value=NOW + 900).map(
    lambda at: datetime.fromtimestamp(at, UTC)
)


def _rfc3339(moment: datetime, style: int) -> str:
    text = moment.isoformat()
    if style == 1:
        return text.replace("+00:00", "Z")
    if style == 2:
        return text.lower().replace("+00:00", "z")
    if style == 3:
        return text[: text.index("+") if "+" in text else len(text)]  # no offset: refused
    return text


times = st.one_of(
    st.builds(_rfc3339, st.one_of(instants, near_now), st.integers(0, 3)),
    st.text(max_size=30),
    st.integers(),
    st.none(),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", " Alice@X ", "42"]))
values = st.one_of(texts, st.none(), st.integers(), st.booleans(), st.lists(st.integers()))
ABSENT = object()


def _record(
    time: st.SearchStrategy[Any],
    field: st.SearchStrategy[Any],
    ip: st.SearchStrategy[Any],
    required: st.SearchStrategy[Any],
) -> st.SearchStrategy[dict[str, Any]]:
    def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(st.just(ABSENT), strategy)

    def needed(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(required, strategy)

    return st.fixed_dictionaries(
        {
            "type": needed(st.sampled_from(["auth.login.failed", "auth.login.succeeded", "x"])),
            "occurred_at": needed(time),
            "user_id": maybe(field),
            "login_name": maybe(field),
            "org_id": maybe(field),
            "ip": maybe(ip),
            "reason": maybe(field),
            "event_id": maybe(field),
            "user_agent": maybe(field),
        }
    ).map(lambda fields: {k: v for k, v in fields.items() if v is not ABSENT})


# Mostly events, some refused for one thing; and records with anything in any field.
plausible = _record(
    st.builds(_rfc3339, near_now, st.integers(0, 3)),
    texts,
    any_text,
    required=st.nothing(),
)
anything = _record(times, values, st.one_of(any_text, values), required=st.just(ABSENT))
records = st.one_of(plausible, plausible, plausible, anything)


def _outcome(decode: Any, raw: bytes) -> Event | str:
    try:
        event: Event = decode(raw)
    except InvalidEvent as exc:
        return exc.reason
    return event


def _general_path(raw: bytes) -> Event:
    horizon = Horizon(clock=lambda: NOW)
    return event_from_mapping(decode_object(raw, max_bytes=MAX_BYTES), horizon)


@PROPERTY
@given(records)
def test_the_shortcut_decides_as_the_general_path(record: dict[str, Any]) -> None:
    """Any record of standard fields becomes the same event (or refusal) on both paths."""
    raw = json.dumps(record).encode()
    expected = _outcome(_general_path, raw)
    horizon = Horizon(clock=lambda: NOW)
    assert _outcome(lambda r: decode_native(r, max_bytes=MAX_BYTES, horizon=horizon), raw) == (
        expected
    )
    one_argument = native_decoder(max_bytes=MAX_BYTES, horizon=Horizon(clock=lambda: NOW))
    assert _outcome(one_argument, raw) == expected


@PROPERTY
@given(records, st.dictionaries(st.sampled_from(["client", "risk", "x"]), values, min_size=1))
def test_extra_fields_change_nothing_else(record: dict[str, Any], extra: dict[str, Any]) -> None:
    """A record with extra fields decodes its standard ones as the same record without them."""
    horizon = Horizon(clock=lambda: NOW)
    plain = _outcome(
        lambda r: decode_native(r, max_bytes=MAX_BYTES, horizon=horizon),
        json.dumps(record).encode(),
    )
    more = _outcome(
        lambda r: decode_native(r, max_bytes=MAX_BYTES, horizon=horizon),
        json.dumps(record | extra).encode(),
    )
    if isinstance(plain, Event):
        assert isinstance(more, Event)
        assert more.extra == extra | plain.extra  # plain.extra: an ip that is no address
        fields = {f: getattr(more, f) for f in Event.__struct_fields__ if f != "extra"}
        assert Event(**fields, extra=plain.extra) == plain
    else:
        assert more == plain
