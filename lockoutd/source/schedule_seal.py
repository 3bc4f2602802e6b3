"""Signed schedule entries: only holders of the key can write an entry lockoutd acts on.

An entry is a record of the schedule topic; its signature travels in the record header
``lockoutd-signature`` as hex HMAC-SHA256, under the shared key, of the record key, a zero byte
and the value. Covering the key keeps a valid entry of one user from being filed under another.
An old signed entry written again stays valid (the topic has no notion of "once"); what that can
and cannot do is in the README ("Temporary locks and escalation").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from lockoutd.errors import ConfigError
from lockoutd.secrets import read_secret
from lockoutd.settings import KafkaSettings

HEADER = "lockoutd-signature"


class ScheduleSeal:
    """Signs and checks schedule records; without a key, signs nothing and accepts anything."""

    def __init__(self, key: SecretStr | None) -> None:
        self._key = key.get_secret_value().encode() if key is not None else None

    def __repr__(self) -> str:
        return f"ScheduleSeal(signed={self.signed})"

    @property
    def signed(self) -> bool:
        return self._key is not None

    def headers(self, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        """The headers to send with a record (none without a key)."""
        if self._key is None:
            return []
        return [(HEADER, self._digest(key, value).encode())]

    def verify(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> bool:
        """Whether the record carries a valid signature (always True without a key)."""
        if self._key is None:
            return True
        found = [v for name, v in headers if name == HEADER]
        if len(found) != 1:
            return False
        return hmac.compare_digest(found[0], self._digest(key, value).encode())

    def _digest(self, key: bytes, value: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, key + b"\0" + value, hashlib.sha256).hexdigest()


def schedule_seal(settings: KafkaSettings) -> ScheduleSeal:
    """The seal from ``LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY`` or the key file, if either is set."""
    if settings.schedule_signing_key is not None:
        if not settings.schedule_signing_key.get_secret_value().strip():
            raise ConfigError(
                ["kafka.schedule_signing_key: LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY is empty"]
            )
        return ScheduleSeal(settings.schedule_signing_key)
    if settings.schedule_signing_key_file is None:
        return ScheduleSeal(None)
    return ScheduleSeal(
        read_secret(settings.schedule_signing_key_file, "kafka.schedule_signing_key_file")
    )
