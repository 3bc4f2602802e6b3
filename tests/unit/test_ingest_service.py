"""Starting ``lockoutd ingest``: where the signing key comes from; no key, no start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from lockoutd.errors import ConfigError
from lockoutd.secrets import ingest_signing_key
from lockoutd.settings import IngestSettings
from lockoutd.testing.broker import free_port


def test_the_key_comes_from_the_environment_or_else_from_its_file(tmp_path: Path) -> None:
    """``LOCKOUTD_INGEST__SIGNING_KEY`` wins; otherwise the file's stripped content is the key."""
    key_file = tmp_path / "signing-key"
    key_file.write_text("from-the-file\n", encoding="utf-8")
    from_file = ingest_signing_key(IngestSettings(signing_key_file=key_file))
    assert from_file.get_secret_value() == "from-the-file"
    both = IngestSettings(signing_key_file=key_file, signing_key=SecretStr("from-the-environment"))
    assert ingest_signing_key(both).get_secret_value() == "from-the-environment"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            IngestSettings(),
            "ingest: no signing key; set ingest.signing_key_file or the "
            "LOCKOUTD_INGEST__SIGNING_KEY environment variable to the key ZITADEL returned for "
            "the target",
        ),
        (
            IngestSettings(signing_key=SecretStr("  ")),
            "ingest.signing_key: LOCKOUTD_INGEST__SIGNING_KEY is empty",
        ),
    ],
)
def test_no_key_or_an_empty_key_is_refused(settings: IngestSettings, problem: str) -> None:
    """Without a key, or with an empty one anyone could sign with, the endpoint does not start."""
    with pytest.raises(ConfigError) as caught:
        ingest_signing_key(settings)
    assert caught.value.problems == [problem]


def test_lockoutd_ingest_without_a_key_exits_1_and_says_why(tmp_path: Path) -> None:
    """The command logs the problem and exits 1 before it listens on anything."""
    config = tmp_path / "lockoutd.yaml"
    config.write_text(
        f"metrics: {{listen: '127.0.0.1:{free_port()}'}}\n"
        f"ingest: {{listen: '127.0.0.1:{free_port()}'}}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKOUTD_")}
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "lockoutd", "ingest", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert line["event"] == "ingest_failed"
    [problem] = line["problems"]
    assert problem.startswith("ingest: no signing key; set ingest.signing_key_file or the ")
    assert "LOCKOUTD_INGEST__SIGNING_KEY" in problem
