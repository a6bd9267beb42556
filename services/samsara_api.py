"""Samsara Fleet API adapter: implements ``sync.ports.SamsaraFleet``.

Reads ``/fleet/vehicles`` and ``/fleet/drivers`` with a Bearer API token and cursor
paging (Samsara API "Pagination", docs/emulated-apis.md): ``limit`` (max 512) plus ``after=<endCursor>``, repeating the
other params, until ``pagination.hasNextPage`` is false. Samsara documents that pages may
be short or even empty while ``hasNextPage`` is still true, so an empty page never ends
the read. Our own limiter keeps us under SAMSARA_RATE_LIMIT_PER_SECOND; Samsara's 429
carries a fractional ``Retry-After`` that the shared retry policy honours.

Errors: HTTP outcomes map through ``services.http.HttpClient`` (429 -> RateLimitedError,
5xx/timeouts -> RetriableError, 401/403 -> FatalError). This module raises FatalError for
a malformed page, a ``hasNextPage`` without a cursor, and a cursor seen twice (a server
loop would otherwise page forever).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from config.settings import Settings
from services.http import HttpClient, RateLimiter, RequestStats
from sync.ports import Row
from utils.errors import ConfigurationError, FatalError

SERVICE = "samsara"
MAX_PAGE_SIZE = 512
DEFAULT_TIMEOUT = 30.0
MAX_PAGES = 100_000


class SamsaraAPI:
    """Samsara fleet lists over an ``HttpClient`` configured for Samsara."""

    def __init__(self, http: HttpClient, page_size: int = MAX_PAGE_SIZE) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        self.http = http
        self.page_size = page_size

    def vehicles(self) -> list[Row]:
        """Every vehicle (all cursor pages)."""
        return self._all("/fleet/vehicles")

    def drivers(self) -> list[Row]:
        """Every driver (all cursor pages)."""
        return self._all("/fleet/drivers")

    def _all(self, path: str, params: dict[str, Any] | None = None) -> list[Row]:
        query: dict[str, Any] = {**(params or {}), "limit": self.page_size}
        out: list[Row] = []
        seen_cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            body = self.http.request_json("GET", path, params=query)
            data = body.get("data") if isinstance(body, dict) else None
            pagination = body.get("pagination") if isinstance(body, dict) else None
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise FatalError(f"samsara: malformed {path} page (data is not a list of objects)", service=SERVICE)
            if not isinstance(pagination, dict):
                raise FatalError(f"samsara: malformed {path} page (no pagination object)", service=SERVICE)
            out.extend(data)
            if not pagination.get("hasNextPage"):
                return out
            cursor = pagination.get("endCursor")
            if not isinstance(cursor, str) or not cursor:
                raise FatalError(f"samsara: {path} says hasNextPage but gives no endCursor", service=SERVICE)
            if cursor in seen_cursors:
                raise FatalError(f"samsara: {path} returned cursor {cursor!r} twice; refusing to loop", service=SERVICE)
            seen_cursors.add(cursor)
            query = {**query, "after": cursor}
        raise FatalError(f"samsara: {path} has more than {MAX_PAGES} pages; refusing a partial read", service=SERVICE)


def build_samsara(
    settings: Settings,
    stats: RequestStats,
    session: requests.Session | None = None,
    *,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    breaker: Any = None,
) -> SamsaraAPI:
    """Wire a SamsaraAPI from ``config.settings.Settings``."""
    key = settings.samsara_api_key.get_secret_value() if settings.samsara_api_key else ""
    if not key:
        raise ConfigurationError("SAMSARA_API_KEY is required for Samsara")
    rate = settings.samsara_rate_limit_per_second
    if limiter is None:
        limiter = RateLimiter(rate, burst=max(1, int(rate)), clock=clock, sleep=sleep)
    http = HttpClient(
        SERVICE,
        settings.samsara_url,
        session or requests.Session(),
        stats=stats,
        limiter=limiter,
        timeout=DEFAULT_TIMEOUT,
        max_attempts=settings.http_max_attempts,
        max_retry_seconds=settings.http_max_retry_seconds,
        default_headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
        sleep=sleep,
        clock=clock,
        breaker=breaker,
        secrets=[key],
    )
    return SamsaraAPI(http, page_size=min(MAX_PAGE_SIZE, settings.samsara_page_size))
