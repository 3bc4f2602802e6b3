"""The command line (README, "Running it"): ``check``, ``replay`` and ``--version``, in-process."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockoutd import __version__
from lockoutd.cli import main
from lockoutd.decide import core
from lockoutd.decode import native

REPO = Path(__file__).resolve().parents[2]


def compiled_core_built() -> bool:
    return importlib.util.find_spec("lockoutd.decide._cwindows") is not None


def compiled_decoder_built() -> bool:
    return importlib.util.find_spec("lockoutd.decode._cnative") is not None


RULES = """\
rules:
  - name: password-bruteforce
    match: {reason: password}
    key: [user_id]
    threshold: 3
    window: 10m
    reset_on_success: true
    action: {lock: {}}
  - name: spray-report
    match: {type: auth.login.failed}
    key: [ip]
    threshold: 4
    window: 10m
    action: {report: {}}
allowlist:
  users: [admin@example.com]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose rule path holds :data:`RULES`."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "lockoutd.yaml"
    (tmp_path / "pat").write_text("a-token\n", encoding="utf-8")
    path.write_text(
        f"zitadel:\n  pat_file: pat\nengine:\n  rule_paths: [{rules}]\n  max_event_age: 1h\n",
        encoding="utf-8",
    )
    return path


def _line(minute: int, **fields: object) -> str:
    document = {
        "type": "auth.login.failed",
        "occurred_at": f"2026-11-29T14:{minute:02d}:00Z",
        "user_id": "42",
        "reason": "password",
        "ip": "192.0.2.1",
        **fields,
    }
    return json.dumps(document)


