"""Issue 3's acceptance for the daemon and the shared breaker, as an operator meets them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner

pytestmark = pytest.mark.e2e

DESIGN_METRICS = (
    "sync_runs_total",
    "sync_records_total",
    "sync_duration_seconds",
    "sync_last_success_timestamp_seconds",
    "sync_failed_records",
    "external_requests_total",
    "external_request_duration_seconds",
    "circuit_breaker_state",
    "rate_limit_wait_seconds_total",
)


WEBHOOK_SECRET = "c2Ftc2FyYS13ZWJob29rLXNlY3JldC0xMjM0NTY3OA=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


@pytest.fixture
def daemon(tmp_path: Path):
    port = free_port()
    env = BatchRunner(tmp_path).env(
        PORT=str(port),
        HOST="127.0.0.1",
        SYNC_TRIGGER_TOKEN="operator-token-123-0123456789abcdef",
        SAMSARA_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_DEBOUNCE_SECONDS="0",
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--sandbox-size", "60"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield proc, base, started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def get(url: str, **kw):
    try:
        return requests.get(url, timeout=5, **kw)
    except requests.ConnectionError:
        return None


def test_daemon_probes_metrics_operator_endpoints_and_sigterm(daemon) -> None:
    proc, base, started = daemon
    live = wait_for(lambda: (r := get(base + "/live")) is not None and r.status_code == 200, 5.0)
    assert live, "/live did not answer 200 within 5 s of start"
    assert time.monotonic() - started < 5.0 + 1.0

    def all_metrics():
        r = get(base + "/metrics")
        # series exist at 0 from start-up: a finished run is a duration sample
        if r is None or "sync_duration_seconds_count{" not in r.text:
            return None
        return r.text

    text = wait_for(all_metrics, 90.0, 0.5)
    assert text, "no sync finished within 90 s"
    text = wait_for(lambda: (t := all_metrics()) and 'sync="vehicles"' in t and t, 60.0, 0.5) or text
    for name in DESIGN_METRICS:
        assert f"\n{name}" in text or text.startswith(name), f"/metrics lacks {name}"

    ready = get(base + "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    health = get(base + "/health").json()
    assert health["last_runs"] and health["dependencies"]["safetyamp"]["breaker"]["state"] == "closed"
    assert "operator-token-123-0123456789abcdef" not in json.dumps(health)

    assert requests.post(base + "/sync", timeout=5).status_code == 401
    assert requests.post(base + "/sync", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    assert get(base + "/diagnose/employees/1001").status_code == 401
    ok = requests.post(base + "/sync/jobs", headers={"Authorization": "Bearer operator-token-123-0123456789abcdef"}, timeout=5)
    assert ok.status_code == 202
    diag = get(base + "/diagnose/employees/1001", headers={"Authorization": "Bearer operator-token-123-0123456789abcdef"})
    assert diag.status_code == 200 and diag.json()["verdict"] in (
        "IN_SYNC",
        "PENDING",
        "ISSUE_IN_SOURCE",
        "ISSUE_IN_TARGET",
        "NOT_IN_SCOPE",
    )

    # Samsara webhook: signed and fresh -> accepted; unsigned, stale or replayed -> 401.
    from utils.webhooks import sign

    body = json.dumps({"eventId": "e-1", "eventType": "VehicleUpdated", "data": {}}).encode()
    ts = str(int(time.time()))
    headers = {
        "X-Samsara-Timestamp": ts,
        "X-Samsara-Signature": sign(WEBHOOK_SECRET, ts, body),
        "Content-Type": "application/json",
    }
    assert requests.post(base + "/webhooks/samsara", data=body, headers=headers, timeout=5).status_code == 202
    assert requests.post(base + "/webhooks/samsara", data=body, headers=headers, timeout=5).status_code == 401  # replay
    assert requests.post(base + "/webhooks/samsara", data=body, timeout=5).status_code == 401
    old = str(int(time.time()) - 3600)
    stale = {**headers, "X-Samsara-Timestamp": old, "X-Samsara-Signature": sign(WEBHOOK_SECRET, old, body)}
    assert requests.post(base + "/webhooks/samsara", data=body, headers=stale, timeout=5).status_code == 401
    runs = wait_for(lambda: get(base + "/health").json()["last_runs"].get("vehicles"), 60.0, 0.5)
    assert runs, "no vehicles run finished"
    before = runs["run_id"]
    rerun = wait_for(lambda: get(base + "/health").json()["last_runs"]["vehicles"]["run_id"] != before, 60.0, 0.5)
    assert rerun, "the webhook did not trigger a vehicles run"

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=25) == 0
    assert time.monotonic() - t0 < 25


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_breaker_opens_under_total_failure_and_closes_after_faults_lift(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=40)
    fast = {"BREAKER_RECOVERY_SECONDS": "1", "BREAKER_FAILURE_THRESHOLD": "2", "HTTP_MAX_RETRY_SECONDS": "5"}
    broken = batch.run(
        "--only", "departments,jobs", expect=(1,), SANDBOX_FAULTS=json.dumps({"safetyamp": {"error_rate": 1.0}}), **fast
    )
    assert broken["status"] == "failed"
    assert broken["breakers"]["safetyamp"] == "open"
    time.sleep(1.2)
    # The failed run quarantined both syncs: the operator, having seen the cause go
    # away, forces the next run (runbook, SyncQuarantined).
    healed = batch.run("--only", "departments,jobs", "--force", **fast)
    assert healed["status"] in ("success", "partial")
    assert healed["breakers"]["safetyamp"] == "closed"
    assert sum(r["created"] for r in healed["runs"]) > 0


def test_two_runners_at_once_one_runs_one_skips(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=60)
    batch.run("--only", "departments")  # seed the folder first, so both start equally fast
    cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--json"]
    env = batch.env()
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    statuses = sorted(json.loads(o.strip().splitlines()[-1])["status"] for o in outs)
    assert statuses[1] == "skipped" and statuses[0] in ("success", "partial"), statuses
    assert os.path.isdir(batch.dir)
