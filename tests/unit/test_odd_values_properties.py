"""No value from any source or target can fail a sync as a whole (hypothesis).

Arbitrary Unicode text (and None, numbers, the "²" that ``str.isdigit`` accepts and
``int()`` refuses, 5 000 digits, control and invisible characters) goes into every
key-like and text field of every adapter's rows: Viewpoint (bPRDP, bJCJM, bPREH, the
latest-job map), Entra ID users, Samsara vehicles and drivers, OneRoster users, classes
and enrollments (through the OneRoster adapter's own parsing), and into the records the
targets already hold (SafetyAmp users, sites, titles, assets; SCIM Users and Groups).

Each example runs the REAL sync classes through ``sync.runner.run_syncs`` over the
in-memory fakes (tests/fakes/ports.py, the FakeScim of test_sync_rosters.py) next to one
known-good record, and asserts: no sync ends ``failed``, none reports an internal
error, the good record still reaches the target, and nothing sent to a target holds a
character the text policy refuses.
"""

from __future__ import annotations

import tempfile
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from services.data_manager import TargetCache
from services.event_manager import EventManager
from services.oneroster_json import class_from_json, collect, enrollment_from_json, user_from_json
from sync.base import SyncContext
from sync.roster_model import RosterSnapshot
from sync.runner import run_syncs
from sync.sync_rosters import RosterSync
from tests.fakes.ports import FakeGraph, FakeSafetyAmp, FakeSamsara, FakeViewpoint
from tests.unit.test_sync_rosters import Cursor, FakeScim, Source
from utils.data_validator import InvalidValue, employee_number
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 1)
GOOD_EMP = "987654"
GOOD_MAIL = "good.worker@known-good.example"

