"""The emulators' SQLite store: uniqueness, normalisation, paging, filters, request log."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.store import Store, UniqueViolation, normalise, open_store

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = open_store(tmp_path)
    yield st
    st.close()


def test_normalise_follows_mysql_ci_pad_space() -> None:
    assert normalise("A@B.com  ") == normalise("a@b.com")
    assert normalise(" x") != normalise("x")  # leading blanks count, trailing do not
    assert normalise("") is None and normalise(None) is None
    assert normalise(True) == "1" and normalise(12) == "12"


def test_unique_fields_refuse_duplicates_case_insensitively(store: Store) -> None:
    store.insert("safetyamp", "users", {"email": "a@b.com", "mobile_phone": "+15045550101"})
    with pytest.raises(UniqueViolation) as caught:
        store.insert("safetyamp", "users", {"email": "A@B.COM", "mobile_phone": "+15045550101"})
    assert caught.value.fields == ["email", "mobile_phone"]
    assert store.count("safetyamp", "users") == 1
    store.insert("safetyamp", "users", {"email": "c@b.com", "mobile_phone": None})  # null is never unique-checked
    store.insert("safetyamp", "users", {"email": "d@b.com", "mobile_phone": None})


def test_replace_reindexes_and_ignores_own_values(store: Store) -> None:
    rid = store.insert("safetyamp", "users", {"email": "a@b.com"})
    store.replace("safetyamp", "users", rid, {"email": "a@b.com", "emp_id": "7"})
    store.replace("safetyamp", "users", rid, {"email": "new@b.com", "emp_id": "7"})
    assert store.rid_by_unique("safetyamp", "users", "email", "a@b.com") is None
    assert store.rid_by_unique("safetyamp", "users", "email", "NEW@b.com") == rid
    store.insert("safetyamp", "users", {"email": "a@b.com"})  # the old value is free again


def test_rids_are_never_reused_and_pages_are_ordered(store: Store) -> None:
    store.set_next_rid("samsara", "vehicles", 100)
    rids = [store.insert("samsara", "vehicles", {"id": f"v{n}", "n": n}) for n in range(10)]
    assert rids == list(range(100, 110))
    store.delete("samsara", "vehicles", 109)
    assert store.insert("samsara", "vehicles", {"id": "v10"}) == 110
    page = store.page("samsara", "vehicles", limit=3, offset=3)
    assert [rid for rid, _ in page] == [103, 104, 105]
    keyset = store.page("samsara", "vehicles", limit=3, after_rid=104)
    assert [data["id"] for _, data in keyset] == ["v5", "v6", "v7"]


def test_filters_indexed_and_scanned(store: Store) -> None:
    for n, (emp, enabled, mail) in enumerate([("1", True, "a@x.com"), ("2", False, None), (None, True, "svc@x.com")]):
        store.insert("graph", "users", {"id": f"g{n}", "employeeId": emp, "accountEnabled": enabled, "mail": mail})
    ids = lambda where: [d["id"] for _, d in store.page("graph", "users", limit=10, where=where)]  # noqa: E731
    assert ids([("employeeId", "eq", "2")]) == ["g1"]
    assert ids([("accountEnabled", "eq", True)]) == ["g0", "g2"]
    assert ids([("employeeId", "eq", None)]) == ["g2"]
    assert ids([("employeeId", "ne", None)]) == ["g0", "g1"]
    assert ids([("mail", "ne", "a@x.com")]) == ["g1", "g2"]
    assert ids([("employeeId", "in", ["1", "2"])]) == ["g0", "g1"]
    assert ids([("mail", "prefix", "SVC")]) == ["g2"]
    assert ids([("displayName", "eq", "x")]) == []  # scanned, unindexed field
    assert store.count("graph", "users", [("accountEnabled", "eq", False)]) == 1
    with pytest.raises(ValueError):
        store.page("graph", "users", limit=1, where=[('x") OR 1=1 --', "eq", 1)])


def test_request_log_counts_by_service_and_method(store: Store, tmp_path: Path) -> None:
    store.log_request("safetyamp", "POST", "/api/users", 201)
    mark = store.last_request_id()
    store.log_request("safetyamp", "POST", "/api/users", 0)
    store.log_request("samsara", "GET", "/fleet/vehicles", 200)
    assert store.request_counts() == {"safetyamp": {"POST": 2}, "samsara": {"GET": 1}}
    assert store.request_counts(since_id=mark) == {"safetyamp": {"POST": 1}, "samsara": {"GET": 1}}
    with open_store(tmp_path) as other:  # a second connection sees committed writes
        assert other.request_counts()["safetyamp"]["POST"] == 2


def test_atomic_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.atomic():
        store.insert("safetyamp", "sites", {"external_code": "A"})
        raise RuntimeError("boom")
    assert store.count("safetyamp", "sites") == 0


def test_open_store_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "missing")
