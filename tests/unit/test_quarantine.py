from __future__ import annotations

import fakeredis
import pytest

from utils.metrics import Metrics
from utils.quarantine import Quarantine, is_bad_run

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("status", "counts", "bad"),
    [
        ("failed", {}, True),
        ("partial", {"created": 2, "failed": 3}, True),
        ("partial", {"created": 8, "failed": 2}, False),
        ("partial", {"failed": 2}, False),  # too few attempts to judge
        ("success", {"unchanged": 100}, False),
    ],
)
def test_bad_run(status, counts, bad):
    assert is_bad_run(status, counts) is bad


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_backoff_grows_is_capped_and_lifts(backend):
    clock, metrics = Clock(), Metrics()
    client = fakeredis.FakeRedis() if backend == "redis" else None
    q = Quarantine(client, prefix="t:", interval_seconds=3600, clock=clock, metrics=metrics)
    assert q.blocks("jobs") is None
    q.record("jobs", "failed", {}, "source unavailable")
    assert "next try in 3600 s" in q.blocks("jobs")
    q.record("jobs", "failed", {}, "source unavailable")
    assert q.status("jobs")["backoff_seconds"] == 7200
    for _ in range(10):
        q.record("jobs", "failed", {}, "x")
    assert q.status("jobs")["backoff_seconds"] == 86_400
    assert metrics.quarantined.labels("jobs")._value.get() == 1
    clock.t += 86_401
    assert q.blocks("jobs") is None  # due again
    q.record("jobs", "skipped", {}, None)
    assert q.status("jobs") is not None  # a skipped run changes nothing
    q.record("jobs", "success", {"unchanged": 3}, None)
    assert q.status("jobs") is None and q.blocks("jobs") is None
    assert metrics.quarantined.labels("jobs")._value.get() == 0


def test_state_shared_between_replicas_through_redis():
    client, clock = fakeredis.FakeRedis(), Clock()
    a = Quarantine(client, prefix="t:", interval_seconds=60, clock=clock)
    b = Quarantine(client, prefix="t:", interval_seconds=60, clock=clock)
    a.record("vehicles", "failed", {}, "breaker open")
    assert "breaker open" in b.blocks("vehicles")


def test_redis_down_keeps_state_locally():
    import redis

    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    q = Quarantine(down, prefix="t:", interval_seconds=60, clock=Clock())
    q.record("titles", "failed", {}, "x")
    assert q.blocks("titles") is not None


def test_stored_reason_is_scrubbed_and_an_old_unscrubbed_one_is_masked_on_the_way_out():
    sentinel = "S3NT1NEL-quarantine-77"
    client = fakeredis.FakeRedis()
    q = Quarantine(client, prefix="s:", interval_seconds=60, clock=Clock())
    q.record("jobs", "failed", {}, f"safetyamp GET https://sa.test/api/sites?api_key={sentinel}: HTTP 401")
    stored = client.hget("s:quarantine", "jobs").decode()
    assert sentinel not in stored and "api_key=***" in stored
    # a reason written before the scrub existed (or by another version) is still hidden
    client.hset("s:quarantine", "jobs", stored.replace("api_key=***", f"api_key={sentinel}"))
    assert sentinel not in str(q.status("jobs")) and sentinel not in (q.blocks("jobs") or "")
