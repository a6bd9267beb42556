"""config.keyvault with the real Azure SDK against a local HTTPS emulation of Key Vault.

Nothing in the SDK is patched: ``SecretClient`` runs its whole pipeline (challenge
authentication, retries, paging, deserialisation, error mapping) and talks TLS to a
Flask app on 127.0.0.1 with a certificate from a private CA (``sandbox.tls``). The
client is told that CA through azure-core's ``connection_verify`` and, because the
emulator is not on ``*.vault.azure.net``, ``verify_challenge_resource=False``.

What the emulator does, as Key Vault does (REST API 7.x / 2025+):

* a request without ``Authorization`` gets 401 with ``WWW-Authenticate: Bearer
  authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`` (the SDK's first, body-less request);
* ``GET /secrets?api-version=...&maxresults=N`` lists secret items (id, attributes; no
  values) in pages with ``nextLink``;
* ``GET /secrets/{name}/?api-version=...`` returns ``{"value", "id", "attributes"}``;
  unknown names get 404 ``{"error": {"code": "SecretNotFound", ...}}``; names are
  case-insensitive;
* a "forbidden" switch answers 403 ``{"error": {"code": "Forbidden", ...}}`` with an
  ``innererror`` of ``ForbiddenByRbac``, as a vault using RBAC does.

The credential is a small class implementing the public ``get_token`` protocol.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from config.keyvault import KeyVaultSource, env_name_for, vault_url_from
from config.settings import load_settings
from sandbox.tls import CA_FILE, server_context, write_certificates
from utils.errors import ConfigurationError

pytestmark = pytest.mark.integration

TENANT = "11111111-2222-3333-4444-555555555555"
TOKEN = "kv-access-token-for-tests"
SENTINEL = "s3ntinel-SafetyAmp-token-9f8e7d"
PAGE = 5


class Vault:
    """State and request log of one emulated vault."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.forbidden = False
        self.unauthorized = 0
        self.lock = threading.Lock()

    def put(self, name: str, value: str, *, enabled: bool = True) -> None:
        self.secrets[name.lower()] = {"name": name, "value": value, "enabled": enabled}

    def gets(self, name: str) -> int:
        return self.requests[f"GET /secrets/{name.lower()}"]


