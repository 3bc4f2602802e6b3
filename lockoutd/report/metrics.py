"""Prometheus metrics, all prefixed ``lockoutd_`` and in base units.

Label values are bounded (rule names, outcomes, operations): never a user id or an address.
Every series a dashboard plots is created at start so that it exists at 0 before the first event.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lockoutd import __version__

EVENT_RESULTS = ("accepted", "ignored", "invalid")
OUTCOMES = (
    "locked",
    "already_locked",
    "not_lockable",
    "unlocked",
    "not_locked",
    "dry_run",
    "suppressed",
    "allowlisted",
    "stale",
    "unknown_user",
    "failed",
    "reported",
    "not_ours",
)
OUTCOMES_BY_ACTION = {
    "lock": (
        "locked",
        "already_locked",
        "not_lockable",
        "dry_run",
        "suppressed",
        "allowlisted",
        "stale",
        "unknown_user",
        "failed",
    ),
    # A report rule decides and counts; nothing it does can fail or be held back.
    "report": ("reported",),
    # The end of a temporary lock, carried out for the rule that took it.
    "unlock": ("unlocked", "not_locked", "not_ours", "unknown_user", "failed"),
}
"""The outcomes each action can have: the series created at 0 for a rule of that action."""
SCHEDULE_REJECTIONS = ("bad_signature", "malformed", "invalid", "wrong_key")
CHECKPOINT_REJECTIONS = ("bad_signature", "malformed", "invalid")
CHECKPOINT_FAILURES = ("kafka", "too_large")
REBUILD_SOURCES = ("checkpoint", "rewind")
REFUSAL_REASONS = ("unknown_org", "no_permission")
ZITADEL_OPERATIONS = ("lock", "unlock", "get_user", "find_user", "permissions", "token")

# Lock latency spans a fast path (tens of milliseconds) and retries during an outage (minutes).
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The metrics of one daemon, registered on ``registry`` (a fresh one in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "lockoutd_events", "Records consumed, by what became of them.", ["result"], registry=r
        )
        self.unparsed_addresses = Counter(
            "lockoutd_unparsed_addresses",
            "Events counted without their ip, which was no address (kept as ip_unparsed).",
            registry=r,
        )
        self.rule_fired = Counter(
            "lockoutd_rule_fired", "Threshold crossings, by rule.", ["rule"], registry=r
        )
        self.actions = Counter(
            "lockoutd_actions",
            "Decisions carried out, by rule, action and outcome.",
            ["rule", "action", "outcome"],
            registry=r,
        )
        self.zitadel_requests = Counter(
            "lockoutd_zitadel_requests",
            "HTTP requests to ZITADEL, by operation and HTTP status (or 'error').",
            ["operation", "code"],
            registry=r,
        )
        self.zitadel_request_duration = Histogram(
            "lockoutd_zitadel_request_duration_seconds",
            "Duration of one HTTP request to ZITADEL.",
            ["operation"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.lock_latency = Histogram(
            "lockoutd_lock_latency_seconds",
            "From the event time of the event that fired a rule to the lock being confirmed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tracked_keys = Gauge(
            "lockoutd_tracked_keys", "Keys with live window state, by rule.", ["rule"], registry=r
        )
        self.tracked_keys_limit = Gauge(
            "lockoutd_tracked_keys_limit",
            "engine.max_tracked_keys: the most keys this instance keeps windows for, all rules.",
            registry=r,
        )
        self.window_bytes = Gauge(
            "lockoutd_window_bytes",
            "Bytes the windows of a rule hold (keys, times, values, kept events), by rule.",
            ["rule"],
            registry=r,
        )
        self.window_bytes_limit = Gauge(
            "lockoutd_window_bytes_limit",
            "engine.max_window_bytes: the most bytes this instance's windows hold, all rules.",
            registry=r,
        )
        self.evicted_keys = Counter(
            "lockoutd_evicted_keys",
            "Live windows forgotten to stay within engine.max_tracked_keys and "
            "engine.max_window_bytes, by rule.",
            ["rule"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "lockoutd_consumer_lag",
            "Records between the consumer's position and the end of the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.key_mismatches = Counter(
            "lockoutd_key_mismatches",
            "Events counted under a rule key other than their Kafka record key, by rule: that "
            "rule's counts are split across partitions and instances.",
            ["rule"],
            registry=r,
        )
        self.ready = Gauge(
            "lockoutd_ready",
            "1 while the check passes, 0 otherwise (what /readyz answers, for alerting).",
            ["check"],
            registry=r,
        )
        self.build_info = Gauge(
            "lockoutd_build_info",
            "Always 1; the labels say which build runs.",
            ["version"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "lockoutd_dead_lettered",
            "Invalid records forwarded to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.records_failed = Counter(
            "lockoutd_records_failed",
            "Records whose handling raised what nobody foresaw (invalid, reason unexpected).",
            registry=r,
        )
        self.publish_refused = Counter(
            "lockoutd_publish_refused",
            "Records Kafka refused for good (too large, an invalid topic, not authorized), after "
            "any fallback, by topic: logged at error level and skipped, never retried.",
            ["topic"],
            registry=r,
        )
        self.invalid_user_ids = Counter(
            "lockoutd_invalid_user_ids",
            "User ids refused before they reached a ZITADEL request path.",
            registry=r,
        )
        self.zitadel_hidden_users = Counter(
            "lockoutd_zitadel_hidden_users",
            "Login names ZITADEL found nobody for while the service account lacks user.read "
            "where it looked (v2 hides users it may not read): failed, not unknown_user.",
            registry=r,
        )
        self.schedule_rejected = Counter(
            "lockoutd_schedule_entries_rejected",
            "Schedule topic records refused (never acted on), by reason.",
            ["reason"],
            registry=r,
        )
        self.checkpoints_written = Counter(
            "lockoutd_checkpoints_written",
            "Checkpoints of a partition's window state written to the checkpoint topic.",
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "lockoutd_checkpoint_write_failures",
            "Checkpoints not written, by reason (Kafka refused or unreachable, state too large).",
            ["reason"],
            registry=r,
        )
        self.checkpoints_rejected = Counter(
            "lockoutd_checkpoints_rejected",
            "Checkpoint records or checkpoints refused when restoring a partition, by reason.",
            ["reason"],
            registry=r,
        )
        self.partitions_restored = Counter(
            "lockoutd_partitions_restored",
            "Assigned partitions whose windows were rebuilt, by source: a checkpoint and the "
            "records after it, or a rewind by the longest rule window.",
            ["source"],
            registry=r,
        )
        self.rebuild_records = Counter(
            "lockoutd_partition_rebuild_records",
            "Records before the committed offset replayed to rebuild assigned partitions, by "
            "source (as for lockoutd_partitions_restored_total).",
            ["source"],
            registry=r,
        )
        self.lock_budget = Gauge(
            "lockoutd_lock_budget_per_minute",
            "This instance's share of safety.max_locks_per_minute (the whole group's cap), by "
            "the share of the partitions it holds; set at every assignment, 0 before the first.",
            registry=r,
        )
        self.refused_actions = Counter(
            "lockoutd_refused_actions",
            "Actions ZITADEL refused for what their event claims, by reason: unknown_org (an org "
            "ZITADEL does not know) or no_permission (an org where the service account may not "
            "act, though it may in its own): failed, not fatal.",
            ["reason"],
            registry=r,
        )
        self.build_info.labels(version=__version__).set(1)
        for reason in SCHEDULE_REJECTIONS:
            self.schedule_rejected.labels(reason=reason)
        for result in EVENT_RESULTS:
            self.events.labels(result=result)
        for reason in CHECKPOINT_REJECTIONS:
            self.checkpoints_rejected.labels(reason=reason)
        for reason in CHECKPOINT_FAILURES:
            self.checkpoint_failures.labels(reason=reason)
        for source in REBUILD_SOURCES:
            self.partitions_restored.labels(source=source)
            self.rebuild_records.labels(source=source)
        for operation in ZITADEL_OPERATIONS:
            self.zitadel_request_duration.labels(operation=operation)
        for reason in REFUSAL_REASONS:
            self.refused_actions.labels(reason=reason)

    def declare_rules(self, rules: Iterable[tuple[str, str]]) -> None:
        """Create the per-rule series at 0 for ``(rule name, action)`` pairs: the outcomes that
        action can have (a rule with temporary locks also has ``unlock``)."""
        for rule, action in rules:
            self.rule_fired.labels(rule=rule)
            self.tracked_keys.labels(rule=rule)
            self.window_bytes.labels(rule=rule)
            self.evicted_keys.labels(rule=rule)
            for outcome in OUTCOMES_BY_ACTION.get(action, OUTCOMES):
                self.actions.labels(rule=rule, action=action, outcome=outcome)
