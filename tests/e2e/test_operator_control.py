"""Issue 11, the engine side of the operator console, as an operator meets it through
the CLI and the daemon (subprocesses against a sandbox folder):

* pause / resume: a paused sync is skipped by sync_batch.py (even with --force) and by
  the daemon; /health and the sync_paused gauge show it; resume brings it back;
* held deactivations: the guard records exactly the batch it refused; an operator
  approves that batch's digest once; the next run deactivates exactly those records;
  a changed batch needs a new approval and an expired approval is refused;
* every non-dry run lands in the run history, the operator actions in the audit log.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import get, wait_for
from tests.e2e.test_faults_oracle import SAFETYAMP_SYNCS, target_state
from tests.e2e.test_faults_source import terminate
from tests.e2e.test_operator import AUTH, Daemon

pytestmark = pytest.mark.e2e


def cli(batch: BatchRunner, *args: str, expect: tuple[int, ...] = (0,), **env: str) -> subprocess.CompletedProcess[str]:
    """``sync_batch.py --sandbox ... <command>`` in text form."""
    cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir),
           "--sandbox-size", str(batch.size), *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=batch.env(**env), capture_output=True, text=True, timeout=600)
    assert proc.returncode in expect, f"exit {proc.returncode}\nstdout:{proc.stdout[-2000:]}\nstderr:{proc.stderr[-3000:]}"
    return proc


def control(batch: BatchRunner) -> Any:
    """The ControlStore the sandbox runs use (its Redis prefix is derived from the folder)."""
    from utils.control import ControlStore

    digest = hashlib.sha256(str(batch.dir.resolve()).encode()).hexdigest()[:10]
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
    return ControlStore(client, prefix=f"sandbox-{digest}:")


@pytest.fixture
def clean_control(tmp_path: Path) -> Any:
    """Drop the sandbox folder's operator state afterwards (it lives in the shared Redis)."""
    yield
    store = control(BatchRunner(tmp_path))
    client = store._redis
    for key in client.scan_iter(match=store._prefix + "*"):
        client.delete(key)


# --------------------------------------------------------------------------- pause


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_a_paused_sync_is_skipped_by_sync_batch_even_forced_until_resumed(tmp_path: Path, clean_control: Any) -> None:
    batch = BatchRunner(tmp_path, size=40)
    paused = batch.run("pause", "jobs", "--reason", "target migration tonight")
    assert paused["paused"]["sync"] == "jobs" and paused["paused"]["by"].startswith("cli:")
    assert paused["paused"]["reason"] == "target migration tonight"

    sites = target_state(batch.dir)["sites"]  # the seed's own (the fleet yard)
    run = batch.run("--only", "departments,jobs", "--force")
    runs = {r["sync"]: r for r in run["runs"]}
    assert runs["jobs"]["status"] == "skipped", runs["jobs"]
    assert runs["jobs"]["error"].startswith("paused by cli:") and "target migration tonight" in runs["jobs"]["error"]
    assert runs["jobs"]["created"] == 0
    assert runs["departments"]["status"] in ("success", "partial")
    assert target_state(batch.dir)["sites"] == sites, "a paused jobs sync wrote sites"

    history = control(batch).runs(sync="jobs")
    # "forced" in the history means went past a quarantine: this run did not (it was paused)
    assert [r["status"] for r in history] == ["skipped"] and history[0]["forced"] is False
    assert history[0]["runner"]["kind"] == "cli" and history[0]["run_id"] == run["run_id"]

    batch.run("resume", "jobs")
    again = batch.run("--only", "jobs")
    assert next(r for r in again["runs"] if r["sync"] == "jobs")["status"] in ("success", "partial")
    assert len(target_state(batch.dir)["sites"]) > len(sites)
    actions = [(e["action"], e["target"], e["result"]) for e in control(batch).audit_log()]
    assert actions[:2] == [("resume", "sync/jobs", "ok"), ("pause", "sync/jobs", "ok")]


