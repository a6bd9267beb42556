#!/usr/bin/env python
"""The daemon: Flask probes and metrics (served by waitress) plus a background worker
that runs every enabled sync every SYNC_INTERVAL_MINUTES (with a little jitter so
replicas and CronJobs do not stampede the same minute).

    python main.py [--sandbox [--sandbox-dir DIR] [--sandbox-size N] [--tenants N]]

Endpoints (docs/runbook.md, docs/metrics.md): /live (heartbeat only, never an outside call), /ready (settings
valid and the source database answered within the last check, cached 30 s), /health
(JSON detail, no secrets), /metrics (Prometheus text). Operator endpoints (POST /sync,
POST /sync/<name>, GET /diagnose/<sync>/<key>) need ``Authorization: Bearer
<SYNC_TRIGGER_TOKEN>`` and are disabled when that setting is unset.

SIGTERM/SIGINT: stop taking work, let the current record finish (the apply loop checks
the stop flag before each write), flush logs and exit 0, within 25 s.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flask import Flask, Response, jsonify, request

from config.settings import ProbeSettings, Settings, load_settings, logging_options, probe_settings
from sandbox.product import add_sandbox_arguments, check_sandbox_arguments
from utils.errors import ConfigurationError
from utils.triggers import Pending, TriggerQueue

log = logging.getLogger("main")

SHUTDOWN_BUDGET_SECONDS = 20.0
READY_CACHE_SECONDS = 30.0
MAX_REQUEST_BODY_BYTES = 1_048_576
"""Largest request body any endpoint takes (Samsara events are a few KB). Larger ones get
413 before they are read: by waitress from Content-Length, or as soon as a chunked body
passes it; by Flask for a request that reaches it another way."""


@dataclass
class DaemonState:
    """What the endpoints read; written by the worker. Plain values only (no secrets)."""

    settings: Settings | None
    syncs: tuple[str, ...] = ()
    config_error: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    heartbeat: float = field(default_factory=time.monotonic)
    last_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: str | None = None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per running sync: ``started_at`` (ISO UTC) and, once it writes, ``done`` of ``total``."""
    next_run_at: float | None = None
    ready_checked_at: float = 0.0
    ready_result: tuple[bool, str] = (False, "not checked yet")
    lock: threading.Lock = field(default_factory=threading.Lock)
    triggers: TriggerQueue = field(default_factory=TriggerQueue)
    """Runs asked for between cycles (operators, webhooks); they coalesce as a union."""
    starting: bool = False

    def beat(self) -> None:
        self.heartbeat = time.monotonic()


