"""In-memory fakes of the sync ports (sync/ports.py) for unit tests.

FakeSafetyAmp keeps SafetyAmp's rules that matter to the engine (ids, unique e-mail
and mobile phone -> 422-style RecordError) and can inject an ambiguous create.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import date
from typing import Any

from utils.errors import AmbiguousWriteError, RecordError, RetriableError

UNIQUE = {
    "users": ("email", "mobile_phone", "emp_id"),
    "sites": ("external_code",),
    "assets": ("code",),
    "user_titles": ("name",),
}


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
            raise RecordError(next(iter(errors.values()))[0], status=422, field_errors=errors, body={"errors": errors})

    def list(self, collection: str) -> list[dict[str, Any]]:
        self.calls[f"GET {collection}"] += 1
        return [copy.deepcopy(r) for r in self.data.get(collection, {}).values()]

    def create(self, collection: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls[f"POST {collection}"] += 1
        key = str(payload.get("emp_id") or payload.get("external_code") or payload.get("code") or payload.get("name"))
        if key in self.fail_with:
            raise self.fail_with[key]
        self._check_unique(collection, payload)
        row = self._store(collection, copy.deepcopy(dict(payload)))
        if key in self.lose_create_response_for:
            self.lose_create_response_for.discard(key)
            raise AmbiguousWriteError("read timed out after sending", service="safetyamp")
        return copy.deepcopy(row)

    def update(self, collection: str, record_id: int | str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls[f"UPDATE {collection}"] += 1
        row = self.data[collection][int(record_id)]
        key = str(row.get("emp_id") or row.get("external_code") or row.get("code") or row.get("name"))
        if key in self.fail_with:
            raise self.fail_with[key]
        self._check_unique(collection, {**row, **payload}, own_id=row["id"])
        row.update(copy.deepcopy(dict(payload)))
        return copy.deepcopy(row)

    def find_by(self, collection: str, field: str, value: Any) -> dict[str, Any] | None:
        self.calls[f"FIND {collection}"] += 1
        for row in self.data.get(collection, {}).values():
            if str(row.get(field)) == str(value):
                return copy.deepcopy(row)
        return None

    def writes(self) -> int:
        return sum(n for k, n in self.calls.items() if k.split()[0] in ("POST", "UPDATE"))

    def rows(self, collection: str) -> list[dict[str, Any]]:
        return list(self.data.get(collection, {}).values())


class FakeViewpoint:
    def __init__(self, departments=(), jobs=(), employees=(), latest=None, fail: Exception | None = None) -> None:
        self._d, self._j, self._e = list(departments), list(jobs), list(employees)
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
    def __init__(self, users=()) -> None:
        self._users = list(users)

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
