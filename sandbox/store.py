"""Durable state of the emulated targets (SafetyAmp, Samsara, Graph) in one SQLite file.

Why a database and not dicts in memory: the sandbox is where the daemon proves it never
duplicates and never loses a write, so a run killed with SIGKILL must find, on the next
start, exactly what the emulators had acknowledged. Every write is one committed SQLite
transaction in WAL mode (``synchronous=NORMAL`` survives a process kill; only an OS crash
could lose the last commits, which is not what the sandbox is about).

Why these tables: the sandbox must keep up with 50,000 users, so

* ``records`` holds one JSON document per object, keyed by ``(service, collection, rid)``;
  ``rid`` is the internal, ever-increasing row id, and a page is an index range scan
  (``ORDER BY rid LIMIT/OFFSET`` or keyset ``rid > ?``), never a full read;
* ``uniq`` holds the normalised values of unique fields with a UNIQUE constraint, so a
  uniqueness check is one index probe and the database itself refuses a duplicate;
* ``idx`` holds the normalised values of non-unique fields the emulators filter on;
* ``requests`` logs every request an emulator received, so tests count writes from the
  server's side instead of trusting the client's own counters.

Values are normalised the way MySQL's default collation compares them (case-insensitive,
trailing spaces ignored): SafetyAmp is a Laravel application, and Laravel's ``unique``
rule on MySQL inherits that collation. See docs/emulated-apis.md ("Assumption").

One connection guarded by a re-entrant lock serves every thread of a process: the
werkzeug server starts a thread per request, so per-thread connections would be opened
and thrown away on every request. Other processes (``python -m sandbox mutate``, tests)
open their own connection; WAL lets them read while the server writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGETS_FILE = "targets.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    service TEXT NOT NULL, collection TEXT NOT NULL, rid INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (service, collection, rid)
);
CREATE TABLE IF NOT EXISTS uniq (
    service TEXT NOT NULL, collection TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    rid INTEGER NOT NULL,
    UNIQUE (service, collection, field, value)
);
CREATE INDEX IF NOT EXISTS uniq_by_rid ON uniq (service, collection, rid);
CREATE TABLE IF NOT EXISTS idx (
    service TEXT NOT NULL, collection TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    rid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_by_value ON idx (service, collection, field, value, rid);
CREATE INDEX IF NOT EXISTS idx_by_rid ON idx (service, collection, rid);
CREATE TABLE IF NOT EXISTS seq (
    service TEXT NOT NULL, collection TEXT NOT NULL, next_rid INTEGER NOT NULL,
    PRIMARY KEY (service, collection)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, collection TEXT NOT NULL,
    rid INTEGER NOT NULL, ident TEXT, deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_seq ON changes (service, collection, seq, rid);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, service TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, status INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class CollectionSpec:
    """Which fields of a collection are unique and which are indexed for equality filters."""

    unique: tuple[str, ...] = ()
    indexed: tuple[str, ...] = ()
    # Every insert, replace and delete is recorded in the ``changes`` table (the change
    # log behind Graph's delta query): ``ident`` is the value of the first unique field.
    track_changes: bool = False


# The fields each emulator looks records up by. Unique fields follow the vendor's
# uniqueness rules (docs/emulated-apis.md); indexed fields are the lookups clients make
# (filter by emp_id, employeeId, driver status) so that a lookup stays O(log n).
SPECS: dict[tuple[str, str], CollectionSpec] = {
    ("safetyamp", "users"): CollectionSpec(unique=("emp_id", "email", "mobile_phone")),
    ("safetyamp", "sites"): CollectionSpec(unique=("external_code",), indexed=("cluster_id",)),
    ("safetyamp", "site_clusters"): CollectionSpec(indexed=("external_code", "parent_cluster_id")),
    ("safetyamp", "user_titles"): CollectionSpec(unique=("name",)),
    ("safetyamp", "roles"): CollectionSpec(indexed=("name",)),
    ("safetyamp", "asset_types"): CollectionSpec(indexed=("name",)),
    ("safetyamp", "assets"): CollectionSpec(unique=("code",), indexed=("serial", "vin")),
    ("samsara", "vehicles"): CollectionSpec(unique=("id",)),
    ("samsara", "drivers"): CollectionSpec(unique=("id",), indexed=("driverActivationStatus",)),
    ("graph", "users"): CollectionSpec(
        unique=("id", "userPrincipalName"), indexed=("employeeId", "mail", "accountEnabled"), track_changes=True
    ),
    ("entra", "tokens"): CollectionSpec(unique=("token_sha256",)),
}


class UniqueViolation(Exception):
    """A write would duplicate a unique value; ``fields`` names the offending fields."""

    def __init__(self, fields: Sequence[str]) -> None:
        super().__init__("duplicate value for " + ", ".join(fields))
        self.fields = list(fields)


def normalise(value: Any) -> str | None:
    """Comparison form of a value: MySQL ``*_ci`` PAD SPACE semantics (see module doc).

    ``None`` and blank strings have no comparison form: they are never unique-checked.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return None
    text = str(value).rstrip(" ").lower()
    return text or None


