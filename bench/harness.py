"""Plumbing of the benchmark: sandbox processes, product runs, the emulators' request log.

Everything runs as separate processes, as in production: the emulators in one
(``python -m sandbox serve``), each sync run in another (``python sync_batch.py``
without ``--sandbox``, pointed at the emulators by the same settings ``--sandbox``
would use). So the sync process's peak RSS and CPU are its own, and the emulators do
not compete with it for one interpreter lock.

What the emulators received is read from their request log (``requests`` in
``targets.sqlite``: service, method, path, status, time), opened read-only: that is
what each outside system saw, independent of the product's own counting.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGETS_FILE = "targets.sqlite"
ROSTER_FILE = "oneroster.sqlite"


def python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child: ours minus anything that would steer the product or
    the emulators elsewhere, plus ``extra``."""
    drop = ("SANDBOX_", "SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "ONEROSTER_", "SCIM_", "VIEWPOINT_", "SQL_", "SYNC_", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ("OUTPUT_DIR", "LOG_LEVEL", "LOG_FORMAT")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Sandbox:
    """A ``python -m sandbox serve`` child process over one sandbox directory."""

    def __init__(self, repo: Path, directory: Path, *, size: int, seed: int, faults: Mapping[str, Any] | None = None) -> None:
        self.repo = repo
        self.directory = directory
        self.size = size
        self.seed = seed
        self.faults = dict(faults or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}

    def launch(self) -> None:
        """Start the process (it seeds a new directory first, then serves)."""
        self.port_file = self.directory.parent / f"{self.directory.name}.ports.json"
        self.port_file.unlink(missing_ok=True)
        self.log_path = self.directory.parent / f"{self.directory.name}.serve.log"
        extra = {"SANDBOX_FAULTS": json.dumps(self.faults)} if self.faults else {}
        with open(self.log_path, "ab") as log:
            self.launched = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "serve", "--dir", str(self.directory), "--size", str(self.size),
                 "--seed", str(self.seed), "--port-file", str(self.port_file)],
                cwd=self.repo, env=python_env(extra), stdout=log, stderr=log,
            )  # fmt: skip

    def ready(self, timeout: float = 900.0) -> float:
        """Wait until it serves; seconds since ``launch`` (seeding included)."""
        assert self.proc is not None
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox serve exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() - self.launched > timeout:
                self.stop()
                raise RuntimeError(f"sandbox in {self.directory} not ready after {timeout:.0f} s")
            time.sleep(0.05)
        self.endpoints = json.loads(self.port_file.read_text())
        return time.monotonic() - self.launched

    def start(self) -> float:
        self.launch()
        return self.ready()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def settings_env(self, sandbox_overrides: Any, extra: Mapping[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
        """The settings ``sync_batch.py --sandbox`` would use for this sandbox, then
        ``extra`` (which wins); names in ``drop`` fall back to the product's defaults."""
        env = dict(sandbox_overrides(self.endpoints, self.directory, {}))
        for name in drop:
            env.pop(name, None)
        env.update(extra)
        return env


@dataclass
class ProductRun:
    """One ``sync_batch.py`` child: what it printed and what it cost."""

    label: str
    returncode: int
    wall_seconds: float
    max_rss_mb: float
    cpu_seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def sync_seconds(self) -> dict[str, float]:
        return {r["sync"]: float(r.get("duration_seconds", 0.0)) for r in self.summary.get("runs", [])}


def wait_with_rusage(proc: subprocess.Popen[Any], poll_seconds: float = 0.02) -> tuple[int, Any, float]:
    """Wait for ``proc``; returns (exit code, its resource usage from ``os.wait4``, its own
    peak RSS in MB).

    The peak is the child's ``VmHWM`` (/proc/<pid>/status), read every ``poll_seconds``
    until it exits, not ``ru_maxrss``: Linux keeps the larger of the old and the new
    memory's peak across ``execve``, and subprocess starts children with ``vfork``, so a
    child's ``ru_maxrss`` is at least the bench process's own peak (755 MB once it held
    the request logs of a 50,000-employee run: every later child "peaked" there).
    VmHWM belongs to the memory the program got at ``execve``. A rise in the last
    ``poll_seconds`` before exit would be missed; the runs end writing small files."""
    peak_kb = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
        time.sleep(poll_seconds)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, peak_kb / 1024.0


def vm_hwm_kb(pid: int | str = "self") -> int:
    """A process's own peak RSS in kB (``VmHWM``; 0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_product(repo: Path, env: Mapping[str, str], log_path: Path, label: str, args: tuple[str, ...] = ()) -> ProductRun:
    """``python sync_batch.py --json --no-progress [args]`` with ``env``; stderr to ``log_path``."""
    out_path = log_path.with_suffix(".stdout")
    with open(out_path, "wb") as out, open(log_path, "ab") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "sync_batch.py", "--json", "--no-progress", *args],
            cwd=repo, env=python_env(env), stdout=out, stderr=err,
        )  # fmt: skip
        code, usage, peak_mb = wait_with_rusage(proc)
        wall = time.monotonic() - started
    lines = [line for line in out_path.read_text().splitlines() if line.strip()]
    summary: dict[str, Any] = {}
    if lines:
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            summary = {}
    if not summary:
        raise RuntimeError(f"{label}: sync_batch.py printed no JSON summary (exit {code}); see {log_path}")
    return ProductRun(
        label=label,
        returncode=code,
        wall_seconds=wall,
        max_rss_mb=peak_mb,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        summary=summary,
    )


def run_python(repo: Path, script: Path, env: Mapping[str, str], args: tuple[str, ...] = ()) -> tuple[dict[str, Any], float]:
    """A helper script in its own process; returns (its last stdout line as JSON, peak RSS MB)."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], cwd=repo, env=python_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    return json.loads(stdout.decode().strip().splitlines()[-1]), 0.0


def mutate(repo: Path, directory: Path, percent: float, seed: int) -> dict[str, Any]:
    """``python -m sandbox mutate`` (the sandbox must be stopped: one writer at a time)."""
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "mutate", "--dir", str(directory), "--percent", str(percent), "--seed", str(seed)],
        cwd=repo, env=python_env({}), capture_output=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# reading the emulators' state (read-only)
# ---------------------------------------------------------------------------------------
def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)


