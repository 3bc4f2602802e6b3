"""The compiled check of a decoded record makes exactly the reference's event, or the same refusal.

The compiled check (README, "Installing") takes the plainly valid record and hands every other
one to the reference. These properties throw the same records at both, so a record it took by
mistake, or an event it built differently, shows as a difference. Event times are compared
exactly: a window counts on them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec import Raw

from lockoutd.decode import native
from lockoutd.decode.event import Event
from lockoutd.decode.limits import (
    DEFAULT_MAX_CLOCK_SKEW,
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    Horizon,
)
from lockoutd.decode.native import InvalidEvent
from lockoutd.extensions import COMPILED, PURE_PYTHON
from tests.unit.decode.test_addresses import any_text
from tests.unit.decode.test_native_paths import NOW, PROPERTY, records

_cnative = pytest.importorskip(
    "lockoutd.decode._cnative", reason="the compiled decoder check is not built here"
)

Outcome = Event | tuple[str, str]


def _outcome(check: Any, *args: Any) -> Outcome:
    try:
        event: Event = check(*args)
    except InvalidEvent as exc:
        return exc.reason, str(exc)
    return event


def _horizon() -> Horizon:
    # One that has read its clock (a horizon does when made): one that admitted no time would
    # send every record to the reference, and both sides would be the reference.
    return Horizon(clock=lambda: NOW)


def _both(kind: int, wire: Any, *args: Any) -> tuple[Outcome, Outcome]:
    # kind 0: _event(wire, extra, horizon); 1: _validated(wire, at, extra, horizon). Each side
    # gets a horizon of its own: a horizon remembers the clock it read.
    sides = []
    for which in (PURE_PYTHON, COMPILED):
        check = native.check_of(which)[kind]
        sides.append(_outcome(check, wire, *args, {}, _horizon()))
    return sides[0], sides[1]


def _wire(raw: bytes) -> Any:
    # The struct either path of the decoder hands to the check; None for a record that never
    # gets that far (refused by msgspec itself).
    try:
        return native._decode_standard(raw)
    except msgspec.MsgspecError:
        pass
    try:
        return msgspec.convert(native.decode_object(raw, max_bytes=1 << 20), native._Wire)
    except (InvalidEvent, msgspec.MsgspecError):
        return None


@PROPERTY
@given(records)
def test_any_record_becomes_the_same_event_or_refusal(record: dict[str, Any]) -> None:
    """Valid records, records refused for one field, and anything in any field."""
    wire = _wire(json.dumps(record).encode())
    if wire is not None:
        reference, compiled = _both(0, wire)
        assert compiled == reference


def _utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Every microsecond of the accepted years, and of the years around them, in UTC and not.
moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
accepted = st.floats(EARLIEST_EVENT_TIME, NOW + 300).map(lambda at: datetime.fromtimestamp(at, UTC))
offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min])


def _recording_check(handed: list[str]) -> Any:
    # The compiled check, noting in ``handed`` each record it hands to the reference.
    return _cnative.Validator(
        lambda *args: handed.append("event") or native._reference_event(*args),
        lambda *args: handed.append("validated") or native._reference_validated(*args),
        native._Wire,
        native._Element,
    )


@PROPERTY
@given(st.one_of(moments, accepted, accepted), offsets)
def test_event_times_are_the_same_to_the_last_bit(moment: datetime, offset: timezone) -> None:
    """``occurred_at`` in seconds, the same float as ``datetime.timestamp`` gives, in any year."""
    text = _utc_text(moment.astimezone(offset) if moment.year > 1 else moment)
    raw = json.dumps({"type": "t", "occurred_at": text, "user_id": "7"}).encode()
    wire = native._decode_standard(raw)
    reference, compiled = _both(0, wire)
    assert compiled == reference
    horizon_edge = NOW + DEFAULT_MAX_CLOCK_SKEW
    if isinstance(reference, Event) and offset is UTC and reference.occurred_at < horizon_edge:
        # Made by the compiled check itself (a time at the horizon's very edge is the
        # reference's to judge): a check that handed every record to the reference would pass
        # every comparison above and prove nothing about its own arithmetic.
        handed: list[str] = []
        check = _recording_check(handed)
        assert check.event(wire, {}, _horizon()) == reference
        assert handed == []


texts = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", " Alice@X ", "ALICE", "\u0130", "x" * 512, "y" * 513, " " + "z" * 512]
    ),
)
addresses = st.one_of(
    st.none(),
    any_text,
    st.sampled_from(["", "1.2.3.4", "01.2.3.4", "255.255.255.255", "256.1.1.1", "::1", "1.2.3"]),
)
agents = st.one_of(texts, st.sampled_from(["a" * 512, "b" * 513]))
times = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([EARLIEST_EVENT_TIME, LATEST_EVENT_TIME, NOW, NOW + 300, NOW + 301]),
    st.floats(EARLIEST_EVENT_TIME - 10, NOW + 600),
)


@PROPERTY
@given(times, texts, texts, addresses, agents, texts)
def test_elements_of_a_bundle_become_the_same_event_or_refusal(
    at: float,
    user_id: str | None,
    login_name: str | None,
    ip: str | None,
    user_agent: str | None,
    other: str | None,
) -> None:
    """A bundle's element carries its time in seconds: every time, name and address spelling."""
    element = native._Element(
        "auth.login.failed",
        at,
        user_id,
        login_name,
        other,
        ip,
        other,
        other,
        user_agent,
        msgspec.Raw(b"{}"),
    )
    reference, compiled = _both(1, element, at)
    if isinstance(reference, Event) and math.isnan(reference.occurred_at):
        assert isinstance(compiled, Event)
        assert math.isnan(compiled.occurred_at)
    else:
        assert compiled == reference


