"""services/http.py: error mapping, retry policy, rate limiter, request counting.

The real requests stack runs against tests.fakes.transport (no mock.patch); two tests
use real loopback sockets to prove the connect-phase / after-send classification
matches what requests actually raises.
"""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime

import pytest
import requests

from services.http import HttpClient, RateLimiter, RequestStats, RetryPolicy, parse_retry_after, scrub
from tests.fakes.transport import (
    FakeClock,
    FakeTransport,
    Reply,
    connect_refused,
    connect_timeout,
    connection_reset,
    read_timeout,
)
from utils.errors import (
    AmbiguousWriteError,
    ConflictError,
    FatalError,
    RateLimitedError,
    RecordError,
    RetriableError,
    SyncError,
)
from utils.metrics import Metrics

pytestmark = pytest.mark.unit

BASE = "https://api.example.test"
TOKEN = "tok-SECRET-1234567890"


def make_client(
    transport: FakeTransport,
    *,
    clock: FakeClock | None = None,
    stats: RequestStats | None = None,
    limiter: RateLimiter | None = None,
    **kwargs,
) -> HttpClient:
    clock = clock or FakeClock()
    options = {
        "max_attempts": 3,
        "max_retry_seconds": 60.0,
        "default_headers": {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        "secrets": [TOKEN],
        "rng": lambda: 0.0,
    }
    options.update(kwargs)
    return HttpClient(
        "svc",
        BASE,
        transport.session(),
        stats=stats or RequestStats(),
        limiter=limiter,
        sleep=clock.sleep,
        clock=clock,
        **options,
    )


# -- Retry-After ------------------------------------------------------------------------
def test_parse_retry_after_seconds_fractions_and_dates():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("0.40235") == pytest.approx(0.40235)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=lambda: now) == pytest.approx(30.0)
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=lambda: now) == 0.0  # in the past
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


def test_429_fractional_retry_after_is_honoured_and_not_an_attempt():
    t = FakeTransport()
    t.script("GET", "/things", *[Reply(429, json={}, headers={"Retry-After": "0.40235"})] * 4)
    t.route("GET", "/things", {"ok": True})
    clock = FakeClock()
    stats = RequestStats()
    client = make_client(t, clock=clock, stats=stats, max_attempts=2)

    assert client.request_json("GET", "/things") == {"ok": True}

    assert clock.sleeps == [pytest.approx(0.40235)] * 4  # four throttles > max_attempts=2
    assert len(t.sent("GET", "/things")) == 5
    assert stats.waits()["svc"] == pytest.approx(4 * 0.40235)


def test_429_http_date_and_missing_header():
    t = FakeTransport()
    t.script("GET", "/x", Reply(429, text="slow down"), Reply(200, json=[]))
    clock = FakeClock()
    client = make_client(t, clock=clock)
    assert client.request_json("GET", "/x") == []
    assert len(clock.sleeps) == 1 and clock.sleeps[0] > 0  # backoff when no Retry-After


def test_429_throttles_have_their_own_cap():
    t = FakeTransport()
    t.route("GET", "/x", Reply(429, json={}, headers={"Retry-After": "1"}))
    client = make_client(t, max_throttles=3)
    with pytest.raises(RateLimitedError) as info:
        client.request("GET", "/x")
    assert info.value.retry_after == 1.0
    assert len(t.requests) == 4


def test_very_long_retry_after_gives_up_instead_of_blocking():
    t = FakeTransport()
    t.route("GET", "/x", Reply(429, json={}, headers={"Retry-After": "3600"}))
    clock = FakeClock()
    client = make_client(t, clock=clock)
    with pytest.raises(RateLimitedError):
        client.request("GET", "/x")
    assert clock.sleeps == [] and len(t.requests) == 1


def test_429_pauses_the_shared_limiter_for_other_threads():
    t = FakeTransport()
    t.script("GET", "/x", Reply(429, json={}, headers={"Retry-After": "5"}))
    t.route("GET", "/x", {"ok": 1})
    clock = FakeClock()
    limiter = RateLimiter(100, burst=10, clock=clock, sleep=clock.sleep)
    client = make_client(t, clock=clock, limiter=limiter)
    start = clock()
    client.request("GET", "/x")
    # another thread of the same service acquiring now is held until the pause ends
    clock.now = start + 1
    waited = limiter.acquire()
    assert clock() >= start + 5 and waited > 0


