"""SIGKILL at random points of a large initial run, ten times: no duplicate, and the
next run converges to exactly what an uninterrupted run produces.

The kill points come from a seeded RNG (``KILL_SEED``): each run is killed once the
emulators have logged a random number (1 to 60) of its writes (so kills land inside the
write phase, where a duplicate could be born: between a create being committed and its answer
being read, between two creates of one worker, during a re-check by key). In the
sandbox the emulators live in the killed process, so the target "crashes" too: only
what SQLite committed survives, as after a real outage.

The single-writer lock of a killed runner stays in Redis until it expires
(``LOCK_TTL_SECONDS``, 60 s by default; 2 s here so the test does not wait a minute per
kill): the test waits for the expiry instead of racing it. The next runner then waits
for writes the killed one may still have had in flight (it cannot tell a crash from a
holder cut off from Redis: utils/locks.py), up to half the TTL plus twice the
SafetyAmp timeout after the last check; ``SAFETYAMP_TIMEOUT_SECONDS=2`` keeps that at
a few seconds.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_faults_oracle import SAFETYAMP_SYNCS, clean_state, duplicates, pending, state_diff, target_state

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = 400
KILLS = 10
KILL_SEED = 20261122
LOCK_TTL = "2"
TIMEOUT = "2"  # SAFETYAMP_TIMEOUT_SECONDS: the in-process emulators answer in milliseconds


def logged_writes(sandbox: Path, service: str | None = None) -> int:
    """Writes (POST/PUT/PATCH/DELETE) the emulators (or one of them) have logged so far."""
    db = sandbox / "targets.sqlite"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            sql, args = "SELECT COUNT(*) FROM requests WHERE method != 'GET'", ()
            if service is not None:
                sql, args = sql + " AND service = ?", (service,)
            return int(conn.execute(sql, args).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def kill_after_writes(
    cmd: list[str], env: dict[str, str], sandbox: Path, after_n: int, out_file: Path, service: str | None = None
) -> int:
    """Start ``cmd`` and SIGKILL it once the emulators have logged ``after_n`` more writes
    (of ``service``, or of any); returns the writes logged meanwhile. Fails the test if the
    run finished before its kill point or sent no write within 120 s."""
    before = logged_writes(sandbox, service)
    started = time.monotonic()
    with open(out_file, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while proc.poll() is None and logged_writes(sandbox, service) - before < after_n:
            if time.monotonic() - started > 120:
                pytest.fail(f"the run sent no {service or ''} write within 120 s")
            time.sleep(0.005)
        finished_first = proc.poll() is not None
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not finished_first, f"{out_file.name}: the run finished before its kill point:\n{out_file.read_text()[-3000:]}"
    return logged_writes(sandbox, service) - before


def test_sigkill_ten_times_during_a_large_initial_run(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    want = clean_state(tmp_path_factory, SIZE)
    batch = BatchRunner(tmp_path, size=SIZE)
    env = batch.env(SYNC_TYPES=SAFETYAMP_SYNCS, LOCK_TTL_SECONDS=LOCK_TTL, SAFETYAMP_TIMEOUT_SECONDS=TIMEOUT)
    cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE), "--json"]
    rng = random.Random(KILL_SEED)
    kills: list[tuple[int, int, float]] = []
    users_after: list[int] = []
    for n in range(1, KILLS + 1):
        after_n = rng.randint(1, 60)
        started = time.monotonic()
        logged = kill_after_writes(cmd, env, batch.dir, after_n, tmp_path / f"run-{n}.out")
        kills.append((after_n, logged, round(time.monotonic() - started, 2)))
        assert duplicates(batch.dir) == {}, f"duplicate after kill {len(kills)}"
        users_after.append(len(target_state(batch.dir)["users"]))
        time.sleep(float(LOCK_TTL) + 0.2)  # the dead runner's lock expires
    print(f"\nkills (after N writes, writes logged, seconds): {kills}; users after each kill: {users_after}")
    final = batch.run(SYNC_TYPES=SAFETYAMP_SYNCS, LOCK_TTL_SECONDS=LOCK_TTL, SAFETYAMP_TIMEOUT_SECONDS=TIMEOUT)
    assert final["status"] in ("success", "partial"), final
    print(f"next run: {[(r['sync'], r['status'], r['created'], r['updated']) for r in final['runs']]}")
    assert users_after[-1] > 0, "the killed runs made no progress: the test did not test much"
    assert duplicates(batch.dir) == {}
    assert pending(batch, SYNC_TYPES=SAFETYAMP_SYNCS) == 0
    assert state_diff(target_state(batch.dir), want) == []