def test_a_struct_whose_fields_come_in_another_order_is_refused_at_start() -> None:
    """The compiled check reads a record's fields by position, so it refuses to be built for a
    struct that does not start with them in its order, rather than read the wrong field."""

    class Swapped(msgspec.Struct):
        occurred_at: datetime
        type: str

    class NoExtra(msgspec.Struct, array_like=True):
        type: str
        occurred_at: float
        user_id: str | None
        login_name: str | None
        org_id: str | None
        ip: str | None
        reason: str | None
        event_id: str | None
        user_agent: str | None
        tenant: str | None

    references = (native._reference_event, native._reference_validated)
    with pytest.raises(TypeError, match="Swapped's fields do not start with"):
        _cnative.Validator(*references, Swapped, native._Element)
    with pytest.raises(TypeError, match="NoExtra's fields do not start with"):
        _cnative.Validator(*references, native._Wire, NoExtra)


extras = st.one_of(  # half plain: those the compiled check makes itself
    st.just(b"{}"), st.sampled_from([b"{ }", b'{"tenant":"a"}', b'{"ip":"10.0.0.1"}', b"[1]"])
)


def _decoded_bundle(raw: bytes, which: str) -> list[Any] | tuple[str, str]:
    native.use_check(native.check_of(which))
    try:
        decoded = native.bundle_decoder(max_bytes=1 << 20, horizon=_horizon())(raw)
    except InvalidEvent as exc:
        return exc.reason, str(exc)
    finally:
        native.use_check(native.check_of(native.DECODER))
    return [
        (item.error.reason, str(item.error), item.raw)
        if isinstance(item, native.RefusedElement)
        else item
        for item in decoded
    ]


@PROPERTY
@given(st.lists(st.tuples(times, texts, addresses, agents, extras), max_size=5))
def test_a_bundle_becomes_the_same_events_or_refusals(
    elements: list[tuple[float, str | None, str | None, str | None, bytes]],
) -> None:
    """An internal record read back (README, Operations: "Scaling out"): the elements the
    compiled check makes itself (no extra fields) and those it hands to Python, in one bundle."""
    raw = msgspec.json.encode(
        [
            native._Element(
                "auth.login.failed", at, user, None, None, ip, "password", None, agent, Raw(extra)
            )
            for at, user, ip, agent, extra in elements
            if math.isfinite(at)  # JSON has no NaN: a bundle never carries one
        ]
    )
    assert _decoded_bundle(raw, COMPILED) == _decoded_bundle(raw, PURE_PYTHON)


def test_the_compiled_check_makes_the_elements_of_a_bundle_itself() -> None:
    """Plain elements are made without the reference; one with extra fields goes through the
    function that decodes them; the events are the reference's."""
    handed: list[str] = []
    check = _recording_check(handed)
    plain = native._Element(
        "auth.login.failed", NOW, "7", None, None, "10.0.0.1", "password", "e1", None, Raw(b"{}")
    )
    extra = msgspec.structs.replace(plain, event_id="e2", extra=Raw(b'{"tenant":"a"}'))
    made: list[Any] = []
    horizon = _horizon()

    def element_event(element: Any) -> Event:
        made.append(element)
        return native._reference_validated(element, element.occurred_at, {"tenant": "a"}, horizon)

    events = check.elements([plain, extra, plain], element_event, horizon)
    assert handed == []
    assert made == [extra]
    assert events[0] == events[2] == native._reference_validated(plain, NOW, {}, horizon)
