"""The Graph/Entra emulator over real HTTPS: the MSAL token flow, /v1.0/users and $batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msal
import pytest
import requests

from sandbox.server import RunningSandbox, start_sandbox
from sandbox.store import open_store
from sandbox.testing import graph_token

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("graph"), size=120, faults={}, seed=303) as sb:
        yield sb


@pytest.fixture(scope="module")
def token(sandbox: RunningSandbox) -> str:
    return graph_token(sandbox.endpoints)


def _get(
    sb: RunningSandbox, token: str | None, url: str, headers: dict[str, str] | None = None, **params: Any
) -> requests.Response:
    g = sb.endpoints["graph"]
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    full = url if url.startswith("https://") else g["graph_url"] + url
    return requests.get(full, headers={**auth, **(headers or {})}, params=params or None, verify=g["ca_bundle"], timeout=10)


def _msal_app(sb: RunningSandbox, secret: str) -> msal.ConfidentialClientApplication:
    g = sb.endpoints["graph"]
    return msal.ConfidentialClientApplication(
        g["client_id"],
        client_credential=secret,
        authority=f"{g['authority_url']}/{g['tenant_id']}",
        instance_discovery=False,
        verify=g["ca_bundle"],
    )


def test_real_msal_client_credentials_flow(sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these variables override a session's ``verify`` (psf/requests#3829),
    # which is how MSAL passes ``verify``; a host that sets them needs the product's
    # per-request verify instead. Here we test MSAL itself, so clear them.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    g = sandbox.endpoints["graph"]
    result = _msal_app(sandbox, g["client_secret"]).acquire_token_for_client(scopes=[f"{g['graph_url']}/.default"])
    assert result.get("token_type") == "Bearer", result.get("error_description")
    assert result["expires_in"] == 3599
    users = _get(sandbox, result["access_token"], "/v1.0/users", **{"$top": "1"})
    assert users.status_code == 200 and len(users.json()["value"]) == 1

    bad = _msal_app(sandbox, "wrong-secret").acquire_token_for_client(scopes=[f"{g['graph_url']}/.default"])
    assert bad["error"] == "invalid_client"
    assert bad["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


def test_users_need_a_valid_bearer_token(sandbox: RunningSandbox) -> None:
    for token in (None, "forged"):
        response = _get(sandbox, token, "/v1.0/users")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_next_link_paging_walks_every_user(sandbox: RunningSandbox, token: str) -> None:
    with open_store(sandbox.directory) as st:
        expected = [u["id"] for u in st.all("graph", "users")]
    seen: list[str] = []
    page = _get(sandbox, token, "/v1.0/users", **{"$top": "25", "$select": "id"}).json()
    while True:
        seen += [u["id"] for u in page["value"]]
        link = page.get("@odata.nextLink")
        if not link:
            break
        assert "$skiptoken=" in link and link.startswith(sandbox.endpoints["graph"]["graph_url"])
        page = _get(sandbox, token, link).json()
    assert seen == expected
    default = _get(sandbox, token, "/v1.0/users").json()
    assert len(default["value"]) == min(100, len(expected))


def test_select_controls_fields_and_employee_id_needs_it(sandbox: RunningSandbox, token: str) -> None:
    plain = _get(sandbox, token, "/v1.0/users", **{"$top": "5"}).json()["value"]
    assert all("employeeId" not in u and "accountEnabled" not in u for u in plain)
    assert all({"id", "mail", "userPrincipalName", "displayName"} <= set(u) for u in plain)
    chosen = _get(sandbox, token, "/v1.0/users", **{"$top": "5", "$select": "id,employeeId,mail"}).json()
    assert all(set(u) == {"id", "employeeId", "mail"} for u in chosen["value"])
    assert chosen["@odata.context"].endswith("$metadata#users(id,employeeId,mail)")
    bad = _get(sandbox, token, "/v1.0/users", **{"$select": "id,shoeSize"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "Request_BadRequest"


def test_top_bounds_and_no_skip(sandbox: RunningSandbox, token: str) -> None:
    assert _get(sandbox, token, "/v1.0/users", **{"$top": "999"}).status_code == 200
    too_big = _get(sandbox, token, "/v1.0/users", **{"$top": "1000"})
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "Request_BadRequest"
    assert _get(sandbox, token, "/v1.0/users", **{"$skip": "5"}).status_code == 400


def test_filters(sandbox: RunningSandbox, token: str) -> None:
    select = {"$select": "id,employeeId,accountEnabled,mail", "$top": "999"}
    everyone = _get(sandbox, token, "/v1.0/users", **select).json()["value"]
    enabled = _get(sandbox, token, "/v1.0/users", **select, **{"$filter": "accountEnabled eq true"}).json()["value"]
    assert enabled and all(u["accountEnabled"] is True for u in enabled)
    assert len(enabled) < len(everyone)  # some accounts are disabled
    assert any(u["employeeId"] is None for u in everyone)  # service accounts
    assert any(u["mail"] is None for u in everyone) or any("onmicrosoft" in (u["mail"] or "") for u in everyone)
    target = next(u for u in everyone if u["employeeId"])
    one = _get(sandbox, token, "/v1.0/users", **select, **{"$filter": f"employeeId eq '{target['employeeId']}'"}).json()
    assert [u["id"] for u in one["value"]] == [target["id"]]
    advanced = {"$filter": "employeeId ne null", "$count": "true", **select}
    assert _get(sandbox, token, "/v1.0/users", **advanced).status_code == 400  # needs ConsistencyLevel
    counted = _get(sandbox, token, "/v1.0/users", headers={"ConsistencyLevel": "eventual"}, **advanced).json()
    assert counted["@odata.count"] == sum(1 for u in everyone if u["employeeId"])
    unknown = _get(sandbox, token, "/v1.0/users", **{"$filter": "shoeSize eq '9'"})
    assert unknown.status_code == 400


def _batch(sb: RunningSandbox, token: str, requests_: list[dict[str, Any]]) -> requests.Response:
    g = sb.endpoints["graph"]
    return requests.post(
        g["graph_url"] + "/v1.0/$batch",
        json={"requests": requests_},
        headers={"Authorization": f"Bearer {token}"},
        verify=g["ca_bundle"],
        timeout=10,
    )


def test_batch_answers_each_sub_request_and_caps_at_20(sandbox: RunningSandbox, token: str) -> None:
    subs = [
        {"id": "1", "method": "GET", "url": "/users?$filter=accountEnabled eq true&$select=id&$top=2"},
        {"id": "2", "method": "GET", "url": "/users?$top=1000"},
        {"id": "3", "method": "GET", "url": "/users/nobody@sandbox-co.com", "dependsOn": ["1"]},
    ]
    response = _batch(sandbox, token, subs)
    assert response.status_code == 200
    by_id = {r["id"]: r for r in response.json()["responses"]}
    assert by_id["1"]["status"] == 200 and len(by_id["1"]["body"]["value"]) == 2
    assert by_id["2"]["status"] == 400
    assert by_id["3"]["status"] == 404
    too_many = _batch(sandbox, token, [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)])
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "BadRequest"


def test_throttled_batch_and_requests_carry_integer_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    faults = {"graph": {"rate_limit_per_minute": 60, "burst": 3}}
    with start_sandbox(tmp_path_factory.mktemp("g429"), size=10, faults=faults, seed=3) as sb:
        token = graph_token(sb.endpoints)  # the token endpoint is Entra, not throttled with Graph
        response = _batch(sb, token, [{"id": str(i), "method": "GET", "url": "/users?$top=1"} for i in range(4)])
        assert response.status_code == 200  # the batch itself took one token
        statuses = sorted(r["status"] for r in response.json()["responses"])
        assert statuses == [200, 200, 429, 429]
        throttled = next(r for r in response.json()["responses"] if r["status"] == 429)
        assert throttled["headers"]["Retry-After"].isdigit()
        direct = _get(sb, token, "/v1.0/users")
        assert direct.status_code == 429 and direct.headers["Retry-After"].isdigit()
        assert direct.json()["error"]["code"] == "TooManyRequests"
