"""Prometheus metrics with the exact names docs/metrics.md lists (dashboards and alerts rely on them).

One ``Metrics`` object owns a registry; the daemon serves it on /metrics and
sync_batch may push it. Tests build their own instance, so nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """The product's metrics, all registered on ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_runs = Counter("sync_runs_total", "Sync runs by final status.", ["sync", "status"], registry=r)
        self.sync_records = Counter("sync_records_total", "Records handled by a sync, by action.", ["sync", "action"], registry=r)
        self.sync_duration = Histogram(
            "sync_duration_seconds",
            "Wall time of one sync run.",
            ["sync"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
            registry=r,
        )
        self.last_success = Gauge(
            "sync_last_success_timestamp_seconds", "Unix time of the last successful run.", ["sync"], registry=r
        )
        self.failed_records = Gauge("sync_failed_records", "Records currently tracked as failing.", ["sync"], registry=r)
        self.external_requests = Counter(
            "external_requests_total",
            "HTTP requests sent to outside systems (each attempt).",
            ["service", "method", "status"],
            registry=r,
        )
        self.external_duration = Histogram(
            "external_request_duration_seconds",
            "Latency of requests to outside systems.",
            ["service"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state", "Circuit breaker per service: 0 closed, 1 half-open, 2 open.", ["service"], registry=r
        )
        self.rate_limit_wait = Counter(
            "rate_limit_wait_seconds_total",
            "Seconds spent waiting for a rate limit (own limiter and Retry-After).",
            ["service"],
            registry=r,
        )
        self.deactivation_guard = Counter(
            "sync_deactivation_guard_tripped_total",
            "Runs whose deactivations were refused by the guard.",
            ["sync"],
            registry=r,
        )
        self.interval = Gauge(
            "sync_interval_seconds", "Configured seconds between runs (the staleness alert's yardstick).", ["sync"], registry=r
        )
        self.quarantined = Gauge("sync_quarantined", "1 while a sync is quarantined after a failing run.", ["sync"], registry=r)
        self.paused = Gauge("sync_paused", "1 while an operator has paused the sync.", ["sync"], registry=r)
        self.change_log_failures = Counter(
            "sync_change_log_write_failures_total",
            "Runs stopped because their change log under OUTPUT_DIR could not be written (disk full, read-only).",
            ["sync"],
            registry=r,
        )

    def initialise(
        self,
        syncs: Iterable[str],
        services: Iterable[str],
        interval_seconds: float,
        *,
        actions: Iterable[str],
    ) -> None:
        """Create every series at 0 so ``increase()`` sees a counter's first step and a
        panel shows 0, not "No data", before anything has happened. ``actions``: the
        record counts a run reports (``sync.base.COUNT_KEYS``, passed down: metrics sits
        below the engine and does not import it)."""
        actions = tuple(actions)

        for sync in syncs:
            for status in ("success", "partial", "failed", "skipped"):
                self.sync_runs.labels(sync, status)
            for action in actions:
                self.sync_records.labels(sync, action)
            self.deactivation_guard.labels(sync)
            self.quarantined.labels(sync)
            self.paused.labels(sync)
            self.change_log_failures.labels(sync)
            self.interval.labels(sync).set(interval_seconds)
        for service in services:
            self.rate_limit_wait.labels(service)

    def observe_request(self, service: str, method: str, status: int | str, seconds: float) -> None:
        self.external_requests.labels(service, method.upper(), str(status)).inc()
        self.external_duration.labels(service).observe(seconds)

    def add_rate_limit_wait(self, service: str, seconds: float) -> None:
        if seconds > 0:
            self.rate_limit_wait.labels(service).inc(seconds)
