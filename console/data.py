"""What the console's pages show, gathered from the daemon's state.

Everything here only reads: the daemon's in-memory state, the runtime's counters and
breakers, the tracker, the quarantine and the operator state in Redis, the run files
under OUTPUT_DIR. None of it takes a lock a sync needs, and none of it calls an outside
system (the Viewpoint status is the daemon's cached readiness check). Each part is read
on its own: a part that fails (Redis down, a breaker that cannot be read) is shown as
unknown with the reason, and the rest of the page still renders.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from config.settings import ALL_SYNCS, SOURCE_SETTINGS, Settings
from console.runfiles import ListFile, RunFileError, run_file
from utils.scrub import scrub, url_secrets

log = logging.getLogger("console")

T = TypeVar("T")

SERVICE_NAMES = {
    "safetyamp": "SafetyAmp",
    "samsara": "Samsara",
    "graph": "Microsoft Graph (Entra ID)",
    "viewpoint": "Viewpoint Vista database",
    "oneroster": "OneRoster (student information system)",
    "scim": "SCIM service",
    "redis": "Redis (shared state)",
}
SYNC_SUMMARIES = {
    "departments": "Viewpoint departments to SafetyAmp site clusters",
    "jobs": "Viewpoint jobs to SafetyAmp sites",
    "titles": "Employee titles to SafetyAmp user titles",
    "employees": "Viewpoint employees (with Entra ID e-mail) to SafetyAmp users",
    "vehicles": "Samsara vehicles to SafetyAmp assets",
    "rosters": "OneRoster users and classes to SCIM users and groups",
}
KEY_HINTS = {
    "departments": "department code (PRDept), e.g. 100",
    "jobs": "job number, e.g. 24-1001",
    "titles": "title text, e.g. Foreman",
    "employees": "employee number, e.g. 1001",
    "vehicles": "Samsara vehicle id",
    "rosters": "OneRoster sourcedId; user/<id> or class/<id> to choose",
}
PACKAGES = ("flask", "waitress", "redis", "requests", "sqlalchemy", "pydantic", "prometheus-client", "scim2-server")


class Unknown:
    """A part of the page that could not be read, and why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"unknown ({self.why})"


def attempt(what: str, read: Callable[[], T]) -> T | Unknown:
    try:
        return read()
    except Exception as exc:
        log.warning("console could not read %s: %s", what, type(exc).__name__, exc_info=True)
        return Unknown(scrub(f"{type(exc).__name__}: {exc}")[:200])


