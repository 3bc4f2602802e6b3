"""The native event format: a UTF-8 JSON object per record (README, "Events")."""

from __future__ import annotations

import functools
import importlib
import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, NamedTuple

import msgspec
from msgspec.structs import astuple

from lockoutd import extensions
from lockoutd.decode.event import STANDARD_FIELDS, Event, canonical_ipv4_prefix
from lockoutd.decode.limits import (
    BOUNDED_OBJECT,
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    MAX_EVENT_ID_CHARACTERS,
    MAX_ID_CHARACTERS,
    MAX_IP_CHARACTERS,
    MAX_LOGIN_NAME_CHARACTERS,
    MAX_NAME_CHARACTERS,
    MAX_NESTING,
    MAX_USER_AGENT_CHARACTERS,
    WALL_CLOCK,
    Horizon,
    is_zitadel_id,
)
from lockoutd.decode.login_name import normalize_login_name
from lockoutd.extensions import COMPILED, PURE_PYTHON

UNPARSED_IP: Final = "ip_unparsed"
"""The extra field that keeps an ``ip`` that is no address: the event counts without an address."""


class InvalidEvent(ValueError):
    """A record that cannot become an :class:`Event`.

    ``reason`` is a short stable code (it becomes a dead-letter header and a metric label);
    the message says what exactly was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# The standard fields' lengths, checked by msgspec as it decodes (``field_too_long``, see
# :mod:`lockoutd.decode.limits`): each may become a window's key or value.
_Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARACTERS)]
_Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARACTERS)]
_EventId = Annotated[str, msgspec.Meta(max_length=MAX_EVENT_ID_CHARACTERS)]


class _Wire(msgspec.Struct, gc=False):
    # The JSON as producers write it; ``Event`` is what the engine sees. Untracked by the garbage
    # collector (it holds strings and a datetime, never a cycle): one less object per record for
    # the collector to count.
    type: _Name
    occurred_at: datetime
    user_id: _Id | None = None
    login_name: str | None = None  # checked once normalised (see _reference_validated)
    org_id: _Id | None = None
    ip: str | None = None  # kept aside when no address, never refused (see _reference_validated)
    reason: _Name | None = None
    event_id: _EventId | None = None
    user_agent: str | None = None  # cut, never refused (see _reference_validated)


class _StandardOnly(_Wire, forbid_unknown_fields=True):
    # A record with no field beyond the standard ones: the common case, decoded straight from
    # bytes into a struct, without the intermediate dict.
    pass


class _Element(msgspec.Struct, array_like=True, gc=False):
    # An event in a bundle: its fields in Event's order, as a JSON array, the time in seconds
    # since the epoch (exactly the float the event held: no date text to write or parse).
    type: _Name
    occurred_at: float
    user_id: _Id | None
    login_name: str | None
    org_id: _Id | None
    ip: str | None
    reason: _Name | None
    event_id: _EventId | None
    user_agent: str | None
    extra: msgspec.Raw
    """Decoded only when not empty, with the depth bound of any record."""


_decode_json = msgspec.json.Decoder().decode


@functools.cache
def bounded_decoder() -> Callable[[bytes], Any]:
    """Decodes any JSON object nested no deeper than a login event can be (see
    :mod:`lockoutd.decode.limits`); raises ``msgspec.ValidationError`` for one nested deeper.

    Made on first use, not on import: msgspec expands the bounded type level by level into tens
    of thousands of type nodes, a second of work that every ``lockoutd`` command (``--version``,
    ``check``) would otherwise pay without decoding a record.
    """
    return msgspec.json.Decoder(BOUNDED_OBJECT).decode


_decode_standard = msgspec.json.Decoder(_StandardOnly).decode
_STANDARD = frozenset(STANDARD_FIELDS)


def decode_native(raw: bytes, *, max_bytes: int, horizon: Horizon = WALL_CLOCK) -> Event:
    """Decode and validate one record value; raise :class:`InvalidEvent` when it is not an event.

    A record of standard fields only goes straight from JSON into a struct. Anything else (extra
    fields to keep, or a record that is not a valid event) takes the general path through a
    dict, which keeps the extra fields and names exactly what was wrong. Event times past
    ``horizon`` are refused as being from the future.
    """
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"record of {len(raw)} bytes exceeds {max_bytes}")
    try:
        wire = _decode_standard(raw)
    except msgspec.MsgspecError:
        return event_from_mapping(decode_object(raw, max_bytes=max_bytes), horizon)
    return _event(wire, {}, horizon)


def native_decoder(*, max_bytes: int, horizon: Horizon = WALL_CLOCK) -> Callable[[bytes], Event]:
    """:func:`decode_native` for records of at most ``max_bytes``, as a one-argument function."""

    # A closure, not functools.partial: a partial holding a keyword copies its keywords into a
    # new dict on every call, which costs a tenth of the whole decode. It takes decode_native's
    # shortcut itself rather than calling it: one call fewer per record.
    def decode(raw: bytes) -> Event:
        if len(raw) <= max_bytes:
            try:
                wire = _decode_standard(raw)
            except msgspec.MsgspecError:
                return event_from_mapping(decode_object(raw, max_bytes=max_bytes), horizon)
            return _event(wire, {}, horizon)
        return decode_native(raw, max_bytes=max_bytes, horizon=horizon)  # refused: too large

    return decode


class RefusedElement(NamedTuple):
    """An element of a bundle that is no event: why, and its bytes (its dead letter's value)."""

    error: InvalidEvent
    raw: bytes


_EMPTY_EXTRA = msgspec.Raw(b"{}")
"""A Raw equals another Raw only, never bytes."""
_decode_bundle = msgspec.json.Decoder(list[_Element]).decode
_split_bundle = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_element = msgspec.json.Decoder(_Element).decode


def bundle_element(event: Event, event_id: str | None = None) -> tuple[Any, ...]:
    """``event`` as an element of a bundle (encoded as a JSON array), with ``event_id`` if it
    has none: what :func:`bundle_decoder` reads back into the same event."""
    if event.event_id or event_id is None:
        # An Event's fields are an element's, in its order: one C call for every forwarded event
        # that has its own id, instead of ten attribute reads.
        return astuple(event)
    return (
        event.type,
        event.occurred_at,
        event.user_id,
        event.login_name,
        event.org_id,
        event.ip,
        event.reason,
        event.event_id or event_id,
        event.user_agent,
        event.extra,
    )


MAX_REFUSED_ELEMENTS = 16
"""Elements of one bundle refused one by one, each its own dead letter; a bundle with more is
refused whole (``bad_bundle``). lockoutd writes only events into bundles, so more is forgery, and
a record of a few hundred kilobytes must not become a dead letter (with the record's headers)
per element."""


def bundle_decoder(
    *, max_bytes: int, horizon: Horizon = WALL_CLOCK
) -> Callable[[bytes], list[Event | RefusedElement]]:
    """Decodes an internal record: a bundle (a JSON array of events, each an array of its fields,
    see :func:`bundle_element`; README, Operations: "Scaling out"), or one native record.

    Each element of a bundle is checked as a native record is, and one that is no event is
    refused alone. Raises :class:`InvalidEvent` for a record that is neither an array nor a
    native event, and for a bundle of more than :data:`MAX_REFUSED_ELEMENTS` such elements.
    """
    decode_one = native_decoder(max_bytes=max_bytes, horizon=horizon)

    def element_event(element: _Element) -> Event:
        raw_extra = element.extra
        if raw_extra == _EMPTY_EXTRA:
            extra: dict[str, Any] = {}
        else:
            extra = decode_object(bytes(raw_extra), max_bytes=max_bytes)
            if not _STANDARD.isdisjoint(extra):
                raise InvalidEvent("bad_field", "an extra field has a standard field's name")
        return _validated(element, element.occurred_at, extra, horizon)

    def decode(raw: bytes) -> list[Event | RefusedElement]:
        if raw[:1] != b"[":
            return [decode_one(raw)]
        try:  # the common case: every element an event
            return _elements(_decode_bundle(raw), element_event, horizon)
        except (msgspec.MsgspecError, InvalidEvent, RecursionError):
            pass  # told apart element by element below
        try:
            elements = _split_bundle(raw)
        except RecursionError:
            raise InvalidEvent("too_deep", "the bundle nests arrays or objects too deep") from None
        except msgspec.MsgspecError as exc:
            raise InvalidEvent("invalid_json", f"not a JSON array: {exc}") from None
        decoded: list[Event | RefusedElement] = []
        refused = 0
        for element in elements:
            one = bytes(element)
            try:
                decoded.append(element_event(_decode_element(one)))
                continue
            except msgspec.MsgspecError as exc:
                decoded.append(RefusedElement(InvalidEvent(_reason_for(str(exc)), str(exc)), one))
            except InvalidEvent as error:
                decoded.append(RefusedElement(error, one))
            refused += 1
            if refused > MAX_REFUSED_ELEMENTS:
                raise InvalidEvent(
                    "bad_bundle",
                    f"more than {MAX_REFUSED_ELEMENTS} of its elements are no events",
                )
        return decoded

    return decode


def decode_object(raw: bytes, *, max_bytes: int) -> dict[str, Any]:
    """The JSON object in ``raw``; raise :class:`InvalidEvent` for anything else.

    The object is decoded with its depth bounded (``too_deep`` beyond :data:`MAX_NESTING`
    levels), so that no record can make decoding, or anything after it, recurse without end.
    """
    if len(raw) > max_bytes:
        raise InvalidEvent("too_large", f"record of {len(raw)} bytes exceeds {max_bytes}")
    try:
        document: dict[str, Any] = bounded_decoder()(raw)
    except msgspec.ValidationError:
        pass  # not an object, a number out of range, or nested too deep: told apart below
    except msgspec.DecodeError as exc:
        raise InvalidEvent("invalid_json", f"not valid UTF-8 JSON: {exc}") from None
    else:
        return document
    # Only refused records get here: decoding them again without the bound says why.
    try:
        unbounded = _decode_json(raw)
    except RecursionError:
        unbounded = {}  # so deep that even the unbounded decoder gave up
    except msgspec.DecodeError as exc:
        raise InvalidEvent("invalid_json", f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(unbounded, dict):
        raise InvalidEvent("not_an_object", "the record is JSON but not an object")
    raise InvalidEvent("too_deep", f"the record nests arrays or objects over {MAX_NESTING} deep")


def event_from_mapping(document: dict[str, Any], horizon: Horizon = WALL_CLOCK) -> Event:
    """Validate a decoded JSON object as a native event (also used by the other input formats)."""
    try:
        wire = msgspec.convert(document, _Wire)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_reason_for(str(exc)), str(exc)) from None
    extra = {k: v for k, v in document.items() if k not in _STANDARD} if len(document) else {}
    return _event(wire, extra, horizon)


def _reference_event(wire: _Wire, extra: dict[str, Any], horizon: Horizon) -> Event:
    # Runs for every record (where the compiled check is not built): each field is read once
    # into a local, and the event is built by position (in Event's field order), which msgspec
    # does faster than by keyword.
    occurred_at = wire.occurred_at
    if occurred_at.tzinfo is None:
        raise InvalidEvent("bad_time", "occurred_at has no UTC offset (RFC 3339 needs one)")
    return _reference_validated(wire, occurred_at.timestamp(), extra, horizon)


def _reference_validated(
    wire: _Wire | _Element, at: float, extra: dict[str, Any], horizon: Horizon
) -> Event:
    # What every native event must be, however its time was written.
    if at >= horizon.latest or at < EARLIEST_EVENT_TIME:  # rare: checked at length apart
        _check_time(at, horizon)
    user_id = wire.user_id
    org_id = wire.org_id
    # A user id that could spell a login name would count in that name's window (README, "Events").
    for field, value in (("user_id", user_id), ("org_id", org_id)):
        if value and not is_zitadel_id(value):
            raise InvalidEvent("bad_id", f"{field} {value[:80]!r} is not a ZITADEL id (digits)")
    # One spelling per name (README, "Rules"): " Alice@X" and "alice@x" are one user everywhere.
    login_name = normalize_login_name(wire.login_name) if wire.login_name else None
    if login_name and len(login_name) > MAX_LOGIN_NAME_CHARACTERS:
        # The one identity field the client types: beside a user id it names no one the event
        # needs (dropping it hides no failure); alone it names no account that can exist.
        if not user_id:
            limit = MAX_LOGIN_NAME_CHARACTERS
            raise InvalidEvent(
                "field_too_long", f"login_name is over {limit} characters, and no user_id"
            )
        login_name = None
    if not user_id and not login_name:
        raise InvalidEvent("missing_subject", "neither user_id nor login_name is given")
    ip = wire.ip
    if ip and canonical_ipv4_prefix(ip) is None:
        written = ip
        # Longer text is no address, and must not become a key of the table of spellings.
        ip = _NORMALIZED.get(written) if len(written) <= MAX_IP_CHARACTERS else ""
        if ip is None:
            ip = _normalize_new_ip(written)
        if not ip:
            # No address. A client can write it (a proxy's X-Forwarded-For passed on as it came),
            # so it refuses nothing: the failure counts for its user, and the text stays in sight.
            extra = {**extra, UNPARSED_IP: written[:MAX_IP_CHARACTERS]}
    user_agent = wire.user_agent
    if user_agent and len(user_agent) > MAX_USER_AGENT_CHARACTERS:
        user_agent = user_agent[:MAX_USER_AGENT_CHARACTERS]
    return Event(
        wire.type,
        at,
        user_id or None,
        login_name or None,
        org_id or None,
        ip or None,
        wire.reason,
        wire.event_id or None,
        user_agent,
        extra,
    )


def _reference_elements(
    elements: list[_Element], element_event: Callable[[_Element], Event], horizon: Horizon
) -> list[Event | RefusedElement]:
    # The horizon is element_event's own; the compiled check reads it for elements it makes.
    return [element_event(element) for element in elements]


_EventOf = Callable[[_Wire, dict[str, Any], Horizon], Event]
_ValidatedOf = Callable[[_Wire | _Element, float, dict[str, Any], Horizon], Event]
_ElementsOf = Callable[
    [list[_Element], Callable[[_Element], Event], Horizon], list[Event | RefusedElement]
]


class Check(NamedTuple):
    """How a decoded record becomes an event, one way or the other (compiled or reference)."""

    event: _EventOf
    """``event(wire, extra, horizon)``: a native record, its time a datetime."""
    validated: _ValidatedOf
    """``validated(wire, at, extra, horizon)``: a record or element, its time ``at`` seconds."""
    elements: _ElementsOf
    """``elements(elements, element_event, horizon)``: a bundle's elements, each as
    ``element_event`` makes it (or as it would: the compiled check makes those without extra
    fields itself)."""


def check_of(which: str) -> Check:
    """The compiled check (``"compiled"``) or the reference: for the tests and benchmarks that
    run both side by side. Raises ImportError where the compiled check is not built."""
    if which == PURE_PYTHON:
        return Check(_reference_event, _reference_validated, _reference_elements)
    # It takes the plainly valid record and hands every other to the reference; both make the
    # same event or refuse for the same reason (lockoutd.decode._cnative).
    compiled = importlib.import_module("lockoutd.decode._cnative")
    check = compiled.Validator(_reference_event, _reference_validated, _Wire, _Element)
    return Check(check.event, check.validated, check.elements)


def use_check(check: Check) -> None:
    """Decode with ``check`` from now on (for the tests and benchmarks that run both)."""
    global _event, _validated, _elements
    _event, _validated, _elements = check


DECODER = COMPILED if extensions.chosen("lockoutd.decode._cnative") else PURE_PYTHON
"""Which check turns decoded records into events: ``"compiled"`` or ``"pure Python"``."""
_event, _validated, _elements = check_of(DECODER)


def _check_time(at: float, horizon: Horizon) -> None:
    # Times no login event can carry break date arithmetic later (there is no year 10000 to
    # write a decision in); times from the future would hold a window ahead of every real event.
    if not EARLIEST_EVENT_TIME <= at < LATEST_EVENT_TIME:
        raise InvalidEvent(
            "time_out_of_range", "the event time is outside 2000-01-01T00:00:00Z to 2100-01-01"
        )
    if not horizon.admits(at):
        raise InvalidEvent(
            "future_time", "the event time is further ahead of the clock than max_clock_skew"
        )


_NORMALIZED: dict[str, str] = {}
"""Addresses normalised lately: the same few keep coming back (an attacker's, a proxy's).

Only spellings other than ipaddress's own IPv4 one (:func:`canonical_ipv4_prefix` passes those
without a table of addresses, which a million distinct ones would overflow), and ``""`` for text
that is no address. Looked up before :func:`_normalize_new_ip` is called, so that the common hit
costs no call.
"""
_NORMALIZED_MAX = 65_536


def _normalize_new_ip(text: str) -> str:
    # Only for an address not in _NORMALIZED: parse it and remember its spelling ("" for text that
    # is no address).
    normal = _normalized(text)
    if len(_NORMALIZED) >= _NORMALIZED_MAX:
        _NORMALIZED.clear()  # bounded, and far cheaper than keeping an LRU order
    _NORMALIZED[text] = normal
    return normal


def _normalized(text: str) -> str:
    # One address has one spelling in rule keys: "2001:DB8::1" and "2001:db8:0::1" count together,
    # and so do "::ffff:10.0.0.1" (an IPv4 client of a dual-stack server) and "10.0.0.1".
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _reason_for(message: str) -> str:
    if "Object missing required field" in message:
        return "missing_field"
    if "of length <=" in message:
        return "field_too_long"
    if "occurred_at" in message:
        return "bad_time"
    return "bad_field"
