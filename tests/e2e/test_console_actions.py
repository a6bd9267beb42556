"""The console's actions end to end, over HTTP (Flask's test client), against a live
daemon in this process: its worker thread runs the cycles, its job runner the jobs, the
runtime talks to the sandbox emulators and real Redis. Each test acts as an operator
would (forms with their CSRF token, following redirects and job pages) and checks the
end state in the emulated target, in Redis and in the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.e2e.conftest import behind_proxy, console_daemon, csrf_of, finished_job, sandbox_sql
from tests.e2e.test_faults_oracle import source_employees, target_state, vista_active

pytestmark = pytest.mark.e2e

TOKEN = "console-token-0123456789abcdef-0123456789"
SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")
OPERATORS, VIEWERS = "sync-operators", "sync-viewers"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server: tuple[str, Any]) -> Iterator[SimpleNamespace]:
    env = {
        "SYNC_TYPES": ",".join(SYNCS),
        "SYNC_INTERVAL_MINUTES": "600",  # after the first cycle, cycles only when asked
        "CONSOLE_TOKEN": TOKEN,
        "CONSOLE_TRUSTED_PROXY": "127.0.0.1",
        "CONSOLE_OPERATOR_GROUPS": OPERATORS,
        "CONSOLE_VIEWER_GROUPS": VIEWERS,
    }
    with console_daemon(tmp_path_factory.mktemp("console-live"), redis_server, env, size=60, worker=True) as running:
        assert running.syncs == SYNCS
        yield running


def person(live: SimpleNamespace, groups: str, user: str) -> Any:
    """A browser behind the sign-on proxy (127.0.0.1 is the trusted proxy here)."""
    return behind_proxy(live.app, groups, addr="127.0.0.1", user=user)


def post(web: Any, page: str, action: str, **data: str) -> Any:
    """Submit a form of ``page`` as the browser would: with the page's CSRF token."""
    return web.post(action, data={**data, "csrf_token": csrf_of(web.get(page).text)})


def sql(live: SimpleNamespace, statement: str, rows: list[tuple[Any, ...]]) -> None:
    sandbox_sql(live.dir, statement, rows)


def audit_actions(live: SimpleNamespace) -> list[tuple[str, str, str, str]]:
    return [(e["actor"], e["action"], e["target"], e["result"]) for e in live.runtime.control.audit_log(count=200)]


def test_run_now_runs_that_sync_and_the_page_shows_its_result(live: SimpleNamespace) -> None:
    ann = person(live, OPERATORS, "ann")
    before = len(live.runtime.control.runs(sync="jobs"))
    started = post(ann, "/console/actions", "/console/actions/run", sync="jobs")
    assert started.status_code == 302
    page = finished_job(ann, started.headers["Location"])
    assert 'data-testid="run-result"' in page and 'data-sync="jobs" data-status="success"' in page
    assert len(live.runtime.control.runs(sync="jobs")) == before + 1
    runs = ann.get("/console/runs?sync=jobs").text
    assert runs.count('data-testid="run-row"') == before + 1
    assert ("ann@example.com", "run", "sync/jobs", "success") in audit_actions(live)


