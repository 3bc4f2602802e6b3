"""``lockoutd test-rules`` (README, "Testing your rules"): scenario files that name what fires."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockoutd.cli import main

REPO = Path(__file__).resolve().parents[2]

RULES = """\
rules:
  - name: password-bruteforce
    match: {reason: password}
    key: [user_id]
    threshold: 3
    window: 10m
    action: {lock: {}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose only rule locks after three wrong passwords in ten minutes."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "passwords.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "lockoutd.yaml"
    path.write_text("engine:\n  rule_paths: [rules]\n", encoding="utf-8")
    return path


def _case(minute: int, fires: list[str], *, user: str = "42", note: str = "") -> str:
    event = {
        "type": "auth.login.failed",
        "occurred_at": f"2026-11-29T14:{minute:02d}:00Z",
        "user_id": user,
        "reason": "password",
    }
    return json.dumps({"note": note or f"minute {minute}", "event": event, "fires": fires})


def _scenario(tmp_path: Path, *lines: str, name: str = "passwords.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_the_shipped_rules_pass_their_shipped_scenarios(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without scenario files named, the ``scenarios/`` folder beside the rules is tested."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("LOCKOUTD_ZITADEL__PAT", raising=False)  # test-rules needs no credentials
    assert main(["test-rules", "-c", "config/lockoutd.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("ok: 2 scenario files, ")
    assert out[-1].endswith(" every expectation met")


def test_a_scenario_that_holds_passes(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each line's ``fires`` is exactly what fired on that event: exit 0."""
    scenario = _scenario(
        tmp_path, _case(0, []), _case(1, []), _case(2, ["password-bruteforce"]), _case(3, [])
    )
    assert main(["test-rules", str(scenario), "-c", str(config)]) == 0
    assert capsys.readouterr().out == (
        f"{scenario}: ok, 4 events\nok: 1 scenario file, 4 events, every expectation met\n"
    )


def test_a_scenario_that_fails_prints_each_difference_and_exits_1(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule that fires early, and one expected that does not fire, are shown line by line."""
    scenario = _scenario(
        tmp_path,
        _case(0, []),
        _case(1, []),
        _case(2, [], note="third wrong password: expected to stay quiet"),
        _case(3, ["password-bruteforce"], note="fourth: expected to lock"),
    )
    assert main(["test-rules", str(scenario), "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert out == (
        f"{scenario}:3: third wrong password: expected to stay quiet\n"
        "  expected: (nothing)\n"
        "  fired:    password-bruteforce\n"
        f"{scenario}:4: fourth: expected to lock\n"
        "  expected: password-bruteforce\n"
        "  fired:    (nothing)\n"
        f"{scenario}: FAILED, 2 of 4 events\n"
        "FAILED: 2 of 4 events in 1 scenario file did not fire what they expect\n"
    )


def test_every_scenario_file_starts_with_empty_windows(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two files with the same user do not count into each other."""
    first = _scenario(tmp_path, _case(0, []), _case(1, []), name="a.jsonl")
    second = _scenario(tmp_path, _case(2, []), name="b.jsonl")
    assert main(["test-rules", str(first), str(second), "-c", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "ok: 2 scenario files, 3 events, every expectation met"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param("not json", "2: not a JSON object", id="not JSON"),
        pytest.param(
            json.dumps({"event": {"type": "auth.login.failed"}, "fires": []}),
            "2: the event is not valid: missing_field:",
            id="an event that does not decode",
        ),
        pytest.param(
            json.dumps({"note": "x", "event": {}}),
            "2: expected an object with event (the event) and fires (the rules it must fire), "
            "and optionally note",
            id="no fires",
        ),
        pytest.param(
            _case(1, ["password-bruteforse"]),
            "2: fires names password-bruteforse, which no rule file defines; "
            "did you mean password-bruteforce?",
            id="an unknown rule name",
        ),
    ],
)
def test_a_broken_scenario_line_is_a_failure_that_names_it(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], line: str, problem: str
) -> None:
    """A scenario that cannot be read is never a pass."""
    scenario = _scenario(tmp_path, _case(0, []), line)
    assert main(["test-rules", str(scenario), "-c", str(config)]) == 1
    assert f"{scenario}:{problem}" in capsys.readouterr().out


def test_bad_rules_exit_1_before_any_scenario(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rules that do not load are reported as ``check`` reports them."""
    (tmp_path / "rules" / "broken.yaml").write_text("rules: [\n", encoding="utf-8")
    assert main(["test-rules", str(_scenario(tmp_path, _case(0, []))), "-c", str(config)]) == 1
    assert "invalid YAML" in capsys.readouterr().err


def test_replay_given_a_scenario_file_points_at_test_rules(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 25 invalid records and exit 0: replay says what the file is and what to use."""
    scenario = _scenario(tmp_path, "", _case(0, []), _case(1, []))  # a blank line first
    assert main(["replay", str(scenario), "-c", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"replay: {scenario} looks like a scenario file (each line holds an event and the rules "
        f"it fires); use lockoutd test-rules {scenario}\n"
    )


def test_a_rule_that_matches_an_unknown_field_is_warned_about(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning ``check`` gives is given here too: a scenario that fails for a typo says why."""
    (tmp_path / "rules" / "typo.yaml").write_text(
        RULES.replace("password-bruteforce", "typo").replace("{reason:", "{reasn:"),
        encoding="utf-8",
    )
    assert main(["test-rules", str(_scenario(tmp_path, _case(0, []))), "-c", str(config)]) == 0
    warning = "warning: rules.0.match.reasn: no input format produces this field; did you mean"
    assert f"{warning} reason?" in capsys.readouterr().err
