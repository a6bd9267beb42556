"""Many tenants on many replicas, through real processes and real Redis (issue 13).

Twelve sandbox accounts (companies and districts, each with its own emulators and
credentials: sandbox/tenants.py) and three daemons (`main.py` with TENANTS_DIR) sharing
one Redis. Then one replica is SIGKILLed and a fourth one started. What is proved, and
where it is seen:

* every tenant keeps getting its runs after the kill: ``sync_runs_total{tenant=...}``
  summed over the surviving replicas, and requests on the tenant's own emulators;
* the fourth replica takes a share (its own /metrics);
* on the emulators' side (the request ledgers): no tenant's sync ever ran on two
  replicas at once, no request carried one tenant's credential to another tenant's
  endpoint, and no record was created twice;
* one tenant whose SafetyAmp fails every request (faults on its account only) delays
  no other tenant: they keep their schedule.

The interval is 6 s (SYNC_INTERVAL_MINUTES=0.1) and LOCK_TTL_SECONDS 4, so a dead
replica's tenants are due again within seconds; the figures in docs/tenants.md come
from bench/tenants.py.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from sandbox.tenants import cross_tenant, kind_of, overlapping_runs, read_ledger, run_spans, start_tenants
from tests.e2e.test_faults_oracle import duplicates
from tests.support.redis_server import REDIS_URL, delete_prefix, require_real_redis, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TENANTS = 12
FAILING = "co-05"
INTERVAL_MINUTES = "0.1"
RUNS = re.compile(r'^sync_runs_total\{status="(\w+)",sync="(\w+)",tenant="([\w-]+)"\} ([\d.e+]+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, name: str, tmp: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "main.py"],
            cwd=ROOT,
            env={**env, "PORT": str(self.port), "OUTPUT_DIR": str(tmp / f"out-{name}"), "POD_NAME": name},
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
        )

    def runs(self) -> dict[str, int]:
        """tenant -> runs that were not skipped (one per sync), as this replica counted them."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except requests.RequestException:
            return {}
        out: dict[str, int] = defaultdict(int)
        for status, _sync, tenant, value in RUNS.findall(text):
            if status != "skipped":
                out[tenant] += int(float(value))
        return dict(out)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def summed(replicas: list[Replica]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for replica in replicas:
        for tenant, n in replica.runs().items():
            total[tenant] += n
    return dict(total)


def syncs_of(tenant: str) -> int:
    return 1 if kind_of(tenant) == "district" else 5


def test_three_replicas_share_twelve_tenants_survive_a_kill_and_take_in_a_fourth(tmp_path: Path) -> None:
    require_real_redis(REDIS_URL)
    prefix = f"test-tenants-{uuid.uuid4().hex[:8]}:"
    sandbox = start_tenants(
        tmp_path / "sb",
        TENANTS,
        size=20,
        seed=7,
        faults={FAILING: {"safetyamp": {"error_rate": 1.0}}},
        interval_minutes=float(INTERVAL_MINUTES),
    )
    replicas: list[Replica] = []
    try:
        tenants = sorted(p.stem for p in sandbox.tenants_dir.glob("*.env"))
        assert len(tenants) == TENANTS
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SAFETYAMP_", "SCIM_", "ONEROSTER_", "SAMSARA_"))},
            "TENANTS_DIR": str(sandbox.tenants_dir),
            "SECRETS_DIR": str(sandbox.secrets_dir),
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": prefix,
            "TENANT_WORKERS": "4",
            "LOCK_TTL_SECONDS": "4",
            "LOCK_REQUIRED": "true",
            "LOG_FORMAT": "json",
            "HOST": "127.0.0.1",
        }
        replicas = [Replica(f"r{i}", tmp_path, env) for i in range(3)]

        # Every tenant runs (each sync of it once at least), on whichever replica.
        healthy = [t for t in tenants if t != FAILING]

        def every_tenant_ran() -> bool:
            runs = summed(replicas)
            return all(runs.get(t, 0) >= syncs_of(t) for t in tenants)

        assert wait_until(every_tenant_ran, 90), f"not every tenant ran: {summed(replicas)}"
        shares = {r.name: sorted(t for t, n in r.runs().items() if n) for r in replicas}
        assert sum(1 for names in shares.values() if names) >= 2, f"one replica did all the work: {shares}"

        # SIGKILL one replica: its tenants (and everyone else) keep their schedule.
        victim, survivors = replicas[0], replicas[1:]
        before = summed(survivors)
        killed_at = time.time()
        victim.stop(signal.SIGKILL)

        def everyone_ran_twice_since() -> bool:
            now = summed(survivors)
            return all(now.get(t, 0) - before.get(t, 0) >= 2 * syncs_of(t) for t in healthy)

        assert wait_until(everyone_ran_twice_since, 60), (
            f"after the kill some tenants stopped: before {before}, now {summed(survivors)}"
        )
        ledger = read_ledger(sandbox.directory)
        for tenant in tenants:
            assert any(e["time"] > killed_at for e in ledger[tenant]), f"{tenant}: no request after the kill"

        # A fourth replica takes a share.
        fourth = Replica("r3", tmp_path, env)
        replicas.append(fourth)
        assert wait_until(lambda: sum(fourth.runs().values()) > 0, 45), "the fourth replica took no tenant"

        # The faulted tenant failed; it held up nobody: every healthy tenant kept its
        # schedule, seen as the gaps between its runs' first requests on its emulators
        # (6 s interval; a run cut by the kill waits out the lock's TTL and the
        # hand-over's settle time once).
        final = summed(replicas[1:])
        for replica in replicas[1:]:
            replica.stop()
        assert final.get(FAILING, 0) >= 1, "the failing tenant never ran"
        spans = run_spans(read_ledger(sandbox.directory))
        for tenant in healthy:
            starts = sorted(sp.first for sp in spans if sp.tenant == tenant)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert len(starts) >= 4, f"{tenant}: {len(starts)} runs"
            assert max(gaps) <= 6 + 4 + 10 + 5, f"{tenant} waited {max(gaps):.1f} s between runs"
            assert statistics.median(gaps) <= 6 * 1.05 + 2.5, f"{tenant}: median gap {statistics.median(gaps):.1f} s"

        # The emulators' side.
        ledger = read_ledger(sandbox.directory)
        assert overlapping_runs(ledger) == [], "a tenant's sync ran on two replicas at once"
        assert cross_tenant(sandbox.directory) == [], "a tenant's credential reached another tenant"
        instances = {e.get("instance") for entries in ledger.values() for e in entries}
        assert {"r0", "r1", "r2", "r3"} <= {str(i).rsplit("-", 1)[0] for i in instances if i}
        for tenant in tenants:
            if kind_of(tenant) == "company":
                assert duplicates(sandbox.directory / "accounts" / tenant) == {}, f"{tenant}: duplicate records"
    finally:
        for replica in replicas:
            replica.stop(signal.SIGKILL)
        sandbox.stop()
        delete_prefix(REDIS_URL, prefix)
