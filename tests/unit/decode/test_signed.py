"""Records that must carry ZITADEL's signature (README, "Ingesting from ZITADEL")."""

from __future__ import annotations

import pytest

from lockoutd.decode.native import InvalidEvent
from lockoutd.decode.signed import ZITADEL_SIGNATURE_HEADER, SignatureCheck
from lockoutd.ingest.signature import sign

KEY = b"the-targets-signing-key"
BODY = b'{"aggregateID": "1001", "event_type": "user.human.password.check.succeeded"}'
SIGNED = sign(KEY, BODY, 1_700_000_000).encode()


def test_a_record_signed_with_the_key_passes_however_long_ago_it_was_signed() -> None:
    """Records are read long after they were written (a backlog, a rebuild): no clock check."""
    SignatureCheck(KEY)(BODY, [("other", b"x"), (ZITADEL_SIGNATURE_HEADER, SIGNED)])


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [(ZITADEL_SIGNATURE_HEADER, None)],
        [(ZITADEL_SIGNATURE_HEADER, SIGNED), (ZITADEL_SIGNATURE_HEADER, SIGNED)],
        [(ZITADEL_SIGNATURE_HEADER, sign(b"another-key", BODY, 1_700_000_000).encode())],
        [(ZITADEL_SIGNATURE_HEADER, sign(KEY, BODY + b" ", 1_700_000_000).encode())],
        [(ZITADEL_SIGNATURE_HEADER, b"t=\xff,v1=\xfe")],
        [("ZITADEL-Signature", SIGNED)],
    ],
    ids=[
        "no headers",
        "none of them",
        "one without a value",
        "two",
        "another key",
        "another body",
        "not text",
        "another header name",
    ],
)
def test_a_record_without_one_signature_of_its_value_is_refused(
    headers: list[tuple[str, bytes | None]] | None,
) -> None:
    """Anyone who may write the topic can write such a record; it is dead-lettered."""
    with pytest.raises(InvalidEvent) as refused:
        SignatureCheck(KEY)(BODY, headers)
    assert refused.value.reason == "bad_signature"
