"""Redis stopped in the middle of a daemon's run, then restarted (empty).

The test starts its *own* redis-server on a free port (``--save ''``: a restart loses
everything, the worst case) and points the daemon's REDIS_URL at it; the shared Redis
on 6379 is never touched. The daemon runs with LOCK_REQUIRED=true, the production
default. Asserted:

* /live answers 200 during the whole outage (it never depends on Redis);
* the sync that was running when Redis went away finishes (degraded: tracker and
  breakers in memory); a sync that must take its lock while Redis is down stops with a
  clear status naming Redis (never two writers);
* nothing is lost: records the target refused during the outage reach Redis once it is
  back (the tracker replays them), the next cycle skips them as scheduled, and the
  target ends equal to a fault-free run's, without duplicates;
* /health reports the tracker degraded, then back on Redis.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, get, wait_for
from tests.e2e.test_faults_oracle import SAFETYAMP_SYNCS, clean_state, duplicates, state_diff, target_state

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

SIZE = 60
TOKEN = "redis-outage-operator-token-0123456789"
CONFLICTS = 3


class OwnRedis:
    """A throw-away redis-server without persistence on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.exceptions.RedisError:
                return False

        assert wait_for(answers, 10, 0.02), "own redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def plant_conflicts(batch: BatchRunner, want: dict) -> list[str]:
    """Hand-made SafetyAmp users (no emp_id) holding the e-mails of the last employees
    in apply order: SafetyAmp answers 422 "already been taken" for those employees."""
    from sandbox.seed import ensure_seeded
    from sandbox.store import open_store

    ensure_seeded(batch.dir, size=batch.size, seed=7)
    keys = sorted(want["users"])[-CONFLICTS:]
    st = open_store(batch.dir)
    try:
        for i, key in enumerate(keys):
            rid = 90_001 + i
            st.insert("safetyamp", "users", {"id": rid, "first_name": "Hand", "last_name": f"Made{i}",
                                             "email": want["users"][key]["email"], "system_access": 1}, rid=rid)  # fmt: skip
    finally:
        st.close()
    return keys


def users_posts(batch: BatchRunner) -> int:
    st = batch.store()
    try:
        return sum(1 for r in st.requests(service="safetyamp") if r["method"] == "POST" and r["path"] == "/api/users")
    finally:
        st.close()


@pytest.mark.slow  # 25-90 s: in CI's slow step, so the README's default run stays short
def test_redis_outage_mid_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    want = clean_state(tmp_path_factory, SIZE)
    own = OwnRedis(tmp_path)
    own.start()
    batch = BatchRunner(tmp_path, size=SIZE)
    conflicts = plant_conflicts(batch, want)
    port = free_port()
    env = batch.env(
        PORT=str(port), HOST="127.0.0.1", REDIS_URL=own.url, LOCK_REQUIRED="true", SYNC_TYPES=SAFETYAMP_SYNCS,
        SYNC_INTERVAL_MINUTES="60", SYNC_TRIGGER_TOKEN=TOKEN, SAFETYAMP_MAX_CONCURRENCY="2",
        # A lock taken on a Redis younger than twice this + 1 s waits out the rest (it
        # cannot tell a fresh Redis from one that lost a holder's keys): 5 s, not 61 s.
        SAFETYAMP_TIMEOUT_SECONDS="2",
        SANDBOX_FAULTS=json.dumps({"safetyamp": {"latency_ms": 60}}),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    live_codes: list[int] = []
    watching = threading.Event()

    def watch_live() -> None:
        while not watching.is_set():
            r = get(base + "/live")
            live_codes.append(r.status_code if r is not None else 0)
            time.sleep(0.1)

    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    watcher = threading.Thread(target=watch_live, daemon=True)
    try:
        assert wait_for(lambda: (r := get(base + "/live")) is not None and r.status_code == 200, 30), "daemon did not come up"
        watcher.start()
        assert wait_for(lambda: users_posts(batch) > 0, 90, 0.05), "the employees sync never started writing"
        own.stop()  # Redis gone in the middle of the employees sync
        stopped_at = time.monotonic()
        health = lambda: get(base + "/health").json()  # noqa: E731
        assert wait_for(lambda: "employees" in health()["last_runs"], 120, 0.1), "employees never finished"
        during = health()
        own.start()  # back, and empty
        outage = time.monotonic() - stopped_at
        assert wait_for(lambda: "vehicles" in health()["last_runs"], 120, 0.2), "the cycle never finished"
        first = health()["last_runs"]
        print(f"\noutage {outage:.1f} s; tracker during it: {during['dependencies']['redis']}; "
              f"first cycle: {[(s, r['status'], r.get('error')) for s, r in first.items()]}")  # fmt: skip
        assert during["dependencies"]["redis"]["degraded"] is True
        assert first["employees"]["status"] in ("success", "partial"), first["employees"]  # finished degraded
        for sync, run in first.items():
            assert run["status"] in ("success", "partial") or "Redis" in (run.get("error") or ""), (sync, run)
        # The tracker replays what it learnt while Redis was down (probe every 30 s).
        recovered = wait_for(lambda: health()["dependencies"]["redis"]["degraded"] is False, 60, 1.0)
        assert recovered, health()["dependencies"]["redis"]
        stored = {k: json.loads(v) for k, v in _failed_hash(own).items()}
        assert sorted(stored) == sorted(conflicts), stored
        assert all(e["attempts"] == 1 and "already been taken" in e["reason"] for e in stored.values())
        # Next cycle: scheduled records are skipped (the tracker remembered), the rest is complete.
        done_before = first["vehicles"]["run_id"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.post(base + "/sync", headers=auth, timeout=5).status_code == 202
        assert wait_for(lambda: health()["last_runs"]["vehicles"]["run_id"] != done_before, 120, 0.5)
        second = health()["last_runs"]
        print(f"second cycle: {[(s, r['status'], r['created'], r['skipped']) for s, r in second.items()]}")
        assert all(r["status"] in ("success", "partial") for r in second.values()), second
        assert second["employees"]["skipped"] == CONFLICTS
        assert min(live_codes) == 200 and len(live_codes) > 10, f"/live answered {sorted(set(live_codes))}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        watching.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        own.stop()
    assert duplicates(batch.dir) == {}
    got = target_state(batch.dir)
    got["users"] = {k: v for k, v in got["users"].items() if not k.startswith("(no key)")}
    expected = {**want, "users": {k: v for k, v in want["users"].items() if k not in conflicts}}
    assert state_diff(got, expected) == []


def _failed_hash(own: OwnRedis) -> dict[str, str]:
    client = own.client()
    names = [k for k in client.scan_iter(match="*failed:employees")]
    assert len(names) == 1, names
    return client.hgetall(names[0])
