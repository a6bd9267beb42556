"""Each SafetyAmp sync end to end over in-memory fakes: assert the target's end state."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from config.settings import load_settings
from services.data_manager import TargetCache
from services.event_manager import EventManager
from sync.base import SyncContext
from sync.runner import run_syncs
from tests.fakes.ports import FakeGraph, FakeSafetyAmp, FakeSamsara, FakeViewpoint, flaky
from utils.errors import RecordError, SourceUnavailableError
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.unit
TODAY = date(2026, 11, 1)


def seed_target():
    return FakeSafetyAmp(
        {
            "roles": [{"id": 1, "name": "Field"}],
            "site_clusters": [],
            "sites": [{"id": 5, "name": "Fleet Yard", "external_code": "FLEET"}],
            "asset_types": [{"id": 7, "name": "Vehicle", "site_id": 5}],
        }
    )


def emp(n, first="Ann", last="Lee", email=None, **kw):
    row = {
        "Employee": n,
        "FirstName": first,
        "MidName": None,
        "LastName": last,
        "Email": email if email is not None else f"e{n}@co.com",
        "Phone": f"(504) 555-01{n % 100:02d}",
        "CellPhone": None,
        "PRDept": "100",
        "HireDate": date(2020, 1, 1),
        "TermDate": None,
        "RecentRehireDate": None,
        "ActiveYN": "Y",
        "JCCo": 1,
        "Job": "J1",
        "Title": "Foreman",
    }
    row.update(kw)
    return row


def make_ctx(tmp_path, target, vp=None, graph=None, samsara=None, tracker=None, **env):
    settings = load_settings(
        {"OUTPUT_DIR": str(tmp_path), "VIEWPOINT_DB_URL": "sqlite://", "SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "f", **env},
        dotenv_path=None,
    )
    return SyncContext(
        settings=settings,
        targets=TargetCache(target),
        tracker=tracker or InMemoryTracker(),
        events=EventManager(tmp_path, "run-1"),
        metrics=Metrics(),
        today=TODAY,
        viewpoint=vp,
        graph=graph,
        samsara=samsara,
        max_workers=2,
    )


DEPTS = [{"PRDept": "100", "Description": "Field Ops"}, {"PRDept": "200", "Description": "Office"}]
JOBS = [
    {
        "Job": "J1",
        "Description": "Bridge",
        "JobStatus": 1,
        "Department": "100",
        "ShipCity": "Metairie",
        "ShipState": "LA",
        "ShipZip": "70001",
    },
    {"Job": "J2", "Description": "Old", "JobStatus": 3, "Department": "100"},
    {"Job": "J3", "Description": "Soft", "JobStatus": 2, "Department": "200"},
]


def full_run(tmp_path, target, vp, graph=None, samsara=None, tracker=None, names=("departments", "jobs", "titles", "employees")):
    ctx = make_ctx(tmp_path, target, vp, graph, samsara, tracker)
    return {r.sync: r for r in run_syncs(ctx, names)}


def test_first_run_creates_then_second_run_writes_nothing(tmp_path):
    target = seed_target()
    vp = FakeViewpoint(DEPTS, JOBS, [emp(1), emp(2, "Bo", "Diaz")], latest={1: "J1"})
    results = full_run(tmp_path, target, vp)
    assert {k: r.status for k, r in results.items()} == dict.fromkeys(results, "success")
    clusters = {c["external_code"]: c for c in target.rows("site_clusters")}
    assert set(clusters) == {"VISTA", "100", "200"}
    assert clusters["100"]["parent_cluster_id"] == clusters["VISTA"]["id"]
    sites = {s["external_code"]: s for s in target.rows("sites")}
    assert set(sites) == {"FLEET", "J1"}  # closed J2 never created, soft-closed J3 left alone
    assert sites["J1"]["cluster_id"] == clusters["100"]["id"]
    users = {u["emp_id"]: u for u in target.rows("users")}
    assert users["1"]["home_site_id"] == sites["J1"]["id"]
    assert users["1"]["roles"] == [{"id": 1}] and users["1"]["system_access"] == 1
    assert users["1"]["work_phone"] == "+15045550101"
    assert users["2"]["current_title_id"] == target.rows("user_titles")[0]["id"]
    before = target.writes()
    again = full_run(tmp_path, target, vp)
    assert target.writes() == before
    assert all(r.counts["created"] == r.counts["updated"] == 0 for r in again.values())


def test_graph_mail_wins_and_terminated_are_deactivated_not_deleted(tmp_path):
    target = seed_target()
    rows = [emp(1), emp(2, "Bo", "Diaz")]
    vp = FakeViewpoint(DEPTS, JOBS, rows)
    graph = FakeGraph(
        [
            {"employeeId": "0001", "mail": "Ann.Lee@Work.com", "accountEnabled": True},
            {"employeeId": "2", "mail": "bo@tenant.onmicrosoft.com", "accountEnabled": True},
        ]
    )
    full_run(tmp_path, target, vp, graph)
    users = {u["emp_id"]: u for u in target.rows("users")}
    assert users["1"]["email"] == "ann.lee@work.com"
    assert users["2"]["email"] == "e2@co.com"  # onmicrosoft mail ignored, Vista e-mail used
    rows[1] = emp(2, "Bo", "Diaz", TermDate=date(2026, 10, 1), ActiveYN="N")
    results = full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows), graph)
    assert results["employees"].counts["deactivated"] == 1
    users = {u["emp_id"]: u for u in target.rows("users")}
    assert users["2"]["system_access"] == 0 and len(users) == 2
    # rehire: active again
    rows[1] = emp(2, "Bo", "Diaz", TermDate=date(2026, 10, 1), RecentRehireDate=date(2026, 10, 20), ActiveYN="Y")
    full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows), graph)
    assert {u["emp_id"]: u for u in target.rows("users")}["2"]["system_access"] == 1


def test_entra_mail_rule_is_the_one_the_sync_runs(tmp_path):
    # One rule (issue 12): only users with accountEnabled true and a usable work mail
    # compete for an employeeId. An admin account on *.onmicrosoft.com sharing the
    # employeeId does not make it ambiguous; a user without accountEnabled is not
    # known to be enabled and gives no mail; two real mails are ambiguous.
    target = seed_target()
    rows = [emp(77), emp(9), emp(42)]
    graph = FakeGraph(
        [
            {"employeeId": "77", "mail": "k@work.com", "accountEnabled": True},
            {"employeeId": "77", "mail": "k-admin@tenant.onmicrosoft.com", "accountEnabled": True},
            {"employeeId": "77", "mail": None, "accountEnabled": True},
            {"employeeId": "9", "mail": "no-flag@work.com"},
            {"employeeId": "42", "mail": "one@work.com", "accountEnabled": True},
            {"employeeId": "0042", "mail": "two@work.com", "accountEnabled": True},
        ]
    )
    full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows), graph)
    mails = {u["emp_id"]: u["email"] for u in target.rows("users")}
    assert mails == {"77": "k@work.com", "9": "e9@co.com", "42": "e42@co.com"}


def test_scheduled_termination_stays_active_until_its_day(tmp_path):
    from sync.vista import is_active_employee

    target = seed_target()
    tomorrow, yesterday = TODAY + timedelta(days=1), TODAY - timedelta(days=1)
    rows = [emp(1), emp(2, "Bo", "Diaz", TermDate=tomorrow, ActiveYN="Y")]
    results = full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows))
    assert results["employees"].counts["created"] == 2 and results["employees"].counts["deactivated"] == 0
    # the day has passed (Vista may still say Y until someone runs the termination): deactivated
    rows[1] = emp(2, "Bo", "Diaz", TermDate=yesterday, ActiveYN="Y")
    results = full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows))
    assert results["employees"].counts["deactivated"] == 1
    assert {u["emp_id"]: u for u in target.rows("users")}["2"]["system_access"] == 0
    # the column's other shapes: datetime at midnight and ISO text, and N always wins
    assert is_active_employee({"ActiveYN": "Y", "TermDate": datetime(2026, 11, 2)}, TODAY)
    assert is_active_employee({"ActiveYN": "Y", "TermDate": "2026-11-02 00:00:00.000"}, TODAY)
    assert not is_active_employee({"ActiveYN": "Y", "TermDate": "2026-11-01"}, TODAY)
    assert not is_active_employee({"ActiveYN": "Y", "TermDate": "garbage"}, TODAY)
    assert not is_active_employee({"ActiveYN": "N", "TermDate": tomorrow}, TODAY)
    assert not is_active_employee({"ActiveYN": "Y", "TermDate": tomorrow})  # no today: the old rule


def test_rejections_have_reasons_and_nothing_bad_is_sent(tmp_path):
    target = seed_target()
    rows = [
        emp(1),
        emp(2, email="shared@co.com"),
        emp(3, email="shared@co.com"),
        emp(4, email=""),
        emp(5, first="X" * 150),
        emp(6, CellPhone="555-01"),
        emp(7, Job=None),
        emp(8, first=None),
    ]
    vp = FakeViewpoint(DEPTS, JOBS, rows, latest={1: "J1"})
    results = full_run(tmp_path, target, vp)
    emp_result = results["employees"]
    assert emp_result.status == "partial"
    assert sorted(u["emp_id"] for u in target.rows("users")) == ["1", "6"]
    assert "mobile_phone" not in {k for u in target.rows("users") if u["emp_id"] == "6" for k in u}
    errors = json.loads(next((tmp_path / "errors").glob("employees-*.json")).read_text())["errors"]
    reasons = {e["key"]: e["reason"] for e in errors}
    assert "shared with employee(s) 3" in reasons["2"]
    assert "no e-mail" in reasons["4"]
    assert "150 characters" in reasons["5"]
    assert "left out" in reasons["6"]
    assert "no home site" in reasons["7"]
    assert "FirstName is empty" in reasons["8"]
    assert emp_result.counts["failed"] == 6


def test_target_422_is_tracked_and_skipped_until_inputs_change(tmp_path):
    target = seed_target()
    vp = FakeViewpoint(DEPTS, JOBS, [emp(1), emp(2)], latest={})
    full_run(tmp_path, target, vp, names=("departments", "jobs", "titles"))
    target.fail_with["2"] = RecordError(
        "The email has already been taken.", status=422, field_errors={"email": ["The email has already been taken."]}
    )
    tracker = InMemoryTracker()
    r1 = full_run(tmp_path, target, vp, tracker=tracker, names=("employees",))["employees"]
    assert r1.counts["created"] == 1 and r1.counts["failed"] == 1 and tracker.count("employees") == 1
    r2 = full_run(tmp_path, target, vp, tracker=tracker, names=("employees",))["employees"]
    assert r2.counts["skipped"] == 1 and r2.counts["failed"] == 0
    del target.fail_with["2"]
    changed = FakeViewpoint(DEPTS, JOBS, [emp(1), emp(2, email="new2@co.com")])
    r3 = full_run(tmp_path, target, changed, tracker=tracker, names=("employees",))["employees"]
    assert r3.counts["created"] == 1 and tracker.count("employees") == 0


def test_lost_create_response_is_found_by_key_not_duplicated(tmp_path):
    target = seed_target()
    target.lose_create_response_for.add("1")
    vp = FakeViewpoint(DEPTS, JOBS, [emp(1)], latest={1: "J1"})
    results = full_run(tmp_path, target, vp)
    assert results["employees"].counts["created"] == 1
    assert [u["emp_id"] for u in target.rows("users")] == ["1"]


def test_guard_blocks_mass_deactivation(tmp_path):
    target = seed_target()
    rows = [emp(n) for n in range(1, 41)]
    full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, rows))
    terminated = [emp(n, TermDate=date(2026, 10, 1), ActiveYN="N") if n <= 10 else emp(n) for n in range(1, 41)]
    result = full_run(tmp_path, target, FakeViewpoint(DEPTS, JOBS, terminated), names=("employees",))["employees"]
    assert result.status == "failed" and result.guard_tripped and "DEACTIVATION_GUARD_PERCENT" in result.error
    assert all(u["system_access"] == 1 for u in target.rows("users"))


def test_source_failure_fails_sync_and_deactivates_nothing(tmp_path):
    target = seed_target()
    vp = FakeViewpoint(fail=SourceUnavailableError("login timeout", service="viewpoint"))
    results = full_run(tmp_path, target, vp)
    assert all(r.status == "failed" for r in results.values())
    assert "source unavailable" in results["employees"].error
    # The departments sync creates its root cluster before it reads the source; that is
    # the only write a run whose source is down may make.
    writes = {call: n for call, n in target.calls.items() if call.split()[0] in ("POST", "UPDATE")}
    assert writes == {"POST site_clusters": 1}
    assert [c["external_code"] for c in target.rows("site_clusters")] == ["VISTA"]
    assert target.rows("users") == target.rows("user_titles") == []
    assert [s["external_code"] for s in target.rows("sites")] == ["FLEET"]


def test_closed_job_archives_site_and_reopen_restores(tmp_path):
    target = seed_target()
    jobs = [dict(JOBS[0])]
    full_run(tmp_path, target, FakeViewpoint(DEPTS, jobs, []), names=("departments", "jobs"))
    jobs[0]["JobStatus"] = 3
    r = full_run(tmp_path, target, FakeViewpoint(DEPTS, jobs, []), names=("jobs",))["jobs"]
    assert r.counts["deactivated"] == 1
    assert {s["external_code"]: s for s in target.rows("sites")}["J1"]["active"] == 0
    jobs[0]["JobStatus"] = 1
    full_run(tmp_path, target, FakeViewpoint(DEPTS, jobs, []), names=("jobs",))
    assert {s["external_code"]: s for s in target.rows("sites")}["J1"]["active"] == 1


def test_vehicles_keyed_by_id_not_serial_and_driver_linked_with_one_read(tmp_path):
    target = seed_target()
    target._store("users", {"emp_id": "1234", "email": "d@co.com", "first_name": "D", "last_name": "R"})
    vehicles = [
        {
            "id": "v1",
            "name": "Truck 1",
            "serial": "GAAA",
            "vin": "1FT",
            "make": "Ford",
            "model": "F-150",
            "year": "2021",
            "staticAssignedDriver": {"id": "d1", "name": "D R"},
        },
        {"id": "v2", "name": "Truck 2", "serial": "GBBB", "staticAssignedDriver": {"id": "d2", "name": "X"}},
    ]
    drivers = [{"id": "d1", "externalIds": {"payrollId": "01234"}}, {"id": "d2", "externalIds": {}}]
    fleet = FakeSamsara(vehicles, drivers)
    r = full_run(tmp_path, target, None, samsara=fleet, names=("vehicles",))["vehicles"]
    assert r.counts["created"] == 2 and fleet.driver_reads == 1
    assets = {a["code"]: a for a in target.rows("assets")}
    assert assets["samsara:v1"]["current_user_id"] == target.rows("users")[0]["id"]
    assert assets["samsara:v1"]["year"] == 2021 and assets["samsara:v1"]["site_id"] == 5
    vehicles[0]["serial"] = "GNEW"  # gateway swapped: same asset, serial updated
    vehicles.pop(1)  # vehicle gone from a complete read -> archived
    r = full_run(tmp_path, target, None, samsara=FakeSamsara(vehicles, drivers), names=("vehicles",))["vehicles"]
    assert (r.counts["updated"], r.counts["deactivated"], r.counts["created"]) == (1, 1, 0)
    assets = {a["code"]: a for a in target.rows("assets")}
    assert assets["samsara:v1"]["serial"] == "GNEW" and assets["samsara:v2"]["status"] == 0 and len(assets) == 2


def test_retriable_failures_count_failed_then_converge(tmp_path):
    target = seed_target()
    target.fail_with["1"] = flaky()
    vp = FakeViewpoint(DEPTS, JOBS, [emp(1), emp(2)], latest={})
    r = full_run(tmp_path, target, vp)["employees"]
    assert r.status == "partial" and r.counts["failed"] == 1 and r.counts["created"] == 1
    del target.fail_with["1"]
    r = full_run(tmp_path, target, vp)["employees"]
    assert r.counts["created"] == 1 and len(target.rows("users")) == 2


def test_dry_run_sends_no_write_and_reports_plan(tmp_path):
    target = seed_target()
    ctx = make_ctx(tmp_path, target, FakeViewpoint(DEPTS, JOBS, [emp(1)], latest={1: "J1"}))
    ctx.dry_run = True
    results = run_syncs(ctx, ("departments", "jobs", "titles", "employees"))
    assert target.writes() == 0
    assert results[0].counts["created"] == 2 and results[0].plan[0]["action"] == "create"


def test_a_lost_lock_stops_writing(tmp_path):
    from utils.locks import FileLock, WriteFence
    from utils.quarantine import Quarantine

    target = seed_target()
    ctx = make_ctx(tmp_path, target, FakeViewpoint(DEPTS, JOBS, [emp(1), emp(2)], latest={1: "J1"}))
    lock = FileLock(tmp_path / "sync-jobs.lock")
    lock.lost.set()
    ctx.fence = WriteFence([lock])
    ctx.quarantine = Quarantine(None, prefix="t:", interval_seconds=60)
    result = run_syncs(ctx, ("jobs",))[0]
    assert result.status == "failed" and result.error.startswith("lock lost: the sync-jobs lock")
    assert ctx.quarantine.blocks("jobs") is None  # a lost lock is no fault of the sync: no back-off
    assert target.rows("sites") == [{"id": 5, "name": "Fleet Yard", "external_code": "FLEET"}]


def test_an_unwritable_change_log_fails_the_sync_without_quarantine(tmp_path):
    """The disk is ours to fix, not the sync's or its services': once it is, the next
    cycle must run at once, not wait out a back-off that grows with every failed cycle."""
    from utils.quarantine import Quarantine

    target = seed_target()
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file: nothing can be created under it\n")
    ctx = make_ctx(tmp_path, target, FakeViewpoint(DEPTS, JOBS, [emp(1)], latest={1: "J1"}))
    ctx.events = EventManager(blocker / "output", "run-1")
    ctx.quarantine = Quarantine(None, prefix="t:", interval_seconds=60)
    result = run_syncs(ctx, ("departments",))[0]
    assert result.status == "failed" and result.error.startswith("cannot write the change log"), result.error
    assert ctx.quarantine.blocks("departments") is None
    assert target.writes() == 0


def _create_once_with(errors, found_after=None):
    """create_once over a scripted target: ``errors`` raised by successive creates, then
    success; ``find`` returns a record from attempt ``found_after`` on (None: never)."""
    from sync.base import create_once

    sent: list[int] = []
    looked: list[int] = []

    def create():
        sent.append(1)
        if len(sent) <= len(errors):
            raise errors[len(sent) - 1]
        return {"id": 1}

    def find():
        looked.append(1)
        return {"id": 1} if found_after is not None and len(looked) >= found_after else None

    return create_once(create, find, sync="jobs", key="J1"), sent, looked


def test_a_create_still_in_flight_and_not_found_is_not_sent_again():
    from utils.errors import AmbiguousWriteError

    with pytest.raises(AmbiguousWriteError, match="not sent again in this run"):
        _create_once_with([AmbiguousWriteError("timed out", settled=False)])


def test_a_settled_ambiguous_create_not_found_is_sent_again_and_one_found_is_adopted():
    from utils.errors import AmbiguousWriteError

    row, sent, looked = _create_once_with([AmbiguousWriteError("HTTP 500", settled=True)])
    assert row == {"id": 1} and len(sent) == 2 and len(looked) == 1
    row, sent, _ = _create_once_with([AmbiguousWriteError("timed out", settled=False)], found_after=1)
    assert row == {"id": 1} and len(sent) == 1  # applied despite the lost response: adopted


def test_the_apply_phase_lets_each_created_record_go_once_settled(tmp_path):
    """What SafetyAmp answered to a create is folded into the run's target cache (a copy)
    and written to the change log; the apply phase keeps no reference of its own to it.
    Held until the end of the phase, 70,000 of them were tens of MB at the peak of a
    50,000-employee first run."""
    import gc
    import weakref

    class Answer(dict):  # a plain dict cannot be weakly referenced
        pass

    answers: list[weakref.ref] = []
    alive: list[int] = []

    class Watched(FakeSafetyAmp):
        def create(self, collection, payload):
            gc.collect()
            alive.append(sum(1 for ref in answers if ref() is not None))
            row = Answer(super().create(collection, payload))
            answers.append(weakref.ref(row))
            return row

    target = Watched({"roles": [{"id": 1, "name": "Field"}], "sites": [{"id": 5, "name": "Yard", "external_code": "FLEET"}]})
    vp = FakeViewpoint(DEPTS, JOBS, [emp(n) for n in range(1, 41)], latest={n: "J1" for n in range(1, 41)})
    results = full_run(tmp_path, target, vp)
    assert results["employees"].counts["created"] == 40
    # two workers, a window of 8 writes in flight or waiting to be settled
    assert len(alive) > 40 and max(alive) <= 10
