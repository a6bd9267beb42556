"""utils.circuit_breaker against real Redis (db 15), and the same behaviour in process.

Redis: redis://127.0.0.1:6379/15 (``TEST_REDIS_URL`` overrides it), a unique key prefix
per test, removed afterwards. If Redis is unreachable the suite fails in CI (CI=true);
elsewhere it falls back to fakeredis, and the tests that need Redis's Lua are skipped
when fakeredis has no Lua engine (``fakeredis[lua]``). Time is an injected clock: the
recovery window is walked without sleeping. Only the Redis restart test waits for a
real process.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import load_settings
from services.http import HttpClient, RequestStats
from tests.fakes.transport import FakeClock, FakeTransport, Reply
from tests.support.redis_server import RedisProcess, connect, free_port, key_prefix, shared_server
from utils.circuit_breaker import SERVICES, CircuitBreaker, build_breakers
from utils.errors import FatalError
from utils.metrics import Metrics
from utils.redis_client import make_redis

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    """("real", url) or ("fake", FakeServer)."""
    yield from shared_server()


def new_client(server: tuple[str, Any]) -> redis.Redis:
    return connect(server, decode=True, needs_lua=True)


@pytest.fixture
def redis_client(redis_server: tuple[str, Any]) -> Iterator[redis.Redis]:
    client = new_client(redis_server)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from key_prefix(redis_client, "breaker")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


Factory = Callable[..., CircuitBreaker]


@pytest.fixture(params=["redis", "local"])
def make_breaker(request: pytest.FixtureRequest, clock: Clock, metrics: Metrics) -> Factory:
    """The one behaviour suite, over the shared (Redis) and in-process state."""
    client = request.getfixturevalue("redis_client") if request.param == "redis" else None
    prefix = request.getfixturevalue("prefix") if request.param == "redis" else "local:"

    def make(service: str = "safetyamp", **kwargs: Any) -> CircuitBreaker:
        options: dict[str, Any] = {
            "prefix": prefix,
            "failure_threshold": 3,
            "recovery_seconds": 60,
            "success_threshold": 2,
            "lease_seconds": 30,
            "clock": clock,
            "metrics": metrics,
        }
        options.update(kwargs)
        return CircuitBreaker(service, client, **options)

    return make


def gauge(metrics: Metrics, service: str = "safetyamp") -> float | None:
    return metrics.registry.get_sample_value("circuit_breaker_state", {"service": service})


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow_request()
        breaker.record_failure()


def open_and_wait(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, breaker.failure_threshold)
    assert breaker.state == "open"
    clock.advance(breaker.recovery_seconds)


# --------------------------------------------------------------------------- behaviour, both backends


def test_starts_closed_and_publishes_zero(make_breaker: Factory, metrics: Metrics) -> None:
    breaker = make_breaker()
    assert breaker.state == "closed"
    assert breaker.allow_request() is True
    assert gauge(metrics) == 0
    snap = breaker.snapshot()
    assert snap["state"] == "closed" and snap["failures"] == 0 and snap["opened_at"] is None and snap["degraded"] is False


def test_opens_after_n_consecutive_failures_and_refuses(make_breaker: Factory, metrics: Metrics, clock: Clock) -> None:
    breaker = make_breaker()
    fail(breaker, 2)
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 2
    fail(breaker, 1)
    assert breaker.state == "open"
    assert gauge(metrics) == 2
    assert breaker.snapshot()["opened_at"] == "2027-01-15T08:00:00Z"
    clock.advance(59.9)
    assert breaker.allow_request() is False


def test_a_success_resets_the_consecutive_count(make_breaker: Factory) -> None:
    breaker = make_breaker()
    fail(breaker, 2)
    assert breaker.allow_request()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 2


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as another caller (a caller is a thread) and return its result."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def probe_succeeds(breaker: CircuitBreaker) -> bool:
    """Another caller's whole request: ask, and report success if admitted."""
    allowed = breaker.allow_request()
    if allowed:
        breaker.record_success()
    return allowed


def test_half_open_admits_one_probe(make_breaker: Factory, clock: Clock, metrics: Metrics) -> None:
    breaker = make_breaker()
    open_and_wait(breaker, clock)
    assert breaker.allow_request() is True  # this caller is the probe
    assert breaker.state == "half_open" and gauge(metrics) == 1
    assert in_thread(breaker.allow_request) is False  # the probe is out: everyone else waits
    assert in_thread(breaker.allow_request) is False
    assert breaker.allow_request() is True  # the probe's own retry (after a 429) stays the probe


