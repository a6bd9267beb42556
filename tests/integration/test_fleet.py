"""config/fleet.py: many tenants shared by replicas through Redis locks and due times.

Two Fleet objects stand for two replicas: each has its own slots and runners, both share
one real Redis (a unique prefix per test). The runners are small fakes that record
when each tenant's cycle ran and on which replica; the locks are the product's
RedisLock. The processes-and-emulators proof is tests/e2e/test_tenants_replicas.py.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config.fleet import Fleet, due_key
from config.settings import Settings, load_settings
from config.tenants import TenantChanges
from tests.support.redis_server import REDIS_URL, require_real_redis
from utils.errors import ConfigurationError
from utils.locks import RedisLock
from utils.metrics import Metrics
from utils.redis_client import make_redis
from utils.triggers import TriggerQueue


@pytest.fixture
def redis_client() -> Any:
    client = make_redis(require_real_redis(REDIS_URL))  # the product's client (text answers), as the fleet's
    yield client
    client.close()


def tenant_settings(prefix: str, tmp: Path, interval: int = 1) -> Settings:
    return load_settings(
        {
            "SYNC_TYPES": "vehicles",
            "SAFETYAMP_TOKEN": "t" * 24,
            "SAFETYAMP_FQDN": "a.safetyamp.com",
            "SAMSARA_API_KEY": "k" * 24,
            "TENANTS_DIR": str(tmp),
            "REDIS_PREFIX": prefix,
            "OUTPUT_DIR": str(tmp / "out"),
            "SYNC_INTERVAL_MINUTES": str(interval),
        },
        dotenv_path=None,
    )


@dataclass
class Ledger:
    """Every cycle any replica ran: (tenant, replica, started, finished)."""

    runs: list[tuple[str, str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    duration: float = 0.05
    slow: dict[str, float] = field(default_factory=dict)

    def of(self, tenant: str) -> list[tuple[str, str, float, float]]:
        with self.lock:
            return [r for r in self.runs if r[0] == tenant]


class FakeRuntime:
    def __init__(self) -> None:
        self.closed = False
        self.control = None

    def close(self) -> None:
        self.closed = True


class FakeRunner:
    """What the fleet needs of a tenant's daemon (main.TenantDaemon)."""

    def __init__(self, tenant: str, settings: Settings, replica: str, redis: Any, ledger: Ledger) -> None:
        self.tenant = tenant
        self.replica = replica
        self.settings = settings
        self.redis = redis
        self.ledger = ledger
        self.state = type("State", (), {})()
        self.state.triggers = TriggerQueue()
        self.state.syncs = ("vehicles",)
        self.state.next_run_at = None
        self.jobs = type("Jobs", (), {"cycle_started": staticmethod(lambda *_a: None)})()

    def cycle_lock(self) -> RedisLock:
        return RedisLock(self.redis, "sync-cycle", prefix=self.settings.redis_prefix, ttl_seconds=5)

    def cycle_lock_holder(self) -> Any:
        return self.cycle_lock().holder()

    def not_held(self, pending: Any) -> tuple[str, ...]:
        return tuple(pending.syncs)

    def run_cycle(self, syncs: tuple[str, ...], **kwargs: Any) -> list[Any]:
        assert kwargs["held"] is not None and kwargs["held"].held  # the claim is the cycle lock
        started = time.monotonic()
        time.sleep(self.ledger.slow.get(self.tenant, self.ledger.duration))
        with self.ledger.lock:
            self.ledger.runs.append((self.tenant, self.replica, started, time.monotonic()))
        return []


class FakeWatcher:
    def __init__(self, tenants: dict[str, Settings], problems: tuple[Any, ...] = ()) -> None:
        self.tenants = dict(tenants)
        self.problems = problems
        self._seen: dict[str, Settings] = {}

    def poll(self, *, force: bool = False) -> TenantChanges:
        old, new = self._seen, dict(self.tenants)
        self._seen = new
        return TenantChanges(
            added={t: s for t, s in new.items() if t not in old},
            changed={t: s for t, s in new.items() if t in old and old[t] != s},
            removed=tuple(sorted(t for t in old if t not in new)),
            problems=self.problems,
            problems_changed=False,
            tenants=new,
        )


class Replica:
    def __init__(self, name: str, watcher: FakeWatcher, redis: Any, ledger: Ledger, slots: int = 2, bad: tuple[str, ...] = ()):
        self.metrics = Metrics(tenants=True)
        self.stop = threading.Event()
        self.runners: dict[str, FakeRunner] = {}

        def build(tenant: str, settings: Settings, syncs: tuple[str, ...]) -> tuple[Any, Any]:
            if tenant in bad:
                raise ConfigurationError(f"vehicles: SAMSARA_API_KEY of {tenant} is refused by the test")
            runner = FakeRunner(tenant, settings, name, redis, ledger)
            self.runners[tenant] = runner
            return FakeRuntime(), runner

        self.fleet = Fleet(watcher, build, redis=redis, metrics=self.metrics, slots=slots, poll_seconds=0.0)

    def tick_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.fleet.tick()
            time.sleep(0.02)

    def close(self) -> None:
        self.fleet.close(5)


