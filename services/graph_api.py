"""Microsoft Graph adapter: implements ``sync.ports.GraphDirectory`` (client credentials).

Tokens come from MSAL's ``ConfidentialClientApplication``, built once per adapter (lazily,
on the first token: MSAL's constructor already calls the tenant's OpenID discovery, and
nothing may touch the network at wiring time). MSAL gets our own requests session as
``http_client``, wrapped so its discovery and token calls are counted as service
"graph". A non-Microsoft authority (the sandbox) needs ``instance_discovery=False``.

``users()`` reads ``/v1.0/users`` with ``$select`` and ``$top=999`` and follows
``@odata.nextLink`` (an opaque absolute URL, Microsoft Graph "paging") until it is absent.

Errors: HTTP outcomes map through ``services.http.HttpClient`` (429 honours Retry-After;
5xx/timeouts retried; 401/403 FatalError). A 401 in the middle of a read refreshes the
token once and repeats the page. An MSAL error dict becomes FatalError with ``error`` and
``error_description`` (the client secret scrubbed); MSAL's transport failures and 5xx
become RetriableError under the same retry policy; a failed OpenID discovery is fatal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from config.settings import Settings
from services.http import CountingHttpClient, HttpClient, RequestStats, RetryPolicy
from sync.ports import Row
from utils.errors import ConfigurationError, FatalError, RetriableError
from utils.scrub import scrub

SERVICE = "graph"
DEFAULT_TIMEOUT = 30.0
USER_FIELDS = "id,employeeId,mail,userPrincipalName,accountEnabled"
MAX_PAGES = 100_000
# Error codes Graph answers for a deltaLink it will not continue (Microsoft Graph
# "Use delta query", token duration; "Microsoft Graph error responses", code property).
SYNC_STATE_CODES = ("syncStateNotFound", "resyncRequired", "syncStateInvalid")

# Authorities MSAL validates itself; anything else (the sandbox) skips instance discovery,
# which would otherwise ask login.microsoftonline.com about a host it cannot know.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
    }
)


class MsalTokenProvider:
    """App-only Graph tokens from one MSAL ConfidentialClientApplication (thread-safe)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        authority: str,
        scope: str,
        http_client: Any,
        verify: bool | str = True,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.client_id = client_id
        self.authority = authority.rstrip("/")
        self.scope = scope
        self._client_secret = client_secret
        self._http_client = http_client
        self._verify = verify
        self._timeout = timeout
        self._policy = policy or RetryPolicy()
        self._secrets = [client_secret, *secrets]
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def instance_discovery(self) -> bool | None:
        host = (urlsplit(self.authority).hostname or "").lower()
        return None if host in MICROSOFT_AUTHORITY_HOSTS else False

    def _application(self) -> Any:
        with self._lock:
            if self._app is None:
                import msal  # vendor library: imported where used

                try:
                    self._app = msal.ConfidentialClientApplication(
                        self.client_id,
                        client_credential=self._client_secret,
                        authority=self.authority,
                        http_client=self._http_client,
                        verify=self._verify,
                        timeout=self._timeout,
                        instance_discovery=self.instance_discovery,
                    )
                except ValueError as exc:  # OpenID discovery refused: wrong tenant/authority
                    raise FatalError(
                        f"graph: authority {self.authority} unusable: {self._scrub(str(exc))[:300]}", service=SERVICE
                    ) from exc
                except (requests.RequestException, msal.exceptions.MsalServiceError) as exc:
                    raise _transport_error(exc, "OpenID discovery") from exc
            return self._app

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _acquire_once(self) -> str:
        import msal

        app = self._application()
        try:
            result = app.acquire_token_for_client(scopes=[self.scope])
        except requests.RequestException as exc:
            raise _transport_error(exc, "token request") from exc
        except msal.exceptions.MsalServiceError as exc:  # MSAL raises this for a 5xx
            raise RetriableError(f"graph: token endpoint error: {self._scrub(str(exc))[:300]}", service=SERVICE) from exc
        except ValueError as exc:  # token endpoint answered something that is not JSON
            raise FatalError(f"graph: malformed token response: {self._scrub(str(exc))[:300]}", service=SERVICE) from exc
        if not isinstance(result, dict):
            raise FatalError("graph: malformed token result", service=SERVICE)
        token = result.get("access_token")
        if token:
            return str(token)
        error = self._scrub(str(result.get("error", "unknown_error")))
        description = self._scrub(str(result.get("error_description", "")))[:500]
        if error == "temporarily_unavailable":
            raise RetriableError(f"graph: token endpoint busy: {error}: {description}", service=SERVICE)
        raise FatalError(f"graph: token request refused: {error}: {description}", service=SERVICE)

    def token(self) -> str:
        """A valid access token (MSAL serves it from its cache until near expiry)."""
        return self._policy.call(self._acquire_once)

    def invalidate(self) -> None:
        """Drop cached access tokens so the next ``token()`` asks the authority again
        (MSAL's ``acquire_token_for_client`` refuses ``force_refresh``)."""
        with self._lock:
            app = self._app
        if app is None:
            return
        cache = app.token_cache
        for item in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
            cache.remove_at(item)


