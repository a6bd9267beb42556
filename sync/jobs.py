"""The daemon's jobs for the operator console: work an operator asks for from a browser.

The console never runs a sync on a request thread and never holds a lock a sync needs:
it submits a job and reads its state. Kinds:

``run``
    ``syncs`` (a list, or None for every enabled sync): an operator's "run now". It goes
    through the daemon's TriggerQueue exactly like an authenticated ``POST /sync`` (it
    overrides quarantine, not a pause) and finishes when the daemon's worker has run
    those syncs in a cycle that started after the job was submitted; the result holds
    their run summaries. No thread waits for it meanwhile.
``preview``
    ``syncs``: a dry run of those syncs (nothing sent, no lock taken), on a job worker
    thread; per sync the counts and the planned writes with their field diffs, at most
    PREVIEW_WRITES per sync with the total, and the deactivations the guard would hold.
``sync_record``
    ``sync``, ``key``: plan and apply that one record now (like Entra's provision on
    demand) under that sync's lock: the desired and target records are cut down to the
    key after they are read, so nothing else is created, updated or deactivated. The
    guard, the tracker and a pause still apply, and a record of a batch the guard holds
    for approval is never deactivated alone (refused: the batch is approved and run as a
    whole; creating or updating such a record is fine). Refused while another run holds the
    sync's lock. Result: the plan, the requests sent (method, path, status) and the
    outcome. The SafetyAmp syncs only: a rosters user synced alone would miss the class
    memberships the next delta read never brings back.
``diagnose``
    ``sync``, ``key``: the one ``sync.diagnose`` implementation, read only.

Jobs run on their own worker thread(s) (JOB_WORKERS), never on a Flask request thread;
an exception in a job fails that job only. ``run`` and ``sync_record`` are written to
the audit log when they finish (the actor who submitted them, the outcome); the console
audits what it does itself (pause, approve, retry, dismiss). The last KEEP_JOBS jobs
are kept in memory (a replica's jobs are its own).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from utils.scrub import scrub, scrub_value

log = logging.getLogger("sync.jobs")

KINDS = ("run", "preview", "sync_record", "diagnose")
RECORD_SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")
"""Syncs ``sync_record`` supports (see the module docstring for rosters)."""
PREVIEW_WRITES = 500
KEEP_JOBS = 200
MAX_WAITING = 20
"""Jobs queued for the worker threads at most; more are refused (a stuck console
clicking "preview" must not pile up dry runs of 50 000 records)."""
JOB_WORKERS = 1
RUN_JOB_TIMEOUT_SECONDS = 6 * 3600.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class JobError(ValueError):
    """A job refused at submission (unknown kind, bad parameters, too many waiting)."""


class Jobs:
    """``submit``/``get``/``recent`` for the console; ``cycle_started``/``sync_finished``/
    ``cycle_finished`` are called by the daemon's worker. ``daemon`` is main.Daemon (its
    ``runtime``, ``state.syncs``, ``state.triggers``)."""

    def __init__(self, daemon: Any, *, workers: int = JOB_WORKERS) -> None:
        self._daemon = daemon
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._waiting_runs: dict[str, dict[str, Any]] = {}  # run jobs by id, until finished
        self._queued = 0
        self._seq = itertools.count(1)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="console-job")

    # ---- the console's side ---------------------------------------------------------
    def submit(self, kind: str, *, actor: str, role: str = "operator", **params: Any) -> str:
        """Queue a job; returns its id at once. JobError for bad input."""
        if kind not in KINDS:
            raise JobError(f"unknown job kind {kind!r}; known: {', '.join(KINDS)}")
        params = self._check(kind, params)
        job_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{next(self._seq)}-{uuid.uuid4().hex[:6]}"
        job: dict[str, Any] = {
            "id": job_id,
            "kind": kind,
            "actor": scrub(str(actor))[:200],
            "role": role,
            "state": "queued",
            "params": params,
            "submitted_at": _now(),
            "started_at": None,
            "finished_at": None,
            "result": None,
            "error": None,
        }
        with self._lock:
            if kind != "run" and self._queued >= MAX_WAITING:
                raise JobError(f"{self._queued} jobs are waiting already: try again when they have finished")
            self._jobs[job_id] = job
            while len(self._jobs) > KEEP_JOBS:
                old_id, old = next(iter(self._jobs.items()))
                if old["state"] in ("queued", "running"):
                    break  # never forget a job still in progress
                self._jobs.pop(old_id)
            if kind == "run":
                job["_submitted"] = time.monotonic()
                self._waiting_runs[job_id] = job
            else:
                self._queued += 1
        log.info("console job %s queued: %s %s", job_id, kind, params, extra={"event": "job_queued"})
        if kind == "run":
            triggers = self._daemon.state.triggers
            for name in params["syncs"] or [None]:
                triggers.request(name, operator=True, by=job["actor"])  # what an authenticated POST /sync does
        else:
            self._pool.submit(self._work, job)
        return job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        self._expire_runs()
        with self._lock:
            job = self._jobs.get(job_id)
            return _public(job) if job is not None else None

    def recent(self, count: int = 20) -> list[dict[str, Any]]:
        """The newest jobs first."""
        self._expire_runs()
        with self._lock:
            jobs = list(self._jobs.values())[-max(0, int(count)) :] if count > 0 else []
            return [_public(j) for j in reversed(jobs)]

    def close(self) -> None:
        """The daemon stops: waiting run jobs fail, queued ones are dropped."""
        with self._lock:
            for job in list(self._waiting_runs.values()):
                self._finish(job, error="the daemon stopped before the run finished")
            self._waiting_runs.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        enabled = tuple(self._daemon.state.syncs)
        if kind in ("run", "preview"):
            syncs = params.get("syncs")
            if syncs is not None:
                if isinstance(syncs, str):
                    syncs = [syncs]
                unknown = [s for s in syncs if s not in enabled]
                if unknown or not syncs:
                    raise JobError(f"unknown or disabled sync(s) {unknown or '(none)'}; enabled: {', '.join(enabled)}")
                syncs = [s for s in enabled if s in syncs]  # run order
            return {"syncs": syncs}
        sync, key = params.get("sync"), params.get("key")
        if kind == "sync_record" and sync == "rosters":
            raise JobError(
                f"one-record sync supports {', '.join(RECORD_SYNCS)}; for rosters, run the sync "
                "(a user synced alone would miss the class memberships a delta read does not bring again)"
            )
        if sync not in enabled:
            raise JobError(f"unknown or disabled sync {sync!r}; enabled: {', '.join(enabled)}")
        if not isinstance(key, str) or not key.strip():
            raise JobError("a key is needed")
        return {"sync": sync, "key": key.strip()}

    # ---- run jobs: followed through the daemon's cycles -------------------------------
    def cycle_started(self, taken_at: float, syncs: tuple[str, ...] | list[str]) -> None:
        """The worker took the pending triggers at ``taken_at`` (monotonic) and runs
        ``syncs``: run jobs submitted before that are now running in this cycle."""
        with self._lock:
            for job in self._waiting_runs.values():
                if job["state"] == "queued" and job["_submitted"] <= taken_at:
                    wanted = job["params"]["syncs"] or list(self._daemon.state.syncs)
                    if set(wanted) & set(syncs):
                        job.update(state="running", started_at=_now(), _cycle=taken_at, _runs={})

    def sync_finished(self, taken_at: float, summary: dict[str, Any]) -> None:
        """One sync of the cycle that started at ``taken_at`` reported its result."""
        done = []
        with self._lock:
            for job in list(self._waiting_runs.values()):
                if job.get("_cycle") != taken_at:
                    continue
                wanted = job["params"]["syncs"] or list(self._daemon.state.syncs)
                if summary.get("sync") in wanted:
                    job["_runs"][summary["sync"]] = dict(summary)
                    if set(job["_runs"]) >= set(wanted):
                        self._complete_run(job)
                        done.append(job)
        for job in done:
            self._audit(job)

    def cycle_finished(self, taken_at: float) -> None:
        """The cycle ended (maybe stopped early): its run jobs end with what they got."""
        done = []
        with self._lock:
            for job in list(self._waiting_runs.values()):
                if job.get("_cycle") == taken_at:
                    self._complete_run(job)
                    done.append(job)
        for job in done:
            self._audit(job)

    def _complete_run(self, job: dict[str, Any]) -> None:
        from sync.base import RunResult
        from sync.runner import overall_status

        wanted = job["params"]["syncs"] or list(self._daemon.state.syncs)
        runs = [job["_runs"][s] for s in wanted if s in job["_runs"]]
        missing = [s for s in wanted if s not in job["_runs"]]
        status = overall_status([RunResult(r["sync"], status=r["status"]) for r in runs])
        result = {"status": status, "runs": runs}
        error = f"the cycle ended before {', '.join(missing)} ran (shutdown)" if missing else None
        self._waiting_runs.pop(job["id"], None)
        self._finish(job, result=result, error=error)

    def _expire_runs(self) -> None:
        with self._lock:
            now = time.monotonic()
            for job in list(self._waiting_runs.values()):
                if now - job["_submitted"] > RUN_JOB_TIMEOUT_SECONDS:
                    self._waiting_runs.pop(job["id"], None)
                    self._finish(job, error="no cycle ran these syncs in time (is the worker stalled? see /health)")

    # ---- preview, sync_record, diagnose: on the job worker thread(s) -------------------
    def _work(self, job: dict[str, Any]) -> None:
        with self._lock:
            self._queued -= 1
            job.update(state="running", started_at=_now())
        try:
            runtime = self._daemon.runtime
            if runtime is None:
                raise JobError("the daemon is not configured (see /ready)")
            handler = {"preview": self._preview, "sync_record": self._sync_record, "diagnose": self._diagnose}[job["kind"]]
            result, error = handler(runtime, job["params"])
        except JobError as exc:
            result, error = None, str(exc)
        except Exception as exc:  # a job failing must never hurt the daemon
            log.exception("console job %s failed", job["id"])
            result, error = None, f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            self._finish(job, result=result, error=error)
        if job["kind"] == "sync_record":
            self._audit(job)

    def _preview(self, runtime: Any, params: dict[str, Any]) -> tuple[dict[str, Any], None]:
        from config.bootstrap import new_context, new_run_id
        from sync.runner import run_syncs

        syncs = params["syncs"] or list(self._daemon.state.syncs)
        ctx = new_context(runtime, run_id=new_run_id() + "-preview", dry_run=True, runner_kind="daemon")
        results = run_syncs(ctx, syncs)
        out = []
        for r in results:
            out.append({
                "sync": r.sync,
                "status": r.status,
                "counts": dict(r.counts),
                "error": r.error,
                "guard_tripped": r.guard_tripped,
                "approval": r.approval,
                "writes": r.plan[:PREVIEW_WRITES],
                "writes_total": len(r.plan),
                "truncated": len(r.plan) > PREVIEW_WRITES,
                "held": r.held[:PREVIEW_WRITES],
                "held_total": len(r.held),
            })  # fmt: skip
        return {"syncs": out}, None

    def _sync_record(self, runtime: Any, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        from config.bootstrap import new_context, new_run_id
        from sync.diagnose import ImpossibleKey, normalise_key
        from sync.runner import run_syncs
        from utils.request_log import RequestLog, recording

        sync = params["sync"]
        try:
            key = normalise_key(sync, params["key"])
        except ImpossibleKey as exc:
            raise JobError(exc.message) from None
        requests_log = RequestLog()
        ctx = new_context(runtime, run_id=new_run_id() + "-record", force=[sync], runner_kind="daemon", only_key=key)
        with recording(requests_log):
            [result] = run_syncs(ctx, [sync])
        outcome = next((k for k in ("created", "updated", "deactivated", "failed", "skipped") if result.counts[k]), None)
        if outcome is None:
            outcome = "unchanged" if result.status in ("success", "partial") else result.status
        report = {
            "sync": sync,
            "key": key,
            "outcome": outcome,
            "status": result.status,
            "plan": result.plan,
            "requests": requests_log.entries(),
            "requests_total": requests_log.total,
            "writes": requests_log.writes(),
            "run": result.summary(),
            "run_id": ctx.events.run_id,
        }
        error = None
        if result.status == "skipped":
            error = f"refused: {result.error}"
            if "lock" in (result.error or ""):
                error += "; try again when that run has finished"
        elif result.status == "failed":
            error = result.error or "failed"
        return report, error

    def _diagnose(self, runtime: Any, params: dict[str, Any]) -> tuple[dict[str, Any], None]:
        from sync.diagnose import ImpossibleKey, diagnose

        try:
            return diagnose(runtime, params["sync"], params["key"]), None
        except ImpossibleKey as exc:
            raise JobError(exc.message) from None

    # ---- bookkeeping ------------------------------------------------------------------
    def _finish(self, job: dict[str, Any], *, result: Any = None, error: str | None = None) -> None:
        job.update(
            state="failed" if error else "done",
            finished_at=_now(),
            result=scrub_value(result) if result is not None else None,
            error=scrub(error) if error else None,
        )
        log.info("console job %s %s", job["id"], job["state"], extra={"event": "job_finished"})

    def _audit(self, job: dict[str, Any]) -> None:
        control = getattr(self._daemon.runtime, "control", None)
        if control is None:
            return
        params = job["params"]
        if job["kind"] == "run":
            target = "sync/" + ",".join(params["syncs"]) if params["syncs"] else "sync/all"
            outcome = job["error"] or (job["result"] or {}).get("status", "")
        else:
            target = f"record/{params['sync']}/{params['key']}"
            outcome = job["error"] or (job["result"] or {}).get("outcome", "")
        try:
            control.audit(
                actor=job["actor"],
                role=job["role"],
                action=job["kind"],
                target=target,
                result=str(outcome),
                detail={"job_id": job["id"]},
            )
        except Exception:
            log.warning("could not audit console job %s", job["id"], exc_info=True)


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if not k.startswith("_")}