# -- retries ----------------------------------------------------------------------------
def test_retries_bounded_by_attempts_and_counted():
    t = FakeTransport()
    t.route("GET", "/x", Reply(500, text="<html><body>Internal Server Error</body></html>"))
    metrics = Metrics()
    stats = RequestStats(metrics)
    client = make_client(t, stats=stats, max_attempts=4)
    with pytest.raises(RetriableError) as info:
        client.request("GET", "/x")
    assert not isinstance(info.value, AmbiguousWriteError)
    assert info.value.status == 500
    assert len(t.requests) == 4
    assert stats.counts() == {"svc": {"GET": 4}}
    assert metrics.registry.get_sample_value("external_requests_total", {"service": "svc", "method": "GET", "status": "500"}) == 4


def test_retries_bounded_by_total_time():
    t = FakeTransport()
    t.route("GET", "/x", Reply(503, json={"message": "maintenance"}))
    clock = FakeClock()
    client = make_client(t, clock=clock, max_attempts=100, max_retry_seconds=5.0)
    client.policy.backoff_initial = 2.0
    with pytest.raises(RetriableError):
        client.request("GET", "/x")
    assert sum(clock.sleeps) <= 5.0
    assert clock.sleeps == [2.0, 3.0]  # the second wait is cut to the remaining budget
    assert len(t.requests) == 3


def test_retry_after_on_503_is_used():
    t = FakeTransport()
    t.script("GET", "/x", Reply(503, text="busy", headers={"Retry-After": "2.5"}))
    t.route("GET", "/x", {"ok": 1})
    clock = FakeClock()
    make_client(t, clock=clock).request("GET", "/x")
    assert clock.sleeps == [2.5]


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=4.0, rng=lambda: 1.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == [1.0, 1.5, 2.5, 4.0, 4.0]


def test_stats_count_every_attempt_per_method():
    t = FakeTransport()
    t.script("GET", "/x", connect_timeout(), Reply(502, text="bad gateway"))
    t.route("GET", "/x", {"ok": 1})
    t.route("PUT", "/x/1", {"data": {}})
    stats = RequestStats()
    client = make_client(t, stats=stats)
    client.request("GET", "/x")
    client.request("PUT", "/x/1", json={"a": 1})
    assert stats.counts() == {"svc": {"GET": 3, "PUT": 1}}
    assert stats.statuses()["svc"] == {"connect_timeout": 1, "502": 1, "200": 2}


# -- writes that may have been applied ----------------------------------------------------
@pytest.mark.parametrize("failure", [read_timeout, connection_reset], ids=["read_timeout", "reset"])
def test_post_failure_after_sending_is_ambiguous_and_not_resent(failure):
    t = FakeTransport()
    t.route("POST", "/users", failure())
    client = make_client(t)
    with pytest.raises(AmbiguousWriteError) as info:
        client.request("POST", "/users", json={"emp_id": "1"})
    assert len(t.requests) == 1
    assert "re-check" in str(info.value)


@pytest.mark.parametrize("failure", [connect_refused, connect_timeout], ids=["refused", "connect_timeout"])
def test_post_connect_phase_failure_is_retried(failure):
    t = FakeTransport()
    t.script("POST", "/users", failure())
    t.route("POST", "/users", Reply(201, json={"data": {"id": 7}}))
    client = make_client(t)
    assert client.request_json("POST", "/users", json={"emp_id": "1"}) == {"data": {"id": 7}}
    assert len(t.requests) == 2


def test_idempotent_false_makes_a_put_ambiguous():
    t = FakeTransport()
    t.route("PUT", "/x/1", read_timeout())
    with pytest.raises(AmbiguousWriteError):
        make_client(t).request("PUT", "/x/1", json={}, idempotent=False)
    assert len(t.requests) == 1


def test_get_timeout_is_retried():
    t = FakeTransport()
    t.script("GET", "/x", read_timeout(), connection_reset())
    t.route("GET", "/x", {"ok": 1})
    assert make_client(t).request_json("GET", "/x") == {"ok": 1}
    assert len(t.requests) == 3


@pytest.mark.parametrize("status", [500, 502, 504])
def test_post_5xx_is_ambiguous(status):
    t = FakeTransport()
    t.route("POST", "/users", Reply(status, text="<html>oops</html>"))
    with pytest.raises(AmbiguousWriteError) as info:
        make_client(t).request("POST", "/users", json={})
    assert info.value.status == status
    assert len(t.requests) == 1
    # 500: the app answered, it is done with the request; 502/504: a gateway answered for
    # an upstream that may still be applying it
    assert info.value.settled is (status == 500)


