"""OneRoster REST adapter (1EdTech rostering, versions 1.1 and 1.2): a ``RosterSource``.

What it reads: ``/users``, ``/classes`` and ``/enrollments`` (or ``/schools/{id}/enrollments``
per configured school) under the version's base path (1EdTech OneRoster 1.1 / 1.2 REST bindings):

    1.1   {ONEROSTER_URL}/ims/oneroster/v1p1/...
    1.2   {ONEROSTER_URL}/ims/oneroster/rostering/v1p2/...

An ONEROSTER_URL that already ends in such a base path (ClassLink's proxy URL
``https://oneroster-proxy.classlink.io/{APP_ID}/ims/oneroster/v1p1``) is used as it is.

Authentication (ONEROSTER_AUTH):

    oauth2   client credentials at ONEROSTER_TOKEN_URL (default ``{ONEROSTER_URL}/token``,
             Aeries' layout), scopes from ONEROSTER_SCOPES, client authenticated with HTTP
             Basic (RFC 6749 §2.3.1) or in the body (ONEROSTER_TOKEN_AUTH_METHOD=post);
             the token is cached until shortly before ``expires_in`` and fetched again
             once when the API answers 401
    oauth1   OAuth 1.0a request signing with HMAC-SHA256, as OneRoster 1.1 servers
             that follow the original binding require (ClassLink direct access); done
             by requests-oauthlib, which signs every attempt afresh (new nonce)
    bearer   a static token (ClassLink's OAuth2 proxy token "does not expire")

Paging: ``limit``/``offset``. The walk follows ``Link: <...>; rel="next"`` when given,
else continues by offset while ``X-Total-Count`` says more records exist. A short page is
never the end of a collection that says otherwise; with no header at all the walk goes
on until an empty page (a server that silently caps ``limit`` would otherwise look like
a short last page). A page that fails after the retry policy, or an empty page while the
count says more, raises SourceUnavailableError: the sync then deactivates nothing.

Delta: ``filter=dateLastModified>'<ISO 8601 UTC>'`` on every collection; ``tobedeleted``
records come back in it and mean "deactivate". The cursor lives in Redis
(``RedisCursorStore``), taken at the start of the previous complete run.

Errors: HTTP outcomes map through ``services.http.HttpClient``; this module adds
FatalError for malformed pages and a Link that leaves the server's origin (a bearer
token must never follow it), SourceUnavailableError for incomplete collections, and
FatalError for a token endpoint that refuses the client credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from config.settings import Settings
from services.http import CountingHttpClient, HttpClient, RateLimiter, RequestStats, RetryPolicy, parse_json
from services.oneroster_json import class_from_json, collect, enrollment_from_json, ref, user_from_json
from sync.roster_model import RosterSnapshot, RosterSource
from utils.errors import ConfigurationError, FatalError, RetriableError, SourceUnavailableError, SyncError

log = logging.getLogger("services.oneroster")

SERVICE = "oneroster"
BASE_PATHS = {"1.1": "ims/oneroster/v1p1", "1.2": "ims/oneroster/rostering/v1p2"}
DEFAULT_SCOPES = {
    # Aeries documents the 1.1 scopes (docs/rosters.md); the 1.2 ones follow the
    # 1EdTech pattern .../spec/or/v1p2/scope/<name>.readonly.
    "1.1": "https://purl.imsglobal.org/spec/or/v1p1/scope/roster-core.readonly",
    "1.2": "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly",
}
MAX_PAGES = 200_000
TOKEN_EARLY_REFRESH_SECONDS = 60.0


def iso_cursor(moment: datetime) -> str:
    """The filter value for a delta: ISO 8601 UTC with a Z, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")


def parse_link_header(value: str | None) -> dict[str, str]:
    """RFC 8288 (was 5988) ``Link`` -> ``{rel: url}``."""
    links: dict[str, str] = {}
    if not value:
        return links
    for m in _LINK_RE.finditer(value):
        url, params = m.group(1), m.group(2)
        for p in params.split(";"):
            name, _, val = p.strip().partition("=")
            if name.strip().lower() == "rel":
                for rel in val.strip().strip('"').split():
                    links.setdefault(rel.lower(), url.strip())
    return links