def test_closes_after_success_threshold(make_breaker: Factory, clock: Clock, metrics: Metrics) -> None:
    breaker = make_breaker()
    open_and_wait(breaker, clock)
    assert breaker.allow_request() is True
    breaker.record_success()
    assert breaker.state == "half_open"  # 1 of 2
    assert in_thread(lambda: probe_succeeds(breaker)) is True  # the lease was released: the next probe goes
    assert breaker.state == "closed" and gauge(metrics) == 0
    assert breaker.snapshot()["failures"] == 0
    fail(breaker, 2)
    assert breaker.state == "closed"  # the count started again from zero


def test_reports_of_callers_not_holding_the_lease_are_ignored(make_breaker: Factory, clock: Clock) -> None:
    breaker = make_breaker(success_threshold=1)
    open_and_wait(breaker, clock)
    assert breaker.allow_request() is True

    def refused_then_reports() -> str:
        assert breaker.allow_request() is False
        breaker.record_success()
        breaker.record_failure()
        return breaker.state

    assert in_thread(refused_then_reports) == "half_open"
    breaker.record_success()
    assert breaker.state == "closed"


def test_failure_in_half_open_reopens(make_breaker: Factory, clock: Clock, metrics: Metrics) -> None:
    breaker = make_breaker()
    open_and_wait(breaker, clock)
    assert breaker.allow_request() is True
    breaker.record_success()
    assert breaker.allow_request() is True
    breaker.record_failure()
    assert breaker.state == "open" and gauge(metrics) == 2
    assert breaker.allow_request() is False
    clock.advance(59)
    assert breaker.allow_request() is False  # the recovery window restarted at the failure
    clock.advance(1)
    assert breaker.allow_request() is True


def test_late_reports_from_before_the_opening_do_not_move_half_open(make_breaker: Factory, clock: Clock) -> None:
    breaker = make_breaker()
    fail(breaker, 3)
    clock.advance(60)
    breaker.record_failure()  # an answer to a request sent while closed, arriving late
    breaker.record_success()
    assert breaker.state == "open"
    assert in_thread(lambda: (breaker.allow_request(), breaker.state)) == (True, "half_open")


def test_local_probe_lease_expires_on_the_clock(clock: Clock) -> None:
    breaker = CircuitBreaker("graph", None, failure_threshold=1, lease_seconds=30, clock=clock)
    open_and_wait(breaker, clock)
    assert breaker.allow_request() is True  # a probe whose caller never reports
    clock.advance(29)
    assert in_thread(breaker.allow_request) is False
    clock.advance(1)
    assert in_thread(lambda: probe_succeeds(breaker)) is True
    breaker.record_success()  # the first probe, far too late: ignored
    assert breaker.state == "half_open"


def test_separate_services_do_not_trip_each_other(make_breaker: Factory, metrics: Metrics) -> None:
    """pybreaker#88: one namespace for every breaker trips them together."""
    safetyamp, samsara = make_breaker("safetyamp"), make_breaker("samsara")
    fail(safetyamp, 3)
    assert safetyamp.state == "open"
    assert samsara.state == "closed" and samsara.allow_request() is True
    assert gauge(metrics, "safetyamp") == 2 and gauge(metrics, "samsara") == 0


def test_invalid_thresholds_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", None, failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", None, lease_seconds=0)


# --------------------------------------------------------------------------- shared by replicas