class Daemon:
    """Wires runtime, worker thread and HTTP app; ``stop`` is the injected stop flag."""

    def __init__(
        self,
        settings: Settings | None,
        syncs: tuple[str, ...],
        runtime: Any = None,
        *,
        config_error: list[str] | None = None,
        probes: ProbeSettings | None = None,
    ) -> None:
        self.state = DaemonState(settings, syncs, config_error or [])
        self.probes = probes or probe_settings({})
        """PORT, HOST and LIVENESS_STALE_SECONDS (read before the settings: the probes answer first)."""
        self.runtime = runtime
        self.stop = runtime.stop if runtime is not None else threading.Event()
        self.worker = threading.Thread(target=self._loop, name="sync-worker", daemon=True)
        self.fleet: Any = None
        """With TENANTS_DIR: the tenants and their scheduler (config/fleet.py); else None."""
        self.process_control: Any = None
        """With TENANTS_DIR: the process's own audit stream (console sign-ins)."""
        from sync.jobs import Jobs

        self.jobs = Jobs(self)
        """The console's jobs (sync/jobs.py): run, preview, sync_record, diagnose."""

    def attach(self, settings: Settings, syncs: tuple[str, ...], runtime: Any) -> None:
        """Start-up finished: hand the worker its runtime (it shares our stop flag)."""
        runtime.stop = self.stop
        self.state.settings, self.state.syncs = settings, syncs
        self.runtime = runtime
        self.state.ready_checked_at = 0.0
        self.state.config_error = []
        self.state.starting = False

    # ---- worker -------------------------------------------------------------------
    def _interval(self) -> float:
        assert self.state.settings is not None
        base = self.state.settings.sync_interval_minutes * 60.0
        return base + random.uniform(0, min(30.0, base * 0.05))

    def _loop(self) -> None:
        next_at = time.monotonic() + 1.0  # first run right after start-up
        while not self.stop.is_set():
            self.state.beat()
            if self.fleet is not None:  # many tenants: the scheduler shares them out (config/fleet.py)
                self.fleet.tick()
                self.stop.wait(1.0)
                continue
            if self.runtime is None:
                self.stop.wait(1.0)
                continue
            self.state.next_run_at = time.time() + max(0.0, next_at - time.monotonic())
            scheduled = time.monotonic() >= next_at
            taken_at = time.monotonic()  # a console run job submitted before this runs in this cycle
            pending = self.state.triggers.take(self.state.syncs)
            syncs = self.state.syncs if scheduled else self.not_held(pending)
            if syncs:
                self.jobs.cycle_started(taken_at, syncs)
                self.run_cycle(syncs, force=pending.forced, taken_at=taken_at, requested_by=pending.requested_by)
                if scheduled or syncs == self.state.syncs:
                    next_at = time.monotonic() + self._interval()
            self.stop.wait(1.0)

    def attach_fleet(self, settings: Settings, fleet: Any) -> None:
        """Start-up finished with TENANTS_DIR: the worker schedules the fleet's tenants."""
        self.state.settings = settings
        self.fleet = fleet
        self.state.config_error = []
        self.state.starting = False

    def tenant(self, tenant_id: str | None) -> tuple[Daemon | None, str | None]:
        """The daemon that serves ``tenant_id`` (this one without tenants) or the reason
        there is none (for a 400/404 answer)."""
        if self.fleet is None:
            if tenant_id not in (None, "", "default"):
                return None, "this daemon serves no tenants (TENANTS_DIR is not set)"
            return self, None
        if not tenant_id:
            return None, "name the tenant: ?tenant=<id> (tenants: " + ", ".join(self.fleet.names()) + ")"
        entry = self.fleet.get(tenant_id)
        if entry is None:
            return None, f"unknown tenant {tenant_id!r}"
        return entry.runner, None

    def not_held(self, pending: Pending) -> tuple[str, ...]:
        """The syncs of ``pending`` to run now: an operator's go; an event's (webhook)
        wait while the sync is quarantined or a breaker it needs is open."""
        from sync.runner import event_hold

        out = []
        for sync in pending.syncs:
            control = getattr(self.runtime, "control", None)
            why = (
                None
                if sync in pending.forced
                else event_hold(sync, self.runtime.quarantine, self.runtime.breakers or {}, control=control)
            )
            if why:
                log.info("event-triggered run not started: %s", why, extra={"sync": sync})
            else:
                out.append(sync)
        return tuple(out)

    def run_cycle(
        self,
        syncs: tuple[str, ...],
        *,
        force: frozenset[str] = frozenset(),
        taken_at: float | None = None,
        requested_by: Mapping[str, str] | None = None,
        held: Any = None,
    ) -> list[Any]:
        """One cycle; ``held``: the cycle lock the tenant scheduler took (config/fleet.py)."""
        from config.bootstrap import new_context, new_run_id
        from sync.runner import run_syncs

        run_id = new_run_id()
        reported: set[str] = set()

        def started(sync: str) -> None:
            self.state.beat()
            self.state.running = sync
            with self.state.lock:
                self.state.progress[sync] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds")}

        def progress(sync: str, done: int, total: int) -> None:
            self.state.beat()
            self.state.running = sync
            with self.state.lock:
                self.state.progress.setdefault(sync, {}).update(done=done, total=total)

        def finished(result: Any) -> None:
            entry = result.summary()
            entry.update(run_id=run_id, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
            with self.state.lock:
                self.state.last_runs[result.sync] = entry
                self.state.progress.pop(result.sync, None)
            reported.add(result.sync)
            self.state.beat()
            if taken_at is not None:
                self.jobs.sync_finished(taken_at, entry)

        ctx = None
        try:
            ctx = new_context(
                self.runtime, run_id=run_id, progress=progress, force=force, runner_kind="daemon", requested_by=requested_by
            )
            ctx.on_result = finished
            ctx.on_start = started
            results = run_syncs(ctx, syncs, held=held)
            settings = self.runtime.settings
            ctx.events.prune(settings.output_retention_days, settings.output_retention_runs)
            return results
        except Exception as exc:  # the loop must survive anything a cycle throws
            log.exception("sync cycle crashed", extra={"run_id": run_id})
            return self._cycle_failed(ctx, [s for s in syncs if s not in reported], exc, finished, run_id)
        finally:
            self.state.running = None
            with self.state.lock:
                self.state.progress.clear()
            self.state.beat()
            if taken_at is not None:
                self.jobs.cycle_finished(taken_at)

    def _cycle_failed(self, ctx: Any, syncs: list[str], exc: Exception, finished: Any, run_id: str = "") -> list[Any]:
        """A cycle that could not run is a failed run of every sync it covered (and had
        not reported yet): counted in sync_runs_total{status="failed"} and shown in
        /health last_runs with the reason, so the alerts on failed runs fire."""
        from sync.base import RunResult
        from sync.runner import record_history, record_metrics

        reason = f"the sync cycle could not run: {type(exc).__name__}: {exc}"
        # record_metrics and record_history need only these of a context, when the context itself failed
        recorder: Any = ctx or SimpleNamespace(
            metrics=self.runtime.metrics,
            dry_run=False,
            tracker=self.runtime.tracker,
            control=getattr(self.runtime, "control", None),
            events=SimpleNamespace(run_id=run_id),
            runner_kind="daemon",
            forced=frozenset(),
            only_key=None,
        )
        results = []
        for name in syncs:
            result = RunResult(name, status="failed", error=reason)
            try:
                record_metrics(recorder, result)
            except Exception:
                log.warning("could not record the failed run in the metrics", extra={"sync": name}, exc_info=True)
            record_history(recorder, result)
            finished(result)
            results.append(result)
        return results

    # ---- probes -------------------------------------------------------------------
    def live(self) -> tuple[bool, float]:
        age = time.monotonic() - self.state.heartbeat
        stale_after = self.probes.liveness_stale_seconds
        return (self.worker.is_alive() or not self.worker.ident) and age < stale_after, age

    def ready(self) -> tuple[bool, str]:
        if self.state.starting:
            return False, "starting up"
        if self.state.config_error:
            return False, "configuration error: " + "; ".join(self.state.config_error)
        now = time.monotonic()
        if now - self.state.ready_checked_at < READY_CACHE_SECONDS:
            return self.state.ready_result
        viewpoint = getattr(self.runtime, "viewpoint", None)
        result = (True, "ok")
        if viewpoint is not None:
            try:
                viewpoint.ping()
            except Exception as exc:
                result = (False, f"Viewpoint database did not answer: {getattr(exc, 'message', type(exc).__name__)}")
        self.state.ready_checked_at, self.state.ready_result = now, result
        return result

    def health(self) -> dict[str, Any]:
        """The /health body; ``status`` and its HTTP code are utils.health's verdict."""
        rt = self.runtime
        ok, age = self.live()
        ready, why = self.ready()
        with self.state.lock:
            last_runs = dict(self.state.last_runs)
            progress = {sync: dict(p) for sync, p in self.state.progress.items()}
        body: dict[str, Any] = {
            "status": "ok",
            "problems": [],
            "live": ok,
            "heartbeat_age_seconds": round(age, 1),
            "ready": ready,
            "ready_reason": why,
            "syncs": list(self.state.syncs),
            "running": self.state.running,
            "progress": progress,
            "next_run_at": datetime.fromtimestamp(self.state.next_run_at, UTC).isoformat(timespec="seconds")
            if self.state.next_run_at
            else None,
            "last_runs": last_runs,
            "sync_states": {},
            "dependencies": {},
            "failed_records": {},
            "paused": {},
        }
        if rt is not None:
            self._health_detail(rt, body)
        from utils.health import assess

        deps = body["dependencies"]
        verdict = assess(
            starting=self.state.starting,
            config_error=self.state.config_error,
            live=ok,
            ready=ready,
            ready_reason=why,
            syncs=self.state.syncs,
            last_runs=last_runs,
            quarantine=body.get("quarantine") or {},
            breakers={s: d["breaker"].get("state", "closed") for s, d in deps.items() if isinstance(d.get("breaker"), dict)},
            redis_degraded=bool((deps.get("redis") or {}).get("degraded")),
            now=time.time(),
            paused=body.get("paused") or {},
        )
        body.update(status=verdict.status, problems=verdict.problems, sync_states=verdict.sync_states)
        return body

    def _health_detail(self, rt: Any, body: dict[str, Any]) -> None:
        deps = body["dependencies"]
        if rt.viewpoint is not None:
            started = time.monotonic()
            try:
                rt.viewpoint.ping()
                deps["viewpoint"] = {"status": "up", "latency_ms": round((time.monotonic() - started) * 1000, 1)}
            except Exception as exc:
                deps["viewpoint"] = {"status": "down", "error": getattr(exc, "message", type(exc).__name__)}
        tracker = rt.tracker
        tracker_health = getattr(tracker, "health", None)
        deps["redis"] = tracker_health() if callable(tracker_health) else {"status": "unknown"}
        statuses = rt.stats.statuses() if hasattr(rt.stats, "statuses") else {}
        for service, counts in statuses.items():
            deps.setdefault(service, {})["responses"] = counts
        for service, latency in (rt.stats.latency() if hasattr(rt.stats, "latency") else {}).items():
            deps.setdefault(service, {})["latency"] = latency
        for service, error in (rt.stats.last_errors() if hasattr(rt.stats, "last_errors") else {}).items():
            deps.setdefault(service, {})["last_error"] = error
        for service, breaker in (getattr(rt, "breakers", None) or {}).items():
            deps.setdefault(service, {})["breaker"] = breaker.snapshot()
        control = getattr(rt, "control", None)
        body["paused"] = control.refresh_paused(self.state.syncs) if control is not None else {}
        body["quarantine"] = {}
        for sync in self.state.syncs:
            try:
                body["failed_records"][sync] = tracker.count(sync)
            except Exception:
                body["failed_records"][sync] = None
            if rt.quarantine is not None:
                body["quarantine"][sync] = rt.quarantine.status(sync)


class TenantDaemon(Daemon):
    """One tenant inside a daemon that serves many (config/fleet.py runs its cycles on
    a slot): its own state, triggers, console jobs and run_cycle; liveness is the
    process's."""

    def __init__(self, parent: Daemon, tenant: str, settings: Settings, syncs: tuple[str, ...], runtime: Any) -> None:
        super().__init__(settings, syncs, runtime, probes=parent.probes)
        self.parent = parent
        self.tenant_id = tenant
        self.stop = parent.stop
        runtime.stop = parent.stop

    def live(self) -> tuple[bool, float]:
        return self.parent.live()

    def health(self) -> dict[str, Any]:
        self.shared_state()
        return super().health()

    def shared_state(self) -> None:
        """Replicas share a tenant, so its last runs come from the shared run history
        and its next run from the schedule in Redis: every replica answers the same
        (its own memory knows only the runs it ran). Never raises."""
        from config.fleet import due_key

        control = getattr(self.runtime, "control", None)
        for sync in self.state.syncs:
            if control is None:
                break
            try:
                row = next((r for r in control.runs(sync=sync, count=5) if not r.get("key")), None)
            except Exception:
                row = None
            mine = self.state.last_runs.get(sync) or {}
            if row is None or str(mine.get("finished_at") or "") >= str(row.get("finished_at") or ""):
                continue
            entry = {"sync": sync, "status": row.get("status"), **(row.get("counts") or {})}
            entry.update({k: row.get(k) for k in ("duration_seconds", "run_id", "finished_at")})
            entry.update({k: row[k] for k in ("error", "errors_file", "guard_tripped") if row.get(k)})
            with self.state.lock:
                self.state.last_runs[sync] = entry
        settings, redis_client = self.state.settings, getattr(self.runtime, "redis", None)
        try:
            due = redis_client.get(due_key(settings)) if redis_client is not None and settings is not None else None
        except Exception:
            due = None
        if due is not None:
            self.state.next_run_at = float(due)

    def cycle_lock(self) -> Any:
        from config.bootstrap import lock_factory

        return lock_factory(self.runtime)("cycle")

    def cycle_lock_holder(self) -> dict[str, Any] | None:
        return self.cycle_lock().holder()


def fleet_health(daemon: Daemon) -> dict[str, Any]:
    """/health of a daemon with tenants: the process, then one line per tenant (the
    detail of one is ``/health?tenant=<id>``). Its status is the worst tenant's."""
    from utils.health import STATUSES

    fleet = daemon.fleet
    ok, age = daemon.live()
    tenants: dict[str, Any] = {}
    for name in fleet.names():
        entry = fleet.get(name)
        if entry is None:
            continue
        body = entry.runner.health()
        tenants[name] = {
            "status": body["status"],
            "problems": body["problems"],
            "syncs": body["syncs"],
            "running": body["running"],
            "next_run_at": body["next_run_at"],
            "last_runs": {s: {k: r.get(k) for k in ("status", "finished_at", "error")} for s, r in body["last_runs"].items()},
        }
    invalid = {str(getattr(p, "file", "?")): str(p) for p in fleet.status.problems}
    invalid.update(fleet.status.errors)
    # One tenant's trouble is not the process's: the process fails only when every
    # tenant does; otherwise any tenant not ok (or a tenant file with problems) degrades it.
    statuses = [t["status"] for t in tenants.values()]
    status = "ok"
    if statuses and all(st != "ok" and st != "degraded" for st in statuses):
        status = min(statuses, key=STATUSES.index)
    elif invalid or any(st != "ok" for st in statuses):
        status = "degraded"
    if not ok:
        status = "stalled"
    return {
        "status": status,
        "live": ok,
        "heartbeat_age_seconds": round(age, 1),
        "ready": True,
        "tenants": tenants,
        "invalid_tenants": invalid,
        "slots": fleet.slots,
        "slots_busy": fleet.busy(),
        "tenants_overdue": fleet.status.overdue,
    }


def create_app(daemon: Daemon) -> Flask:
    app = Flask("safetyamp-sync")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BODY_BYTES  # bounds reads of a chunked body too
    _guard_bodies(app)
    _probe_routes(app, daemon)
    _operator_routes(app, daemon)
    _webhook_routes(app, daemon)
    # The operator console (docs/console.md). Registered always: the settings that turn it
    # on arrive after the server has started; until then, and when neither CONSOLE_TOKEN
    # nor CONSOLE_TRUSTED_PROXY is set, everything under /console answers 404.
    from console import blueprint as console_blueprint

    app.register_blueprint(console_blueprint(daemon), url_prefix="/console")
    return app


def _guard_bodies(app: Flask) -> None:
    """The body limit and the one scrub every response passes."""

    @app.before_request
    def refuse_large_bodies() -> Any:
        if (request.content_length or 0) > MAX_REQUEST_BODY_BYTES:
            return too_large(None)
        return None

    @app.errorhandler(413)
    def too_large(_error: Any) -> Any:
        return jsonify(error=f"request body over the limit of {MAX_REQUEST_BODY_BYTES} bytes"), 413

    @app.after_request
    def scrub_body(response: Response) -> Response:
        """Every body this app serves, whatever builds it (a reason stored in Redis by an
        earlier run, an exception message), passes the one scrub on its way out."""
        from utils.scrub import scrub, scrub_value

        if response.direct_passthrough or response.is_streamed:
            return response
        if response.is_json:
            response.set_data(app.json.dumps(scrub_value(response.get_json())))
        elif (response.mimetype or "").startswith("text/"):
            response.set_data(scrub(response.get_data(as_text=True)))
        return response


def _probe_routes(app: Flask, daemon: Daemon) -> None:
    """/live, /ready, /health (``?tenant=<id>``: one tenant's detail) and /metrics."""

    @app.get("/live")
    def live() -> Any:
        ok, age = daemon.live()
        return jsonify(status="alive" if ok else "stale", heartbeat_age_seconds=round(age, 1)), 200 if ok else 503

    @app.get("/ready")
    def ready() -> Any:
        ok, why = daemon.ready()
        return jsonify(status="ready" if ok else "not_ready", reason=why), 200 if ok else 503

    @app.get("/health")
    def health() -> Any:
        from utils.health import HTTP_STATUS

        wanted = request.args.get("tenant")
        if daemon.fleet is not None and not wanted:
            body = fleet_health(daemon)
        else:
            target, why = daemon.tenant(wanted)
            if target is None:
                return jsonify(error=why), 404
            body = target.health()
        return jsonify(body), HTTP_STATUS[body["status"]]

    @app.get("/metrics")
    def metrics() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if daemon.fleet is not None:
            for name in daemon.fleet.names():
                entry = daemon.fleet.get(name)
                if entry is not None and entry.runtime.control is not None:
                    entry.runtime.control.refresh_paused(entry.syncs)
            return Response(generate_latest(daemon.fleet.metrics.registry), mimetype=CONTENT_TYPE_LATEST)
        control = getattr(daemon.runtime, "control", None)
        if control is not None:
            control.refresh_paused(daemon.state.syncs)  # paused or resumed by another runner (the CLI)
        registry = daemon.runtime.metrics.registry if daemon.runtime is not None else None
        payload = generate_latest(registry) if registry is not None else b""
        return Response(payload, mimetype=CONTENT_TYPE_LATEST)


def _authorized(daemon: Daemon) -> tuple[bool, Any]:
    """The operator endpoints' bearer token (SYNC_TRIGGER_TOKEN), compared in constant time."""
    settings = daemon.state.settings
    token = settings.sync_trigger_token if settings is not None else None
    if token is None:
        return False, (jsonify(error="operator endpoints are disabled: SYNC_TRIGGER_TOKEN is not set"), 403)
    sent = request.headers.get("Authorization", "")
    expected = "Bearer " + token.get_secret_value()
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        return False, (jsonify(error="missing or wrong bearer token"), 401)
    return True, None


def _operator_routes(app: Flask, daemon: Daemon) -> None:
    """POST /sync[/<name>] and GET /diagnose/<sync>/<key>, each ``?tenant=<id>`` with tenants."""

    @app.post("/sync")
    @app.post("/sync/<name>")
    def trigger(name: str | None = None) -> Any:
        ok, refusal = _authorized(daemon)
        if not ok:
            return refusal
        target, why = daemon.tenant(request.args.get("tenant"))
        if target is None:
            return jsonify(error=why), 404 if request.args.get("tenant") else 400
        if name is not None and name not in target.state.syncs:
            return jsonify(error=f"unknown or disabled sync {name!r}", enabled=list(target.state.syncs)), 404
        # An authenticated operator's request: it overrides quarantine (see the runbook).
        target.state.triggers.request(name, operator=True, by="trigger token")
        return jsonify(status="queued", sync=name or "all", tenant=getattr(target, "tenant_id", None)), 202

    @app.get("/diagnose/<sync>/<path:key>")  # rosters keys may be user/<id> or class/<id>
    def diagnose(sync: str, key: str) -> Any:
        ok, refusal = _authorized(daemon)
        if not ok:
            return refusal
        from sync.diagnose import diagnose as run_diagnose

        target, why = daemon.tenant(request.args.get("tenant"))
        if target is None:
            return jsonify(error=why), 404 if request.args.get("tenant") else 400
        if target.runtime is None:
            return jsonify(error="not configured"), 503
        try:
            report = run_diagnose(target.runtime, sync, key)
        except ConfigurationError as exc:
            return jsonify(error=exc.message), 400
        return jsonify(report)


def _webhook_routes(app: Flask, daemon: Daemon) -> None:
    """POST /webhooks/samsara (one tenant) and /webhooks/samsara/<tenant> (TENANTS_DIR:
    each tenant's Samsara webhook points at its own URL and is signed with its own
    SAMSARA_WEBHOOK_SECRET)."""
    verifiers: dict[int, Any] = {}

    def webhook_verifier(target: Daemon) -> Any:
        """Built on first use per settings object: settings arrive after the server
        started, and a tenant whose file changed gets a new one."""
        settings = target.state.settings
        if settings is None or settings.samsara_webhook_secret is None:
            return None
        key = id(settings)
        if key not in verifiers:
            from utils.webhooks import WebhookVerifier

            verifiers[key] = WebhookVerifier(settings.samsara_webhook_secret.get_secret_value())
        return verifiers[key]

    @app.post("/webhooks/samsara")
    def samsara_webhook() -> Any:
        if daemon.fleet is not None:
            return jsonify(error="this daemon serves tenants: send each tenant's events to /webhooks/samsara/<tenant>"), 404
        return _samsara_event(daemon, webhook_verifier(daemon))

    @app.post("/webhooks/samsara/<tenant>")
    def tenant_samsara_webhook(tenant: str) -> Any:
        target = daemon.fleet.get(tenant).runner if daemon.fleet is not None and daemon.fleet.get(tenant) else None
        if target is None:
            return jsonify(error=f"no tenant {tenant!r} here"), 404
        return _samsara_event(target, webhook_verifier(target))


def _samsara_event(target: Daemon, verifier: Any) -> Any:
    """One signed Samsara event for ``target``. An event that can change vehicles or
    drivers (or of a type we do not know) makes the saved Samsara read stale and asks for
    a debounced vehicles run; a documented event about something else (alerts, routes,
    documents...) is acknowledged and counted, nothing more (docs/performance.md)."""
    if verifier is None:
        return jsonify(error="webhooks are disabled: SAMSARA_WEBHOOK_SECRET is not set"), 404
    body = request.get_data()  # bounded: refuse_large_bodies and waitress's limit ran first
    ok, why = verifier.verify(request.headers.get("X-Samsara-Timestamp"), request.headers.get("X-Samsara-Signature"), body)
    if not ok:
        log.warning("webhook refused: %s", why)
        _count_event(target, "none", "refused")
        return jsonify(error=why), 401
    from services.samsara_read import EVENT_IGNORED, EVENT_PING, classify_event, note_event
    from utils.webhooks import parse_event

    try:
        event = parse_event(body)
    except ValueError as exc:
        log.warning("webhook refused: %s", exc)
        _count_event(target, "none", "invalid")
        return jsonify(error=str(exc)), 400
    kind, outcome = classify_event(event)
    _count_event(target, kind, outcome)
    if outcome == EVENT_PING:
        return jsonify(status="pong"), 200
    if outcome == EVENT_IGNORED:
        log.debug("samsara event %s: about neither vehicles nor drivers, the saved read stands", kind)
        return jsonify(status="ignored"), 200
    rt = target.runtime  # None while starting: its first vehicles run reads Samsara fully anyway
    if rt is not None:  # the saved Samsara read is stale now (docs/performance.md)
        note_event(rt.redis, rt.settings.redis_prefix)
    log.info("samsara event %s: the next vehicles run reads Samsara", kind)
    # Debounced: a burst of vehicle events becomes one vehicles run, which waits
    # while the sync is quarantined or a breaker it needs is open (Daemon.not_held).
    target.state.triggers.request_after("vehicles", target.state.settings.webhook_debounce_seconds)  # type: ignore[union-attr]
    return jsonify(status="accepted"), 202


def _count_event(target: Daemon, kind: str, outcome: str) -> None:
    """samsara_webhook_events_total (not while the runtime is starting: no metrics yet)."""
    if target.runtime is not None:
        target.runtime.metrics.samsara_webhook_events.labels(kind, outcome).inc()


def start_http(daemon: Daemon) -> Any:
    """Serve the endpoints from a background thread (waitress, not the Flask dev server)."""
    from waitress import create_server

    app = create_app(daemon)
    # The body limit is enforced here, where the bytes arrive: waitress reads a whole body
    # before it calls the app (spooling it to TMPDIR above inbuf_overflow), so a limit in
    # Flask alone would come after a 200 MB upload had been taken in. The slack covers
    # chunked framing, which waitress counts; Flask then holds the payload to the limit.
    # inbuf_overflow lies well above the limit: waitress stores a chunk before it checks
    # the running total, so the last chunk of a refused body must not start a temp file.
    # A body is kept in memory, then: nothing ever goes to the temp folder.
    max_body = MAX_REQUEST_BODY_BYTES + 64 * 1024
    server = create_server(
        app,
        host=daemon.probes.host,
        port=daemon.probes.port,
        threads=4,
        max_request_body_size=max_body,
        inbuf_overflow=2 * max_body,
        # waitress drops X-Forwarded-Proto/-For/-Host from senders it was not told to
        # trust, and the ingress's address is not known here. Nothing here trusts them
        # for a decision that matters: the console reads X-Forwarded-Proto only to make
        # its cookie Secure (a liar only makes its own cookie stricter), client addresses
        # come from the socket (REMOTE_ADDR), never from X-Forwarded-For, and no ProxyFix.
        clear_untrusted_proxy_headers=False,
    )

    def serve() -> None:
        try:
            server.run()
        except (OSError, ValueError):
            # Shutdown closes the listening socket under the loop's select(): EBADF (or
            # "file descriptor cannot be a negative integer") is how that loop ends.
            if not daemon.stop.is_set():
                raise

    threading.Thread(target=serve, name="http", daemon=True).start()
    log.info("listening on port %d", daemon.probes.port)
    return server


def wait_and_stop(daemon: Daemon, server: Any) -> int:
    """Block until SIGTERM/SIGINT, then let the worker finish or abandon its record."""
    while not daemon.stop.wait(0.5):
        pass
    deadline = time.monotonic() + SHUTDOWN_BUDGET_SECONDS
    daemon.jobs.close()
    if daemon.worker.ident:
        daemon.worker.join(timeout=max(0.0, deadline - time.monotonic()))
    if daemon.fleet is not None:
        daemon.fleet.close(max(0.0, deadline - time.monotonic()))
    if daemon.worker.is_alive():
        log.warning("worker did not finish within the shutdown budget; abandoning the current record")
    try:
        server.close()
    except Exception:
        log.debug("http server close failed", exc_info=True)
    if daemon.runtime is not None:
        daemon.runtime.close()
    log.info("stopped")
    logging.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="main.py", description="Sync daemon: probes, metrics and a worker running every enabled sync."
    )
    add_sandbox_arguments(p)
    args = p.parse_args(argv)
    check_sandbox_arguments(p, args)
    environ = dict(os.environ)
    from utils.logger import configure_logging

    # Only valid values before the settings are validated: a bad LOG_LEVEL or LOG_FORMAT
    # becomes the configuration error naming it, as it does from .env or a secret file.
    configure_logging(*logging_options(environ, "INFO", "json"))
    try:
        probes = probe_settings(environ)
    except ConfigurationError as exc:  # no probes, no way to stay up and explain: exit 2
        log.error("configuration error: %s", "; ".join(exc.problems))
        return 2
    # The probes answer first (/live 200, /ready 503 "starting"), then everything slow
    # (sandbox seeding, Key Vault, clients) happens: a slow start never looks like a hang.
    daemon = Daemon(None, (), probes=probes)
    daemon.state.starting = True

    def on_signal(signum: int, _frame: Any) -> None:
        if not daemon.stop.is_set():  # a second signal (or one per process of a group) says nothing new
            log.info("received %s: stopping", signal.Signals(signum).name)
        daemon.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = start_http(daemon)
    except (OSError, ValueError) as exc:  # address in use, a HOST that does not resolve...
        log.error("cannot listen on %s port %s: %s", probes.host, probes.port, exc)
        return 2
    daemon.worker.start()
    with ExitStack() as stack:
        start_worker(daemon, args, environ, stack)
        return wait_and_stop(daemon, server)


