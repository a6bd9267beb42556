"""The one place where settings are wired to adapters.

``build_runtime(settings)`` creates the clients the enabled syncs need (nothing is
built at import time, nothing unused is built), and ``new_context`` makes the per-run
SyncContext. Tests build SyncContext themselves with fakes instead.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import ALL_SYNCS, Settings
from services.data_manager import NoTarget, TargetCache
from services.event_manager import EventManager
from services.http import RequestStats, SharedLimiters
from sync.base import COUNT_KEYS, SyncContext
from utils.metrics import Metrics

if TYPE_CHECKING:
    import redis

    from services.graph_api import GraphAPI
    from services.graph_delta import DeltaUserDirectory
    from services.safetyamp_api import SafetyAmpAPI
    from services.samsara_api import SamsaraAPI
    from services.samsara_read import SamsaraReadStore
    from services.scim_api import ScimAPI
    from services.target_shadow import ShadowStore
    from services.viewpoint_api import ViewpointAPI
    from sync.roster_model import CursorStore, RosterSource
    from utils.circuit_breaker import CircuitBreaker
    from utils.control import ControlStore
    from utils.failed_sync_tracker import ResilientTracker, TrackerBase
    from utils.quarantine import Quarantine

log = logging.getLogger("bootstrap")

SERVICES = ("safetyamp", "samsara", "graph", "viewpoint", "oneroster", "scim")


@dataclass
class Runtime:
    """Long-lived adapters (one per process; the daemon reuses them across runs)."""

    settings: Settings
    metrics: Metrics
    stats: RequestStats
    tracker: TrackerBase | ResilientTracker
    redis: redis.Redis | None = None
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    quarantine: Quarantine | None = None
    control: ControlStore | None = None
    """Pauses, held deactivations, audit, run history."""
    safetyamp: SafetyAmpAPI | None = None
    viewpoint: ViewpointAPI | None = None
    graph: GraphAPI | DeltaUserDirectory | None = None  # the delta directory with GRAPH_DELTA
    samsara: SamsaraAPI | None = None
    oneroster: RosterSource | None = None  # rosters (issue 4): the REST API or a CSV drop
    scim: ScimAPI | None = None
    roster_cursor: CursorStore | None = None
    target_shadow: ShadowStore | None = None
    """The SafetyAmp target shadow (TARGET_SHADOW; services/target_shadow.py)."""
    samsara_read: SamsaraReadStore | None = None
    """The saved Samsara read (with SAMSARA_WEBHOOK_SECRET; services/samsara_read.py)."""
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        engine = getattr(self.viewpoint, "engine", None)
        if engine is not None:
            engine.dispose()


def build_runtime(
    settings: Settings,
    syncs: tuple[str, ...],
    *,
    metrics: Metrics | None = None,
    tracker: Any = None,
    redis_client: Any = None,
    limiters: SharedLimiters | None = None,
) -> Runtime:
    """Adapters for ``syncs`` only (a vehicles-only run needs no database). One Redis
    client (``utils.redis_client.make_redis``: lazy, no connection until first use)
    serves breakers, locks, quarantine, operator state and the roster cursor; the
    tracker makes its own the same way (it degrades to memory on its own)."""
    from utils.circuit_breaker import build_breakers
    from utils.control import ControlStore
    from utils.quarantine import Quarantine
    from utils.redis_client import make_redis

    metrics = metrics or Metrics()
    stats = RequestStats(metrics=metrics)
    if redis_client is None:
        redis_client = make_redis(settings.redis_url)
    if tracker is None:
        from utils.failed_sync_tracker import build_tracker

        tracker = build_tracker(settings.redis_url, settings.redis_prefix)
    rt = Runtime(settings=settings, metrics=metrics, stats=stats, tracker=tracker, redis=redis_client)
    rt.breakers = build_breakers(settings, redis_client, metrics)
    # Zero-valued series from the start, so dashboards and alerts see them before the
    # first throttle or guard trip (a missing series reads as "No data", not 0).
    metrics.initialise(syncs, SERVICES, settings.sync_interval_minutes * 60, actions=COUNT_KEYS)
    rt.quarantine = Quarantine(
        redis_client, prefix=settings.redis_prefix, interval_seconds=settings.sync_interval_minutes * 60, metrics=metrics
    )
    rt.control = ControlStore(
        redis_client,
        prefix=settings.redis_prefix,
        metrics=metrics,
        approval_ttl_seconds=settings.console_approval_ttl_minutes * 60,
        audit_retention_days=settings.audit_retention_days,
        run_history_length=settings.run_history_length,
    )
    _build_adapters(rt, syncs, limiters)
    return rt


def _build_adapters(rt: Runtime, syncs: tuple[str, ...], limiters: SharedLimiters | None = None) -> None:
    """The outside systems' adapters ``syncs`` need, each with its circuit breaker.
    ``limiters`` (a process serving many tenants): tenants with the same target account
    (URL and token) share one rate budget."""
    settings, stats = rt.settings, rt.stats
    safetyamp_syncs = {"departments", "jobs", "titles", "employees", "vehicles"}
    if safetyamp_syncs & set(syncs):
        from services.safetyamp_api import build_safetyamp, safetyamp_limiter

        limiter = None
        if limiters is not None and settings.safetyamp_token is not None:
            limiter = limiters.get(
                "safetyamp",
                settings.safetyamp_url,
                settings.safetyamp_token.get_secret_value(),
                lambda: safetyamp_limiter(settings),
            )
        rt.safetyamp = build_safetyamp(settings, stats, limiter=limiter, breaker=rt.breakers.get("safetyamp"))
        from services.target_shadow import build_shadow_store

        rt.target_shadow = build_shadow_store(settings, rt.redis)
    if {"departments", "jobs", "titles", "employees"} & set(syncs):
        from services.viewpoint_api import build_viewpoint

        rt.viewpoint = build_viewpoint(settings)
    if "employees" in syncs and settings.graph_configured:
        from services.graph_api import build_graph

        rt.graph = build_graph(settings, stats, breaker=rt.breakers.get("graph"))
        if settings.graph_delta:  # issue 14: Graph delta query, its state kept in Redis
            from services.graph_delta import build_graph_directory

            rt.graph = build_graph_directory(settings, rt.graph, rt.redis)
    if "vehicles" in syncs:
        from services.samsara_api import build_samsara

        rt.samsara = build_samsara(settings, stats, breaker=rt.breakers.get("samsara"))
        from services.samsara_read import build_samsara_read

        rt.samsara_read = build_samsara_read(settings, rt.redis)
    if "rosters" in syncs:  # issue 4: OneRoster (REST or CSV) -> SCIM
        from services.oneroster_api import RedisCursorStore, build_oneroster, roster_scope
        from services.scim_api import build_scim, scim_limiter

        rt.oneroster = build_oneroster(settings, stats, breaker=rt.breakers.get("oneroster"))
        limiter = None
        if limiters is not None and settings.scim_token is not None and settings.scim_url:
            limiter = limiters.get(
                "scim", str(settings.scim_url), settings.scim_token.get_secret_value(), lambda: scim_limiter(settings)
            )
        rt.scim = build_scim(settings, stats, limiter=limiter, breaker=rt.breakers.get("scim"))
        rt.roster_cursor = RedisCursorStore(rt.redis, settings.redis_prefix, scope=roster_scope(settings))


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def write_settle_seconds(rt: Runtime) -> float:
    """The longest a write request may take to land after its lock check: the write
    clients' (SafetyAmp, SCIM) connect + read timeout, plus a second. A runner taking
    over a lock that was lost, not released, waits this long (plus the holder's grace)
    before it reads the target (utils/locks.py)."""
    from utils.locks import request_bound_seconds

    clients = (getattr(adapter, "http", None) for adapter in (rt.safetyamp, rt.scim))
    return max([request_bound_seconds(getattr(c, "timeout", None)) for c in clients if c is not None], default=0.0)


def lock_factory(rt: Runtime) -> Any:
    """name -> a fresh lock for that sync (Redis, or a file lock when allowed)."""
    from utils.locks import build_lock

    settle = write_settle_seconds(rt)

    def make(name: str) -> Any:
        return build_lock(rt.settings, f"sync-{name}", rt.redis, settle_seconds=settle, stop=rt.stop)

    return make


def new_context(
    rt: Runtime,
    *,
    run_id: str,
    dry_run: bool = False,
    progress: Any = None,
    full: bool = False,
    force: Iterable[str] = (),
    runner_kind: str = "cli",
    only_key: str | None = None,
    requested_by: Mapping[str, str] | None = None,
) -> SyncContext:
    """A fresh per-run context: new target cache (each collection read once per run)."""
    from utils.failed_sync_tracker import RunTracker

    s = rt.settings
    events = EventManager(s.output_dir, run_id, secrets=s.secret_values())
    graph: Any = rt.graph
    forced_full = getattr(graph, "forced_full", None)
    if full and forced_full is not None:  # --full: a full Graph delta round too
        graph = forced_full()
    return SyncContext(
        settings=s,
        targets=TargetCache(rt.safetyamp, rt.target_shadow) if rt.safetyamp is not None else NoTarget(),
        tracker=RunTracker(rt.tracker),  # one read of the tracked records per sync, not one per record
        events=events,
        metrics=rt.metrics,
        today=datetime.now(UTC).date(),
        viewpoint=rt.viewpoint,
        graph=graph,
        samsara=rt.samsara,
        samsara_read=rt.samsara_read,
        dry_run=dry_run,
        stop=rt.stop,
        progress=progress,
        max_workers=s.safetyamp_max_concurrency,
        oneroster=rt.oneroster,
        scim=rt.scim,
        roster_cursor=rt.roster_cursor,
        full=full,
        locks=lock_factory(rt),
        quarantine=rt.quarantine,
        control=rt.control,
        forced=frozenset(force),
        runner_kind=runner_kind,
        only_key=only_key,
        requested_by=dict(requested_by or {}),
    )


def sandbox_overrides(endpoints: Mapping[str, Any], sandbox_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Settings that point every adapter at the sandbox (``--sandbox`` of main.py and
    sync_batch.py; ``endpoints`` is the sandbox's port file). Connection settings are
    forced (a real SAFETYAMP_URL in the environment must never be hit by a sandbox run);
    tuning settings get fast defaults that the environment may still override."""
    has_rosters = "oneroster" in endpoints and "scim" in endpoints
    digest = hashlib.sha256(str(sandbox_dir.resolve()).encode()).hexdigest()[:10]
    forced = _sandbox_connections(endpoints, has_rosters)
    # The emulators get new ports at every start: the folder, not the URL, is the account.
    forced["TARGET_SHADOW_SCOPE"] = f"sandbox-{digest}"
    forced["SAMSARA_READ_SCOPE"] = f"sandbox-{digest}"
    if has_rosters:
        forced["ROSTER_CURSOR_SCOPE"] = f"sandbox-{digest}"
    defaults = _sandbox_tuning(endpoints, has_rosters, digest)
    out = {k: v for k, v in defaults.items() if k not in environ}
    out.update(forced)
    return out


def _sandbox_connections(endpoints: Mapping[str, Any], has_rosters: bool) -> dict[str, str]:
    sa, sam, gr, vp = endpoints["safetyamp"], endpoints["samsara"], endpoints["graph"], endpoints["viewpoint"]
    forced = {
        "SAFETYAMP_URL": sa["url"],
        "SAFETYAMP_TOKEN": sa["token"],
        "SAFETYAMP_FQDN": sa["fqdn"],
        "SAMSARA_URL": sam["url"],
        "SAMSARA_API_KEY": sam["api_key"],
        "MS_GRAPH_AUTHORITY_URL": gr["authority_url"],
        "MS_GRAPH_URL": gr["graph_url"],
        "MS_GRAPH_TENANT_ID": gr["tenant_id"],
        "MS_GRAPH_CLIENT_ID": gr["client_id"],
        "MS_GRAPH_CLIENT_SECRET": gr["client_secret"],
        "MS_GRAPH_CA_BUNDLE": gr["ca_bundle"],
        "VIEWPOINT_DB_URL": vp["url"],
    }
    if has_rosters:  # rosters (issue 4): the OneRoster emulator and scim2-server
        ors, sc = endpoints["oneroster"], endpoints["scim"]
        forced.update({
            "ONEROSTER_URL": ors["url"],
            "ONEROSTER_CLIENT_ID": ors["client_id"],
            "ONEROSTER_CLIENT_SECRET": ors["client_secret"],
            "ONEROSTER_TOKEN_URL": ors["token_url"],
            "SCIM_URL": sc["url"],
            "SCIM_TOKEN": sc["token"],
        })  # fmt: skip
    return forced


def _sandbox_tuning(endpoints: Mapping[str, Any], has_rosters: bool, digest: str) -> dict[str, str]:
    defaults = {
        "SYNC_TYPES": ",".join(s for s in ALL_SYNCS if has_rosters or s != "rosters"),
        "SAFETYAMP_RATE_LIMIT_PER_MINUTE": "60000",
        "SAFETYAMP_MAX_CONCURRENCY": "8",
        "SAMSARA_RATE_LIMIT_PER_SECOND": "1000",
        "REDIS_PREFIX": f"sandbox-{digest}:",
        "HTTP_MAX_RETRY_SECONDS": "30",
        # The emulators answer in milliseconds (seconds under latency faults). A short
        # timeout also keeps short the wait of a runner that takes a lock on a Redis that
        # just started (utils/locks.py): about twice the timeout.
        "SAFETYAMP_TIMEOUT_SECONDS": "5",
        # Without Redis the sandbox still works: file locks exclude runs on this machine.
        "LOCK_REQUIRED": "false",
    }
    page_cap = endpoints["safetyamp"].get("max_page_size")
    if page_cap:  # the emulator's documented cap (docs/emulated-apis.md): short pages end a read at once
        defaults["SAFETYAMP_MAX_PAGE_SIZE"] = str(page_cap)
    if has_rosters:
        defaults.update({
            "ONEROSTER_VERSION": endpoints["oneroster"].get("version", "1.2"),
            "ONEROSTER_AUTH": "oauth2",
            "ONEROSTER_RATE_LIMIT_PER_SECOND": "1000",
            "SCIM_RATE_LIMIT_PER_SECOND": "1000",
            "SCIM_MAX_CONCURRENCY": "8",
            "SCIM_TIMEOUT_SECONDS": "5",
        })  # fmt: skip
    return defaults
