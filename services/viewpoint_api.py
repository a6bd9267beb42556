"""Viewpoint Vista (SQL Server) read adapter: implements ``sync.ports.ViewpointSource``.

Reads the Vista base tables bPRDP, bJCJM (+ bJCCM), bPREH and bPRJC for the configured
companies (VIEWPOINT_COMPANY / VIEWPOINT_JC_COMPANY, never literals) with SQLAlchemy
Core statements built from ``services.viewpoint_schema`` metadata: every value is a
bound parameter, no SQL text is assembled from values, and SSN is not even declared.
The same statements run on SQL Server in production, and on SQLite (the sandbox) and
PostgreSQL in tests; ``compiled_queries`` shows the SQL Server form.

Errors: any database failure (sqlalchemy OperationalError, DBAPIError, ...) becomes
``SourceUnavailableError`` (``raise ... from exc``) with a message that never contains
the password; a read returns every row or raises, never a partial list. A missing ODBC
stack (pyodbc / libodbc), an ODBC driver name that is not installed, a URL SQLAlchemy
cannot use, or incomplete settings raise ``ConfigurationError`` (settings validation
asks ``db_url_problem``, ``title_column_problem`` and ``connection_problems`` at start,
so these are named before any run). A title column the database lacks, or one that
does not hold text, can only be known by asking the database: the first employees read
checks it and raises ``ConfigurationError`` naming VIEWPOINT_TITLE_COLUMN, which fails
the titles and employees syncs only.

Vendor libraries are imported lazily: pyodbc only when a ``mssql+pyodbc`` engine is
created (libodbc is often absent on developer machines), azure-identity only in the
``SQL_AUTH_MODE=entra_token`` path.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import Select, String, create_engine, event, func, inspect, literal, select
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from config.settings import Settings
from services.viewpoint_schema import build_metadata
from sync.ports import Row
from utils.errors import ConfigurationError, SourceUnavailableError, SyncError
from utils.scrub import scrub

CONNECT_TIMEOUT_SECONDS = 15
SQL_COPT_SS_ACCESS_TOKEN = 1256  # msodbcsql pre-connect attribute for an Entra access token
AZURE_SQL_SCOPE = "https://database.windows.net/.default"

EMPLOYEE_COLUMNS = (
    "Employee", "FirstName", "MidName", "LastName", "Suffix", "Email", "Phone", "CellPhone",
    "Address", "City", "State", "Zip", "PRDept", "HireDate", "TermDate", "RecentRehireDate",
    "ActiveYN", "JCCo", "Job",
)  # fmt: skip


NEVER_TITLE_COLUMNS = ("SSN",)
"""bPREH columns that are deliberately absent from our metadata (nothing may select them)
and so can never be the title column either."""


def title_column_problem(name: str) -> str | None:
    """Why ``name`` cannot be VIEWPOINT_TITLE_COLUMN, as far as it can be told without the
    database, or None. A column this product reads as something else (Email, PRDept...)
    would put that data into SafetyAmp as titles; comparison ignores case, as SQL Server's
    default collation does."""
    placeholder = "__title__"
    known = [c for c in build_metadata(placeholder).tables["bPREH"].columns.keys() if c != placeholder]
    for column in (*known, *NEVER_TITLE_COLUMNS):
        if column.lower() == name.lower():
            return (
                f"{column} is a bPREH column that is not a job title (this product reads it for something else, "
                "or never reads it); name the column holding the title, usually a ud column such as udEmpTitle"
            )
    return None


def db_url_problem(text: str) -> str | None:
    """Why ``text`` is not a SQLAlchemy URL this installation knows, or None. Never
    quotes the URL (it may hold a password); the dialect name is not secret."""
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        return (
            "not a database URL: expected dialect+driver://user:password@host/database, e.g. "
            "mssql+pyodbc://user:password@host/Viewpoint?driver=ODBC+Driver+18+for+SQL+Server"
        )
    try:
        url.get_dialect()
    except NoSuchModuleError:
        return f"unknown database dialect or driver {url.drivername!r} (e.g. mssql+pyodbc, postgresql+psycopg, sqlite)"
    return None


def connection_problems(settings: Settings, *, odbc_drivers: Callable[[], list[str]] | None = None) -> list[str]:
    """Whether the database driver the settings choose can be loaded and, for pyodbc, the
    ODBC driver named is installed; each problem names the setting that chose it and the
    advice matches what is set (VIEWPOINT_DB_URL, else SQL_DRIVER). ``odbc_drivers`` lists
    the installed ODBC drivers (default ``pyodbc.drivers``; tests pass their own)."""
    try:
        url = viewpoint_url(settings)
    except ConfigurationError as exc:
        return exc.problems
    by_url = bool(settings.viewpoint_db_url)
    try:
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        return [_driver_advice(settings, url, exc)]
    if url.get_driver_name() != "pyodbc":
        return []
    odbc_driver = url.query.get("driver")
    connect = url.query.get("odbc_connect")
    where_in_url = "driver="
    if not isinstance(odbc_driver, str) and isinstance(connect, str):
        odbc_driver, where_in_url = _odbc_connect_driver(connect), "odbc_connect DRIVER="
    if not isinstance(odbc_driver, str):  # a DSN: the driver manager resolves it from odbc.ini
        return []
    if odbc_drivers is None:
        import pyodbc

        odbc_drivers = pyodbc.drivers
    installed = odbc_drivers()
    if any(d.lower() == odbc_driver.lower() for d in installed):
        return []
    listed = ", ".join(repr(d) for d in installed) or "none"
    where = f"VIEWPOINT_DB_URL: its {where_in_url}{odbc_driver!r}" if by_url else f"SQL_DRIVER={odbc_driver!r}"
    return [f"{where} is not an installed ODBC driver (installed: {listed}); install it or name one of those"]


def _odbc_connect_driver(connect: str) -> str | None:
    """The DRIVER of an ODBC connection string (``DRIVER={ODBC Driver 18 for SQL Server};
    SERVER=...``; keys are case-insensitive, a value may be wrapped in braces), or None."""
    for part in re.split(r";(?![^{]*\})", connect):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "driver":
            value = value.strip()
            return value[1:-1] if value.startswith("{") and value.endswith("}") else value
    return None


def _driver_advice(settings: Settings, url: URL, exc: ImportError) -> str:
    """The message for a DBAPI that cannot be imported, naming what the settings chose."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if settings.viewpoint_db_url:
        odbc = url.query.get("driver")
        what = url.get_driver_name()
        if what == "pyodbc":
            what = "unixODBC, pyodbc" + (f" and the {odbc!r} ODBC driver the URL names" if isinstance(odbc, str) else "")
        return (
            f"VIEWPOINT_DB_URL: the {url.drivername} database driver cannot be loaded ({reason}); "
            f"install {what}, or use another driver in the URL"
        )
    return (
        f"SQL_DRIVER={settings.sql_driver!r}: pyodbc cannot be loaded ({reason}); install unixODBC and the "
        f"{settings.sql_driver!r} ODBC driver, or set VIEWPOINT_DB_URL to use another database driver"
    )