def start_worker(daemon: Daemon, args: argparse.Namespace, environ: dict[str, str], stack: ExitStack) -> None:
    """Read the settings (starting the sandbox first with ``--sandbox``) and hand the
    worker its runtime; a configuration error keeps the daemon up so /ready says why
    (a crash loop hides the reason in old logs)."""
    from utils.logger import configure_logging

    overrides: dict[str, str] = {}
    try:
        if args.sandbox:
            from sandbox.product import start_for_product

            if not args.tenants:  # sandbox tenant files carry their own interval
                environ.setdefault("SYNC_INTERVAL_MINUTES", "5")
            overrides = start_for_product(
                stack, Path(args.sandbox_dir), size=args.sandbox_size, tenants=args.tenants, environ=environ
            )
        settings = load_settings(environ, overrides=overrides)
        if settings.tenants_dir is not None:
            configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
            daemon.attach_fleet(settings, start_fleet(daemon, settings, environ))
            return
        syncs = settings.enabled_syncs()
        settings.check(syncs)
        configure_logging(settings.log_level, settings.log_format, secrets=settings.secret_values())
        from config.bootstrap import build_runtime

        runtime = build_runtime(settings, syncs)
    except ConfigurationError as exc:
        log.error("configuration error: %s", "; ".join(exc.problems))
        daemon.state.config_error = exc.problems
        daemon.state.starting = False
    else:
        daemon.attach(settings, syncs, runtime)
        log.info("syncs: %s", ", ".join(syncs) or "(none)")


