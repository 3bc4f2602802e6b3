"""The Prometheus configuration, the alert rules and the Grafana dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import DEPLOY, exported_metrics, metrics_in, promtool, run

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "lockoutd.json"


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_targets() -> list[tuple[str, str]]:
    """``(panel title, expression)`` for every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_promtool_accepts_the_alert_rules() -> None:
    """``promtool check rules`` finds the alert file valid."""
    result = run(promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_prometheus_configuration() -> None:
    """``promtool check config`` finds prometheus.yml and the rule files it names valid."""
    result = run(promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_the_story_it_is_written_for() -> None:
    """``promtool test rules`` plays series per alert and checks when and how it fires."""
    result = run(promtool(), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_cover_what_operators_must_hear_about() -> None:
    """Suppressed locks, ZITADEL refusing lockoutd's token or what events claim, growing lag and
    not being ready alert. A 403 is no token problem: forged events get them too."""
    expressions = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    assert 'outcome="suppressed"' in expressions["LockoutdLocksSuppressed"]
    assert 'code="401"' in expressions["LockoutdZitadelAuthenticationFailing"]
    assert "403" not in expressions["LockoutdZitadelAuthenticationFailing"]
    assert "lockoutd_refused_actions_total" in expressions["LockoutdActionsRefused"]
    assert "lockoutd_consumer_lag" in expressions["LockoutdConsumerLagGrowing"]
    assert "kube_pod_container_status_ready" in expressions["LockoutdNotReady"]
    assert "up{" in expressions["LockoutdDown"]
    assert "lockoutd_evicted_keys_total" in expressions["LockoutdTrackedKeysEvicted"]


def test_alerts_and_dashboard_read_only_metrics_lockoutd_exports() -> None:
    """Every ``lockoutd_*`` name in an alert or a dashboard query is a series lockoutd serves."""
    exported = exported_metrics()
    used = {
        name: where
        for where, expression in [
            *((rule["alert"], rule["expr"]) for rule in _alert_rules()),
            *_dashboard_targets(),
        ]
        for name in metrics_in(expression)
    }
    assert used, "no lockoutd metric is used at all"
    assert {name: where for name, where in used.items() if name not in exported} == {}


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    """Events per second, rules fired, actions by outcome, lock latency, ZITADEL errors, lag."""
    queries = "\n".join(expression for _, expression in _dashboard_targets())
    for needed in (
        "rate(lockoutd_events_total",
        "lockoutd_rule_fired_total",
        "sum by (outcome) (increase(lockoutd_actions_total",
        "histogram_quantile(0.95, sum by (le) (rate(lockoutd_lock_latency_seconds_bucket",
        'lockoutd_zitadel_requests_total{job=~"$job",code!~"2.."}',
        "lockoutd_consumer_lag",
    ):
        assert needed in queries


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, passes ``promtool check rules``."""
    rules = [
        {
            "record": f"dashboard:query_{number}",
            "expr": expression.replace("$__rate_interval", "5m").replace("$job", ".*"),
        }
        for number, (_, expression) in enumerate(_dashboard_targets())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_finds_the_data_source_and_the_dashboard() -> None:
    """The provisioned data source is the one the dashboard names, at Prometheus's address."""
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    [source] = datasources["datasources"]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "lockoutd.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("job", ["lockoutd", "lockoutd-ingest"])
def test_prometheus_scrapes_the_metrics_port_of_both_processes(job: str) -> None:
    """The compose stack's scrape targets are the services' ``metrics.listen`` port."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    [scrape] = [c for c in config["scrape_configs"] if c["job_name"] == job]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == [f"{job}:9464"]