# ---- time in words ----------------------------------------------------------------------
def parse_time(value: Any) -> float | None:
    """Unix seconds from a number or an ISO 8601 text; None when neither."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(value: Any) -> str:
    seconds = parse_time(value)
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 days 4 h``."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours = int(minutes // 60)
    if hours < 48:
        rest = int(minutes - hours * 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days = hours // 24
    return f"{days} days {hours - days * 24} h"


def age(value: Any, now: float | None = None) -> str:
    seconds = parse_time(value)
    if seconds is None:
        return ""
    delta = (now or time.time()) - seconds
    return f"in {span(delta)}" if delta < 0 else f"{span(delta)} ago"


def duration(seconds: Any) -> str:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return ""
    if value < 60:
        return f"{value:.1f} s"
    return span(value)


# ---- state of the daemon -----------------------------------------------------------------
def control_of(daemon: Any) -> Any:
    return getattr(daemon.runtime, "control", None) if daemon.runtime is not None else None


def jobs_of(daemon: Any) -> Any:
    return getattr(daemon, "jobs", None)


def _latency(rt: Any) -> dict[str, dict[str, float]]:
    reader = getattr(rt.stats, "latency", None)
    if callable(reader):
        return dict(reader())
    out: dict[str, dict[str, float]] = {}
    registry = getattr(getattr(rt, "metrics", None), "registry", None)
    if registry is None:
        return out
    for metric in registry.collect():
        if metric.name != "external_request_duration_seconds":
            continue
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for sample in metric.samples:
            service = sample.labels.get("service", "")
            if sample.name.endswith("_sum"):
                sums[service] = sample.value
            elif sample.name.endswith("_count"):
                counts[service] = sample.value
        for service, count in counts.items():
            if count:
                out[service] = {"count": int(count), "mean_ms": 1000.0 * sums.get(service, 0.0) / count}
    return out


def _last_success(rt: Any, sync: str) -> float | None:
    registry = getattr(getattr(rt, "metrics", None), "registry", None)
    if registry is None:
        return None
    value = registry.get_sample_value("sync_last_success_timestamp_seconds", {"sync": sync})
    return float(value) if value else None


def _last_success_on_record(control: Any, sync: str) -> float | None:
    """When the run history last saw ``sync`` succeed (the gauge starts empty after a
    restart; the history in Redis does not)."""
    if control is None:
        return None
    found = attempt("last success", functools.partial(control.runs, sync=sync, status="success", count=1))
    if isinstance(found, list) and found:
        return parse_time(found[0].get("finished_at"))
    return None


def _newest_run(mine: dict[str, Any] | None, control: Any, sync: str) -> dict[str, Any] | None:
    """The newer of this daemon's last run of ``sync`` and the shared history's newest
    (a CronJob's or an operator's `sync_batch.py` run is recorded there, not here)."""
    if control is None:
        return mine
    found = attempt("run history", functools.partial(control.runs, sync=sync, count=5))
    # One-record runs ("sync this record now") are not the sync's last run.
    shared = next((r for r in found if not r.get("key")), None) if isinstance(found, list) else None
    if shared is None:
        return mine
    if mine is None or (parse_time(shared.get("finished_at")) or 0) > (parse_time(mine.get("finished_at")) or 0):
        return shared
    return mine


def _newest_success(rt: Any, control: Any, sync: str, last: dict[str, Any] | None) -> float | None:
    gauge = _last_success(rt, sync)
    if last and last.get("status") == "success":
        return max(gauge or 0.0, parse_time(last.get("finished_at")) or 0.0) or None
    # The newest run did not succeed: the history says when one last did (the gauge
    # starts empty after a restart, and knows nothing of other runners' runs).
    return max(gauge or 0.0, _last_success_on_record(control, sync) or 0.0) or None


def _state_label(running: bool, paused: Any, health: dict[str, Any], open_breakers: list[str]) -> tuple[str, str]:
    """The word (a CSS class) and the label of a sync's state, the first that holds."""
    if running:
        return "running", "Running"
    if paused:
        return "paused", "Paused"
    if health["state"] == "quarantined":
        return "quarantined", "Quarantined (backing off)"
    if open_breakers:
        return "breaker-open", "Waiting: a service is failing"
    return "idle", "Idle"


def _sync_row(
    sync: str,
    *,
    state: Any,
    rt: Any,
    control: Any,
    last: dict[str, Any] | None,
    pauses: Any,
    holds: Any,
    snapshots: dict[str, Any],
    progress_map: Any,
    now: float,
) -> dict[str, Any]:
    """One sync's row of the overview."""
    from sync.runner import SYNC_SERVICES
    from utils.health import sync_state

    quarantine = (
        attempt("quarantine", functools.partial(rt.quarantine.status, sync)) if rt is not None and rt.quarantine else None
    )
    health = sync_state(last, quarantine if isinstance(quarantine, dict) else None, now)
    paused = pauses.get(sync) if isinstance(pauses, dict) else None
    hold = holds.get(sync) if isinstance(holds, dict) else None
    open_breakers = [
        svc
        for svc in SYNC_SERVICES.get(sync, ())
        if isinstance(snapshots.get(svc), dict) and snapshots[svc].get("state") != "closed"
    ]
    running = state.running == sync
    progress = progress_map.get(sync) if running else None
    word, label = _state_label(running, paused, health, open_breakers)
    failed = attempt("failed records", functools.partial(rt.tracker.count, sync)) if rt is not None else None
    return {
        "name": sync,
        "summary": SYNC_SUMMARIES.get(sync, ""),
        "state": word,
        "state_label": label,
        "health": health,
        "progress": _progress(progress),
        "paused": paused,
        "hold": hold,
        "quarantine": _quarantine(quarantine, now) if isinstance(quarantine, dict) else quarantine,
        "open_breakers": open_breakers,
        "last": _last_run(last, now),
        "last_success": age(_newest_success(rt, control, sync, last), now) if rt is not None else "",
        "failed_records": failed,
    }