# --------------------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------------------
class TokenProvider:
    """OAuth 2.0 client-credentials tokens (RFC 6749 §4.4), cached until near expiry."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scopes: str | None,
        http: CountingHttpClient,
        *,
        auth_method: str = "basic",
        clock: Callable[[], float] = time.monotonic,
        policy: RetryPolicy | None = None,
        verify: Any = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.http = http
        self.auth_method = auth_method
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.policy = policy or RetryPolicy(max_attempts=3, max_retry_seconds=30)
        self.fetched = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires:
                self._token, lifetime = self.policy.call(self._fetch)
                self._expires = self._clock() + max(0.0, lifetime - TOKEN_EARLY_REFRESH_SECONDS)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        data = {"grant_type": "client_credentials"}
        if self.scopes:
            data["scope"] = self.scopes
        kwargs: dict[str, Any] = {"data": data, "headers": {"Accept": "application/json"}}
        if self.auth_method == "post":
            data.update({"client_id": self.client_id, "client_secret": self.client_secret})
            kwargs["auth"] = _no_auth  # an explicit auth keeps the session's BearerAuth off this request
        else:
            kwargs["auth"] = (self.client_id, self.client_secret)
        try:
            resp = self.http.post(self.token_url, **kwargs)
        except requests.RequestException as exc:
            raise RetriableError(f"oneroster token endpoint unreachable: {type(exc).__name__}", service=SERVICE) from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetriableError(
                f"oneroster token endpoint answered HTTP {resp.status_code}", service=SERVICE, status=resp.status_code
            )
        try:
            body = parse_json(resp)
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            detail = body.get("error") if isinstance(body, dict) else None
            raise FatalError(
                f"oneroster token endpoint refused the client credentials (HTTP {resp.status_code}"
                f"{', ' + str(detail) if detail else ''}); "
                "check ONEROSTER_CLIENT_ID/SECRET, ONEROSTER_SCOPES, ONEROSTER_TOKEN_URL",
                service=SERVICE,
                status=resp.status_code,
            )
        self.fetched += 1
        try:
            lifetime = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError, OverflowError):
            lifetime = 3600.0
        if not 0 < lifetime < 10 * 365 * 86_400:  # NaN, inf, negative: the usual hour
            lifetime = 3600.0
        return str(body["access_token"]), lifetime


def _no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    return r


class BearerAuth(requests.auth.AuthBase):
    """Puts the provider's current token on every request (every retry re-asks it)."""

    def __init__(self, provider: TokenProvider) -> None:
        self.provider = provider

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.provider.token()}"
        return r


def oauth1_auth(client_key: str, client_secret: str) -> requests.auth.AuthBase:
    """OAuth 1.0a, HMAC-SHA256, Authorization header (OneRoster 1.1 security binding)."""
    from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
    from requests_oauthlib import OAuth1

    return OAuth1(client_key, client_secret=client_secret, signature_method=SIGNATURE_HMAC_SHA256)


