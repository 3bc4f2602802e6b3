"""Addresses as rule keys see them (README, "Events" and "Rules"): one spelling per address, and
``ip_prefix`` exactly as :mod:`ipaddress` would compute it, whatever text a producer wrote.

The decoder and ``ip_prefix`` take shortcuts for the common IPv4 address; these properties hold
them to the answer of :mod:`ipaddress` for any text, including the spellings a shortcut must not
take (leading zeros, IPv4-mapped IPv6, non-ASCII digits, stray characters).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lockoutd.decode import event as event_module
from lockoutd.decode.event import Event, field_reader, ip_prefix
from lockoutd.decode.limits import Horizon
from lockoutd.decode.native import InvalidEvent, decode_native

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW = 1_795_960_987.0


def expected_prefix(text: str) -> str:
    """The /24 or /64 of ``text`` as :mod:`ipaddress` says it (``ValueError`` if no address)."""
    address = ipaddress.ip_address(text)
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def expected_spelling(text: str) -> str:
    """The one spelling of the address in ``text`` (``ValueError`` if there is none)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    # The ways a producer may write one address: as ipaddress does, in full, in capitals, with
    # leading zeros, and an IPv4 address mapped into IPv6.
    texts = [str(address), address.exploded, str(address).upper()]
    if address.version == 4:
        texts += [".".join(f"{int(o):03d}" for o in str(address).split(".")), f"::ffff:{address}"]
    return st.sampled_from(texts)


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).flatmap(_spellings)
# Near misses: texts built from what addresses are made of, mostly not addresses at all.
near_misses = st.text(alphabet="0123456789.:abcdefABCDEF %/x\u0663\uff11", max_size=24)
any_text = st.one_of(addresses, near_misses)


def _outcome(compute: Callable[[Any], str | None], argument: Any) -> tuple[str, str | None]:
    try:
        return ("value", compute(argument))
    except ValueError as exc:
        return ("error", type(exc).__name__)


@PROPERTY
@given(any_text)
@example("1.2.3.4")
@example("255.255.255.255")
@example("0.0.0.0")  # noqa: S104 - an address to parse, not to bind
@example("1.2.3.256")
@example("1.2.3.04")
@example("01.2.3.4")
@example("1.2.3")
@example("1.2.3.4.5")
@example(".1.2.3")
@example("1.2.3.")
@example("1..2.3")
@example("::ffff:1.2.3.4")
@example("1.2.3.4\n")
@example("")
def test_ip_prefix_is_what_ipaddress_says(text: str) -> None:
    """``ip_prefix`` of any text is the network :mod:`ipaddress` gives, or the same error."""
    assert _outcome(ip_prefix, text) == _outcome(expected_prefix, text)


def _value_of_ip_prefix(event: Event) -> Any:
    return event.value_of("ip_prefix")


@PROPERTY
@given(st.lists(any_text, max_size=20))
def test_an_events_ip_prefix_is_the_same_in_any_order(texts: list[str]) -> None:
    """The prefix of one address does not depend on which addresses came before it."""
    read = field_reader("ip_prefix")
    for text in texts:
        event = Event(type="auth.login.failed", occurred_at=NOW, user_id="1", ip=text)
        expected = _outcome(expected_prefix, text) if text else ("value", None)
        assert _outcome(read, event) == expected
        assert _outcome(_value_of_ip_prefix, event) == expected


def test_ip_prefix_stays_right_after_a_flood_of_networks() -> None:
    """A flood of distinct /24s (more than the table of networks holds) changes no answer, and
    what is remembered of them stays bounded."""
    for n in range(event_module._PREFIXES_MAX + 5_000):
        network = f"{10 + (n >> 16)}.{n >> 8 & 255}.{n & 255}"
        assert ip_prefix(f"{network}.{n % 250 + 1}") == f"{network}.0/24"
        assert len(event_module._PREFIXES) <= event_module._PREFIXES_MAX
    assert ip_prefix("192.0.2.7") == "192.0.2.0/24"
    assert ip_prefix("2001:DB8:0:0:1::7") == "2001:db8::/64"


def _decoded_ip(text: str) -> tuple[str, str | None]:
    raw = json.dumps(
        {"type": "auth.login.failed", "occurred_at": "2026-11-29T14:03:07Z", "user_id": "1"}
        | {"ip": text}
    ).encode()
    try:
        event = decode_native(raw, max_bytes=1 << 20, horizon=Horizon(clock=lambda: NOW))
    except InvalidEvent as exc:
        return ("refused", exc.reason)
    if "ip_unparsed" in event.extra:
        assert event.ip is None
        return ("unparsed", event.extra["ip_unparsed"])
    return ("ip", event.ip)


@PROPERTY
@given(any_text)
@example("198.18.7.1")
@example("198.18.7.01")
@example("::FFFF:198.18.7.1")
@example("198.18.7.256")
@example("1.2.3.4 ")
def test_the_decoder_spells_every_address_as_ipaddress_does(text: str) -> None:
    """The decoded ``ip`` is the address's one spelling; text that is no address is none, kept
    aside as ``ip_unparsed``.

    An empty ``ip`` is no address given at all.
    """
    if not text:
        assert _decoded_ip(text) == ("ip", None)
        return
    try:
        expected: tuple[str, str | None] = ("ip", expected_spelling(text))
    except ValueError:
        expected = ("unparsed", text)
    assert _decoded_ip(text) == expected


@pytest.mark.parametrize("times", [1, 3])
def test_an_address_decodes_alike_however_often_it_comes(times: int) -> None:
    """Neither a good nor a bad address is remembered differently from how it was decided."""
    for _ in range(times):
        assert _decoded_ip("198.18.7.1") == ("ip", "198.18.7.1")
        assert _decoded_ip("198.18.7.01") == ("unparsed", "198.18.7.01")
        assert _decoded_ip("::ffff:198.18.7.1") == ("ip", "198.18.7.1")
