"""Redis restarted empty while a runner writes, with a second runner right behind it.

The demonstrated defect: the daemon held the cycle and departments locks and was
creating site clusters when Redis restarted without its data; a CronJob took the locks
at once and created the same clusters, because the daemon learnt of its loss only at
its next renewal (a third of LOCK_TTL_SECONDS later) and kept writing until then.

Each repetition runs on a fresh copy of one seeded sandbox folder and the test's own
``redis-server`` (``--save ''``: a restart loses every key). The first runner (G) writes
slowly (150 ms of emulated SafetyAmp latency per request); the test restarts Redis right
after G confirmed its cycle lock (its key's PTTL jumps back up): the worst moment for a
holder that only renews now and then, and, for one that confirms before every write,
the moment a write of it is in flight. The second runner (N) starts its cycle at once.
Two arrangements alternate: G = ``sync_batch`` and N = an idle daemon triggered with
``POST /sync`` (the CronJob-behind-a-CronJob case, where N reacts within a second), and
G = the daemon and N = ``sync_batch`` started after the restart (the demonstrated case).

Asserted every time: no site cluster or site exists twice (the oracle's
``duplicates``), both runners together leave exactly what a fault-free run leaves, G
logs "lock lost" and its interrupted sync fails saying so, N succeeds.

``test_lock_lost_after_redis_restart`` runs two repetitions (one of each arrangement) in
the normal step; the ``slow`` variant runs 20, seeded.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, get, wait_for
from tests.e2e.test_faults_oracle import duplicates, state_diff, target_state
from tests.support.redis_server import RedisProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

SIZE = 2000  # 81 department clusters: G writes for ~12 s at 150 ms a request
SYNCS = "departments"  # site clusters have no unique field SafetyAmp enforces: the exposed writes
COLLECTIONS = ("site_clusters",)
TOKEN = "lock-loss-operator-token-0123456789"
SEED = 20261128
SETTINGS = {
    "SYNC_TYPES": SYNCS,
    "LOCK_REQUIRED": "true",
    # 12 s: an old-style holder renews every 4 s, longer than N needs to start writing.
    "LOCK_TTL_SECONDS": "12",
    # 2 s: above the 150 ms latency and its 1.5 s spikes, and short, because a runner
    # taking over a lock after a Redis restart waits for writes of this age to land.
    "SAFETYAMP_TIMEOUT_SECONDS": "2",
    "SAFETYAMP_MAX_CONCURRENCY": "1",
}
SLOW_WRITES = json.dumps({"safetyamp": {"latency_ms": 150}})


@dataclass
class Outcome:
    arrangement: str
    first: dict[str, Any]
    """G's results by sync: status, created, error."""
    first_log: str
    second: dict[str, Any]
    duplicates: dict[str, list[str]]
    diff: list[str]
    restart_to_done: float
    handover: list[float]
    """Seconds the second runner's locks waited for the first runner's writes to land."""


def handover_waits(log: Path) -> list[float]:
    return [float(w) for w in re.findall(r"waiting ([0-9.]+) s for writes", log.read_text())]


def posts(batch: BatchRunner) -> int:
    st = batch.store()
    try:
        return sum(1 for r in st.requests(service="safetyamp") if r["method"] == "POST")
    finally:
        st.close()


def sandbox_prefix(sandbox_dir: Path) -> str:
    """The Redis key prefix ``--sandbox`` gives a folder (sync_batch.sandbox_environment)."""
    import hashlib

    return f"sandbox-{hashlib.sha256(str(sandbox_dir.resolve()).encode()).hexdigest()[:10]}:"


def restart_right_after_a_confirmation(server: RedisProcess, key: str, timeout: float = 60) -> None:
    """Restart Redis empty just after the holder confirmed (extended) its lock ``key``."""
    client = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        previous = client.pttl(key)
        while time.monotonic() < deadline:
            now = client.pttl(key)
            if previous > 0 and now > previous + 100:
                break
            previous = now
            time.sleep(0.005)
        else:
            raise AssertionError(f"{key} was never extended within {timeout} s")
    finally:
        client.close()
    server.stop()  # SIGKILL: no save, nothing survives
    server.start()


