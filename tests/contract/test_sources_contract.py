"""The source ports (sync/ports.py: ViewpointSource, GraphDirectory, SamsaraFleet): the
fakes, fed the rows the unit tests feed them (tests/unit/test_syncs.py), and the real
adapters on the sandbox (Vista on SQLite, the Graph and Samsara emulators) return rows
of the same shape: the columns the port documents, each of the type the engine gets in
production. A fixture row that the real source could never produce (a missing column,
a datetime where Vista gives a date) shows up here, not as a unit test that passes on
data production never sees.

A source that cannot be read raises SourceUnavailableError on every read, never a
partial list.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import RunningSandbox
from services.graph_api import build_graph
from services.graph_delta import build_graph_directory
from services.http import RequestStats
from services.samsara_api import build_samsara
from services.viewpoint_api import build_viewpoint
from tests.contract.support import no_sleep, sandbox_settings
from tests.fakes.ports import FakeGraph, FakeSamsara, FakeViewpoint
from tests.support.redis_server import connect, shared_server
from tests.unit.test_syncs import DEPTS, JOBS, emp
from utils.errors import SourceUnavailableError

pytestmark = pytest.mark.integration

SINCE = date(2000, 1, 1)

# The columns each read returns (sync/ports.py ViewpointSource docstrings).
DEPARTMENT_COLUMNS = {"PRDept", "Description"}
JOB_COLUMNS = {"Job", "Description", "JobStatus", "Contract", "Department", "ShipAddress", "ShipCity", "ShipState", "ShipZip"}
EMPLOYEE_COLUMNS = {
    "Employee", "FirstName", "MidName", "LastName", "Suffix", "Email", "Phone", "CellPhone", "Address", "City",
    "State", "Zip", "PRDept", "HireDate", "TermDate", "RecentRehireDate", "ActiveYN", "JCCo", "Job", "Title",
}  # fmt: skip
GRAPH_FIELDS = {"id", "employeeId", "mail", "userPrincipalName", "accountEnabled"}


def _side(request: pytest.FixtureRequest, tmp_path: Path, **env: str) -> Any:
    sb: RunningSandbox = request.getfixturevalue("sandbox")
    return sandbox_settings(sb, tmp_path, **env)


@pytest.fixture(params=["fake", "sandbox"])
def viewpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fake":
        rows = [emp(1), emp(2, "Bo", "Diaz", TermDate=date(2026, 10, 1), ActiveYN="N")]
        return FakeViewpoint(DEPTS, JOBS, rows, latest={1: "J1"})
    return build_viewpoint(_side(request, tmp_path))


@pytest.fixture(params=["fake", "sandbox", "sandbox-delta"])
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fake":
        return FakeGraph(
            [
                {"employeeId": "0001", "mail": "Ann.Lee@Work.com", "accountEnabled": True},
                {"employeeId": "2", "mail": "bo@tenant.onmicrosoft.com", "accountEnabled": True},
            ]
        )
    if request.param == "sandbox-delta":  # issue 14: delta query, the state kept in Redis
        server = next(shared_server())
        client = connect(server, decode=True)
        prefix = f"test-contract-graph-{uuid.uuid4().hex}:"
        request.addfinalizer(lambda: [client.delete(k) for k in client.scan_iter(match=prefix + "*")])
        settings = _side(request, tmp_path, REDIS_PREFIX=prefix)
        return build_graph_directory(settings, build_graph(settings, RequestStats(), sleep=no_sleep), client)
    return build_graph(_side(request, tmp_path), RequestStats(), sleep=no_sleep)


@pytest.fixture(params=["fake", "sandbox"])
def samsara(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fake":
        vehicles = [
            {"id": "v1", "name": "Truck 1", "serial": "GAAA", "vin": "1FT", "make": "Ford", "model": "F-150", "year": "2021",
             "staticAssignedDriver": {"id": "d1", "name": "D R"}},
            {"id": "v2", "name": "Truck 2", "serial": "GBBB", "staticAssignedDriver": {"id": "d2", "name": "X"}},
        ]  # fmt: skip
        drivers = [{"id": "d1", "externalIds": {"payrollId": "01234"}}, {"id": "d2", "externalIds": {}}]
        return FakeSamsara(vehicles, drivers)
    return build_samsara(_side(request, tmp_path, SAMSARA_PAGE_SIZE="2"), RequestStats(), sleep=no_sleep)


def _is_date(value: Any) -> bool:
    return value is None or (isinstance(value, date) and not isinstance(value, datetime))


def _text(value: Any) -> bool:
    return value is None or isinstance(value, str)


# -- Viewpoint --------------------------------------------------------------------------------


def test_viewpoint_rows_have_the_documented_columns(viewpoint: Any) -> None:
    for read, columns in ((viewpoint.departments, DEPARTMENT_COLUMNS), (viewpoint.jobs, JOB_COLUMNS),
                          (viewpoint.employees, EMPLOYEE_COLUMNS)):  # fmt: skip
        rows = read()
        assert rows, read.__name__
        assert [set(r) for r in rows] == [columns] * len(rows), read.__name__


def test_viewpoint_values_have_the_production_types(viewpoint: Any) -> None:
    for row in viewpoint.employees():
        assert isinstance(row["Employee"], int) and isinstance(row["JCCo"], int), row
        assert all(_is_date(row[c]) for c in ("HireDate", "TermDate", "RecentRehireDate")), row
        assert row["ActiveYN"] in ("Y", "N") and isinstance(row["PRDept"], str), row
        assert row["Job"] is None or (isinstance(row["Job"], str) and row["Job"] == row["Job"].strip()), row
        assert all(_text(row[c]) for c in EMPLOYEE_COLUMNS - {"Employee", "JCCo", "HireDate", "TermDate", "RecentRehireDate"})
    for row in viewpoint.jobs():
        assert isinstance(row["JobStatus"], int) and isinstance(row["Job"], str) and row["Job"] == row["Job"].strip(), row
    for row in viewpoint.departments():
        assert isinstance(row["PRDept"], str) and _text(row["Description"]), row
    latest = viewpoint.latest_jobs(SINCE)
    assert latest and all(isinstance(k, int) and isinstance(v, str) and v == v.strip() for k, v in latest.items())


def test_viewpoint_reads_are_copies(viewpoint: Any) -> None:
    first = viewpoint.employees()
    first[0]["FirstName"] = "Changed"
    assert viewpoint.employees()[0]["FirstName"] != "Changed"


@pytest.fixture(params=["fake", "sandbox"])
def unreachable_viewpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fake":
        return FakeViewpoint(fail=SourceUnavailableError("login timeout", service="viewpoint"))  # as the unit tests do
    return build_viewpoint(_side(request, tmp_path, VIEWPOINT_DB_URL=f"sqlite:///{tmp_path}/missing/vista.sqlite"))


def test_an_unreachable_viewpoint_raises_source_unavailable_on_every_read(unreachable_viewpoint: Any) -> None:
    for read in (unreachable_viewpoint.departments, unreachable_viewpoint.jobs, unreachable_viewpoint.employees,
                 lambda: unreachable_viewpoint.latest_jobs(SINCE), unreachable_viewpoint.ping):  # fmt: skip
        with pytest.raises(SourceUnavailableError):
            read()


# -- Graph ------------------------------------------------------------------------------------


def test_graph_users_have_the_selected_fields(graph: Any) -> None:
    users = graph.users()
    assert users and [set(u) for u in users] == [GRAPH_FIELDS] * len(users)
    for user in users:
        assert user["accountEnabled"] in (True, False, None), user
        assert isinstance(user["id"], str) and isinstance(user["userPrincipalName"], str), user  # always set in Entra
        assert _text(user["employeeId"]) and _text(user["mail"]), user


# -- Samsara ----------------------------------------------------------------------------------


def test_samsara_records_have_string_ids_and_the_nested_shapes(samsara: Any) -> None:
    vehicles, drivers = samsara.vehicles(), samsara.drivers()
    assert vehicles and drivers
    for vehicle in vehicles:
        assert isinstance(vehicle["id"], str) and isinstance(vehicle["name"], str), vehicle
        assert all(_text(vehicle.get(f)) for f in ("serial", "vin", "make", "model", "year", "licensePlate")), vehicle
        assigned = vehicle.get("staticAssignedDriver")
        assert assigned is None or (isinstance(assigned, dict) and isinstance(assigned["id"], str)), vehicle
    for driver in drivers:
        assert isinstance(driver["id"], str) and isinstance(driver.get("externalIds", {}), dict), driver
    assert len({v["id"] for v in vehicles}) == len(vehicles)  # every record once, across pages