# --------------------------------------------------------------------------------------
# the REST source
# --------------------------------------------------------------------------------------
class OneRosterAPI:
    """OneRoster REST reads over an ``HttpClient`` (see the module docstring)."""

    supports_delta = True

    def __init__(
        self,
        http: HttpClient,
        version: str = "1.2",
        *,
        page_size: int = 100,
        tokens: TokenProvider | None = None,
    ) -> None:
        if version not in BASE_PATHS:
            raise ConfigurationError(f"ONEROSTER_VERSION={version!r}: expected 1.1 or 1.2")
        self.http = http
        self.version = version
        self.page_size = page_size
        self.tokens = tokens
        base_path = urlsplit(http.base_url).path.rstrip("/")
        self.prefix = "" if "/ims/oneroster/" in base_path + "/" else "/" + BASE_PATHS[version]
        origin = urlsplit(http.base_url)
        self._origin = (origin.scheme, origin.netloc)

    # -- one collection -----------------------------------------------------------
    def collection(
        self, path: str, key: str, params: Mapping[str, Any] | None = None, convert: Callable[[dict[str, Any]], Any] | None = None
    ) -> list[Any]:
        """Every record of ``path`` (all pages); raises SourceUnavailableError when the
        collection cannot be read completely. With ``convert``, each record with a
        sourcedId is converted as its page arrives (a ValueError it raises is kept in its
        place for ``collect``): a million enrollments are never held as raw JSON."""
        url: str = self.prefix + path
        query: dict[str, Any] | None = {**(params or {}), "limit": self.page_size, "offset": 0}
        offset = 0
        out: dict[str, Any] = {}  # raw records, or converted ones (or the ValueError of one)
        anonymous: list[dict[str, Any]] = []
        seen_links: set[str] = set()
        for _ in range(MAX_PAGES):
            try:
                resp = self._get(url, query)
            except SyncError as exc:
                raise SourceUnavailableError(
                    f"oneroster: {path} could not be read completely (failed at offset {offset}): {exc.message}", service=SERVICE
                ) from exc
            try:
                body = parse_json(resp)
            except ValueError as exc:
                raise FatalError(f"oneroster: {path} page is not JSON", service=SERVICE) from exc
            items = body.get(key) if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise FatalError(f"oneroster: malformed {path} page (no {key!r} list)", service=SERVICE)
            for item in items:
                sid = ref(item.get("sourcedId"))
                if sid is None:
                    anonymous.append(item)
                elif convert is None:
                    out[sid] = item  # offset paging may repeat a record when the set shifts
                else:
                    try:
                        out[sid] = convert(item)
                    except ValueError as exc:
                        out[sid] = exc
            offset += len(items)
            total = _int(resp.headers.get("X-Total-Count"))
            links = parse_link_header(resp.headers.get("Link"))
            nxt = links.get("next")
            if nxt:
                nxt = self._same_origin(nxt, path)
                if nxt in seen_links:
                    raise FatalError(f"oneroster: {path} Link rel=next repeats {nxt}; refusing to loop", service=SERVICE)
                seen_links.add(nxt)
                if not items and total is not None and offset >= total:
                    break
                url, query = nxt, None
                continue
            if total is not None:
                if offset >= total:
                    break
                if not items:
                    raise SourceUnavailableError(
                        f"oneroster: {path} returned an empty page at offset {offset} while X-Total-Count is {total}",
                        service=SERVICE,
                    )
            elif not items:
                break
            url = self.prefix + path
            query = {**(params or {}), "limit": self.page_size, "offset": offset}
        else:
            raise SourceUnavailableError(f"oneroster: {path} has more than {MAX_PAGES} pages", service=SERVICE)
        return [*out.values(), *anonymous]

    def _get(self, url: str, query: Mapping[str, Any] | None) -> requests.Response:
        try:
            return self.http.request("GET", url, params=query)
        except FatalError as exc:
            if exc.status == 401 and self.tokens is not None:
                log.info("oneroster answered 401; fetching a new token once")
                self.tokens.invalidate()
                return self.http.request("GET", url, params=query)
            raise

    def _same_origin(self, link: str, path: str) -> str:
        if link.startswith(("http://", "https://")):
            parts = urlsplit(link)
            if (parts.scheme, parts.netloc) != self._origin:
                raise FatalError(
                    f"oneroster: {path} Link rel=next points to another origin ({parts.netloc}); not followed", service=SERVICE
                )
            return link
        if link.startswith("/"):
            return f"{self._origin[0]}://{self._origin[1]}{link}"
        return self.http.url_for(link)

    # -- the roster read ------------------------------------------------------------
    def read(self, since: datetime | None, schools: Collection[str]) -> RosterSnapshot:
        params: dict[str, Any] = {}
        if since is not None:
            params["filter"] = f"dateLastModified>'{iso_cursor(since)}'"
        full = since is None
        snap = RosterSnapshot(users_full=full, classes_full=full, enrollments_full=full, source=f"oneroster-rest-{self.version}")
        snap.users = collect(self.collection("/users", "users", params, user_from_json), user_from_json, "user", snap)
        snap.classes = collect(self.collection("/classes", "classes", params, class_from_json), class_from_json, "class", snap)
        raw: list[Any] = []
        if schools:
            for school in sorted(schools):
                try:
                    raw += self.collection(f"/schools/{_seg(school)}/enrollments", "enrollments", params, enrollment_from_json)
                except SyncError as exc:
                    snap.enrollment_gaps.add(school)
                    snap.notes.append(
                        f"enrollments of school {school} not read completely; its classes keep their members: {exc.message}"
                    )
        else:
            try:
                raw = self.collection("/enrollments", "enrollments", params, enrollment_from_json)
            except SyncError as exc:
                snap.enrollment_gaps.add("*")
                snap.notes.append(f"enrollments not read completely; every class keeps its members: {exc.message}")
        snap.enrollments = collect(raw, enrollment_from_json, "enrollment", snap)
        return snap


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