class ViewpointQueries:
    """The Core statements, built once from metadata and company numbers."""

    def __init__(
        self,
        *,
        company: int,
        jc_company: int | None = None,
        title_column: str = "udEmpTitle",
        open_job_statuses: Iterable[int] = (1,),
    ) -> None:
        self.company = company
        self.open_job_statuses = tuple(open_job_statuses)
        self.jc_company = company if jc_company is None else jc_company
        self.title_column = title_column
        self.md = build_metadata(title_column)

    def departments(self) -> Select[Any]:
        dp = self.md.tables["bPRDP"]
        return select(dp.c.PRDept, dp.c.Description).where(dp.c.PRCo == self.company).order_by(dp.c.PRDept)

    def jobs(self) -> Select[Any]:
        jm = self.md.tables["bJCJM"].alias("JM")
        cm = self.md.tables["bJCCM"].alias("CM")
        return (
            select(
                jm.c.Job,
                jm.c.Description,
                jm.c.JobStatus,
                jm.c.Contract,
                cm.c.Department,
                jm.c.ShipAddress,
                jm.c.ShipCity,
                jm.c.ShipState,
                jm.c.ShipZip,
            )
            .select_from(jm.outerjoin(cm, (cm.c.JCCo == jm.c.JCCo) & (cm.c.Contract == jm.c.Contract)))
            .where(jm.c.JCCo == self.jc_company)
            .order_by(jm.c.Job)
        )

    def employees(self) -> Select[Any]:
        """Active and terminated: the sync decides what a termination means."""
        eh = self.md.tables["bPREH"]
        cols = [eh.c[name] for name in EMPLOYEE_COLUMNS] + [eh.c[self.title_column].label("Title")]
        return select(*cols).where(eh.c.PRCo == self.company).order_by(eh.c.Employee)

    def latest_jobs(self, since: date) -> Select[Any]:
        """Per employee, the Job of the latest PREndDate >= since among jobs still open
        (JobStatus in the open statuses, as the predecessor's JobStatus = 1 join did: a
        closed job has no active site to be a home); ties -> highest Job.

        Both PRCo and JCCo are filtered: a job of another JC company has no site here."""
        jc = self.md.tables["bPRJC"]
        jm = self.md.tables["bJCJM"]
        rank = func.row_number().over(partition_by=jc.c.Employee, order_by=(jc.c.PREndDate.desc(), jc.c.Job.desc())).label("rn")
        ranked = (
            select(jc.c.Employee, jc.c.Job, rank)
            .select_from(jc.join(jm, (jm.c.JCCo == jc.c.JCCo) & (jm.c.Job == jc.c.Job)))
            .where(
                jc.c.PRCo == self.company,
                jc.c.JCCo == self.jc_company,
                jc.c.PREndDate >= since,
                jm.c.JobStatus.in_(self.open_job_statuses),
            )
            .subquery("ranked")
        )
        return select(ranked.c.Employee, ranked.c.Job).where(ranked.c.rn == 1).order_by(ranked.c.Employee)

    @staticmethod
    def ping() -> Select[Any]:
        return select(literal(1).label("ok"))


