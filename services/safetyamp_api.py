"""SafetyAmp REST adapter: implements ``sync.ports.SafetyAmpTarget``.

Talks to ``{SAFETYAMP_URL}/api/{collection}`` with the four headers SafetyAmp requires on
every request (Authorization Bearer, Fqdn, User-Agent, Accept: application/json;
docs/emulated-apis.md "SafetyAmp"). Responses wrap their payload in ``{"data": ...}``; request bodies are
sent as the bare object (Laravel reads the fields at the top level).

Errors: HTTP outcomes are mapped by ``services.http.HttpClient`` (429 -> RateLimitedError,
5xx/timeouts -> RetriableError, 422 -> RecordError with Laravel field errors, "already
been taken" / 409 -> ConflictError, 401/403 -> FatalError, ambiguous creates ->
AmbiguousWriteError). This module adds FatalError for answers of the wrong shape and for
reads that cannot be proven complete: a list is returned whole or not at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from config.settings import Settings
from services.http import HttpClient, RateLimiter, RequestStats
from sync.ports import Row
from utils.errors import ConfigurationError, FatalError, RecordError

SERVICE = "safetyamp"
log = logging.getLogger("safetyamp")

COLLECTIONS = ("users", "sites", "site_clusters", "user_titles", "roles", "asset_types", "assets")

# How SafetyAmp accepts updates per collection (IIUS usage, docs/emulated-apis.md "SafetyAmp"). Titles,
# roles and asset types are never updated by this product.
UPDATE_METHOD: dict[str, str] = {"users": "PATCH", "site_clusters": "PATCH", "sites": "PUT", "assets": "PUT"}

RowList = list[Row]  # spelled once here: inside SafetyAmpAPI, ``list`` is the method

RATE_HEADROOM = 0.975
"""Share of SAFETYAMP_RATE_LIMIT_PER_MINUTE actually used: exactly at the limit, about
half the requests meet a one-token bucket a few milliseconds early (docs/performance.md)."""

MAX_PAGES = 10_000
"""Safety stop: 10 000 pages of 100 is a million records, far beyond any tenant."""

# ASCII digits, at most nine: int() of the match can never raise, whatever the body says.
_LIMIT_MAX = re.compile(
    r"(?:greater than|more than|at most|maximum(?: of| is)?|max:|between \d+ and)\s*(\d{1,9})(?!\d)", re.IGNORECASE | re.ASCII
)
"""The maximum in a Laravel-style refusal of ``limit`` ("must not be greater than 100")."""


class SafetyAmpAPI:
    """SafetyAmp collections over an ``HttpClient`` configured for SafetyAmp."""

    def __init__(self, http: HttpClient, page_size: int = 100, max_page_size: int | None = None) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.http = http
        self.page_size = page_size
        self.max_page_size = max_page_size
        """Largest limit the server is known to honour (configured, or learnt from a 422)."""

    @property
    def limit_honoured(self) -> bool:
        """True when a short page proves the end of a list (the server honours our limit)."""
        return self.max_page_size is not None and self.page_size <= self.max_page_size

    # -- reads -------------------------------------------------------------------
    def list(self, collection: str) -> RowList:
        """Every record of ``collection``; raises rather than return a partial list."""
        _check_collection(collection)
        if collection == "site_clusters":
            return self._cluster_tree()
        return self._paged(collection)

    def find_by(self, collection: str, field: str, value: Any) -> Row | None:
        """The record whose ``field`` equals ``value`` (checked here, whatever the server
        did with the filter), or None."""
        _check_collection(collection)
        if collection == "site_clusters":  # a tree without filters: search the flat list
            return _first_match(self._cluster_tree(), field, value)
        rows = self._page(collection, 0, {field: value})
        match = _first_match(rows, field, value)
        if match is not None:
            return match
        # The filter may have been ignored (we got an arbitrary first page): when the page
        # was full, the record may sit further on, so only a full read can say "absent".
        if len(rows) >= self.page_size:
            return _first_match(self._paged(collection), field, value)
        return None

    # -- writes ------------------------------------------------------------------
    def create(self, collection: str, payload: Mapping[str, Any]) -> Row:
        """POST; returns the created object. A create that may have been applied raises
        AmbiguousWriteError (re-check with ``find_by`` before sending it again)."""
        _check_collection(collection)
        body = self.http.request_json("POST", f"/api/{collection}", json=dict(payload))
        return self._data_object(body, f"create {collection}")

    def update(self, collection: str, record_id: int | str, payload: Mapping[str, Any]) -> Row:
        """PATCH (users, site_clusters) or PUT (sites, assets); others cannot be updated."""
        _check_collection(collection)
        method = UPDATE_METHOD.get(collection)
        if method is None:
            raise FatalError(f"safetyamp: {collection} cannot be updated through the API", service=SERVICE)
        body = self.http.request_json(method, f"/api/{collection}/{record_id}", json=dict(payload))
        return self._data_object(body, f"update {collection}/{record_id}")

    # -- internals ---------------------------------------------------------------
    def _paged(self, collection: str) -> RowList:
        """0-based ``page`` + ``limit`` until an empty page, or a short page once the
        server is known to honour our limit (SAFETYAMP_MAX_PAGE_SIZE) or a full page has
        proved it. A server that silently caps the limit returns only short pages, so
        without that proof we keep reading until it returns nothing."""
        by_id: dict[Any, Row] = {}
        no_id: RowList = []
        seen_full_page = self.limit_honoured
        for page in range(MAX_PAGES):
            rows = self._page(collection, page)
            if not rows:
                break
            new = 0
            for row in rows:
                rid = row.get("id")
                if not isinstance(rid, (int, str)):  # missing, or an odd value: not a record we can write to
                    no_id.append(row)
                    new += 1
                elif rid not in by_id:
                    by_id[rid] = row
                    new += 1
                else:
                    by_id[rid] = row  # shifted by a concurrent insert: keep the fresher copy
            if new == 0:
                # A whole page we already have: the server is not paging the way we ask
                # (e.g. 1-based pages, page 0 == page 1). Continuing would loop forever or
                # hide records; a wrong plan is worse than no plan.
                raise FatalError(
                    f"safetyamp: page {page} of {collection} repeats records already read; "
                    "the server does not honour 0-based paging",
                    service=SERVICE,
                )
            if len(rows) == self.page_size:
                seen_full_page = True
            elif len(rows) < self.page_size and seen_full_page:
                break
        else:
            raise FatalError(f"safetyamp: {collection} has more than {MAX_PAGES} pages; refusing a partial read", service=SERVICE)
        return list(by_id.values()) + no_id

    def _page(self, collection: str, page: int, filters: Mapping[str, Any] | None = None) -> RowList:
        """One list page. A first page refused with a 422 that names the largest
        ``limit`` the server accepts is asked again at that size, remembered for the
        rest of this adapter's life (a too-large SAFETYAMP_PAGE_SIZE costs one request,
        not a failed run)."""
        while True:
            params = {**(filters or {}), "page": page, "limit": self.page_size}
            try:
                body = self.http.request_json("GET", f"/api/{collection}", params=params)
            except RecordError as exc:
                cap = _refused_limit(exc, self.page_size)
                if cap is None or page != 0:
                    raise
                log.warning(
                    "SafetyAmp refused limit=%d, accepts at most %d; reading at %d (set SAFETYAMP_PAGE_SIZE=%d)",
                    self.page_size,
                    cap,
                    cap,
                    cap,
                )
                self.page_size = self.max_page_size = cap
                continue
            return self._data_list(body, collection)

    def _cluster_tree(self) -> RowList:
        """site_clusters comes as a tree of ``children``: flatten it, filling ``depth``
        (root = 0) and ``parent_cluster_id`` when the server left them out."""
        body = self.http.request_json("GET", "/api/site_clusters")
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise FatalError("safetyamp: malformed site_clusters response (data is not a list)", service=SERVICE)
        out: RowList = []
        seen: set[Any] = set()
        stack: list[tuple[Any, int, Any]] = [(node, 0, None) for node in reversed(data)]
        while stack:
            node, depth, parent_id = stack.pop()
            if not isinstance(node, dict):
                raise FatalError("safetyamp: malformed site_clusters node (not an object)", service=SERVICE)
            if depth > 64 or (node.get("id") is not None and node.get("id") in seen):
                raise FatalError("safetyamp: site_clusters tree has a cycle or is absurdly deep", service=SERVICE)
            seen.add(node.get("id"))
            children = node.get("children") or []
            if not isinstance(children, list):
                raise FatalError("safetyamp: malformed site_clusters children (not a list)", service=SERVICE)
            row = {k: v for k, v in node.items() if k != "children"}
            if row.get("depth") is None:
                row["depth"] = depth
            if row.get("parent_cluster_id") is None and parent_id is not None:
                row["parent_cluster_id"] = parent_id
            row.setdefault("parent_cluster_id", None)
            out.append(row)
            stack.extend((child, depth + 1, node.get("id")) for child in reversed(children))
        return out

    @staticmethod
    def _data_list(body: Any, collection: str) -> RowList:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise FatalError(f"safetyamp: malformed {collection} list response (data is not a list of objects)", service=SERVICE)
        return data

    @staticmethod
    def _data_object(body: Any, what: str) -> Row:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise FatalError(
                f"safetyamp: malformed response to {what} (data is not an object); the write may have been applied",
                service=SERVICE,
            )
        return data


def _refused_limit(exc: RecordError, asked: int) -> int | None:
    """The largest limit a 422 on ``limit`` names ("must not be greater than 100"),
    when smaller than what we asked; None for any other refusal."""
    for field, messages in exc.field_errors.items():
        if field != "limit":
            continue
        for message in messages:
            found = _LIMIT_MAX.search(message)
            if found and 1 <= int(found.group(1)) < asked:
                return int(found.group(1))
    return None


def _check_collection(collection: str) -> None:
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown SafetyAmp collection {collection!r}")


def _same(a: Any, b: Any) -> bool:
    """Key equality across JSON types: emp_id may come back as 123 or "123"."""
    if a is None or b is None:
        return a is b
    return a == b or str(a).strip() == str(b).strip()


def _first_match(rows: list[Row], field: str, value: Any) -> Row | None:
    for row in rows:
        if _same(row.get(field), value):
            return row
    return None


def safetyamp_limiter(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
) -> RateLimiter:
    """SAFETYAMP_RATE_LIMIT_PER_MINUTE as a limiter.

    Burst 1: requests evenly spaced. SafetyAmp's bucket size is unknown, and a burst
    spent at the start leaves the server's bucket empty, so the next request that
    arrives a little early (network jitter) earns a 429 and a whole second of
    Retry-After. Paced a little under the limit (RATE_HEADROOM), requests sent one
    interval apart still arrive far enough apart for a bucket holding one token."""
    per_minute = settings.safetyamp_rate_limit_per_minute * RATE_HEADROOM
    return RateLimiter.per_minute(per_minute, burst=1, clock=clock, sleep=sleep)


def build_safetyamp(
    settings: Settings,
    stats: RequestStats,
    session: requests.Session | None = None,
    *,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    breaker: Any = None,
) -> SafetyAmpAPI:
    """Wire a SafetyAmpAPI from ``config.settings.Settings``.

    ``limiter`` defaults to SAFETYAMP_RATE_LIMIT_PER_MINUTE; pass one shared limiter if
    several adapters talk to the same account."""
    token = settings.safetyamp_token.get_secret_value() if settings.safetyamp_token else ""
    fqdn = settings.safetyamp_fqdn or ""
    problems = [n for n, v in (("SAFETYAMP_TOKEN", token), ("SAFETYAMP_FQDN", fqdn)) if not v]
    if problems:
        raise ConfigurationError([f"{p} is required for SafetyAmp" for p in problems])
    if limiter is None:
        limiter = safetyamp_limiter(settings, clock=clock, sleep=sleep)
    http = HttpClient(
        SERVICE,
        settings.safetyamp_url,
        session or requests.Session(),
        stats=stats,
        limiter=limiter,
        timeout=settings.safetyamp_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        max_retry_seconds=settings.http_max_retry_seconds,
        default_headers={
            "Authorization": f"Bearer {token}",
            "Fqdn": fqdn,
            "User-Agent": settings.safetyamp_user_agent,
            "Accept": "application/json",
        },
        sleep=sleep,
        clock=clock,
        breaker=breaker,
        secrets=[token],
    )
    return SafetyAmpAPI(http, page_size=settings.safetyamp_page_size, max_page_size=settings.safetyamp_max_page_size)