def last_request_id(directory: Path) -> int:
    with _ro(directory / TARGETS_FILE) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()[0])


def requests_between(directory: Path, after: int, upto: int | None = None) -> list[dict[str, Any]]:
    """Requests the emulators logged with ``after < id <= upto``."""
    sql = "SELECT id, ts, service, method, path, status FROM requests WHERE id > ?"
    params: list[Any] = [after]
    if upto is not None:
        sql += " AND id <= ?"
        params.append(upto)
    with _ro(directory / TARGETS_FILE) as conn:
        rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    keys = ("id", "ts", "service", "method", "path", "status")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def collection_counts(directory: Path) -> dict[str, dict[str, int]]:
    """Objects per service and collection in the emulators' store."""
    with _ro(directory / TARGETS_FILE) as conn:
        rows = conn.execute("SELECT service, collection, COUNT(*) FROM records GROUP BY service, collection").fetchall()
    out: dict[str, dict[str, int]] = {}
    for service, collection, n in rows:
        out.setdefault(service, {})[collection] = int(n)
    return out


def safetyamp_state(directory: Path) -> dict[tuple[str, int], str]:
    """Every SafetyAmp object as (collection, id) -> its content without ``updated_at``."""
    state: dict[tuple[str, int], str] = {}
    with _ro(directory / TARGETS_FILE) as conn:
        for collection, rid, data in conn.execute("SELECT collection, rid, data FROM records WHERE service = 'safetyamp'"):
            obj = json.loads(data)
            obj.pop("updated_at", None)
            state[(collection, int(rid))] = json.dumps(obj, sort_keys=True)
    return state


def roster_counts(directory: Path, modified_after: str | None = None) -> dict[str, int]:
    """OneRoster records per kind (all, or those modified after an ISO time)."""
    path = directory / ROSTER_FILE
    if not path.exists():
        return {}
    sql = "SELECT kind, COUNT(*) FROM records"
    params: list[Any] = []
    if modified_after is not None:
        sql += " WHERE modified > ?"
        params.append(modified_after)
    with _ro(path) as conn:
        return {kind: int(n) for kind, n in conn.execute(sql + " GROUP BY kind", params).fetchall()}


def changed_records(before: Mapping[Any, str], after: Mapping[Any, str]) -> dict[str, int]:
    """Objects created, changed and removed between two snapshots."""
    created = sum(1 for k in after if k not in before)
    changed = sum(1 for k, v in after.items() if k in before and before[k] != v)
    removed = sum(1 for k in before if k not in after)
    return {"created": created, "changed": changed, "removed": removed, "total": created + changed + removed}


# ---------------------------------------------------------------------------------------
# the SCIM target's state, read through its API (scim2-server keeps it in memory)
# ---------------------------------------------------------------------------------------
def scim_state(endpoints: Mapping[str, Any]) -> tuple[dict[tuple[str, str], str], int]:
    """Every SCIM resource as (type, id) -> version (meta.version, else a content hash),
    and the largest page the server serves (``filter.maxResults``)."""
    import requests

    scim = endpoints.get("scim")
    if not scim:
        return {}, 0
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {scim['token']}", "Accept": "application/scim+json"})
    spc = session.get(f"{scim['url']}/ServiceProviderConfig", timeout=60).json()
    page = int((spc.get("filter") or {}).get("maxResults") or 100)
    state: dict[tuple[str, str], str] = {}
    for resource in ("Users", "Groups"):
        start = 1
        while True:
            body = session.get(f"{scim['url']}/{resource}", params={"startIndex": start, "count": page}, timeout=120).json()
            items = body.get("Resources") or []
            for item in items:
                meta = item.get("meta") or {}
                state[(resource, str(item["id"]))] = str(
                    meta.get("version") or meta.get("lastModified") or json.dumps(item, sort_keys=True)
                )
            start += len(items)
            if not items or start - 1 >= int(body.get("totalResults", 0)):
                break
    return state, page
