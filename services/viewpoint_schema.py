"""SQLAlchemy Core definitions of the Viewpoint Vista base tables this product reads.

Names, types and nullability follow the Vista DDL (user-defined types: bCompany tinyint,
bEmployee int, bDept/bJob/bClass varchar(10), bPhone varchar(20), bYN char(1), bDate
smalldatetime, bDesc varchar(30)); see docs/emulated-apis.md. Only the columns the
product reads (plus the ones the sandbox needs for realism) are declared; SSN is
deliberately absent so no query can select it. The sandbox creates these tables in
SQLite from the same metadata, so the product's queries run against the real names.

``title_column`` is a customer ud column (udEmpTitle at IIUS, udJobTitle at others), so
bPREH is built per configured column name.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

COMPANY = SmallInteger  # bCompany (tinyint in SQL Server; SmallInteger keeps PostgreSQL happy)


class _TextOnSQLite(TypeDecorator[Any]):
    """A date or datetime column (bDate is smalldatetime) read as text on SQLite.

    SQLite has no date type: it stores what it is given, and SQLAlchemy's SQLite Date
    parses the text of every row with ``fromisoformat``, so one row holding "²" (an
    import gone wrong, the sandbox, a hand edit) failed the whole read and with it the
    titles and employees syncs. Here the text is parsed per value: a value that is not a
    date comes back as its text, and the validator rejects that one record with a
    reason. SQL Server and PostgreSQL have real date types and keep the plain one."""

    impl: Any = Date
    cache_ok = True
    _parse: Any = staticmethod(date.fromisoformat)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else self.impl_instance)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's own SQLite format
        if dialect.name == "sqlite" and isinstance(value, date):
            return value.isoformat()
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name != "sqlite" or not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError:
            return value  # not a date: the record's own validation says so


class VistaDate(_TextOnSQLite):
    """bDate holding a date."""

    cache_ok = True


class VistaDateTime(_TextOnSQLite):
    """A datetime column."""

    cache_ok = True
    impl: Any = DateTime
    _parse: Any = staticmethod(datetime.fromisoformat)


def build_metadata(title_column: str = "udEmpTitle") -> MetaData:
    """Metadata holding bPREH, bPRDP, bJCJM, bJCCM, bPRJC and bHQCO."""
    md = MetaData()
    Table(
        "bHQCO",
        md,
        Column("HQCo", COMPANY, primary_key=True),
        Column("Name", String(60)),
        Column("City", String(30)),
        Column("State", String(4)),
    )
    Table(
        "bPRDP",
        md,
        Column("PRCo", COMPANY, primary_key=True),
        Column("PRDept", String(10), primary_key=True),
        Column("Description", String(30)),
        Column("GLCo", COMPANY),
        Column("KeyID", BigInteger),
    )
    Table(
        "bJCCM",
        md,
        Column("JCCo", COMPANY, primary_key=True),
        Column("Contract", String(10), primary_key=True),
        Column("Description", String(60)),
        Column("Department", String(10)),
        Column("ContractStatus", SmallInteger),
        Column("KeyID", BigInteger),
    )
    Table(
        "bJCJM",
        md,
        Column("JCCo", COMPANY, primary_key=True),
        Column("Job", String(10), primary_key=True),
        Column("Description", String(60)),
        Column("Contract", String(10)),
        Column("JobStatus", SmallInteger),
        Column("ShipAddress", String(60)),
        Column("ShipCity", String(30)),
        Column("ShipState", String(4)),
        Column("ShipZip", String(12)),
        Column("KeyID", BigInteger),
    )
    Table(
        "bPREH",
        md,
        Column("PRCo", COMPANY, primary_key=True),
        Column("Employee", Integer, primary_key=True),
        Column("LastName", String(30), nullable=False),
        Column("FirstName", String(30)),
        Column("MidName", String(15)),
        Column("Suffix", String(4)),
        Column("SortName", String(15)),
        Column("Address", String(60)),
        Column("City", String(30)),
        Column("State", String(4)),
        Column("Zip", String(12)),
        Column("Phone", String(20)),
        Column("CellPhone", String(20)),
        Column("Email", String(60)),
        Column("Sex", String(1), nullable=False),
        Column("BirthDate", VistaDate),
        Column("HireDate", VistaDate),
        Column("TermDate", VistaDate),
        Column("RecentRehireDate", VistaDate),
        Column("RecentSeparationDate", VistaDate),
        Column("ActiveYN", String(1), nullable=False),
        Column("PRDept", String(10), nullable=False),
        Column("Craft", String(10)),
        Column("Class", String(10)),
        Column("JCCo", COMPANY),
        Column("Job", String(10)),
        Column(title_column, String(60)),
        Column("LastUpdated", VistaDateTime),
        Column("Notes", Text),
        Column("KeyID", BigInteger),
    )
    Table(
        "bPRJC",
        md,
        Column("PRCo", COMPANY, primary_key=True),
        Column("PRGroup", SmallInteger, primary_key=True),
        Column("PREndDate", VistaDate, primary_key=True),
        Column("Employee", Integer, primary_key=True),
        Column("JCCo", COMPANY, primary_key=True),
        Column("Job", String(10), primary_key=True),
        Column("Phase", String(20), primary_key=True),
        Column("Mth", VistaDate),
        Column("Craft", String(10)),
        Column("Class", String(10)),
        Column("Hrs", Numeric(10, 2)),
        Column("Amt", Numeric(12, 2)),
    )
    return md