def test_pause_of_an_unknown_sync_is_refused(tmp_path: Path, clean_control: Any) -> None:
    proc = cli(BatchRunner(tmp_path, size=20), "pause", "payroll", expect=(2,))
    assert "payroll" in proc.stderr and "departments" in proc.stderr


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_the_daemon_skips_a_paused_sync_and_health_and_metrics_show_it(tmp_path: Path, clean_control: Any) -> None:
    batch = BatchRunner(tmp_path, size=40)
    cli(batch, "pause", "vehicles", "--reason", "fleet audit")
    daemon = Daemon(tmp_path, size=40)
    try:
        skipped = wait_for(lambda: (daemon.health().get("last_runs") or {}).get("vehicles"), 120, 0.5)
        assert skipped, daemon.tail()
        assert skipped["status"] == "skipped" and skipped["error"].startswith("paused by cli:"), skipped
        health = daemon.health()
        assert health["paused"]["vehicles"]["reason"] == "fleet audit"
        assert health["sync_states"]["vehicles"]["state"] == "paused"
        assert "vehicles: paused" in " ".join(health["problems"])
        metrics = get(daemon.base + "/metrics").text
        assert 'sync_paused{sync="vehicles"} 1.0' in metrics and 'sync_paused{sync="jobs"} 0.0' in metrics
        # an operator's trigger does not override a pause either
        first = skipped["run_id"]
        assert requests.post(daemon.base + "/sync/vehicles", headers=AUTH, timeout=5).status_code == 202
        rerun = wait_for(lambda: (r := daemon.health()["last_runs"]["vehicles"])["run_id"] != first and r, 90, 0.5)
        assert rerun and rerun["status"] == "skipped", rerun

        cli(batch, "resume", "vehicles")
        second = rerun["run_id"]
        assert requests.post(daemon.base + "/sync/vehicles", headers=AUTH, timeout=5).status_code == 202
        ran = wait_for(lambda: (r := daemon.health()["last_runs"]["vehicles"])["run_id"] != second and r, 90, 0.5)
        assert ran and ran["status"] in ("success", "partial"), ran
        health = daemon.health()
        assert health["paused"] == {} and health["sync_states"]["vehicles"]["state"] in ("ok", "partial")
        assert 'sync_paused{sync="vehicles"} 0.0' in get(daemon.base + "/metrics").text
        kinds = {r["runner"]["kind"] for r in control(batch).runs(sync="vehicles")}
        assert kinds == {"daemon"}
    finally:
        daemon.stop()


# --------------------------------------------------------------------------- failed dismiss


def test_failed_dismiss_forgets_one_tracked_record_and_is_audited(tmp_path: Path, clean_control: Any) -> None:
    from utils.failed_sync_tracker import build_tracker

    batch = BatchRunner(tmp_path, size=20)
    store = control(batch)
    tracker = build_tracker("redis://127.0.0.1:6379/0", store._prefix)
    for key in ("1001", "1002"):
        tracker.record_failure("employees", key, "fp", "The email has already been taken.", ["email"])
    dismissed = batch.run("failed", "dismiss", "--sync", "employees", "--key", "1001")
    assert dismissed["dismissed"] == 1
    assert [r["key"] for r in tracker.list("employees")] == ["1002"]
    again = cli(batch, "failed", "dismiss", "--sync", "employees", "--key", "1001")
    assert "not tracked" in again.stdout
    entries = [(e["action"], e["target"], e["result"]) for e in store.audit_log()]
    assert entries[:2] == [("dismiss", "record/employees/1001", "not tracked"), ("dismiss", "record/employees/1001", "ok")]
    assert store.audit_log()[0]["actor"].startswith("cli:")
    cli(batch, "failed", "dismiss", "--sync", "employees", expect=(2,))  # --key is required


# --------------------------------------------------------------------------- held deactivations


def employees_run(summary: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in summary["runs"] if r["sync"] == "employees")


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_a_held_deactivation_batch_is_approved_once_and_exactly_that_batch_goes_through(
    tmp_path: Path, clean_control: Any
) -> None:
    batch = BatchRunner(tmp_path, size=60)
    first = batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    assert first["status"] in ("success", "partial")
    before = target_state(batch.dir)["users"]
    leavers = sorted(k for k in terminate(batch, 0.3) if k in before)

    tripped = batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS)
    emp = employees_run(tripped)
    assert emp["guard_tripped"] and emp["deactivated"] == 0
    assert "sync_batch.py" in emp["error"] and "approve employees" in emp["error"]
    hold = control(batch).held("employees")
    assert hold is not None and hold["keys"] == leavers and hold["count"] == len(leavers)
    assert hold["run_id"] == tripped["run_id"]
    print(f"\nheld: {hold['count']} keys, digest {hold['digest'][:12]}...: {emp['error'][:110]}")
    listed = json.loads(cli(batch, "holds", "--json").stdout.strip().splitlines()[-1])
    assert listed["employees"]["digest"] == hold["digest"] and listed["employees"]["keys"] == leavers

    # A wrong digest (the operator looked at an older list) is refused.
    wrong = cli(batch, "approve", "employees", "0" * 64, expect=(1,))
    assert "list changed" in wrong.stderr
    approved = batch.run("approve", "employees", hold["digest"])
    assert approved["approval"]["count"] == len(leavers) and approved["approval"]["by"].startswith("cli:")

    done = batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    emp = employees_run(done)
    assert emp["deactivated"] == len(leavers) and not emp.get("guard_tripped"), emp
    assert emp["approval"]["digest"] == hold["digest"]
    users = target_state(batch.dir)["users"]
    assert sorted(k for k, u in users.items() if u.get("system_access") == 0) == leavers
    print(f"approved run: deactivated {emp['deactivated']} of {len(leavers)} held, status {emp['status']}")
    store = control(batch)
    assert store.held("employees") is None and store.approval("employees") is None
    changes = json.loads(Path(store.run(done["run_id"], "employees")["changes_file"]).read_text())
    assert changes["approval"]["digest"] == hold["digest"]
    used = [e for e in store.audit_log() if e["action"] == "approval_used"]
    assert used and used[0]["detail"]["digest"] == hold["digest"] and used[0]["detail"]["run_id"] == done["run_id"]

    # The approval was used once: a second mass termination is held again, and its
    # list is a new one (another approval needed).
    more = sorted(k for k in terminate_more(batch, leavers, 0.3) if k in users)
    again = batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS)
    assert employees_run(again)["guard_tripped"]
    second = store.held("employees")
    assert second is not None and second["keys"] == more and second["digest"] != hold["digest"]
    wrong = cli(batch, "approve", "employees", hold["digest"], expect=(1,))
    assert "list changed" in wrong.stderr

    # The source is put right (the terminations were a mistake): the next run holds
    # nothing, so the stale hold goes away instead of waiting for an approval.
    import sqlite3

    conn = sqlite3.connect(batch.dir / "viewpoint.sqlite")
    with conn:
        conn.executemany(
            'UPDATE "bPREH" SET "ActiveYN" = \'Y\', "TermDate" = NULL WHERE "PRCo" = 1 AND "Employee" = ?',
            [(int(k),) for k in more],
        )
    conn.close()
    fixed = batch.run("--force", SYNC_TYPES=SAFETYAMP_SYNCS)
    assert not employees_run(fixed).get("guard_tripped") and employees_run(fixed)["deactivated"] == 0
    assert store.holds() == {}


