"""Shared HTTP machinery for every REST adapter (SafetyAmp, Samsara, Graph; later
OneRoster and SCIM): request counting, a thread-safe rate limiter, one retry policy and
the one place where HTTP outcomes become ``utils.errors`` classes.

Outcome -> error (``HttpClient._map_outcome``, the only mapping; always ``raise ... from``)::

    429                                  RateLimitedError(retry_after from Retry-After:
                                         seconds, fractional allowed, or an HTTP-date)
    408, 503                             RetriableError (the server says it did not act)
    500, 502, 504, other 5xx             RetriableError; AmbiguousWriteError on a
                                         non-idempotent write (see below)
    timeout / dropped connection         RetriableError; AmbiguousWriteError on a
      after the request was sent         non-idempotent write
    connect-phase failure (refused,      RetriableError, even for POST: nothing was sent
      DNS, connect timeout)
    401, 403                             FatalError
    422                                  RecordError with Laravel ``errors`` as field_errors
                                         (ConflictError when a field "has already been taken")
    409                                  ConflictError
    other 4xx (400, 404, ...)            RecordError for writes, FatalError for reads
    3xx not followed                     FatalError (a redirected POST would become a GET)
    2xx whose body is not JSON           FatalError ("malformed response")
      where JSON is expected
    TLS certificate verification failed  FatalError (retrying cannot fix a trust problem)

Retry policy (``RetryPolicy``, tenacity): only RetriableError that is not an
AmbiguousWriteError; wait = Retry-After when given, else exponential backoff with
jitter; stop after ``max_attempts`` failures or ``max_retry_seconds`` spent. 429 answers
count neither as attempts nor against the time budget (STYLE.md item 6): they have their
own generous cap (``max_throttles``), and a single Retry-After longer than
``max_retry_after`` gives up at once instead of blocking a worker for an hour.

A write (any method but GET, HEAD, OPTIONS) goes out only while the runner's
single-writer lock is still its own: ``utils.locks.check_write`` confirms it in Redis
before every attempt and raises LockLostError (a FatalError) otherwise.

Error messages and bodies never carry credentials: every known secret value (and the
value of any Authorization header sent) and every credential shape (URL userinfo,
secret-named query parameters: ``utils.scrub``, the one scrub) is replaced by ``***``;
kept error bodies are truncated (hostile servers can answer with megabytes).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json as jsonlib
import os
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception

from utils.errors import (
    AmbiguousWriteError,
    ConflictError,
    FatalError,
    RateLimitedError,
    RecordError,
    RetriableError,
    SyncError,
)
from utils.locks import check_write
from utils.logger import current_run_id
from utils.metrics import Metrics
from utils.request_log import note_request
from utils.scrub import scrub

T = TypeVar("T")

MAX_BODY_CHARS = 2048
"""Error bodies kept on RecordError (and shown in messages) are cut to this size."""

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBE_WAIT_SECONDS = 10.0
"""How long a request waits for a half-open breaker's probe (held by another caller)."""

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
_MAX_FIELD_ERRORS = 50
_MAX_MESSAGES_PER_FIELD = 5
_MAX_MESSAGE_CHARS = 300
_PARSED = "_sync_parsed_json"  # the body HttpClient already parsed, kept on the Response
_UNSET = object()


