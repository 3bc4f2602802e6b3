"""What the deployment files are checked against: lockoutd's metrics and settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lockoutd.ingest.metrics import IngestMetrics
from lockoutd.report.metrics import Metrics
from lockoutd.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
_METRIC = re.compile(r"\blockoutd_[a-zA-Z0-9_]+")


def exported_metrics() -> set[str]:
    """Every sample name the daemon and the ingest process can expose."""
    names: set[str] = set()
    for registry in (Metrics().registry, IngestMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def metrics_in(expression: str) -> set[str]:
    """The lockoutd metric names a PromQL expression reads."""
    return set(_METRIC.findall(expression))


def settings_from_text(text: str, tmp_path: Path) -> Settings:
    """Settings as lockoutd would load them from a file holding ``text``."""
    path = tmp_path / "lockoutd.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def load_yaml_documents(path: Path) -> list[dict[str, object]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def promtool() -> str:
    """The promtool binary, or a skip that says how to get it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; ./scripts/test)")
    return found


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed tools on files of this repository
        argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