def terminate_more(batch: BatchRunner, already: list[str], fraction: float) -> list[str]:
    from tests.e2e.test_faults_oracle import source_employees, vista_active

    active = [r for r in source_employees(batch.dir) if vista_active(r) and str(r["Employee"]) not in already]
    chosen = [str(r["Employee"]) for r in active[: int(len(active) * fraction)]]
    import sqlite3

    conn = sqlite3.connect(batch.dir / "viewpoint.sqlite")
    try:
        with conn:
            conn.executemany(
                'UPDATE "bPREH" SET "ActiveYN" = \'N\', "TermDate" = date(\'now\', \'-1 day\'), "RecentRehireDate" = NULL '
                'WHERE "PRCo" = 1 AND "Employee" = ?',
                [(int(e),) for e in chosen],
            )
    finally:
        conn.close()
    return chosen


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_a_changed_list_after_approval_needs_a_new_one_and_an_expired_approval_is_refused(
    tmp_path: Path, clean_control: Any
) -> None:
    batch = BatchRunner(tmp_path, size=60)
    batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    users = target_state(batch.dir)["users"]
    leavers = sorted(k for k in terminate(batch, 0.3) if k in users)
    batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS)
    hold = control(batch).held("employees")
    assert hold is not None and hold["keys"] == leavers
    batch.run("approve", "employees", hold["digest"])

    # One more termination before the next run: the list is no longer the approved one.
    extra = sorted(k for k in terminate_more(batch, leavers, 0.05) if k in users)
    assert extra
    changed = batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS)
    assert employees_run(changed)["guard_tripped"] and employees_run(changed)["deactivated"] == 0
    new_hold = control(batch).held("employees")
    assert new_hold["keys"] == sorted(leavers + extra)
    assert control(batch).approval("employees") is None

    # An approval that expires before the next run is refused: nothing deactivated.
    batch.run("approve", "employees", new_hold["digest"], CONSOLE_APPROVAL_TTL_MINUTES="0.001")
    import time

    time.sleep(0.2)
    # (the refused runs quarantined the sync: the operator forces the run, as the runbook says)
    late = batch.run("--force", expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS)
    assert employees_run(late)["guard_tripped"] and employees_run(late)["deactivated"] == 0
    assert control(batch).held("employees")["digest"] == new_hold["digest"]
    assert sum(1 for u in target_state(batch.dir)["users"].values() if u.get("system_access") == 0) == 0


def test_the_empty_read_guard_holds_nothing_approvable(tmp_path: Path, clean_control: Any) -> None:
    batch = BatchRunner(tmp_path, size=40)
    batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    empty = batch.run(expect=(1,), SYNC_TYPES=SAFETYAMP_SYNCS, VIEWPOINT_COMPANY="99")
    assert employees_run(empty)["guard_tripped"] and "returned no records" in employees_run(empty)["error"]
    assert control(batch).holds() == {}
    proc = cli(batch, "approve", "employees", "0" * 64, expect=(1,))
    assert "nothing to approve" in proc.stderr