# --------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------
class RequestStats:
    """Thread-safe counts of HTTP requests actually sent, per service and method.

    Every attempt counts (retries included), because that is what the outside system
    sees and what its quota charges. Optionally forwards to ``Metrics`` so the
    Prometheus counters and the run summary agree.
    """

    LATENCY_WINDOW = 200
    """Latest requests per service whose latency ``latency`` summarises."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._statuses: dict[str, dict[str, int]] = {}
        self._waits: dict[str, float] = {}
        self._latency: dict[str, deque[float]] = {}
        self._last_error: dict[str, dict[str, Any]] = {}

    def record(self, service: str, method: str, status_or_error: int | str, seconds: float) -> None:
        """One request sent (``status_or_error``: HTTP status or a short error label)."""
        method = method.upper()
        with self._lock:
            per = self._counts.setdefault(service, {})
            per[method] = per.get(method, 0) + 1
            st = self._statuses.setdefault(service, {})
            st[str(status_or_error)] = st.get(str(status_or_error), 0) + 1
            self._latency.setdefault(service, deque(maxlen=self.LATENCY_WINDOW)).append(seconds)
            # What says something about the service, not about one record (a 404 or a
            # 422 is a record's business: the change log and the tracker have those).
            if not isinstance(status_or_error, int) or status_or_error >= 500 or status_or_error in (401, 403, 429):
                self._last_error[service] = {
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "method": method,
                    "status": str(status_or_error),
                }
        if self._metrics is not None:
            self._metrics.observe_request(service, method, status_or_error, seconds)

    def add_wait(self, service: str, seconds: float) -> None:
        """Seconds spent waiting for a rate limit (own limiter or a Retry-After)."""
        if seconds <= 0:
            return
        with self._lock:
            self._waits[service] = self._waits.get(service, 0.0) + seconds
        if self._metrics is not None:
            self._metrics.add_rate_limit_wait(service, seconds)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"safetyamp": {"GET": 3, "POST": 1}, ...}`` (a copy)."""
        with self._lock:
            return {svc: dict(methods) for svc, methods in self._counts.items()}

    def statuses(self) -> dict[str, dict[str, int]]:
        """``{"safetyamp": {"200": 3, "429": 1, "read_timeout": 1}}`` (a copy)."""
        with self._lock:
            return {svc: dict(st) for svc, st in self._statuses.items()}

    def waits(self) -> dict[str, float]:
        with self._lock:
            return dict(self._waits)

    def note_error(self, service: str, message: str) -> None:
        """The message of a request that failed for good (after its retries)."""
        with self._lock:
            entry = self._last_error.setdefault(service, {"at": datetime.now(UTC).isoformat(timespec="seconds")})
            entry["message"] = scrub(message)[:300]

    def last_errors(self) -> dict[str, dict[str, Any]]:
        """Per service, the last request that was not answered, or answered 5xx, 401,
        403 or 429 (``at``, ``method``, ``status``), and the message of the last request
        that failed for good, after its retries (a copy; scrubbed)."""
        with self._lock:
            return {svc: dict(e) for svc, e in self._last_error.items()}

    def latency(self) -> dict[str, dict[str, float]]:
        """Per service, over its latest LATENCY_WINDOW requests: ``count``, ``mean_ms``, ``p95_ms``."""
        with self._lock:
            windows = {svc: sorted(w) for svc, w in self._latency.items() if w}
        out = {}
        for svc, w in windows.items():
            p95 = w[min(len(w) - 1, round(0.95 * (len(w) - 1)))]
            out[svc] = {"count": len(w), "mean_ms": round(1000 * sum(w) / len(w), 1), "p95_ms": round(1000 * p95, 1)}
        return out