def _transport_error(exc: Exception, what: str) -> FatalError | RetriableError:
    """MSAL's own HTTP failures: transient unless the TLS trust itself is wrong."""
    if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return FatalError(f"graph: {what}: TLS certificate not trusted (check MS_GRAPH_CA_BUNDLE)", service=SERVICE)
    return RetriableError(f"graph: {what} failed: {type(exc).__name__}", service=SERVICE)


class GraphAPI:
    """Graph users over an ``HttpClient`` (base URL = MS_GRAPH_URL) and a token provider."""

    def __init__(self, http: HttpClient, tokens: MsalTokenProvider, *, page_size: int = 999) -> None:
        self.http = http
        self.tokens = tokens
        self.page_size = page_size

    def users(self) -> list[Row]:
        """Every user: id, employeeId, mail, userPrincipalName, accountEnabled."""
        # Literal query string: Graph documents ``$select``/``$top`` unencoded, and
        # requests keeps "$" and "," as they are.
        out: list[Row] = []
        for body in self._walk(self.http.url_for(f"/v1.0/users?$select={USER_FIELDS}&$top={self.page_size}"), "users"):
            out.extend(body["value"])
        return out

    def delta(self, delta_link: str | None) -> DeltaRound:
        """One round of Graph delta query on users (Microsoft Graph "user: delta").

        ``delta_link`` None starts a new round (every user, ``$select``-ed); else the
        deltaLink of the previous round answers the users changed since (their selected
        properties) and the deleted ones (``@removed``). The round follows every
        ``@odata.nextLink`` to the ``@odata.deltaLink`` it returns. A deltaLink Graph
        refuses (410 Gone, or ``syncStateNotFound``/``resyncRequired``: expired after
        seven days, or a reset) raises DeltaTokenRefused: the caller starts over."""
        url = delta_link or self.http.url_for(f"/v1.0/users/delta?$select={USER_FIELDS}")
        round_ = DeltaRound(full=delta_link is None)
        try:
            for body in self._walk(url, "users delta"):
                for entry in body["value"]:
                    uid = entry.get("id")
                    if not isinstance(uid, str) or not uid:
                        raise FatalError("graph: malformed delta entry (no id)", service=SERVICE)
                    if "@removed" in entry:
                        round_.removed.append(uid)
                    else:
                        round_.changed.append(entry)
                link = body.get("@odata.deltaLink")
                if link is not None:
                    if not isinstance(link, str) or not link:
                        raise FatalError("graph: malformed @odata.deltaLink", service=SERVICE)
                    round_.delta_link = link
                round_.pages += 1
        except FatalError as exc:
            if delta_link is not None and _refuses_token(exc):
                raise DeltaTokenRefused(str(exc)) from exc
            raise
        if not round_.delta_link:
            raise FatalError("graph: users delta round ended without an @odata.deltaLink", service=SERVICE)
        return round_

    def _walk(self, url: str | None, what: str) -> Iterator[dict[str, Any]]:
        """Each page of a Graph collection, following ``@odata.nextLink`` until absent."""
        origin = _origin(self.http.base_url)
        refreshed = False
        pages = 0
        while url:
            if _origin(url) != origin:
                # The bearer token goes wherever nextLink points: never outside Graph.
                raise FatalError(f"graph: nextLink leaves {origin}: {urlsplit(url).netloc}", service=SERVICE)
            try:
                body = self.http.request_json("GET", url, headers={"Authorization": f"Bearer {self.tokens.token()}"})
            except FatalError as exc:
                if exc.status == 401 and not refreshed:
                    refreshed = True  # expired or revoked mid-run: one fresh token, same page
                    self.tokens.invalidate()
                    continue
                raise
            value = body.get("value") if isinstance(body, dict) else None
            if not isinstance(value, list) or not all(isinstance(u, dict) for u in value):
                raise FatalError(f"graph: malformed {what} page (value is not a list of objects)", service=SERVICE)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise FatalError("graph: malformed @odata.nextLink", service=SERVICE)
            yield body
            url = next_link or None
            pages += 1
            if pages >= MAX_PAGES:
                raise FatalError(f"graph: more than {MAX_PAGES} {what} pages; refusing a partial read", service=SERVICE)


