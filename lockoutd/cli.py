"""The command line: ``lockoutd run``, ``check``, ``replay``, ``test-rules`` and ``ingest``.

The README's "Running it" section is the user's side of this module.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, get_args

import structlog
import yaml

from lockoutd import __version__, words
from lockoutd.collector import settle_after_startup
from lockoutd.decide.core import WINDOWS
from lockoutd.decode.formats import FormatName
from lockoutd.decode.native import DECODER
from lockoutd.errors import ConfigError, KafkaUnavailable, LockoutdError
from lockoutd.preflight import load_for_run
from lockoutd.report.logging import configure_logging
from lockoutd.rules import RuleSet, load_rules
from lockoutd.settings import Settings, load_settings

if TYPE_CHECKING:
    from lockoutd.replay.progress import Progress
    from lockoutd.replay.runner import Fed, ReplayStats
    from lockoutd.replay.scenarios import ScenarioResult
    from lockoutd.replay.topic import Bound
    from lockoutd.source.kafka import Record

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

PROGRESS_EVERY = 100_000
"""Without a terminal, replay writes a progress line every this many records."""


def program() -> int:
    """The ``lockoutd`` executable: :func:`main` in a process of its own, whose garbage collector
    the long-running commands set for a stream of records (see :mod:`lockoutd.collector`)."""
    return main(own_process=True)


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run the command ``argv`` names; return the exit code. Only the executable passes
    ``own_process`` (:func:`program`): a program that calls this inside its own process (a test)
    keeps its garbage collector as it was."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.own_process = own_process
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = {
        "run": _run,
        "check": _check,
        "replay": _replay,
        "test-rules": _test_rules,
        "ingest": _ingest,
    }[args.command]
    try:
        code = handler(args)
        sys.stdout.flush()  # now, so that a reader gone away is seen here and not at exit
    except BrokenPipeError:
        # The reader of standard output went away (`| head`): not an error of lockoutd. Point
        # stdout at /dev/null so that flushing it at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockoutd", description="Lock ZITADEL users whose login failures cross a rule."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"lockoutd {__version__} (windows: {WINDOWS}, decoder: {DECODER})",
    )
    commands = parser.add_subparsers(dest="command")
    config_help = "configuration file (default: config/lockoutd.yaml)"
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, help=config_help)
    check = commands.add_parser(
        "check", help="validate the configuration and the rules; print the effective settings"
    )
    check.add_argument("-c", "--config", type=Path, help=config_help)
    check.add_argument(
        "--connect",
        action="store_true",
        help="also reach Kafka (the topics) and ZITADEL (who lockoutd is, what it may do); "
        "acts on nobody",
    )
    replay = commands.add_parser(
        "replay",
        help="evaluate the rules over recorded events offline; calls nothing",
        description=(
            "Run the daemon's pipeline in shadow mode over JSON-lines events (a file, or - for "
            "standard input) or a stretch of a Kafka topic. Prints one JSON decision a line on "
            "standard output and a summary per rule on standard error; calls nothing."
        ),
    )
    replay.add_argument("events", nargs="?", help="file of JSON lines, or - for standard input")
    replay.add_argument("-c", "--config", type=Path, help=config_help)
    replay.add_argument("--topic", help="read this Kafka topic instead of a file")
    replay.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="with --topic: first offset, or RFC 3339 time of the first record (inclusive)",
    )
    replay.add_argument(
        "--to",
        dest="end",
        metavar="WHEN",
        help="with --topic: offset or RFC 3339 time to stop before (default: the current end)",
    )
    replay.add_argument(
        "--format",
        choices=get_args(FormatName),
        help="input format (default: kafka.formats for the topic, else native)",
    )
    replay.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report")
    replay.add_argument(
        "--progress-every",
        type=int,
        default=PROGRESS_EVERY,
        metavar="N",
        help=f"without a terminal, a progress line every N records (0: never; {PROGRESS_EVERY})",
    )
    test_rules = commands.add_parser(
        "test-rules",
        help="replay scenario files that name the rules each event must fire",
        description=(
            "Replay each scenario file (one JSON object a line: note, event, fires) through the "
            "rules of the configuration, as lockoutd replay does, and compare what each event "
            "fired with its fires. Prints every difference; exits 1 if there is one. Without "
            "files, tests scenarios/*.jsonl in each rule folder."
        ),
    )
    test_rules.add_argument("scenarios", nargs="*", type=Path, metavar="SCENARIO.jsonl")
    test_rules.add_argument("-c", "--config", type=Path, help=config_help)
    test_rules.add_argument(
        "--format",
        choices=get_args(FormatName),
        default="native",
        help="the format of the scenarios' events (default: native)",
    )
    ingest = commands.add_parser(
        "ingest", help="serve the ZITADEL Actions v2 endpoint that publishes events to Kafka"
    )
    ingest.add_argument("-c", "--config", type=Path, help=config_help)
    return parser


def _load(config: Path | None) -> tuple[Settings, RuleSet]:
    settings = load_settings(config)
    return settings, load_rules(settings.engine.rule_paths)


def _print_problems(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_FAILED


def _settle(args: argparse.Namespace) -> None:
    # Once the configuration and the rules are loaded, before the first record.
    if args.own_process:
        settle_after_startup()


def _run(args: argparse.Namespace) -> int:
    from lockoutd.daemon import Daemon  # the daemon's imports are only paid for by `run`

    try:
        # What check checks, run checks before anything connects.
        loaded, rules = load_for_run(args.config)
    except ConfigError as error:
        return _print_problems(error)
    settings = loaded.settings
    configure_logging(settings.log.level, settings.log.format)
    log = structlog.get_logger("lockoutd")
    for note in loaded.notes:
        log.info("configuration_note", note=note)
    for warning in rules.warnings:
        log.warning("rules_warning", warning=warning)
    _settle(args)
    try:
        asyncio.run(Daemon(settings, rules).run())
    except ConfigError as error:
        log.error("daemon_failed", problems=error.problems)
        return EXIT_FAILED
    except LockoutdError as error:
        log.error("daemon_failed", error=str(error), error_type=type(error).__name__)
        return EXIT_FAILED
    except Exception:
        # Nothing was committed past the failure; the supervisor restarts the process.
        log.exception("daemon_crashed")
        return EXIT_FAILED
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    try:
        loaded, rules = load_for_run(args.config)
    except ConfigError as error:
        return _print_problems(error)
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    print(
        f"ok: {words.count(len(rules.rules), 'rule')} from "
        f"{words.count(len(rules.files), 'file')} "
        f"({', '.join(rule.name for rule in rules.rules)})"
    )
    print("# effective configuration (file and environment; secrets masked)")
    print(yaml.safe_dump(loaded.settings.masked(), sort_keys=False), end="")
    if not args.connect:
        return EXIT_OK
    from lockoutd.connect import connect_findings

    print("# connections")
    findings = asyncio.run(connect_findings(loaded.settings))
    for finding in findings:
        print(finding)
    return EXIT_OK if all(finding.ok for finding in findings) else EXIT_FAILED


def _test_rules(args: argparse.Namespace) -> int:
    from lockoutd.replay.scenarios import default_scenarios, run_scenario

    try:
        settings, rules = _load(args.config)
    except ConfigError as error:
        return _print_problems(error)
    for warning in rules.warnings:
        print(warning, file=sys.stderr)
    scenarios: list[Path] = args.scenarios or default_scenarios(settings.engine.rule_paths)
    if not scenarios:
        where = ", ".join(str(p) for p in settings.engine.rule_paths)
        print(
            f"test-rules: name the scenario files (no scenarios/*.jsonl beside {where})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _log_problems_to_stderr()

    async def run_all() -> list[ScenarioResult]:
        return [
            await run_scenario(settings, rules, path, event_format=args.format)
            for path in scenarios
        ]

    results = asyncio.run(run_all())
    for result in results:
        for line in result.describe():
            print(line)
        verdict = "ok," if result.ok else f"FAILED, {result.failed} of"
        print(f"{result.path}: {verdict} {words.count(result.events, 'event')}")
    events = sum(result.events for result in results)
    failed = sum(result.failed for result in results)
    files = words.count(len(results), "scenario file")
    if failed:
        print(f"FAILED: {failed} of {events} events in {files} did not fire what they expect")
        return EXIT_FAILED
    print(f"ok: {files}, {words.count(events, 'event')}, every expectation met")
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    from lockoutd.ingest.service import IngestService

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        return _print_problems(error)
    configure_logging(settings.log.level, settings.log.format)
    log = structlog.get_logger("lockoutd.ingest")
    _settle(args)
    try:
        asyncio.run(IngestService(settings).run())
    except ConfigError as error:
        log.error("ingest_failed", problems=error.problems)
        return EXIT_FAILED
    except LockoutdError as error:
        log.error("ingest_failed", error=str(error), error_type=type(error).__name__)
        return EXIT_FAILED
    except Exception:
        log.exception("ingest_crashed")
        return EXIT_FAILED
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from lockoutd.replay.topic import Bound

    if args.events is None and args.topic is None:
        print(
            "replay: name an events file (- for standard input), or a topic with --topic",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.events is not None and args.topic is not None:
        print(f"replay: give an events file or --topic, not both ({args.events})", file=sys.stderr)
        return EXIT_USAGE
    bounds: list[Bound | None] = []
    for flag, text in (("--from", args.start), ("--to", args.end)):
        if text is None:
            bounds.append(None)
            continue
        if args.topic is None:
            print(f"replay: {flag} needs --topic", file=sys.stderr)
            return EXIT_USAGE
        try:
            bounds.append(Bound.parse(text))
        except ValueError as exc:
            print(f"replay: {flag}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        settings, rules = _load(args.config)
    except ConfigError as error:
        return _print_problems(error)
    if args.events not in (None, "-") and not Path(args.events).is_file():
        print(f"{args.events}: no such events file", file=sys.stderr)
        return EXIT_FAILED
    _log_problems_to_stderr()
    _settle(args)
    try:
        size = Path(args.events).stat().st_size if args.events not in (None, "-") else None
        stats = asyncio.run(_replay_events(args, settings, rules, bounds[0], bounds[1], size))
    except ConfigError as error:
        return _print_problems(error)
    except KafkaUnavailable as error:
        print(f"replay: {error}", file=sys.stderr)
        return EXIT_FAILED
    except _ScenarioFileError:
        print(
            f"replay: {args.events} looks like a scenario file (each line holds an event and the "
            f"rules it fires); use lockoutd test-rules {args.events}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _print_summary(stats)
    if args.report is not None:
        from lockoutd.replay.report import write_report

        source = f"topic {args.topic}" if args.topic else args.events
        try:
            write_report(
                args.report, stats, source=source, rule_files=[str(f) for f in rules.files]
            )
        except OSError as exc:
            print(f"{args.report}: cannot write the report: {exc.strerror}", file=sys.stderr)
            return EXIT_FAILED
        print(f"report written to {args.report}", file=sys.stderr)
    return EXIT_OK


async def _replay_events(
    args: argparse.Namespace,
    settings: Settings,
    rules: RuleSet,
    start: Bound | None,
    end: Bound | None,
    file_size: int | None,
) -> ReplayStats:
    from lockoutd.replay.lines import read_lines
    from lockoutd.replay.progress import Progress
    from lockoutd.replay.runner import Replay
    from lockoutd.replay.scenarios import looks_like_a_scenario
    from lockoutd.replay.topic import TopicRange

    topic = args.topic or settings.kafka.topics[0]
    event_format: FormatName = args.format or settings.kafka.formats.get(topic, "native")
    replay = Replay(
        settings,
        rules,
        topic=topic,
        event_format=event_format,
        timelines=args.report is not None,
    )
    out = sys.stdout.buffer
    if args.topic is None:
        progress = Progress(sys.stderr, total=file_size, every=args.progress_every)
        first = True
        for lines in read_lines(args.events):
            if first and lines.values:
                # A scenario file's lines would all be invalid events: say what it is instead.
                if looks_like_a_scenario(lines.values[0]):
                    raise _ScenarioFileError
                first = False
            fed = await replay.feed_lines(lines.values)
            where = functools.partial(_line_at, args.events, lines.numbers)
            _show(out, progress, fed, len(lines.values), lines.position, where)
        progress.close()
    else:
        async with TopicRange(settings.kafka, topic, start=start, end=end) as stretch:
            progress = Progress(sys.stderr, total=stretch.total, every=args.progress_every)
            async for records in stretch.batches():
                fed = await replay.feed_records(records)
                where = functools.partial(_record_at, records)
                position = progress.records + len(records)  # offsets: one per record
                _show(out, progress, fed, len(records), position, where)
            progress.close()
    sys.stdout.flush()
    return replay.finish()


class _ScenarioFileError(Exception):
    """The events file given to replay is a scenario file, for test-rules."""


def _show(
    out: BinaryIO,
    progress: Progress,
    fed: Fed,
    records: int,
    position: int,
    where: Callable[[int], str],
) -> None:
    """Write a batch's decisions, and its invalid records between the progress lines."""
    shown = 0
    for index, error in fed.invalid:
        progress.advance(position, records=index + 1 - shown)
        shown = index + 1
        progress.close()  # not in the middle of a progress line on a terminal
        print(f"{where(index)}: {error.reason}: {error}", file=sys.stderr)
    progress.advance(position, records=records - shown)
    for value in fed.decisions:
        out.write(value + b"\n")


