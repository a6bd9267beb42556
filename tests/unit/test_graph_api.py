"""services/graph_api.py: real MSAL and real requests against a fake transport.

MSAL gets the fake-transport session as its http_client and a non-Microsoft https
authority (instance_discovery=False), so its OpenID discovery and token calls are
served by the fake too, exactly like the sandbox's Graph emulator serves them.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from config.settings import load_settings
from services.graph_api import GraphAPI, MsalTokenProvider, build_graph
from services.http import RequestStats
from tests.fakes.transport import FakeClock, FakeTransport, RecordedRequest, Reply
from utils.errors import ConfigurationError, FatalError

pytestmark = pytest.mark.unit

AUTHORITY = "https://login.sandbox.test"
TENANT = "tenant-1"
GRAPH = "https://graph.sandbox.test"
SECRET = "client-secret-value-xyz"
DISCOVERY = f"{AUTHORITY}/{TENANT}/v2.0/.well-known/openid-configuration"
TOKEN_URL = f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token"


class FakeEntra:
    """OpenID discovery + client-credentials token endpoint."""

    def __init__(self, t: FakeTransport) -> None:
        self.issued = 0
        self.error: dict | None = None
        t.route(
            "GET",
            DISCOVERY,
            {
                "issuer": f"{AUTHORITY}/{TENANT}/v2.0",
                "authorization_endpoint": f"{AUTHORITY}/{TENANT}/oauth2/v2.0/authorize",
                "token_endpoint": TOKEN_URL,
            },
        )
        t.route("POST", TOKEN_URL, self.token)

    def token(self, req: RecordedRequest):
        form = req.form
        assert form["grant_type"] == ["client_credentials"]
        assert form["scope"] == [f"{GRAPH}/.default"]
        if self.error is not None:
            return Reply(400, json=self.error)
        self.issued += 1
        return {"access_token": f"access-{self.issued}", "token_type": "Bearer", "expires_in": 3600}


def make_api(t: FakeTransport, **extra: str) -> tuple[GraphAPI, RequestStats, FakeClock]:
    env = {
        "MS_GRAPH_TENANT_ID": TENANT,
        "MS_GRAPH_CLIENT_ID": "client-1",
        "MS_GRAPH_CLIENT_SECRET": SECRET,
        "MS_GRAPH_AUTHORITY_URL": AUTHORITY,
        "MS_GRAPH_URL": GRAPH,
        "HTTP_MAX_ATTEMPTS": "3",
        **extra,
    }
    clock = FakeClock()
    stats = RequestStats()
    api = build_graph(load_settings(env, dotenv_path=None), stats, t.session(), sleep=clock.sleep, clock=clock)
    return api, stats, clock


def user(i: int, **kw) -> dict:
    return {
        "id": f"u{i}",
        "employeeId": str(i),
        "mail": f"p{i}@acme.test",
        "userPrincipalName": f"p{i}@acme.test",
        "accountEnabled": True,
        **kw,
    }


def graph_pages(pages: list[list[dict]], *, token_check=None):
    def handler(req: RecordedRequest):
        if token_check is not None:
            verdict = token_check(req)
            if verdict is not None:
                return verdict
        skip = int(req.param("$skiptoken") or 0)
        body = {"value": pages[skip]}
        if skip + 1 < len(pages):
            body["@odata.nextLink"] = f"{GRAPH}/v1.0/users?$select=id&$top=999&$skiptoken={skip + 1}"
        return body

    return handler


def test_users_follows_next_link_with_msal_token():
    t = FakeTransport()
    entra = FakeEntra(t)
    t.route("GET", "/v1.0/users", graph_pages([[user(1), user(2)], [user(3)], []]))
    api, stats, _ = make_api(t)

    assert [u["id"] for u in api.users()] == ["u1", "u2", "u3"]

    graph_calls = t.sent("GET", "/v1.0/users")
    assert len(graph_calls) == 3
    first = parse_qs(urlsplit(graph_calls[0].url).query)
    assert first["$select"] == ["id,employeeId,mail,userPrincipalName,accountEnabled"]
    assert first["$top"] == ["999"]
    assert "$select=id,employeeId" in graph_calls[0].url  # sent unencoded, as documented
    assert all(r.headers["Authorization"] == "Bearer access-1" for r in graph_calls)
    assert entra.issued == 1
    # MSAL's discovery (GET) and token (POST) calls are counted as graph requests too
    assert stats.counts() == {"graph": {"GET": 4, "POST": 1}}


def test_msal_app_and_token_are_reused_across_reads():
    t = FakeTransport()
    entra = FakeEntra(t)
    t.route("GET", "/v1.0/users", graph_pages([[user(1)]]))
    api, _, _ = make_api(t)
    api.users()
    api.users()
    assert entra.issued == 1
    assert len(t.sent("GET", DISCOVERY)) == 1


def test_token_error_is_fatal_without_secret():
    t = FakeTransport()
    entra = FakeEntra(t)
    entra.error = {
        "error": "invalid_client",
        "error_description": f"AADSTS7000215: Invalid client secret provided ({SECRET}).",
    }
    t.route("GET", "/v1.0/users", graph_pages([[user(1)]]))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError) as info:
        api.users()
    message = str(info.value)
    assert "invalid_client" in message and "AADSTS7000215" in message
    assert SECRET not in message
    assert t.sent("GET", "/v1.0/users") == []


def test_unreachable_discovery_is_fatal_for_a_wrong_tenant():
    t = FakeTransport()
    t.route("GET", DISCOVERY, Reply(400, json={"error": "invalid_tenant"}))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="authority"):
        api.users()


def test_401_mid_run_refreshes_the_token_once():
    t = FakeTransport()
    entra = FakeEntra(t)
    calls = {"n": 0}

    def revoke_first_token_on_page_two(req):
        calls["n"] += 1
        if req.param("$skiptoken") == "1" and req.headers["Authorization"] == "Bearer access-1":
            return Reply(401, json={"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired."}})
        return None

    t.route("GET", "/v1.0/users", graph_pages([[user(1)], [user(2)]], token_check=revoke_first_token_on_page_two))
    api, _, _ = make_api(t)
    assert [u["id"] for u in api.users()] == ["u1", "u2"]
    assert entra.issued == 2
    assert [r.headers["Authorization"] for r in t.sent("GET", "/v1.0/users")] == [
        "Bearer access-1",
        "Bearer access-1",
        "Bearer access-2",
    ]


def test_second_401_is_fatal():
    t = FakeTransport()
    entra = FakeEntra(t)
    t.route("GET", "/v1.0/users", Reply(401, json={"error": {"code": "InvalidAuthenticationToken"}}))
    api, _, _ = make_api(t)
    with pytest.raises(FatalError) as info:
        api.users()
    assert info.value.status == 401
    assert entra.issued == 2
    assert len(t.sent("GET", "/v1.0/users")) == 2
    assert "access-" not in str(info.value)


def test_429_retry_after_is_honoured():
    t = FakeTransport()
    FakeEntra(t)
    t.script("GET", "/v1.0/users", Reply(429, json={"error": {"code": "TooManyRequests"}}, headers={"Retry-After": "3"}))
    t.route("GET", "/v1.0/users", graph_pages([[user(1)]]))
    api, stats, clock = make_api(t)
    assert len(api.users()) == 1
    assert clock.sleeps == [3.0]
    assert stats.waits()["graph"] == 3.0


def test_next_link_to_another_host_is_refused():
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users", {"value": [user(1)], "@odata.nextLink": "https://evil.test/v1.0/users?$skiptoken=1"})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="nextLink"):
        api.users()
    assert all(r.host != "evil.test" for r in t.requests)


def test_malformed_page_is_fatal():
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users", {"value": {"id": "x"}})
    api, _, _ = make_api(t)
    with pytest.raises(FatalError, match="malformed"):
        api.users()


def test_instance_discovery_only_for_microsoft_authorities():
    def provider(authority: str) -> MsalTokenProvider:
        return MsalTokenProvider(client_id="c", client_secret="s", authority=authority, scope="x/.default", http_client=None)

    assert provider("https://login.microsoftonline.com/t").instance_discovery is None
    assert provider("https://127.0.0.1:8443/t").instance_discovery is False


def test_factory_requires_credentials():
    with pytest.raises(ConfigurationError) as info:
        build_graph(load_settings({"MS_GRAPH_TENANT_ID": "t"}, dotenv_path=None), RequestStats())
    assert "MS_GRAPH_CLIENT_ID" in str(info.value) and "MS_GRAPH_CLIENT_SECRET" in str(info.value)


def test_factory_does_no_io():
    t = FakeTransport()
    make_api(t)
    assert t.requests == []


def test_ca_bundle_is_passed_on_every_request_including_msal(monkeypatch, tmp_path):
    # requests lets REQUESTS_CA_BUNDLE override session.verify; the bundle must go per request.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    t = FakeTransport()
    FakeEntra(t)
    t.route("GET", "/v1.0/users", graph_pages([[user(1)]]))
    session = t.session()
    session.trust_env = True
    env = {
        "MS_GRAPH_TENANT_ID": TENANT,
        "MS_GRAPH_CLIENT_ID": "client-1",
        "MS_GRAPH_CLIENT_SECRET": SECRET,
        "MS_GRAPH_AUTHORITY_URL": AUTHORITY,
        "MS_GRAPH_URL": GRAPH,
        "MS_GRAPH_CA_BUNDLE": str(tmp_path / "ca.pem"),
    }
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")  # settings check the file exists
    api = build_graph(load_settings(env, dotenv_path=None), RequestStats(), session)
    api.users()
    assert len(t.requests) == 3
    assert {r.verify for r in t.requests} == {str(tmp_path / "ca.pem")}