def test_preview_shows_the_pending_change_and_sync_this_record_now_sends_only_it(live: SimpleNamespace) -> None:
    rows = [r for r in source_employees(live.dir) if vista_active(r) and r["LastName"]]
    users = target_state(live.dir)["users"]
    one, other = [r for r in rows if str(r["Employee"]) in users][:2]
    sql(
        live,
        'UPDATE "bPREH" SET "LastName" = ? WHERE "PRCo" = 1 AND "Employee" = ?',
        [("Console-One", one["Employee"]), ("Console-Two", other["Employee"])],
    )
    ann = person(live, OPERATORS, "ann")

    preview = finished_job(ann, post(ann, "/console/actions", "/console/actions/preview", sync="employees").headers["Location"])
    assert 'data-testid="preview-result"' in preview
    block = re.search(
        rf'<tbody data-testid="write" data-key="{one["Employee"]}" data-action="update">(.*?)</tbody>', preview, re.S
    )
    assert block and "last_name" in block.group(1) and "Console-One" in block.group(1) and one["LastName"] in block.group(1)
    assert target_state(live.dir)["users"][str(one["Employee"])]["last_name"] == one["LastName"], "a preview sent something"

    lookup = finished_job(
        ann, post(ann, "/console/lookup", "/console/lookup", sync="employees", record=str(one["Employee"])).headers["Location"]
    )
    assert 'data-verdict="PENDING"' in lookup and 'id="sync-record"' in lookup
    done = ann.post(
        "/console/lookup/sync-record", data={"sync": "employees", "record": str(one["Employee"]), "csrf_token": csrf_of(lookup)}
    )
    result = finished_job(ann, done.headers["Location"])
    assert 'data-outcome="updated"' in result and 'data-testid="requests-table"' in result
    assert re.search(r'data-testid="request" data-method="(PUT|PATCH)"', result)
    users = target_state(live.dir)["users"]
    assert users[str(one["Employee"])]["last_name"] == "Console-One"
    assert users[str(other["Employee"])]["last_name"] == other["LastName"], "sync this record now wrote another record"
    assert ("ann@example.com", "sync_record", f"record/employees/{one['Employee']}", "updated") in audit_actions(live)


def test_pause_shows_everywhere_is_obeyed_and_resume_lifts_it(live: SimpleNamespace) -> None:
    ann = person(live, OPERATORS, "ann")
    paused = post(ann, "/console/actions", "/console/actions/pause", sync="vehicles", reason="fleet audit this week")
    assert paused.status_code == 302 and "is paused" in ann.get(paused.headers["Location"]).text
    entry = live.runtime.control.paused("vehicles")
    assert entry["by"] == "ann@example.com" and entry["reason"] == "fleet audit this week"
    overview = ann.get("/console/").text
    assert re.search(r'id="sync-vehicles" data-testid="sync-row" data-sync="vehicles" data-state="paused"', overview)
    assert "fleet audit this week" in overview
    assert live.app.test_client().get("/health").get_json()["paused"]["vehicles"]["by"] == "ann@example.com"

    run = finished_job(ann, post(ann, "/console/actions", "/console/actions/run", sync="vehicles").headers["Location"])
    assert 'data-sync="vehicles" data-status="skipped"' in run and "paused by ann@example.com" in run

    assert post(ann, "/console/actions", "/console/actions/resume", sync="vehicles").status_code == 302
    assert live.runtime.control.paused("vehicles") is None
    again = finished_job(ann, post(ann, "/console/actions", "/console/actions/run", sync="vehicles").headers["Location"])
    assert 'data-sync="vehicles" data-status="success"' in again
    actions = audit_actions(live)
    assert ("ann@example.com", "pause", "sync/vehicles", "ok") in actions
    assert ("ann@example.com", "resume", "sync/vehicles", "ok") in actions


