"""Runs the enabled syncs of one cycle in dependency order and records their metrics.

Shared by sync_batch.py (once) and main.py's worker (every interval). A failing sync
does not stop the ones after it, except that a sync whose dependency failed still
runs against whatever the target holds (read fresh, or from a target shadow that holds
every write acknowledged) and says so.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.base import COUNT_KEYS, RunResult, SyncContext
from sync.registry import SYNCS
from utils.errors import LockLostError, SyncError
from utils.locks import Lock, WriteFence, fenced
from utils.logger import set_run_id
from utils.timefmt import parse_iso

log = logging.getLogger("sync.runner")


def run_syncs(
    ctx: SyncContext, names: Iterable[str], *, factories: dict[str, Any] | None = None, held: Lock | None = None
) -> list[RunResult]:
    """Run each sync in ``names`` (already in run order); never raises for a sync's failure.

    ``held``: the cycle lock, already taken by the caller (the tenant scheduler claims a
    tenant by taking it) and released by the caller."""
    factories = factories or SYNCS
    names = list(names)
    set_run_id(getattr(ctx.events, "run_id", None))
    if held is not None:
        return _run_all(ctx, names, factories, held)
    cycle = None
    # A one-record run (ctx.only_key, the console's "sync this record now") takes its
    # sync's lock only: holding the cycle lock for it would make a CronJob starting
    # meanwhile skip every sync, not just this one.
    if ctx.locks is not None and not ctx.dry_run and ctx.only_key is None:
        # One runner per cycle: the daemon and a CronJob started the same minute must not
        # interleave (per-sync locks alone would let them alternate sync by sync). The
        # acquire returns once a previous holder's writes can no longer land (it waits
        # if that holder lost the lock instead of releasing it): everything this cycle
        # reads from the targets comes after it.
        try:
            cycle = ctx.locks("cycle")
            taken = cycle.acquire(blocking=False)
        except SyncError as exc:
            return _reported(ctx, [RunResult(n, status="failed", error=exc.message) for n in names])
        if not taken:
            holder = cycle.holder() or {}
            who = f"{holder.get('host', '?')} pid {holder.get('pid', '?')} since {holder.get('since', '?')}"
            log.info("run skipped: another runner holds the cycle lock (%s)", who)
            return _reported(ctx, [RunResult(n, status="skipped", error=f"another runner is syncing ({who})") for n in names])
    try:
        return _run_all(ctx, names, factories, cycle)
    finally:
        if cycle is not None:
            cycle.release()


def _reported(ctx: SyncContext, results: list[RunResult]) -> list[RunResult]:
    """Metrics and /health for a cycle that never started (lock held by another runner,
    or not obtainable): without this the daemon's /health kept the previous cycle and
    sync_runs_total never counted the refusal."""
    for result in results:
        record_metrics(ctx, result)
        record_history(ctx, result)
        if ctx.on_result is not None:
            ctx.on_result(result)
    return results


TARGET_READS: dict[str, tuple[str, ...]] = {
    "departments": ("site_clusters",),
    "jobs": ("site_clusters", "sites"),
    "titles": ("user_titles",),
    "employees": ("sites", "user_titles", "roles", "users"),
    "vehicles": ("users", "assets"),  # sites and asset_types only when not configured by id
}
"""SafetyAmp collections each sync always reads: read ahead in the background."""


def _run_all(ctx: SyncContext, names: list[str], factories: dict[str, Any], cycle: Any = None) -> list[RunResult]:
    # The target shadow (services/target_shadow.py): only a cycle holding the cycle lock
    # may plan against it and publish a new one; every run that writes marks it dirty.
    cycle_owner = cycle is not None and ctx.only_key is None and not ctx.dry_run
    begin = getattr(ctx.targets, "begin_cycle", None)
    if begin is not None and cycle_owner:
        begin(full=ctx.full, first_full=ctx.runner_kind == "daemon")
    try:
        return _run_cycle(ctx, names, factories, cycle)
    finally:
        end = getattr(ctx.targets, "end_cycle", None)
        if end is not None:
            end(publish=cycle_owner, still_ours=lambda: _still_ours(cycle))


def _still_ours(cycle: Any) -> bool:
    """True while this runner still holds the cycle lock (checked in Redis)."""
    try:
        WriteFence([cycle]).check()
    except LockLostError:
        return False
    except SyncError:
        return False
    return True


def _run_cycle(ctx: SyncContext, names: list[str], factories: dict[str, Any], cycle: Any = None) -> list[RunResult]:
    results: list[RunResult] = []
    one_record = ctx.only_key is not None
    if factories is SYNCS and not one_record:
        # Read ahead, on background threads: the target's collections and the sources
        # the syncs of this cycle always read (each still read once per run).
        prefetch = getattr(ctx.targets, "prefetch", None)
        if prefetch is not None:
            prefetch([c for name in names for c in TARGET_READS.get(name, ())])
        loaders: dict[str, Any] = {}
        for name in names:
            hook = getattr(factories.get(name), "sources", None)
            if hook is not None:
                loaders.update(hook(ctx))
        if loaders:
            ctx.prefetch_sources(loaders)
    for name in names:
        if ctx.stop.is_set():
            break
        cls = factories.get(name)
        lock_lost = False
        if ctx.on_start is not None:
            ctx.on_start(name)
        if cls is None:
            result = RunResult(name, status="failed", error=f"the {name} sync is not available in this build")
        else:
            result, lock_lost = _run_guarded(ctx, name, cls, cycle)
        # A sync stopped by a lost lock (Redis restarted) or an unwritable change log (our
        # disk) says nothing about itself or its services: no back-off, it runs again as
        # soon as the cause is gone (the SyncChangeLogUnwritable alert says so).
        blameless = result.status == "failed" and (lock_lost or result.blameless)
        # A one-record run says little about the sync: it neither lifts nor extends the
        # quarantine, and it is no run for the metrics (sync_last_success_timestamp_seconds
        # must not hide a sync whose real runs fail); the run history keeps it, with its key.
        if not ctx.dry_run and ctx.quarantine is not None and not blameless and not one_record:
            # Records refused by validation are the source's business (errors file, diagnose):
            # a steady run with a few known-bad rows must not back the whole sync off.
            attempted = {**result.counts, "failed": max(0, result.counts["failed"] - result.rejected)}
            ctx.quarantine.record(name, result.status, attempted, result.error)
        if not one_record:
            record_metrics(ctx, result)
        record_history(ctx, result)
        results.append(result)
        if ctx.on_result is not None:
            ctx.on_result(result)
    return results


def _run_guarded(ctx: SyncContext, name: str, cls: Any, cycle: Any = None) -> tuple[RunResult, bool]:
    """Quarantine check, then the single-writer lock, then the sync itself, its writes
    fenced by the cycle lock and its own (utils.locks.WriteFence). Returns the result
    and whether a lock was lost.

    The pause rule: a run that is not a dry run of a sync an operator paused
    (utils.control) is skipped, forced or not. The quarantine rule, the same for the
    daemon and sync_batch.py: a run that is not a dry run waits out the quarantine unless
    an operator forced it (``--force``, or an authenticated ``POST /sync``) or approved
    a held deactivation batch of that sync; every run that does go ahead counts
    (Quarantine.record in ``_run_all``): a good one lifts the quarantine, a bad one
    extends it."""
    skipped, overrode = _admit(ctx, name)
    if skipped is not None:
        return skipped, False
    refused, lock, fence = _take_lock(ctx, name, cycle)
    if refused is not None:
        return refused, False
    previous, ctx.fence = ctx.fence, fence
    try:
        log.info("sync starting", extra={"sync": name, "dry_run": ctx.dry_run})
        with fenced(fence):
            result = cls(ctx).run()
            result.overrode_quarantine = overrode
    finally:
        ctx.fence = previous
        if lock is not None:
            lock.release()
    lost = fence is not None and fence.is_lost()
    if lost and "lock lost" not in (result.error or ""):
        # Lost after the last write (no write went out unchecked): say so all the same.
        result.error = (result.error + "; " if result.error else "") + "lock lost during the run, after its last write"
        log.error("lock lost during the run, after its last write", extra={"sync": name})
    log.info(
        "sync finished: %s %s",
        result.status,
        " ".join(f"{k}={result.counts[k]}" for k in COUNT_KEYS),
        extra={"sync": name, "status": result.status, "duration_seconds": round(result.duration_seconds, 3)},
    )
    return result, lost


def _admit(ctx: SyncContext, name: str) -> tuple[RunResult | None, bool]:
    """The pause and quarantine rules (see ``_run_guarded``): the skipped result when
    the run may not go ahead (else None), and whether it overrides a quarantine."""
    pause = paused(ctx, name)
    if pause:
        # Not even --force or an operator's POST /sync: resuming is the way out.
        log.warning("sync skipped: %s", pause, extra={"sync": name})
        return RunResult(name, status="skipped", error=pause), False
    overrode = False
    if not ctx.dry_run and ctx.quarantine is not None:
        reason = ctx.quarantine.blocks(name)
        overrode = bool(reason) and name in ctx.forced
        if overrode:
            log.warning("quarantine overridden by an operator: %s", reason, extra={"sync": name})
        elif reason and _approved(ctx, name):
            # The failed run that quarantined it was most likely the guard's refusal the
            # operator has just approved: waiting out the back-off would let it expire.
            log.warning(
                "quarantine overridden: an operator approved a held deactivation batch (%s)", reason, extra={"sync": name}
            )
        elif reason:
            log.warning("sync skipped: %s", reason, extra={"sync": name})
            return RunResult(name, status="skipped", error=reason), False
    return None, overrode


def _take_lock(ctx: SyncContext, name: str, cycle: Any) -> tuple[RunResult | None, Lock | None, WriteFence | None]:
    """The sync's single-writer lock (none for a dry run or without locks): the result
    of a run that may not start (else None), the lock taken and the fence its writes go
    through (the cycle lock and its own; ``ctx.fence`` when no lock is taken)."""
    if ctx.locks is None or ctx.dry_run:
        return None, None, ctx.fence
    if cycle is not None:
        try:
            WriteFence([cycle]).check()  # lost while an earlier sync ran: another runner may be syncing
        except LockLostError as exc:
            log.warning("sync not started: %s", exc.message, extra={"sync": name})
            return RunResult(name, status="skipped", error=f"not started: {exc.message}"), None, None
    try:
        lock = ctx.locks(name)
        taken = lock.acquire(blocking=False)
    except SyncError as exc:
        return RunResult(name, status="failed", error=exc.message), None, None
    if not taken:
        holder = lock.holder() or {}
        who = f"{holder.get('host', '?')} pid {holder.get('pid', '?')} since {holder.get('since', '?')}"
        log.info("sync skipped: another runner holds the lock (%s)", who, extra={"sync": name})
        return RunResult(name, status="skipped", error=f"another runner holds the {name} lock ({who})"), None, None
    return None, lock, WriteFence([cycle, lock])


SYNC_SERVICES: dict[str, tuple[str, ...]] = {
    "departments": ("safetyamp",),
    "jobs": ("safetyamp",),
    "titles": ("safetyamp",),
    "employees": ("safetyamp", "graph"),
    "vehicles": ("samsara", "safetyamp"),
    "rosters": ("oneroster", "scim"),
}
"""The outside services (circuit breakers) each sync calls."""


def event_hold(
    sync: str, quarantine: Any, breakers: Mapping[str, Any], *, now: float | None = None, control: Any = None
) -> str | None:
    """Why an outside event (a webhook) must not start ``sync`` now, or None.

    An event is not an operator: it never overrides quarantine, and it does not start a
    run that an open circuit breaker would refuse anyway (the scheduled cycle or the
    breaker's own probe finds out when the service is back). Breaker states are read as
    stored (shared through Redis); an open breaker whose recovery time has passed lets
    the run go ahead as the probe. A paused sync (``control``) is not started either."""
    if control is not None:
        try:
            entry = control.paused(sync)
        except Exception:
            entry = None
        if entry:
            return control.pause_reason(entry)
    if quarantine is not None:
        reason = quarantine.blocks(sync)
        if reason:
            return reason
    moment = time.time() if now is None else now
    for service in SYNC_SERVICES.get(sync, ()):
        breaker = breakers.get(service)
        if breaker is None:
            continue
        snap = breaker.snapshot()  # never raises for Redis: the breaker falls back to local state
        if snap.get("state") == "half_open":
            return f"the {service} circuit breaker is half-open (a probe is testing the service)"
        if snap.get("state") == "open":
            opened_at = parse_iso(snap.get("opened_at"))
            opened = opened_at.timestamp() if opened_at is not None else None
            recovery = float(getattr(breaker, "recovery_seconds", 0.0))
            if opened is None or moment - opened < recovery:
                return f"the {service} circuit breaker is open since {snap.get('opened_at') or '?'}"
    return None


def paused(ctx: SyncContext, name: str) -> str | None:
    """The skip reason when an operator paused ``name`` (dry runs are not held: a
    preview of a paused sync sends nothing), else None."""
    if ctx.dry_run or ctx.control is None:
        return None
    try:
        entry = ctx.control.paused(name)
    except Exception:  # ControlStore degrades by itself; never let a lookup fail the cycle
        log.warning("could not read the pause state", extra={"sync": name}, exc_info=True)
        return None
    return ctx.control.pause_reason(entry) if entry else None


def _approved(ctx: SyncContext, name: str) -> bool:
    try:
        return ctx.control is not None and ctx.control.approval(name) is not None
    except Exception:
        return False


def record_history(ctx: SyncContext, result: RunResult) -> None:
    """Every run that is not a dry run, skipped and failed ones too, into the run
    history (utils.control); never raises."""
    if ctx.dry_run or ctx.control is None:
        return
    finished = datetime.now(UTC)
    started = result.started_at or (finished - timedelta(seconds=result.duration_seconds)).isoformat(timespec="seconds")
    try:
        ctx.control.record_run({
            "run_id": getattr(ctx.events, "run_id", None),
            "sync": result.sync,
            "status": result.status,
            "started_at": started,
            "finished_at": finished.isoformat(timespec="seconds"),
            "duration_seconds": round(result.duration_seconds, 3),
            "counts": dict(result.counts),
            "error": result.error,
            "runner": {"host": socket.gethostname(), "pid": os.getpid(), "kind": ctx.runner_kind},
            "changes_file": result.changes_file,
            "errors_file": result.errors_file,
            "guard_tripped": result.guard_tripped,
            "forced": result.overrode_quarantine,
            "requested_by": ctx.requested_by.get(result.sync),
            "approval": result.approval,
            "key": ctx.only_key,
        })  # fmt: skip
    except Exception:
        log.warning("could not record the run in the history", extra={"sync": result.sync}, exc_info=True)


def record_metrics(ctx: SyncContext, result: RunResult) -> None:
    m = ctx.metrics
    if ctx.dry_run:
        return
    m.sync_runs.labels(result.sync, result.status).inc()
    for action, n in result.counts.items():
        if n:
            m.sync_records.labels(result.sync, action).inc(n)
    m.sync_duration.labels(result.sync).observe(result.duration_seconds)
    if result.status in ("success", "partial"):
        m.last_success.labels(result.sync).set(time.time())
    try:
        m.failed_records.labels(result.sync).set(ctx.tracker.count(result.sync))
    except Exception:  # the tracker degrades by itself; a gauge must not fail a run
        log.warning("could not read failed-record count", extra={"sync": result.sync})


def overall_status(results: list[RunResult]) -> str:
    """success < partial < failed; all skipped -> skipped."""
    if not results:
        return "skipped"
    statuses = {r.status for r in results}
    if "failed" in statuses:
        return "failed"
    if "partial" in statuses:
        return "partial"
    if statuses == {"skipped"}:
        return "skipped"
    return "success"  # success, possibly with some syncs skipped by another runner's lock