class DeltaTokenRefused(Exception):
    """Graph will not continue from this deltaLink: a new (full) round is needed."""


@dataclass
class DeltaRound:
    """What one delta round returned: users added or changed (their selected properties),
    ids removed, the deltaLink for the next round, and how many pages it took."""

    full: bool
    changed: list[Row] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    delta_link: str = ""
    pages: int = 0


def _refuses_token(exc: FatalError) -> bool:
    """410 Gone (synchronization reset) or a 4xx naming an expired/unknown sync state."""
    if exc.status == 410:
        return True
    text = str(exc)
    return exc.status is not None and 400 <= exc.status < 500 and any(code in text for code in SYNC_STATE_CODES)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def build_graph(
    settings: Settings,
    stats: RequestStats,
    session: requests.Session | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    breaker: Any = None,
) -> GraphAPI:
    """Wire a GraphAPI from ``config.settings.Settings`` (MSAL app built on first use)."""
    secret = settings.ms_graph_client_secret.get_secret_value() if settings.ms_graph_client_secret else ""
    missing = [
        n
        for n, v in (
            ("MS_GRAPH_TENANT_ID", settings.ms_graph_tenant_id),
            ("MS_GRAPH_CLIENT_ID", settings.ms_graph_client_id),
            ("MS_GRAPH_CLIENT_SECRET", secret),
        )
        if not v
    ]
    if missing:
        raise ConfigurationError([f"{m} is required for Microsoft Graph" for m in missing])
    session = session or requests.Session()
    verify: bool | str = settings.ms_graph_ca_bundle or True
    http = HttpClient(
        SERVICE,
        settings.ms_graph_url,
        session,
        stats=stats,
        timeout=DEFAULT_TIMEOUT,
        max_attempts=settings.http_max_attempts,
        max_retry_seconds=settings.http_max_retry_seconds,
        default_headers={"Accept": "application/json"},
        sleep=sleep,
        clock=clock,
        breaker=breaker,
        secrets=[secret],
        verify=verify,
    )
    tokens = MsalTokenProvider(
        client_id=settings.ms_graph_client_id or "",
        client_secret=secret,
        authority=f"{settings.ms_graph_authority_url.rstrip('/')}/{settings.ms_graph_tenant_id}",
        scope=f"{settings.ms_graph_url.rstrip('/')}/.default",
        http_client=CountingHttpClient(session, SERVICE, stats, timeout=DEFAULT_TIMEOUT, clock=clock, verify=verify),
        verify=verify,
        timeout=DEFAULT_TIMEOUT,
        policy=http.policy,
    )
    return GraphAPI(http, tokens)
