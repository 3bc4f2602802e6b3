"""Secrets read from files: their content never reaches a log line or an error message."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from lockoutd.errors import ConfigError

if TYPE_CHECKING:
    from lockoutd.settings import IngestSettings


def read_secret(path: Path | None, setting: str) -> SecretStr:
    """The stripped content of the secret file ``path``, named ``setting`` in the configuration."""
    if path is None:
        raise ConfigError([f"{setting}: no secret file is configured"])
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            [f"{setting}: cannot read secret file {path}: {exc.strerror or type(exc).__name__}"]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{setting}: secret file {path} is not UTF-8 text"]) from None
    if not value:
        raise ConfigError([f"{setting}: secret file {path} is empty"])
    return SecretStr(value)


def ingest_signing_key(settings: IngestSettings) -> SecretStr:
    """The key of ZITADEL's target, from ``LOCKOUTD_INGEST__SIGNING_KEY`` or
    ``ingest.signing_key_file``: ``lockoutd ingest`` checks requests with it, and a daemon with
    ``kafka.require_zitadel_signature`` the records the ingest wrote.

    An empty key is refused: anyone could sign with it.
    """
    if settings.signing_key is not None:
        if not settings.signing_key.get_secret_value().strip():
            raise ConfigError(["ingest.signing_key: LOCKOUTD_INGEST__SIGNING_KEY is empty"])
        return settings.signing_key
    if settings.signing_key_file is None:
        raise ConfigError(
            [
                "ingest: no signing key; set ingest.signing_key_file or the "
                "LOCKOUTD_INGEST__SIGNING_KEY environment variable to the key ZITADEL returned "
                "for the target"
            ]
        )
    return read_secret(settings.signing_key_file, "ingest.signing_key_file")