def _clean(keys: tuple[str, ...], row: Any) -> Row:
    """One row as a dict: Vista pads char data and returns smalldatetime for dates. (One
    pass over the values, None and plain text first: half the time of a dict built and
    then cleaned, 50,000 rows at every cycle.)"""
    out: Row = {}
    for key, value in zip(keys, row, strict=True):
        if value is not None:
            if isinstance(value, str):
                value = value.strip()
            elif isinstance(value, datetime):
                value = value.date()
        out[key] = value
    return out


class ViewpointAPI:
    """Read side of Viewpoint Vista over a SQLAlchemy engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        company: int,
        jc_company: int | None = None,
        title_column: str = "udEmpTitle",
        secrets: Iterable[str] = (),
        open_job_statuses: Iterable[int] = (1,),
    ) -> None:
        self.engine = engine
        self.queries = ViewpointQueries(
            company=company, jc_company=jc_company, title_column=title_column, open_job_statuses=open_job_statuses
        )
        password = engine.url.password
        self._secrets = [s for s in (*secrets, password if isinstance(password, str) else None) if s]
        self._title_checked = False

    def departments(self) -> list[Row]:
        """bPRDP rows: PRDept, Description."""
        return self._rows("departments", self.queries.departments())

    def jobs(self) -> list[Row]:
        """bJCJM (+ bJCCM Department) rows, every JobStatus; codes trimmed."""
        rows = self._rows("jobs", self.queries.jobs())
        for row in rows:
            row["JobStatus"] = _as_int(row["JobStatus"])
        return rows

    def employees(self) -> list[Row]:
        """bPREH rows, active and terminated; title column aliased ``Title``."""
        self._check_title_column()
        rows = self._rows("employees", self.queries.employees())
        for row in rows:
            # NULL or not a number (a view, a damaged row): passed on as it is, and the
            # sync rejects that one row with its reason.
            row["Employee"] = _as_int(row["Employee"])
            row["JCCo"] = _as_int(row["JCCo"])
        return rows

    def latest_jobs(self, since: date) -> dict[int, str]:
        """Employee -> Job (trimmed) of the most recent bPRJC row with PREndDate >= since."""
        rows = self._rows("latest_jobs", self.queries.latest_jobs(since))
        return {_as_int(r["Employee"]): r["Job"] for r in rows if r["Job"] and r["Employee"] is not None}

    def ping(self) -> None:
        """SELECT 1; raises SourceUnavailableError."""
        self._rows("ping", self.queries.ping())

    def _check_title_column(self) -> None:
        """VIEWPOINT_TITLE_COLUMN must exist in bPREH and hold text; only the database can
        tell. Asked once per adapter; if the catalogue cannot be read, the read that
        follows reports the database's own error instead."""
        if self._title_checked:
            return
        name = self.queries.title_column
        try:
            columns = inspect(self.engine).get_columns("bPREH")
        except SQLAlchemyError:
            return
        if not columns:
            return
        found = next((c for c in columns if c["name"] == name), None) or next(
            (c for c in columns if str(c["name"]).lower() == name.lower()), None
        )
        if found is None:
            ud = sorted(str(c["name"]) for c in columns if str(c["name"]).lower().startswith("ud"))
            hint = f"; its ud columns: {', '.join(ud[:20])}" if ud else ""
            raise ConfigurationError(f"VIEWPOINT_TITLE_COLUMN={name!r}: bPREH has no such column{hint}")
        kind = found["type"]
        if not isinstance(kind, String) and type(kind).__name__ != "NullType":
            raise ConfigurationError(
                f"VIEWPOINT_TITLE_COLUMN={name!r}: bPREH.{found['name']} holds {kind}, not text: it cannot be a job title"
            )
        self._title_checked = True

    def _rows(self, what: str, stmt: Select[Any]) -> list[Row]:
        try:
            with self.engine.connect() as conn:
                result = conn.execute(stmt)
                keys = tuple(result.keys())
                # Plain tuples zipped with the column names: a RowMapping per row costs
                # more than the fetch itself at 50 000 employees.
                return [_clean(keys, row) for row in result]
        except SyncError:
            raise
        except SQLAlchemyError as exc:
            raise SourceUnavailableError(f"viewpoint: {what} read failed: {self._describe(exc)}", service="viewpoint") from exc

    def _describe(self, exc: SQLAlchemyError) -> str:
        # The driver's own message, without SQLAlchemy's "[SQL: ...]" statement dump.
        orig = getattr(exc, "orig", None)
        source: BaseException = orig if isinstance(orig, BaseException) else exc
        first = (str(source).strip().splitlines() or [""])[0]
        return scrub(f"{type(source).__name__}: {first}", self._secrets)[:400]