def test_a_held_deactivation_is_listed_approved_once_and_exactly_those_records_go(live: SimpleNamespace) -> None:
    users = target_state(live.dir)["users"]
    active = [r for r in source_employees(live.dir) if vista_active(r) and str(r["Employee"]) in users]
    leavers = sorted(str(r["Employee"]) for r in active[: int(len(active) * 0.3)])
    sql(
        live,
        'UPDATE "bPREH" SET "ActiveYN" = \'N\', "TermDate" = date(\'now\', \'-1 day\'), "RecentRehireDate" = NULL '
        'WHERE "PRCo" = 1 AND "Employee" = ?',
        [(int(k),) for k in leavers],
    )
    ann = person(live, OPERATORS, "ann")
    tripped = finished_job(ann, post(ann, "/console/actions", "/console/actions/run", sync="employees").headers["Location"])
    assert 'data-sync="employees" data-status="failed"' in tripped and "deactivation guard" in tripped

    hold_page = ann.get("/console/holds/employees").text
    listed = re.findall(r'data-testid="hold-key"><a [^>]*>([^<]+)</a>', hold_page)
    assert sorted(listed) == leavers
    digest = re.search(r'data-digest="([0-9a-f]{64})"', hold_page)
    assert digest
    assert 'data-testid="hold-row"' in ann.get("/console/actions").text

    unconfirmed = ann.post("/console/holds/employees/approve", data={"digest": digest.group(1), "csrf_token": csrf_of(hold_page)})
    assert "Tick the box" in ann.get(unconfirmed.headers["Location"]).text
    stale = ann.post(
        "/console/holds/employees/approve", data={"digest": "0" * 64, "confirm": "yes", "csrf_token": csrf_of(hold_page)}
    )
    assert "Not approved" in ann.get(stale.headers["Location"]).text
    assert live.runtime.control.approval("employees") is None

    ok = ann.post(
        "/console/holds/employees/approve", data={"digest": digest.group(1), "confirm": "yes", "csrf_token": csrf_of(hold_page)}
    )
    shown = ann.get(ok.headers["Location"]).text
    assert f"exactly these {len(leavers)} record(s)" in shown and 'data-testid="approval"' in shown
    approval = live.runtime.control.approval("employees")
    assert approval["by"] == "ann@example.com" and approval["count"] == len(leavers)

    done = finished_job(ann, post(ann, "/console/holds/employees", "/console/actions/run", sync="employees").headers["Location"])
    assert 'data-sync="employees" data-status="success"' in done or 'data-sync="employees" data-status="partial"' in done
    now = target_state(live.dir)["users"]
    gone = sorted(k for k, u in now.items() if u.get("system_access") == 0 and users[k].get("system_access") != 0)
    assert gone == leavers
    assert live.runtime.control.held("employees") is None and live.runtime.control.approval("employees") is None
    assert 'data-testid="no-hold"' in ann.get("/console/holds/employees").text
    approvals = [a for a in audit_actions(live) if a[:3] == ("ann@example.com", "approve", "sync/employees")]
    assert [a[3] for a in approvals][:1] == ["ok"] and approvals[1][3].startswith("refused: ")


def test_failed_records_retry_and_dismiss_and_viewers_are_refused_on_the_record(live: SimpleNamespace) -> None:
    tracker = live.runtime.tracker
    for attempt in range(2):
        tracker.record_failure("jobs", "77-0001", "fp", f"SafetyAmp refused: name taken ({attempt})", ["name"])
    tracker.record_failure("jobs", "77-0002", "fp", "SafetyAmp refused: code taken", ["external_code"])
    val = person(live, VIEWERS, "val")
    page = val.get("/console/failed?sync=jobs").text
    assert "77-0001" in page and 'data-testid="retry"' not in page and 'data-testid="viewer-note"' in page
    refused = val.post("/console/failed/dismiss", data={"sync": "jobs", "record": "77-0001", "csrf_token": csrf_of(page)})
    assert refused.status_code == 403 and tracker.get("jobs", "77-0001") is not None
    assert ("val@example.com", "dismiss", "record/jobs/77-0001", "refused: viewer") in audit_actions(live)

    ann = person(live, OPERATORS, "ann")
    assert tracker.get("jobs", "77-0001")["status"] == "waiting"
    post(ann, "/console/failed?sync=jobs", "/console/failed/retry", sync="jobs", record="77-0001")
    assert tracker.get("jobs", "77-0001")["status"] == "due" and tracker.get("jobs", "77-0001")["attempts"] == 2
    post(ann, "/console/failed?sync=jobs", "/console/failed/dismiss", sync="jobs", record="77-0002")
    assert tracker.get("jobs", "77-0002") is None
    post(ann, "/console/failed?sync=jobs", "/console/failed/retry-all", sync="jobs")
    actions = audit_actions(live)
    assert ("ann@example.com", "retry", "record/jobs/77-0001", "1 released") in actions
    assert ("ann@example.com", "dismiss", "record/jobs/77-0002", "ok") in actions
    assert ("ann@example.com", "retry", "sync/jobs", "1 released") in actions
    audit_page = ann.get("/console/audit").text
    assert 'data-action="dismiss"' in audit_page and "val@example.com" in audit_page
    tracker.dismiss("jobs", "77-0001")
