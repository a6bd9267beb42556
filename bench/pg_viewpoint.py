"""Vista on PostgreSQL for the bench: copy a sandbox's Vista tables (``viewpoint.sqlite``)
into a schema of its own on a PostgreSQL server, and give the URL the product reads it by.

Why: the sandbox's Vista is a SQLite file, and SQLite runs inside the reading process, so
the database's own work (the latest-job window over 700,000 payroll rows at 50,000
employees) counts as the product's CPU. In production Vista is SQL Server, another
machine. With ``bench/run.py --viewpoint-pg URL`` the product reads the same rows from a
database in another process, as it would in production, and the bench can tell the
product's CPU from the database's. The product supports PostgreSQL through the same
SQLAlchemy statements (tests/integration/test_viewpoint_api.py runs them on both).

    python bench/pg_viewpoint.py /dev/shm/b/size-1000/viewpoint.sqlite postgresql+psycopg2://postgres@127.0.0.1:5432/test bench_x
"""

from __future__ import annotations

import csv
import io
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import String, create_engine  # noqa: E402

from services.viewpoint_schema import build_metadata  # noqa: E402

NULL = r"\N"


def copy(sqlite_path: Path, pg_url: str, schema: str) -> tuple[str, float]:
    """Copy every Vista table of ``sqlite_path`` into ``schema`` (dropped first); returns
    the URL the product reads it by (``search_path`` set to the schema) and the seconds."""
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"schema {schema!r}: letters, digits and _ only")
    started = time.monotonic()
    engine = create_engine(pg_url)
    md = build_metadata()
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    md.create_all(engine.execution_options(schema_translate_map={None: schema}))
    with engine.begin() as conn:
        # The sandbox seeds some over-long text on purpose (the validator's cases); SQLite
        # keeps it whatever the declared length, so the copy does too.
        for table in md.sorted_tables:
            for col in table.columns:
                if isinstance(col.type, String) and getattr(col.type, "length", None):
                    conn.exec_driver_sql(f'ALTER TABLE "{schema}"."{table.name}" ALTER COLUMN "{col.name}" TYPE text')
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table in md.sorted_tables:
            cols = [c.name for c in table.columns]
            rows = src.execute(f"SELECT {', '.join(f'[{c}]' for c in cols)} FROM [{table.name}]")
            buf = io.StringIO()
            out = csv.writer(buf, lineterminator="\n")
            for row in rows:
                out.writerow([NULL if v is None else v for v in row])
            buf.seek(0)
            names = ", ".join(f'"{c}"' for c in cols)
            cur.copy_expert(f'COPY "{schema}"."{table.name}" ({names}) FROM STDIN WITH (FORMAT csv, NULL \'{NULL}\')', buf)
        cur.execute(f'ANALYZE "{schema}"."bPRJC"')
        raw.commit()
    finally:
        raw.close()
        src.close()
        engine.dispose()
    return f"{pg_url}?options={quote(f'-csearch_path={schema}')}", time.monotonic() - started


def drop(pg_url: str, schema: str) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


if __name__ == "__main__":
    url, seconds = copy(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
    print(f"{url} ({seconds:.1f} s)")
