"""Many tenants on many replicas: which tenant runs where, and when (docs/tenants.md).

Every replica of the daemon is the same. Each has ``TENANT_WORKERS`` slots. Once a
second the scheduler reads every tenant's due time from Redis
(``{REDIS_PREFIX}t:<tenant>:next_due``, a Unix time; absent = due now), orders the due
tenants most overdue first and, while a slot is free, hands one to a slot. The slot
claims the tenant by taking its cycle lock (utils/locks.py, the single-writer lock of
the hardening work: a TTL, renewed, confirmed before every write) without waiting:

* taken: it runs the tenant's syncs, writes the next due time (now + the tenant's
  interval + a little jitter) and releases the lock;
* held by another replica: that replica runs the tenant; nothing is recorded.

So the engine is Kubernetes (a Deployment restarts dead pods) plus Redis locks for
exclusion plus the schedule in Redis: no replica owns a tenant, any replica runs a
tenant that is due and that nobody holds. A replica that dies holds its locks until
their TTL runs out; then its tenants, overdue, go to whichever replica has a slot
first. Nothing here is a lease or a consensus of its own: the lock is the one every
writer already takes.

A tenant's run occupies one slot and nothing else: a slow or failing tenant never holds
up another one's schedule beyond the slots it occupies (one).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from config.tenants import TenantChanges, scoped
from utils.logger import set_run_id, set_tenant

log = logging.getLogger("fleet")

OVERDUE_GRACE_SECONDS = 60.0
"""A tenant is overdue (sync_tenants_overdue) when its due time passed longer ago than this."""

RETRY_AFTER_ERROR_SECONDS = 30.0
"""A tenant whose lock could not be asked for (Redis unreachable) is tried again after this."""

HELD_ELSEWHERE_RECHECK_SECONDS = 2.0
"""A tenant another replica is running is asked for again after this (it may finish)."""


def due_key(settings: Settings) -> str:
    """The Redis key of a tenant's next due time (``settings`` already scoped)."""
    return f"{settings.redis_prefix}next_due"