# --------------------------------------------------------------------------------------
# the delta cursor (Redis)
# --------------------------------------------------------------------------------------
def roster_scope(settings: Settings) -> str:
    """What a roster cursor is valid for: the source (OneRoster URL and version, or the CSV
    drop), the SCIM target and the selection and mapping. A cursor taken for another scope
    would make a delta run skip everything older than it (a new SIS, a new SCIM tenant, a
    school added to ROSTER_SCHOOLS), so a change of scope means a full read.
    ROSTER_CURSOR_SCOPE names the SIS and target explicitly (the sandbox sets it, since its
    emulators get new ports at every start)."""
    explicit = settings.roster_cursor_scope
    parts = {
        "source": explicit or settings.oneroster_url or str(settings.oneroster_csv_path or ""),
        "version": settings.oneroster_version,
        "target": "" if explicit else (settings.scim_url or ""),
        "schools": sorted(settings.roster_schools),
        "roles": sorted(settings.roster_roles),
        "username": settings.roster_username_field,
        "role_attribute": settings.roster_role_attribute,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class RedisCursorStore:
    """The rosters cursor in one Redis string, ``{prefix}rosters:cursor`` (JSON), tagged
    with the scope it was taken for (``roster_scope``): a cursor of another scope is not
    used (a full read instead).

    Redis trouble never fails a run: ``load`` then answers None (a full run, which is
    always safe) and ``save`` logs a warning (the next run is a larger delta)."""

    def __init__(self, client: Any, prefix: str, name: str = "rosters", scope: str = "") -> None:
        self.client = client
        self.key = f"{prefix}{name}:cursor"
        self.scope = scope

    def load(self) -> dict[str, str] | None:
        try:
            raw = self.client.get(self.key)
        except Exception as exc:  # redis.RedisError and socket errors alike
            log.warning("roster cursor unavailable (%s); running a full read", type(exc).__name__)
            return None
        if not raw:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(state, dict) or not state.get("cursor"):
            return None
        if state.get("scope", "") != self.scope:
            log.info("the roster source, target or selection changed since the cursor was taken; running a full read")
            return None
        return {k: v for k, v in state.items() if k != "scope"}

    def save(self, state: Mapping[str, str]) -> None:
        try:
            self.client.set(self.key, json.dumps({**state, "scope": self.scope}))
        except Exception as exc:
            log.warning("could not save the roster cursor (%s); the next run reads a larger delta", type(exc).__name__)


def build_cursor_store(settings: Settings, *, socket_timeout: float = 2.0) -> RedisCursorStore:
    """A cursor store on its own client (``utils.redis_client.make_redis``: short
    timeouts, one retry); no connection is made here."""
    from utils.redis_client import make_redis

    client = make_redis(settings.redis_url, socket_timeout=socket_timeout)
    return RedisCursorStore(client, settings.redis_prefix, scope=roster_scope(settings))


# --------------------------------------------------------------------------------------
# wiring
# --------------------------------------------------------------------------------------
def build_oneroster(
    settings: Settings,
    stats: RequestStats,
    session: requests.Session | None = None,
    *,
    token_session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    breaker: Any = None,
) -> RosterSource:
    """A RosterSource from settings: the CSV drop when ONEROSTER_CSV_PATH is set and no
    ONEROSTER_URL, else the REST API."""
    if not settings.oneroster_url:
        if settings.oneroster_csv_path:
            from services.oneroster_csv import OneRosterCSV

            return OneRosterCSV(settings.oneroster_csv_path)
        raise ConfigurationError("ONEROSTER_URL or ONEROSTER_CSV_PATH is required for the rosters sync")
    session = session or requests.Session()
    headers = {"Accept": "application/json"}
    secrets, tokens = _oneroster_auth(settings, session, headers, stats, token_session, sleep, clock)
    rate = settings.oneroster_rate_limit_per_second
    http = HttpClient(
        SERVICE,
        settings.oneroster_url,
        session,
        stats=stats,
        limiter=RateLimiter(rate, burst=max(1, int(rate)), clock=clock, sleep=sleep),
        timeout=30.0,
        max_attempts=settings.http_max_attempts,
        max_retry_seconds=settings.http_max_retry_seconds,
        default_headers=headers,
        sleep=sleep,
        clock=clock,
        breaker=breaker,
        secrets=secrets,
    )
    return OneRosterAPI(http, settings.oneroster_version, page_size=settings.oneroster_page_size, tokens=tokens)


def _oneroster_auth(
    settings: Settings,
    session: requests.Session,
    headers: dict[str, str],
    stats: RequestStats,
    token_session: requests.Session | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> tuple[list[str], TokenProvider | None]:
    """Set up ONEROSTER_AUTH on ``session`` (or ``headers``); returns the secrets to mask
    and the OAuth2 token provider (None for bearer and OAuth 1.0a)."""
    mode = settings.oneroster_auth
    secret = settings.oneroster_client_secret.get_secret_value() if settings.oneroster_client_secret else ""
    client_id = settings.oneroster_client_id or ""
    secrets = [secret]
    if mode == "bearer":
        token = settings.oneroster_token.get_secret_value() if settings.oneroster_token else ""
        if not token:
            raise ConfigurationError("ONEROSTER_TOKEN is required when ONEROSTER_AUTH=bearer")
        headers["Authorization"] = f"Bearer {token}"
        return [*secrets, token], None
    if not (client_id and secret):
        raise ConfigurationError(f"ONEROSTER_CLIENT_ID and ONEROSTER_CLIENT_SECRET are required when ONEROSTER_AUTH={mode}")
    if mode == "oauth1":
        session.auth = oauth1_auth(client_id, secret)
        return secrets, None
    token_url = settings.oneroster_token_url or str(settings.oneroster_url).rstrip("/") + "/token"
    scopes = settings.oneroster_scopes
    if scopes is None:
        scopes = DEFAULT_SCOPES[settings.oneroster_version]
    tokens = TokenProvider(
        token_url,
        client_id,
        secret,
        " ".join(scopes.replace(",", " ").split()) or None,
        # The same session as the API calls: Aeries asks clients to keep the cookies of
        # the token response (load-balancer affinity) for every later call.
        CountingHttpClient(token_session or session, SERVICE, stats, clock=clock),
        auth_method=settings.oneroster_token_auth_method,
        clock=clock,
        policy=RetryPolicy(max_attempts=3, max_retry_seconds=30, sleep=sleep, clock=clock),
    )
    session.auth = BearerAuth(tokens)
    return secrets, tokens
