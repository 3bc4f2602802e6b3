"""``lockoutd replay`` over files: the summary table, the HTML report, formats and progress."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lockoutd.cli import main
from lockoutd.collector import YOUNG_COLLECTION_EVERY
from lockoutd.replay.lines import read_lines
from lockoutd.replay.topic import Bound

RULES = """\
rules:
  - name: password-bruteforce
    description: three wrong passwords in ten minutes
    match: {reason: password}
    key: [user_id]
    threshold: 3
    window: 10m
    action: {lock: {}}
  - name: otp-shadow
    match: {reason: otp}
    key: [user_id]
    threshold: 2
    window: 5m
    action: {lock: {duration: 15m}}
    mode: dry-run
  - name: spray-report
    match: {type: auth.login.failed}
    key: [ip]
    distinct: user_id
    threshold: 3
    window: 10m
    action: {report: {}}
allowlist:
  users: ["7"]
"""

HOSTILE = "<script>alert(1)</script>@example.com"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose rule path holds :data:`RULES`, evidence kept for one hour."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = tmp_path / "lockoutd.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              topics: [auth.events, zitadel.events]
              formats: {{zitadel.events: zitadel}}
            engine:
              rule_paths: [{rules}]
              max_event_age: 1h
            """
        ),
        encoding="utf-8",
    )
    return path


def failure(minute: float, user: str = "42", **fields: object) -> dict[str, object]:
    """A native failure ``minute`` minutes after 10:00, for a user id or else a login name."""
    document: dict[str, object] = {
        "type": "auth.login.failed",
        "occurred_at": _at(minute),
        "reason": "password",
        "ip": "192.0.2.1",
        **fields,
    }
    document["user_id" if user.isdigit() else "login_name"] = user
    return document