def overview(daemon: Any) -> dict[str, Any]:
    """Every sync's state and every outside service's, for the overview page."""
    now = time.time()
    state = daemon.state
    rt = daemon.runtime
    with state.lock:
        last_runs = dict(state.last_runs)
    control = control_of(daemon)
    pauses = attempt("pauses", control.pauses) if control is not None else {}
    holds = attempt("held deactivations", control.holds) if control is not None else {}
    progress_map = getattr(state, "progress", None) or {}
    breakers = (getattr(rt, "breakers", None) or {}) if rt is not None else {}
    snapshots: dict[str, Any] = {}
    for service, breaker in breakers.items():
        snapshots[service] = attempt(f"the {service} breaker", breaker.snapshot)
    syncs = [
        _sync_row(
            sync,
            state=state,
            rt=rt,
            control=control,
            last=_newest_run(last_runs.get(sync), control, sync),
            pauses=pauses,
            holds=holds,
            snapshots=snapshots,
            progress_map=progress_map,
            now=now,
        )
        for sync in state.syncs
    ]
    services = _services(daemon, snapshots, now)
    ready, ready_reason = daemon.ready()
    next_at = state.next_run_at
    return {
        "syncs": syncs,
        "services": services,
        "ready": ready,
        "ready_reason": ready_reason,
        "config_error": list(state.config_error),
        "next_run": iso(next_at) if next_at else "",
        "next_run_in": age(next_at, now) if next_at else "",
        "running": state.running,
        "now": iso(now),
        "pauses": pauses,
        "holds": holds,
    }


