"""Running the real daemon as a child process, for end-to-end tests and the demo."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class DaemonConfig:
    """The settings a test or the demo varies; ``write`` turns them into a config file."""

    bootstrap_servers: str
    topics: list[str]
    group_id: str
    zitadel_url: str
    pat_file: Path
    rule_paths: list[Path]
    metrics_port: int
    dead_letter_topic: str | None = None
    decisions_topic: str | None = None
    schedule_topic: str = "lockoutd.schedule"
    schedule_signing_key_file: Path | None = None
    """Needed as soon as a rule locks temporarily (:func:`write_schedule_key` makes one)."""
    checkpoint_topic: str | None = None
    """Off unless a test turns it on: most tests are about the rewind of an assigned partition."""
    max_locks_per_minute: int = 60
    max_event_bytes: int = 1_048_576
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        document: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": self.bootstrap_servers,
                "topics": self.topics,
                "group_id": self.group_id,
                "dead_letter_topic": self.dead_letter_topic,
                "decisions_topic": self.decisions_topic,
                "schedule_topic": self.schedule_topic,
                "schedule_signing_key_file": (
                    str(self.schedule_signing_key_file) if self.schedule_signing_key_file else None
                ),
                "checkpoint_topic": self.checkpoint_topic,
                "max_event_bytes": self.max_event_bytes,
            },
            "zitadel": {
                "base_url": self.zitadel_url,
                "pat_file": str(self.pat_file),
                "timeout": "2s",
            },
            "engine": {"rule_paths": [str(p) for p in self.rule_paths]},
            "safety": {"max_locks_per_minute": self.max_locks_per_minute},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "log": {"level": "info", "format": "json"},
        }
        for section, values in self.extra.items():
            document.setdefault(section, {}).update(values)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path


def write_schedule_key(path: Path) -> Path:
    """A fresh schedule signing key in ``path``, made as the README says (32 random bytes in
    base64); every daemon of one test or demo must share it."""
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class DaemonProcess:
    """``lockoutd run -c CONFIG`` in a child process, its JSON log lines kept in ``log_path``."""

    def __init__(
        self,
        config_path: Path,
        *,
        metrics_port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.metrics_port = metrics_port
        self.log_path = log_path
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **(self._env or {})}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "lockoutd", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it was started (for benchmarks that watch its CPU)."""
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200: the consumer has joined its group and fetches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise RuntimeError(f"lockoutd exited with {self.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"lockoutd was not ready within {timeout}s:\n{self.output()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics`` by name and sorted labels."""
        text = httpx.get(f"{self.url}/metrics", timeout=5.0).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value, 0 when the series does not exist."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """The daemon's structured log lines (lines that are not JSON are skipped)."""
        lines = []
        for line in self.output().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                lines.append(entry)
        return lines

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (kills after ``timeout``)."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def reload(self) -> None:
        """SIGHUP: reload the rules."""
        if self._process is None:
            raise RuntimeError("the daemon was never started")
        self._process.send_signal(signal.SIGHUP)

    def kill(self) -> int:
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> int:
        if self._process is None:
            raise RuntimeError("the daemon was never started")
        if self._process.poll() is None:
            self._process.send_signal(sig)
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise
