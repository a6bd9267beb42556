"""The source of truth misbehaves: nothing in the targets may be deactivated.

* the Viewpoint database unreachable (a dead PostgreSQL port) or missing (an SQLite
  URL to a file that does not exist): the Viewpoint syncs fail as a whole with
  "source unavailable", the run exits 1, not one write reaches SafetyAmp; the password
  in VIEWPOINT_DB_URL (a sentinel) appears in no output, log, file or pushed metric;
* a read that returns zero rows (VIEWPOINT_COMPANY=99): the deactivation guard trips,
  status failed, exit 1, nothing written;
* a change that would deactivate more than DEACTIVATION_GUARD_PERCENT (30 % of the
  employees terminated in bPREH with SQL): the guard trips, creates and updates still
  go through, nobody is deactivated; with the guard raised once, as the runbook says,
  exactly the terminated employees are deactivated.

Each case also checks the metric that pages someone: the batch pushes its registry to
PUSHGATEWAY_URL, here a small capturing server in the test.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, BatchRunner, writes
from tests.e2e.test_daemon import free_port, wait_for
from tests.e2e.test_faults_oracle import SAFETYAMP_SYNCS, target_state, terminate_employees

pytestmark = pytest.mark.e2e

SIZE = 60
VIEWPOINT_SYNCS = ("departments", "jobs", "titles", "employees")
SENTINEL = "S3NT1NEL-viewpoint-db-pw-7c1e"


class Pushgateway:
    """Captures what ``sync_batch`` pushes (the text exposition format)."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self.send_response(202)
                self.end_headers()

            do_PUT = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def value(self, name: str, **labels: str) -> float | None:
        """The sample of the last push matching ``name`` and every label given."""
        if not self.bodies:
            return None
        for line in self.bodies[-1].splitlines():
            m = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(m.group(3))
        return None

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    pg = Pushgateway()
    yield pg
    pg.close()


def server_writes(batch: BatchRunner, since: int) -> dict[str, int]:
    st = batch.store()
    try:
        return {m: n for m, n in st.request_counts(since_id=since).get("safetyamp", {}).items() if m != "GET"}
    finally:
        st.close()


def last_id(batch: BatchRunner) -> int:
    st = batch.store()
    try:
        return st.last_request_id()
    finally:
        st.close()


@pytest.fixture
def populated(tmp_path: Path) -> BatchRunner:
    batch = BatchRunner(tmp_path, size=SIZE)
    first = batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    assert first["status"] in ("success", "partial")
    return batch


def production_run(batch: BatchRunner, ep: dict, **extra: str) -> tuple[int, dict]:
    """sync_batch without --sandbox, configured through the environment like production."""
    env = batch.env(
        SYNC_TYPES=SAFETYAMP_SYNCS, VIEWPOINT_DB_URL=ep["viewpoint"]["url"], SAFETYAMP_URL=ep["safetyamp"]["url"],
        SAFETYAMP_TOKEN=ep["safetyamp"]["token"], SAFETYAMP_FQDN=ep["safetyamp"]["fqdn"],
        SAFETYAMP_RATE_LIMIT_PER_MINUTE="60000", SAMSARA_URL=ep["samsara"]["url"], SAMSARA_API_KEY=ep["samsara"]["api_key"],
        MS_GRAPH_AUTHORITY_URL=ep["graph"]["authority_url"], MS_GRAPH_URL=ep["graph"]["graph_url"],
        MS_GRAPH_TENANT_ID=ep["graph"]["tenant_id"], MS_GRAPH_CLIENT_ID=ep["graph"]["client_id"],
        MS_GRAPH_CLIENT_SECRET=ep["graph"]["client_secret"], MS_GRAPH_CA_BUNDLE=ep["graph"]["ca_bundle"],
        LOCK_REQUIRED="false", HTTP_MAX_RETRY_SECONDS="5",
        # Its own Redis keys: a failed run's quarantine must not hold back the next case
        # (or another test's production-style run) through the shared default prefix.
        REDIS_PREFIX=f"test-source-{uuid.uuid4().hex}:",
    )  # fmt: skip
    env.update(extra)
    proc = subprocess.run(
        [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    summary = json.loads(lines[-1])
    summary["_text"] = proc.stdout + proc.stderr
    return proc.returncode, summary


def test_unreachable_or_missing_source_database_changes_nothing(
    populated: BatchRunner, tmp_path: Path, pushgateway: Pushgateway
) -> None:
    before = target_state(populated.dir)
    port_file = tmp_path / "ports.json"
    serve = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(populated.dir), "--port-file", str(port_file)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(port_file.exists, 60), "sandbox serve wrote no port file"
        ep = json.loads(port_file.read_text())
        missing = tmp_path / "no-such-viewpoint.sqlite"
        cases = {
            # the password is a sentinel: the error path must not show it anywhere
            "postgres, dead port": f"postgresql+psycopg2://postgres:{SENTINEL}@127.0.0.1:{free_port()}/test?connect_timeout=2",
            "sqlite, missing file": f"sqlite:///{missing}",
        }
        for case, url in cases.items():
            since = last_id(populated)
            code, summary = production_run(populated, ep, VIEWPOINT_DB_URL=url, PUSHGATEWAY_URL=pushgateway.url)
            runs = {r["sync"]: r for r in summary["runs"]}
            print(
                f"\n{case}: exit {code}; " + "; ".join(f"{s}: {r['status']} {r.get('error', '')[:90]}" for s, r in runs.items())
            )
            assert code == 1 and summary["status"] == "failed", case
            for sync in VIEWPOINT_SYNCS:
                assert runs[sync]["status"] == "failed" and runs[sync]["error"].startswith("source unavailable"), (
                    case,
                    runs[sync],
                )
            assert runs["vehicles"]["status"] in ("success", "partial"), "a Samsara sync does not need Viewpoint"
            assert server_writes(populated, since) == {}, case
            assert pushgateway.value("sync_runs_total", sync="employees", status="failed") == 1.0, case
            assert SENTINEL not in summary["_text"] and SENTINEL not in "".join(pushgateway.bodies), case
        assert not missing.exists(), "a missing SQLite source file must not be created by the read"
        leaked = [p for p in populated.output.rglob("*") if p.is_file() and SENTINEL in p.read_text(errors="replace")]
        assert leaked == [], leaked
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    assert target_state(populated.dir) == before


def terminate(batch: BatchRunner, fraction: float) -> list[str]:
    """Terminate ``fraction`` of the active employees in bPREH with plain SQL."""
    return terminate_employees(batch.dir, fraction)


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_empty_read_and_mass_termination_trip_the_guard(populated: BatchRunner, pushgateway: Pushgateway) -> None:
    batch = populated
    before = target_state(batch.dir)
    active_before = sum(1 for u in before["users"].values() if u.get("system_access") == 1)

    # 1. zero rows: a wrong company number
    empty = batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS, VIEWPOINT_COMPANY="99", PUSHGATEWAY_URL=pushgateway.url)
    runs = {r["sync"]: r for r in empty["runs"]}
    print("\nzero rows: " + "; ".join(f"{s}: {r['status']} {r.get('error', '')[:100]}" for s, r in runs.items()))
    for sync in VIEWPOINT_SYNCS:
        assert runs[sync]["status"] == "failed" and runs[sync].get("guard_tripped"), runs[sync]
        assert "returned no records" in runs[sync]["error"]
        assert pushgateway.value("sync_deactivation_guard_tripped_total", sync=sync) == 1.0, sync
    assert writes(empty) == 0
    assert target_state(batch.dir) == before

    # 2. 30 % of the active employees terminated at once
    leavers = [k for k in terminate(batch, 0.3) if k in before["users"]]  # rejected ones were never created
    # The empty read failed and quarantined the Viewpoint syncs; the operator forces the rerun.
    tripped = batch.run("--force", expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS, PUSHGATEWAY_URL=pushgateway.url)
    emp = next(r for r in tripped["runs"] if r["sync"] == "employees")
    print(f"{len(leavers)} of {active_before} terminated: employees {emp['status']}: {emp.get('error')}")
    assert emp["status"] == "failed" and emp["guard_tripped"] and emp["deactivated"] == 0
    assert "DEACTIVATION_GUARD_PERCENT" in emp["error"]
    assert pushgateway.value("sync_deactivation_guard_tripped_total", sync="employees") == 1.0
    after = target_state(batch.dir)
    assert sum(1 for u in after["users"].values() if u.get("system_access") == 1) == active_before
    assert all(r["status"] in ("success", "partial") for r in tripped["runs"] if r["sync"] != "employees")

    # 3. the operator confirms the layoff once, with a higher guard
    confirmed = batch.run("--force", SYNC_TYPES=SAFETYAMP_SYNCS, DEACTIVATION_GUARD_PERCENT="40")
    emp = next(r for r in confirmed["runs"] if r["sync"] == "employees")
    assert emp["deactivated"] == len(leavers), emp
    final = target_state(batch.dir)["users"]
    assert sorted(k for k, u in final.items() if u.get("system_access") == 0) == sorted(leavers)