def test_replicas_share_state_and_exactly_one_probe_is_admitted(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    metrics_a, metrics_b = Metrics(), Metrics()
    options: dict[str, Any] = {"prefix": prefix, "failure_threshold": 4, "recovery_seconds": 60, "clock": clock}
    replica_a = CircuitBreaker("safetyamp", redis_client, metrics=metrics_a, **options)
    replica_b = CircuitBreaker("safetyamp", redis_client, metrics=metrics_b, **options)
    fail(replica_a, 2)
    fail(replica_b, 2)  # consecutive across replicas
    assert replica_a.state == "open" and replica_b.allow_request() is False
    assert gauge(metrics_b) == 2
    clock.advance(60)
    assert replica_a.allow_request() is True  # replica A's caller is the probe
    assert [replica_b.allow_request(), in_thread(replica_a.allow_request), replica_b.allow_request()] == [False] * 3
    replica_a.record_success()
    assert replica_b.allow_request() is True  # the next probe, from the other replica
    assert replica_a.allow_request() is False
    replica_b.record_success()
    assert replica_a.state == "closed" and replica_b.state == "closed"
    assert gauge(metrics_a) == 0 and gauge(metrics_b) == 0


def test_only_one_probe_among_many_threads(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    replicas = [CircuitBreaker("graph", redis_client, prefix=prefix, failure_threshold=1, clock=clock) for _ in range(4)]
    fail(replicas[0], 1)
    clock.advance(61)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def call(breaker: CircuitBreaker) -> None:
        start.wait()
        allowed = breaker.allow_request()
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=call, args=(replicas[i % 4],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


def test_an_unreported_probe_lease_expires_in_redis(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    """The lease is Redis's PX expiry (Redis's own clock: the one real wait here, 0.2 s)."""
    options: dict[str, Any] = {"prefix": prefix, "failure_threshold": 1, "lease_seconds": 0.2, "clock": clock}
    replica_a = CircuitBreaker("safetyamp", redis_client, **options)
    replica_b = CircuitBreaker("safetyamp", redis_client, **options)
    open_and_wait(replica_a, clock)
    assert replica_a.allow_request() is True  # and never reports (a crashed pod)
    assert replica_b.allow_request() is False
    deadline = time.monotonic() + 3
    while not replica_b.allow_request():
        assert time.monotonic() < deadline, "the probe lease never expired"
        time.sleep(0.05)
    replica_a.record_success()  # too late: no longer the lease holder
    assert replica_a.state == "half_open" and replica_a.snapshot()["successes"] == 0


def test_a_new_instance_does_not_reset_shared_state(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    """pybreaker#26: a pod start or CronJob run must not close a breaker others opened;
    pybreaker#24: nor restart its recovery window."""
    first = CircuitBreaker("scim", redis_client, prefix=prefix, failure_threshold=2, clock=clock)
    fail(first, 2)
    clock.advance(30)
    late = CircuitBreaker("scim", redis_client, prefix=prefix, failure_threshold=2, clock=clock, metrics=Metrics())
    assert late.state == "open" and late.allow_request() is False
    assert late.snapshot()["failures"] == 2
    clock.advance(30)  # 60 s after the opening, not after the new instance appeared
    assert late.allow_request() is True


def test_redis_layout(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    breaker = CircuitBreaker("oneroster", redis_client, prefix=prefix, failure_threshold=1, lease_seconds=30, clock=clock)
    fail(breaker, 1)
    key = f"{prefix}breaker:{{oneroster}}"
    assert redis_client.hgetall(key) == {"state": "open", "failures": "1", "successes": "0", "opened_at": repr(T0)}
    assert 0 < redis_client.ttl(key) <= 7 * 24 * 3600
    clock.advance(60)
    assert breaker.allow_request()
    assert 0 < redis_client.pttl(key + ":probe") <= 30_000


def test_a_429_never_trips_it_through_http_client(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    """HttpClient reports neither success nor failure for a 429; 5xx are failures."""
    breaker = CircuitBreaker("samsara", redis_client, prefix=prefix, failure_threshold=2, clock=clock)
    transport = FakeTransport()
    throttled = [Reply(429, json={}, headers={"Retry-After": "0"}) for _ in range(10)]
    transport.script("GET", "/fleet", *throttled, {"data": []})
    fake_clock = FakeClock()
    client = HttpClient(
        "samsara", "https://api.example.test", transport.session(), stats=RequestStats(), breaker=breaker,
        sleep=fake_clock.sleep, clock=fake_clock, max_attempts=2, rng=lambda: 0.0,
    )  # fmt: skip
    client.request("GET", "/fleet")
    assert breaker.state == "closed" and breaker.snapshot()["failures"] == 0
    transport.script("GET", "/down", *[Reply(503, text="down")] * 4)
    with pytest.raises(Exception, match="503"):
        client.request("GET", "/down")
    assert breaker.state == "closed"  # one request failed (after 2 attempts): one failure
    with pytest.raises(Exception, match="503"):
        client.request("GET", "/down")
    assert breaker.state == "open"
    with pytest.raises(FatalError, match="circuit breaker is open"):
        client.request("GET", "/fleet")


def test_build_breakers_one_per_service_from_settings(redis_client: redis.Redis, prefix: str) -> None:
    settings = load_settings(
        {"REDIS_PREFIX": prefix, "BREAKER_FAILURE_THRESHOLD": "7", "BREAKER_RECOVERY_SECONDS": "90",
         "BREAKER_SUCCESS_THRESHOLD": "3", "BREAKER_PROBE_LEASE_SECONDS": "10"},
        dotenv_path=None,
    )  # fmt: skip
    metrics = Metrics()
    breakers = build_breakers(settings, redis_client, metrics)
    assert set(breakers) == set(SERVICES) == {"safetyamp", "samsara", "graph", "oneroster", "scim"}
    b = breakers["graph"]
    assert (b.failure_threshold, b.recovery_seconds, b.success_threshold, b.lease_seconds) == (7, 90, 3, 10)
    assert b.prefix == prefix
    assert gauge(metrics, "graph") is None  # nothing sent to Redis yet: the state is unknown
    assert [breakers[s].state for s in SERVICES] == ["closed"] * 5
    assert all(gauge(metrics, s) == 0 for s in SERVICES)
    local = build_breakers(settings, None, Metrics())
    assert local["scim"].snapshot()["backend"] == "local"


# --------------------------------------------------------------------------- Redis outages


def degraded_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if getattr(r, "event", None) == "breaker_degraded")


def test_unreachable_redis_falls_back_to_local_state_with_one_warning(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    client = make_redis(f"redis://:pw-not-logged@127.0.0.1:{free_port()}/0")
    metrics = Metrics()
    breaker = CircuitBreaker("safetyamp", client, prefix="down:", failure_threshold=2, clock=clock, metrics=metrics)
    with caplog.at_level(logging.WARNING, logger="utils.circuit_breaker"):
        assert breaker.allow_request() is True  # never raises
        breaker.record_failure()
        assert breaker.allow_request() is True
        breaker.record_failure()
        assert breaker.allow_request() is False  # the local breaker opened
        assert breaker.state == "open" and gauge(metrics) == 2
    snap = breaker.snapshot()
    assert snap["degraded"] is True and snap["backend"] == "local" and snap["state"] == "open"
    assert degraded_warnings(caplog) == 1
    assert "pw-not-logged" not in caplog.text


def test_redis_down_from_the_start_means_closed_locally(clock: Clock) -> None:
    breaker = CircuitBreaker("graph", make_redis(f"redis://127.0.0.1:{free_port()}/0"), clock=clock)
    assert breaker.state == "closed" and breaker.degraded is True


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_redis_outage_keeps_the_breaker_open_and_recovers_to_shared_state(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisProcess(tmp_path).start()
    try:
        url = server.url
        options: dict[str, Any] = {"prefix": "t:", "failure_threshold": 2, "recovery_seconds": 60, "clock": clock}
        breaker = CircuitBreaker("safetyamp", make_redis(url), redis_retry_seconds=15, **options)
        other = CircuitBreaker("safetyamp", make_redis(url), **options)
        fail(breaker, 2)
        assert other.state == "open" and breaker.degraded is False
        server.stop()
        with caplog.at_level(logging.INFO, logger="utils.circuit_breaker"):
            assert breaker.allow_request() is False  # still open: seeded from the last Redis view
            assert breaker.degraded is True and breaker.state == "open"
            server.start()  # an empty Redis (no persistence): the shared state says closed
            clock.advance(10)
            assert breaker.allow_request() is False  # not yet time to try Redis again
            clock.advance(5)
            assert breaker.allow_request() is True  # Redis answers: shared state in use again
            assert breaker.degraded is False and breaker.snapshot()["backend"] == "redis"
        assert degraded_warnings(caplog) == 1
        assert any(getattr(r, "event", None) == "breaker_recovered" for r in caplog.records)
    finally:
        server.stop()


def test_make_redis_is_lazy_with_short_timeouts() -> None:
    client = make_redis(f"redis://:secret@127.0.0.1:{free_port()}/0")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 2.0
    assert kwargs["decode_responses"] is True
    assert client.connection_pool._created_connections == 0
