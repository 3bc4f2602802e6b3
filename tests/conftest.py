"""Fixtures shared by every test folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from lockoutd.testing.broker import LocalBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One Kafka-protocol broker for the whole session (a group join takes seconds there).

    ``LOCKOUTD_TEST_BOOTSTRAP_SERVERS=host:port`` points the tests at another broker instead.
    Every test gets its own topics and consumer group, so they never see each other's records.
    """
    with LocalBroker() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults and the root logger as it found them.

    ``configure_logging`` binds loggers to the stdout of the moment; a later test must not
    write to a capture that pytest has already closed.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = _logger_levels()
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in _logger_levels():  # configure_logging sets the libraries' levels and lockoutd's
        logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


def _logger_levels() -> dict[str, int]:
    return {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