def test_post_timeout_is_an_unsettled_ambiguous_write():
    t = FakeTransport()
    t.script("POST", "/users", read_timeout())
    with pytest.raises(AmbiguousWriteError) as info:
        make_client(t).request("POST", "/users", json={})
    assert info.value.settled is False


def test_post_503_was_not_applied_and_is_retried():
    t = FakeTransport()
    t.script("POST", "/users", Reply(503, text="maintenance"), Reply(429, json={}, headers={"Retry-After": "1"}))
    t.route("POST", "/users", Reply(201, json={"data": {"id": 1}}))
    make_client(t).request("POST", "/users", json={})
    assert len(t.requests) == 3


def test_redirected_post_is_not_followed():
    t = FakeTransport()
    t.route("POST", "/users", Reply(301, text="", headers={"Location": "https://elsewhere.test/users"}))
    with pytest.raises(FatalError, match="redirect"):
        make_client(t).request("POST", "/users", json={})
    assert len(t.requests) == 1


# -- status mapping -----------------------------------------------------------------------
def test_422_laravel_body_becomes_field_errors():
    t = FakeTransport()
    body = {
        "message": "The first name field is required. (and 1 more error)",
        "errors": {"first_name": ["The first name field is required."], "zip_code": ["The zip code is invalid."]},
    }
    t.route("POST", "/users", Reply(422, json=body))
    with pytest.raises(RecordError) as info:
        make_client(t).request("POST", "/users", json={})
    err = info.value
    assert type(err) is RecordError
    assert err.status == 422
    assert err.field_errors == body["errors"]
    assert err.body == body
    assert "first name field is required" in str(err)


def test_422_already_taken_and_409_are_conflicts():
    t = FakeTransport()
    taken = {"message": "The email has already been taken.", "errors": {"email": ["The email has already been taken."]}}
    t.route("POST", "/users", Reply(422, json=taken))
    t.route("PUT", "/sites/1", Reply(409, json={"message": "duplicate external_code"}))
    client = make_client(t)
    with pytest.raises(ConflictError) as info:
        client.request("POST", "/users", json={})
    assert info.value.field_errors == {"email": ["The email has already been taken."]}
    with pytest.raises(ConflictError):
        client.request("PUT", "/sites/1", json={})


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("GET", 400, FatalError),
        ("GET", 404, FatalError),
        ("POST", 400, RecordError),
        ("PATCH", 404, RecordError),
        ("GET", 401, FatalError),
        ("POST", 403, FatalError),
    ],
)
def test_4xx_mapping(method, status, expected):
    t = FakeTransport()
    t.route(method, "/x", Reply(status, json={"message": "nope"}))
    with pytest.raises(expected) as info:
        make_client(t).request(method, "/x", json={} if method != "GET" else None)
    assert type(info.value) is expected
    assert info.value.status == status
    assert len(t.requests) == 1


def test_html_502_on_a_read_is_retried_then_retriable():
    t = FakeTransport()
    html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>"
    t.script("GET", "/x", Reply(502, text=html, headers={"Content-Type": "text/html"}))
    t.route("GET", "/x", {"data": []})
    assert make_client(t).request_json("GET", "/x") == {"data": []}
    t2 = FakeTransport()
    t2.route("GET", "/x", Reply(502, text=html, headers={"Content-Type": "text/html"}))
    with pytest.raises(RetriableError, match="502 Bad Gateway"):
        make_client(t2).request("GET", "/x")


