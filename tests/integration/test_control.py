"""utils.control.ControlStore against real Redis (db 15, a fresh key prefix per test),
the same checks in memory (Redis unreachable), and one approval taken by two runners
at once. Time is an injected clock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_server import connect, free_port, key_prefix, shared_server
from utils.control import ControlStore, digest
from utils.metrics import Metrics

pytestmark = pytest.mark.integration

SECRET = "sentinel-Secret-Value-42"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Any]]:
    yield from shared_server()


@pytest.fixture
def client(server: tuple[str, Any]) -> Iterator[redis.Redis]:
    c = connect(server, decode=True)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    yield from key_prefix(client, "control")


def unreachable() -> redis.Redis:
    return redis.Redis(
        port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0), decode_responses=True
    )


@pytest.fixture(params=["redis", "memory"])
def store_factory(request: pytest.FixtureRequest, client: redis.Redis, prefix: str) -> Any:
    def make(**kwargs: Any) -> ControlStore:
        backend = client if request.param == "redis" else unreachable()
        return ControlStore(backend, prefix=prefix, **kwargs)

    return make


# --------------------------------------------------------------------------- pause


def test_pause_is_seen_by_another_store_and_scrubbed(client: redis.Redis, prefix: str) -> None:
    metrics = Metrics()
    one = ControlStore(client, prefix=prefix, clock=Clock(), metrics=metrics)
    other = ControlStore(client, prefix=prefix, clock=Clock())
    one.pause("jobs", by="cli:ann@host", reason=f"target migration, password={SECRET}")
    seen = other.paused("jobs")
    assert seen is not None
    assert seen["by"] == "cli:ann@host" and seen["at"] == "2027-01-15T08:00:00+00:00"
    assert SECRET not in str(seen) and "target migration" in seen["reason"]
    assert SECRET not in str(client.hgetall(f"{prefix}control:paused"))
    assert set(other.pauses()) == {"jobs"}
    assert metrics.registry.get_sample_value("sync_paused", {"sync": "jobs"}) == 1
    other.resume("jobs", by="cli:bob@host")
    assert one.paused("jobs") is None and one.pauses() == {}
    assert metrics.registry.get_sample_value("sync_paused", {"sync": "jobs"}) == 0


def test_pause_in_memory_when_redis_is_down(store_factory: Any) -> None:
    store = store_factory(clock=Clock())
    store.pause("vehicles", by="me", reason="x")
    assert store.paused("vehicles")["reason"] == "x"
    assert "paused by me at 2027-01-15T08:00:00+00:00: x" == ControlStore.pause_reason(store.paused("vehicles"))
    store.resume("vehicles", by="me")
    assert store.paused("vehicles") is None


# --------------------------------------------------------------------------- holds and approvals


def test_approval_lets_exactly_that_batch_through_once(store_factory: Any) -> None:
    clock = Clock()
    store = store_factory(clock=clock, approval_ttl_seconds=600)
    keys = ["E3", "E1", "E2"]
    hold = store.hold("employees", keys, reason="3 deactivations exceed 10 %", run_id="r1")
    assert hold["keys"] == ["E1", "E2", "E3"] and hold["count"] == 3
    assert hold["digest"] == digest(keys) == digest(["E1", "E2", "E3", "E1"])
    assert store.held("employees") == hold and store.holds() == {"employees": hold}
    with pytest.raises(ValueError, match="list changed"):
        store.approve("employees", digest(["E1", "E2"]), by="ann")
    approval = store.approve("employees", hold["digest"], by="ann")
    assert approval["count"] == 3 and approval["expires_at"] == "2027-01-15T08:10:00+00:00"
    assert store.approval("employees") == approval
    assert store.take_approval("employees", ["E1", "E2"]) is None  # another batch
    assert store.take_approval("employees", ["E2", "E3", "E1"]) == approval
    assert store.take_approval("employees", keys) is None  # once
    assert store.held("employees") is None  # a used approval clears the hold
    assert store.approval("employees") is None


def test_no_hold_nothing_to_approve(store_factory: Any) -> None:
    with pytest.raises(ValueError, match="nothing to approve"):
        store_factory().approve("jobs", "0" * 64, by="ann")


def test_expired_approval_is_refused(store_factory: Any) -> None:
    clock = Clock()
    store = store_factory(clock=clock, approval_ttl_seconds=600)
    hold = store.hold("jobs", ["J1"], reason="r", run_id="r1")
    store.approve("jobs", hold["digest"], by="ann")
    clock.now += 601
    assert store.approval("jobs") is None
    assert store.take_approval("jobs", ["J1"]) is None
    assert store.held("jobs") is not None  # still held: a new approval is needed


def test_a_changed_batch_withdraws_the_old_approval(store_factory: Any) -> None:
    store = store_factory(clock=Clock())
    first = store.hold("jobs", ["J1", "J2"], reason="r", run_id="r1")
    store.approve("jobs", first["digest"], by="ann")
    second = store.hold("jobs", ["J1", "J2", "J3"], reason="r", run_id="r2")
    assert store.approval("jobs") is None
    assert store.take_approval("jobs", ["J1", "J2"]) is None
    with pytest.raises(ValueError):
        store.approve("jobs", first["digest"], by="ann")
    assert store.approve("jobs", second["digest"], by="ann")["count"] == 3


def test_two_takers_one_wins(server: tuple[str, Any], client: redis.Redis, prefix: str) -> None:
    """Two runners (their own clients) find the same approval at the same moment: exactly
    one of them may deactivate the batch."""
    if server[0] != "real":
        pytest.skip("needs real Redis (CI has it: shared_server fails there without it)")
    clients = [redis.Redis.from_url(_url(client), decode_responses=True) for _ in range(8)]
    for round_ in range(20):
        setup = ControlStore(client, prefix=prefix)
        hold = setup.hold("rosters", [f"user/u{round_}", "class/c1"], reason="r", run_id=f"r{round_}")
        setup.approve("rosters", hold["digest"], by="ann")
        stores = [ControlStore(c, prefix=prefix) for c in clients]
        barrier = threading.Barrier(len(stores))
        won: list[Any] = []

        threads = [threading.Thread(target=_take, args=(s, hold["keys"], barrier, won)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, round_
        assert setup.held("rosters") is None
    for c in clients:
        c.close()


def _take(store: ControlStore, keys: list[str], barrier: threading.Barrier, won: list[Any]) -> None:
    barrier.wait()
    got = store.take_approval("rosters", list(keys))
    if got is not None:
        won.append(got)


def _url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


# --------------------------------------------------------------------------- audit


def test_audit_is_stored_logged_scrubbed_and_paged(store_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    with caplog.at_level(logging.INFO, logger="audit"):
        for i in range(5):
            clock.now += 1
            store.audit(
                actor="console:ann",
                role="operator",
                action="pause",
                target=f"sync/{i}",
                result="ok",
                detail={"reason": f"token={SECRET}", "n": i},
            )
    assert len([r for r in caplog.records if r.name == "audit"]) == 5
    assert SECRET not in caplog.text
    page = store.audit_log(count=2)
    assert [e["target"] for e in page] == ["sync/4", "sync/3"]
    assert set(page[0]) == {"id", "at", "actor", "role", "action", "target", "result", "detail"}
    assert SECRET not in str(page) and page[0]["detail"]["n"] == 4
    nxt = store.audit_log(count=2, before=page[-1]["id"])
    assert [e["target"] for e in nxt] == ["sync/2", "sync/1"]
    assert [e["target"] for e in store.audit_log(count=10, before=nxt[-1]["id"])] == ["sync/0"]


def test_audit_is_trimmed_by_age(client: redis.Redis, prefix: str) -> None:
    store = ControlStore(client, prefix=prefix, audit_retention_days=1)
    three_days_ago = int((time.time() - 3 * 86400) * 1000)
    for i in range(300):  # entries written three days ago (stream ids are Redis's clock)
        client.xadd(f"{prefix}audit", {"entry": '{"action": "old"}'}, id=f"{three_days_ago}-{i}")
    store.audit(actor="a", role="operator", action="new", target="t", result="ok")
    # approximate trimming removes whole stream nodes (100 entries each by default)
    assert client.xlen(f"{prefix}audit") < 150
    assert store.audit_log(count=1)[0]["action"] == "new"


# --------------------------------------------------------------------------- run history


T0 = datetime.now(UTC) - timedelta(minutes=5)


def _run(sync: str, i: int, status: str = "success") -> dict[str, Any]:
    return {
        "run_id": (T0 + timedelta(seconds=i)).strftime("%Y%m%dT%H%M%SZ") + f"-{i:08x}",
        "sync": sync,
        "status": status,
        "started_at": "x",
        "finished_at": "y",
        "duration_seconds": 1.5,
        "counts": {"created": i, "updated": 0, "deactivated": 0, "unchanged": 0, "skipped": 0, "failed": 0},
        "error": f"password={SECRET}" if status == "failed" else None,
        "runner": {"host": "h", "pid": 1, "kind": "cli"},
        "changes_file": None,
        "errors_file": None,
        "guard_tripped": False,
        "forced": False,
        "unexpected": "dropped",
    }


def test_run_history_pages_filters_and_finds(store_factory: Any) -> None:
    store = store_factory(clock=Clock(), run_history_length=1000)
    for i in range(30):
        store.record_run(_run("jobs", i, "failed" if i % 10 == 0 else "success"))
        store.record_run(_run("titles", i))
    page = store.runs(sync="jobs", count=7)
    assert [r["counts"]["created"] for r in page] == [29, 28, 27, 26, 25, 24, 23]
    assert "unexpected" not in page[0]
    nxt = store.runs(sync="jobs", count=7, before=page[-1]["id"])
    assert [r["counts"]["created"] for r in nxt] == [22, 21, 20, 19, 18, 17, 16]
    failed = store.runs(sync="jobs", status="failed", count=2)
    assert [r["counts"]["created"] for r in failed] == [20, 10]
    assert SECRET not in str(failed) and "password" in failed[0]["error"]
    assert [r["counts"]["created"] for r in store.runs(sync="jobs", status="failed", before=failed[-1]["id"])] == [0]
    # every sync, merged newest first, paged without losing or repeating a run
    seen: list[tuple[str, int]] = []
    before = None
    while True:
        rows = store.runs(count=7, before=before)
        if not rows:
            break
        seen += [(r["sync"], r["counts"]["created"]) for r in rows]
        before = rows[-1]["id"]
    assert len(seen) == 60 and len(set(seen)) == 60
    # Merged by time: these 60 runs are recorded within a few milliseconds, and Redis
    # numbers each sync's stream on its own within a millisecond, so across syncs only
    # the newest is certain; within a sync the order is exact.
    assert seen[0][1] == 29
    for name in ("jobs", "titles"):
        assert [n for s, n in seen if s == name] == list(range(29, -1, -1)), name
    one = store.run(_run("jobs", 13)["run_id"], "jobs")
    assert one is not None and one["counts"]["created"] == 13
    assert store.run(T0.strftime("%Y%m%dT%H%M%SZ") + "-nothere", "jobs") is None
    assert store.run("not-a-run-id", "jobs") is None


def test_run_history_is_capped(client: redis.Redis, prefix: str) -> None:
    store = ControlStore(client, prefix=prefix, run_history_length=50)
    for i in range(400):
        store.record_run(_run("jobs", i))
    assert client.xlen(f"{prefix}runs:jobs") < 200  # approximate trimming: whole nodes
    assert store.runs(sync="jobs", count=1)[0]["counts"]["created"] == 399


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.runs(sync="employees", before="zzz"),
        lambda s: s.runs(before="12-x:jobs"),
        lambda s: s.audit_log(before="x"),
        lambda s: s.audit_log(before="1-2-3"),
    ],
    ids=["runs-text", "runs-merged", "audit-text", "audit-three-parts"],
)
def test_a_malformed_cursor_is_refused_and_redis_stays_in_use(client: redis.Redis, prefix: str, read: Any) -> None:
    """A bad ``before`` from a console URL (any signed-in viewer can type one) once made
    the store treat Redis as down for REDIS_RETRY_SECONDS: pauses made meanwhile lived in
    one process's memory and other runners ran paused syncs. It is a ValueError for the
    caller (the console answers 400); only a Redis that does not answer counts as down."""
    store = ControlStore(client, prefix=prefix, clock=Clock())
    with pytest.raises(ValueError):
        read(store)
    store.pause("titles", by="ops", reason="x")
    assert client.hget(f"{prefix}control:paused", "titles"), "the pause never reached Redis"
    other = ControlStore(client, prefix=prefix, clock=Clock())
    assert other.paused("titles") is not None


def test_only_an_unreachable_redis_counts_as_down(client: redis.Redis, prefix: str) -> None:
    """A Redis error about the data (a key of the wrong type: WRONGTYPE) is not an
    outage: the store keeps using Redis for the next call."""
    client.set(f"{prefix}audit", "not a stream")
    store = ControlStore(client, prefix=prefix, clock=Clock())
    store.audit(actor="a", role="operator", action="pause", target="titles", result="ok")
    store.pause("titles", by="ops")
    assert client.hget(f"{prefix}control:paused", "titles")
