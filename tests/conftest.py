"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lockoutd.testing.broker import LocalBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One Kafka-protocol broker for the whole session (a group join takes seconds there).

    ``LOCKOUTD_TEST_BOOTSTRAP_SERVERS=host:port`` points the tests at another broker instead.
    Every test gets its own topics and consumer group, so they never see each other's records.
    """
    with LocalBroker() as running:
        yield running
