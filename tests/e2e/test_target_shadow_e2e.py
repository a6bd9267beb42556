"""The target shadow through the real CLI and the sandbox (issue 14): an idle run reads
nothing from SafetyAmp, a source change still reaches it in one run, and an edit an
administrator made in SafetyAmp persists until the next full read, which repairs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, BatchRunner, run_counts

pytestmark = pytest.mark.e2e

ONLY = ("--only", "departments,jobs,titles,employees,vehicles")
SAFETYAMP_SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")


def admin(batch: BatchRunner, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "admin", *args, "--dir", str(batch.dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def safetyamp_requests(batch: BatchRunner, since: int) -> list[dict]:
    return batch.requests("safetyamp", since=since)


def test_idle_run_reads_nothing_a_change_lands_in_one_run_and_a_full_read_repairs_outside_edits(tmp_path) -> None:
    batch = BatchRunner(tmp_path, size=60)
    first = batch.run(*ONLY, expect=(0, 1))
    assert run_counts(first, "created", SAFETYAMP_SYNCS) > 0
    assert "target: full read: no shadow saved" in first["_stderr"]

    # 1. idle: no request at all to SafetyAmp (counted by the emulator)
    mark = batch.mark()
    idle = batch.run(*ONLY, expect=(0, 1))
    assert "planning against the shadow" in idle["_stderr"]
    assert safetyamp_requests(batch, mark) == []
    assert sum(idle["requests"]["safetyamp"].values()) == 0
    print(
        f"\nidle run: {len(safetyamp_requests(batch, mark))} SafetyAmp requests (first run: {sum(first['requests']['safetyamp'].values())})"
    )

    # 2. a source change reaches SafetyAmp in one run planned from the shadow
    batch.mutate(10, seed=5)
    mark = batch.mark()
    changed = batch.run(*ONLY, expect=(0, 1))
    assert "planning against the shadow" in changed["_stderr"]
    writes = run_counts(changed, "created", SAFETYAMP_SYNCS) + run_counts(changed, "updated", SAFETYAMP_SYNCS)
    assert writes > 0
    sent = safetyamp_requests(batch, mark)
    gets = [r for r in sent if r["method"] == "GET"]
    # reads: one lookup by key per create and per deactivation, never the whole account
    checked = run_counts(changed, "created", SAFETYAMP_SYNCS) + run_counts(changed, "deactivated", SAFETYAMP_SYNCS)
    assert len(gets) <= checked + 2, gets
    print(f"change run: {len(sent)} SafetyAmp requests, {len(gets)} of them reads, {writes} created/updated")
    preview = batch.run(*ONLY, "--dry-run", expect=(0, 1))  # a dry run reads SafetyAmp fully
    assert run_counts(preview, "created", SAFETYAMP_SYNCS) == 0
    assert run_counts(preview, "updated", SAFETYAMP_SYNCS) == 0
    assert run_counts(preview, "deactivated", SAFETYAMP_SYNCS) == 0

    # 3. outside edits: kept by shadow runs, repaired by the next full read
    users = [u for u in batch.store().all("safetyamp", "users") if u.get("system_access") == 1]
    edited, deleted = str(users[0]["emp_id"]), str(users[1]["emp_id"])
    original = users[0]["last_name"]
    admin(batch, "edit", "--collection", "users", "--key", edited, "--set", "last_name=Edited By Admin")
    admin(batch, "delete", "--collection", "users", "--key", deleted)
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1))
    assert admin(batch, "get", "--collection", "users", "--key", edited)["last_name"] == "Edited By Admin"
    assert admin(batch, "get", "--collection", "users", "--key", deleted) == {}
    assert safetyamp_requests(batch, mark) == []  # the drift is not seen: documented, until the next full read
    repaired = batch.run(*ONLY, "--full", expect=(0, 1))
    assert "target: full read: a full read was asked for" in repaired["_stderr"]
    assert admin(batch, "get", "--collection", "users", "--key", edited)["last_name"] == original
    assert admin(batch, "get", "--collection", "users", "--key", deleted)["emp_id"] == deleted
    keys = [str(u["emp_id"]) for u in batch.store().all("safetyamp", "users")]
    assert len(keys) == len(set(keys))
    # and the shadow saved by that full read serves the next idle run again
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1))
    assert safetyamp_requests(batch, mark) == []


def test_target_shadow_off_reads_every_run(tmp_path) -> None:
    batch = BatchRunner(tmp_path, size=20)
    batch.run(*ONLY, expect=(0, 1), TARGET_SHADOW="false")
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1), TARGET_SHADOW="false")
    gets = [r for r in safetyamp_requests(batch, mark) if r["method"] == "GET"]
    assert len(gets) >= 7  # every collection read again
    assert not (batch.output / "state" / "target-shadow").exists()