def _events(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_check_accepts_the_shipped_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lockoutd check -c config/lockoutd.yaml`` in the repository exits 0 and names the rules."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("LOCKOUTD_ZITADEL__PAT", "a-token")  # as the README's example does
    monkeypatch.setenv("LOCKOUTD_KAFKA__SCHEDULE_SIGNING_KEY", "a-key-of-at-least-16-bytes")
    assert main(["check", "-c", "config/lockoutd.yaml"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ok: 5 rules from 2 files")
    assert "password-bruteforce" in captured.out


def test_check_reports_a_broken_rule_file_as_file_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad rule file makes ``check`` exit 1 with one ``file:line: message`` per problem."""
    broken = tmp_path / "rules" / "broken.yaml"
    broken.write_text(
        textwrap.dedent(
            """\
            rules:
              - name: broken
                key: [user_id]
                threshold: 0
                window: 5 minutes
                action: {lock: {}}
            """
        ),
        encoding="utf-8",
    )
    assert main(["check", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{broken}:4: rules.0.threshold: must be at least 1",
        f"{broken}:5: rules.0.window: expected a duration such as 30s, 10m, 1h or 1d, "
        "got '5 minutes'",
    ]


def test_check_reports_a_bad_configuration_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad setting makes ``check`` exit 1 and name the configuration file and line."""
    path = tmp_path / "lockoutd.yaml"
    path.write_text("safety:\n  max_locks_per_minute: 0\n", encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:2: safety.max_locks_per_minute:")


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``lockoutd --version`` prints the version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    expected = f"lockoutd {__version__} (windows: {core.WINDOWS}, decoder: {native.DECODER})\n"
    assert capsys.readouterr().out == expected


@pytest.mark.parametrize(
    ("variable", "windows", "decoder"),
    [
        ("1", "pure Python", "pure Python"),
        (
            "",
            "compiled" if compiled_core_built() else "pure Python",
            "compiled" if compiled_decoder_built() else "pure Python",
        ),
    ],
)
def test_version_says_which_windows_run(variable: str, windows: str, decoder: str) -> None:
    """``LOCKOUTD_NO_EXTENSIONS=1`` selects the pure-Python windows and decoder check, and
    ``--version`` says so."""
    env = {**os.environ, "LOCKOUTD_NO_EXTENSIONS": variable}
    out = subprocess.run(
        [sys.executable, "-m", "lockoutd", "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"lockoutd {__version__} (windows: {windows}, decoder: {decoder})\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command, the usage goes to stderr and the exit code says it was a usage error."""
    assert main([]) == 2
    assert "usage: lockoutd" in capsys.readouterr().err


def test_replay_prints_one_decision_per_firing(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each firing is one JSON decision on stdout, made in shadow mode at its event's time."""
    events = _events(
        tmp_path,
        _line(0),
        _line(1, ip="192.0.2.2"),
        _line(2, ip="192.0.2.3"),
        _line(3, user_id="43"),
        _line(4),
        _line(5, user_id="44"),
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    captured = capsys.readouterr()
    decisions = [json.loads(line) for line in captured.out.splitlines()]
    assert [(d["rule"], d["key"], d["outcome"]) for d in decisions] == [
        ("password-bruteforce", "42", "dry_run"),
        ("spray-report", "192.0.2.1", "reported"),
    ]
    assert decisions[0]["mode"] == "dry-run"
    assert decisions[0]["first_event_at"] == "2026-11-29T14:00:00.000Z"
    assert decisions[0]["last_event_at"] == "2026-11-29T14:02:00.000Z"
    assert decisions[0]["decided_at"] == "2026-11-29T14:02:00.000Z"
    assert "replayed 6 events (0 invalid, 0 ignored)" in captured.err
    table = [line.split() for line in captured.err.splitlines()]
    assert ["password-bruteforce", "lock", "enforce", "1", "1", "1"] in table
    assert ["spray-report", "report", "enforce", "1", "1", "-", "reported", "1"] in table


def test_replay_applies_resets_and_the_allowlist(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A success clears the count, and an allowlisted user's firing says ``allowlisted``."""
    events = _events(
        tmp_path,
        _line(0),
        _line(1),
        _line(2, type="auth.login.succeeded", reason=None),
        _line(3),
        *(_line(10 + n, user_id=None, login_name="Admin@Example.com", ip=None) for n in range(3)),
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["key"], d["outcome"]) for d in decisions] == [
        ("login_name:admin@example.com", "allowlisted")
    ]


def test_replay_reports_invalid_lines_with_their_number(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad line is reported as ``file:line: reason`` on stderr and replay goes on."""
    events = _events(
        tmp_path,
        _line(0),
        "not json",
        _line(1),
        "",
        _line(2, occurred_at="2026-11-29T14:02:00"),
        _line(3),
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith(str(events))]
    assert [line.split(": ")[:2] for line in errors] == [
        [f"{events}:2", "invalid_json"],
        [f"{events}:5", "bad_time"],
    ]
    assert "replayed 3 events (2 invalid, 0 ignored)" in captured.err
    assert len(captured.out.splitlines()) == 1


def test_replay_reads_standard_input(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-`` reads the events from standard input."""
    data = "".join(_line(minute) + "\n" for minute in range(3)).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["replay", "-", "-c", str(config)]) == 0
    decisions = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["rule"] for d in decisions] == ["password-bruteforce"]


def test_replay_with_bad_rules_exits_1(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay validates like ``check``: a broken rule file stops it with exit code 1."""
    (tmp_path / "rules" / "broken.yaml").write_text("rules: [\n", encoding="utf-8")
    events = _events(tmp_path, _line(0))
    assert main(["replay", str(events), "-c", str(config)]) == 1
    assert "invalid YAML" in capsys.readouterr().err


def test_replay_of_a_missing_file_exits_1(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing events file is reported on stderr with exit code 1, not a traceback."""
    assert main(["replay", str(tmp_path / "missing.jsonl"), "-c", str(config)]) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_a_count_of_one_is_singular(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "replayed 1 event", never "1 events"."""
    assert main(["replay", str(_events(tmp_path, _line(0))), "-c", str(config)]) == 0
    assert "replayed 1 event (0 invalid, 0 ignored)" in capsys.readouterr().err
