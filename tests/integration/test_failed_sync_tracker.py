"""utils.failed_sync_tracker against real Redis (db 15), and the same suite in memory.

Redis: redis://127.0.0.1:6379/15 (``TEST_REDIS_URL`` overrides it), a unique key prefix
per test, removed afterwards. If
Redis is unreachable the suite fails in CI (CI=true) and falls back to fakeredis
elsewhere, so a laptop without Redis still runs it. Time is an injected clock: the
168-hour schedule is walked without sleeping.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import REDIS_URL, RedisProcess, connect, free_port, key_prefix, shared_server
from utils.failed_sync_tracker import (
    DEFAULT_SCHEDULE,
    FailedSyncTracker,
    InMemoryTracker,
    ResilientTracker,
    build_tracker,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
HOURS = [2, 6, 12, 24, 48, 96, 168]


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def set(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    """("real", url) or ("fake", FakeServer)."""
    yield from shared_server()


make_client = connect


@pytest.fixture
def redis_client(redis_server: tuple[str, Any]) -> Iterator[redis.Redis]:
    client = make_client(redis_server, decode=False)  # bytes: the tracker must decode
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from key_prefix(redis_client, "tracker")


@pytest.fixture
def clock() -> Clock:
    return Clock()


Factory = Callable[..., Any]


@pytest.fixture(params=["redis", "memory", "resilient"])
def make_tracker(
    request: pytest.FixtureRequest, redis_server: tuple[str, Any], redis_client: redis.Redis, prefix: str, clock: Clock
) -> Iterator[Factory]:
    """The one behaviour suite, run over every backend."""
    clients: list[redis.Redis] = []

    def make(**kwargs: Any) -> Any:
        if request.param == "memory":
            return InMemoryTracker(clock, **kwargs)
        if request.param == "redis":
            return FailedSyncTracker(redis_client, prefix, clock, **kwargs)
        text_client = make_client(redis_server, decode=True)
        clients.append(text_client)
        return ResilientTracker(FailedSyncTracker(text_client, prefix, clock, **kwargs), clock=clock)

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- behaviour, every backend


def test_untracked_record_is_not_skipped(make_tracker: Factory) -> None:
    tracker = make_tracker()
    assert tracker.should_skip("employees", "1", "fp") is False
    assert tracker.get("employees", "1") is None
    assert tracker.count("employees") == 0
    assert tracker.list() == []
    tracker.record_success("employees", "1")  # forgetting an unknown record is fine


def test_first_failure_is_stored_and_retried_after_two_hours(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    tracker.record_failure("employees", "123", "fp-1", "The email has already been taken.", ["mobile_phone", "email", "email"])
    entry = tracker.get("employees", "123")
    assert entry == {
        "sync": "employees",
        "key": "123",
        "fingerprint": "fp-1",
        "reason": "The email has already been taken.",
        "fields": ["email", "mobile_phone"],
        "attempts": 1,
        "first_failed": "2026-11-22T01:00:00Z",
        "last_failed": "2026-11-22T01:00:00Z",
        "next_retry": "2026-11-22T03:00:00Z",
        "quarantined": False,
        "status": "waiting",
    }
    assert tracker.count("employees") == 1
    assert tracker.should_skip("employees", "123", "fp-1") is True
    clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert tracker.should_skip("employees", "123", "fp-1") is True
    clock.advance(timedelta(seconds=1))
    assert tracker.should_skip("employees", "123", "fp-1") is False
    assert tracker.get("employees", "123")["status"] == "due"


def test_schedule_follows_entra_then_quarantines(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    for attempt, hours in enumerate(HOURS, start=1):
        tracker.record_failure("employees", "7", "fp", f"failure {attempt}", ["email"])
        entry = tracker.get("employees", "7")
        assert entry["attempts"] == attempt
        assert entry["quarantined"] is False
        due = clock.now + timedelta(hours=hours)
        assert datetime.fromisoformat(entry["next_retry"]) == due
        clock.set(due - timedelta(minutes=1))
        assert tracker.should_skip("employees", "7", "fp") is True
        clock.set(due)
        assert tracker.should_skip("employees", "7", "fp") is False
    tracker.record_failure("employees", "7", "fp", "failure 8", ["email"])
    entry = tracker.get("employees", "7")
    assert (entry["attempts"], entry["quarantined"], entry["next_retry"], entry["status"]) == (
        8,
        True,
        None,
        "quarantined",
    )
    assert entry["first_failed"] == "2026-11-22T01:00:00Z"
    assert entry["reason"] == "failure 8"
    clock.advance(timedelta(days=29))  # held: nothing changes by waiting (within retention)
    assert tracker.should_skip("employees", "7", "fp") is True
    assert tracker.count("employees") == 1


def test_changed_inputs_are_retried_at_once_and_restart_the_schedule(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    for _ in range(8):
        tracker.record_failure("employees", "7", "fp-old", "dup email", ["email"])
    assert tracker.should_skip("employees", "7", "fp-old") is True
    assert tracker.should_skip("employees", "7", "fp-new") is False  # someone fixed the source
    clock.advance(timedelta(minutes=5))
    tracker.record_failure("employees", "7", "fp-new", "still bad", ["mobile_phone"])
    entry = tracker.get("employees", "7")
    assert entry["attempts"] == 1 and entry["quarantined"] is False
    assert entry["first_failed"] == "2026-11-22T01:05:00Z"
    assert entry["fields"] == ["mobile_phone"]
    assert entry["next_retry"] == "2026-11-22T03:05:00Z"


def test_success_forgets_the_record(make_tracker: Factory) -> None:
    tracker = make_tracker()
    tracker.record_failure("employees", "1", "fp", "x", [])
    tracker.record_failure("employees", "2", "fp", "x", [])
    tracker.record_success("employees", "1")
    assert tracker.get("employees", "1") is None
    assert tracker.should_skip("employees", "1", "fp") is False
    assert tracker.count("employees") == 1
    tracker.record_success("employees", "2")
    assert tracker.count("employees") == 0
    assert tracker.list() == []


def test_list_spans_syncs_sorted_and_filtered(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    tracker.record_failure("vehicles", "281474977", "fp", "bad vin", ["vin"])
    tracker.record_failure("employees", "20", "fp", "dup email", ["email"])
    tracker.record_failure("employees", 10, "fp", "dup phone", ["mobile_phone"])  # int keys are stored as str
    for _ in range(7):
        tracker.record_failure("jobs", "J-1", "fp", "closed cluster", ["cluster_id"])
    clock.advance(timedelta(hours=2))
    rows = tracker.list()
    assert [(r["sync"], r["key"], r["status"]) for r in rows] == [
        ("employees", "10", "due"),
        ("employees", "20", "due"),
        ("jobs", "J-1", "waiting"),
        ("vehicles", "281474977", "due"),
    ]
    assert [r["key"] for r in tracker.list("employees")] == ["10", "20"]
    assert tracker.list("rosters") == []
    assert tracker.count("employees") == 2 and tracker.count("jobs") == 1
    assert tracker.should_skip("employees", 10, "fp") is False


def test_operator_retry_releases_records(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    for _ in range(8):
        tracker.record_failure("employees", "1", "fp", "dup", ["email"])
    tracker.record_failure("employees", "2", "fp", "dup", ["email"])
    tracker.record_failure("jobs", "J", "fp", "x", [])
    assert tracker.retry("employees", "1") == 1
    assert tracker.should_skip("employees", "1", "fp") is False
    assert tracker.get("employees", "1")["status"] == "due"
    assert tracker.should_skip("employees", "2", "fp") is True
    assert tracker.retry("employees", "missing") == 0
    assert tracker.retry("employees") == 2
    assert tracker.should_skip("employees", "2", "fp") is False
    assert tracker.should_skip("jobs", "J", "fp") is True
    assert tracker.retry(key="J") == 1
    assert tracker.retry() == 3
    assert tracker.should_skip("jobs", "J", "fp") is False
    # attempts are kept: the quarantined record goes straight back if it fails again
    tracker.record_failure("employees", "1", "fp", "dup", ["email"])
    assert tracker.get("employees", "1")["quarantined"] is True
    assert tracker.get("employees", "1")["attempts"] == 9
    assert tracker.count("employees") == 2  # retry never forgets a record


def test_dismiss_forgets_one_record_only(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    for key in ("1", "2"):
        tracker.record_failure("employees", key, "fp", "refused", [])
    tracker.record_failure("jobs", "1", "fp", "refused", [])
    assert tracker.dismiss("employees", "1") is True
    assert tracker.get("employees", "1") is None and tracker.should_skip("employees", "1", "fp") is False
    assert [r["key"] for r in tracker.list("employees")] == ["2"]
    assert tracker.get("jobs", "1") is not None
    assert tracker.dismiss("employees", "1") is False  # already gone: nothing to dismiss
    assert tracker.dismiss("vehicles", "nope") is False


def test_entries_expire_after_retention(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker(retention=timedelta(days=30))
    for _ in range(8):
        tracker.record_failure("employees", "old", "fp", "dup", ["email"])
    clock.advance(timedelta(days=10))
    tracker.record_failure("employees", "newer", "fp", "dup", ["email"])
    clock.advance(timedelta(days=20))  # "old" is 30 days past its last failure
    assert tracker.should_skip("employees", "old", "fp") is False
    assert tracker.get("employees", "old") is None
    assert tracker.count("employees") == 1
    assert [r["key"] for r in tracker.list()] == ["newer"]
    tracker.record_failure("employees", "old", "fp", "dup again", ["email"])
    assert tracker.get("employees", "old")["attempts"] == 1  # a fresh schedule, not a 9th attempt


def test_reason_is_scrubbed_and_cut(make_tracker: Factory) -> None:
    tracker = make_tracker()
    tracker.record_failure("employees", "1", "fp", "401 for Authorization: Bearer abc.def " + "x" * 5000, ["email"])
    reason = tracker.get("employees", "1")["reason"]
    assert "abc.def" not in reason
    assert reason.startswith("401 for Authorization: ***")
    assert reason.endswith("...[cut]") and len(reason) < 2100


def test_custom_schedule_and_immediate_quarantine(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker(schedule=[timedelta(minutes=10)])
    tracker.record_failure("jobs", "J", "fp", "x", [])
    assert tracker.get("jobs", "J")["next_retry"] == "2026-11-22T01:10:00Z"
    tracker.record_failure("jobs", "J", "fp", "x", [])
    assert tracker.get("jobs", "J")["quarantined"] is True
    strict = make_tracker(schedule=[])
    strict.record_failure("titles", "Foreman", "fp", "x", [])
    assert strict.should_skip("titles", "Foreman", "fp") is True


def test_concurrent_failures_of_one_record_count_every_attempt(make_tracker: Factory) -> None:
    tracker = make_tracker(schedule=[timedelta(hours=1)] * 100)
    barrier = threading.Barrier(8)

    def fail() -> None:
        barrier.wait()
        for _ in range(5):
            tracker.record_failure("employees", "race", "fp", "x", ["email"])

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.get("employees", "race")["attempts"] == 40


# --------------------------------------------------------------------------- rules and Redis specifics


def test_default_schedule_is_entras() -> None:
    assert [d / timedelta(hours=1) for d in DEFAULT_SCHEDULE] == HOURS


def test_retention_shorter_than_a_wait_and_naive_clocks_are_refused() -> None:
    with pytest.raises(ValueError, match="retention"):
        InMemoryTracker(retention=timedelta(days=3))
    tracker = InMemoryTracker(lambda: datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        tracker.should_skip("employees", "1", "fp")


def test_redis_layout_and_ttl(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    tracker = FailedSyncTracker(redis_client, prefix, clock)
    tracker.record_failure("employees", "123", "fp", "dup", ["email"])
    name = f"{prefix}failed:employees"
    assert redis_client.type(name) == b"hash"
    assert redis_client.hkeys(name) == [b"123"]
    assert 29 * 86400 < redis_client.ttl(name) <= 30 * 86400
    redis_client.expire(name, 60)
    tracker.record_failure("employees", "124", "fp", "dup", ["email"])
    assert redis_client.ttl(name) > 29 * 86400  # refreshed on write
    tracker.record_success("employees", "123")
    tracker.record_success("employees", "124")
    assert redis_client.exists(name) == 0


def test_unreadable_redis_entry_counts_as_untracked(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    tracker = FailedSyncTracker(redis_client, prefix, clock)
    redis_client.hset(f"{prefix}failed:employees", "9", "{not json")
    assert tracker.should_skip("employees", "9", "fp") is False
    assert tracker.count("employees") == 0
    tracker.record_failure("employees", "9", "fp", "x", [])
    assert tracker.get("employees", "9")["attempts"] == 1


def test_prefix_with_glob_characters_lists_only_its_own_keys(redis_client: redis.Redis, prefix: str, clock: Clock) -> None:
    odd = FailedSyncTracker(redis_client, prefix + "a*[b]?:", clock)
    other = FailedSyncTracker(redis_client, prefix + "aXbY:", clock)
    odd.record_failure("employees", "1", "fp", "x", [])
    other.record_failure("jobs", "2", "fp", "x", [])
    assert [(r["sync"], r["key"]) for r in odd.list()] == [("employees", "1")]
    assert [(r["sync"], r["key"]) for r in other.list()] == [("jobs", "2")]


# --------------------------------------------------------------------------- resilience


def degraded_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if getattr(r, "event", None) == "tracker_degraded")


def test_closed_port_degrades_to_memory_with_one_warning(prefix: str, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    tracker = ResilientTracker(FailedSyncTracker(dead, prefix, clock), clock=clock)
    assert tracker.degraded is False
    with caplog.at_level(logging.INFO, logger="utils.failed_sync_tracker"):
        assert tracker.should_skip("employees", "1", "fp") is False  # does not raise
        tracker.record_failure("employees", "1", "fp", "dup", ["email"])
        assert tracker.degraded is True
        assert tracker.should_skip("employees", "1", "fp") is True
        assert tracker.count("employees") == 1
        assert [r["key"] for r in tracker.list()] == ["1"]
        clock.advance(timedelta(minutes=5))  # probes fail quietly
        tracker.record_failure("employees", "2", "fp", "dup", ["email"])
        assert tracker.retry("employees") == 2
    assert degraded_warnings(caplog) == 1
    health = tracker.health()
    assert health["degraded"] is True and health["backend"] == "memory"
    assert health["degraded_since"] == "2026-11-22T01:00:00Z"
    assert health["pending_writes"] == 2


def test_outage_and_recovery_write_back_what_happened(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()  # a Redis we can stop and start in-process
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    primary = FailedSyncTracker(client, "t:", clock)
    tracker = ResilientTracker(primary, clock=clock, probe_interval=timedelta(seconds=30))
    tracker.record_failure("employees", "fixed-later", "fp", "dup", ["email"])
    tracker.record_failure("employees", "untouched", "fp", "dup", ["email"])
    assert tracker.degraded is False

    with caplog.at_level(logging.INFO, logger="utils.failed_sync_tracker"):
        server.connected = False
        tracker.record_success("employees", "fixed-later")
        tracker.record_failure("employees", "new", "fp", "bad phone", ["mobile_phone"])
        assert tracker.degraded is True
        assert tracker.should_skip("employees", "new", "fp") is True
        assert tracker.should_skip("employees", "untouched", "fp") is False  # unknown in memory: retried early

        server.connected = True
        clock.advance(timedelta(seconds=29))
        assert tracker.count("employees") == 1  # no probe yet: still memory
        assert tracker.degraded is True

        clock.advance(timedelta(seconds=1))
        assert tracker.count("employees") == 2  # probed, replayed, back on Redis
        assert tracker.degraded is False

    assert degraded_warnings(caplog) == 1
    assert sum(1 for r in caplog.records if getattr(r, "event", None) == "tracker_recovered") == 1
    assert primary.get("employees", "fixed-later") is None
    assert primary.get("employees", "new")["fields"] == ["mobile_phone"]
    assert primary.get("employees", "untouched")["attempts"] == 1
    assert tracker.fallback.list() == []
    assert tracker.health() == {"backend": "redis", "degraded": False, "degraded_since": None, "pending_writes": 0}


def test_failed_probe_stays_degraded_and_keeps_pending_writes(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()
    tracker = ResilientTracker(FailedSyncTracker(fakeredis.FakeRedis(server=server), "t:", clock), clock=clock)
    server.connected = False
    with caplog.at_level(logging.WARNING, logger="utils.failed_sync_tracker"):
        tracker.record_failure("jobs", "J", "fp", "x", [])
        for _ in range(5):
            clock.advance(timedelta(minutes=1))
            assert tracker.should_skip("jobs", "J", "fp") is True
    assert tracker.degraded is True and tracker.health()["pending_writes"] == 1
    assert degraded_warnings(caplog) == 1
    server.connected = True
    clock.advance(timedelta(minutes=1))
    assert tracker.should_skip("jobs", "J", "fp") is True  # now answered by Redis
    assert tracker.degraded is False


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_real_redis_restart_degrades_and_recovers(tmp_path: Path, clock: Clock) -> None:
    server = RedisProcess(tmp_path).start()
    try:
        tracker = build_tracker(server.url, "t:", clock=clock)
        tracker.record_failure("employees", "1", "fp", "dup", ["email"])
        assert tracker.degraded is False
        server.stop()
        tracker.record_failure("employees", "2", "fp", "dup", ["email"])  # the server kept nothing (no persistence)
        assert tracker.degraded is True
        server.start()
        clock.advance(timedelta(seconds=30))
        assert [r["key"] for r in tracker.list()] == ["2"]
        assert tracker.degraded is False
    finally:
        server.stop()


def test_build_tracker_connects_lazily_with_short_timeouts(redis_server: tuple[str, Any], clock: Clock) -> None:
    tracker = build_tracker(SecretStr(f"redis://:not-a-real-pw@127.0.0.1:{free_port()}/0"), "lazy:", clock=clock)
    primary = tracker.primary
    assert isinstance(primary, FailedSyncTracker)
    pool = primary._r.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 2.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 2.0
    assert pool._created_connections == 0  # nothing connected yet
    assert tracker.degraded is False
    assert tracker.count("employees") == 0  # refused -> degraded, not raised
    assert tracker.degraded is True
    if redis_server[0] == "real":
        live = build_tracker(REDIS_URL, f"test-build-{uuid.uuid4().hex}:", clock=clock)
        live.record_failure("employees", "1", "fp", "x", [])
        assert live.count("employees") == 1 and live.degraded is False
        live.record_success("employees", "1")


# --------------------------------------------------------------------------- paged listing (the console)


def _queue(tracker: Any, clock: Clock) -> None:
    """employees: 3 due, 2 waiting, 2 quarantined; jobs: 1 waiting; vehicles: 1 due."""
    for key in ("e5", "e1", "e3"):
        tracker.record_failure("employees", key, "fp", f"{key} refused", ["email"])
    for key in ("q2", "q1"):
        for _ in range(8):
            tracker.record_failure("employees", key, "fp", "dup", ["email"])
    tracker.record_failure("vehicles", "v1", "fp", "bad vin", ["vin"])
    clock.advance(timedelta(hours=3))  # the first ones are due now
    tracker.record_failure("employees", "w2", "fp", "later", [])
    clock.advance(timedelta(minutes=10))
    tracker.record_failure("employees", "w1", "fp", "later still", [])
    tracker.record_failure("jobs", "J-1", "fp", "closed", [])


def test_page_lists_in_pages_by_sync_and_status(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker()
    _queue(tracker, clock)
    rows, total = tracker.page("employees")
    # due first, then waiting by next try, quarantined last; ties by key
    assert [(r["key"], r["status"]) for r in rows] == [
        ("e1", "due"),
        ("e3", "due"),
        ("e5", "due"),
        ("w2", "waiting"),
        ("w1", "waiting"),
        ("q1", "quarantined"),
        ("q2", "quarantined"),
    ]
    assert total == 7
    assert rows[0] == tracker.get("employees", "e1")
    assert tracker.page("employees", start=2, count=3) == (rows[2:5], 7)
    assert tracker.page("employees", status="due") == (rows[:3], 3)
    assert tracker.page("employees", status="waiting", start=1) == (rows[4:5], 2)
    assert tracker.page("employees", status="quarantined") == (rows[5:], 2)
    assert tracker.page("rosters") == ([], 0)
    every, total = tracker.page()
    assert total == 9
    assert [(r["sync"], r["key"]) for r in every] == [("employees", r["key"]) for r in rows] + [
        ("jobs", "J-1"),
        ("vehicles", "v1"),
    ]
    assert tracker.page(start=6, count=2) == (every[6:8], 9)  # across the syncs' boundary
    assert tracker.page(status="due", start=2, count=10) == ([every[2], every[8]], 4)
    assert tracker.page(start=50) == ([], 9)
    clock.advance(timedelta(hours=2))  # w2 and w1 fall due, J-1 too
    assert [r["key"] for r in tracker.page(status="due")[0]] == ["e1", "e3", "e5", "w2", "w1", "J-1", "v1"]
    assert tracker.retry("employees", "q1") == 1  # released: due at once
    assert [r["key"] for r in tracker.page("employees", status="quarantined")[0]] == ["q2"]
    tracker.dismiss("employees", "e1")
    tracker.record_success("employees", "e3")
    assert tracker.page("employees") == (tracker.page("employees", count=100)[0], 5)
    assert tracker.count("employees") == 5


def test_page_leaves_out_expired_entries(make_tracker: Factory, clock: Clock) -> None:
    tracker = make_tracker(retention=timedelta(days=30))
    tracker.record_failure("employees", "old", "fp", "x", [])
    clock.advance(timedelta(days=10))
    tracker.record_failure("employees", "newer", "fp", "x", [])
    clock.advance(timedelta(days=20))
    assert [r["key"] for r in tracker.page("employees")[0]] == ["newer"]
    assert tracker.page("employees")[1] == 1 and tracker.count("employees") == 1


def _commands(client: redis.Redis, prefix: str, action: Callable[[], Any]) -> list[list[str]]:
    """The Redis commands ``action`` sent about keys under ``prefix`` (MONITOR)."""
    marker = f"end-{uuid.uuid4().hex}"
    seen: list[list[str]] = []
    with client.monitor() as monitor:
        ready = threading.Event()

        def listen() -> None:
            ready.set()
            for event in monitor.listen():
                words = str(event.get("command", "")).split(" ")
                if marker in words[-1]:
                    return
                if any(prefix in w for w in words):
                    seen.append(words)

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        ready.wait(2)
        action()
        client.echo(marker)
        reader.join(10)
    return seen


def test_page_and_count_read_only_what_the_page_shows(redis_server: tuple[str, Any], prefix: str, clock: Clock) -> None:
    """The console's queue page and overview: with thousands of records queued, a page
    decodes only its own entries and a count decodes none (issue 11: the whole hash was
    read at every request)."""
    if redis_server[0] != "real":
        pytest.skip("MONITOR needs a real Redis")
    client = make_client(redis_server, decode=True)
    watcher = make_client(redis_server, decode=True)
    tracker = FailedSyncTracker(client, prefix, clock)
    with client.pipeline(transaction=False) as pipe:  # 2,000 entries written the old way (no index)
        for n in range(2000):
            pipe.hset(f"{prefix}failed:employees", f"{n:05d}", json.dumps({"attempts": 1, "last_failed": "2026-11-22T01:00:00Z", "next_retry": None, "quarantined": False, "fingerprint": "fp", "reason": "x", "fields": []}))  # fmt: skip
        pipe.execute()
    tracker.record_failure("employees", "zzz", "fp", "new", [])
    assert tracker.count("employees") == 2001  # the first look builds the index, once
    whole = {"HGETALL", "HVALS", "HKEYS", "HSCAN", "SCAN"}

    counted = _commands(watcher, prefix, lambda: tracker.count("employees"))
    assert counted and not [c for c in counted if c[0].strip('"').upper() in whole | {"HMGET", "HGET"}]
    page: dict[str, Any] = {}
    sent = _commands(watcher, prefix, lambda: page.update(result=tracker.page("employees", start=1000, count=50)))
    rows, total = page["result"]
    assert total == 2001 and len(rows) == 50 and rows[0]["key"] == "01000"
    names = [c[0].strip('"').upper() for c in sent]
    assert not whole & set(names), names
    fields = sum(len(c) - 2 for c in sent if c[0].strip('"').upper() == "HMGET")
    assert fields == 50
    client.close()
    watcher.close()
