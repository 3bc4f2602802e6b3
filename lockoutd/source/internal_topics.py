"""The internal topics of repartitioned rules, created at start (README, Operations: "Scaling
out"): one per distinct key, with the partitions of the source topic and a retention in time."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from lockoutd.errors import KafkaUnavailable
from lockoutd.repartition import Repartitioning
from lockoutd.settings import KafkaSettings
from lockoutd.source.kafka import connection_options
from lockoutd.source.topics import create_topic

log = structlog.get_logger(__name__)


class InternalTopics:
    """Entering makes sure every internal topic of ``plan`` exists; nothing to do on exit.

    A topic that exists is left as it is: its partitions and retention are the operator's (or
    the first instance's) to set.
    """

    def __init__(self, settings: KafkaSettings, plan: Repartitioning, *, max_event_age: float):
        self._settings = settings
        self._plan = plan
        self._max_event_age = max_event_age

    async def __aenter__(self) -> Self:
        if not self._plan.routes:
            return self
        admin = AIOKafkaAdminClient(**connection_options(self._settings))
        try:
            await admin.start()
            await self._ensure(admin)
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot create the internal topics: {exc}") from exc
        finally:
            await admin.close()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def _ensure(self, admin: AIOKafkaAdminClient) -> None:
        existing = set(await admin.list_topics())
        missing = [route for route in self._plan.routes if route.topic not in existing]
        if not missing:
            return
        partitions = self._settings.repartition_partitions or await self._source_partitions(admin)
        for route in missing:
            retention_ms = int(route.retention_seconds(self._max_event_age) * 1000)
            configs = {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}
            # A broker that refuses the retention still gets the topic, with its own default.
            await create_topic(admin, route.topic, partitions=partitions, configs=configs)
            log.info(
                "internal_topic_created",
                topic=route.topic,
                key=list(route.key),
                partitions=partitions,
                retention_ms=retention_ms,
            )

    async def _source_partitions(self, admin: AIOKafkaAdminClient) -> int:
        described = await admin.describe_topics(list(self._settings.topics))
        counts = [len(topic.get("partitions") or ()) for topic in described]
        if not any(counts):
            log.warning(
                "internal_topic_partitions_unknown",
                topics=self._settings.topics,
                note="the source topics do not exist yet: internal topics get one partition; "
                "set kafka.repartition_partitions",
            )
            return 1
        return max(counts)
