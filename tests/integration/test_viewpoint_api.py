"""services/viewpoint_api.py against real databases: SQLite (a temp file) and PostgreSQL
(a unique schema), with the Vista tables created from services.viewpoint_schema.

PostgreSQL comes from VIEWPOINT_TEST_PG_URL (default the local trust login); when it is
unreachable the PostgreSQL cases fail under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import uuid
from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from config.settings import load_settings
from services.viewpoint_api import (
    SQL_COPT_SS_ACCESS_TOKEN,
    ViewpointAPI,
    build_viewpoint,
    build_viewpoint_engine,
    compiled_queries,
    entra_token_connect_hook,
    viewpoint_url,
)
from services.viewpoint_schema import build_metadata
from utils.errors import ConfigurationError, SourceUnavailableError

pytestmark = pytest.mark.integration

PG_URL = os.environ.get("VIEWPOINT_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
TITLE = "udJobTitle"  # a non-default ud column: the title column is configuration


def _settings(**env: str):
    return load_settings({"VIEWPOINT_COMPANY": "1", "VIEWPOINT_TITLE_COLUMN": TITLE, **env}, dotenv_path=None)


def _employee(co: int, emp: int, last: str, **kw) -> dict:
    row = {
        "PRCo": co, "Employee": emp, "LastName": last, "FirstName": None, "MidName": None, "Suffix": None,
        "SortName": f"{last.upper()}{emp}"[:15], "Address": None, "City": None, "State": None, "Zip": None,
        "Phone": None, "CellPhone": None, "Email": None, "Sex": "M", "BirthDate": None, "HireDate": None,
        "TermDate": None, "RecentRehireDate": None, "RecentSeparationDate": None, "ActiveYN": "Y",
        "PRDept": "10", "Craft": None, "Class": None, "JCCo": None, "Job": None, TITLE: None,
    }  # fmt: skip
    row.update(kw)
    return row


def _prjc(co: int, emp: int, end: date, job: str, jcco: int | None = None, phase: str = "01-000") -> dict:
    return {
        "PRCo": co,
        "PRGroup": 1,
        "PREndDate": end,
        "Employee": emp,
        "JCCo": co if jcco is None else jcco,
        "Job": job,
        "Phase": phase,
    }


def seed(engine: Engine) -> None:
    md = build_metadata(TITLE)
    md.create_all(engine)
    t = md.tables
    with engine.begin() as conn:
        conn.execute(insert(t["bHQCO"]), [{"HQCo": 1, "Name": "Acme"}, {"HQCo": 2, "Name": "Acme Two"}])
        conn.execute(
            insert(t["bPRDP"]),
            [
                {"PRCo": 1, "PRDept": "10", "Description": "Operations   "},
                {"PRCo": 1, "PRDept": "20", "Description": "Safety"},
                {"PRCo": 2, "PRDept": "10", "Description": "Other company"},
            ],
        )
        conn.execute(
            insert(t["bJCCM"]),
            [
                {"JCCo": 1, "Contract": " C-100", "Description": "Plant", "Department": "  30 "},
                {"JCCo": 2, "Contract": " C-100", "Description": "Other", "Department": "99"},
            ],
        )
        job = {"ShipAddress": None, "ShipCity": None, "ShipState": None, "ShipZip": None}
        conn.execute(
            insert(t["bJCJM"]),
            [
                {"JCCo": 1, "Job": " 1001-", "Description": "Refinery turnaround ", "Contract": " C-100", "JobStatus": 1,
                 **{**job, "ShipAddress": "1 Main St ", "ShipCity": "Baton Rouge", "ShipState": "LA", "ShipZip": "70801"}},
                {"JCCo": 1, "Job": " 1002-", "Description": "Closed job", "Contract": None, "JobStatus": 3, **job},
                {"JCCo": 1, "Job": " 1003-", "Description": "Open job", "Contract": None, "JobStatus": 1, **job},
                {"JCCo": 2, "Job": " 1001-", "Description": "Other company job", "Contract": " C-100", "JobStatus": 1, **job},
            ],
        )  # fmt: skip
        conn.execute(
            insert(t["bPREH"]),
            [
                _employee(1, 100, "Smith ", FirstName=" John", Email="john@acme.test ", HireDate=date(2020, 3, 2),
                          JCCo=1, Job=" 1001-", **{TITLE: "Foreman  "}, Zip="70801"),
                _employee(1, 101, "Doe", FirstName="Jane", HireDate=date(2019, 1, 7), TermDate=date(2024, 5, 1),
                          ActiveYN="N", PRDept="20", **{TITLE: "Operator"}),
                _employee(2, 100, "Other", FirstName="Company"),
            ],
        )  # fmt: skip
        conn.execute(
            insert(t["bPRJC"]),
            [
                _prjc(1, 100, date(2024, 1, 7), " 1001-"),
                _prjc(1, 100, date(2024, 2, 4), " 1002-"),  # latest for 100, but the job is closed
                _prjc(1, 100, date(2024, 3, 3), " 1001-", jcco=2),  # newer, but another JC company
                _prjc(2, 100, date(2024, 4, 7), " 1001-"),  # newer, but another PR company
                _prjc(1, 101, date(2024, 3, 3), " 1001-"),  # tie on the same end date...
                _prjc(1, 101, date(2024, 3, 3), " 1003-"),  # ...the highest Job wins
                _prjc(1, 101, date(2024, 3, 3), " 1001-", phase="02-000"),
                _prjc(1, 102, date(2023, 6, 4), " 1001-"),  # before `since`
            ],
        )


# -- backends --------------------------------------------------------------------------------
@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    sqlite3.connect(tmp_path / "vista.db").close()  # the product never creates its source
    engine = build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=f"sqlite:///{tmp_path / 'vista.db'}"))
    seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgresql_engine() -> Iterator[Engine]:
    base = build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=PG_URL))
    try:
        with base.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        base.dispose()
        reason = f"PostgreSQL unreachable at {PG_URL}: {str(exc.orig).strip().splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"vp_{uuid.uuid4().hex[:12]}"
    with base.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))  # test-generated identifier, not data
    engine = base.execution_options(schema_translate_map={None: schema})
    try:
        seed(engine)
        yield engine
    finally:
        with base.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        base.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> Engine:
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def api(engine: Engine) -> ViewpointAPI:
    return build_viewpoint(_settings(), engine=engine)


# -- the port ---------------------------------------------------------------------------------
def test_departments_of_the_configured_company(api):
    assert api.departments() == [
        {"PRDept": "10", "Description": "Operations"},
        {"PRDept": "20", "Description": "Safety"},
    ]


def test_jobs_trimmed_with_contract_department(api):
    jobs = api.jobs()
    assert jobs == [
        {
            "Job": "1001-", "Description": "Refinery turnaround", "JobStatus": 1, "Contract": "C-100",
            "Department": "30", "ShipAddress": "1 Main St", "ShipCity": "Baton Rouge", "ShipState": "LA",
            "ShipZip": "70801",
        },
        {
            "Job": "1002-", "Description": "Closed job", "JobStatus": 3, "Contract": None, "Department": None,
            "ShipAddress": None, "ShipCity": None, "ShipState": None, "ShipZip": None,
        },
        {
            "Job": "1003-", "Description": "Open job", "JobStatus": 1, "Contract": None, "Department": None,
            "ShipAddress": None, "ShipCity": None, "ShipState": None, "ShipZip": None,
        },
    ]  # fmt: skip
    assert all(type(j["JobStatus"]) is int for j in jobs)


def test_jc_company_is_separate_configuration(engine):
    other = build_viewpoint(_settings(VIEWPOINT_JC_COMPANY="2"), engine=engine)
    assert [(j["Job"], j["Department"]) for j in other.jobs()] == [("1001-", "99")]


def test_employees_active_and_terminated(api):
    rows = api.employees()
    assert [r["Employee"] for r in rows] == [100, 101]
    john, jane = rows
    assert john["FirstName"] == "John" and john["LastName"] == "Smith" and john["Email"] == "john@acme.test"
    assert john["Title"] == "Foreman"
    assert john["Job"] == "1001-" and john["JCCo"] == 1
    assert john["HireDate"] == date(2020, 3, 2) and type(john["HireDate"]) is date
    assert john["TermDate"] is None and john["ActiveYN"] == "Y"
    assert jane["TermDate"] == date(2024, 5, 1) and jane["ActiveYN"] == "N" and jane["Title"] == "Operator"
    assert set(john) == {
        "Employee", "FirstName", "MidName", "LastName", "Suffix", "Email", "Phone", "CellPhone", "Address",
        "City", "State", "Zip", "PRDept", "HireDate", "TermDate", "RecentRehireDate", "ActiveYN", "JCCo",
        "Job", "Title",
    }  # fmt: skip
    assert not any("SSN" in key for key in john)


def test_latest_jobs(api):
    assert api.latest_jobs(date(2024, 1, 1)) == {100: "1001-", 101: "1003-"}
    assert api.latest_jobs(date(2024, 2, 5)) == {101: "1003-"}
    assert api.latest_jobs(date(2023, 1, 1))[102] == "1001-"


def test_ping(api):
    api.ping()


def test_missing_table_is_source_unavailable(tmp_path):
    sqlite3.connect(tmp_path / "empty.db").close()  # an existing database without Vista's tables
    engine = build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=f"sqlite:///{tmp_path / 'empty.db'}"))
    api = build_viewpoint(_settings(), engine=engine)
    with pytest.raises(SourceUnavailableError, match="employees read failed"):
        api.employees()


def test_unreachable_database_is_source_unavailable_without_password():
    password = "pw-Sup3rSecret"
    url = f"postgresql+psycopg2://postgres:{password}@127.0.0.1:1/test"
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    api = ViewpointAPI(engine, company=1)
    with pytest.raises(SourceUnavailableError) as info:
        api.ping()
    assert password not in str(info.value)
    assert info.value.service == "viewpoint"
    assert isinstance(info.value.__cause__, OperationalError)


def test_unopenable_sqlite_is_source_unavailable(tmp_path):
    engine = build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"))
    with pytest.raises(SourceUnavailableError):
        build_viewpoint(_settings(), engine=engine).departments()


# -- SQL Server form ---------------------------------------------------------------------
def test_compiled_queries_show_sql_server_sql():
    sql = compiled_queries(_settings(VIEWPOINT_COMPANY="3", VIEWPOINT_JC_COMPANY="4"), since=date(2024, 1, 1))
    assert set(sql) == {"departments", "jobs", "employees", "latest_jobs", "ping"}
    assert "FROM [bPRDP]" in sql["departments"] and "[bPRDP].[PRCo] = 3" in sql["departments"]
    assert "FROM [bJCJM] AS [JM] LEFT OUTER JOIN [bJCCM] AS [CM]" in sql["jobs"]
    assert "[CM].[JCCo] = [JM].[JCCo] AND [CM].[Contract] = [JM].[Contract]" in sql["jobs"]
    assert "[JM].[JCCo] = 4" in sql["jobs"]
    assert "FROM [bPREH]" in sql["employees"] and "[bPREH].[PRCo] = 3" in sql["employees"]
    assert f"[bPREH].[{TITLE}] AS [Title]" in sql["employees"]
    assert "FROM [bPRJC]" in sql["latest_jobs"]
    assert (
        "row_number() OVER (PARTITION BY [bPRJC].[Employee] ORDER BY [bPRJC].[PREndDate] DESC, [bPRJC].[Job] DESC)"
        in sql["latest_jobs"]
    )
    assert "[bPRJC].[PRCo] = 3 AND [bPRJC].[JCCo] = 4 AND [bPRJC].[PREndDate] >= '2024-01-01'" in sql["latest_jobs"]
    for statement in sql.values():
        assert "SSN" not in statement.upper()
        assert "PREH]" not in statement or "[bPREH]" in statement  # base tables, not views


def test_values_are_bound_parameters_not_sql_text():
    from services.viewpoint_api import ViewpointQueries

    q = ViewpointQueries(company=7, jc_company=8, title_column=TITLE)
    compiled = q.latest_jobs(date(2024, 1, 1)).compile()
    assert "7" not in str(compiled) and "2024" not in str(compiled)
    assert sorted(map(str, compiled.params.values())) == ["1", "2024-01-01", "7", "8", "[1]"]


# -- engine wiring ------------------------------------------------------------------------
def test_sql_auth_url():
    s = _settings(SQL_SERVER="vista.corp.test,1433", SQL_DATABASE="Viewpoint", SQL_USERNAME="svc", SQL_PASSWORD="p@ss;word")
    url = viewpoint_url(s)
    assert url.drivername == "mssql+pyodbc"
    assert (url.host, url.database, url.username, url.password) == ("vista.corp.test,1433", "Viewpoint", "svc", "p@ss;word")
    assert dict(url.query) == {"driver": "ODBC Driver 18 for SQL Server", "Encrypt": "yes", "TrustServerCertificate": "yes"}
    assert "p@ss;word" not in repr(url)


def test_missing_sql_settings_are_configuration_errors():
    with pytest.raises(ConfigurationError) as info:
        viewpoint_url(_settings(SQL_SERVER="x"))
    assert "SQL_DATABASE" in str(info.value) and "SQL_PASSWORD" in str(info.value)


def test_mssql_engine_needs_the_odbc_stack_or_says_so():
    s = _settings(SQL_SERVER="vista.test", SQL_DATABASE="Viewpoint", SQL_USERNAME="svc", SQL_PASSWORD="pw-123456")
    try:
        engine = build_viewpoint_engine(s)
    except ConfigurationError as exc:  # libodbc absent on this machine
        assert "ODBC" in str(exc) and "pw-123456" not in str(exc)
    else:
        assert engine.dialect.name == "mssql" and engine.pool._pre_ping  # type: ignore[attr-defined]


def test_entra_token_url_has_no_credentials():
    s = _settings(SQL_SERVER="vista.database.windows.net", SQL_DATABASE="Viewpoint", SQL_AUTH_MODE="entra_token")
    url = viewpoint_url(s)
    assert url.username is None and url.password is None


def test_entra_token_hook_passes_the_token_struct():
    class FakeCredential:
        def __init__(self) -> None:
            self.scopes: list[str] = []

        def get_token(self, scope: str):
            self.scopes.append(scope)
            return type("AccessToken", (), {"token": "eyJ0eXAi.token"})()

    cred = FakeCredential()
    hook = entra_token_connect_hook(cred)
    cargs = ["DRIVER={ODBC Driver 18 for SQL Server};Server=x;Database=y;Trusted_Connection=Yes;Encrypt=yes"]
    cparams: dict = {}
    hook(None, None, cargs, cparams)
    assert "Trusted_Connection" not in cargs[0]
    assert cred.scopes == ["https://database.windows.net/.default"]
    raw = cparams["attrs_before"][SQL_COPT_SS_ACCESS_TOKEN]
    (length,) = struct.unpack_from("<I", raw)
    assert raw[4:].decode("utf-16-le") == "eyJ0eXAi.token" and length == len(raw) - 4


def test_entra_token_failure_is_source_unavailable():
    class Broken:
        def get_token(self, scope: str):
            raise RuntimeError("no federated token file")

    with pytest.raises(SourceUnavailableError):
        entra_token_connect_hook(Broken())(None, None, ["x"], {})


def test_sqlite_url_to_a_missing_file_fails_without_creating_it(tmp_path):
    missing = tmp_path / "sub dir" / "no such fïle.sqlite"
    missing.parent.mkdir()
    engine = build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=f"sqlite:///{missing}"))
    api = build_viewpoint(_settings(), engine=engine)
    with pytest.raises(SourceUnavailableError, match="unable to open database file"):
        api.departments()
    assert not missing.exists()
    # the same odd path, once it exists, is read (the URI escaping is right)
    sqlite3.connect(missing).execute("CREATE TABLE bPRDP (PRCo INTEGER, PRDept TEXT, Description TEXT)").connection.commit()
    assert (
        build_viewpoint(
            _settings(), engine=build_viewpoint_engine(_settings(VIEWPOINT_DB_URL=f"sqlite:///{missing}"))
        ).departments()
        == []
    )
