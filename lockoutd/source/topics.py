"""Creating the topics lockoutd owns (schedule, checkpoints, internal topics) on any broker."""

from __future__ import annotations

import contextlib

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


async def create_topic(
    admin: AIOKafkaAdminClient, topic: str, *, partitions: int, configs: dict[str, str]
) -> None:
    """Create ``topic`` with ``configs``; one another instance created meanwhile is left as it is.

    A broker that refuses the configs (one that knows no compaction, say) still gets the topic,
    with its own defaults, and ``topic_configs_refused`` says which were not set: lockoutd works
    on such a topic, it only keeps more (or fewer) records than asked.
    """
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return
    except KafkaError as exc:
        log.warning("topic_configs_refused", topic=topic, configs=configs, error=str(exc))
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1)])
