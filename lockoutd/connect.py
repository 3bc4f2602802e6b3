"""``lockoutd check --connect``: reach Kafka and ZITADEL as the daemon would, acting on nobody.

Kafka: the cluster answers and has every topic lockoutd reads or writes. ZITADEL: the credential
is accepted, and the account holds the permissions locking needs (:mod:`lockoutd.act.account`).
One :class:`~lockoutd.act.account.Finding` a line; any ``FAIL`` makes the command exit 1.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from lockoutd.act.account import Finding, account_findings
from lockoutd.act.zitadel import ZitadelClient
from lockoutd.errors import ConfigError, ZitadelError
from lockoutd.report.metrics import Metrics
from lockoutd.settings import KafkaSettings, Settings
from lockoutd.source.kafka import connection_options

_KAFKA_TIMEOUT_SECONDS = 20.0


async def connect_findings(settings: Settings) -> list[Finding]:
    """Kafka's findings, then ZITADEL's."""
    return [*await kafka_findings(settings.kafka), *await zitadel_findings(settings)]


def needed_topics(settings: KafkaSettings) -> dict[str, str]:
    """Each topic lockoutd uses, with the setting that names it."""
    topics = {topic: "kafka.topics" for topic in settings.topics}
    for setting in ("decisions_topic", "dead_letter_topic", "schedule_topic"):
        if (topic := getattr(settings, setting)) is not None:
            topics.setdefault(topic, f"kafka.{setting}")
    return topics


async def kafka_findings(settings: KafkaSettings) -> list[Finding]:
    where = f"Kafka at {settings.bootstrap_servers}"
    try:
        present = await asyncio.wait_for(_topics(settings), _KAFKA_TIMEOUT_SECONDS)
    except (KafkaError, OSError, TimeoutError) as exc:
        return [
            Finding(
                False,
                f"cannot reach {where} ({type(exc).__name__}: {exc}): check "
                "kafka.bootstrap_servers, the network and kafka.security_protocol",
            )
        ]
    except ConfigError as exc:
        return [Finding(False, problem) for problem in exc.problems]
    needed = needed_topics(settings)
    found = [topic for topic in needed if topic in present]
    missing = [topic for topic in needed if topic not in present]
    findings = [Finding(True, f"{where} answers; topics present: {', '.join(found) or 'none'}")]
    if missing:
        named = ", ".join(f"{topic} ({needed[topic]})" for topic in missing)
        findings.append(
            Finding(False, f"{where} has no topic {named}: create it, or fix the setting")
        )
    return findings


async def _topics(settings: KafkaSettings) -> set[str]:
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        **connection_options(settings),
    )
    try:
        await consumer.start()
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def zitadel_findings(settings: Settings) -> list[Finding]:
    zitadel = settings.zitadel
    # A check answers within seconds: two tries, not the daemon's minute of patience.
    quick = zitadel.model_copy(
        update={"retry_attempts": 2, "retry_timeout": max(2 * zitadel.timeout, 5.0)}
    )
    try:
        async with ZitadelClient(quick, metrics=Metrics()) as client:
            return await account_findings(client, quick)
    except ZitadelError as exc:
        return [Finding(False, f"ZITADEL at {zitadel.base_url}: {exc}")]
