"""Libraries' loggers stay at warnings whatever ``log.level`` is (README, "Operations")."""

from __future__ import annotations

import json
import logging

import pytest

from lockoutd.report.logging import configure_logging

HEADER_BLOCK = "Encoded header block to b'\\x83A\\x8b'"


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("library", ["hpack.hpack", "h2.connection", "httpcore.http2", "aiokafka"])
def test_at_debug_level_a_library_debug_line_is_not_written(
    capsys: pytest.CaptureFixture[str], library: str
) -> None:
    configure_logging("debug", "json")
    logging.getLogger(library).debug(HEADER_BLOCK)
    logging.getLogger(library).info(HEADER_BLOCK)
    assert lines(capsys) == []


def test_a_library_that_lowers_its_own_level_is_held_back_all_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", "json")
    chatty = logging.getLogger("some.library")
    chatty.setLevel(logging.DEBUG)
    try:
        chatty.debug(HEADER_BLOCK)
    finally:
        chatty.setLevel(logging.NOTSET)
    assert lines(capsys) == []


def test_library_warnings_are_written_in_lockoutds_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    logging.getLogger("aiokafka.conn").warning("connection to %s lost", "broker:9092")
    [line] = lines(capsys)
    assert line["event"] == "connection to broker:9092 lost"
    assert (line["level"], line["logger"]) == ("warning", "aiokafka.conn")
    assert "timestamp" in line


def test_lockoutds_own_standard_library_loggers_follow_the_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", "json")
    logging.getLogger("lockoutd.testing.zitadel").debug("emulator detail")
    [line] = lines(capsys)
    assert (line["event"], line["level"]) == ("emulator detail", "debug")


def test_a_library_traceback_is_structured_like_lockoutds_and_carries_no_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    token = "a-local-variable-holding-a-token"
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    [line] = lines(capsys)
    [error] = line["exception"]  # type: ignore[misc]
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "boom")
    assert token not in json.dumps(line)
