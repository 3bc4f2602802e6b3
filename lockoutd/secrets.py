"""Secrets read from files: their content never reaches a log line or an error message."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from lockoutd.errors import ConfigError


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