def daemon_cmd(batch: BatchRunner) -> list[str]:
    return [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE)]


def batch_cmd(batch: BatchRunner) -> list[str]:
    return [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE), "--json"]


def health(base: str) -> dict[str, Any]:
    r = get(base + "/health")
    return r.json() if r is not None and r.status_code in (200, 503) else {}


def last_runs(base: str) -> dict[str, Any]:
    return health(base).get("last_runs", {})


def by_sync(runs: Any) -> dict[str, Any]:
    items = runs.values() if isinstance(runs, dict) else runs
    return {r["sync"]: {"status": r["status"], "created": r["created"], "error": r.get("error")} for r in items}


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def batch_first(tmp: Path, template: Path, server: RedisProcess, rng: random.Random, want: dict[str, Any]) -> Outcome:
    """G = sync_batch (slow writes); N = an idle daemon, triggered after the restart."""
    batch = BatchRunner(tmp, size=SIZE)
    shutil.copytree(template, batch.dir)
    env = {**SETTINGS, "REDIS_URL": server.url}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    g_log, n_log = tmp / "first.log", tmp / "second.log"
    with open(g_log, "w") as gl, open(n_log, "w") as nl:
        g = subprocess.Popen(batch_cmd(batch), cwd=ROOT, env=batch.env(**env, SANDBOX_FAULTS=SLOW_WRITES),
                             stdout=subprocess.PIPE, stderr=gl, text=True)  # fmt: skip
        n: subprocess.Popen[Any] | None = None
        try:
            assert wait_for(lambda: posts(batch) > 0, 60, 0.05), "the first runner never wrote"
            n = subprocess.Popen(daemon_cmd(batch), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=nl,
                                 env=batch.env(**env, PORT=str(port), HOST="127.0.0.1", SYNC_INTERVAL_MINUTES="60",
                                               SYNC_TRIGGER_TOKEN=TOKEN))  # fmt: skip
            idle = wait_for(lambda: (r := last_runs(base)).get("departments") and r, 60, 0.1)
            assert idle, "the daemon never finished its start-up cycle"
            assert {r["status"] for r in idle.values()} == {"skipped"}, idle  # the first runner holds the cycle
            before = idle["departments"]["run_id"]
            more = posts(batch) + rng.randint(0, 15)
            assert wait_for(lambda: posts(batch) >= more, 60, 0.02), "the first runner stopped writing early"
            restart_right_after_a_confirmation(server, sandbox_prefix(batch.dir) + "lock:sync-departments")
            restarted = time.monotonic()
            r = requests.post(base + "/sync", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            assert r.status_code == 202
            out = g.communicate(timeout=120)[0]
            done = wait_for(
                lambda: (r := last_runs(base)).get("departments", {}).get("run_id") not in (None, before) and r, 120, 0.1
            )
            assert done, "the daemon's triggered cycle never finished"
            elapsed = time.monotonic() - restarted
        finally:
            stop(g)
            if n is not None:
                stop(n)
    first = by_sync(json.loads(out.strip().splitlines()[-1])["runs"])
    return Outcome("sync_batch, then the daemon", first, g_log.read_text(), by_sync(done), duplicates(batch.dir),
                   state_diff(ours(target_state(batch.dir)), want), elapsed, handover_waits(tmp / "second.log"))  # fmt: skip


def daemon_first(tmp: Path, template: Path, server: RedisProcess, rng: random.Random, want: dict[str, Any]) -> Outcome:
    """G = the daemon (slow writes); N = sync_batch started after the restart."""
    batch = BatchRunner(tmp, size=SIZE)
    shutil.copytree(template, batch.dir)
    env = {**SETTINGS, "REDIS_URL": server.url}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    g_log = tmp / "first.log"
    with open(g_log, "w") as gl:
        g = subprocess.Popen(daemon_cmd(batch), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=gl,
                             env=batch.env(**env, PORT=str(port), HOST="127.0.0.1", SYNC_INTERVAL_MINUTES="60",
                                           SANDBOX_FAULTS=SLOW_WRITES))  # fmt: skip
        try:
            more = 1 + rng.randint(0, 40)
            assert wait_for(lambda: posts(batch) >= more, 90, 0.02), "the daemon never wrote"
            restart_right_after_a_confirmation(server, sandbox_prefix(batch.dir) + "lock:sync-departments")
            restarted = time.monotonic()
            n = subprocess.run(batch_cmd(batch), cwd=ROOT, env=batch.env(**env), capture_output=True, text=True, timeout=180)
            (tmp / "second.log").write_text(n.stderr)
            assert n.returncode == 0, n.stderr[-3000:]
            done = wait_for(lambda: (r := last_runs(base)).get("departments") and r, 120, 0.1)
            assert done, "the daemon's cycle never finished"
            elapsed = time.monotonic() - restarted
        finally:
            stop(g)
    second = by_sync(json.loads(n.stdout.strip().splitlines()[-1])["runs"])
    return Outcome("the daemon, then sync_batch", by_sync(done), g_log.read_text(), second, duplicates(batch.dir),
                   state_diff(ours(target_state(batch.dir)), want), elapsed, handover_waits(tmp / "second.log"))  # fmt: skip


def ours(state: dict[str, Any]) -> dict[str, Any]:
    return {c: state.get(c, {}) for c in COLLECTIONS}


def run_repetitions(tmp_path: Path, count: int) -> list[Outcome]:
    from sandbox.seed import ensure_seeded

    template = tmp_path / "template"
    ensure_seeded(template, size=SIZE, seed=7)
    twin = BatchRunner(tmp_path / "twin", size=SIZE)
    shutil.copytree(template, twin.dir)
    twin.run(SYNC_TYPES=SYNCS)  # fault-free: the expected end state
    want = ours(target_state(twin.dir))
    rng = random.Random(SEED)
    outcomes = []
    server = RedisProcess(tmp_path).start()
    try:
        for i in range(count):
            arrange = batch_first if i % 2 == 0 else daemon_first
            outcome = arrange(tmp_path / f"rep-{i}", template, server, rng, want)
            outcomes.append(outcome)
            print(f"\nrep {i} ({outcome.arrangement}): first {outcome.first}; second {outcome.second}; "
                  f"duplicates {outcome.duplicates}; handover waits {outcome.handover}; "
                  f"{outcome.restart_to_done:.1f} s from the restart to the end")  # fmt: skip
    finally:
        server.stop()
    return outcomes


def check(outcomes: list[Outcome]) -> None:
    dups = {i: o.duplicates for i, o in enumerate(outcomes) if o.duplicates}
    assert dups == {}, f"duplicates in {len(dups)} of {len(outcomes)} repetitions: {dups}"
    for i, o in enumerate(outcomes):
        assert o.diff == [], (i, o.diff)
        assert "lock lost" in o.first_log, f"rep {i}: the first runner never logged 'lock lost'"
        lost = [s for s, r in o.first.items() if r["status"] == "failed" and "lock lost" in (r["error"] or "")]
        assert lost, f"rep {i}: no sync of the first runner failed with 'lock lost': {o.first}"
        assert all(r["status"] == "success" for r in o.second.values()), (i, o.second)


@pytest.mark.slow  # 40-75 s: in CI's slow step (with its twenty repetitions), so the README's default run stays short
def test_lock_lost_after_redis_restart(tmp_path: Path) -> None:
    check(run_repetitions(tmp_path, 2))


@pytest.mark.slow
def test_lock_lost_after_redis_restart_20_times(tmp_path: Path) -> None:
    check(run_repetitions(tmp_path, 20))


def test_file_locks_without_redis_still_write(tmp_path: Path) -> None:
    """LOCK_REQUIRED=false and no Redis: file locks, whose fence check costs nothing."""
    batch = BatchRunner(tmp_path, size=60)
    summary = batch.run(SYNC_TYPES=SYNCS, LOCK_REQUIRED="false", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert summary["status"] == "success" and summary["runs"][0]["created"] == 6, summary["runs"]
    assert "using the file lock" in summary["_stderr"] and "lock lost" not in summary["_stderr"]
    assert duplicates(batch.dir) == {}
