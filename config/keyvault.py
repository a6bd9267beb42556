"""Azure Key Vault as a settings source (``config.settings.load_settings`` level 4).

Outside system: Azure Key Vault, through the official SDK (``azure-keyvault-secrets``'
``SecretClient``) and ``azure-identity``'s ``DefaultAzureCredential``, which on AKS picks
up Workload Identity (docs/deploy.md). Both are imported lazily: nothing Azure is
loaded unless a vault is configured.

Why this shape:

* **Names.** Key Vault secret names allow only letters, digits and dashes, so the
  setting ``SAFETYAMP_TOKEN`` lives in the vault as ``SAFETYAMP-TOKEN``. Vault names
  are case-insensitive; so is the match here.
* **Few calls.** A vault often holds secrets of other applications. The source lists
  the secret *properties* once (one paged ``GET /secrets``; no values travel), then
  fetches values only for names that are settings of ours and are enabled. Both the
  listing and the values are cached for ``ttl_seconds`` (KEYVAULT_TTL_SECONDS), so a
  daemon reloading its settings costs Key Vault nothing until the TTL ends; a new or
  rotated secret is seen at the latest one TTL later, or at once after ``refresh()``.
* **Errors.** Every Azure failure becomes a ``ConfigurationError`` naming the vault,
  the operation, the HTTP status and Azure's error code (``Forbidden``,
  ``CredentialUnavailableError``...), with a hint. Nothing the vault returned as a
  value is ever put in a message. Mapping, in ``_translate`` only::

      ClientAuthenticationError (incl. CredentialUnavailableError)  "authentication failed"
      HttpResponseError 403                                          "access denied"
      ServiceRequestError / ServiceResponseError                     "cannot reach the vault"
      other AzureError                                               "request failed"
      ResourceNotFoundError while reading a listed secret            absent (deleted meanwhile)
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from utils.errors import ConfigurationError

log = logging.getLogger(__name__)

_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
"""Azure's rule for vault names: 3-24 characters, letters, digits and dashes, starting
with a letter, not ending with a dash."""

_MAX_DETAIL_CHARS = 300


def env_name_for(secret_name: str) -> str:
    """``safetyamp-token`` -> ``SAFETYAMP_TOKEN``."""
    return secret_name.replace("-", "_").upper()


def vault_url_from(values: Mapping[str, str]) -> str | None:
    """The vault URL from AZURE_KEY_VAULT_URL or AZURE_KEY_VAULT_NAME (URL wins), None
    when neither is set. Raises ConfigurationError for a malformed value."""
    url = (values.get("AZURE_KEY_VAULT_URL") or "").strip()
    if url:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # a malformed port or IPv6 literal
            host = None
        if not host or parts.scheme != "https":
            raise ConfigurationError(f"AZURE_KEY_VAULT_URL={url!r}: must be an https URL such as https://<name>.vault.azure.net")
        return url.rstrip("/")
    name = (values.get("AZURE_KEY_VAULT_NAME") or "").strip()
    if name:
        if not _VAULT_NAME.match(name) or "--" in name:
            raise ConfigurationError(
                f"AZURE_KEY_VAULT_NAME={name!r}: a vault name has 3-24 letters, digits or single dashes and starts with a letter"
            )
        return f"https://{name}.vault.azure.net"
    return None


@dataclass
class _Cached:
    value: str | None
    fetched_at: float


class KeyVaultSource:
    """Settings values from one Azure Key Vault, cached with a TTL. Thread-safe.

    ``credential`` defaults to ``DefaultAzureCredential()`` (built on first use);
    anything with ``get_token(*scopes, **kwargs) -> AccessToken`` works. ``client`` is
    a ready ``SecretClient`` (or anything with its ``list_properties_of_secrets`` and
    ``get_secret``); ``client_kwargs`` go to the ``SecretClient`` this class builds
    otherwise (e.g. ``connection_verify`` for a private CA). ``clock`` is monotonic
    seconds, injectable so tests walk the TTL without sleeping.
    """

    def __init__(
        self,
        vault_url: str,
        credential: Any = None,
        *,
        ttl_seconds: float = 300.0,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.ttl_seconds = max(0.0, float(ttl_seconds))
        self._credential = credential
        self._client = client
        self._client_kwargs = dict(client_kwargs or {})
        self._clock = clock
        self._lock = threading.RLock()
        self._listing: dict[str, str] | None = None  # ENV_NAME -> secret name as stored (enabled only)
        self._listed_at = 0.0
        self._values: dict[str, _Cached] = {}

    # --- public --------------------------------------------------------------------
    def values(self, names: Iterable[str]) -> dict[str, str]:
        """``{ENV_NAME: value}`` for those of ``names`` that exist, enabled, in the vault."""
        with self._lock:
            listing = self._names()
            out: dict[str, str] = {}
            for env_name in names:
                secret = listing.get(env_name.upper())
                if secret is None:
                    continue
                value = self._value(env_name.upper(), secret)
                if value is not None:
                    out[env_name] = value
            return out

    def get(self, env_name: str) -> str | None:
        """One setting's value from the vault, or None if the vault does not hold it."""
        return self.values([env_name]).get(env_name)

    def names(self) -> list[str]:
        """Environment names of the enabled secrets in the vault (from the cached listing)."""
        with self._lock:
            return sorted(self._names())

    def refresh(self) -> None:
        """Forget every cached listing and value: the next call asks the vault again."""
        with self._lock:
            self._listing = None
            self._values.clear()

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()

    # --- cache -----------------------------------------------------------------------
    def _fresh(self, fetched_at: float) -> bool:
        return self.ttl_seconds > 0 and self._clock() - fetched_at < self.ttl_seconds

    def _names(self) -> dict[str, str]:
        if self._listing is not None and self._fresh(self._listed_at):
            return self._listing
        listing: dict[str, str] = {}
        try:
            for props in self._secret_client().list_properties_of_secrets():
                if props.name and props.enabled is not False:
                    listing[env_name_for(props.name)] = props.name
        except Exception as exc:  # translated below; anything else is re-raised as is
            raise self._translate(exc, "listing secrets") from None
        self._listing = listing
        self._listed_at = self._clock()
        # Values of secrets that left the vault must not linger in the cache.
        self._values = {k: v for k, v in self._values.items() if k in listing}
        return listing

    def _value(self, env_name: str, secret: str) -> str | None:
        cached = self._values.get(env_name)
        if cached is not None and self._fresh(cached.fetched_at):
            return cached.value
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value: str | None = self._secret_client().get_secret(secret).value
        except ResourceNotFoundError:
            value = None  # deleted between the listing and this read
        except Exception as exc:
            raise self._translate(exc, f"reading secret {secret}") from None
        self._values[env_name] = _Cached(value, self._clock())
        return value

    # --- SDK -------------------------------------------------------------------------
    def _secret_client(self) -> Any:
        if self._client is None:
            from azure.keyvault.secrets import SecretClient

            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            self._client = SecretClient(vault_url=self.vault_url, credential=self._credential, **self._client_kwargs)
        return self._client

    def _translate(self, exc: Exception, action: str) -> Exception:
        """The one mapping from Azure errors to ConfigurationError (see module docstring)."""
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        if not isinstance(exc, AzureError):
            return exc
        status = getattr(exc, "status_code", None)
        code = _error_code(exc)
        where = f"Azure Key Vault {self.vault_url}: {action}"
        tag = ", ".join(p for p in (f"HTTP {status}" if status else "", code) if p)
        if isinstance(exc, ClientAuthenticationError):
            detail = "" if status else f": {self._detail(exc)}"
            message = (
                f"{where}: authentication failed ({tag}){detail}; check the workload identity "
                "(AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE) or other DefaultAzureCredential source"
            )
        elif isinstance(exc, HttpResponseError) and status == 403:
            message = (
                f"{where}: access denied ({tag}); grant the identity 'Key Vault Secrets User' "
                "(RBAC) or list/get secret permissions"
            )
        elif isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            message = f"{where}: cannot reach the vault ({tag}): {self._detail(exc)}"
        else:
            message = f"{where}: request failed ({tag})"
        return ConfigurationError(message)

    def _detail(self, exc: BaseException) -> str:
        """First line of an SDK message (a credential chain's reason, a socket error),
        cut short and stripped of every value this source has fetched."""
        from utils.scrub import scrub

        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = scrub(text, [cached.value for cached in self._values.values() if cached.value])
        return text[:_MAX_DETAIL_CHARS]


def _error_code(exc: BaseException) -> str:
    """Azure's error code (``Forbidden``, ``SecretNotFound``...) or the exception's type."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "error_code", None)
    return str(code) if code else type(exc).__name__