def start_fleet(daemon: Daemon, settings: Settings, environ: Mapping[str, str]) -> Any:
    """TENANTS_DIR is set: one runtime per tenant (its own Redis prefix, output folder,
    breakers, locks; a ``tenant`` label on its metrics), built as its file appears, and
    the scheduler that shares the tenants with the other replicas (config/fleet.py).
    Secrets of every tenant are masked in the logs as their runtimes are built."""
    from config.bootstrap import build_runtime
    from config.fleet import Fleet
    from config.tenants import TenantWatcher, ignored_environment
    from services.http import SharedLimiters
    from utils.metrics import Metrics
    from utils.redis_client import make_redis
    from utils.scrub import default_redactor

    leftovers = ignored_environment(environ)
    if leftovers:
        log.warning("TENANTS_DIR is set: no tenant uses these settings of the environment: %s", ", ".join(leftovers))
    metrics = Metrics(tenants=True)
    redis_client = make_redis(settings.redis_url)
    limiters = SharedLimiters()

    def build(tenant: str, tenant_settings: Settings, syncs: tuple[str, ...]) -> tuple[Any, Any]:
        default_redactor().add(tenant_settings.secret_values())  # masked in every log line from now on
        runtime = build_runtime(
            tenant_settings,
            syncs,
            metrics=metrics.for_tenant(tenant),
            redis_client=redis_client,
            limiters=limiters,
        )
        runtime.stop = daemon.stop
        return runtime, TenantDaemon(daemon, tenant, tenant_settings, syncs, runtime)

    vault = settings.azure_key_vault_url or settings.azure_key_vault_name
    fleet = Fleet(
        # Vault secrets rotate without a file changing: reload as often as the vault cache expires.
        TenantWatcher(environ, reload_seconds=settings.keyvault_ttl_seconds if vault else None),
        build,
        redis=redis_client,
        metrics=metrics,
        slots=settings.tenant_workers,
    )
    fleet.refresh(force=True)
    from utils.control import ControlStore

    # The process's own operator state: the console's sign-ins concern no tenant.
    daemon.process_control = ControlStore(
        redis_client, prefix=settings.redis_prefix, audit_retention_days=settings.audit_retention_days
    )
    log.info("tenants: %s", ", ".join(fleet.names()) or "(none)")
    return fleet


if __name__ == "__main__":
    sys.exit(main())