# --------------------------------------------------------------------------------------
# wiring
# --------------------------------------------------------------------------------------
def viewpoint_url(settings: Settings) -> URL:
    """The SQLAlchemy URL: VIEWPOINT_DB_URL as given, else mssql+pyodbc from SQL_*."""
    if settings.viewpoint_db_url:
        return make_url(settings.viewpoint_db_url.get_secret_value())
    missing = [n for n, v in (("SQL_SERVER", settings.sql_server), ("SQL_DATABASE", settings.sql_database)) if not v]
    entra = settings.sql_auth_mode == "entra_token"
    if not entra:
        missing += [n for n, v in (("SQL_USERNAME", settings.sql_username), ("SQL_PASSWORD", settings.sql_password)) if not v]
    if missing:
        raise ConfigurationError([f"{m} is required for Viewpoint (or set VIEWPOINT_DB_URL)" for m in missing])
    return URL.create(
        "mssql+pyodbc",
        username=None if entra else settings.sql_username,
        password=None if entra or settings.sql_password is None else settings.sql_password.get_secret_value(),
        host=settings.sql_server,
        database=settings.sql_database,
        query={"driver": settings.sql_driver, "Encrypt": "yes", "TrustServerCertificate": "yes"},
    )


def token_struct(token: str) -> bytes:
    """The SQL_COPT_SS_ACCESS_TOKEN layout msodbcsql expects: a little-endian length
    prefix followed by the token in UTF-16-LE."""
    raw = token.encode("utf-16-le")
    return struct.pack(f"<I{len(raw)}s", len(raw), raw)