def _at(minute: float) -> str:
    seconds = round(minute * 60)
    hours, rest = divmod(seconds, 3600)
    return f"2026-11-29T{10 + hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def write_events(tmp_path: Path, *events: dict[str, object] | str) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def summary(err: str) -> dict[str, list[str]]:
    """The rows of the summary table on stderr, by rule name."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rule "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1 :] if line.strip()}


def test_the_summary_counts_firings_keys_and_would_be_locks(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per rule the summary shows firings, distinct keys, would-be locks and other outcomes."""
    events = write_events(
        tmp_path,
        *(failure(m, "42") for m in range(3)),  # fires for 42
        *(failure(20 + m, "42") for m in range(3)),  # fires for 42 again, a new crossing
        *(failure(40 + m, "43", ip="192.0.2.9") for m in range(3)),  # fires for 43
        *(failure(44 + m, "7", ip="192.0.2.9") for m in range(3)),  # 7 is allowlisted
        # A rule in dry-run mode; and the third user from 192.0.2.9 in ten minutes: a spray.
        *(failure(48 + m, "44", reason="otp", ip="192.0.2.9") for m in range(2)),
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    captured = capsys.readouterr()
    rows = summary(captured.err)
    assert rows["password-bruteforce"] == ["lock", "enforce", "4", "3", "3", "allowlisted", "1"]
    assert rows["otp-shadow"] == ["lock", "dry-run", "1", "1", "1"]
    assert rows["spray-report"] == ["report", "enforce", "1", "1", "-", "reported", "1"]
    outcomes = [json.loads(line)["outcome"] for line in captured.out.splitlines()]
    assert outcomes.count("dry_run") == 4
    assert "replayed 14 events (0 invalid, 0 ignored)" in captured.err


def test_standard_output_holds_only_decisions(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid lines, ignored types and the summary go to stderr; stdout is decisions only."""
    events = write_events(
        tmp_path,
        "{",
        {"type": "auth.password.changed", "occurred_at": _at(0), "user_id": "42"},
        *(failure(m) for m in range(3)),
        {"type": "auth.login.failed", "user_id": "42"},
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    captured = capsys.readouterr()
    decisions = [json.loads(line) for line in captured.out.splitlines()]
    assert [d["rule"] for d in decisions] == ["password-bruteforce"]
    assert f"{events}:1: invalid_json:" in captured.err
    assert f"{events}:6: missing_field:" in captured.err
    assert "replayed 3 events (2 invalid, 1 ignored)" in captured.err


def test_evidence_that_arrives_later_than_max_event_age_is_stale(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay's clock is the newest event time seen, so a late crossing is ``stale`` as live."""
    events = write_events(
        tmp_path,
        failure(120, "50"),  # the clock is at 12:00
        failure(0, "42"),  # a backlog from two hours before arrives
        failure(1, "42"),
        failure(2, "42"),  # 42 crosses on evidence older than max_event_age (1h)
    )
    assert main(["replay", str(events), "-c", str(config)]) == 0
    [decision] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (decision["key"], decision["outcome"]) == ("42", "stale")
    assert decision["decided_at"] == "2026-11-29T12:00:00.000Z"


def test_other_formats_are_read_with_format(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format zitadel`` reads Actions v2 bodies, as the daemon does for such a topic."""
    bodies = [
        {
            "aggregateID": "1001",
            "aggregateType": "user",
            "resourceOwner": "300",
            "instanceID": "1",
            "sequence": n,
            "event_type": "user.human.password.check.failed",
            "created_at": _at(n),
            "event_payload": {"remoteIP": "203.0.113.7"},
        }
        for n in range(3)
    ]
    events = write_events(tmp_path, *bodies)
    assert main(["replay", str(events), "-c", str(config), "--format", "zitadel"]) == 0
    [decision] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (decision["rule"], decision["user_id"], decision["org_id"]) == (
        "password-bruteforce",
        "1001",
        "300",
    )


def test_a_daemon_configuration_that_requires_signatures_replays_without_the_key(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backtest checks no signature (a file has no headers), so it needs no key: the daemon's
    configuration replays on a machine where the key file is not."""
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            "formats: {zitadel.events: zitadel}",
            "formats: {zitadel.events: zitadel}\n  require_zitadel_signature: true",
        )
        + f"ingest:\n  signing_key_file: {tmp_path / 'not-here'}\n",
        encoding="utf-8",
    )
    events = write_events(tmp_path, *(failure(m) for m in range(5)))
    assert main(["replay", str(events), "-c", str(config)]) == 0
    [decision] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert decision["user_id"] == "42"


def test_progress_is_written_every_n_records_without_a_terminal(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a terminal, ``--progress-every 2`` writes a progress line every two records."""
    events = write_events(tmp_path, *(failure(m * 20, str(100 + m)) for m in range(5)))
    assert main(["replay", str(events), "-c", str(config), "--progress-every", "2"]) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("replay:")]
    assert [line.split(" (")[0] for line in progress] == [
        "replay: 2 records read",
        "replay: 4 records read",
    ]
    assert progress[-1].endswith("%")


def test_invalid_lines_are_reported_between_the_progress_lines_around_them(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Messages about bad lines and progress lines come in the order of the records."""
    events = write_events(tmp_path, failure(0), failure(1), "{", failure(2), failure(3))
    assert main(["replay", str(events), "-c", str(config), "--progress-every", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    ordered = [line.split(" (")[0] for line in err if line.startswith(("replay: ", str(events)))]
    assert [line.split(": invalid_json")[0] for line in ordered] == [
        "replay: 2 records read",
        f"{events}:3",
        "replay: 4 records read",
    ]


def test_line_endings_blank_lines_and_reads_that_split_lines_change_nothing(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CRLF, blank lines and a last line without a newline read the same in any chunk size."""
    lines = [json.dumps(failure(m)) for m in range(3)]
    text = f"{lines[0]}\r\n\n   \n{{\r\n{lines[1]}\n\r\n{lines[2]}"
    events = tmp_path / "events.jsonl"
    events.write_bytes(text.encode())
    outputs = []
    for chunk_bytes in (1 << 20, 7):
        monkeypatch.setattr("lockoutd.replay.lines._CHUNK_BYTES", chunk_bytes)
        assert main(["replay", str(events), "-c", str(config)]) == 0
        outputs.append(capsys.readouterr())
    for captured in outputs:
        [decision] = [json.loads(line) for line in captured.out.splitlines()]
        assert decision["rule"] == "password-bruteforce"
        assert f"{events}:4: invalid_json:" in captured.err
        assert "replayed 3 events (1 invalid, 0 ignored)" in captured.err
    assert outputs[0].out == outputs[1].out


def test_lines_are_numbered_as_in_the_file_and_positioned_after_each_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blank lines keep their numbers; a batch's position is the end of its last line."""
    path = tmp_path / "lines.txt"
    path.write_bytes(b"one\n\ntwo\r\n  \nthree")
    monkeypatch.setattr("lockoutd.replay.lines._CHUNK_BYTES", 4)
    batches = list(read_lines(str(path)))
    values = [value for batch in batches for value in batch.values]
    numbers = [number for batch in batches for number in batch.numbers]
    assert (values, numbers) == ([b"one", b"two", b"three"], [1, 3, 5])
    assert batches[-1].position == path.stat().st_size


class _Document(HTMLParser):
    """Collects the tags, the external references and the text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.references += [
            value or "" for name, value in attrs if name in ("src", "href") and value
        ]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_is_self_contained_and_escapes_event_values(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--report`` writes one page with a timeline per rule, no script and no outside asset."""
    events = write_events(
        tmp_path,
        *(failure(m, "42") for m in range(3)),
        *(failure(30 + m, HOSTILE, ip="198.51.100.1") for m in range(3)),
    )
    report = tmp_path / "replay.html"
    assert main(["replay", str(events), "-c", str(config), "--report", str(report)]) == 0
    assert f"report written to {report}" in capsys.readouterr().err
    html = report.read_text(encoding="utf-8")
    page = _Document()
    page.feed(html)
    assert "script" not in page.tags
    assert [ref for ref in page.references if not ref.startswith("#")] == []
    assert page.tags.count("svg") == 4  # every failure, then one timeline per rule
    text = "".join(page.text)
    assert HOSTILE.lower() in text  # shown as text: escaped, never markup
    assert "<script>" not in html
    for rule in ("password-bruteforce", "otp-shadow", "spray-report"):
        assert f'id="rule-{rule}"' in html
    assert "would lock (dry_run)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay"], "name an events file (- for standard input), or a topic with --topic"),
        (["replay", "events.jsonl", "--topic", "t"], "give an events file or --topic, not both"),
        (["replay", "events.jsonl", "--from", "10"], "--from needs --topic"),
        (["replay", "--topic", "t", "--to", "yesterday"], "--to: 'yesterday' is neither"),
        (["replay", "--topic", "t", "--from", "2026-11-29T10:00:00"], "has no UTC offset"),
    ],
)
def test_contradicting_replay_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arguments that contradict each other exit 2 with a message saying what is wrong."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("0", Bound(offset=0)),
        ("1200", Bound(offset=1200)),
        ("2026-11-29T10:00:00Z", Bound(at=1_795_946_400.0)),
        ("2026-11-29T11:00:00+01:00", Bound(at=1_795_946_400.0)),
    ],
)
def test_from_and_to_are_offsets_or_rfc3339_times(text: str, bound: Bound) -> None:
    """A number is an offset; a time with a UTC offset is a moment."""
    assert Bound.parse(text) == bound


