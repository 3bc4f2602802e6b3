"""The command line: ``lockoutd run``, ``check`` and ``replay`` (SPEC section 5)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import structlog

from lockoutd import __version__
from lockoutd.decide.decision import Outcome, decide, encode_decision
from lockoutd.decide.engine import Engine
from lockoutd.decode.event import KNOWN_TYPES
from lockoutd.decode.native import InvalidEvent, decode_native
from lockoutd.errors import ConfigError, LockoutdError
from lockoutd.report.logging import configure_logging
from lockoutd.rules import RuleSet, load_rules
from lockoutd.settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler = {"run": _run, "check": _check, "replay": _replay}[args.command]
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockoutd", description="Lock ZITADEL users whose login failures cross a rule."
    )
    parser.add_argument("--version", action="version", version=f"lockoutd {__version__}")
    commands = parser.add_subparsers(dest="command")
    config_help = "configuration file (default: config/lockoutd.yaml)"
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, help=config_help)
    check = commands.add_parser("check", help="validate the configuration and the rules")
    check.add_argument("-c", "--config", type=Path, help=config_help)
    replay = commands.add_parser(
        "replay", help="evaluate the rules over JSON-lines events offline; calls nothing"
    )
    replay.add_argument("events", help="file of JSON lines, or - for standard input")
    replay.add_argument("-c", "--config", type=Path, help=config_help)
    return parser


def _load(config: Path | None) -> tuple[Settings, RuleSet]:
    settings = load_settings(config)
    return settings, load_rules(settings.engine.rule_paths)


def _print_problems(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from lockoutd.daemon import Daemon  # the daemon's imports are only paid for by `run`

    try:
        settings, rules = _load(args.config)
    except ConfigError as error:
        return _print_problems(error)
    configure_logging(settings.log.level, settings.log.format)
    log = structlog.get_logger("lockoutd")
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
        _settings, rules = _load(args.config)
    except ConfigError as error:
        return _print_problems(error)
    print(
        f"ok: {len(rules.rules)} rules from {len(rules.files)} files "
        f"({', '.join(rule.name for rule in rules.rules)})"
    )
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    try:
        settings, rules = _load(args.config)
    except ConfigError as error:
        return _print_problems(error)
    if args.events != "-" and not Path(args.events).is_file():
        print(f"{args.events}: no such events file", file=sys.stderr)
        return EXIT_FAILED
    engine = Engine(rules)
    fired: Counter[str] = Counter()
    invalid = 0
    accepted = 0
    started = time.monotonic()
    for number, line in _lines(args.events):
        try:
            event = decode_native(line, max_bytes=settings.kafka.max_event_bytes)
        except InvalidEvent as error:
            invalid += 1
            print(f"{args.events}:{number}: {error.reason}: {error}", file=sys.stderr)
            continue
        if event.type not in KNOWN_TYPES:
            continue
        accepted += 1
        # Offline, "now" is the time of the event: old files replay as if they were live.
        for firing in engine.process(event, event.occurred_at):
            fired[firing.rule.name] += 1
            for decision in decide(
                firing, rules, now=event.occurred_at, max_event_age=settings.engine.max_event_age
            ):
                if decision.outcome is None:  # replay never calls ZITADEL
                    decision = msgspec.structs.replace(decision, outcome=Outcome.DRY_RUN)
                sys.stdout.buffer.write(encode_decision(decision) + b"\n")
    sys.stdout.flush()
    elapsed = time.monotonic() - started
    print(f"replayed {accepted} events ({invalid} invalid) in {elapsed:.2f}s", file=sys.stderr)
    for rule in rules.rules:
        print(f"  {rule.name}: fired {fired[rule.name]}", file=sys.stderr)
    return EXIT_OK


def _lines(source: str) -> Iterator[tuple[int, bytes]]:
    with contextlib.ExitStack() as stack:
        handle = sys.stdin.buffer if source == "-" else stack.enter_context(open(source, "rb"))
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")


if __name__ == "__main__":
    sys.exit(main())
