"""The ``ZITADEL-Signature`` header: HMAC-SHA256 over ``"<t>.<body>"``, within a tolerance."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from lockoutd.ingest.signature import Refusal, SignatureRefused, sign, verify

KEY = b"target-signing-key"
BODY = b'{"aggregateID":"1001","event_type":"user.human.password.check.failed"}'
T = 1_790_000_000


def test_a_header_made_like_zitadel_makes_it_is_accepted() -> None:
    """``t=<unix>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`` verifies within the tolerance."""
    digest = hmac.new(KEY, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(KEY, BODY, T) == f"t={T},v1={digest}"
    verify(f"t={T},v1={digest}", BODY, KEY, now=T + 299, tolerance=300)


def test_any_of_several_signatures_may_match() -> None:
    """While a key is rotated the header may carry more than one ``v1``; one match suffices."""
    header = f"t={T},v1={'0' * 64}," + sign(KEY, BODY, T).split(",")[1]
    verify(header, BODY, KEY, now=T, tolerance=300)


@pytest.mark.parametrize(
    ("header", "body", "key"),
    [
        (None, BODY, KEY),
        ("", BODY, KEY),
        ("v1=abc", BODY, KEY),
        (f"t={T}", BODY, KEY),
        (f"t=soon,v1={'0' * 64}", BODY, KEY),
        (sign(KEY, BODY, T), BODY + b" ", KEY),
        (sign(KEY, BODY, T), BODY, b"another-key"),
        (sign(KEY, BODY, T).replace(f"t={T}", f"t={T + 1}"), BODY, KEY),
        (sign(KEY, BODY, T).upper(), BODY, KEY),
        (f"t=\N{SUPERSCRIPT TWO},v1={'0' * 64}", BODY, KEY),
        (f"t={'9' * 5000},v1={'0' * 64}", BODY, KEY),
        (f"t=-{T},v1={'0' * 64}", BODY, KEY),
    ],
)
def test_a_missing_malformed_or_wrong_signature_is_refused(
    header: str | None, body: bytes, key: bytes
) -> None:
    """No header, no timestamp or digest, another body, key or time: ``bad_signature``."""
    with pytest.raises(SignatureRefused) as caught:
        verify(header, body, key, now=T, tolerance=300)
    assert caught.value.refusal is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize("now", [T + 301, T - 301])
def test_a_signature_older_or_newer_than_the_tolerance_is_stale(now: int) -> None:
    """A correct signature made more than the tolerance away from now is ``stale``."""
    with pytest.raises(SignatureRefused) as caught:
        verify(sign(KEY, BODY, T), BODY, KEY, now=now, tolerance=300)
    assert caught.value.refusal is Refusal.STALE
