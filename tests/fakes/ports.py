"""In-memory fakes of the sync ports (sync/ports.py) for unit tests.

FakeSafetyAmp keeps SafetyAmp's rules that matter to the engine (ids, required fields,
unique e-mail, mobile phone, emp_id... -> 422 ConflictError, an unknown id -> 404
RecordError, collections the API cannot update -> FatalError) and can inject an
ambiguous create. tests/contract holds it to the real adapter on the emulator.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import date
from typing import Any

from utils.errors import AmbiguousWriteError, ConflictError, FatalError, RecordError, RetriableError

UNIQUE = {
    "users": ("email", "mobile_phone", "emp_id"),
    "sites": ("external_code",),
    "assets": ("code",),
    "user_titles": ("name",),
}
REQUIRED = {
    "users": ("first_name", "last_name", "email"),
    "sites": ("name",),
    "site_clusters": ("name",),
    "user_titles": ("name",),
    "asset_types": ("name",),
    "assets": ("name", "asset_type_id", "site_id"),
}
UPDATABLE = ("users", "sites", "site_clusters", "assets")  # services.safetyamp_api.UPDATE_METHOD
COLLECTIONS = ("users", "sites", "site_clusters", "user_titles", "roles", "asset_types", "assets")


def _known(collection: str) -> None:
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown SafetyAmp collection {collection!r}")


class FakeSafetyAmp:
    def __init__(self, seed: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.data: dict[str, dict[int, dict[str, Any]]] = {}
        self.next_id = 1000
        self.calls: Counter[str] = Counter()
        self.lose_create_response_for: set[str] = set()  # key values whose create is stored but "times out"
        self.fail_with: dict[str, Exception] = {}  # key value -> exception raised on write
        for coll, rows in (seed or {}).items():
            for row in rows:
                self._store(coll, dict(row))

    def _store(self, coll: str, row: dict[str, Any]) -> dict[str, Any]:
        if "id" not in row:
            self.next_id += 1
            row["id"] = self.next_id
        self.data.setdefault(coll, {})[row["id"]] = row
        return row

    def _check_required(self, coll: str, row: dict[str, Any]) -> None:
        errors = {
            f: [f"The {f.replace('_', ' ')} field is required."] for f in REQUIRED.get(coll, ()) if row.get(f) in (None, "")
        }
        if errors:
            raise RecordError(next(iter(errors.values()))[0], status=422, field_errors=errors, body={"errors": errors})

    def _check_unique(self, coll: str, row: dict[str, Any], own_id: int | None = None) -> None:
        errors = {}
        for field in UNIQUE.get(coll, ()):
            value = row.get(field)
            if value in (None, ""):
                continue
            for other in self.data.get(coll, {}).values():
                if other["id"] != own_id and str(other.get(field, "")).lower() == str(value).lower():
                    errors[field] = [f"The {field.replace('_', ' ')} has already been taken."]
        if errors:
            raise ConflictError(next(iter(errors.values()))[0], status=422, field_errors=errors, body={"errors": errors})

    def list(self, collection: str) -> list[dict[str, Any]]:
        _known(collection)
        self.calls[f"GET {collection}"] += 1
        return self._listed(collection)

    def _listed(self, collection: str) -> list[dict[str, Any]]:
        rows = [copy.deepcopy(r) for r in self.data.get(collection, {}).values()]
        if collection == "site_clusters":  # as the adapter flattens the tree
            by_id = {r["id"]: r for r in rows}
            for row in rows:
                row.setdefault("parent_cluster_id", None)
                depth, node = 0, row
                while node.get("parent_cluster_id") in by_id and depth < 64:
                    depth, node = depth + 1, by_id[node["parent_cluster_id"]]
                row["depth"] = depth
        return rows

    def create(self, collection: str, payload: dict[str, Any]) -> dict[str, Any]:
        _known(collection)
        self.calls[f"POST {collection}"] += 1
        key = str(payload.get("emp_id") or payload.get("external_code") or payload.get("code") or payload.get("name"))
        if key in self.fail_with:
            raise self.fail_with[key]
        self._check_required(collection, payload)
        self._check_unique(collection, payload)
        row = self._store(collection, copy.deepcopy(dict(payload)))
        if key in self.lose_create_response_for:
            self.lose_create_response_for.discard(key)
            raise AmbiguousWriteError("read timed out after sending", service="safetyamp")
        return copy.deepcopy(row)

    def update(self, collection: str, record_id: int | str, payload: dict[str, Any]) -> dict[str, Any]:
        _known(collection)
        if collection not in UPDATABLE:
            raise FatalError(f"safetyamp: {collection} cannot be updated through the API", service="safetyamp")
        self.calls[f"UPDATE {collection}"] += 1
        row = self.data.get(collection, {}).get(int(record_id))
        if row is None:
            raise RecordError("Not found.", status=404, body={"message": "Not found."})
        key = str(row.get("emp_id") or row.get("external_code") or row.get("code") or row.get("name"))
        if key in self.fail_with:
            raise self.fail_with[key]
        self._check_required(collection, {**row, **payload})
        self._check_unique(collection, {**row, **payload}, own_id=row["id"])
        row.update(copy.deepcopy(dict(payload)))
        return copy.deepcopy(row)

    def find_by(self, collection: str, field: str, value: Any) -> dict[str, Any] | None:
        _known(collection)
        self.calls[f"FIND {collection}"] += 1
        for row in self._listed(collection):
            if row.get(field) is not None and str(row.get(field)).strip() == str(value).strip():
                return copy.deepcopy(row)
        return None

    def writes(self) -> int:
        return sum(n for k, n in self.calls.items() if k.split()[0] in ("POST", "UPDATE"))

    def rows(self, collection: str) -> list[dict[str, Any]]:
        return list(self.data.get(collection, {}).values())


# The columns of each Viewpoint read (sync/ports.py ViewpointSource): a fake row gets the
# ones it leaves out as NULL, as the real query returns them; a column the query never
# returns is a mistake in the test.
VIEWPOINT_COLUMNS = {
    "departments": ("PRDept", "Description"),
    "jobs": ("Job", "Description", "JobStatus", "Contract", "Department", "ShipAddress", "ShipCity", "ShipState", "ShipZip"),
    "employees": (
        "Employee", "FirstName", "MidName", "LastName", "Suffix", "Email", "Phone", "CellPhone", "Address", "City",
        "State", "Zip", "PRDept", "HireDate", "TermDate", "RecentRehireDate", "ActiveYN", "JCCo", "Job", "Title",
    ),
}  # fmt: skip
GRAPH_FIELDS = ("id", "employeeId", "mail", "userPrincipalName", "accountEnabled")


def _as_selected(read: str, rows: Any, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        extra = set(row) - set(columns)
        if extra:
            raise ValueError(f"{read} rows have no column {sorted(extra)} (the real read returns {list(columns)})")
        out.append({c: row.get(c) for c in columns})
    return out


class FakeViewpoint:
    def __init__(self, departments=(), jobs=(), employees=(), latest=None, fail: Exception | None = None) -> None:
        self._d = _as_selected("departments", departments, VIEWPOINT_COLUMNS["departments"])
        self._j = _as_selected("jobs", jobs, VIEWPOINT_COLUMNS["jobs"])
        self._e = _as_selected("employees", employees, VIEWPOINT_COLUMNS["employees"])
        self._latest = dict(latest or {})
        self.fail = fail

    def _ok(self):
        if self.fail:
            raise self.fail

    def departments(self):
        self._ok()
        return [dict(r) for r in self._d]

    def jobs(self):
        self._ok()
        return [dict(r) for r in self._j]

    def employees(self):
        self._ok()
        return [dict(r) for r in self._e]

    def latest_jobs(self, since: date):
        self._ok()
        return dict(self._latest)

    def ping(self):
        self._ok()


class FakeGraph:
    """Users with every selected field (a field left out is null, as Graph sends it);
    ``id`` and ``userPrincipalName``, always set in Entra, get made-up values."""

    def __init__(self, users=()) -> None:
        self._users = _as_selected("graph users", users, GRAPH_FIELDS)
        for i, row in enumerate(self._users, 1):
            row["id"] = row["id"] or f"fake-user-{i}"
            row["userPrincipalName"] = row["userPrincipalName"] or f"fake-user-{i}@tenant.onmicrosoft.com"

    def users(self):
        return [dict(u) for u in self._users]


class FakeSamsara:
    def __init__(self, vehicles=(), drivers=()) -> None:
        self._v, self._d = list(vehicles), list(drivers)
        self.driver_reads = 0

    def vehicles(self):
        return [copy.deepcopy(v) for v in self._v]

    def drivers(self):
        self.driver_reads += 1
        return [copy.deepcopy(d) for d in self._d]


def flaky(exc_type=RetriableError) -> Exception:
    return exc_type("503 Service Unavailable", service="safetyamp", status=503)
