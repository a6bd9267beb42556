"""Issue 4's acceptance through the real CLI: OneRoster emulator -> scim2-server.

``python sync_batch.py --sandbox --sandbox-dir <tmp> --only rosters --json`` converges, a
second run sends no write to SCIM (counted by the server's request log and by the JSON
summary's requests.scim), a delta after ``python -m sandbox mutate`` writes only what
changed, and a withdrawn student ends active=false with no group membership. Run twice:
with SCIM Bulk (scim2-server announces it; every write of a run in one POST /Bulk here)
and with SCIM_BULK=false (one request per change). What was written is read from
scim2-server's journal, one line per acknowledged write, in both modes.

The delta cursor lives in real Redis (db 15 here); CI=true fails if Redis is down.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.roster_seed import open_roster
from sandbox.scim import JOURNAL_FILE
from tests.e2e.conftest import BatchRunner, writes

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


@pytest.fixture
def rosters(tmp_path: Path) -> Any:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    batch = BatchRunner(tmp_path, size=40)
    yield batch
    digest = hashlib.sha256(str(batch.dir.resolve()).encode()).hexdigest()[:10]
    for key in client.scan_iter(f"sandbox-{digest}:*"):
        client.delete(key)
    client.close()


def run(batch: BatchRunner, *args: str, bulk: str = "true") -> dict[str, Any]:
    summary = batch.run("--only", "rosters", *args, REDIS_URL=REDIS_URL, SCIM_BULK=bulk)
    assert summary["status"] == "success", (summary, summary["_stderr"][-3000:])
    return summary


def scim_state(batch: BatchRunner) -> dict[tuple[str, str], dict[str, Any]]:
    """What scim2-server holds, from its journal (type, id) -> resource."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for line in (batch.dir / JOURNAL_FILE).read_text().splitlines():
        entry = json.loads(line)
        if entry["op"] == "put":
            state[(entry["type"], entry["id"])] = entry["resource"]
        else:
            state.pop((entry["type"], entry["id"]), None)
    return state


def server_writes(batch: BatchRunner, since: int) -> list[dict[str, Any]]:
    return [r for r in batch.requests("scim", since) if r["method"] in WRITE_METHODS]


def journal_mark(batch: BatchRunner) -> int:
    return len((batch.dir / JOURNAL_FILE).read_text().splitlines())


def journal_writes(batch: BatchRunner, since: int) -> list[tuple[str, str]]:
    """(type, id) of every write scim2-server acknowledged after the mark."""
    lines = (batch.dir / JOURNAL_FILE).read_text().splitlines()[since:]
    return [(json.loads(line)["type"], json.loads(line)["id"]) for line in lines]


@pytest.mark.slow  # 20-45 s each: in CI's slow step, so the README's default run stays short
@pytest.mark.parametrize("bulk", ["true", "false"])
def test_rosters_converge_delta_touches_only_changes_and_withdrawn_leave_groups(rosters: BatchRunner, bulk: str) -> None:
    batch = rosters
    j = journal_mark(batch) if (batch.dir / JOURNAL_FILE).exists() else 0
    first = run(batch, bulk=bulk)
    r1 = first["runs"][0]
    assert r1["sync"] == "rosters" and r1["created"] > 0 and r1["failed"] == 0
    if bulk == "true":  # every create of the run in one Bulk request (under maxOperations 1000)
        assert first["requests"]["scim"].get("POST") == 1 and "PATCH" not in first["requests"]["scim"]
    else:
        assert first["requests"]["scim"].get("POST") == r1["created"]
    assert len(journal_writes(batch, j)) == r1["created"]  # one operation per change
    state = scim_state(batch)
    users = {r["externalId"]: r for (t, _), r in state.items() if t == "User"}
    groups = {r["externalId"]: r for (t, _), r in state.items() if t == "Group"}
    assert len(users) + len(groups) == r1["created"]
    assert all(g.get("members") for g in groups.values())

    m = batch.mark()
    second = run(batch, bulk=bulk)
    assert writes(second, "scim") == 0, second["requests"]
    assert server_writes(batch, m) == []
    # a delta, although this sandbox start gave the emulators new ports (the cursor's scope
    # is the sandbox folder, not the URL)
    assert "rosters: delta read" in second["_stderr"], second["_stderr"][-2000:]

    before = datetime.now(UTC)
    summary = batch.mutate(5, seed=3)
    assert summary["roster_withdrawals"] >= 1 and summary["roster_moves"] >= 1 and summary["roster_teachers_added"] >= 1
    db = open_roster(batch.dir)
    try:
        changed_users = {
            u["sourcedId"]: u for u in db.all("users") if u["dateLastModified"] >= before.strftime("%Y-%m-%dT%H:%M:%S")
        }
        changed_enr = [e for e in db.all("enrollments") if e["dateLastModified"] >= before.strftime("%Y-%m-%dT%H:%M:%S")]
    finally:
        db.close()
    withdrawn = [sid for sid, u in changed_users.items() if u["status"] == "tobedeleted" and u["role"] == "student"]
    assert withdrawn
    touched_classes = {e["class"] for e in changed_enr}

    m = batch.mark()
    j = journal_mark(batch)
    third = run(batch, bulk=bulk)
    r3 = third["runs"][0]
    done = r3["created"] + r3["updated"] + r3["deactivated"]
    applied = journal_writes(batch, j)
    assert done > 0 and len(applied) == done, (r3, third["requests"])  # one write per change
    if bulk == "true":
        assert writes(third, "scim") == 1 and [w["path"] for w in server_writes(batch, m)] == ["/v2/Bulk"]
    else:
        assert writes(third, "scim") == done, (r3, third["requests"])
    state = scim_state(batch)
    ext_of = {rid: r.get("externalId") for (_t, rid), r in state.items()}
    created = {r["externalId"] for (t, _), r in state.items() if t == "User"} - set(users)
    assert created and created <= set(changed_users)
    for kind, rid in applied:
        ext = ext_of.get(rid)
        assert (kind == "User" and ext in changed_users) or (kind == "Group" and ext in touched_classes), (kind, ext)

    # a withdrawn student: active=false and in no group
    users_now = {r["externalId"]: r for (t, _), r in state.items() if t == "User"}
    for sid in withdrawn:
        if sid not in users_now:
            continue  # withdrawn before ever being provisioned
        assert users_now[sid]["active"] is False
        uid = users_now[sid]["id"]
        assert not any(uid in {mm["value"] for mm in r.get("members") or []} for (t, _), r in state.items() if t == "Group")

    m = batch.mark()
    full = run(batch, "--full", bulk=bulk)
    assert writes(full, "scim") == 0 and server_writes(batch, m) == [], full["runs"]
    assert full["runs"][0]["unchanged"] > 0
