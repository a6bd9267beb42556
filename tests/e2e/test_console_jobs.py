"""The daemon's console jobs (sync/jobs.py) against the sandbox, in process: a real
``main.Daemon`` with its worker thread, the real runtime (HTTP clients, Redis locks under
a prefix of the test's own) and the emulators, driven through ``daemon.jobs`` exactly as
the console drives it.

* sync_record: one employee updated and one hired, each synced alone: that record is
  written, no other pending change goes out, and the job reports what it sent; refused
  with a clear message while another runner holds the sync's lock or the sync is paused;
* preview: the pending writes with their field diffs, nothing sent;
* run: through the TriggerQueue, finished with the run summaries;
* diagnose: the one diagnose implementation;
* a job that crashes fails alone: the daemon's next cycle runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import console_daemon, sandbox_sql
from tests.e2e.test_faults_oracle import target_state

pytestmark = pytest.mark.e2e

SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")


def wait_job(daemon: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = daemon.jobs.get(job_id)
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {daemon.jobs.get(job_id)}")


@pytest.fixture
def daemon(tmp_path: Path, redis_server: tuple[str, Any]) -> Iterator[Any]:
    env = {
        "SYNC_TYPES": ",".join(SYNCS),
        "SYNC_INTERVAL_MINUTES": "600",  # cycles only when the test asks
        "LOCK_REQUIRED": "true",
    }
    with console_daemon(tmp_path, redis_server, env, size=40) as running:  # its first cycle populates the target
        assert running.syncs == SYNCS
        running.daemon.sandbox_dir = running.dir
        yield running.daemon


def sql(daemon: Any, statement: str, *args: Any) -> None:
    sandbox_sql(daemon.sandbox_dir, statement, [args])


def employees(daemon: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(daemon.sandbox_dir / "viewpoint.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r) for r in conn.execute('SELECT * FROM "bPREH" WHERE "PRCo" = 1 AND "ActiveYN" = \'Y\' ORDER BY "Employee"')
        ]
    finally:
        conn.close()


def hire(daemon: Any, like: dict[str, Any], number: int) -> None:
    row = {**like, "Employee": number, "FirstName": "Newly", "LastName": "Hired", "Email": f"newly.hired.{number}@example.com", "Phone": None,
           "CellPhone": None}  # fmt: skip
    cols = ", ".join(f'"{c}"' for c in row)
    sql(daemon, f'INSERT INTO "bPREH" ({cols}) VALUES ({", ".join("?" for _ in row)})', *row.values())


def test_sync_record_writes_that_record_only_and_reports_what_it_sent(daemon: Any) -> None:
    rows = employees(daemon)
    before = target_state(daemon.sandbox_dir)["users"]
    one, other = [r for r in rows if str(r["Employee"]) in before and r["LastName"]][:2]
    sql(daemon, 'UPDATE "bPREH" SET "LastName" = ? WHERE "PRCo" = 1 AND "Employee" = ?', "Renamed-One", one["Employee"])
    sql(daemon, 'UPDATE "bPREH" SET "LastName" = ? WHERE "PRCo" = 1 AND "Employee" = ?', "Renamed-Two", other["Employee"])
    new_number = max(int(r["Employee"]) for r in rows) + 1000
    hire(daemon, one, new_number)
    stats_before = daemon.runtime.stats.counts().get("safetyamp", {})
    registry = daemon.runtime.metrics.registry
    runs_before = registry.get_sample_value("sync_duration_seconds_count", {"sync": "employees"})

    # preview: every pending change, with its diff; nothing sent
    preview = wait_job(daemon, daemon.jobs.submit("preview", actor="console:ann", syncs=["employees"]))
    assert preview["state"] == "done", preview
    [emp] = preview["result"]["syncs"]
    planned = {w["key"]: w for w in emp["writes"]}
    assert planned[str(one["Employee"])]["changes"]["last_name"] == {"before": one["LastName"], "after": "Renamed-One"}
    assert str(other["Employee"]) in planned and planned[str(new_number)]["action"] == "create"
    assert emp["writes_total"] == len(emp["writes"]) >= 3
    after_preview = daemon.runtime.stats.counts().get("safetyamp", {})
    assert {m: n for m, n in after_preview.items() if m != "GET"} == {m: n for m, n in stats_before.items() if m != "GET"}

    # one record, updated
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=str(one["Employee"])))
    assert job["state"] == "done", job
    result = job["result"]
    assert result["outcome"] == "updated" and result["key"] == str(one["Employee"])
    assert [p["action"] for p in result["plan"]] == ["update"]
    assert result["plan"][0]["changes"]["last_name"]["after"] == "Renamed-One"
    writes = result["writes"]
    assert len(writes) == 1 and writes[0]["method"] in ("PUT", "PATCH") and writes[0]["status"] == 200, writes
    assert writes[0]["service"] == "safetyamp" and "/users/" in writes[0]["path"], writes
    print("\nsync_record sent:", [(r["method"], r["path"], r["status"]) for r in result["requests"]])
    assert all(set(r) == {"service", "method", "path", "status", "ms"} for r in result["requests"])
    assert all("?" not in r["path"] for r in result["requests"])
    users = target_state(daemon.sandbox_dir)["users"]
    assert users[str(one["Employee"])]["last_name"] == "Renamed-One"
    assert users[str(other["Employee"])]["last_name"] == other["LastName"], "another record was written"
    assert str(new_number) not in users

    # one record, created
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=str(new_number)))
    assert job["state"] == "done" and job["result"]["outcome"] == "created", job
    assert [w["method"] for w in job["result"]["writes"]] == ["POST"]
    users = target_state(daemon.sandbox_dir)["users"]
    assert users[str(new_number)]["last_name"] == "Hired"
    assert users[str(other["Employee"])]["last_name"] == other["LastName"]
    assert len(users) == len(before) + 1

    # in the run history (with its key), in the audit log; not a run for the metrics
    control = daemon.runtime.control
    history = control.runs(sync="employees", count=5)
    assert [h["key"] for h in history[:2]] == [str(new_number), str(one["Employee"])]
    audit = [e for e in control.audit_log() if e["action"] == "sync_record"]
    assert audit[0]["target"] == f"record/employees/{new_number}" and audit[0]["result"] == "created"
    assert audit[0]["actor"] == "console:ann"
    assert registry.get_sample_value("sync_duration_seconds_count", {"sync": "employees"}) == runs_before


def test_sync_record_is_refused_while_the_lock_is_held_or_the_sync_is_paused(daemon: Any) -> None:
    from config.bootstrap import lock_factory

    key = str(employees(daemon)[0]["Employee"])
    lock = lock_factory(daemon.runtime)("employees")
    assert lock.acquire(blocking=False)
    try:
        job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=key))
    finally:
        lock.release()
    assert job["state"] == "failed" and "another runner holds the employees lock" in job["error"], job
    assert "try again" in job["error"]

    daemon.runtime.control.pause("employees", by="console:bob", reason="audit")
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=key))
    assert job["state"] == "failed" and "paused by console:bob" in job["error"], job
    daemon.runtime.control.resume("employees", by="console:bob")

    from sync.jobs import JobError

    with pytest.raises(JobError, match="one-record sync supports"):
        daemon.jobs.submit("sync_record", actor="a", sync="rosters", key="u1")
    with pytest.raises(JobError, match="unknown or disabled"):
        daemon.jobs.submit("sync_record", actor="a", sync="payroll", key="1")
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="a", sync="employees", key="not a number"))
    assert job["state"] == "failed" and "not a key of the employees sync" in job["error"]


def test_run_job_goes_through_the_trigger_queue_and_diagnose_and_a_crash_fail_alone(daemon: Any) -> None:
    daemon.worker.start()
    job_id = daemon.jobs.submit("run", actor="console:ann", syncs=["jobs"])
    job = wait_job(daemon, job_id)
    assert job["state"] == "done", job
    assert [r["sync"] for r in job["result"]["runs"]] == ["jobs"] and job["result"]["status"] in ("success", "partial")
    assert daemon.jobs.recent(1)[0]["id"] == job_id
    assert daemon.runtime.control.audit_log()[0]["action"] == "run"

    key = str(employees(daemon)[0]["Employee"])
    diag = wait_job(daemon, daemon.jobs.submit("diagnose", actor="console:ann", sync="employees", key=key))
    assert diag["state"] == "done" and diag["result"]["verdict"] == "IN_SYNC", diag

    # A job that crashes (the Viewpoint adapter breaks under it) fails alone.
    viewpoint = daemon.runtime.viewpoint
    daemon.runtime.viewpoint = None
    try:
        crashed = wait_job(daemon, daemon.jobs.submit("preview", actor="console:ann", syncs=["departments"]))
    finally:
        daemon.runtime.viewpoint = viewpoint
    assert crashed["state"] == "done" and crashed["result"]["syncs"][0]["status"] == "failed"
    again = wait_job(daemon, daemon.jobs.submit("run", actor="console:ann", syncs=["departments"]))
    assert again["state"] == "done" and again["result"]["runs"][0]["status"] in ("success", "partial"), again
    assert daemon.worker.is_alive()


def test_sync_record_never_deactivates_a_record_of_a_held_batch(daemon: Any) -> None:
    """The guard held a layoff for approval; "sync this record now" of one of those people
    must not deactivate them behind the approval's back (the batch would change under the
    operator reviewing it): refused, pointing at the approval. A held person rehired in the
    meantime is an update, not a deactivation: that goes through."""
    active = employees(daemon)
    leavers = [r for r in active if r["LastName"]][: len(active) // 3]
    for row in leavers:
        sql(daemon, 'UPDATE "bPREH" SET "ActiveYN" = \'N\' WHERE "PRCo" = 1 AND "Employee" = ?', row["Employee"])
    [run] = daemon.run_cycle(["employees"])
    assert run.guard_tripped and run.counts["deactivated"] == 0, run.summary()
    held = daemon.runtime.control.held("employees")
    assert held is not None and str(leavers[0]["Employee"]) in held["keys"]
    users = target_state(daemon.sandbox_dir)["users"]
    key = str(leavers[0]["Employee"])
    assert users[key]["system_access"] == 1

    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=key))
    assert job["state"] == "failed", job
    assert "held for approval" in job["error"] and "approve" in job["error"] and "/console/holds/employees" in job["error"], job[
        "error"
    ]
    assert job["result"]["outcome"] == "skipped" and job["result"]["writes"] == [], job["result"]
    assert target_state(daemon.sandbox_dir)["users"][key]["system_access"] == 1, "not deactivated"
    after = daemon.runtime.control.held("employees")
    assert after is not None and after["digest"] == held["digest"], "the held batch is untouched"

    # Approved, the batch still goes through a run, never one record at a time.
    daemon.runtime.control.approve("employees", held["digest"], by="console:ann")
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=key))
    assert job["state"] == "failed" and "run employees" in job["error"].lower(), job["error"]
    assert target_state(daemon.sandbox_dir)["users"][key]["system_access"] == 1

    # Rehired (and renamed) meanwhile: an update, not a deactivation, so it goes through.
    back = leavers[1]
    sql(
        daemon,
        'UPDATE "bPREH" SET "ActiveYN" = \'Y\', "LastName" = ? WHERE "PRCo" = 1 AND "Employee" = ?',
        "Back-Again",
        back["Employee"],
    )
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=str(back["Employee"])))
    assert job["state"] == "done" and job["result"]["outcome"] == "updated", job
    assert target_state(daemon.sandbox_dir)["users"][str(back["Employee"])]["last_name"] == "Back-Again"


def test_diagnose_of_a_terminated_employee_says_terminated_and_where_the_target_stands(daemon: Any) -> None:
    users = target_state(daemon.sandbox_dir)["users"]
    gone = next(r for r in employees(daemon) if str(r["Employee"]) in users)
    key = str(gone["Employee"])
    sql(daemon, 'UPDATE "bPREH" SET "ActiveYN" = \'N\' WHERE "PRCo" = 1 AND "Employee" = ?', gone["Employee"])
    pending = wait_job(daemon, daemon.jobs.submit("diagnose", actor="console:ann", sync="employees", key=key))["result"]
    assert pending["verdict"] == "PENDING" and "terminated in Viewpoint Vista" in pending["verdict_text"]
    assert "still active in SafetyAmp" in pending["verdict_text"], pending["verdict_text"]
    [run] = daemon.run_cycle(["employees"])
    assert run.counts["deactivated"] == 1, run.summary()
    done = wait_job(daemon, daemon.jobs.submit("diagnose", actor="console:ann", sync="employees", key=key))["result"]
    assert done["verdict"] == "IN_SYNC" and done["verdict_text"].startswith("terminated in Viewpoint Vista"), done
    assert "deactivated in SafetyAmp" in done["verdict_text"], done["verdict_text"]


def test_sync_record_of_a_record_the_failed_queue_holds_back_tries_it_now(daemon: Any) -> None:
    """An operator who presses "sync this record now" on a record waiting in the failed
    queue means now: the queue's wait does not hold it back (it once answered "held back,
    not sent ... Nothing to send: the target already matches the source" for a record the
    target did not hold at all). It stays in the queue until a write succeeds."""
    rows = employees(daemon)
    before = target_state(daemon.sandbox_dir)["users"]
    one = next(r for r in rows if str(r["Employee"]) in before and r["LastName"])
    key = str(one["Employee"])
    sql(daemon, 'UPDATE "bPREH" SET "LastName" = ? WHERE "PRCo" = 1 AND "Employee" = ?', "Waited-Out", one["Employee"])
    from config.bootstrap import new_context
    from sync.sync_employees import EmployeeSync

    # Failed with the very inputs it has now (its fingerprint): a run would hold it back.
    fp = EmployeeSync(new_context(daemon.runtime, run_id="fp", dry_run=True)).load().fingerprints[key]
    tracker = daemon.runtime.tracker
    tracker.record_failure("employees", key, fp, "SafetyAmp refused: 422 (earlier)", ["last_name"])
    assert tracker.should_skip("employees", key, fp), "the queue does not hold it back: the test proves nothing"
    job = wait_job(daemon, daemon.jobs.submit("sync_record", actor="console:ann", sync="employees", key=key))
    assert job["state"] == "done", job
    assert job["result"]["outcome"] == "updated", job["result"]
    assert [p["action"] for p in job["result"]["plan"]] == ["update"]
    assert target_state(daemon.sandbox_dir)["users"][key]["last_name"] == "Waited-Out"
    assert tracker.get("employees", key) is None, "a write that succeeded clears the record's failure"