def test_html_200_where_json_expected_is_malformed():
    t = FakeTransport()
    t.route("GET", "/x", Reply(200, text="<html>login page</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(FatalError, match="malformed response"):
        make_client(t).request("GET", "/x")
    assert len(t.requests) == 1


def test_hostile_huge_error_body_is_truncated():
    t = FakeTransport()
    t.route("POST", "/x", Reply(400, text="A" * 500_000))
    with pytest.raises(RecordError) as info:
        make_client(t).request("POST", "/x", json={})
    assert isinstance(info.value.body, str) and len(info.value.body) < 2200
    assert len(str(info.value)) < 1000


def test_huge_422_field_errors_are_bounded():
    t = FakeTransport()
    errors = {f"f{i}": ["x" * 5000] * 20 for i in range(500)}
    t.route("POST", "/x", Reply(422, json={"message": "bad", "errors": errors}))
    with pytest.raises(RecordError) as info:
        make_client(t).request("POST", "/x", json={})
    fe = info.value.field_errors
    assert len(fe) == 50 and all(len(m) <= 5 and all(len(s) <= 300 for s in m) for m in fe.values())
    assert len(str(info.value.body)) < 2200


# -- secrets --------------------------------------------------------------------------------
def _chain(exc: BaseException) -> str:
    out = []
    while exc is not None:
        out.append(f"{type(exc).__name__}: {exc!s} {exc!r}")
        out.append(repr(getattr(exc, "body", None)))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def _echo_headers(status: int):
    def handler(req):
        echoed = {"message": f"bad auth {req.headers['Authorization']}", "errors": {"token": [req.headers["Authorization"]]}}
        return Reply(status, json=echoed)

    return handler


@pytest.mark.parametrize("status", [400, 401, 422, 500, 429])
def test_secrets_never_appear_in_errors(status):
    t = FakeTransport()
    t.route("POST", "/x", _echo_headers(status))
    client = make_client(t, max_throttles=0)
    with pytest.raises(SyncError) as info:  # one of the taxonomy's, whatever the status
        client.request("POST", "/x", json={}, headers={"X-Api-Token": "other-secret-value"})
    text = _chain(info.value)
    assert TOKEN not in text
    assert "Bearer tok" not in text
    if status in (400, 422):
        assert "***" in text


def test_per_request_bearer_token_is_scrubbed_too():
    t = FakeTransport()
    t.route("GET", "/x", _echo_headers(401))
    client = make_client(t, default_headers={})
    with pytest.raises(FatalError) as info:
        client.request("GET", "/x", headers={"Authorization": "Bearer dynamic-token-abcdef"})
    assert "dynamic-token-abcdef" not in _chain(info.value)


def test_scrub_replaces_longest_first():
    assert scrub("a=abcdef b=abcdefgh", ["abcdef", "abcdefgh"]) == "a=*** b=***"
    assert scrub("x", ["", "x"]) == "x"  # too short to scrub safely


# -- breaker ------------------------------------------------------------------------------
class RecordingBreaker:
    def __init__(self, allow: bool = True, state: str = "closed") -> None:
        self.allow = allow
        self.state = state
        self.events: list[str] = []

    def allow_request(self) -> bool:
        return self.allow

    def record_success(self) -> None:
        self.events.append("ok")

    def record_failure(self) -> None:
        self.events.append("fail")


class ProbeBreaker(RecordingBreaker):
    """Half-open with the probe held elsewhere: refuses until the probe's answer lands."""

    def __init__(self, clock: FakeClock, closes_after: float | None) -> None:
        super().__init__(allow=False, state="half_open")
        self.clock, self.closes_after = clock, closes_after

    def allow_request(self) -> bool:
        if self.closes_after is not None and self.clock() >= self.closes_after:
            self.state = "closed"
            return True
        return False


def test_half_open_waits_for_the_probe_then_sends():
    t = FakeTransport()
    t.route("GET", "/x", {"ok": 1})
    clock = FakeClock()
    make_client(t, clock=clock, breaker=ProbeBreaker(clock, closes_after=clock() + 0.3)).request("GET", "/x")
    assert len(t.requests) == 1


class ClosedBeforeWeLookBreaker(RecordingBreaker):
    """The probe (another thread) succeeded between our refused ``allow_request`` and our
    look at the state: the breaker is closed by the time we wait. Seen in CI as a sync
    failing right after recovery while SafetyAmp was healthy (prefetch threads racing)."""

    def __init__(self) -> None:
        super().__init__(allow=False, state="closed")
        self.asked = 0

    def allow_request(self) -> bool:
        self.asked += 1
        return self.asked > 1  # refused once (the probe lease was taken), then closed


def test_a_probe_that_closed_the_breaker_before_we_waited_lets_the_request_go():
    t = FakeTransport()
    t.route("GET", "/x", {"ok": 1})
    make_client(t, clock=FakeClock(), breaker=ClosedBeforeWeLookBreaker()).request("GET", "/x")
    assert len(t.requests) == 1


def test_a_probe_that_failed_refuses_at_once():
    t = FakeTransport()
    clock = FakeClock()
    started = clock()
    with pytest.raises(FatalError, match="circuit breaker is open"):
        make_client(t, clock=clock, breaker=RecordingBreaker(allow=False, state="open")).request("GET", "/x")
    assert t.requests == [] and clock() - started < 1.0


def test_half_open_probe_that_never_answers_refuses_after_the_budget():
    t = FakeTransport()
    clock = FakeClock()
    with pytest.raises(FatalError, match="circuit breaker is open"):
        make_client(t, clock=clock, breaker=ProbeBreaker(clock, closes_after=None)).request("GET", "/x")
    assert t.requests == []


def test_ambiguous_write_is_settled_by_the_caller_not_counted_by_the_breaker():
    t = FakeTransport()
    t.script("POST", "/x", Reply(500, text="boom"))
    breaker = RecordingBreaker()
    with pytest.raises(AmbiguousWriteError):
        make_client(t, breaker=breaker).request("POST", "/x", json={})
    assert breaker.events == []


def test_breaker_counts_requests_that_failed_after_retries_not_attempts():
    t = FakeTransport()
    t.script("GET", "/x", Reply(500, text="x"), Reply(429, json={}, headers={"Retry-After": "0"}))
    t.route("GET", "/x", {"ok": 1})
    breaker = RecordingBreaker()
    make_client(t, breaker=breaker).request("GET", "/x")
    assert breaker.events == ["ok"]  # the 500 was absorbed by a retry; the 429 is not a failure
    t.script("GET", "/down", *[Reply(503, text="down")] * 5)
    with pytest.raises(RetriableError):
        make_client(t, breaker=breaker, max_attempts=5).request("GET", "/down")
    assert breaker.events == ["ok", "fail"]  # one request, one failure


def test_open_breaker_sends_nothing():
    t = FakeTransport()
    with pytest.raises(FatalError, match="circuit breaker is open"):
        make_client(t, breaker=RecordingBreaker(allow=False)).request("GET", "/x")
    assert t.requests == []


# -- single-writer lock: checked before every write attempt ------------------------------
def test_a_lost_lock_stops_writes_before_they_are_sent_but_not_reads(tmp_path):
    from utils.errors import LockLostError
    from utils.locks import FileLock, WriteFence, fenced

    t = FakeTransport()
    t.route("GET", "/things", {"ok": True})
    t.route("POST", "/things", Reply(201, json={"id": 1}))
    lock = FileLock(tmp_path / "sync-jobs.lock")
    client = make_client(t)
    with fenced(WriteFence([lock])):
        assert client.request_json("POST", "/things", json={"a": 1}) == {"id": 1}  # held: sent
        lock.lost.set()
        with pytest.raises(LockLostError, match=r"^lock lost: the sync-jobs lock"):
            client.request("POST", "/things", json={"a": 2})
        assert client.request_json("GET", "/things") == {"ok": True}  # reads are not fenced
    assert [r.json for r in t.sent("POST", "/things")] == [{"a": 1}]


def test_the_lock_is_checked_again_before_each_retry(tmp_path):
    from utils.errors import LockLostError
    from utils.locks import FileLock, WriteFence, fenced

    t = FakeTransport()
    t.script("PUT", "/things/1", Reply(503, json={}))
    t.route("PUT", "/things/1", Reply(200, json={"id": 1}))
    lock = FileLock(tmp_path / "sync-jobs.lock")

    class LosingClock(FakeClock):
        def sleep(self, seconds: float) -> None:  # Redis restarts empty during the backoff
            super().sleep(seconds)
            lock.lost.set()

    client = make_client(t, clock=LosingClock())
    with fenced(WriteFence([lock])), pytest.raises(LockLostError):
        client.request("PUT", "/things/1", json={"a": 1})
    assert len(t.sent("PUT", "/things/1")) == 1  # the retry never went out
    assert client.request_json("PUT", "/things/1", json={"a": 1}) == {"id": 1}  # outside a fence: no check


# -- rate limiter ---------------------------------------------------------------------------
def test_rate_limiter_steady_rate():
    clock = FakeClock(0.0)
    limiter = RateLimiter(2.0, burst=1, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(4)]
    assert waits == [0.0, 0.5, 0.5, 0.5]
    assert clock() == pytest.approx(1.5)


def test_rate_limiter_burst_then_refill():
    clock = FakeClock(0.0)
    limiter = RateLimiter(1.0, burst=3, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    clock.advance(10)  # idle: the bucket refills to the burst, not beyond
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_rate_limiter_per_minute():
    clock = FakeClock(0.0)
    limiter = RateLimiter.per_minute(60, burst=1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(1.0)


def test_rate_limiter_pause_until_then_steady():
    clock = FakeClock(0.0)
    limiter = RateLimiter(10.0, burst=5, clock=clock, sleep=clock.sleep)
    limiter.pause_until(3.0)
    assert limiter.acquire() == pytest.approx(3.0)
    assert limiter.acquire() == pytest.approx(0.1)  # no burst right after a throttle


def test_rate_limiter_threads_get_distinct_slots():
    # A frozen clock and a no-op sleep: each acquire reserves the next free slot, so the
    # waits of 50 concurrent threads must be exactly 0, 0.5, ..., 24.5 with no duplicate.
    frozen = FakeClock(0.0)
    limiter = RateLimiter(2.0, burst=1, clock=frozen, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(50)

    def worker():
        barrier.wait()
        w = limiter.acquire()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(waits) == pytest.approx([i * 0.5 for i in range(50)])


def test_limiter_wait_is_counted_as_rate_limit_wait():
    t = FakeTransport()
    t.route("GET", "/x", {"ok": 1})
    clock = FakeClock(0.0)
    metrics = Metrics()
    stats = RequestStats(metrics)
    client = make_client(t, clock=clock, stats=stats, limiter=RateLimiter(4.0, clock=clock, sleep=clock.sleep))
    for _ in range(3):
        client.request("GET", "/x")
    assert stats.waits()["svc"] == pytest.approx(0.5)
    assert metrics.registry.get_sample_value("rate_limit_wait_seconds_total", {"service": "svc"}) == pytest.approx(0.5)


# -- real sockets on loopback: the classification matches what requests raises ----------
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _plain_client(base: str, clock: FakeClock) -> HttpClient:
    session = requests.Session()
    session.trust_env = False
    return HttpClient("loop", base, session, stats=RequestStats(), timeout=2.0, max_attempts=2, sleep=clock.sleep, clock=clock)


def test_real_connection_refused_is_connect_phase_and_retried():
    clock = FakeClock()
    client = _plain_client(f"http://127.0.0.1:{_closed_port()}", clock)
    with pytest.raises(RetriableError) as info:
        client.request("POST", "/users", json={})
    assert not isinstance(info.value, AmbiguousWriteError)
    assert client.stats.counts() == {"loop": {"POST": 2}}
    assert "nothing sent" in str(info.value)


def test_real_reset_after_sending_is_ambiguous():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve():
        conn, _ = server.accept()
        received.append(conn.recv(65536))  # read the request, then hang up without answering
        conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        client = _plain_client(f"http://127.0.0.1:{port}", FakeClock())
        with pytest.raises(AmbiguousWriteError):
            client.request("POST", "/users", json={"emp_id": "1"})
        th.join(5)
        assert received and received[0].startswith(b"POST /users")
        assert client.stats.counts() == {"loop": {"POST": 1}}
    finally:
        server.close()


# -- what the console's overview and one-record sync read ---------------------------------
def test_stats_keep_the_last_service_error_and_latency_and_a_request_log_sees_only_its_own() -> None:
    from utils.request_log import RequestLog, recording

    t = FakeTransport()
    t.route("GET", "/ok", {"ok": True})
    t.route("POST", "/invalid", Reply(422, json={"errors": {"email": ["taken"]}}))
    t.route("POST", "/broken", Reply(503, json={"error": "down"}))
    stats = RequestStats()
    client = make_client(t, stats=stats, max_attempts=2)

    client.request_json("GET", "/ok", params={"api_key": TOKEN})
    assert stats.last_errors() == {}
    with pytest.raises(RecordError):
        client.request_json("POST", "/invalid", json={})
    assert stats.last_errors() == {}, "a record's 422 says nothing about the service"

    log = RequestLog()
    with recording(log):
        with pytest.raises(RetriableError):
            client.request_json("POST", "/broken", json={"password": TOKEN}, idempotent=True)
    client.request_json("GET", "/ok")  # outside the recording
    error = stats.last_errors()["svc"]
    assert error["status"] == "503" and error["method"] == "POST" and "message" in error
    assert TOKEN not in str(error)
    assert [(e["method"], e["path"], e["status"]) for e in log.entries()] == [("POST", "/broken", 503)] * 2
    assert log.total == 2 and log.writes() == log.entries()
    latency = stats.latency()["svc"]
    assert latency["count"] == 5 and latency["p95_ms"] >= latency["mean_ms"] >= 0
