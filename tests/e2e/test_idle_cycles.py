"""The daemon's idle cycles cost (almost) nothing and a change still lands at once
(issue 14: "the daemon in the sandbox at a 5-minute interval shows a Vista change in
SafetyAmp within one cycle while an idle hour costs at most 12 SafetyAmp requests").

An hour at a 5-minute interval is 12 cycles; the test runs 12 cycles at a 3-second
interval (the cost is per cycle, not per minute), counted on the emulators' side, then
changes Vista and waits for the change in SafetyAmp."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.support.redis_server import REDIS_URL, delete_prefix, free_port, require_real_redis, wait_until

pytestmark = pytest.mark.slow

CYCLES = 12  # an hour at SYNC_INTERVAL_MINUTES=5


def cycles_done(port: int) -> int:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return 0
    # vehicles runs last in a cycle: a cycle is done when its vehicles run is counted
    found = re.findall(r'^sync_runs_total\{status="(?:success|partial|failed)",sync="vehicles"\} ([\d.]+)$', text, re.M)
    return int(sum(float(n) for n in found))


def test_an_idle_hour_costs_at_most_twelve_safetyamp_requests_and_a_change_lands_in_one_cycle(tmp_path: Path) -> None:
    prefix = f"test-idle-{uuid.uuid4().hex[:8]}:"
    batch = BatchRunner(tmp_path, size=200)
    port = free_port()
    env = batch.env(
        PORT=str(port),
        HOST="127.0.0.1",
        REDIS_URL=require_real_redis(REDIS_URL),
        REDIS_PREFIX=prefix,
        SYNC_INTERVAL_MINUTES="0.05",
        SYNC_TYPES="departments,jobs,titles,employees,vehicles",
    )
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", "200"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "w"),
    )
    try:
        assert wait_until(lambda: cycles_done(port) >= 1, 120, 0.5), "the first cycle did not finish"
        first = cycles_done(port)
        mark = batch.mark()
        assert wait_until(lambda: cycles_done(port) >= first + CYCLES, 240, 0.5), "twelve idle cycles did not run"
        idle = batch.requests("safetyamp", mark)
        graph = [r for r in batch.requests("graph", mark) if "/token" not in r["path"]]
        print(f"\n{CYCLES} idle cycles: SafetyAmp {len(idle)} requests, Graph {len(graph)}")
        assert len(idle) <= CYCLES, [(r["method"], r["path"]) for r in idle]
        assert len(graph) <= CYCLES

        # A change in Vista reaches SafetyAmp in the next cycle.
        changed = batch.mutate(2.0)
        mark, before, started = batch.mark(), cycles_done(port), time.monotonic()
        landed = wait_until(lambda: [r for r in batch.requests("safetyamp", mark) if r["method"] != "GET"], 60, 0.2)
        took = time.monotonic() - started
        assert landed, f"no write reached SafetyAmp after the change {changed}"
        # The cycle running at the change may have read Vista before it: at most the next one.
        assert cycles_done(port) <= before + 2, "the change took more than one further cycle"
        print(f"change in Vista -> first write in SafetyAmp after {took:.1f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        delete_prefix(REDIS_URL, prefix)