def _line_at(path: str, numbers: Sequence[int], index: int) -> str:
    return f"{path}:{numbers[index]}"


def _record_at(records: Sequence[Record], index: int) -> str:
    record = records[index]
    return f"{record.topic}/{record.partition}/{record.offset}"


def _print_summary(stats: ReplayStats) -> None:
    events = stats.events
    span = ""
    if stats.first_event_at is not None and stats.last_event_at is not None:
        span = f", event time {_rfc3339(stats.first_event_at)} to {_rfc3339(stats.last_event_at)}"
    print(
        f"replayed {words.count(events.get('accepted', 0), 'event')} "
        f"({events.get('invalid', 0)} invalid, "
        f"{events.get('ignored', 0)} ignored) in {stats.elapsed_seconds:.2f}s{span}",
        file=sys.stderr,
    )
    header = ["rule", "action", "mode", "fired", "keys", "would lock", "other outcomes"]
    rows = [header]
    for r in stats.rules:
        is_lock = r.rule.action.name == "lock"
        others = ", ".join(
            f"{outcome} {count}"
            for outcome, count in sorted(r.outcomes.items())
            if not (is_lock and outcome == "dry_run")
        )
        rows.append(
            [
                r.rule.name,
                r.rule.action.name,
                r.rule.mode,
                str(r.fired),
                str(len(r.keys)),
                str(r.would_lock) if is_lock else "-",
                others,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {3, 4, 5}
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip(), file=sys.stderr)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _log_problems_to_stderr() -> None:
    """Replay's standard output carries decisions only; warnings and errors go to stderr."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


if __name__ == "__main__":
    sys.exit(main())