def _progress(progress: Any) -> dict[str, Any] | None:
    """``{"done", "total", "percent"}`` from the daemon's progress of a running sync (a dict
    with ``done``/``total`` once the sync knows how many writes it has; ``started_at`` only
    while it is still reading)."""
    if not progress:
        return None
    raw: Any = (progress.get("done"), progress.get("total")) if isinstance(progress, dict) else progress
    try:
        done, total = int(raw[0]), int(raw[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return {"done": None, "total": None, "percent": None, "reading": True}
    return {"done": done, "total": total, "percent": int(100 * done / total) if total else 0, "reading": False}


def _quarantine(status: dict[str, Any], now: float) -> dict[str, Any] | None:
    until = parse_time(status.get("until"))
    if until is None or until <= now:
        return None
    return {"until": iso(until), "in": age(until, now), "reason": status.get("reason"), "bad_runs": status.get("bad_runs")}


def _last_run(last: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    if not last:
        return None
    counts = {k: last.get(k, 0) for k in ("created", "updated", "deactivated", "unchanged", "skipped", "failed")}
    if isinstance(last.get("counts"), dict):
        counts.update(last["counts"])
    return {
        "status": last.get("status"),
        "counts": counts,
        "duration": duration(last.get("duration_seconds")),
        "finished_at": iso(last.get("finished_at")),
        "age": age(last.get("finished_at"), now),
        "error": last.get("error"),
        "run_id": last.get("run_id"),
    }


def _services(daemon: Any, snapshots: dict[str, Any], now: float) -> list[dict[str, Any]]:
    rt = daemon.runtime
    if rt is None:
        return []
    counts = attempt("request counts", rt.stats.counts)
    statuses = attempt("response codes", rt.stats.statuses)
    latency = attempt("latency", lambda: _latency(rt))
    last_errors = attempt("last errors", rt.stats.last_errors) if callable(getattr(rt.stats, "last_errors", None)) else {}
    names = [
        s for s in ("safetyamp", "graph", "samsara", "oneroster", "scim") if s in snapshots or getattr(rt, s, None) is not None
    ]
    out = [
        _service_row(
            service,
            snapshots.get(service),
            sent=counts.get(service, {}) if isinstance(counts, dict) else {},
            codes=statuses.get(service, {}) if isinstance(statuses, dict) else {},
            lat=latency.get(service) if isinstance(latency, dict) else None,
            err=_error_text(last_errors.get(service)) if isinstance(last_errors, dict) else None,
            now=now,
        )
        for service in names
    ]
    if getattr(rt, "viewpoint", None) is not None:
        out.append(_viewpoint_row(daemon))
    tracker_health = getattr(rt.tracker, "health", None)
    redis = attempt("Redis", tracker_health) if callable(tracker_health) else None
    if isinstance(redis, dict):
        out.append(_redis_row(redis))
    return out


def _service_row(
    service: str,
    snap: Any,
    *,
    sent: dict[str, Any],
    codes: dict[str, Any],
    lat: Any,
    err: dict[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    """One HTTP service's row: its breaker, the requests sent and what came back."""
    problems = sum(n for code, n in codes.items() if not code.isdigit() or int(code) >= 500 or code == "429")
    return {
        "name": service,
        "label": SERVICE_NAMES.get(service, service),
        "breaker": snap if isinstance(snap, dict) else None,
        "breaker_unknown": str(snap) if isinstance(snap, Unknown) else None,
        "requests": sum(sent.values()),
        "by_method": sent,
        "statuses": codes,
        "problems": problems,
        "latency_ms": round(float(lat.get("mean_ms", 0.0)), 1) if isinstance(lat, dict) else None,
        "p95_ms": lat.get("p95_ms") if isinstance(lat, dict) else None,
        "last_error": err,
        "opened": age(snap.get("opened_at"), now) if isinstance(snap, dict) and snap.get("opened_at") else "",
    }


def _viewpoint_row(daemon: Any) -> dict[str, Any]:
    """Viewpoint's row: no breaker or request counts, only whether the daemon is ready."""
    ready, why = daemon.ready()
    return {
        "name": "viewpoint",
        "label": SERVICE_NAMES["viewpoint"],
        "breaker": None,
        "breaker_unknown": None,
        "requests": None,
        "by_method": {},
        "statuses": {},
        "problems": 0 if ready else 1,
        "latency_ms": None,
        "last_error": None if ready else {"error": why},
        "opened": "",
        "answering": ready or "database" not in why.lower(),
    }


def _redis_row(redis: dict[str, Any]) -> dict[str, Any]:
    """Redis's row, from the tracker's health (degraded: state kept in memory)."""
    return {
        "name": "redis",
        "label": SERVICE_NAMES["redis"],
        "breaker": None,
        "breaker_unknown": None,
        "requests": None,
        "by_method": {},
        "statuses": {},
        "problems": 1 if redis.get("degraded") else 0,
        "latency_ms": None,
        "last_error": {"error": "unreachable: state kept in memory meanwhile"} if redis.get("degraded") else None,
        "opened": "",
    }


def _error_text(entry: Any) -> dict[str, Any] | None:
    """The runtime's last error of a service (``at``, ``method``, ``status``, ``message``)
    as one sentence with its time."""
    if not isinstance(entry, dict) or not entry:
        return None
    parts = []
    if entry.get("method") or entry.get("status"):
        parts.append(f"{entry.get('method') or 'a request'} answered {entry.get('status')}")
    if entry.get("message"):
        parts.append(str(entry["message"]))
    return {"error": "; ".join(parts) or str(entry.get("error") or "an error"), "at": entry.get("at")}


# ---- run history ------------------------------------------------------------------------
def run_view(entry: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """One run of the history as the pages show it."""
    counts = entry.get("counts") if isinstance(entry.get("counts"), dict) else {}
    return {
        **entry,
        "counts": counts,
        "started": iso(entry.get("started_at")),
        "age": age(entry.get("finished_at") or entry.get("started_at"), now),
        "duration": duration(entry.get("duration_seconds")),
        "runner_text": _runner(entry.get("runner")),
        "url_id": entry.get("url_id") or entry.get("run_id"),
    }


def _runner(runner: Any) -> str:
    if not isinstance(runner, dict):
        return ""
    kind = runner.get("kind") or ""
    host = runner.get("host") or ""
    return f"{kind} on {host}" if host else str(kind)


def runs_from_files(
    output_dir: Path, sync: str | None, status: str | None, count: int, before: str | None
) -> list[dict[str, Any]]:
    """Run history from the changes files, for a daemon without run history in Redis
    (older engine): newest first, paged by file name. Reads only the heads of the files
    it shows (and, with a status filter, of the ones it skips, at most 20 pages' worth)."""
    folder = output_dir / "changes"
    try:
        names = sorted(
            (
                e.name
                for e in os.scandir(folder)
                if run_file(folder, e.name) is not None and (sync is None or e.name.startswith(sync + "-"))
            ),
            key=_name_order,
            reverse=True,
        )
    except OSError:
        return []
    if before:
        names = [n for n in names if _name_order(n) < _name_order(before)]
    out: list[dict[str, Any]] = []
    for name in names[: count * 20]:
        entry = run_from_file(folder / name)
        if entry is None or (status and entry.get("status") != status):
            continue
        out.append(entry)
        if len(out) >= count:
            break
    return out


def run_from_file(path: Path | None) -> dict[str, Any] | None:
    """A history entry from a changes file's head (None for a dry run or no such file)."""
    head = file_head(path) if path is not None else None
    if head is None or head.get("dry_run"):
        return None
    return {
        "id": path.name,  # type: ignore[union-attr]
        "url_id": path.stem,  # type: ignore[union-attr]
        "run_id": head.get("run_id"),
        "sync": head.get("sync"),
        "status": head.get("status"),
        "started_at": head.get("started_at"),
        "finished_at": head.get("finished_at"),
        "duration_seconds": head.get("duration_seconds") or _seconds_between(head.get("started_at"), head.get("finished_at")),
        "counts": head.get("counts") or {},
        "error": head.get("failure") or head.get("error"),
        "changes_file": path.name,  # type: ignore[union-attr]
        "errors_file": head.get("errors_file"),
    }


def _name_order(name: str) -> tuple[str, int]:
    stem = name[: -len(".json")] if name.endswith(".json") else name
    _sync, _, rest = stem.partition("-")
    stamp, _, n = rest.partition("-")
    return stamp, int(n) if n.isdigit() else 1


def _seconds_between(start: Any, end: Any) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return round(b - a, 3) if a is not None and b is not None else None


def file_head(path: Path) -> dict[str, Any] | None:
    """The head of a changes file (everything but the list of changes)."""
    try:
        return ListFile(path, "changes").page(size=0).head if path.is_file() else None
    except (RunFileError, OSError):
        return None


# ---- configuration --------------------------------------------------------------------
def configuration(daemon: Any) -> dict[str, Any]:
    settings: Settings | None = daemon.state.settings
    out: dict[str, Any] = {"syncs": [], "settings": [], "versions": versions(), "config_error": list(daemon.state.config_error)}
    if settings is None:
        return out
    enabled = set(daemon.state.syncs)
    for sync in ALL_SYNCS:
        missing = settings.missing_for(sync)
        if sync in enabled:
            status, text = "enabled", "Runs every " + span(settings.sync_interval_minutes * 60)
        elif settings.sync_types and sync not in settings.sync_types:
            status, text = "off", "Left out by SYNC_TYPES"
        elif missing:
            status, text = "not configured", "Missing: " + ", ".join(missing)
        else:
            status, text = "off", "Configured but not enabled"
        out["syncs"].append({"name": sync, "summary": SYNC_SUMMARIES.get(sync, ""), "status": status, "text": text})
    secrets_set = [v for v in settings.secret_values() if v]
    for name, info in type(settings).model_fields.items():
        alias = str(info.alias or name)
        value = getattr(settings, name)
        secret = isinstance(value, SecretStr) or "SecretStr" in str(info.annotation)
        default = info.default
        if secret:
            shown = "set (hidden)" if value is not None and value.get_secret_value() else "not set"
        elif value is None:
            shown = "not set"
        elif isinstance(value, tuple):
            shown = ", ".join(str(v) for v in value) or "(empty)"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
            for credential in url_secrets(shown):
                shown = shown.replace(credential, "***")
        out["settings"].append(
            {
                "name": alias,
                "value": scrub(shown, secrets_set),
                "secret": secret,
                "changed": value != default and not (secret and value is None),
                "group": _group(alias),
                "description": info.description or "",
            }
        )
    return out


def _group(alias: str) -> str:
    for source, names in SOURCE_SETTINGS.items():
        if alias in names:
            return source
    for prefix, group in (
        ("CONSOLE_", "console"),
        ("SAFETYAMP_", "safetyamp"),
        ("SAMSARA_", "samsara"),
        ("VEHICLE_", "samsara"),
        ("MS_GRAPH_", "graph"),
        ("SQL_", "viewpoint"),
        ("VIEWPOINT_", "viewpoint"),
        ("JOB_", "viewpoint"),
        ("ONEROSTER_", "oneroster"),
        ("ROSTER_", "oneroster"),
        ("SCIM_", "scim"),
        ("BREAKER_", "resilience"),
        ("LOCK_", "resilience"),
    ):
        if alias.startswith(prefix):
            return group
    return "general"


def versions() -> list[tuple[str, str]]:
    out = [("Python", platform.python_version()), ("Platform", f"{platform.system()} {platform.machine()}")]
    product = _product_version()
    if product:
        out.insert(0, ("safetyamp-sync", product))
    for package in PACKAGES:
        try:
            out.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            continue
    return out


def _product_version() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        import tomllib

        with open(root / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, ValueError):
        return os.environ.get("APP_VERSION") or None
