"""SafetyAmpTarget (sync/ports.py): tests.fakes.ports.FakeSafetyAmp and
services.safetyamp_api.SafetyAmpAPI on the SafetyAmp emulator pass the same checks.

Reads page (the real adapter reads 3 per page here) and filter; writes return the
object; errors come as the same classes of utils/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import RunningSandbox
from services.http import RequestStats
from services.safetyamp_api import build_safetyamp
from sync.ports import SafetyAmpTarget
from tests.contract.support import no_sleep, sandbox_settings
from tests.fakes.ports import FakeSafetyAmp
from utils.errors import ConflictError, FatalError, RecordError

pytestmark = pytest.mark.integration

PAGE = 3

# The reference data the sandbox is seeded with (sandbox/seed.py), given to the fake too.
REFERENCE = {
    "roles": [{"id": 1, "name": "Field"}, {"id": 2, "name": "Office"}, {"id": 3, "name": "Administrator"}],
    "site_clusters": [{"id": 101, "name": "Company", "external_code": "COMPANY", "parent_cluster_id": None, "depth": 0}],
    "sites": [{"id": 2001, "name": "Fleet Yard", "external_code": "FLEET", "cluster_id": 101, "active": 1}],
    "asset_types": [{"id": 41, "name": "Vehicle", "site_id": 2001}, {"id": 42, "name": "Trailer", "site_id": 2001}],
}


@dataclass
class Side:
    target: SafetyAmpTarget
    reads: Callable[[], int]
    """Read requests so far (the fake counts its calls, the emulator logs its requests)."""


@pytest.fixture(params=["fake", "sandbox"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    if request.param == "fake":
        fake = FakeSafetyAmp(REFERENCE)
        yield Side(fake, lambda: sum(n for call, n in fake.calls.items() if call.split()[0] in ("GET", "FIND")))
        return
    sb: RunningSandbox = request.getfixturevalue("sandbox")
    settings = sandbox_settings(sb, tmp_path, SAFETYAMP_PAGE_SIZE=str(PAGE))
    stats = RequestStats()
    api = build_safetyamp(settings, stats, sleep=no_sleep)
    yield Side(api, lambda: stats.counts().get("safetyamp", {}).get("GET", 0))


def user(key: str, **extra: Any) -> dict[str, Any]:
    return {"first_name": "Con", "last_name": f"Tract {key}", "email": f"{key}@contract.example.com", "emp_id": key,
            "system_access": 1, **extra}  # fmt: skip


# -- reads ------------------------------------------------------------------------------------


def test_list_returns_every_record_once_across_pages(side: Side, unique: str) -> None:
    made = [side.target.create("user_titles", {"name": f"{unique} title {i}"}) for i in range(2 * PAGE + 1)]
    listed = [t for t in side.target.list("user_titles") if str(t.get("name", "")).startswith(unique)]
    assert sorted(t["id"] for t in listed) == sorted(t["id"] for t in made)
    assert {t["name"] for t in listed} == {f"{unique} title {i}" for i in range(2 * PAGE + 1)}


def test_reference_data_lists(side: Side) -> None:
    assert {r["name"] for r in side.target.list("roles")} >= {"Field", "Office", "Administrator"}
    assert any(s.get("external_code") == "FLEET" for s in side.target.list("sites"))


def test_find_by_uses_the_filter_and_matches_across_json_types(side: Side, unique: str) -> None:
    number = str(abs(hash(unique)) % 10**8 + 10**8)
    created = side.target.create("users", user(unique, emp_id=number))
    before = side.reads()
    found = side.target.find_by("users", "emp_id", number)
    assert found is not None and found["id"] == created["id"]
    assert side.reads() - before == 1  # one filtered read, not a walk through every page
    as_int = side.target.find_by("users", "emp_id", int(number))
    assert as_int is not None and as_int["id"] == created["id"]
    assert side.target.find_by("users", "emp_id", f"{number}9") is None
    assert side.target.find_by("sites", "external_code", "FLEET") is not None


def test_site_clusters_list_flat_with_parent_and_depth(side: Side, unique: str) -> None:
    root = side.target.create("site_clusters", {"name": f"{unique} root", "external_code": f"{unique}R"})
    child = side.target.create("site_clusters", {"name": f"{unique} child", "external_code": f"{unique}C",
                                                 "parent_cluster_id": root["id"]})  # fmt: skip
    rows = {r["id"]: r for r in side.target.list("site_clusters")}
    assert rows[root["id"]]["parent_cluster_id"] is None and rows[root["id"]]["depth"] == 0
    assert rows[child["id"]]["parent_cluster_id"] == root["id"] and rows[child["id"]]["depth"] == 1
    assert all("children" not in r for r in rows.values())
    found = side.target.find_by("site_clusters", "external_code", f"{unique}C")
    assert found is not None and found["id"] == child["id"]


def test_lists_are_copies(side: Side, unique: str) -> None:
    created = side.target.create("users", user(unique))
    listed = next(u for u in side.target.list("users") if u["id"] == created["id"])
    listed["first_name"] = "Changed"
    created["first_name"] = "Changed"
    again = side.target.find_by("users", "emp_id", unique)
    assert again is not None and again["first_name"] == "Con"


# -- writes -----------------------------------------------------------------------------------


def test_create_returns_the_stored_object_with_an_id(side: Side, unique: str) -> None:
    created = side.target.create("users", user(unique))
    assert isinstance(created["id"], int)
    assert {k: created[k] for k in ("first_name", "email", "emp_id", "system_access")} == {
        "first_name": "Con", "email": f"{unique}@contract.example.com", "emp_id": unique, "system_access": 1,
    }  # fmt: skip
    other = side.target.create("users", user(unique + "b"))
    assert other["id"] != created["id"]


def test_update_changes_only_the_fields_sent(side: Side, unique: str) -> None:
    created = side.target.create("users", user(unique))
    updated = side.target.update("users", created["id"], {"last_name": "Renamed"})
    assert updated["id"] == created["id"] and updated["last_name"] == "Renamed" and updated["first_name"] == "Con"
    stored = side.target.find_by("users", "emp_id", unique)
    assert stored is not None and stored["last_name"] == "Renamed" and stored["email"] == created["email"]
    site = side.target.create("sites", {"name": f"{unique} site", "external_code": unique, "active": 1})
    assert side.target.update("sites", site["id"], {"name": f"{unique} renamed"})["name"] == f"{unique} renamed"


@pytest.mark.parametrize(
    ("collection", "payload", "deactivation"),
    [
        ("users", "user", {"system_access": 0}),
        ("sites", {"name": "Job site", "active": 1}, {"active": 0}),
        ("assets", {"name": "Truck", "asset_type_id": 41, "site_id": 2001, "status": 1}, {"status": 0}),
    ],
)
def test_deactivation_is_an_update_and_the_record_stays(
    side: Side, unique: str, collection: str, payload: Any, deactivation: dict[str, int]
) -> None:
    key_field = {"users": "emp_id", "sites": "external_code", "assets": "code"}[collection]
    body = user(unique) if payload == "user" else {**payload, key_field: unique}
    created = side.target.create(collection, body)
    side.target.update(collection, created["id"], deactivation)
    stored = side.target.find_by(collection, key_field, unique)
    assert stored is not None and stored["id"] == created["id"]
    assert {k: stored[k] for k in deactivation} == deactivation


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["email", "emp_id"])
def test_a_taken_unique_value_is_a_conflict(side: Side, unique: str, field: str) -> None:
    first = side.target.create("users", user(unique))
    clash = user(unique + "x")
    clash[field] = first[field].upper() if field == "email" else first[field]  # uniqueness ignores case
    with pytest.raises(ConflictError) as caught:
        side.target.create("users", clash)
    assert caught.value.status == 422 and field in caught.value.field_errors
    second = side.target.create("users", user(unique + "y"))
    with pytest.raises(ConflictError):
        side.target.update("users", second["id"], {field: first[field]})
    assert side.target.find_by("users", "emp_id", unique + "x") is None  # nothing stored


def test_updating_a_record_that_does_not_exist_is_a_record_error(side: Side) -> None:
    with pytest.raises(RecordError) as caught:
        side.target.update("users", 987_654_321, {"last_name": "Nobody"})
    assert caught.value.status == 404 and not isinstance(caught.value, ConflictError)


def test_a_create_without_a_required_field_is_a_record_error(side: Side, unique: str) -> None:
    body = user(unique)
    del body["last_name"]
    with pytest.raises(RecordError) as caught:
        side.target.create("users", body)
    assert caught.value.status == 422 and "last_name" in caught.value.field_errors
    assert not isinstance(caught.value, ConflictError)


@pytest.mark.parametrize("collection", ["roles", "user_titles", "asset_types"])
def test_collections_the_api_cannot_update_refuse_before_sending(side: Side, collection: str) -> None:
    before = side.reads()
    with pytest.raises(FatalError, match="cannot be updated"):
        side.target.update(collection, 1, {"name": "x"})
    assert side.reads() == before


def test_an_unknown_collection_is_a_programming_error(side: Side) -> None:
    for call in (
        lambda: side.target.list("people"),
        lambda: side.target.create("people", {"name": "x"}),
        lambda: side.target.find_by("people", "name", "x"),
    ):
        with pytest.raises(ValueError, match="unknown SafetyAmp collection"):
            call()
