"""Prometheus metrics with the exact names docs/metrics.md lists (dashboards and alerts rely on them).

One ``Metrics`` object owns a registry; the daemon serves it on /metrics and
sync_batch may push it. Tests build their own instance, so nothing is global.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

TENANT_LABEL = "tenant"


class _TenantBound:
    """One metric seen from one tenant: ``labels(...)`` puts the tenant first, so the
    code that records a metric is the same with and without tenants."""

    __slots__ = ("_metric", "_tenant")

    def __init__(self, metric: Any, tenant: str) -> None:
        self._metric = metric
        self._tenant = tenant

    def labels(self, *values: str) -> Any:
        return self._metric.labels(self._tenant, *values)


class Metrics:
    """The product's metrics, all registered on ``self.registry``.

    ``tenants=True`` (TENANTS_DIR is set): every metric gains a leading ``tenant``
    label and each tenant records through ``for_tenant(id)``, a view on the same
    registry. Without it the label is absent and the series are those of a
    single-tenant deployment, unchanged."""

    PER_TENANT = (
        "sync_runs",
        "sync_records",
        "sync_duration",
        "last_success",
        "failed_records",
        "external_requests",
        "external_duration",
        "breaker_state",
        "rate_limit_wait",
        "deactivation_guard",
        "interval",
        "quarantined",
        "paused",
        "change_log_failures",
        "samsara_webhook_events",
    )

    def __init__(self, registry: CollectorRegistry | None = None, *, tenants: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        self.tenant: str | None = None
        r = self.registry
        t = [TENANT_LABEL] if tenants else []
        self.multi_tenant = tenants
        self.sync_runs = Counter("sync_runs_total", "Sync runs by final status.", [*t, "sync", "status"], registry=r)
        self.sync_records = Counter(
            "sync_records_total", "Records handled by a sync, by action.", [*t, "sync", "action"], registry=r
        )
        self.sync_duration = Histogram(
            "sync_duration_seconds",
            "Wall time of one sync run.",
            [*t, "sync"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
            registry=r,
        )
        self.last_success = Gauge(
            "sync_last_success_timestamp_seconds", "Unix time of the last successful run.", [*t, "sync"], registry=r
        )
        self.failed_records = Gauge("sync_failed_records", "Records currently tracked as failing.", [*t, "sync"], registry=r)
        self._service_metrics(r, t)
        self.deactivation_guard = Counter(
            "sync_deactivation_guard_tripped_total",
            "Runs whose deactivations were refused by the guard.",
            [*t, "sync"],
            registry=r,
        )
        self.interval = Gauge(
            "sync_interval_seconds",
            "Configured seconds between runs (the staleness alert's yardstick).",
            [*t, "sync"],
            registry=r,
        )
        self.quarantined = Gauge(
            "sync_quarantined", "1 while a sync is quarantined after a failing run.", [*t, "sync"], registry=r
        )
        self.paused = Gauge("sync_paused", "1 while an operator has paused the sync.", [*t, "sync"], registry=r)
        self.change_log_failures = Counter(
            "sync_change_log_write_failures_total",
            "Runs stopped because their change log under OUTPUT_DIR could not be written (disk full, read-only).",
            [*t, "sync"],
            registry=r,
        )
        self.samsara_webhook_events = Counter(
            "samsara_webhook_events_total",
            "Samsara webhook requests by event type (documented types; other, missing, none) and outcome "
            "(read, ignored, ping, refused, invalid).",
            [*t, "event_type", "outcome"],
            registry=r,
        )
        if tenants:  # without TENANTS_DIR the series are exactly those of before
            self._process_metrics(r)

    def _service_metrics(self, r: CollectorRegistry, t: list[str]) -> None:
        """Requests to outside systems, their breakers and rate-limit waits."""
        self.external_requests = Counter(
            "external_requests_total",
            "HTTP requests sent to outside systems (each attempt).",
            [*t, "service", "method", "status"],
            registry=r,
        )
        self.external_duration = Histogram(
            "external_request_duration_seconds",
            "Latency of requests to outside systems.",
            [*t, "service"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state", "Circuit breaker per service: 0 closed, 1 half-open, 2 open.", [*t, "service"], registry=r
        )
        self.rate_limit_wait = Counter(
            "rate_limit_wait_seconds_total",
            "Seconds spent waiting for a rate limit (own limiter and Retry-After).",
            [*t, "service"],
            registry=r,
        )

    def _process_metrics(self, r: CollectorRegistry) -> None:
        """The process's tenants (docs/tenants.md): no tenant label; only with tenants."""
        self.tenants = Gauge(
            "sync_tenants", "Tenants of this process: active (loaded) and invalid (files with problems).", ["state"], registry=r
        )
        self.tenants_overdue = Gauge(
            "sync_tenants_overdue",
            "Tenants due more than 60 s ago that no replica is running (read from Redis: the same on every replica).",
            registry=r,
        )
        self.tenant_slots = Gauge("sync_tenant_slots", "Tenant worker slots of this replica.", registry=r)
        self.tenant_slots_busy = Gauge("sync_tenant_slots_busy", "Tenant worker slots of this replica in use.", registry=r)

    def for_tenant(self, tenant: str) -> Metrics:
        """The metrics as ``tenant`` records them (the same registry): every per-tenant
        metric takes the tenant as its first label. Without tenants, ``self``."""
        if not self.multi_tenant:
            return self
        view = copy.copy(self)
        view.tenant = tenant
        for name in self.PER_TENANT:
            setattr(view, name, _TenantBound(getattr(self, name), tenant))
        return view

    def forget_tenant(self, tenant: str) -> None:
        """Drop a removed tenant's series (its gauges would otherwise report forever)."""
        if not self.multi_tenant:
            return
        for name in self.PER_TENANT:
            metric = getattr(self, name)
            metric = getattr(metric, "_metric", metric)
            for values in list(metric._metrics):
                if values and values[0] == tenant:
                    metric.remove(*values)

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
