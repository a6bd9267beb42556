"""The SafetyAmp emulator over real HTTP: headers, paging, tree, 422 bodies, uniqueness."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.server import RunningSandbox, start_sandbox
from sandbox.store import open_store
from sandbox.testing import safetyamp_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("sa"), size=40, faults={}, seed=101) as sb:
        yield sb


@pytest.fixture(scope="module")
def api(sandbox: RunningSandbox) -> Any:
    base = sandbox.endpoints["safetyamp"]["url"]
    headers = safetyamp_headers(sandbox.endpoints)

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, base + path, headers={**headers, **kwargs.pop("headers", {})}, timeout=10, **kwargs)

    return call


def _user(n: int, **extra: Any) -> dict[str, Any]:
    return {"first_name": "Test", "last_name": f"User{n}", "email": f"test.user{n}@example.com", **extra}


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "replace", "status", "fragment"),
    [
        ("Authorization", None, 401, "Unauthenticated."),
        (None, {"Authorization": "Bearer wrong"}, 401, "Unauthenticated."),
        ("Fqdn", None, 401, "Fqdn"),
        (None, {"Fqdn": "other.safetyamp.com"}, 401, "Fqdn"),
        (None, {"User-Agent": "python-requests/2.34.2"}, 400, "User-Agent"),
        (None, {"User-Agent": ""}, 400, "User-Agent"),
        (None, {"Accept": "*/*"}, 406, "application/json"),
    ],
)
def test_required_headers_are_enforced(
    sandbox: RunningSandbox, drop: str | None, replace: dict[str, str] | None, status: int, fragment: str
) -> None:
    headers = safetyamp_headers(sandbox.endpoints)
    if drop:
        del headers[drop]
    headers.update(replace or {})
    response = requests.get(sandbox.endpoints["safetyamp"]["url"] + "/api/roles", headers=headers, timeout=10)
    assert response.status_code == status
    assert fragment in response.json()["message"]


# -- reference data, envelope, formats --------------------------------------------------------


def test_seeded_reference_data(api: Any) -> None:
    roles = api("GET", "/api/roles").json()["data"]
    assert [r["name"] for r in roles] == ["Field", "Office", "Administrator"]
    sites = api("GET", "/api/sites").json()["data"]
    assert [(s["name"], s["external_code"]) for s in sites] == [("Fleet Yard", "FLEET")]
    types = api("GET", "/api/asset_types").json()["data"]
    assert {t["name"] for t in types} == {"Vehicle", "Trailer"}
    assert {t["site_id"] for t in types} == {sites[0]["id"]}
    assert api("GET", "/api/users").json() == {"data": []}


def test_create_returns_object_under_data_with_utc_timestamps(api: Any) -> None:
    response = api("POST", "/api/user_titles", json={"name": "  Rigger  ", "custom": 7})
    assert response.status_code == 201
    title = response.json()["data"]
    assert title["name"] == "Rigger"  # Laravel TrimStrings (assumption)
    assert title["custom"] == 7  # unknown fields are stored
    assert len(title["created_at"]) == 19 and title["created_at"][10] == " "
    again = api("GET", f"/api/user_titles/{title['id']}").json()["data"]
    assert again == title


def test_unknown_id_and_unsupported_method(api: Any) -> None:
    missing = api("GET", "/api/users/999999")
    assert missing.status_code == 404
    assert missing.json() == {"message": "Not found."}
    delete = api("DELETE", "/api/sites/2001")
    assert delete.status_code == 405
    assert "DELETE" in delete.json()["message"]
    assert api("POST", "/api/roles", json={"name": "x"}).status_code == 405
    assert api("GET", "/api/nothing").status_code == 404


# -- paging -----------------------------------------------------------------------------------


def test_paging_is_zero_based_and_limit_is_capped(sandbox: RunningSandbox, api: Any) -> None:
    with open_store(sandbox.directory) as st, st.atomic():
        for n in range(1030):
            rid = st.next_rid("safetyamp", "assets")
            st.insert("safetyamp", "assets", {"id": rid, "name": f"Bulk {n}", "asset_type_id": 41, "site_id": 2001}, rid=rid)
    first = api("GET", "/api/assets?page=0&limit=25").json()["data"]
    second = api("GET", "/api/assets?page=1&limit=25").json()["data"]
    default = api("GET", "/api/assets").json()["data"]
    assert len(first) == 25 and len(second) == 25
    assert first == default  # page defaults to 0, limit to 25
    assert first[-1]["id"] < second[0]["id"]  # page 1 is the second page, not page 0 again
    capped = api("GET", "/api/assets?page=0&limit=5000").json()["data"]
    assert len(capped) == 1000
    tail = api("GET", "/api/assets?page=1&limit=1000").json()["data"]
    assert len(tail) == 30
    assert api("GET", "/api/assets?page=2&limit=1000").json()["data"] == []
    bad = api("GET", "/api/assets?page=-1")
    assert bad.status_code == 422 and "page" in bad.json()["errors"]


def test_equality_filter_by_field(api: Any) -> None:
    created = api("POST", "/api/users", json=_user(900, emp_id="9001")).json()["data"]
    assert api("GET", "/api/users?emp_id=9001").json()["data"] == [created]
    assert api("GET", "/api/users?emp_id=424242").json()["data"] == []
    assert api("GET", "/api/sites?external_code=fleet").json()["data"][0]["external_code"] == "FLEET"


# -- site clusters ---------------------------------------------------------------------------


def test_site_clusters_are_a_tree_with_depth(api: Any) -> None:
    root = api("GET", "/api/site_clusters").json()["data"][0]
    region = api("POST", "/api/site_clusters", json={"name": "Gulf", "parent_cluster_id": root["id"]}).json()["data"]
    dept = api(
        "POST", "/api/site_clusters", json={"name": "Electrical", "external_code": "100", "parent_cluster_id": region["id"]}
    ).json()["data"]
    assert (region["depth"], dept["depth"]) == (1, 2)
    tree = api("GET", "/api/site_clusters?page=3&limit=1").json()["data"]  # no paging on the tree
    assert [n["name"] for n in tree] == ["Company"]
    gulf = next(c for c in tree[0]["children"] if c["id"] == region["id"])
    assert [c["external_code"] for c in gulf["children"]] == ["100"]
    # Moving the region to the root recomputes the depth of its subtree.
    moved = api("PATCH", f"/api/site_clusters/{region['id']}", json={"parent_cluster_id": None}).json()["data"]
    assert moved["depth"] == 0
    assert api("GET", f"/api/site_clusters/{dept['id']}").json()["data"]["depth"] == 1
    cycle = api("PUT", f"/api/site_clusters/{region['id']}", json={"parent_cluster_id": dept["id"]})
    assert cycle.status_code == 422
    missing = api("POST", "/api/site_clusters", json={"name": "Orphan", "parent_cluster_id": 999})
    assert missing.json()["errors"] == {"parent_cluster_id": ["The selected parent cluster id is invalid."]}


# -- validation and uniqueness --------------------------------------------------------------


def test_duplicate_email_and_mobile_phone_give_laravel_422(api: Any) -> None:
    assert api("POST", "/api/users", json=_user(1, mobile_phone="+15045550101")).status_code == 201
    clash = api("POST", "/api/users", json=_user(2, email="TEST.USER1@example.com", mobile_phone="+15045550101"))
    assert clash.status_code == 422
    assert clash.json() == {
        "message": "The email has already been taken. (and 1 more error)",
        "errors": {
            "email": ["The email has already been taken."],
            "mobile_phone": ["The mobile phone has already been taken."],
        },
    }


def test_required_format_and_length_rules(api: Any) -> None:
    response = api("POST", "/api/users", json={"last_name": "x" * 256, "email": "not-an-email", "work_phone": "(504) 555-0101"})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"] == {
        "first_name": ["The first name field is required."],
        "last_name": ["The last name field must not be greater than 255 characters."],
        "email": ["The email field must be a valid email address."],
        "work_phone": ["The work phone field format is invalid."],
    }
    assert body["message"] == "The first name field is required. (and 3 more errors)"


def test_patch_merges_and_checks_uniqueness_against_others(api: Any) -> None:
    a = api("POST", "/api/users", json=_user(10, emp_id="1010")).json()["data"]
    b = api("POST", "/api/users", json=_user(11, emp_id="1011")).json()["data"]
    patched = api("PATCH", f"/api/users/{a['id']}", json={"mobile_phone": "+15045550110"}).json()["data"]
    assert patched["email"] == a["email"] and patched["mobile_phone"] == "+15045550110"
    assert api("PATCH", f"/api/users/{a['id']}", json={"email": a["email"]}).status_code == 200  # own value
    taken = api("PATCH", f"/api/users/{b['id']}", json={"emp_id": "1010"})
    assert taken.status_code == 422 and taken.json()["errors"] == {"emp_id": ["The emp id has already been taken."]}
    assert api("PUT", f"/api/users/{a['id']}", json={}).status_code == 405  # users take PATCH only


def test_sites_assets_and_titles_rules(api: Any) -> None:
    site = api("POST", "/api/sites", json={"name": "Job 24-101", "external_code": "24-101", "cluster_id": 101, "active": 1})
    assert site.status_code == 201
    dup = api("POST", "/api/sites", json={"name": "Other", "external_code": "24-101 "})
    assert dup.json()["errors"] == {"external_code": ["The external code has already been taken."]}
    put = api("PUT", f"/api/sites/{site.json()['data']['id']}", json={"active": 0})
    assert put.json()["data"]["active"] == 0 and put.json()["data"]["name"] == "Job 24-101"
    asset = api("POST", "/api/assets", json={"name": "Truck", "asset_type_id": 2001, "site_id": 41, "code": "281474976710600"})
    assert asset.json()["errors"] == {
        "asset_type_id": ["The selected asset type id is invalid."],
        "site_id": ["The selected site id is invalid."],
    }
    ok = api("POST", "/api/assets", json={"name": "Truck", "asset_type_id": 41, "site_id": 2001, "code": "281474976710600"})
    assert ok.status_code == 201
    again = api("POST", "/api/assets", json={"name": "Truck 2", "asset_type_id": 41, "site_id": 2001, "code": "281474976710600"})
    assert again.json()["errors"] == {"code": ["The code has already been taken."]}
    assert api("POST", "/api/user_titles", json={"name": "Welder"}).status_code == 201
    assert api("POST", "/api/user_titles", json={"name": "welder "}).status_code == 422
