"""Records that must carry ZITADEL's own signature (README, "Ingesting from ZITADEL").

ZITADEL signs every Actions v2 request; ``lockoutd ingest`` checks the signature and passes it on
beside the unchanged body, as the record header :data:`ZITADEL_SIGNATURE_HEADER`. A daemon that
requires it takes from a ``zitadel`` topic only what ZITADEL sent: whoever else can write the
topic can neither make up a failure nor a success (which would reset a user's count).

The signature's time is not checked against the clock here, as the ingest checks it: records are
read long after they were written (a backlog, the rebuild of a partition). What a signature cannot
tell is whether a record was written before: a copy of a success older than a key's newest failure
clears nothing (README, "How a window counts"), but a copy of a failure counts again once no window
holds the original (README, "Ingesting from ZITADEL").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lockoutd.decode.native import InvalidEvent
from lockoutd.ingest.signature import SignatureRefused, verify

ZITADEL_SIGNATURE_HEADER = "zitadel-signature"


class SignatureCheck:
    """Refuses a record whose value the ZITADEL signature beside it does not sign."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, value: bytes, headers: Sequence[tuple[str, bytes | None]] | None) -> None:
        """Return when ``headers`` hold one signature of ``value``; raise :class:`InvalidEvent`
        (``bad_signature``) otherwise."""
        found = [v for name, v in headers or () if name == ZITADEL_SIGNATURE_HEADER]
        if len(found) != 1 or not isinstance(found[0], bytes):
            expected = f"expected one {ZITADEL_SIGNATURE_HEADER} header, found {len(found)}"
            raise InvalidEvent("bad_signature", expected)
        try:
            verify(found[0].decode("ascii", "replace"), value, self._key, now=0, tolerance=math.inf)
        except SignatureRefused as refused:
            raise InvalidEvent("bad_signature", str(refused)) from None
