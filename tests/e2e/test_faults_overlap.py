"""The daemon and two CronJob runs start at the same moment: exactly one of them writes.

All three work on one sandbox folder (one SafetyAmp state, one request log) and one
Redis (the cycle lock). Latency on the emulated SafetyAmp stretches the winner's run to
several seconds so that the three really overlap. Writes are counted three ways: each
runner's own count (summary JSON, the daemon's /metrics), and the emulator's request log
(server side), which must equal the winner's count.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, BatchRunner, writes
from tests.e2e.test_daemon import free_port, get, wait_for
from tests.e2e.test_faults_oracle import SAFETYAMP_SYNCS, clean_state, duplicates, state_diff, target_state

pytestmark = pytest.mark.e2e

SIZE = 60


def daemon_writes(metrics: str) -> int:
    total = 0.0
    for line in metrics.splitlines():
        m = re.match(r"^external_requests_total\{(.*)\} (\S+)$", line)
        if m and 'service="safetyamp"' in m.group(1) and 'method="GET"' not in m.group(1):
            total += float(m.group(2))
    return int(total)


def test_daemon_and_two_cronjobs_at_once_exactly_one_writes(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from sandbox.seed import ensure_seeded

    want = clean_state(tmp_path_factory, SIZE)
    batch = BatchRunner(tmp_path, size=SIZE)
    ensure_seeded(batch.dir, size=SIZE, seed=7)  # seeded once, before three processes open it
    port = free_port()
    common = {"SYNC_TYPES": SAFETYAMP_SYNCS, "LOCK_REQUIRED": "true", "SAFETYAMP_MAX_CONCURRENCY": "2",
              "SANDBOX_FAULTS": json.dumps({"safetyamp": {"latency_ms": 60}})}  # fmt: skip
    daemon_env = batch.env(**common, PORT=str(port), HOST="127.0.0.1", SYNC_INTERVAL_MINUTES="60")
    batch_env = batch.env(**common)
    sandbox_args = ["--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(SIZE)]
    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen([sys.executable, "main.py", *sandbox_args], cwd=ROOT, env=daemon_env,
                                  stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    cron_logs = [open(tmp_path / f"cron-{i}.log", "w") for i in (1, 2)]
    cron = [
        subprocess.Popen(
            [sys.executable, "sync_batch.py", *sandbox_args, "--json"],
            cwd=ROOT,
            env=batch_env,
            stdout=subprocess.PIPE,
            stderr=cron_logs[i],
            text=True,
        )
        for i in range(2)
    ]
    started = time.monotonic()
    base = f"http://127.0.0.1:{port}"
    try:
        outs = [p.communicate(timeout=300)[0] for p in cron]
        for f in cron_logs:
            f.close()
        tails = {f.name: Path(f.name).read_text()[-3000:] for f in cron_logs}
        assert [p.returncode for p in cron] == [0, 0], tails
        summaries = [json.loads(o.strip().splitlines()[-1]) for o in outs]

        def cycle_done():
            r = get(base + "/health")
            return r is not None and "vehicles" in r.json().get("last_runs", {}) and r.json()

        health = wait_for(cycle_done, 120, 0.3)
        assert health, "the daemon never finished its first cycle"
        elapsed = time.monotonic() - started
        daemon_runs = health["last_runs"]
        metrics = get(base + "/metrics").text
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=25) == 0
    finally:
        for p in [daemon, *cron]:
            if p.poll() is None:
                p.kill()
                p.wait()
    counts = {"cron-1": writes(summaries[0]), "cron-2": writes(summaries[1]), "daemon": daemon_writes(metrics)}
    statuses = {"cron-1": summaries[0]["status"], "cron-2": summaries[1]["status"],
                "daemon": sorted({r["status"] for r in daemon_runs.values()})}  # fmt: skip
    st = batch.store()
    try:
        server = sum(n for m, n in st.request_counts().get("safetyamp", {}).items() if m != "GET")
    finally:
        st.close()
    print(f"\nwrites per runner {counts}, statuses {statuses}, server-side writes {server}, {elapsed:.1f} s")
    writers = [name for name, n in counts.items() if n > 0]
    assert len(writers) == 1, counts
    assert server == counts[writers[0]], "the emulator saw writes from a runner that did not report them"
    skipped = [s for s in summaries if s["status"] == "skipped"]
    assert len(skipped) >= 1 and all(writes(s) == 0 for s in skipped)
    assert duplicates(batch.dir) == {}
    assert state_diff(target_state(batch.dir), want) == []
