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

COMPANY = SmallInteger  # bCompany (tinyint in SQL Server; SmallInteger keeps PostgreSQL happy)


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
        Column("BirthDate", Date),
        Column("HireDate", Date),
        Column("TermDate", Date),
        Column("RecentRehireDate", Date),
        Column("RecentSeparationDate", Date),
        Column("ActiveYN", String(1), nullable=False),
        Column("PRDept", String(10), nullable=False),
        Column("Craft", String(10)),
        Column("Class", String(10)),
        Column("JCCo", COMPANY),
        Column("Job", String(10)),
        Column(title_column, String(60)),
        Column("LastUpdated", DateTime),
        Column("Notes", Text),
        Column("KeyID", BigInteger),
    )
    Table(
        "bPRJC",
        md,
        Column("PRCo", COMPANY, primary_key=True),
        Column("PRGroup", SmallInteger, primary_key=True),
        Column("PREndDate", Date, primary_key=True),
        Column("Employee", Integer, primary_key=True),
        Column("JCCo", COMPANY, primary_key=True),
        Column("Job", String(10), primary_key=True),
        Column("Phase", String(20), primary_key=True),
        Column("Mth", Date),
        Column("Craft", String(10)),
        Column("Class", String(10)),
        Column("Hrs", Numeric(10, 2)),
        Column("Amt", Numeric(12, 2)),
    )
    return md