def build_app(vault: Vault) -> Flask:
    app = Flask("keyvault-emulator")

    def base() -> str:
        return request.host_url.rstrip("/")

    def item(entry: dict[str, Any], *, with_value: bool) -> dict[str, Any]:
        attributes = {
            "enabled": entry["enabled"],
            "created": 1_700_000_000,
            "updated": 1_700_000_000,
            "recoveryLevel": "Recoverable+Purgeable",
        }
        body: dict[str, Any] = {"id": f"{base()}/secrets/{entry['name']}", "attributes": attributes}
        if with_value:
            body["id"] += "/0123456789abcdef0123456789abcdef"
            body["value"] = entry["value"]
        return body

    @app.before_request
    def gate() -> Any:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            with vault.lock:
                vault.unauthorized += 1
            response = jsonify(
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}
            )
            response.status_code = 401
            response.headers["WWW-Authenticate"] = (
                f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'
            )
            return response
        if "api-version" not in request.args:
            return jsonify({"error": {"code": "BadParameter", "message": "api-version is required"}}), 400
        if vault.forbidden:
            return jsonify({"error": {
                "code": "Forbidden",
                "message": "Caller is not authorized to perform action on resource. "
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                "innererror": {"code": "ForbiddenByRbac"},
            }}), 403  # fmt: skip
        return None

    @app.get("/secrets")
    def list_secrets() -> Any:
        with vault.lock:
            vault.requests["GET /secrets"] += 1
        skip = int(request.args.get("$skiptoken", "0"))
        size = min(int(request.args.get("maxresults", PAGE)), PAGE)
        entries = sorted(vault.secrets.values(), key=lambda e: e["name"])
        page = entries[skip : skip + size]
        body: dict[str, Any] = {"value": [item(e, with_value=False) for e in page], "nextLink": None}
        if skip + size < len(entries):
            body["nextLink"] = (
                f"{base()}/secrets?api-version={request.args['api-version']}&$skiptoken={skip + size}&maxresults={size}"
            )
        return jsonify(body)

    @app.get("/secrets/<name>/", strict_slashes=False)
    @app.get("/secrets/<name>/<version>")
    def get_secret(name: str, version: str = "") -> Any:
        with vault.lock:
            vault.requests[f"GET /secrets/{name.lower()}"] += 1
        entry = vault.secrets.get(name.lower())
        if entry is None:
            message = f"A secret with (name/id) {name} was not found in this key vault."
            return jsonify({"error": {"code": "SecretNotFound", "message": message}}), 404
        if not entry["enabled"]:
            return jsonify({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret."}}), 403
        return jsonify(item(entry, with_value=True))

    return app


class Credential:
    """The public TokenCredential protocol: ``get_token(*scopes, **kwargs)``."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        self.fail = fail

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append((scopes, kwargs))
        if self.fail:
            raise ClientAuthenticationError("WorkloadIdentityCredential: AADSTS700016: application not found in tenant")
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kv-tls")
    write_certificates(folder)
    return folder


@pytest.fixture
def vault() -> Vault:
    v = Vault()
    v.put("SAFETYAMP-TOKEN", SENTINEL)
    v.put("samsara-api-key", "samsara-key-123")  # vault names are case-insensitive
    v.put("SQL-PASSWORD", "disabled-value", enabled=False)
    v.put("SAFETYAMP-FQDN", "acme.safetyamp.com")
    for i in range(12):  # another application's secrets: listed (paging), never read
        v.put(f"OTHER-APP-SECRET-{i:02d}", f"other-{i}")
    return v


@pytest.fixture
def vault_url(vault: Vault, certs: Path) -> Iterator[str]:
    """A fresh server (own port) per test: the SDK caches challenges per origin."""
    server = make_server("127.0.0.1", 0, build_app(vault), threaded=True, ssl_context=server_context(certs))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def source(url: str, certs: Path, *, credential: Any = None, **kwargs: Any) -> KeyVaultSource:
    return KeyVaultSource(
        url,
        credential if credential is not None else Credential(),
        client_kwargs={"verify_challenge_resource": False, "connection_verify": str(certs / CA_FILE), "retry_total": 0},
        **kwargs,
    )


# --------------------------------------------------------------------------- the source


def test_values_arrive_through_the_challenge_flow(vault_url: str, vault: Vault, certs: Path) -> None:
    credential = Credential()
    kv = source(vault_url, certs, credential=credential)
    got = kv.values(["SAFETYAMP_TOKEN", "SAMSARA_API_KEY", "SQL_PASSWORD", "SCIM_TOKEN"])
    assert got == {"SAFETYAMP_TOKEN": SENTINEL, "SAMSARA_API_KEY": "samsara-key-123"}
    assert vault.unauthorized == 1  # one body-less challenge request, then the token
    scopes, kwargs = credential.calls[0]
    assert scopes == ("https://vault.azure.net/.default",) and kwargs.get("tenant_id") == TENANT
    # efficient: one paged listing, values only for our settings that are enabled
    assert vault.requests["GET /secrets"] == 4  # 16 secrets, 5 per page
    assert vault.gets("SAFETYAMP-TOKEN") == 1 and vault.gets("SAMSARA-API-KEY") == 1
    assert vault.gets("SQL-PASSWORD") == 0  # disabled
    assert not any(k.startswith("GET /secrets/other-app") for k in vault.requests)
    assert "SQL_PASSWORD" not in kv.names() and "SAFETYAMP_FQDN" in kv.names()
    assert kv.get("SAFETYAMP_FQDN") == "acme.safetyamp.com"


def test_dash_names_map_to_settings() -> None:
    assert env_name_for("ms-graph-client-secret") == "MS_GRAPH_CLIENT_SECRET"


def test_values_are_cached_for_the_ttl(vault_url: str, vault: Vault, certs: Path) -> None:
    clock = FakeClock()
    kv = source(vault_url, certs, ttl_seconds=300, clock=clock)
    names = ["SAFETYAMP_TOKEN", "SAFETYAMP_FQDN"]
    assert kv.values(names)["SAFETYAMP_TOKEN"] == SENTINEL
    before = sum(vault.requests.values())
    vault.put("SAFETYAMP-TOKEN", "rotated-token-value")
    clock.now += 299
    assert kv.values(names)["SAFETYAMP_TOKEN"] == SENTINEL  # cached: no request at all
    assert sum(vault.requests.values()) == before
    clock.now += 1
    assert kv.values(names)["SAFETYAMP_TOKEN"] == "rotated-token-value"
    assert vault.requests["GET /secrets"] == 8 and vault.gets("SAFETYAMP-TOKEN") == 2
    vault.put("SAFETYAMP-TOKEN", "rotated-again")
    kv.refresh()
    assert kv.get("SAFETYAMP_TOKEN") == "rotated-again"


def test_a_secret_deleted_after_the_listing_is_absent(vault_url: str, vault: Vault, certs: Path) -> None:
    kv = source(vault_url, certs)
    assert "SAFETYAMP_FQDN" in kv.names()
    del vault.secrets["safetyamp-fqdn"]
    assert kv.values(["SAFETYAMP_FQDN"]) == {}  # 404 SecretNotFound: absent, not an error


def test_403_is_a_configuration_error_without_secret_text(vault_url: str, vault: Vault, certs: Path) -> None:
    kv = source(vault_url, certs, ttl_seconds=0)
    assert kv.get("SAFETYAMP_TOKEN") == SENTINEL  # fetched once: the value is known to the source
    vault.forbidden = True
    with pytest.raises(ConfigurationError) as caught:
        kv.get("SAFETYAMP_TOKEN")
    text = str(caught.value)
    assert vault_url in text and "HTTP 403" in text and "Forbidden" in text and "Key Vault Secrets User" in text
    assert SENTINEL not in text and TOKEN not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # raised "from None"
    assert SENTINEL not in repr(caught.value.__context__)


def test_credential_failure_is_a_configuration_error(vault_url: str, certs: Path) -> None:
    kv = source(vault_url, certs, credential=Credential(fail=True))
    with pytest.raises(ConfigurationError, match=r"authentication failed \(ClientAuthenticationError\).*AADSTS700016") as caught:
        kv.values(["SAFETYAMP_TOKEN"])
    assert vault_url in str(caught.value)


def test_unreachable_vault_is_a_configuration_error(certs: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kv = source(f"https://127.0.0.1:{port}", certs)
    with pytest.raises(
        ConfigurationError, match=rf"127.0.0.1:{port}: listing secrets: cannot reach the vault \(ServiceRequestError\)"
    ):
        kv.values(["SAFETYAMP_TOKEN"])


def test_an_untrusted_certificate_is_refused(vault_url: str) -> None:
    kv = KeyVaultSource(vault_url, Credential(), client_kwargs={"verify_challenge_resource": False, "retry_total": 0})
    with pytest.raises(ConfigurationError, match="cannot reach the vault"):
        kv.values(["SAFETYAMP_TOKEN"])


# --------------------------------------------------------------------------- precedence in load_settings


def test_precedence_env_beats_vault_beats_dotenv(vault_url: str, vault: Vault, certs: Path, tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("SAFETYAMP_FQDN=from-dotenv.safetyamp.com\nSAMSARA_API_KEY=from-dotenv\nSCIM_URL=https://scim.dotenv\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "samsara-api-key").write_text("from-secret-file\n")
    vault.put("SCIM-TOKEN", "scim-from-vault")
    vault.put("SAFETYAMP-URL", "https://vault.safetyamp.example")
    built: list[str] = []

    def factory(url: str) -> KeyVaultSource:
        built.append(url)
        return source(url, certs)

    env = {"AZURE_KEY_VAULT_URL": vault_url, "SECRETS_DIR": str(secrets), "SAFETYAMP_URL": "https://env.safetyamp.example"}
    settings = load_settings(env, dotenv_path=dotenv, keyvault_factory=factory, overrides={"SCIM_URL": "https://scim.override"})
    assert built == [vault_url]
    assert settings.safetyamp_url == "https://env.safetyamp.example"  # env beats vault
    assert (
        settings.samsara_api_key is not None and settings.samsara_api_key.get_secret_value() == "from-secret-file"
    )  # file beats vault
    assert settings.safetyamp_fqdn == "acme.safetyamp.com"  # vault beats .env
    assert settings.safetyamp_token is not None and settings.safetyamp_token.get_secret_value() == SENTINEL
    assert settings.scim_token is not None and settings.scim_token.get_secret_value() == "scim-from-vault"
    assert settings.scim_url == "https://scim.override"  # overrides beat everything
    assert settings.sql_password is None  # disabled in the vault
    # names already given by a higher source are not even fetched
    assert vault.gets("SAFETYAMP-URL") == 0 and vault.gets("SAMSARA-API-KEY") == 0
    assert SENTINEL not in repr(settings)


def test_vault_is_read_only_when_configured(tmp_path: Path) -> None:
    def factory(url: str) -> KeyVaultSource:
        raise AssertionError("no vault is configured")

    settings = load_settings({"SAFETYAMP_TOKEN": "t0ken"}, dotenv_path=None, keyvault_factory=factory)
    assert settings.key_vault_url is None


def test_vault_name_from_dotenv_and_errors_become_configuration_errors(
    vault_url: str, vault: Vault, certs: Path, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AZURE_KEY_VAULT_NAME=contoso-sync-kv\n")
    seen: list[str] = []

    def factory(url: str) -> KeyVaultSource:
        seen.append(url)
        return source(vault_url, certs)  # the emulator stands in for contoso-sync-kv

    settings = load_settings({}, dotenv_path=dotenv, keyvault_factory=factory)
    assert seen == ["https://contoso-sync-kv.vault.azure.net"]
    assert settings.key_vault_url == "https://contoso-sync-kv.vault.azure.net"
    vault.forbidden = True
    with pytest.raises(ConfigurationError, match="Forbidden") as caught:
        load_settings({}, dotenv_path=dotenv, keyvault_factory=factory)
    assert SENTINEL not in str(caught.value)


def test_vault_url_rules() -> None:
    assert vault_url_from({}) is None
    assert vault_url_from({"AZURE_KEY_VAULT_NAME": "my-vault"}) == "https://my-vault.vault.azure.net"
    assert (
        vault_url_from({"AZURE_KEY_VAULT_URL": "https://x.vault.azure.net/", "AZURE_KEY_VAULT_NAME": "y"})
        == "https://x.vault.azure.net"
    )
    for bad in (
        {"AZURE_KEY_VAULT_URL": "http://x.vault.azure.net"},
        {"AZURE_KEY_VAULT_NAME": "1bad"},
        {"AZURE_KEY_VAULT_NAME": "a--b"},
    ):
        with pytest.raises(ConfigurationError):
            vault_url_from(bad)


def test_bad_vault_name_is_reported_with_other_problems() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"AZURE_KEY_VAULT_NAME": "x", "PORT": "0"}, dotenv_path=None)
    assert len(caught.value.problems) == 2
    assert any("AZURE_KEY_VAULT_NAME" in p for p in caught.value.problems) and any(
        p.startswith("PORT=") for p in caught.value.problems
    )
