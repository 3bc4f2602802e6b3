"""Loading rule files (README, "Rules"): each problem as ``file:line: message``, on its line."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from lockoutd.errors import ConfigError
from lockoutd.rules import load_rules
from lockoutd.rules.loader import rule_files

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
rules:
  - name: {name}
    key: [user_id]
    threshold: 3
    window: 5m
    action: {{lock: {{}}}}
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(*paths: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_rules(paths)
    return caught.value.problems


def _only_problem(path: Path) -> str:
    problems = _problems(path)
    assert len(problems) == 1, problems
    return problems[0]


def test_the_shipped_rules_load() -> None:
    """The rule files in the repository load without a problem."""
    rules = load_rules([REPO / "rules"])
    assert [rule.name for rule in rules.rules] == [
        "password-bruteforce",
        "otp-bruteforce",
        "spray-from-one-ip",
        "spray-from-one-network",
        "unknown-user-probing",
    ]
    assert rules.files == (REPO / "rules" / "bruteforce.yaml", REPO / "rules" / "spray.yaml")


def test_a_full_rule_file_loads_every_field(tmp_path: Path) -> None:
    """Every field of a rule and of the allowlist arrives in the rule set as written."""
    path = _write(
        tmp_path,
        "rules.yaml",
        """\
        rules:
          - name: spray-from-one-ip
            description: many users from one address
            match: {type: auth.login.failed, org_id: 300}
            key: [ip]
            threshold: 20
            window: 1h
            action: {report: {}}
            mode: dry-run
        allowlist:
          users: ["259242039378444290", Admin@Example.com]
          ips: [10.0.0.0/8, "2001:db8::/32", 192.0.2.7]
        """,
    )
    rules = load_rules([path])
    (rule,) = rules.rules
    assert rule.name == "spray-from-one-ip"
    assert rule.description == "many users from one address"
    assert rule.match == {"type": ["auth.login.failed"], "org_id": ["300"]}
    assert (rule.key, rule.threshold, rule.window) == (["ip"], 20, 3600.0)
    assert (rule.action.name, rule.mode, rule.reset_on_success) == ("report", "dry-run", False)
    assert rules.allowed.users == {"259242039378444290", "admin@example.com"}
    assert rules.allowed.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )


# Each case: a rule file, and the line and message start of the one problem it has.
ONE_PROBLEM = [
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            windw: 5m
            window: 5m
            action: {lock: {}}
        """,
        "5: rules.0.windw: unknown key",
        id="unknown key at rule level",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action:
              lock: {}
              lokc: {}
        """,
        "8: rules.0.action.lokc: unknown key",
        id="unknown key nested in action",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action:
              lock:
                duration: 15m
                cooldown: 5m
        """,
        "9: rules.0.action.lock.cooldown: unknown key",
        id="unknown key inside lock",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
          - name: Password_Bruteforce
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
        """,
        "7: rules.1.name: use only lower-case letters, digits and -",
        id="bad name pattern",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 0
            window: 5m
            action: {lock: {}}
        """,
        "4: rules.0.threshold: must be at least 1",
        id="threshold 0",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 10 minutes
            action: {lock: {}}
        """,
        "5: rules.0.window: expected a duration such as 30s, 10m, 1h or 1d, got '10 minutes'",
        id="bad window",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 0s
            action: {lock: {}}
        """,
        "5: rules.0.window: a duration must be longer than zero",
        id="zero window",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action:
              lock: {}
              report: {}
        """,
        "6: rules.0.action: give exactly one action",
        id="both actions",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action: {}
        """,
        "6: rules.0.action: give exactly one action",
        id="empty action",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
          - name: b
            key: [user_id]
            threshold: 3
            window: 5m
        """,
        "7: rules.1.action: required, but missing",
        id="no action (the rule's line)",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [ip]
            threshold: 3
            window: 5m
            action:
              lock: {}
        """,
        "6: rules.0.action: action lock needs user_id in the key",
        id="lock keyed on ip only",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id, ip, user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
        """,
        "3: rules.0.key: a field appears twice in the key",
        id="field twice in the key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            match:
              reason: ""
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
        """,
        "4: rules.0.match.reason.0: must not be empty",
        id="empty match value",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            threshold: 4
            window: 5m
            action: {lock: {}}
        """,
        "5: duplicate key 'threshold'",
        id="duplicate YAML key",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
              window: 5m
            action: {lock: {}}
        """,
        "5: invalid YAML: mapping values are not allowed",
        id="invalid YAML syntax",
    ),
    pytest.param(
        """\
        - name: a
          key: [user_id]
        """,
        "1: expected a mapping with 'rules' and 'allowlist'",
        id="a file that is a list",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
        allowlist:
          users: [admin]
          ips:
            - 10.0.0.0/8
            - not-an-address
        """,
        "9: allowlist.ips: not an address or network",
        id="bad allowlist ip",
    ),
    pytest.param(
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: 3
            window: 5m
            action: {lock: {}}
        alowlist:
          users: [admin]
        """,
        "7: alowlist: unknown key",
        id="unknown top-level key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ONE_PROBLEM)
def test_a_problem_is_reported_on_its_line(tmp_path: Path, text: str, expected: str) -> None:
    """The problem names the file and the line a reader has to fix."""
    path = _write(tmp_path, "rules.yaml", text)
    assert _only_problem(path).startswith(f"{path}:{expected}")


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Three mistakes in one file give three problems in one error, each on its own line."""
    path = _write(
        tmp_path,
        "rules.yaml",
        """\
        rules:
          - name: a
            key: [user_id]
            threshold: -1
            window: soon
            action: {lock: {}}
          - name: b
            key: [user_id]
            treshold: 3
            threshold: 3
            window: 5m
            action: {lock: {}}
        """,
    )
    problems = _problems(path)
    assert sorted(problems) == sorted(
        [
            f"{path}:4: rules.0.threshold: must be at least 1",
            f"{path}:5: rules.0.window: expected a duration such as 30s, 10m, 1h or 1d, got 'soon'",
            f"{path}:9: rules.1.treshold: unknown key (check its spelling and indentation)",
        ]
    )


def test_problems_of_every_file_are_reported_together(tmp_path: Path) -> None:
    """A broken file does not hide the problems of the next one."""
    first = _write(tmp_path, "a.yaml", "rules:\n  - name: a\n    threshold: 0\n")
    second = _write(tmp_path, "b.yaml", "rules: [\n")
    problems = _problems(tmp_path)
    assert {problem.split(":")[0] for problem in problems} == {str(first), str(second)}


def test_a_duplicate_rule_name_across_files_names_both_places(tmp_path: Path) -> None:
    """A name used twice is reported where it is repeated, naming where it was first used."""
    _write(tmp_path, "a.yaml", GOOD.format(name="shared"))
    second = _write(tmp_path, "b.yaml", "# the same name again\n\n" + GOOD.format(name="shared"))
    assert _problems(tmp_path) == [
        f"{second}:4: rule name 'shared' is already used at {tmp_path / 'a.yaml'}:2"
    ]


def test_a_duplicate_rule_name_in_one_file_is_reported(tmp_path: Path) -> None:
    """A name used twice in the same file is reported too."""
    text = GOOD.format(name="twice") + GOOD.format(name="twice").removeprefix("rules:\n")
    path = _write(tmp_path, "rules.yaml", text)
    assert _only_problem(path) == f"{path}:7: rule name 'twice' is already used at {path}:2"


def test_a_rule_path_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    """A missing rule path is a problem naming the setting, not an empty rule set."""
    missing = tmp_path / "nope"
    assert _problems(missing) == [f"engine.rule_paths: {missing} does not exist"]


def test_no_rules_at_all_is_an_error(tmp_path: Path) -> None:
    """A daemon with nothing to enforce refuses to start."""
    empty = _write(tmp_path, "empty.yaml", "# nothing yet\n")
    only_allowlist = _write(tmp_path, "allow.yaml", "allowlist:\n  users: [admin]\n")
    (problem,) = _problems(empty, only_allowlist)
    assert problem.startswith(f"{empty}, {only_allowlist}:1: no rules found")


def test_an_empty_rule_file_next_to_others_is_allowed(tmp_path: Path) -> None:
    """An empty file kept for future rules is not a problem when other files have rules."""
    _write(tmp_path, "empty.yaml", "")
    _write(tmp_path, "rules.yaml", GOOD.format(name="a"))
    assert [rule.name for rule in load_rules([tmp_path]).rules] == ["a"]


def test_yml_and_yaml_files_are_read_and_others_ignored(tmp_path: Path) -> None:
    """A directory contributes its ``.yaml`` and ``.yml`` files, in name order, and nothing else."""
    _write(tmp_path, "b.yml", GOOD.format(name="from-yml"))
    _write(tmp_path, "a.yaml", GOOD.format(name="from-yaml"))
    _write(tmp_path, "c.txt", GOOD.format(name="from-txt"))
    _write(tmp_path, "d.yaml~", GOOD.format(name="from-backup"))
    (tmp_path / "e.yaml").mkdir()
    rules = load_rules([tmp_path])
    assert [rule.name for rule in rules.rules] == ["from-yaml", "from-yml"]
    assert rule_files([tmp_path]) == [tmp_path / "a.yaml", tmp_path / "b.yml"]


def test_a_file_named_directly_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    """A rule path that names a file is read even without a YAML suffix."""
    path = _write(tmp_path, "policy.rules", GOOD.format(name="named"))
    assert [rule.name for rule in load_rules([path]).rules] == ["named"]


def test_allowlists_of_all_files_are_merged(tmp_path: Path) -> None:
    """The allowlist is the union of every file's allowlist."""
    _write(tmp_path, "a.yaml", GOOD.format(name="a") + "allowlist:\n  users: [alice]\n")
    _write(tmp_path, "b.yaml", "allowlist:\n  users: [bob]\n  ips: [10.0.0.0/8]\n")
    rules = load_rules([tmp_path])
    assert rules.allowed.users == {"alice", "bob"}
    assert rules.ip_allowlisted("10.9.9.9")
