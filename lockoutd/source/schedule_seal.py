"""Signed schedule entries: only holders of the key can write an entry lockoutd acts on.

An entry is a record of the schedule topic; its signature travels in the record header
``lockoutd-signature`` as hex HMAC-SHA256, under the shared key, of the record key, a zero byte
and the value. Covering the key keeps a valid entry of one user from being filed under another.
An old signed entry written again stays valid (the topic has no notion of "once"); what that can
and cannot do is in the README ("Temporary locks and escalation").

The key is required as soon as a rule locks temporarily: lockoutd undoes those locks on the word of
the schedule topic, and without a key that word is anyone's who may write the topic. Permanent
locks are never undone by lockoutd, so rules without a ``duration`` run without a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from pydantic import SecretStr

from lockoutd.errors import ConfigError
from lockoutd.rules import Rule
from lockoutd.secrets import read_secret
from lockoutd.settings import KafkaSettings

HEADER = "lockoutd-signature"
MIN_KEY_BYTES = 16
"""Shorter keys are refused: HMAC is only as strong as a key that cannot be guessed."""
MAKE_A_KEY = "head -c 32 /dev/urandom | base64 > schedule-key"


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

    def verify(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        """Whether the record carries a valid signature (always True without a key)."""
        if self._key is None:
            return True
        found = [v for name, v in headers if name == HEADER]
        # Kafka lets a header carry no value: a null signature is no signature.
        if len(found) != 1 or not isinstance(found[0], bytes):
            return False
        return hmac.compare_digest(found[0], self._digest(key, value).encode())

    def _digest(self, key: bytes, value: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, key + b"\0" + value, hashlib.sha256).hexdigest()


def schedule_seal(settings: KafkaSettings) -> ScheduleSeal:
    """The seal from ``LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY`` or the key file, if either is set."""
    if settings.schedule_signing_key is not None:
        key = settings.schedule_signing_key
        where = "kafka.schedule_signing_key: LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY"
        if not key.get_secret_value().strip():
            raise ConfigError([f"{where} is empty"])
    elif settings.schedule_signing_key_file is not None:
        path = settings.schedule_signing_key_file
        key = read_secret(path, "kafka.schedule_signing_key_file")
        where = f"kafka.schedule_signing_key_file: the key in {path}"
    else:
        return ScheduleSeal(None)
    length = len(key.get_secret_value().encode())
    if length < MIN_KEY_BYTES:
        raise ConfigError(
            [
                f"{where} is {length} bytes long; use at least {MIN_KEY_BYTES} "
                f"(make one with `{MAKE_A_KEY}`)"
            ]
        )
    return ScheduleSeal(key)


def unsigned_temporary_locks(rules: Iterable[Rule], seal: ScheduleSeal) -> list[str]:
    """The problem with running ``rules`` under ``seal``: a rule that locks temporarily (in
    dry-run mode too, as it is meant to enforce one day) needs a signing key."""
    if seal.signed:
        return []
    temporary = [
        rule.name
        for rule in rules
        if rule.action.lock is not None and rule.action.lock.duration is not None
    ]
    if not temporary:
        return []
    names = ", ".join(temporary)
    which = f"rule {names} locks" if len(temporary) == 1 else f"rules {names} lock"
    return [
        f"kafka.schedule_signing_key_file: {which} temporarily (action.lock.duration), and "
        "without a schedule signing key whoever may write the schedule topic can cancel or "
        "postpone lockoutd's unlocks, or have an administrator's lock undone; set "
        "kafka.schedule_signing_key_file (or LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY) to one key "
        f"shared by every instance, made with `{MAKE_A_KEY}`"
    ]