Condition = tuple[str, str, Any]
"""A filter ``(field, op, value)``; op is ``eq``, ``ne``, ``in`` (value a list) or ``prefix``."""


class Store:
    """Thread-safe access to ``targets.sqlite``. Create with :func:`open_store`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        # executescript commits on its own, so it runs outside atomic().
        self._conn.executescript(_SCHEMA)

    # -- plumbing -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("sandbox store is closed")
        return self._conn

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one.

        Emulators validate and write inside one ``atomic()`` so that a uniqueness check
        and the insert it guards cannot interleave with another request.
        """
        with self._lock:
            conn = self._db()
            outer = self._depth == 0
            if outer:
                conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield conn
            except BaseException:
                self._depth -= 1
                if outer:
                    conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (waits for the operation in progress, if any)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------

    def all(self, service: str, collection: str) -> list[dict[str, Any]]:
        """Every object of a collection in creation order (for tests and small trees)."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT data FROM records WHERE service=? AND collection=? ORDER BY rid",
                    (service, collection),
                )
                .fetchall()
            )
        return [json.loads(r[0]) for r in rows]

    def get(self, service: str, collection: str, rid: int) -> dict[str, Any] | None:
        """One object by internal row id, or None."""
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT data FROM records WHERE service=? AND collection=? AND rid=?",
                    (service, collection, rid),
                )
                .fetchone()
            )
        return json.loads(row[0]) if row else None

    def count(self, service: str, collection: str, where: Sequence[Condition] = ()) -> int:
        """Number of objects matching ``where``."""
        clause, params = self._where(service, collection, where)
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"SELECT COUNT(*) FROM records r WHERE r.service=? AND r.collection=?{clause}",
                    (service, collection, *params),
                )
                .fetchone()
            )
        return int(row[0])

    def rid_by_unique(self, service: str, collection: str, field: str, value: Any) -> int | None:
        """Internal row id of the object whose unique ``field`` equals ``value``."""
        norm = normalise(value)
        if norm is None:
            return None
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT rid FROM uniq WHERE service=? AND collection=? AND field=? AND value=?",
                    (service, collection, field, norm),
                )
                .fetchone()
            )
        return int(row[0]) if row else None

    def page(
        self,
        service: str,
        collection: str,
        *,
        limit: int,
        offset: int = 0,
        after_rid: int | None = None,
        where: Sequence[Condition] = (),
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(rid, object)`` pairs in rid order: OFFSET paging or keyset (``after_rid``).

        Both are index range scans, so a page costs O(page), not O(collection).
        """
        clause, params = self._where(service, collection, where)
        if after_rid is not None:
            clause += " AND r.rid > ?"
            params.append(after_rid)
        sql = f"SELECT r.rid, r.data FROM records r WHERE r.service=? AND r.collection=?{clause} ORDER BY r.rid LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db().execute(sql, (service, collection, *params, limit, offset)).fetchall()
        return [(int(rid), json.loads(data)) for rid, data in rows]

    def conflicts(self, service: str, collection: str, data: Mapping[str, Any], exclude_rid: int | None) -> list[str]:
        """Unique fields of ``data`` whose value another object already holds."""
        spec = SPECS.get((service, collection), CollectionSpec())
        taken: list[str] = []
        for field in spec.unique:
            rid = self.rid_by_unique(service, collection, field, data.get(field))
            if rid is not None and rid != exclude_rid:
                taken.append(field)
        return taken

    def _where(self, service: str, collection: str, where: Sequence[Condition]) -> tuple[str, list[Any]]:
        spec = SPECS.get((service, collection), CollectionSpec())
        keyed = set(spec.unique)
        keyed.update(spec.indexed)
        clause = ""
        params: list[Any] = []
        for field, op, value in where:
            if not field.replace("_", "").isalnum():
                raise ValueError(f"bad field name {field!r}")
            path = f'$."{field}"'
            expr = "lower(rtrim(CAST(json_extract(r.data, ?) AS TEXT)))"
            if op in ("eq", "ne") and value is None:
                clause += f" AND json_extract(r.data, ?) IS {'NOT ' if op == 'ne' else ''}NULL"
                params.append(path)
            elif op == "eq" and field in keyed:
                table = "uniq" if field in spec.unique else "idx"
                clause += f" AND r.rid IN (SELECT rid FROM {table} WHERE service=? AND collection=? AND field=? AND value=?)"
                params += [service, collection, field, normalise(value) or ""]
            elif op == "eq":
                clause += f" AND {expr} = ?"
                params += [path, normalise(value) or ""]
            elif op == "ne":
                clause += f" AND ({expr} IS NULL OR {expr} != ?)"
                params += [path, path, normalise(value) or ""]
            elif op == "in":
                values = [normalise(v) or "" for v in value]
                clause += f" AND {expr} IN ({','.join('?' * len(values))})" if values else " AND 0"
                params += [path, *values] if values else []
            elif op == "prefix":
                escaped = (normalise(value) or "").replace("\\", "\\\\").replace("%", "\\%")
                clause += f" AND {expr} LIKE ? ESCAPE '\\'"
                params += [path, escaped.replace("_", "\\_") + "%"]
            else:
                raise ValueError(f"unknown filter op {op!r}")
        return clause, params

    # -- writes ---------------------------------------------------------------------------

    def next_rid(self, service: str, collection: str) -> int:
        """Reserve the next row id (never reused, like an auto-increment)."""
        with self.atomic() as conn:
            row = conn.execute("SELECT next_rid FROM seq WHERE service=? AND collection=?", (service, collection)).fetchone()
            rid = int(row[0]) if row else 1
            conn.execute(
                "INSERT INTO seq (service, collection, next_rid) VALUES (?, ?, ?)"
                " ON CONFLICT (service, collection) DO UPDATE SET next_rid = excluded.next_rid",
                (service, collection, rid + 1),
            )
        return rid

    def set_next_rid(self, service: str, collection: str, next_rid: int) -> None:
        """Start a collection's ids at ``next_rid`` (distinct ranges catch id mix-ups)."""
        with self.atomic() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO seq (service, collection, next_rid) VALUES (?, ?, ?)",
                (service, collection, next_rid),
            )

    def insert(self, service: str, collection: str, data: dict[str, Any], rid: int | None = None) -> int:
        """Store a new object; returns its rid. Raises :class:`UniqueViolation`."""
        with self.atomic() as conn:
            if rid is None:
                rid = self.next_rid(service, collection)
            taken = self.conflicts(service, collection, data, exclude_rid=None)
            if taken:
                raise UniqueViolation(taken)
            conn.execute(
                "INSERT INTO records (service, collection, rid, data) VALUES (?, ?, ?, ?)",
                (service, collection, rid, json.dumps(data, separators=(",", ":"))),
            )
            self._index(conn, service, collection, rid, data)
            self._log_change(conn, service, collection, rid, data, deleted=False)
        return rid

    def replace(self, service: str, collection: str, rid: int, data: dict[str, Any]) -> None:
        """Overwrite an existing object. Raises :class:`UniqueViolation` or KeyError."""
        with self.atomic() as conn:
            taken = self.conflicts(service, collection, data, exclude_rid=rid)
            if taken:
                raise UniqueViolation(taken)
            cur = conn.execute(
                "UPDATE records SET data=? WHERE service=? AND collection=? AND rid=?",
                (json.dumps(data, separators=(",", ":")), service, collection, rid),
            )
            if cur.rowcount == 0:
                raise KeyError(rid)
            self._unindex(conn, service, collection, rid)
            self._index(conn, service, collection, rid, data)
            self._log_change(conn, service, collection, rid, data, deleted=False)

    def delete(self, service: str, collection: str, rid: int) -> bool:
        """Hard-delete an object (used by ``mutate`` for removed vehicles)."""
        with self.atomic() as conn:
            old = None
            if SPECS.get((service, collection), CollectionSpec()).track_changes:
                old = self.get(service, collection, rid)
            cur = conn.execute(
                "DELETE FROM records WHERE service=? AND collection=? AND rid=?",
                (service, collection, rid),
            )
            self._unindex(conn, service, collection, rid)
            if old is not None:
                self._log_change(conn, service, collection, rid, old, deleted=True)
        return cur.rowcount > 0

    # -- change log (Graph delta query) ---------------------------------------------------

    @staticmethod
    def _log_change(
        conn: sqlite3.Connection, service: str, collection: str, rid: int, data: Mapping[str, Any], *, deleted: bool
    ) -> None:
        spec = SPECS.get((service, collection))
        if spec is None or not spec.track_changes:
            return
        ident = data.get(spec.unique[0]) if spec.unique else None
        conn.execute(
            "INSERT INTO changes (service, collection, rid, ident, deleted) VALUES (?, ?, ?, ?, ?)",
            (service, collection, rid, None if ident is None else str(ident), int(deleted)),
        )

    def change_seq(self) -> int:
        """The newest change-log sequence number (0 before any tracked write)."""
        with self._lock:
            row = self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0])

    def changes_since(
        self, service: str, collection: str, *, since: int, upto: int, after_rid: int = 0, limit: int
    ) -> list[tuple[int, str | None, bool]]:
        """``(rid, ident, deleted)`` of each object changed in ``(since, upto]``, its latest
        change only, in rid order after ``after_rid`` (keyset paging)."""
        sql = (
            "SELECT rid, ident, deleted, MAX(seq) FROM changes WHERE service=? AND collection=? AND seq>? AND seq<=?"
            " AND rid>? GROUP BY rid ORDER BY rid LIMIT ?"
        )
        with self._lock:
            rows = self._db().execute(sql, (service, collection, since, upto, after_rid, limit)).fetchall()
        return [(int(rid), ident, bool(deleted)) for rid, ident, deleted, _seq in rows]

    def _index(
        self,
        conn: sqlite3.Connection,
        service: str,
        collection: str,
        rid: int,
        data: Mapping[str, Any],
    ) -> None:
        spec = SPECS.get((service, collection))
        if spec is None:
            return
        for table, fields in (("uniq", spec.unique), ("idx", spec.indexed)):
            rows = [
                (service, collection, field, norm, rid) for field in fields if (norm := normalise(data.get(field))) is not None
            ]
            if rows:
                try:
                    conn.executemany(
                        f"INSERT INTO {table} (service, collection, field, value, rid) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                except sqlite3.IntegrityError as exc:
                    raise UniqueViolation([r[2] for r in rows]) from exc

    @staticmethod
    def _unindex(conn: sqlite3.Connection, service: str, collection: str, rid: int) -> None:
        for table in ("uniq", "idx"):
            conn.execute(
                f"DELETE FROM {table} WHERE service=? AND collection=? AND rid=?",
                (service, collection, rid),
            )

    # -- metadata -------------------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        """A small persistent setting (e.g. the seed used for page quirks)."""
        with self._lock:
            row = self._db().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    def meta_set(self, key: str, value: str) -> None:
        """Persist a small setting."""
        with self.atomic() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- request log ----------------------------------------------------------------------

    def log_request(self, service: str, method: str, path: str, status: int) -> None:
        """Record one request an emulator received (status 0: connection dropped)."""
        with self.atomic() as conn:
            conn.execute(
                "INSERT INTO requests (ts, service, method, path, status) VALUES (?, ?, ?, ?, ?)",
                (time.time(), service, method, path, status),
            )

    def request_counts(self, since_id: int = 0) -> dict[str, dict[str, int]]:
        """``{service: {method: n}}`` of requests logged after request id ``since_id``."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT service, method, COUNT(*) FROM requests WHERE id > ? GROUP BY service, method",
                    (since_id,),
                )
                .fetchall()
            )
        counts: dict[str, dict[str, int]] = {}
        for service, method, n in rows:
            counts.setdefault(service, {})[method] = int(n)
        return counts

    def requests(self, service: str | None = None, since_id: int = 0) -> list[dict[str, Any]]:
        """The logged requests themselves (id, ts, service, method, path, status)."""
        sql = "SELECT id, ts, service, method, path, status FROM requests WHERE id > ?"
        params: list[Any] = [since_id]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY id", params).fetchall()
        keys = ("id", "ts", "service", "method", "path", "status")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def last_request_id(self) -> int:
        """Id of the newest logged request (0 if none): a mark for ``request_counts``."""
        with self._lock:
            row = self._db().execute("SELECT COALESCE(MAX(id), 0) FROM requests").fetchone()
        return int(row[0])


def open_store(directory: str | Path) -> Store:
    """Open (creating the schema if needed) the targets' state of a sandbox directory.

    Tests use it to read what the emulators hold and to count requests server-side;
    close it with ``st.close()`` or use it as a context manager.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"sandbox directory {path} does not exist")
    return Store(path / TARGETS_FILE)
