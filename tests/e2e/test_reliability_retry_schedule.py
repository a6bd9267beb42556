"""The per-record retry schedule, end to end: real CLI, real Redis, the SafetyAmp emulator.

Two employees are refused by SafetyAmp with 422 "The email has already been taken" (a
user created by hand, without emp_id, holds their e-mail: the runbook's most common
case). Then:

* the next run skips them (no request at all for them), as the schedule says (2 h);
* one of them changes in the source (a new e-mail in Entra ID): retried at once, created;
* the other is released by an operator (``failed retry``) and retried while SafetyAmp
  throttles half the requests: it fails again, one attempt more (next wait 6 h), however
  many 429s it met; no throttled record enters the tracker;
* a steady run with known-bad records does not quarantine the whole sync;
* (slow) the schedule walked to its end: waits of 2, 6, 12, 24, 48, 96, 168 hours, then
  quarantined until the source changes. Time passes by moving the stored ``next_retry``
  into the past between runs (the subprocess's clock cannot be injected).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_faults_oracle import clean_state, error_entries, log_lines

pytestmark = pytest.mark.e2e

SIZE = 40
SYNCS = "departments,jobs,titles,employees"
REDIS_URL = "redis://127.0.0.1:6379/0"


def tracker(batch: BatchRunner) -> dict[str, dict]:
    """The failed-record entries of the employees sync, read straight from Redis."""
    digest = hashlib.sha256(str(batch.dir.resolve()).encode()).hexdigest()[:10]
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    try:
        return {k: json.loads(v) for k, v in client.hgetall(f"sandbox-{digest}:failed:employees").items()}
    finally:
        client.close()


def time_passes(batch: BatchRunner, key: str) -> None:
    """Move the stored next retry of ``key`` into the past: the schedule's wait is over."""
    digest = hashlib.sha256(str(batch.dir.resolve()).encode()).hexdigest()[:10]
    name = f"sandbox-{digest}:failed:employees"
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    try:
        entry = json.loads(client.hget(name, key))
        if entry.get("next_retry"):
            entry["next_retry"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        client.hset(name, key, json.dumps(entry, sort_keys=True))
    finally:
        client.close()


def hours_until(entry: dict) -> float:
    due = datetime.fromisoformat(entry["next_retry"])
    return round((due - datetime.fromisoformat(entry["last_failed"])).total_seconds() / 3600, 2)


def plant_conflicts(batch: BatchRunner, emails: list[str]) -> None:
    from sandbox.seed import ensure_seeded
    from sandbox.store import open_store

    ensure_seeded(batch.dir, size=batch.size, seed=7)
    st = open_store(batch.dir)
    try:
        for i, email in enumerate(emails):
            rid = 90_001 + i
            st.insert("safetyamp", "users", {"id": rid, "first_name": "Hand", "last_name": f"Made{i}", "email": email,
                                             "system_access": 1}, rid=rid)  # fmt: skip
    finally:
        st.close()


def change_email_in_source(batch: BatchRunner, key: str, old: str, new: str) -> str:
    """Give employee ``key`` a new e-mail where the product reads it (Entra ID mail, else bPREH)."""
    # Through the emulator's store, as an Entra admin's change: Graph's delta query sees it.
    st = batch.store()
    try:
        for rid, user in st.page("graph", "users", limit=100_000):
            if str(user.get("employeeId") or "").strip() == key and str(user.get("mail") or "").lower() == old:
                st.replace("graph", "users", rid, {**user, "mail": new})
                return "Entra ID"
    finally:
        st.close()
    conn = sqlite3.connect(batch.dir / "viewpoint.sqlite")
    try:
        with conn:
            conn.execute('UPDATE "bPREH" SET "Email" = ? WHERE "PRCo" = 1 AND "Employee" = ?', (new, int(key)))
    finally:
        conn.close()
    return "bPREH"


def user_posts(batch: BatchRunner, since: int) -> list[int]:
    return [r["status"] for r in batch.requests("safetyamp", since) if r["method"] == "POST" and r["path"] == "/api/users"]


def employees_of(summary: dict) -> dict:
    return next(r for r in summary["runs"] if r["sync"] == "employees")


def quarantine_lines(summary: dict) -> list[str]:
    return [x["message"] for x in log_lines(summary["_stderr"]) if "quarantined" in x.get("message", "")]


@pytest.fixture
def refused(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[BatchRunner, list[str], dict]:
    want = clean_state(tmp_path_factory, SIZE)["users"]
    batch = BatchRunner(tmp_path, size=SIZE)
    keys = sorted(want)[:2]
    plant_conflicts(batch, [want[k]["email"] for k in keys])
    first = batch.run(SYNC_TYPES=SYNCS)
    assert employees_of(first)["failed"] >= 2
    entries = tracker(batch)
    assert sorted(entries) == keys, entries
    for key in keys:
        assert entries[key]["attempts"] == 1 and hours_until(entries[key]) == 2.0 and not entries[key]["quarantined"]
        assert "already been taken" in entries[key]["reason"]
    hard = {e["key"]: e for e in error_entries(batch.output, "employees") if e["kind"] == "failed"}
    assert set(keys) <= set(hard) and all("already been taken" in hard[k]["reason"] for k in keys)
    return batch, keys, want


def test_refused_record_is_skipped_then_retried_on_source_change_and_429_costs_no_attempt(refused) -> None:
    batch, (changed, released), want = refused
    since = batch.mark()
    second = batch.run(SYNC_TYPES=SYNCS)
    assert employees_of(second)["skipped"] == 2
    assert user_posts(batch, since) == [], "a record waiting for its retry was sent anyway"
    assert quarantine_lines(second) == [], "known-bad records quarantined the whole sync"

    where = change_email_in_source(batch, changed, want[changed]["email"], f"fixed.{changed}@sandbox-co.com")
    retry = subprocess.run(
        [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--json", "failed", "retry",
         "--sync", "employees", "--key", released],
        cwd=ROOT, env=batch.env(SYNC_TYPES=SYNCS), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert retry.returncode == 0 and json.loads(retry.stdout.strip().splitlines()[-1]) == {"released": 1}, retry.stderr[-2000:]
    since = batch.mark()
    third = batch.run(SYNC_TYPES=SYNCS, SANDBOX_FAULTS=json.dumps({"safetyamp": {"throttle_rate": 0.5}}))
    posts = user_posts(batch, since)
    st = batch.store()
    try:
        throttled = sum(1 for r in st.requests(service="safetyamp", since_id=since) if r["status"] == 429)
    finally:
        st.close()
    entries = tracker(batch)
    print(f"\nsource change via {where}; run 3 user POSTs (server statuses): {posts}; 429s in run 3: {throttled}; "
          f"tracker: {[(k, e['attempts'], hours_until(e)) for k, e in entries.items()]}")  # fmt: skip
    assert employees_of(third)["created"] == 1 and employees_of(third)["skipped"] == 0
    assert sorted(s for s in posts if s != 429) == [201, 422], posts  # one create, one refusal: nothing else sent
    assert throttled > 0, "the throttling did not happen: the test proves nothing about 429"
    assert list(entries) == [released], "only the still-refused record is tracked"
    assert entries[released]["attempts"] == 2 and hours_until(entries[released]) == 6.0
    assert quarantine_lines(third) == []


@pytest.mark.slow
def test_schedule_walked_to_quarantine_then_released_by_a_source_change(refused) -> None:
    batch, (key, _other), want = refused
    waits = [hours_until(tracker(batch)[key])]
    for attempt in range(2, 9):
        time_passes(batch, key)
        batch.run("--only", "employees", SYNC_TYPES=SYNCS)
        entry = tracker(batch)[key]
        assert entry["attempts"] == attempt, entry
        waits.append(hours_until(entry) if entry["next_retry"] else "quarantined")
    print(f"\nwaits after failures 1..8: {waits}")
    assert waits == [2.0, 6.0, 12.0, 24.0, 48.0, 96.0, 168.0, "quarantined"]
    since = batch.mark()
    held = batch.run("--only", "employees", SYNC_TYPES=SYNCS)
    assert user_posts(batch, since) == [] and employees_of(held)["skipped"] == 2
    change_email_in_source(batch, key, want[key]["email"], f"fixed.{key}@sandbox-co.com")
    released = batch.run("--only", "employees", SYNC_TYPES=SYNCS)
    assert employees_of(released)["created"] == 1 and key not in tracker(batch)
