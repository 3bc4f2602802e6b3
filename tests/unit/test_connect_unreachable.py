"""``check --connect`` when nothing answers: one FAIL line each, saying what to check."""

from __future__ import annotations

from pathlib import Path

from lockoutd.connect import kafka_findings, zitadel_findings
from lockoutd.settings import KafkaSettings, Settings, ZitadelSettings
from lockoutd.testing.broker import free_port


async def test_an_unreachable_kafka_is_one_fail_naming_the_setting() -> None:
    findings = await kafka_findings(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    assert [finding.ok for finding in findings] == [False]
    assert "cannot reach Kafka" in str(findings[0])
    assert "kafka.bootstrap_servers" in str(findings[0])


async def test_an_unreachable_zitadel_is_one_fail(tmp_path: Path) -> None:
    pat = tmp_path / "pat"
    pat.write_text("token\n")
    zitadel = ZitadelSettings(base_url=f"http://127.0.0.1:{free_port()}", pat_file=pat, timeout=0.5)
    findings = await zitadel_findings(Settings(zitadel=zitadel))
    assert [finding.ok for finding in findings] == [False]
    assert str(findings[0]).startswith(f"FAIL: ZITADEL at {zitadel.base_url}")