def entra_token_connect_hook(credential: Any) -> Callable[..., None]:
    """A ``do_connect`` listener that hands pyodbc a fresh Entra token for each new
    connection (the credential caches and refreshes it). Per the SQLAlchemy docs on
    access tokens, the Trusted_Connection SQLAlchemy adds for a user-less URL must go."""

    def provide_token(dialect: Any, conn_rec: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        try:
            token = credential.get_token(AZURE_SQL_SCOPE).token
        except Exception as exc:  # azure-identity raises several unrelated types
            raise SourceUnavailableError(
                f"viewpoint: Entra token for SQL failed: {type(exc).__name__}", service="viewpoint"
            ) from exc
        if cargs and isinstance(cargs[0], str):
            cargs[0] = cargs[0].replace(";Trusted_Connection=Yes", "")
        attrs = dict(cparams.get("attrs_before") or {})
        attrs[SQL_COPT_SS_ACCESS_TOKEN] = token_struct(token)
        cparams["attrs_before"] = attrs

    return provide_token


def _sqlite_existing_only(url: Any) -> Any:
    """An SQLite URL that refuses to create its file: a mistyped path must fail the read
    ("unable to open database file"), not leave an empty database behind."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return url
    return url.set(database="file:" + quote(database, safe="/"), query={**url.query, "mode": "rw", "uri": "true"})


def build_viewpoint_engine(settings: Settings, *, credential: Any = None) -> Engine:
    """Engine for Viewpoint. ``credential`` (entra_token mode) defaults to azure-identity's
    DefaultAzureCredential (workload identity on AKS). Creating an engine does not connect."""
    url = viewpoint_url(settings)
    try:
        if settings.viewpoint_db_url:
            if url.get_backend_name() == "sqlite":
                return create_engine(_sqlite_existing_only(url))
            return create_engine(url, pool_pre_ping=True)
        engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT_SECONDS})
    except ImportError as exc:  # pyodbc missing, or libodbc.so absent underneath it
        raise ConfigurationError(_driver_advice(settings, url, exc)) from exc
    if settings.sql_auth_mode == "entra_token":
        if credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError as exc:
                raise ConfigurationError("SQL_AUTH_MODE=entra_token needs the azure-identity package") from exc
            credential = DefaultAzureCredential()
        event.listen(engine, "do_connect", entra_token_connect_hook(credential))
    return engine


def _as_int(value: Any) -> Any:
    """A number column's value as an int (drivers and views return int, Decimal or
    text); anything that is not a whole number is returned unchanged for the sync to
    refuse with a reason. Never ``int()`` on unchecked text: it accepts " 12 " but
    refuses "²" (which ``str.isdigit`` accepts) and anything over 4 300 digits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() and abs(value) < 10**18 else value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        return int(text) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else value
    return value


def build_viewpoint(settings: Settings, engine: Engine | None = None) -> ViewpointAPI:
    """Wire a ViewpointAPI from ``config.settings.Settings``."""
    return ViewpointAPI(
        engine or build_viewpoint_engine(settings),
        company=settings.viewpoint_company,
        jc_company=settings.jc_company,
        title_column=settings.viewpoint_title_column,
        secrets=settings.secret_values(),
        open_job_statuses=settings.job_open_statuses,
    )


def compiled_queries(settings: Settings, *, since: date | None = None) -> dict[str, str]:
    """Each query as SQL Server SQL with literal values, for review and for the test that
    shows what production runs. ``since`` defaults to today minus JOB_HISTORY_DAYS."""
    from sqlalchemy.dialects import mssql  # the dialect only; pyodbc is not imported

    q = ViewpointQueries(
        company=settings.viewpoint_company,
        jc_company=settings.jc_company,
        title_column=settings.viewpoint_title_column,
        open_job_statuses=settings.job_open_statuses,
    )
    since = since or (date.today() - timedelta(days=settings.job_history_days))
    stmts = {
        "departments": q.departments(),
        "jobs": q.jobs(),
        "employees": q.employees(),
        "latest_jobs": q.latest_jobs(since),
        "ping": q.ping(),
    }
    dialect = mssql.dialect()
    return {name: str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True})) for name, stmt in stmts.items()}