def test_the_report_counts_one_firing_in_the_singular(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Fired 1 time for 1 key", not "Fired 1 times for 1 keys"."""
    events = write_events(tmp_path, *(failure(m, "42") for m in range(3)))
    report = tmp_path / "replay.html"
    assert main(["replay", str(events), "-c", str(config), "--report", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    assert "Fired 1 time for 1 key." in html
    assert "3 events accepted" in html


def test_the_executable_sets_the_collector_and_a_caller_in_process_keeps_its_own(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lockoutd`` runs its long commands with fewer collections and start-up frozen
    (bench/README.md, "The garbage collector, and end to end again"); a program that calls
    :func:`main` in its own process keeps its collector as it was."""
    events = write_events(tmp_path, *(failure(m) for m in range(3)))
    before = (gc.get_threshold(), gc.get_freeze_count())
    assert main(["replay", str(events), "-c", str(config)]) == 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
    capsys.readouterr()

    # The executable, in a process of its own: what it set is printed once it has replayed.
    probe = (
        "import gc, sys\n"
        "from lockoutd.cli import program\n"
        f"sys.argv = ['lockoutd', 'replay', {str(events)!r}, '-c', {str(config)!r}]\n"
        "code = program()\n"
        "print(code, gc.get_threshold()[0], gc.get_freeze_count() > 0, file=sys.stderr)\n"
    )
    done = subprocess.run(  # noqa: S603 - our interpreter, our package
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stderr.splitlines()[-1] == f"0 {YOUNG_COLLECTION_EVERY} True"
