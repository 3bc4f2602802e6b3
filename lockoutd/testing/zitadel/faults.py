"""Faults a test switches on at runtime: slow answers, error statuses, rate limits, dropped links,
and the answers of a broken or hostile proxy in front of ZITADEL (any bytes, a trickle).

A :class:`Fault` is a plain value; :class:`FaultPlan` holds the armed ones and draws, for each
request, how long to wait and which fault (if any) answers instead of the API. Faults are drawn
in the order they were set: every matching latency fault adds its delay, and the first matching
answering fault (status, rate limit, dropped connection, reply lost after the change, a
proxy's answer) answers. A fault with ``times=N`` is
used up after N requests it applied to; ``times=None`` lasts until cleared.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass


class FaultKind(enum.StrEnum):
    """What a fault does to a request."""

    LATENCY = "latency"
    STATUS = "status"
    RATE_LIMITED = "rate_limited"
    DROP_CONNECTION = "drop_connection"
    DROP_AFTER_APPLYING = "drop_after_applying"
    ANSWER = "answer"
    TRICKLE = "trickle"


_PROXY_PAGE = (
    b"<html><head><title>429 Too Many Requests</title></head>"
    b"<body><center><h1>429 Too Many Requests</h1></center></body></html>"
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault. Build it with the class methods, e.g. ``Fault.status(503, times=3)``."""

    kind: FaultKind
    times: int | None = None
    path_contains: str | None = None
    seconds: float = 0.0
    http_status: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1 or None, got {self.times}")

    @classmethod
    def latency(
        cls, seconds: float, *, times: int | None = None, path_contains: str | None = None
    ) -> Fault:
        """Every matching request waits ``seconds`` before it is handled."""
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, got {seconds}")
        return cls(FaultKind.LATENCY, times, path_contains, seconds=seconds)

    @classmethod
    def status(
        cls, http_status: int, *, times: int | None = None, path_contains: str | None = None
    ) -> Fault:
        """Matching requests answer ``http_status`` with a gRPC-shaped body (503 carries 14)."""
        if not 400 <= http_status <= 599:
            raise ValueError(f"a fault status must be 4xx or 5xx, got {http_status}")
        return cls(FaultKind.STATUS, times, path_contains, http_status=http_status)

    @classmethod
    def rate_limited(cls, *, times: int | None = None, path_contains: str | None = None) -> Fault:
        """Matching requests answer as ZITADEL does when its access quota is exhausted: 429
        with code 8 ``QUOTA-vjAy8`` and the ``zitadel.quota.exhausted`` cookie. ZITADEL never
        sends ``Retry-After``, so a client has to choose its own pauses."""
        return cls(FaultKind.RATE_LIMITED, times, path_contains, http_status=429)

    @classmethod
    def proxy_rate_limited(
        cls, *, times: int | None = None, retry_after: int = 1, path_contains: str | None = None
    ) -> Fault:
        """Matching requests answer as a rate-limiting proxy in front of ZITADEL might: 429 with
        ``Retry-After: <retry_after>`` and a page of its own instead of ZITADEL's JSON."""
        headers = {"Retry-After": str(retry_after), "Content-Type": "text/html"}
        return cls.answer(
            429, _PROXY_PAGE, headers=headers, times=times, path_contains=path_contains
        )

    @classmethod
    def drop_connection(
        cls, *, times: int | None = None, path_contains: str | None = None
    ) -> Fault:
        """Matching requests see their TCP connection closed without any HTTP answer."""
        return cls(FaultKind.DROP_CONNECTION, times, path_contains)

    @classmethod
    def drop_after_applying(
        cls, *, times: int | None = None, path_contains: str | None = None
    ) -> Fault:
        """Matching requests take effect, then their connection is closed before the answer:
        a reply lost on the way back, which the client cannot tell from a request never made."""
        return cls(FaultKind.DROP_AFTER_APPLYING, times, path_contains)

    @classmethod
    def answer(
        cls,
        http_status: int,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        times: int | None = None,
        path_contains: str | None = None,
    ) -> Fault:
        """Matching requests get exactly this status, body and headers, whatever they asked:
        what a broken or hostile proxy in front of ZITADEL may send (a page of its own, a body
        nested a hundred thousand deep, a ``Retry-After`` no calendar holds, a compressed bomb).
        """
        return cls(
            FaultKind.ANSWER,
            times,
            path_contains,
            http_status=http_status,
            body=body,
            headers=tuple((headers or {}).items()),
        )

    @classmethod
    def trickle(
        cls, seconds_per_byte: float, *, times: int | None = None, path_contains: str | None = None
    ) -> Fault:
        """Matching requests get a 200 whose body never ends: one byte every
        ``seconds_per_byte``, each sooner than a client's read timeout, until the client leaves."""
        if seconds_per_byte <= 0:
            raise ValueError(f"seconds_per_byte must be positive, got {seconds_per_byte}")
        return cls(FaultKind.TRICKLE, times, path_contains, seconds=seconds_per_byte)

    def applies_to(self, path: str) -> bool:
        """Whether the fault's path filter lets it act on a request for ``path``."""
        return self.path_contains is None or self.path_contains in path


@dataclass(slots=True)
class _Armed:
    fault: Fault
    remaining: int | None


class FaultPlan:
    """The armed faults. Not thread-safe: the emulator calls it under its lock."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, fault: Fault, path_contains: str | None = None) -> None:
        """Arm ``fault``; ``path_contains`` overrides the fault's own path filter."""
        if path_contains is not None:
            fault = dataclasses.replace(fault, path_contains=path_contains)
        self._armed.append(_Armed(fault, fault.times))

    def clear(self) -> None:
        """Disarm every fault."""
        self._armed.clear()

    def draw(self, path: str) -> tuple[float, Fault | None]:
        """Use up the faults for one request: the total delay and the answering fault, if any."""
        delay = 0.0
        answer: Fault | None = None
        for armed in self._armed:
            fault = armed.fault
            if not fault.applies_to(path):
                continue
            if fault.kind is FaultKind.LATENCY:
                delay += fault.seconds
            elif answer is None:
                answer = fault
            else:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
        self._armed = [a for a in self._armed if a.remaining is None or a.remaining > 0]
        return delay, answer