def next_interval(settings: Settings, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to the tenant's next scheduled run: its interval plus up to 5 % (at most
    30 s) of jitter, so tenants and replicas do not all start the same second."""
    base = settings.sync_interval_minutes * 60.0
    return base + rng(0.0, min(30.0, base * 0.05))


@dataclass
class Tenant:
    """One tenant in this process: its settings (scoped), syncs, runtime and runner."""

    tenant: str
    settings: Settings
    syncs: tuple[str, ...]
    runtime: Any
    runner: Any
    """A per-tenant daemon (main.TenantDaemon): its own state, triggers and run_cycle."""
    not_before: float = 0.0
    """This replica does not try the tenant before this Unix time (local back-off)."""
    running: bool = False
    retiring: bool = False
    """Removed (or changed): stop after the current run."""
    replacement: Settings | None = None
    """Changed settings, applied once the current run ends."""


@dataclass
class FleetStatus:
    problems: tuple[Any, ...] = ()
    overdue: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    """tenant -> why its runtime could not be built (configuration)."""


class Fleet:
    """The tenants of this process and the scheduler that shares them with the others.

    ``build`` makes a tenant's (runtime, runner) from its scoped settings and syncs;
    ``watcher`` is a config.tenants.TenantWatcher (``poll()`` -> TenantChanges);
    ``redis`` the process's client (due times; every tenant's keys are under its prefix)."""

    def __init__(
        self,
        watcher: Any,
        build: Callable[[str, Settings, tuple[str, ...]], tuple[Any, Any]],
        *,
        redis: Any,
        metrics: Any,
        slots: int,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 5.0,
    ) -> None:
        self.watcher = watcher
        self._build = build
        self.redis = redis
        self.metrics = metrics
        self.slots = max(1, slots)
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._polled_at = -1e18
        self._lock = threading.Lock()
        self.tenants: dict[str, Tenant] = {}
        self._seen: dict[str, float] = {}
        self.status = FleetStatus()
        self._busy = 0
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="tenant")
        metrics.tenant_slots.set(self.slots)
        metrics.tenant_slots_busy.set(0)

    # ---- tenants come and go -------------------------------------------------------
    def refresh(self, *, force: bool = False) -> TenantChanges | None:
        """Poll the tenants folder (every ``poll_seconds``) and apply what changed."""
        now = time.monotonic()
        if not force and now - self._polled_at < self._poll_seconds:
            return None
        self._polled_at = now
        changes = self.watcher.poll(force=force)
        if changes.problems_changed or (force and changes.problems):
            for problem in changes.problems:
                log.error("tenant configuration: %s", problem)
        self.status.problems = changes.problems
        for tenant, settings in changes.added.items():
            self._add(tenant, settings)
        for tenant, settings in changes.changed.items():
            self._change(tenant, settings)
        for tenant in changes.removed:
            self._retire(tenant, "its file was removed or has problems")
        self._gauges()
        return changes

    def _add(self, tenant: str, settings: Settings, *, how: str = "added") -> None:
        from utils.errors import ConfigurationError

        settings = scoped(tenant, settings)
        try:
            syncs = settings.enabled_syncs()
            settings.check(syncs)
            runtime, runner = self._build(tenant, settings, syncs)
        except ConfigurationError as exc:
            # One bad tenant stops only itself: reported in /health and the logs.
            self.status.errors[tenant] = "; ".join(exc.problems)
            log.error("tenant %s not started: %s", tenant, "; ".join(exc.problems), extra={"tenant": tenant})
            return
        self.status.errors.pop(tenant, None)
        with self._lock:
            self.tenants[tenant] = Tenant(tenant, settings, syncs, runtime, runner)
            self._seen.setdefault(tenant, self._clock())
        log.info("tenant %s %s: %s", tenant, how, ", ".join(syncs), extra={"tenant": tenant})

    def _change(self, tenant: str, settings: Settings) -> None:
        with self._lock:
            entry = self.tenants.get(tenant)
            if entry is not None and entry.running:
                entry.replacement = settings  # after the current run
                log.info("tenant %s changed: applied after its current run", tenant, extra={"tenant": tenant})
                return
        if entry is not None:
            self._drop(entry, forget=False)
        self._add(tenant, settings, how="changed")
        self._reschedule(tenant)

    def _retire(self, tenant: str, why: str) -> None:
        with self._lock:
            entry = self.tenants.get(tenant)
            if entry is None:
                self.status.errors.pop(tenant, None)
                return
            if entry.running:
                entry.retiring = True
                log.info("tenant %s removed (%s): stops after its current run", tenant, why, extra={"tenant": tenant})
                return
        self._drop(entry)
        log.info("tenant %s removed (%s)", tenant, why, extra={"tenant": tenant})

    def _drop(self, entry: Tenant, *, forget: bool = True) -> None:
        with self._lock:
            self.tenants.pop(entry.tenant, None)
        try:
            entry.runtime.close()
        except Exception:
            log.warning("closing tenant %s failed", entry.tenant, exc_info=True)
        if forget:  # a changed tenant keeps its series (counters go on from where they were)
            self.metrics.forget_tenant(entry.tenant)

    def _reschedule(self, tenant: str) -> None:
        """A changed tenant whose interval shrank runs by the new interval, not the old
        due time: the stored due time is moved to now + the new interval at the latest."""
        entry = self.get(tenant)
        if entry is None:
            return
        latest = self._clock() + next_interval(entry.settings)
        try:
            raw = self.redis.get(due_key(entry.settings))
            if raw is not None and float(raw) > latest:
                self.redis.set(due_key(entry.settings), repr(latest))
        except Exception as exc:
            log.warning("tenant %s: could not move its due time: %s", tenant, type(exc).__name__)

    # ---- the schedule --------------------------------------------------------------
    def due_times(self) -> dict[str, float | None]:
        """tenant -> its due time in Redis (None: never run, due now). Raises on a Redis error."""
        with self._lock:
            entries = list(self.tenants.values())
        if not entries:
            return {}
        values = self.redis.mget([due_key(e.settings) for e in entries])
        return {e.tenant: (float(v) if v is not None else None) for e, v in zip(entries, values, strict=True)}

    def tick(self) -> None:
        """Hand due tenants to free slots, most overdue first. Never raises."""
        self.refresh()
        now = self._clock()
        try:
            due = self.due_times()
        except Exception as exc:
            log.warning("cannot read the tenants' schedule from Redis: %s", type(exc).__name__)
            due = {}
            with self._lock:
                for entry in self.tenants.values():
                    entry.not_before = max(entry.not_before, now + RETRY_AFTER_ERROR_SECONDS)
        candidates = []
        with self._lock:
            for entry in self.tenants.values():
                if entry.running or entry.retiring:
                    continue
                asked = entry.runner.state.triggers.waiting()  # an operator's request does not wait for the back-off
                if not asked and now < entry.not_before:
                    continue
                when = due.get(entry.tenant)
                if asked or when is None or when <= now:
                    candidates.append((0.0 if when is None else when, entry))
        candidates.sort(key=lambda pair: pair[0])
        for _when, entry in candidates:
            with self._lock:
                if self._busy >= self.slots:
                    break
                self._busy += 1
                entry.running = True
            self.metrics.tenant_slots_busy.set(self._busy)
            self._pool.submit(self._slot, entry)
        self._count_overdue(due, now)

    def _count_overdue(self, due: Mapping[str, float | None], now: float) -> None:
        overdue = 0
        with self._lock:
            entries = list(self.tenants.values())
        for entry in entries:
            when = due.get(entry.tenant)
            if when is None:  # never run: due since this process first saw it
                when = self._seen.get(entry.tenant, now)
            if entry.running or now - when <= OVERDUE_GRACE_SECONDS:
                continue
            try:
                held = entry.runner.cycle_lock_holder()
            except Exception:
                held = None
            if not held:
                overdue += 1
        self.status.overdue = overdue
        self.metrics.tenants_overdue.set(overdue)

    # ---- one slot --------------------------------------------------------------------
    def _slot(self, entry: Tenant) -> None:
        set_tenant(entry.tenant)
        set_run_id(None)
        try:
            self._claim_and_run(entry)
        except Exception:
            log.exception("tenant %s: the slot failed", entry.tenant, extra={"tenant": entry.tenant})
            entry.not_before = self._clock() + RETRY_AFTER_ERROR_SECONDS
        finally:
            with self._lock:
                entry.running = False
                self._busy -= 1
                busy = self._busy
            self.metrics.tenant_slots_busy.set(busy)
            set_tenant(None)
            self._after_run(entry)

    def _claim_and_run(self, entry: Tenant) -> None:
        from utils.errors import SyncError

        runner = entry.runner
        try:
            lock = runner.cycle_lock()
            taken = lock.acquire(blocking=False)
        except SyncError as exc:
            log.warning("tenant %s: cannot take its lock: %s", entry.tenant, exc.message, extra={"tenant": entry.tenant})
            entry.not_before = self._clock() + RETRY_AFTER_ERROR_SECONDS
            return
        if not taken:
            entry.not_before = self._clock() + HELD_ELSEWHERE_RECHECK_SECONDS
            return
        try:
            self._run_claimed(entry, lock)
        finally:
            lock.release()

    def _run_claimed(self, entry: Tenant, lock: Any) -> None:
        runner = entry.runner
        now = self._clock()
        # Read again under the lock: another replica may have run it since the tick.
        try:
            raw = self.redis.get(due_key(entry.settings))
        except Exception:
            raw = None
        scheduled = raw is None or float(raw) <= now
        pending = runner.state.triggers.take(runner.state.syncs)
        syncs = runner.state.syncs if scheduled else runner.not_held(pending)
        if not syncs:
            return
        taken_at = time.monotonic()
        runner.jobs.cycle_started(taken_at, syncs)
        runner.run_cycle(syncs, force=pending.forced, taken_at=taken_at, requested_by=pending.requested_by, held=lock)
        if scheduled or tuple(syncs) == tuple(runner.state.syncs):
            next_at = self._clock() + next_interval(entry.settings)
            runner.state.next_run_at = next_at
            entry.not_before = next_at - 1.0
            try:
                self.redis.set(due_key(entry.settings), repr(next_at))
            except Exception as exc:  # the local back-off keeps this replica from re-running it
                log.warning("tenant %s: could not store its next due time: %s", entry.tenant, type(exc).__name__)

    def _after_run(self, entry: Tenant) -> None:
        if entry.retiring:
            self._drop(entry)
            log.info("tenant %s stopped after its run", entry.tenant, extra={"tenant": entry.tenant})
        elif entry.replacement is not None:
            replacement, entry.replacement = entry.replacement, None
            self._drop(entry, forget=False)
            self._add(entry.tenant, replacement, how="changed")
            self._reschedule(entry.tenant)
        self._gauges()

    # ---- reporting -----------------------------------------------------------------
    def _gauges(self) -> None:
        with self._lock:
            active = len(self.tenants)
        invalid = len({getattr(p, "file", str(p)) for p in self.status.problems}) + len(self.status.errors)
        self.metrics.tenants.labels("active").set(active)
        self.metrics.tenants.labels("invalid").set(invalid)

    def get(self, tenant: str) -> Tenant | None:
        with self._lock:
            return self.tenants.get(tenant)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.tenants)

    def busy(self) -> int:
        with self._lock:
            return self._busy

    def close(self, timeout: float) -> None:
        """Stop taking work; wait up to ``timeout`` for the running tenants."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            entries = list(self.tenants.values())
        for entry in entries:
            try:
                entry.runtime.close()
            except Exception:
                log.debug("closing tenant %s failed", entry.tenant, exc_info=True)