# --------------------------------------------------------------------------------------
# rate limiting
# --------------------------------------------------------------------------------------
class RateLimiter:
    """Thread-safe token bucket: ``rate`` requests per second, bursts of ``burst``.

    Hand-written on purpose (README "Dependencies"): the ``ratelimit`` package keeps its window
    per process and can still raise RateLimitException when several threads call it
    (tomasbasham/ratelimit#29), and has not been released since 2018; pyrate-limiter
    has acquire races and leaker-thread problems under load (#185, #191, #240, #300).
    What we need is small: a lock, a clock and a sleep, all injectable so tests never
    sleep for real.

    Implemented as GCRA (the virtual-scheduling form of a token bucket): each caller
    reserves the next conforming slot under the lock and sleeps outside it, so waiting
    threads queue fairly instead of spinning. ``pause_until`` lets one thread's 429
    (Retry-After) hold back every thread of the same service.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._interval = 1.0 / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: float | None = None  # theoretical arrival time of the next request
        self._paused_until = float("-inf")

    @classmethod
    def per_minute(cls, per_minute: float, burst: int | None = None, **kwargs: Any) -> RateLimiter:
        """A limiter for an "N per minute" quota; the default burst is 5 s worth."""
        rate = per_minute / 60.0
        return cls(rate, burst if burst is not None else max(1, int(rate * 5)), **kwargs)

    def _reserve(self) -> tuple[float, float]:
        """Reserve a slot; return (seconds to wait before using it, pause seen)."""
        with self._lock:
            now = self._clock()
            tat = now if self._tat is None else max(self._tat, now)
            start = max(now, tat - self._tolerance, self._paused_until)
            self._tat = max(tat, start) + self._interval
            return start - now, self._paused_until

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds waited."""
        waited = 0.0
        while True:
            delay, pause_seen = self._reserve()
            if delay > 0:
                self._sleep(delay)
                waited += delay
            # A 429 on another thread may have paused the service while we slept on an
            # earlier reservation: honour the new pause rather than send into it.
            with self._lock:
                new_pause = self._paused_until > pause_seen and self._paused_until > self._clock()
            if not new_pause:
                return waited

    def pause_until(self, t: float) -> None:
        """No request of this service before clock time ``t`` (e.g. a Retry-After)."""
        with self._lock:
            if t > self._paused_until:
                self._paused_until = t
                # After the pause, allow one request, then the steady rate: a full burst
                # right after a 429 would likely earn the next 429.
                floor = t + self._tolerance
                self._tat = floor if self._tat is None else max(self._tat, floor)

    def pause_for(self, seconds: float) -> None:
        """``pause_until(now + seconds)`` on the limiter's own clock."""
        self.pause_until(self._clock() + max(0.0, seconds))


# --------------------------------------------------------------------------------------
# retry policy
# --------------------------------------------------------------------------------------
class _Budget:
    """Per-call retry accounting (one instance per ``RetryPolicy.call``)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.failures = 0
        self.throttles = 0
        self.throttle_wait = 0.0
        self.seen_attempt = 0
        self.next_wait_is_throttle = False


_UNSAFE_UA = re.compile(r"[^A-Za-z0-9_.:-]")


def user_agent(product: str | None = None) -> str:
    """``<product> (instance <pod>-<pid>; run <run id>)``, ``product`` being the
    client's own (SafetyAmp asks for a descriptive one: SAFETYAMP_USER_AGENT) or
    ``safetyamp-sync``: which replica and which run sent a request, for the target's own
    logs (and the sandbox's proof that no tenant ever runs on two replicas at once).
    Nothing secret: a host name, a process id and the run id that names the output files."""
    return f"{product or 'safetyamp-sync'} (instance {_instance_host()}-{os.getpid()}; run {current_run_id() or '-'})"


@functools.cache
def _instance_host() -> str:
    """The pod's name (or the host's), once per process: it is on every request."""
    return _UNSAFE_UA.sub("_", os.environ.get("POD_NAME") or socket.gethostname() or "?")


class SharedLimiters:
    """One rate budget per target account in a process that serves many tenants:
    tenants configured with the same service, URL and token share one limiter (the
    target counts requests per token, not per tenant). Keyed by a hash, never the token."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, RateLimiter] = {}

    def get(self, service: str, url: str, secret: str, make: Callable[[], RateLimiter]) -> RateLimiter:
        key = hashlib.sha256(f"{service}\0{url}\0{secret}".encode()).hexdigest()
        with self._lock:
            if key not in self._by_key:
                self._by_key[key] = make()
            return self._by_key[key]


