"""The ``ZITADEL-Signature`` header of Actions v2 requests.

ZITADEL signs ``"<t>.<body>"`` with HMAC-SHA256 under the target's signing key and sends
``ZITADEL-Signature: t=<unix seconds>,v1=<hex digest>`` (``pkg/actions/signing.go``). The
timestamp bounds how long a captured request can be replayed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

SIGNATURE_HEADER = "ZITADEL-Signature"

# Unix seconds in ASCII digits, as ZITADEL writes them. ``str.isdigit`` would let "²" or "٣"
# through, and ``int`` refuses numbers of thousands of digits with an error of its own; twelve
# digits reach the year 33658.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Refusal(enum.StrEnum):
    """Why a signature was not accepted (a metric label, so a short fixed set)."""

    BAD_SIGNATURE = "bad_signature"
    """Missing, malformed, or not made with the signing key over this body."""
    STALE = "stale"
    """Made with the key, but its timestamp is further from now than the tolerance."""


class SignatureRefused(Exception):
    def __init__(self, refusal: Refusal, message: str) -> None:
        self.refusal = refusal
        super().__init__(message)


def sign(key: bytes, body: bytes, timestamp: int) -> str:
    """The header value ZITADEL sends for ``body`` signed at ``timestamp``."""
    return f"t={timestamp},v1={_digest(key, body, timestamp)}"


def verify(header: str | None, body: bytes, key: bytes, *, now: float, tolerance: float) -> None:
    """Return when ``header`` signs ``body`` with ``key`` within ``tolerance`` seconds of ``now``.

    Raises :class:`SignatureRefused` otherwise. Every ``v1`` entry is tried (ZITADEL may send more
    than one while a key is rotated), each compared in constant time.
    """
    if not header:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureRefused(
            Refusal.BAD_SIGNATURE, f"{SIGNATURE_HEADER} needs t=<unix seconds> and v1=<hex>"
        )
    expected = _digest(key, body, timestamp).encode()
    matched = False
    for candidate in candidates:
        # Compare every candidate, so the time taken does not say which one matched.
        matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise SignatureRefused(Refusal.BAD_SIGNATURE, "the signature does not match the body")
    if abs(now - timestamp) > tolerance:
        raise SignatureRefused(
            Refusal.STALE,
            f"signed {now - timestamp:+.0f}s from now, beyond the tolerance of {tolerance:g}s",
        )


def _digest(key: bytes, body: bytes, timestamp: int) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