ODD_CATEGORIES = ["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs", "Nd", "No", "Mn", "So"]
odd_text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(categories=ODD_CATEGORIES), max_size=8),
    st.sampled_from(["²", "1" * 5000, "٣٤", "００１", " 0007 ", "", "  ", "\u200b", "A\u2028B", "samsara:²", "9" * 17]),
)
odd = st.one_of(odd_text, st.none(), st.integers(-(10**6), 10**20))
SETTINGS = {"max_examples": 100, "deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


class RecordingSafetyAmp(FakeSafetyAmp):
    """The fake SafetyAmp, remembering every payload the product sent."""

    def __init__(self, seed: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(seed)
        self.sent: list[Any] = []

    def create(self, collection: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(dict(payload))
        return super().create(collection, payload)

    def update(self, collection: str, record_id: int | str, payload: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(dict(payload))
        return super().update(collection, record_id, payload)


class RecordingScim(FakeScim):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Any] = []

    def create(self, resource: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        self.sent.append(dict(payload))
        return super().create(resource, payload)

    def patch(self, resource: str, rid: str, ops: Any, etag: str | None = None) -> None:
        self.sent.append([op.get("value") for op in ops])
        super().patch(resource, rid, ops, etag)


def refused(value: Any) -> list[str]:
    """Strings anywhere in ``value`` holding a character the text policy refuses (stated
    here independently of utils/data_validator.py)."""
    found: list[str] = []
    if isinstance(value, str):
        for ch in value:
            cat = unicodedata.category(ch)
            if (
                cat in ("Cc", "Cs", "Co", "Zl", "Zp")
                or 0xE0000 <= ord(ch) <= 0xE007F
                or (cat == "Cf" and ch not in "\u200c\u200d")
            ):
                found.append(value)
                break
    elif isinstance(value, Mapping):
        for v in value.values():
            found += refused(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += refused(v)
    return found


@contextmanager
def context(target: Any = None, **ports: Any) -> Iterator[SyncContext]:
    # The change and error files are fsynced: on a RAM disk when there is one, so that
    # hundreds of examples do not wait on the disk.
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        settings = load_settings(
            {"OUTPUT_DIR": tmp, "VIEWPOINT_DB_URL": "sqlite://", "SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "f"},
            dotenv_path=None,
        )
        yield SyncContext(
            settings=settings,
            targets=TargetCache(target) if target is not None else None,
            tracker=InMemoryTracker(),
            events=EventManager(Path(tmp), "run-odd"),
            metrics=Metrics(),
            today=TODAY,
            max_workers=2,
            **ports,
        )


def assert_held(results: list[Any]) -> None:
    for r in results:
        assert r.status != "failed", (r.sync, r.error)
        assert "internal error" not in (r.error or ""), (r.sync, r.error)


def seed_target(users: list[dict[str, Any]] = (), **more: list[dict[str, Any]]) -> RecordingSafetyAmp:  # type: ignore[assignment]
    ids = iter(range(50_000, 60_000))
    seed: dict[str, list[dict[str, Any]]] = {
        "roles": [{"id": 1, "name": "Field"}],
        "site_clusters": [],
        "sites": [{"id": 5, "name": "Fleet Yard", "external_code": "FLEET"}, {"id": 6, "name": "Good", "external_code": "JGOOD"}],
        "asset_types": [{"id": 7, "name": "Vehicle", "site_id": 5}],
        "users": [{"id": next(ids), **u} for u in users],
    }
    for coll, rows in more.items():
        seed.setdefault(coll, []).extend({"id": next(ids), **r} for r in rows)
    return RecordingSafetyAmp(seed)


def not_good(*values: Any) -> bool:
    """True when no generated value could stand for the good record's key."""
    for v in values:
        try:
            if employee_number(v) == GOOD_EMP:
                return False
        except InvalidValue:  # what employee_number refuses cannot collide
            pass
        if isinstance(v, str) and GOOD_MAIL in v.lower():
            return False
    return True


# --------------------------------------------------------------------------- Viewpoint syncs

dept_rows = st.lists(st.fixed_dictionaries({"PRDept": odd, "Description": odd}), max_size=4)
job_rows = st.lists(
    st.fixed_dictionaries(
        {"Job": odd, "Description": odd, "JobStatus": st.one_of(st.sampled_from([1, 3, 2]), odd), "Department": odd,
         "ShipAddress": odd, "ShipCity": odd, "ShipState": odd, "ShipZip": odd}
    ),
    max_size=4,
)  # fmt: skip


@settings(**SETTINGS)
@given(dept_rows, job_rows, st.lists(odd, max_size=3), st.lists(odd, max_size=3))
def test_departments_and_jobs_survive_any_code_or_text(depts, jobs, cluster_codes, site_codes) -> None:
    target = seed_target(
        site_clusters=[{"name": "x", "external_code": c} for c in cluster_codes],
        sites=[{"name": "x", "external_code": c, "active": 1} for c in site_codes],
    )
    vp = FakeViewpoint(
        [{"PRDept": "GOODD", "Description": "Good department"}, *depts],
        [{"Job": "JGOOD2", "Description": "Good job", "JobStatus": 1, "Department": "GOODD"}, *jobs],
    )
    with context(target, viewpoint=vp) as ctx:
        assert_held(run_syncs(ctx, ["departments", "jobs"]))
    assert "GOODD" in {c.get("external_code") for c in target.rows("site_clusters")}
    assert "JGOOD2" in {s.get("external_code") for s in target.rows("sites")}
    assert refused(target.sent) == []


def employee_row(n: Any, **kw: Any) -> dict[str, Any]:
    row = {"Employee": n, "FirstName": "Ann", "MidName": None, "LastName": "Lee", "Email": f"e{n}@x.example",
           "Phone": None, "CellPhone": None, "HireDate": date(2020, 1, 1), "TermDate": None,
           "RecentRehireDate": None, "ActiveYN": "Y", "JCCo": 1, "Job": "JGOOD", "Title": "Foreman"}  # fmt: skip
    row.update(kw)
    return row


bpreh_rows = st.lists(
    st.builds(
        lambda n, first, last, mail, phone, hire, term, rehire, active, job, title: employee_row(
            n, FirstName=first, LastName=last, Email=mail, CellPhone=phone, HireDate=hire, TermDate=term,
            RecentRehireDate=rehire, ActiveYN=active, Job=job, Title=title,
        ),
        odd, odd, odd, odd, odd, st.one_of(odd, st.just(date(2020, 5, 1)), st.just(datetime(2021, 1, 1, tzinfo=UTC))),
        st.one_of(odd, st.just(date(2021, 1, 1))), st.one_of(odd, st.just(date(2022, 1, 1))),
        st.one_of(st.sampled_from(["Y", "N"]), odd), odd, odd,
    ),
    max_size=4,
)  # fmt: skip
graph_users = st.lists(
    st.fixed_dictionaries({"employeeId": odd, "mail": odd, "accountEnabled": st.one_of(st.booleans(), odd)}), max_size=4
)
target_users = st.lists(
    st.fixed_dictionaries({"emp_id": odd, "email": odd, "mobile_phone": odd, "first_name": odd, "system_access": odd}),
    max_size=3,
)


@settings(**SETTINGS)
@given(bpreh_rows, graph_users, target_users, st.dictionaries(odd_text, odd, max_size=3), st.lists(odd, max_size=3))
def test_titles_and_employees_survive_any_employee_number_or_text(rows, entra, users, latest, titles) -> None:
    assume(not_good(*(r["Employee"] for r in rows), *(r["Email"] for r in rows)))
    assume(not_good(*(u["employeeId"] for u in entra), *(u["emp_id"] for u in users), *(u["email"] for u in users)))
    assume(not_good(*latest))
    target = seed_target(users, user_titles=[{"name": t} for t in titles])
    good = employee_row(int(GOOD_EMP), Email=GOOD_MAIL, FirstName="Zoë", LastName="José 👷\u200d♀️")
    vp = FakeViewpoint(employees=[good, *rows], latest=dict(latest))
    graph = FakeGraph([{"employeeId": "x", "mail": "nobody@x.example", "accountEnabled": True}, *entra])
    with context(target, viewpoint=vp, graph=graph) as ctx:
        assert_held(run_syncs(ctx, ["titles", "employees"]))
    mine = [u for u in target.rows("users") if u.get("emp_id") == GOOD_EMP]
    assert mine and mine[0]["email"] == GOOD_MAIL and mine[0]["home_site_id"] == 6
    assert refused(target.sent) == []


# --------------------------------------------------------------------------- Samsara

vehicles = st.lists(
    st.fixed_dictionaries(
        {"id": odd, "name": odd, "vin": odd, "make": odd, "model": odd, "year": odd, "licensePlate": odd,
         "gateway": st.one_of(odd, st.fixed_dictionaries({"serial": odd})),
         "staticAssignedDriver": st.one_of(odd, st.fixed_dictionaries({"id": odd}))}
    ),
    max_size=4,
)  # fmt: skip
drivers = st.lists(
    st.fixed_dictionaries({"id": odd, "externalIds": st.one_of(odd, st.fixed_dictionaries({"payrollId": odd}))}),
    max_size=4,
)
assets = st.lists(
    st.fixed_dictionaries({"code": st.one_of(odd, odd_text.map(lambda t: "samsara:" + t)), "status": odd}), max_size=3
)


@settings(**SETTINGS)
@given(vehicles, drivers, target_users, assets)
def test_vehicles_survive_any_id_payroll_id_or_text(fleet, people, users, held) -> None:
    assume(not_good(*(u["emp_id"] for u in users)))
    assume(all(d["id"] != "d-good" for d in people))
    target = seed_target([{"emp_id": GOOD_EMP, "email": GOOD_MAIL}, *users], assets=held)
    samsara = FakeSamsara(
        [{"id": "v-good", "name": "Truck 1", "year": "2019", "staticAssignedDriver": {"id": "d-good"}}, *fleet],
        [{"id": "d-good", "externalIds": {"payrollId": "00" + GOOD_EMP}}, *people],
    )
    with context(target, samsara=samsara) as ctx:
        assert_held(run_syncs(ctx, ["vehicles"]))
    good_user = next(u for u in target.rows("users") if u.get("emp_id") == GOOD_EMP)
    mine = [a for a in target.rows("assets") if a.get("code") == "samsara:v-good"]
    assert mine and mine[0]["current_user_id"] == good_user["id"] and mine[0]["year"] == 2019
    assert refused(target.sent) == []


# --------------------------------------------------------------------------- OneRoster -> SCIM

roster_users = st.lists(
    st.fixed_dictionaries(
        {"sourcedId": odd, "username": odd, "givenName": odd, "familyName": odd, "email": odd, "identifier": odd,
         "status": odd, "enabledUser": odd, "role": st.one_of(st.just("student"), odd),
         "orgs": st.one_of(st.lists(st.fixed_dictionaries({"sourcedId": odd}), max_size=2), odd)}
    ),
    max_size=4,
)  # fmt: skip
roster_classes = st.lists(
    st.fixed_dictionaries({"sourcedId": odd, "title": odd, "classCode": odd, "school": odd, "status": odd}), max_size=3
)
roster_enrollments = st.lists(
    st.fixed_dictionaries({"sourcedId": odd, "user": odd, "class": odd, "role": odd, "school": odd, "status": odd}),
    max_size=4,
)
scim_users = st.lists(
    st.fixed_dictionaries(
        {"externalId": odd, "userName": odd, "active": odd, "emails": st.one_of(odd, st.lists(st.fixed_dictionaries({"value": odd}), max_size=2)),
         "name": st.one_of(odd, st.fixed_dictionaries({"givenName": odd}))}
    ),
    max_size=3,
)  # fmt: skip
scim_groups = st.lists(
    st.fixed_dictionaries({"externalId": odd, "displayName": odd, "members": st.one_of(odd, st.lists(st.fixed_dictionaries({"value": odd}), max_size=2))}),
    max_size=3,
)  # fmt: skip


@settings(**SETTINGS)
@given(roster_users, roster_classes, roster_enrollments, scim_users, scim_groups)
def test_rosters_survive_any_sourced_id_reference_or_text(users, classes, enrollments, held_users, held_groups) -> None:
    assume(all(u["sourcedId"] != "good-user" and u["username"] != "good.user" for u in users))
    assume(all(c["sourcedId"] != "good-class" for c in classes))
    assume(all(u["externalId"] not in ("good-user", "good-class") and u["userName"] != "good.user" for u in held_users))
    assume(all(g["externalId"] != "good-class" for g in held_groups))
    snap = RosterSnapshot()
    good_user = {"sourcedId": "good-user", "username": "good.user", "givenName": "Nora", "familyName": "نیک\u200cنام",
                 "email": "good.user@district.example", "role": "student", "orgs": [{"sourcedId": "s1"}]}  # fmt: skip
    good_class = {"sourcedId": "good-class", "title": "Math 7", "school": {"sourcedId": "s1"}}
    good_enrollment = {"sourcedId": "good-e", "user": "good-user", "class": "good-class", "role": "student", "school": "s1"}
    snap.users = collect([good_user, *users], user_from_json, "user", snap)
    snap.classes = collect([good_class, *classes], class_from_json, "class", snap)
    snap.enrollments = collect([good_enrollment, *enrollments], enrollment_from_json, "enrollment", snap)
    scim = RecordingScim()
    for i, row in enumerate(held_users):
        scim.data["Users"][f"u{i}"] = {**row, "id": f"u{i}"}
    for i, row in enumerate(held_groups):
        scim.data["Groups"][f"g{i}"] = {**row, "id": f"g{i}"}
    with context(oneroster=Source(snap), scim=scim, roster_cursor=Cursor()) as ctx:
        result = RosterSync(ctx, now=lambda: datetime(2026, 11, 1, 8, tzinfo=UTC)).run()
    assert_held([result])
    user = scim.by_ext("Users")["good-user"]
    assert user["userName"] == "good.user" and user["name"]["familyName"] == "نیک\u200cنام"
    assert scim.members("good-class") == {"good-user"}
    assert refused(scim.sent) == []


class OddIdSafetyAmp(RecordingSafetyAmp):
    """A SafetyAmp whose list pages also hold records without a usable id."""

    def list(self, collection: str) -> list[dict[str, Any]]:
        rows = super().list(collection)
        if collection == "users":
            rows += [{"emp_id": GOOD_EMP, "email": "x@odd.example"}, {"id": None, "emp_id": GOOD_EMP},
                     {"id": [1], "emp_id": GOOD_EMP}, {"id": {"a": 1}, "emp_id": "12"}]  # fmt: skip
        if collection == "assets":
            rows += [{"id": [2], "code": "samsara:v-good"}, {"code": "samsara:v-good"}]
        return rows


def test_target_records_without_a_usable_id_are_not_ours() -> None:
    target = OddIdSafetyAmp({"roles": [{"id": 1, "name": "Field"}], "site_clusters": [],
                             "sites": [{"id": 5, "name": "Fleet Yard", "external_code": "FLEET"},
                                       {"id": 6, "name": "Good", "external_code": "JGOOD"}],
                             "asset_types": [{"id": 7, "name": "Vehicle", "site_id": 5}]})  # fmt: skip
    vp = FakeViewpoint(employees=[employee_row(int(GOOD_EMP), Email=GOOD_MAIL)])
    samsara = FakeSamsara([{"id": "v-good", "name": "Truck 1"}])
    with context(target, viewpoint=vp, samsara=samsara) as ctx:
        assert_held(run_syncs(ctx, ["employees", "vehicles"]))
    assert [u["emp_id"] for u in target.rows("users")] == [GOOD_EMP]  # created (the odd ones are not ours to update)
    assert [a["code"] for a in target.rows("assets")] == ["samsara:v-good"]


def test_a_vehicle_refused_for_its_name_keeps_its_asset() -> None:
    # Still in Samsara: refusing to send its name must not read as "gone" and archive it.
    target = seed_target(assets=[{"code": "samsara:v1", "name": "Truck 1", "status": 1}])
    samsara = FakeSamsara([{"id": "v1", "name": "Truck\x071"}, {"id": "v2", "name": "Truck 2"}])
    with context(target, samsara=samsara) as ctx:
        (result,) = run_syncs(ctx, ["vehicles"])
    assert result.status == "partial" and result.counts["deactivated"] == 0, result
    assets = {a["code"]: a for a in target.rows("assets")}
    assert assets["samsara:v1"]["status"] == 1 and assets["samsara:v1"]["name"] == "Truck 1"
    assert assets["samsara:v2"]["status"] == 1


def test_a_lone_surrogate_from_a_source_is_written_to_the_errors_file_escaped() -> None:
    # JSON may carry "\ud800"; writing it as UTF-8 raised and failed the whole sync.
    target = seed_target()
    vp = FakeViewpoint(employees=[employee_row(int(GOOD_EMP), Email=GOOD_MAIL), employee_row(5, FirstName="Ann\ud800")])
    with context(target, viewpoint=vp) as ctx:
        (result,) = run_syncs(ctx, ["employees"])
        errors = next((Path(ctx.settings.output_dir) / "errors").glob("employees-*.json")).read_text(encoding="utf-8")
    assert result.status == "partial", result.error
    assert "first_name contains an unpaired surrogate (U+D800)" in errors and "Ann\\ud800" in errors


def test_a_lone_surrogate_in_a_vehicle_is_hashed_and_refused_not_a_crash() -> None:
    # The record's fingerprint hashed its raw values as strict UTF-8: "\ud800" failed the sync.
    target = seed_target()
    samsara = FakeSamsara([{"id": "v1", "name": "Truck 1", "licensePlate": "AB\ud800"}])
    with context(target, samsara=samsara) as ctx:
        (result,) = run_syncs(ctx, ["vehicles"])
    assert result.status == "success" and result.counts["created"] == 1, result.error
    (asset,) = target.rows("assets")
    assert asset["code"] == "samsara:v1" and "description" not in asset  # the plate was left out, with its reason