def _retryable(exc: BaseException) -> bool:
    # AmbiguousWriteError is a RetriableError in the taxonomy (the *sync* may re-check
    # and retry), but the HTTP layer must never resend it blindly.
    return isinstance(exc, RetriableError) and not isinstance(exc, AmbiguousWriteError)


class RetryPolicy:
    """The one retry policy: tenacity, retriable errors only, Retry-After first.

    ``sleep``, ``clock`` and ``rng`` are injectable: tests pass a recording sleep and a
    fake clock instead of waiting. ``on_throttle_wait(seconds)`` is told about every
    wait caused by a 429 (it feeds ``rate_limit_wait_seconds_total``).
    """

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        max_retry_seconds: float = 120.0,
        max_throttles: int = 20,
        max_retry_after: float = 300.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        on_throttle_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.max_attempts = max(1, max_attempts)
        self.max_retry_seconds = max_retry_seconds
        self.max_throttles = max_throttles
        self.max_retry_after = max_retry_after
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._on_throttle_wait = on_throttle_wait

    def backoff(self, failures: int) -> float:
        """Exponential backoff with jitter after ``failures`` failed attempts (>= 1)."""
        base = min(self.backoff_max, self.backoff_initial * 2.0 ** max(0, failures - 1))
        return min(self.backoff_max, base + self._rng() * self.backoff_initial)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` until it returns, raises a non-retriable error or the budget ends;
        the last error is re-raised unchanged."""
        budget = _Budget(self._clock())

        def account(rs: RetryCallState) -> None:
            if rs.attempt_number == budget.seen_attempt:
                return
            budget.seen_attempt = rs.attempt_number
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, RateLimitedError):
                budget.throttles += 1
            else:
                budget.failures += 1

        def elapsed() -> float:
            return self._clock() - budget.start - budget.throttle_wait

        def wait(rs: RetryCallState) -> float:
            account(rs)
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, RateLimitedError):
                budget.next_wait_is_throttle = True
                if exc.retry_after is not None:
                    return max(0.0, exc.retry_after)
                return self.backoff(budget.throttles)
            budget.next_wait_is_throttle = False
            retry_after = getattr(exc, "retry_after", None)
            delay = retry_after if retry_after is not None else self.backoff(budget.failures)
            return max(0.0, min(delay, self.max_retry_seconds - elapsed()))

        def stop(rs: RetryCallState) -> bool:
            account(rs)
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, RateLimitedError):
                too_long = exc.retry_after is not None and exc.retry_after > self.max_retry_after
                return budget.throttles > self.max_throttles or too_long
            return budget.failures >= self.max_attempts or elapsed() >= self.max_retry_seconds

        def do_sleep(seconds: float) -> None:
            if seconds <= 0:
                return
            if budget.next_wait_is_throttle:
                budget.throttle_wait += seconds
                if self._on_throttle_wait is not None:
                    self._on_throttle_wait(seconds)
            self._sleep(seconds)

        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=wait,
            stop=stop,
            sleep=do_sleep,
            reraise=True,
        )
        return retrying(fn)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (Samsara sends fractions
    such as ``0.40235``) or an HTTP-date. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now()).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


def _json_int(digits: str) -> int | str:
    # Python refuses to convert more than 4 300 digits (CVE-2020-10735): such a number
    # stays text, so the one record holding it is refused by its sync, not the page.
    return int(digits) if len(digits) <= 4300 else digits


def parse_json(resp: requests.Response) -> Any:
    """A response's JSON body (ValueError when it is not JSON); a number too long for
    Python's int is kept as its digits instead of failing the whole body."""
    return resp.json(parse_int=_json_int)


def truncate(text: str, limit: int = MAX_BODY_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"...[truncated {len(text) - limit} chars]"


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Credential values carried in headers (Authorization, API keys)."""
    out: list[str] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in ("authorization", "proxy-authorization") or "api-key" in lname or "token" in lname:
            out.append(str(value))
            parts = str(value).split(None, 1)
            if len(parts) == 2:
                out.append(parts[1])
    return out


def _before_send(exc: requests.RequestException) -> bool:
    """True when the failure happened before any byte of the request left: safe to
    resend even a POST. requests wraps urllib3's MaxRetryError(reason=NewConnectionError
    / NameResolutionError / ConnectTimeoutError) for these; a reset or timeout after the
    connection was up arrives as ProtocolError / ReadTimeout instead."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return True  # the TLS handshake precedes the request
    if isinstance(exc, requests.exceptions.ConnectionError):
        from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

        for arg in exc.args:
            reason = getattr(arg, "reason", None) if isinstance(arg, MaxRetryError) else arg
            if isinstance(reason, NewConnectionError | ConnectTimeoutError):
                return True
            if isinstance(reason, ConnectionRefusedError):
                return True
    return False


def _error_label(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.exceptions.Timeout):
        return "read_timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls_error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connect_error" if _before_send(exc) else "connection_error"
    return "error"


def _field_errors(body: Any) -> dict[str, list[str]]:
    """Laravel 422 ``{"message": ..., "errors": {field: [msgs]}}`` -> field_errors, bounded."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), dict):
        return {}
    out: dict[str, list[str]] = {}
    for field, msgs in list(body["errors"].items())[:_MAX_FIELD_ERRORS]:
        items = msgs if isinstance(msgs, list) else [msgs]
        out[str(field)[:_MAX_MESSAGE_CHARS]] = [str(m)[:_MAX_MESSAGE_CHARS] for m in items[:_MAX_MESSAGES_PER_FIELD]]
    return out


def _exception_error(exc: requests.RequestException, where: str, svc: str, idempotent: bool, secrets: list[str]) -> SyncError:
    """The error for an attempt that raised instead of answering."""
    detail = scrub(f"{type(exc).__name__}: {exc}", secrets)[:_MAX_MESSAGE_CHARS]
    if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return FatalError(f"{where}: TLS certificate not trusted ({detail})", service=svc)
    if _before_send(exc):
        return RetriableError(f"{where}: could not connect, nothing sent ({detail})", service=svc)
    transient = (
        requests.exceptions.Timeout,
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
    )
    if isinstance(exc, transient):
        if not idempotent:
            return AmbiguousWriteError(
                f"{where}: failed after the request was sent, it may have been applied; "
                f"re-check by key before resending ({detail})",
                service=svc,
            )
        return RetriableError(f"{where}: {detail}", service=svc)
    return FatalError(f"{where}: request failed ({detail})", service=svc)


def _parse_success(
    resp: requests.Response, where: str, svc: str, is_read: bool, expect_json: bool, secrets: list[str]
) -> SyncError | None:
    """A 2xx answer: parse the JSON body once (kept on the response); None, or the
    error when a JSON body was expected and is malformed."""
    status = resp.status_code
    if expect_json and resp.content:
        try:
            # Parsed once, here: request_json returns this value instead of parsing
            # the body again (a 1000-record page takes longer to parse than to fetch).
            setattr(resp, _PARSED, parse_json(resp))
        except ValueError:
            snippet = truncate(" ".join(scrub(resp.text or "", secrets).split()), 200)
            applied = "" if is_read else "; the write may have been applied"
            return FatalError(
                f"{where}: malformed response (HTTP {status}, not JSON{applied}): {snippet}", service=svc, status=status
            )
    return None


def _unavailable_error(
    resp: requests.Response, where: str, svc: str, idempotent: bool, snippet: str, secrets: list[str]
) -> SyncError | None:
    """The error for a non-2xx answer that says nothing about the request's content
    (throttled, redirected, server-side failure, credentials refused); None for the rest."""
    status = resp.status_code
    if status == 429:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return RateLimitedError(
            f"{where}: HTTP 429 throttled (Retry-After {retry_after})",
            service=svc,
            status=status,
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        return FatalError(
            f"{where}: unexpected redirect HTTP {status} to {scrub(resp.headers.get('Location', '?'), secrets)}; "
            "check the base URL",
            service=svc,
            status=status,
        )
    if status >= 500 or status == 408:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        # On a non-idempotent write, only 503 (and 408/429) are an explicit "I did not
        # act": a load balancer or maintenance page answers 503 before the app runs.
        # 500 means the app failed somewhere in the handler, possibly after its
        # commit; 502/504 mean a gateway lost the upstream answer while the upstream
        # may still be finishing the create. Those must be re-checked by key.
        if not idempotent and status not in (408, 503):
            return AmbiguousWriteError(
                f"{where}: HTTP {status}, the write may have been applied; re-check by key: {snippet}",
                service=svc,
                status=status,
                settled=status not in (502, 504),  # a gateway's answer: the upstream may still be working
            )
        return RetriableError(f"{where}: HTTP {status}: {snippet}", service=svc, status=status, retry_after=retry_after)
    if status in (401, 403):
        return FatalError(
            f"{where}: HTTP {status} (credentials refused or missing permission): {snippet}", service=svc, status=status
        )
    return None


class Breaker(Protocol):
    """What HttpClient needs from a circuit breaker (utils/circuit_breaker.py).

    429 answers report neither success nor failure: throttling must not trip it."""

    def allow_request(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...

    @property
    def state(self) -> str:
        """closed, half_open or open."""
        ...


# --------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------
class HttpClient:
    """One outside service's HTTP client: base URL, default headers, rate limiter,
    breaker, retries, request counting and error mapping.

    ``session`` is any ``requests.Session``: production passes a plain one, tests mount
    a fake transport on it. ``secrets`` are scrubbed from every error we raise.
    """

    def __init__(
        self,
        service: str,
        base_url: str,
        session: requests.Session,
        *,
        stats: RequestStats,
        limiter: RateLimiter | None = None,
        timeout: float | tuple[float, float] = 30.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 120.0,
        max_throttles: int = 20,
        default_headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        breaker: Breaker | None = None,
        secrets: Iterable[str] = (),
        rng: Callable[[], float] = random.random,
        max_body_chars: int = MAX_BODY_CHARS,
        verify: bool | str | None = None,
    ) -> None:
        self.service = service
        # Passed on every request, not set on the session: with trust_env, requests lets
        # REQUESTS_CA_BUNDLE override ``session.verify`` (psf/requests#3829), which would
        # silently drop a private CA bundle (the sandbox's Graph) in most containers.
        self.verify = verify
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.stats = stats
        self.limiter = limiter
        self.timeout = timeout
        self.default_headers = dict(default_headers or {})
        self.breaker = breaker
        self.max_body_chars = max_body_chars
        self._clock = clock
        self._sleep = sleep
        self._secrets = [s for s in secrets if s] + _header_secrets(self.default_headers)
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            max_retry_seconds=max_retry_seconds,
            max_throttles=max_throttles,
            sleep=sleep,
            clock=clock,
            rng=rng,
            on_throttle_wait=lambda s: self.stats.add_wait(self.service, s),
        )

    # -- public --------------------------------------------------------------------
    def url_for(self, path: str) -> str:
        """Absolute URLs (e.g. an @odata.nextLink) pass through; paths join base_url."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        expect_json: bool = True,
    ) -> requests.Response:
        """Send with retries; return the successful response or raise a SyncError.

        ``idempotent`` defaults to False for POST and True otherwise; pass False for a
        write that must not be repeated blindly."""
        method = method.upper()
        url = self.url_for(path)
        idem = (method in _IDEMPOTENT_METHODS) if idempotent is None else idempotent
        merged = {**self.default_headers, **(headers or {})}
        merged["User-Agent"] = user_agent(merged.get("User-Agent"))
        secrets = self._secrets + _header_secrets(headers or {})

        def attempt() -> requests.Response:
            return self._attempt(method, url, params, json, merged, idem, expect_json, secrets)

        try:
            return self.policy.call(attempt)
        except SyncError as failed:
            if not isinstance(failed, RecordError):
                self.stats.note_error(self.service, failed.message)
            self._breaker_after(failed)
            raise

    def _breaker_after(self, final: SyncError) -> None:
        if isinstance(final, RetriableError):
            # The breaker counts requests that failed after their retries, not attempts:
            # a 20 % error rate that retries absorb is not an outage, five requests in a
            # row that no retry could save is. An ambiguous write is not counted: the
            # caller settles it with a read by key, and that read's outcome is the
            # evidence of whether the service is up.
            if self.breaker is not None and not isinstance(final, (RateLimitedError, AmbiguousWriteError)):
                self.breaker.record_failure()

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and return the parsed JSON body (None for an empty body)."""
        resp = self.request(method, path, **kwargs)
        if not resp.content:
            return None
        parsed = getattr(resp, _PARSED, _UNSET)
        return parse_json(resp) if parsed is _UNSET else parsed

    # -- one attempt -------------------------------------------------------------
    def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: dict[str, str],
        idempotent: bool,
        expect_json: bool,
        secrets: list[str],
    ) -> requests.Response:
        if self.breaker is not None and not self.breaker.allow_request() and not self._wait_for_probe():
            raise FatalError(f"{self.service}: circuit breaker is open; request not sent", service=self.service)
        if self.limiter is not None:
            self.stats.add_wait(self.service, self.limiter.acquire())
        if method not in _READ_METHODS:
            # The writer's single-writer lock, confirmed in Redis as late as possible:
            # after the rate limiter's wait, before this attempt (utils/locks.py).
            check_write()
        started = self._clock()
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                json=json,
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,  # None = the session's setting
                # requests turns a redirected POST into a GET: never follow on writes.
                allow_redirects=method in _READ_METHODS,
            )
        except requests.RequestException as exc:
            self.stats.record(self.service, method, _error_label(exc), self._clock() - started)
            note_request(self.service, method, url, _error_label(exc), self._clock() - started)
            err = self._map_outcome(method, url, idempotent, exc=exc, secrets=secrets)
            assert err is not None  # an exception is never a success
            self._feed_breaker(err)
            raise err from exc
        self.stats.record(self.service, method, resp.status_code, self._clock() - started)
        note_request(self.service, method, url, resp.status_code, self._clock() - started)
        error = self._map_outcome(method, url, idempotent, resp=resp, expect_json=expect_json, secrets=secrets)
        self._feed_breaker(error)
        if error is None:
            return resp
        if isinstance(error, RateLimitedError) and error.retry_after and self.limiter is not None:
            self.limiter.pause_for(error.retry_after)
        raise error from requests.HTTPError(f"HTTP {resp.status_code} for {method} {urlsplit(url).path}")

    def _wait_for_probe(self, budget: float = PROBE_WAIT_SECONDS) -> bool:
        """Half-open: another thread (or replica) holds the one probe. Its answer comes
        within one request's time, so wait for it rather than fail a whole sync because
        a sibling thread happened to ask first."""
        assert self.breaker is not None
        deadline = self._clock() + budget
        while True:
            # Look again even when it is no longer half-open: the probe may have closed
            # the breaker between our refused ask and now (an open one: the probe failed).
            state = self.breaker.state
            if state == "open":
                return False
            if state == "closed" and self.breaker.allow_request():
                return True
            if self._clock() >= deadline:
                return False
            self._sleep(0.05)
            if self.breaker.allow_request():
                return True

    def _feed_breaker(self, error: SyncError | None) -> None:
        """Successes (and sensible 4xx answers: the service is up) per attempt; failures
        are reported once per request by ``request`` when its retries are exhausted."""
        if self.breaker is None or isinstance(error, RetriableError):
            return
        self.breaker.record_success()

    # -- the one mapping ---------------------------------------------------------
    def _map_outcome(
        self,
        method: str,
        url: str,
        idempotent: bool,
        *,
        resp: requests.Response | None = None,
        exc: requests.RequestException | None = None,
        expect_json: bool = True,
        secrets: list[str] | None = None,
    ) -> SyncError | None:
        """Translate one attempt's outcome into the taxonomy (None = success)."""
        svc = self.service
        secrets = secrets if secrets is not None else self._secrets
        where = f"{svc} {method} {urlsplit(url).path}"
        is_read = method in _READ_METHODS
        if exc is not None:
            return _exception_error(exc, where, svc, idempotent, secrets)
        assert resp is not None
        if 200 <= resp.status_code < 300:
            return _parse_success(resp, where, svc, is_read, expect_json, secrets)
        text = scrub(resp.text or "", secrets)
        snippet = truncate(" ".join(text.split()), 200)
        error = _unavailable_error(resp, where, svc, idempotent, snippet, secrets)
        if error is not None:
            return error
        return self._rejection_error(resp.status_code, text, snippet, where, is_read)

    def _rejection_error(self, status: int, text: str, snippet: str, where: str, is_read: bool) -> SyncError:
        """A 4xx the service answered deliberately: the request (or record) is wrong.
        ``text`` is the scrubbed body, ``snippet`` its one-line truncation."""
        svc = self.service
        body = self._kept_body(text)
        try:
            full = body if not isinstance(body, str) else jsonlib.loads(text)
        except ValueError:
            full = None
        message: str = snippet
        if isinstance(full, dict) and isinstance(full.get("message"), str):
            message = truncate(full["message"], _MAX_MESSAGE_CHARS)
        if status in (409, 422):
            fields = _field_errors(full)
            taken = any("already been taken" in m or "already exists" in m for ms in fields.values() for m in ms)
            cls = ConflictError if status == 409 or taken else RecordError
            return cls(f"{where}: HTTP {status}: {message}", service=svc, status=status, field_errors=fields, body=body)
        if is_read:
            return FatalError(f"{where}: HTTP {status}: {message}", service=svc, status=status)
        return RecordError(f"{where}: HTTP {status}: {message}", service=svc, status=status, body=body)

    def _kept_body(self, scrubbed_text: str) -> Any:
        """Parsed JSON when small enough, else the truncated text."""
        if len(scrubbed_text) <= self.max_body_chars:
            try:
                return jsonlib.loads(scrubbed_text)
            except ValueError:
                return scrubbed_text
        return truncate(scrubbed_text, self.max_body_chars)


class CountingHttpClient:
    """A ``requests.Session`` stand-in for libraries that do their own HTTP (MSAL): it
    counts every request in RequestStats under ``service`` and applies a default
    timeout, so token calls show up in the run summary and metrics too."""

    def __init__(
        self,
        session: requests.Session,
        service: str,
        stats: RequestStats,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        verify: bool | str | None = None,
    ) -> None:
        self._verify = verify
        self._session = session
        self._service = service
        self._stats = stats
        self._timeout = timeout
        self._clock = clock

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        headers = dict(kwargs.get("headers") or {})
        headers["User-Agent"] = user_agent(headers.get("User-Agent"))
        kwargs["headers"] = headers
        if self._verify is not None:
            kwargs.setdefault("verify", self._verify)
        started = self._clock()
        try:
            resp = self._session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            self._stats.record(self._service, method, _error_label(exc), self._clock() - started)
            note_request(self._service, method, url, _error_label(exc), self._clock() - started)
            raise
        self._stats.record(self._service, method, resp.status_code, self._clock() - started)
        note_request(self._service, method, url, resp.status_code, self._clock() - started)
        return resp

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, **kwargs)

    def close(self) -> None:
        self._session.close()
