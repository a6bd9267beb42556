"""One odd value in a source or a target must never fail a whole sync (issue 10, section 2).

Each test puts one hostile value where an outside system can hold it, in the emulators'
own state (Entra ID users, SafetyAmp users, Samsara drivers), then runs the real CLI
against the sandbox and asserts from the outside: the sync ends ``success`` or
``partial`` (never ``failed``, never an internal error), nothing is quarantined, the
rest of the records are still synced, and the odd record itself is either refused with
a reason (errors file) or left alone when it is not ours.

Also the operator's ``diagnose`` with a key no sync can have: a clean refusal (exit 2 on
the CLI, 400 from the daemon), never a traceback or a 500.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import daemon, get, wait_for  # noqa: F401 - the daemon fixture
from tests.e2e.test_faults_oracle import _raw, log_lines

pytestmark = pytest.mark.e2e

SIZE = 30
HUGE = "1" * 5000


def seeded(tmp_path: Path) -> BatchRunner:
    from sandbox.seed import ensure_seeded

    batch = BatchRunner(tmp_path, size=SIZE)
    ensure_seeded(batch.dir, size=SIZE, seed=7)
    return batch


def edit(batch: BatchRunner, service: str, collection: str, pick: Any, change: Any) -> dict[str, Any]:
    """Apply ``change`` to the first record of an emulator collection that ``pick`` accepts."""
    with batch.store() as st:
        for rid, record in st.page(service, collection, limit=100_000):
            if pick(record):
                change(record)
                st.replace(service, collection, rid, record)
                return record
    raise AssertionError(f"no {service} {collection} record to edit")


def runs(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["sync"]: r for r in summary["runs"]}


def assert_held(summary: dict[str, Any], syncs: tuple[str, ...]) -> None:
    """The syncs ran to the end: no failure as a whole, no crash, no quarantine."""
    by = runs(summary)
    for name in syncs:
        assert by[name]["status"] in ("success", "partial"), by[name]
    logs = log_lines(summary["_stderr"])
    assert not [x for x in logs if "internal error" in x.get("message", "") or "crashed" in x.get("message", "")]
    assert not [x for x in logs if "quarantined" in x.get("message", "")]
    assert "Traceback" not in summary["_stderr"]


def brief(summary: dict[str, Any]) -> str:
    return ", ".join(f"{r['sync']} {r['status']} (created {r['created']}, failed {r['failed']})" for r in summary["runs"])


def errors_of(batch: BatchRunner, sync: str) -> list[dict[str, Any]]:
    files = sorted((batch.output / "errors").glob(f"{sync}-*.json"))
    return json.loads(files[-1].read_text())["errors"] if files else []


def test_entra_employee_id_with_a_superscript_digit_is_ignored(tmp_path: Path) -> None:
    batch = seeded(tmp_path)
    odd = edit(
        batch,
        "graph",
        "users",
        lambda u: u.get("employeeId") and u.get("accountEnabled") and u.get("mail"),
        lambda u: u.update(employeeId="²"),
    )
    assert odd["employeeId"] == "²"
    summary = batch.run(SYNC_TYPES="departments,jobs,titles,employees", expect=(0,))
    assert_held(summary, ("departments", "jobs", "titles", "employees"))
    assert runs(summary)["employees"]["created"] > SIZE // 2
    # Not an employee number: that Entra user's mail is matched to nobody.
    users = _raw(batch.dir)["users"]
    assert not [u for u in users if str(u.get("email", "")).lower() == str(odd["mail"]).lower() and u.get("emp_id") == "²"]
    print(f"\nEntra employeeId '²': {brief(summary)}")


def test_safetyamp_user_with_a_5000_digit_emp_id_is_not_ours(tmp_path: Path) -> None:
    batch = seeded(tmp_path)
    with batch.store() as st:
        st.insert("safetyamp", "users", {"id": 95_001, "emp_id": HUGE, "first_name": "Odd", "last_name": "Number",
                                         "email": "odd.number@elsewhere.example", "system_access": 1}, rid=95_001)  # fmt: skip
    summary = batch.run(SYNC_TYPES="departments,jobs,titles,employees,vehicles", expect=(0,))
    assert_held(summary, ("employees", "vehicles"))
    by = runs(summary)
    assert by["employees"]["created"] > SIZE // 2 and by["vehicles"]["created"] > 0
    odd = [u for u in _raw(batch.dir)["users"] if u.get("id") == 95_001]
    assert odd and odd[0]["emp_id"] == HUGE and odd[0]["system_access"] == 1  # untouched: not ours
    print(f"\nSafetyAmp emp_id of 5,000 digits: {brief(summary)}")


def test_samsara_driver_with_a_superscript_payroll_id_drops_only_the_driver(tmp_path: Path) -> None:
    batch = seeded(tmp_path)
    with batch.store() as st:
        assigned = {v["staticAssignedDriver"]["id"] for v in st.all("samsara", "vehicles") if v.get("staticAssignedDriver")}
    assert assigned
    driver = edit(batch, "samsara", "drivers", lambda d: d["id"] in assigned, lambda d: d.update(externalIds={"payrollId": "²"}))
    summary = batch.run(SYNC_TYPES="departments,jobs,titles,employees,vehicles", expect=(0,))
    assert_held(summary, ("employees", "vehicles"))
    by = runs(summary)
    assert by["vehicles"]["created"] > 0
    dropped = [e for e in errors_of(batch, "vehicles") if f"driver {driver['id']}" in e["reason"]]
    assert dropped and all(e["kind"] == "field_dropped" for e in dropped), dropped
    assert "not an employee number" in dropped[0]["reason"], dropped[0]
    # A second run is steady: no quarantine, no failure.
    again = batch.run(SYNC_TYPES="vehicles", expect=(0,))
    assert_held(again, ("vehicles",))
    print(f"\nSamsara payrollId '²': {brief(summary)}; second run {brief(again)}; {dropped[0]['reason']!r}")


@pytest.mark.parametrize("key", ["²", HUGE, "12a", " "], ids=["superscript", "5000-digits", "letters", "blank"])
def test_cli_diagnose_with_a_key_no_employee_can_have_is_a_clean_error(tmp_path: Path, key: str) -> None:
    batch = seeded(tmp_path)
    cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE),
           "diagnose", "employees", key]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=batch.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert "not a key of the employees sync" in proc.stderr and "employee number" in proc.stderr, proc.stderr[-500:]


def test_daemon_diagnose_with_a_key_no_employee_can_have_is_400(daemon: Any) -> None:  # noqa: F811
    _proc, base, _started = daemon
    auth = {"Authorization": "Bearer operator-token-123-0123456789abcdef"}

    def attached() -> Any:
        r = get(base + "/diagnose/employees/1001", headers=auth)
        return r if r is not None and r.status_code != 503 else None

    first = wait_for(attached, 60.0, 0.5)
    assert first is not None and first.status_code == 200, first
    for key in ("²", HUGE):
        started = time.monotonic()
        r = get(base + "/diagnose/employees/" + quote(key), headers=auth)
        assert r is not None and r.status_code == 400, (r.status_code if r else None, r.text[:300] if r else None)
        assert r.json()["error"].startswith("not a key of the employees sync: ") and "employee number" in r.json()["error"]
        assert time.monotonic() - started < 5  # refused at the entry, before any read


def test_text_in_a_viewpoint_date_column_rejects_that_employee_only(tmp_path: Path) -> None:
    """SQLite keeps whatever text a DATE column is given; SQLAlchemy's SQLite Date parsed
    every row with fromisoformat, so one "²" failed the whole read: titles and employees
    `internal error: ValueError` and quarantined. Now that employee alone is refused."""
    import sqlite3

    batch = seeded(tmp_path)
    with sqlite3.connect(batch.dir / "viewpoint.sqlite") as db:
        (employee,) = db.execute('SELECT Employee FROM "bPREH" WHERE "ActiveYN" = \'Y\' ORDER BY Employee LIMIT 1').fetchone()
        db.execute('UPDATE "bPREH" SET "HireDate" = ? WHERE Employee = ?', ("²", employee))
    summary = batch.run("--only", "departments,jobs,titles,employees", expect=(0,))
    print("\n" + brief(summary))
    assert_held(summary, ("titles", "employees"))
    refused = [e for e in errors_of(batch, "employees") if str(e.get("key")) == str(employee)]
    assert refused and "hire" in refused[0]["reason"].lower(), refused