def tenants_of(n: int, prefix: str, tmp: Path, interval: int = 1) -> dict[str, Settings]:
    return {f"t{i:02d}": tenant_settings(prefix, tmp, interval) for i in range(n)}


def cleanup(redis: Any, prefix: str) -> None:
    for key in redis.scan_iter(f"{prefix}*"):
        redis.delete(key)


@pytest.fixture
def prefix(redis_client: Any) -> Any:
    value = f"test-fleet-{uuid.uuid4().hex[:8]}:"
    yield value
    cleanup(redis_client, value)


def run_together(replicas: list[Replica], seconds: float) -> None:
    threads = [threading.Thread(target=r.tick_for, args=(seconds,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def overlaps(runs: list[tuple[str, str, float, float]]) -> list[Any]:
    found = []
    ordered = sorted(runs, key=lambda r: r[2])
    for a, b in itertools.pairwise(ordered):
        if b[2] < a[3]:
            found.append((a, b))
    return found


def test_two_replicas_share_the_tenants_and_never_run_one_twice_at_once(redis_client, prefix, tmp_path):
    ledger = Ledger(duration=0.1)
    watcher_a = FakeWatcher(tenants_of(8, prefix, tmp_path))
    watcher_b = FakeWatcher(tenants_of(8, prefix, tmp_path))
    a, b = Replica("a", watcher_a, redis_client, ledger), Replica("b", watcher_b, redis_client, ledger)
    try:
        run_together([a, b], 1.5)
    finally:
        a.close()
        b.close()
    for tenant in watcher_a.tenants:
        runs = ledger.of(tenant)
        # Due once (interval 1 minute): exactly one run, on one replica or the other.
        assert len(runs) == 1, (tenant, runs)
        assert redis_client.get(f"{prefix}t:{tenant}:next_due") is not None
    replicas = {r[1] for r in ledger.runs}
    assert replicas == {"a", "b"}  # the work was shared: 8 tenants of 100 ms on 2 slots each
    assert all(not overlaps(ledger.of(t)) for t in watcher_a.tenants)


def test_a_tenant_runs_again_when_due_and_the_schedule_survives_the_replica(redis_client, prefix, tmp_path):
    ledger = Ledger()
    watcher = FakeWatcher(tenants_of(1, prefix, tmp_path))
    a = Replica("a", watcher, redis_client, ledger)
    try:
        a.tick_for(0.5)
        assert len(ledger.of("t00")) == 1
        # Another replica (a new process: no local memory) sees the due time in Redis.
        b = Replica("b", FakeWatcher(tenants_of(1, prefix, tmp_path)), redis_client, ledger)
        b.tick_for(0.5)
        assert len(ledger.of("t00")) == 1, "ran again before it was due"
        # Due now (as if the interval had passed): the next replica to look runs it.
        redis_client.set(due_key(b.runners["t00"].settings), repr(time.time() - 1))
        b.tick_for(0.5)
        assert [r[1] for r in ledger.of("t00")] == ["a", "b"]
        b.close()
    finally:
        a.close()


def test_a_tenant_held_by_another_runner_is_left_to_it(redis_client, prefix, tmp_path):
    ledger = Ledger()
    tenants = tenants_of(2, prefix, tmp_path)
    a = Replica("a", FakeWatcher(tenants), redis_client, ledger)
    other = RedisLock(redis_client, "sync-cycle", prefix=f"{prefix}t:t00:", ttl_seconds=5)
    assert other.acquire(blocking=False)  # a CronJob (or a replica) is syncing t00
    try:
        a.tick_for(0.6)
        assert ledger.of("t00") == []
        assert len(ledger.of("t01")) == 1  # one tenant held elsewhere holds up no other
        other.release()
        a.tick_for(2.5)  # re-asked after HELD_ELSEWHERE_RECHECK_SECONDS
        assert len(ledger.of("t00")) == 1
    finally:
        other.release()
        a.close()


def test_slow_tenant_occupies_one_slot_and_the_most_overdue_go_first(redis_client, prefix, tmp_path):
    ledger = Ledger(duration=0.02, slow={"t00": 1.0})
    tenants = tenants_of(4, prefix, tmp_path)
    # t03 is the most overdue, then t02, t01; t00 never ran (due "now": first of all).
    now = time.time()
    for i, name in ((3, "t03"), (2, "t02"), (1, "t01")):
        scoped_prefix = f"{prefix}t:{name}:"
        redis_client.set(f"{scoped_prefix}next_due", repr(now - 100 * i))
    a = Replica("a", FakeWatcher(tenants), redis_client, ledger, slots=2)
    try:
        a.tick_for(0.8)
    finally:
        a.close()
    runs = sorted(ledger.runs, key=lambda r: r[2])
    order = [r[0] for r in runs]
    # Never run (t00) counts as most overdue; then by due time. Two slots: t00 and t03 first.
    assert set(order[:2]) == {"t00", "t03"} and order[2:] == ["t02", "t01"], order
    # The slow t00 held one slot only: t02 and t01 ran and finished on the other meanwhile.
    finished = {r[0]: r[3] for r in runs}
    assert finished["t01"] < finished["t00"]


def test_a_bad_tenant_stops_only_itself(redis_client, prefix, tmp_path):
    ledger = Ledger()
    a = Replica("a", FakeWatcher(tenants_of(3, prefix, tmp_path)), redis_client, ledger, bad=("t01",))
    try:
        a.tick_for(0.5)
    finally:
        a.close()
    assert {r[0] for r in ledger.runs} == {"t00", "t02"}
    assert "t01" in a.fleet.status.errors and "refused by the test" in a.fleet.status.errors["t01"]
    text = __import__("prometheus_client").generate_latest(a.metrics.registry).decode()
    assert 'sync_tenants{state="active"} 2.0' in text
    assert 'sync_tenants{state="invalid"} 1.0' in text


def test_a_removed_tenant_finishes_its_run_then_stops(redis_client, prefix, tmp_path):
    ledger = Ledger(duration=0.02, slow={"t00": 0.6})
    watcher = FakeWatcher(tenants_of(2, prefix, tmp_path))
    a = Replica("a", watcher, redis_client, ledger)
    try:
        a.tick_for(0.2)  # t00 is running
        entry = a.fleet.get("t00")
        assert entry is not None and entry.running
        del watcher.tenants["t00"]
        a.tick_for(0.1)
        assert a.fleet.get("t00") is not None, "dropped in the middle of its run"
        a.tick_for(1.0)
        assert a.fleet.get("t00") is None
        assert entry.runtime.closed
        assert len(ledger.of("t00")) == 1  # its run finished
        assert a.fleet.names() == ["t01"]
    finally:
        a.close()


def test_an_operator_request_runs_a_tenant_before_it_is_due(redis_client, prefix, tmp_path):
    ledger = Ledger()
    a = Replica("a", FakeWatcher(tenants_of(1, prefix, tmp_path)), redis_client, ledger)
    try:
        a.tick_for(0.4)
        assert len(ledger.of("t00")) == 1
        a.runners["t00"].state.triggers.request("vehicles", operator=True, by="test")
        a.tick_for(0.4)
        assert len(ledger.of("t00")) == 2
    finally:
        a.close()


def test_overdue_counts_tenants_nobody_runs(redis_client, prefix, tmp_path):
    ledger = Ledger()
    tenants = tenants_of(3, prefix, tmp_path)
    a = Replica("a", FakeWatcher(tenants), redis_client, ledger, slots=1)
    a.fleet.refresh(force=True)
    now = time.time()
    for name in tenants:
        redis_client.set(f"{prefix}t:{name}:next_due", repr(now - 600))
    busy = RedisLock(redis_client, "sync-cycle", prefix=f"{prefix}t:t00:", ttl_seconds=5)
    assert busy.acquire(blocking=False)  # t00 runs elsewhere: late, but not waiting
    try:
        a.fleet._count_overdue(a.fleet.due_times(), time.time())
        assert a.fleet.status.overdue == 2
        text = __import__("prometheus_client").generate_latest(a.metrics.registry).decode()
        assert "sync_tenants_overdue 2.0" in text
    finally:
        busy.release()
        a.close()


def test_redis_down_backs_off_instead_of_spinning(tmp_path):
    ledger = Ledger()
    dead = make_redis("redis://127.0.0.1:1/0", socket_timeout=0.2)
    a = Replica("a", FakeWatcher(tenants_of(2, "test-dead:", tmp_path)), dead, ledger)
    try:
        a.tick_for(0.5)
    finally:
        a.close()
    assert ledger.runs == []
    assert all(a.fleet.get(t).not_before > time.time() + 10 for t in ("t00", "t01"))


def test_a_changed_tenant_keeps_its_series_and_a_shorter_interval_applies_at_once(redis_client, prefix, tmp_path, caplog):
    ledger = Ledger()
    watcher = FakeWatcher(tenants_of(1, prefix, tmp_path, interval=60))
    a = Replica("a", watcher, redis_client, ledger)
    try:
        a.tick_for(0.4)
        assert len(ledger.of("t00")) == 1
        a.metrics.for_tenant("t00").sync_runs.labels("vehicles", "success").inc()
        due_before = float(redis_client.get(f"{prefix}t:t00:next_due"))
        assert due_before > time.time() + 3000  # an hour away
        watcher.tenants["t00"] = tenant_settings(prefix, tmp_path, interval=1)
        with caplog.at_level("INFO", logger="fleet"):
            a.fleet.refresh(force=True)
        assert any("t00 changed" in r.getMessage() for r in caplog.records)
        due_after = float(redis_client.get(f"{prefix}t:t00:next_due"))
        assert due_after <= time.time() + 60 * 1.05 + 1  # the new 1-minute interval (+ jitter), not the old hour
        text = __import__("prometheus_client").generate_latest(a.metrics.registry).decode()
        assert 'sync_runs_total{status="success",sync="vehicles",tenant="t00"} 1.0' in text
    finally:
        a.close()
