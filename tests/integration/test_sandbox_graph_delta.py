"""The Graph emulator's ``/users/delta`` (docs/emulated-apis.md, "Delta query"): a first
round of pages ending in a deltaLink, rounds of changes from it, ``@removed`` entries,
expired tokens (400 syncStateNotFound) and synchronization resets (410 resyncRequired)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox import graph as graph_emulator
from sandbox.server import RunningSandbox, start_sandbox
from sandbox.store import open_store
from sandbox.testing import graph_token

pytestmark = pytest.mark.integration

SELECT = "id,employeeId,mail,userPrincipalName,accountEnabled"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("graph-delta"), size=60, faults={}, seed=404) as sb:
        yield sb


@pytest.fixture(scope="module")
def token(sandbox: RunningSandbox) -> str:
    return graph_token(sandbox.endpoints)


def _get(sb: RunningSandbox, token: str, url: str) -> requests.Response:
    g = sb.endpoints["graph"]
    full = url if url.startswith("https://") else g["graph_url"] + url
    return requests.get(full, headers={"Authorization": f"Bearer {token}"}, verify=g["ca_bundle"], timeout=10)


def _round(sb: RunningSandbox, token: str, url: str) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink: (every entry, the deltaLink, pages)."""
    entries: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = _get(sb, token, url)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        entries.extend(body["value"])
        if "@odata.nextLink" in body:
            assert "@odata.deltaLink" not in body
            url = body["@odata.nextLink"]
            continue
        return entries, body["@odata.deltaLink"], pages


def test_first_round_pages_every_user_then_an_idle_round_is_empty(sandbox: RunningSandbox, token: str) -> None:
    with open_store(sandbox.directory) as st:
        st.meta_set("graph.delta_page_size", "25")
        expected = {u["id"]: u for u in st.all("graph", "users")}
    try:
        entries, delta_link, pages = _round(sandbox, token, f"/v1.0/users/delta?$select={SELECT}")
    finally:
        with open_store(sandbox.directory) as st:
            st.meta_set("graph.delta_page_size", "200")
    assert pages == -(-len(expected) // 25)
    assert {e["id"] for e in entries} == set(expected)
    for entry in entries:
        assert set(entry) == set(SELECT.split(","))
        assert entry["employeeId"] == expected[entry["id"]].get("employeeId")
    assert "$deltatoken=" in delta_link and "$select" not in delta_link  # $select rides in the token
    again, _next, pages = _round(sandbox, token, delta_link)
    assert (again, pages) == ([], 1)


def test_changes_additions_and_deletions_come_back_once(sandbox: RunningSandbox, token: str) -> None:
    _entries, delta_link, _pages = _round(sandbox, token, f"/v1.0/users/delta?$select={SELECT}")
    with open_store(sandbox.directory) as st:
        users = st.page("graph", "users", limit=3)
        (rid_a, a), (rid_b, b), (rid_c, c) = users
        a["mail"] = "changed.once@example.com"
        st.replace("graph", "users", rid_a, a)
        a["mail"] = "changed.twice@example.com"  # two changes: one entry, the latest state
        st.replace("graph", "users", rid_a, a)
        b["accountEnabled"] = False
        st.replace("graph", "users", rid_b, b)
        st.delete("graph", "users", rid_c)
        new = {**c, "id": "00000000-0000-4000-8000-000000000001", "userPrincipalName": "new.hire@contoso.test"}
        st.insert("graph", "users", new)
    entries, next_link, _pages = _round(sandbox, token, delta_link)
    by_id = {e["id"]: e for e in entries}
    assert len(entries) == 4 == len(by_id)
    assert by_id[a["id"]]["mail"] == "changed.twice@example.com"
    assert set(by_id[a["id"]]) == set(SELECT.split(","))  # unchanged selected properties too (default)
    assert by_id[b["id"]]["accountEnabled"] is False
    assert by_id[c["id"]] == {"id": c["id"], "@removed": {"reason": "changed"}}
    assert by_id[new["id"]]["userPrincipalName"] == "new.hire@contoso.test"
    assert _round(sandbox, token, next_link)[0] == []


def test_an_expired_token_answers_sync_state_not_found(sandbox: RunningSandbox, token: str) -> None:
    _entries, delta_link, _pages = _round(sandbox, token, f"/v1.0/users/delta?$select={SELECT}")
    with open_store(sandbox.directory) as st:
        st.meta_set("graph.delta_token_lifetime_s", "0")
    try:
        response = _get(sandbox, token, delta_link)
    finally:
        with open_store(sandbox.directory) as st:
            st.meta_set("graph.delta_token_lifetime_s", str(graph_emulator.DELTA_TOKEN_LIFETIME_S))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "syncStateNotFound"
    assert _get(sandbox, token, delta_link).status_code == 200  # the lifetime is back to seven days
    forged = delta_link.split("$deltatoken=")[0] + "$deltatoken=not-a-token"
    assert _get(sandbox, token, forged).json()["error"]["code"] == "syncStateNotFound"


def test_a_synchronization_reset_answers_410_with_the_initial_request(sandbox: RunningSandbox, token: str) -> None:
    _entries, delta_link, _pages = _round(sandbox, token, f"/v1.0/users/delta?$select={SELECT}")
    with open_store(sandbox.directory) as st:
        graph_emulator.reset_delta_tracking(st)
    response = _get(sandbox, token, delta_link)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "resyncRequired"
    assert response.headers["Location"].endswith("/v1.0/users/delta")


def test_unsupported_options_are_refused(sandbox: RunningSandbox, token: str) -> None:
    for query in ("$top=10", "$orderby=id", "$filter=accountEnabled eq true"):
        response = _get(sandbox, token, f"/v1.0/users/delta?{query}")
        assert response.status_code == 400, query
    first = _get(sandbox, token, "/v1.0/users/delta?$select=id").json()
    link = first.get("@odata.nextLink") or first["@odata.deltaLink"]
    assert set(first["value"][0]) == {"id"}
    assert _get(sandbox, token, link).status_code == 200
