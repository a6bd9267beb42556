#!/usr/bin/env python
"""Tenants per replica, and how long a dead replica's tenants wait (issue 13).

    python bench/tenants.py [--sizes 200,2000] [--work-dir DIR] [--skip-kill]

1. **Cost of one tenant's cycle**, per kind (company: Vista/Entra/Samsara -> SafetyAmp;
   district: OneRoster -> SCIM), at each size: ``sync_batch.py --tenant all`` against
   sandbox accounts, a first run and then a no-op run, measured from the outside: the
   process's CPU time and peak RSS, each run's wall time from the JSON summary, and the
   requests each account received from the emulators' own ledgers.
2. **Tenants per replica** at a 60-minute and a 5-minute interval. The steady state is
   the no-op cycle (a cycle with a few changes adds one write per change). Its wall time
   against the real services is bound by the target's rate limit, not by our CPU:
   SafetyAmp allows about 60 requests a minute (docs/performance.md), so a no-op cycle
   costs at least ``SafetyAmp reads / 1 per s``. Per replica:
   ``min(TENANT_WORKERS x interval / wall, cpu_limit x interval / cpu)``; the memory of a
   replica is its idle tenants plus TENANT_WORKERS running cycles at their peak.
3. **A dead replica's tenants**: two daemons share six tenants at a 6-s interval with
   the production LOCK_TTL_SECONDS (60); every request of the accounts is slowed (200 ms)
   so cycles take seconds and a replica holds locks when it dies. One replica is
   SIGKILLed while it holds tenants; for each of those, the time from its due time to the
   next request the survivor sends for it, from the ledgers.

Prints Markdown; docs/tenants.md "Scaling rule" and docs/performance.md hold the figures
with the command that produced them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.tenants import kind_of, read_ledger, run_spans, start_tenants  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SAFETYAMP_PER_SECOND = 1.0  # 60 requests/minute: SafetyAmp's believed limit (docs/performance.md)
WORKERS = 4
CPU_LIMIT = 2.0  # the prod overlay's limit (k8s/overlays/prod): cores a replica may use
MEMORY_LIMIT_MB = 1024.0  # the prod overlay's memory limit
INTERVALS = (60, 5)


def child_usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def batch(env: dict[str, str]) -> tuple[dict[str, Any], float, float]:
    """One ``sync_batch.py --tenant all --json``: summary, CPU seconds, wall seconds."""
    cpu0, _ = child_usage()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "sync_batch.py", "--tenant", "all", "--json", "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    cpu1, _ = child_usage()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"sync_batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), cpu1 - cpu0, wall


def requests_since(directory: Path, tenant: str, since: float, service: str) -> int:
    return sum(1 for e in read_ledger(directory).get(tenant, []) if e["time"] >= since and e.get("service") == service)


def base_env(sb: Any, work: Path, prefix: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SAFETYAMP_", "SCIM_", "ONEROSTER_", "SAMSARA_"))}
    return {
        **keep,
        "TENANTS_DIR": str(sb.tenants_dir),
        "SECRETS_DIR": str(sb.secrets_dir),
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "OUTPUT_DIR": str(work / "out"),
        "LOG_LEVEL": "WARNING",
        "LOCK_REQUIRED": "true",
    }


def cycle_costs(size: int, work: Path) -> dict[str, dict[str, float]]:
    """Per kind at ``size``: first and no-op cycle wall (s), CPU per tenant (s), SafetyAmp /
    SCIM requests of a no-op cycle, peak RSS of one process running the tenants in turn."""
    folder = work / f"costs-{size}"
    prefix = f"bench-tenants-{uuid.uuid4().hex[:8]}:"
    sb = start_tenants(folder, 3, size=size, seed=11)  # co-01, co-02, sd-03
    try:
        env = base_env(sb, folder, prefix)
        first, first_cpu, _ = batch(env)
        mark = time.time()
        noop, noop_cpu, noop_wall = batch(env)
        rss = child_usage()[1] / 1024  # ru_maxrss of children: the largest so far (sizes ascend)
        out: dict[str, dict[str, float]] = {}
        for kind, tenants in (("company", ["co-01", "co-02"]), ("district", ["sd-03"])):
            service = "safetyamp" if kind == "company" else "scim"

            def wall(summary: dict[str, Any], ts: list[str] = tenants) -> float:
                return sum(r["duration_seconds"] for t in ts for r in summary["tenants"][t]["runs"]) / len(ts)

            out[kind] = {
                "first_wall": wall(first),
                "noop_wall": wall(noop),
                "target_requests_noop": sum(requests_since(folder, t, mark, service) for t in tenants) / len(tenants),
                "source_requests_noop": sum(
                    sum(1 for e in read_ledger(folder).get(t, []) if e["time"] >= mark and e.get("service") != service)
                    for t in tenants
                )
                / len(tenants),
            }
        # CPU of a no-op cycle per tenant: the whole process's CPU (start-up included,
        # so an upper bound) over the three tenants; likewise the first run.
        for kind in out:
            out[kind]["noop_cpu_per_tenant"] = noop_cpu / 3
            out[kind]["first_cpu_per_tenant"] = first_cpu / 3
            out[kind]["peak_rss_mb"] = rss
            out[kind]["process_wall_noop"] = noop_wall
        return out
    finally:
        sb.stop()
        clear_redis(prefix)


def clear_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def held_by(prefix: str, pid: int) -> list[str]:
    """Tenants whose cycle lock the process ``pid`` holds now (the lock's record names it)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    held = []
    for key in client.scan_iter(f"{prefix}t:*:lock:sync-cycle"):
        raw = client.get(key)
        try:
            holder = json.loads(raw) if raw else {}
        except ValueError:
            continue
        if holder.get("pid") == pid:
            held.append(key[len(prefix) + 2 :].split(":", 1)[0])
    return held


def dead_replica_wait(work: Path) -> dict[str, Any]:
    folder = work / "kill"
    prefix = f"bench-tenants-{uuid.uuid4().hex[:8]}:"
    slow = {"latency_ms": 200}
    tenants = [f"co-{i:02d}" if i % 3 else f"sd-{i:02d}" for i in range(1, 7)]
    faults = {t: {"safetyamp": slow, "samsara": slow, "graph": slow} for t in tenants if kind_of(t) == "company"}
    sb = start_tenants(folder, 6, size=60, seed=13, faults=faults, interval_minutes=0.1)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {**base_env(sb, folder, prefix), "TENANT_WORKERS": "4", "HOST": "127.0.0.1", "LOG_FORMAT": "json"}
        for name in ("a", "b"):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "main.py"],
                    cwd=ROOT,
                    env={**env, "PORT": str(free_port()), "POD_NAME": f"bench-{name}", "OUTPUT_DIR": str(folder / name)},
                    stdout=subprocess.DEVNULL,
                    stderr=open(folder / f"{name}.log", "w"),
                )
            )
        time.sleep(25)  # every tenant ran at least once, replicas in their stride
        victim = procs[0]
        deadline = time.monotonic() + 60
        held: list[str] = []
        while time.monotonic() < deadline and not held:
            held = held_by(prefix, victim.pid)
            if not held:
                time.sleep(0.1)
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(100)  # the production TTL (60 s) plus the hand-over and a few intervals
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(timeout=30)
        spans = run_spans(read_ledger(folder))
        waits = {}
        for tenant in held:
            mine = sorted((s for s in spans if s.tenant == tenant), key=lambda s: s.first)
            before = [s for s in mine if s.first <= killed_at and s.instance.startswith("bench-a")]
            after = [s for s in mine if s.first > killed_at and s.instance.startswith("bench-b")]
            if before and after:
                due = before[-1].first + 6.0  # its interval, jitter aside
                waits[tenant] = round(after[0].first - due, 1)
        others = [t for t in tenants if t not in held]
        gaps = []
        for tenant in others:
            firsts = sorted(s.first for s in spans if s.tenant == tenant)
            gaps += [b - a for a, b in itertools.pairwise(firsts) if a > killed_at - 10]
        return {
            "held_at_kill": held,
            "waited_beyond_due_s": waits,
            "others_max_gap_s": round(max(gaps), 1) if gaps else None,
            "lock_ttl_s": 60,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sb.stop()
        clear_redis(prefix)


def daemon_memory(count: int, size: int, work: Path) -> dict[str, float]:
    """RSS (MB) of one daemon serving ``count`` tenants once each has run: now and peak."""
    folder = work / f"memory-{count}"
    prefix = f"bench-tenants-{uuid.uuid4().hex[:8]}:"
    sb = start_tenants(folder, count, size=size, seed=17, interval_minutes=60)
    port = free_port()
    env = {**base_env(sb, folder, prefix), "PORT": str(port), "HOST": "127.0.0.1", "TENANT_WORKERS": str(WORKERS)}
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import requests

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
                tenants = body.get("tenants", {})
                if len(tenants) == count and all(t["last_runs"] and not t["running"] for t in tenants.values()):
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        time.sleep(2)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
        return {"rss_mb": fields["VmRSS"] / 1024, "peak_mb": fields["VmHWM"] / 1024}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        sb.stop()
        clear_redis(prefix)


def capacity(costs: dict[str, float], interval_min: int, kind: str, memory: dict[str, float] | None) -> dict[str, float]:
    interval = interval_min * 60.0
    wall_real = costs["noop_wall"]
    if kind == "company":  # SafetyAmp's ~60 requests/minute bounds the cycle; SCIM's limit is the district's own
        wall_real = max(wall_real, costs["target_requests_noop"] / SAFETYAMP_PER_SECOND)
    by_slots = WORKERS * interval / wall_real
    by_cpu = CPU_LIMIT * interval / max(costs["noop_cpu_per_tenant"], 1e-6)
    by_memory = float("inf")
    if memory:
        # Linear from the measured daemon: its peak with n tenants (4 slots busy at once
        # during their first runs) plus the settled cost of each further tenant.
        by_memory = 2 * memory["count"] + (MEMORY_LIMIT_MB - memory["peak_2n"]) / max(memory["per_tenant_mb"], 0.1)
    tenants = min(by_slots, by_cpu, by_memory)
    return {"wall_real": wall_real, "by_slots": by_slots, "by_cpu": by_cpu, "by_memory": by_memory, "tenants": tenants}


def report(
    sizes: list[int],
    costs: dict[int, dict[str, dict[str, float]]],
    memory: dict[str, float] | None,
    kill: dict[str, Any] | None,
    took: float,
) -> str:
    lines = [
        "## Tenants per replica (`python bench/tenants.py`)",
        "",
        f"Measured {datetime.now(UTC).isoformat(timespec='seconds')} in {took:.0f} s on {os.cpu_count()} CPU "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}.",
        "",
        "### One tenant's cycle (sandbox, unthrottled)",
        "",
        "| size | kind | first cycle wall (s) | no-op cycle wall (s) | no-op target requests | no-op source requests "
        "| CPU per tenant, no-op / first (s) | peak RSS of the process (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for kind, c in costs[size].items():
            lines.append(
                f"| {size:,} | {kind} | {c['first_wall']:.2f} | {c['noop_wall']:.2f} | {c['target_requests_noop']:.0f} "
                f"| {c['source_requests_noop']:.0f} | {c['noop_cpu_per_tenant']:.2f} / {c['first_cpu_per_tenant']:.2f} "
                f"| {c['peak_rss_mb']:.0f} |"
            )
    if memory:
        lines += [
            "",
            f"### One daemon's memory ({memory['size']:,} employees per company)",
            "",
            "| daemon serving | RSS after every tenant ran (MB) | peak (MB) |",
            "|---|---|---|",
            f"| 1 tenant | {memory['rss_1']:.0f} | {memory['peak_1']:.0f} |",
            f"| {memory['count']} tenants | {memory['rss_n']:.0f} | {memory['peak_n']:.0f} |",
            f"| {2 * memory['count']} tenants | {memory['rss_2n']:.0f} | {memory['peak_2n']:.0f} |",
            "",
            f"Each further tenant: {memory['per_tenant_mb']:.1f} MB ({2 * memory['count']} tenants against "
            f"{memory['count']}, both with {WORKERS} cycles at once at their peak). Python keeps what a cycle "
            "used, so the settled RSS holds the slots' working memory too.",
        ]
    lines += [
        "",
        f"### Tenants per replica ({WORKERS} slots, {CPU_LIMIT:g} CPU, {MEMORY_LIMIT_MB:.0f} MB, SafetyAmp at 60 requests/minute)",
        "",
        "A company's no-op cycle against the real SafetyAmp lasts at least its SafetyAmp requests at one per "
        "second; tenants per replica = min(slots x interval / that wall time, CPU x interval / CPU per cycle, "
        "2n + (memory - peak with 2n tenants) / each further tenant).",
        "",
        "| size | kind | no-op cycle at the real rate (s) | interval | by slots | by CPU | by memory | tenants per replica |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for kind, c in costs[size].items():
            for minutes in INTERVALS:
                cap = capacity(c, minutes, kind, memory if memory and memory["size"] == size else None)
                by_memory = "-" if cap["by_memory"] == float("inf") else f"{cap['by_memory']:.0f}"
                lines.append(
                    f"| {size:,} | {kind} | {cap['wall_real']:.1f} | {minutes} min | {cap['by_slots']:.0f} "
                    f"| {cap['by_cpu']:.0f} | {by_memory} | **{cap['tenants']:.0f}** |"
                )
    if kill is not None:
        lines += [
            "",
            "### A dead replica's tenants",
            "",
            f"Two replicas, six tenants, 6-s interval, LOCK_TTL_SECONDS={kill['lock_ttl_s']}; one SIGKILLed "
            f"while it held {', '.join(kill['held_at_kill']) or 'nothing'}.",
            "",
            "| tenant held by the dead replica | waited beyond its due time (s) |",
            "|---|---|",
        ]
        lines += [f"| {t} | {w} |" for t, w in kill["waited_beyond_due_s"].items()]
        lines += ["", f"Longest gap between runs of the other tenants meanwhile: {kill['others_max_gap_s']} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="200,2000", help="employees (and roster scale) per account, comma list")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--skip-kill", action="store_true", help="skip the dead-replica measurement (about 2.5 minutes)")
    p.add_argument("--memory-tenants", type=int, default=12, help="tenants of the memory daemon (0: skip)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-tenants-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        costs = {}
        for size in sizes:
            print(f"cycle costs at {size} ...", file=sys.stderr, flush=True)
            costs[size] = cycle_costs(size, work)
        memory = None
        if args.memory_tenants:
            size = max(sizes)
            print(f"daemon memory, 1, {args.memory_tenants} and twice as many tenants at {size} ...", file=sys.stderr, flush=True)
            one = daemon_memory(1, size, work)
            n = args.memory_tenants
            many = daemon_memory(n, size, work)
            more = daemon_memory(2 * n, size, work)
            memory = {
                "size": size,
                "count": n,
                "rss_1": one["rss_mb"],
                "peak_1": one["peak_mb"],
                "rss_n": many["rss_mb"],
                "peak_n": many["peak_mb"],
                "rss_2n": more["rss_mb"],
                "peak_2n": more["peak_mb"],
                # The marginal tenant: both daemons ran TENANT_WORKERS cycles at once, so
                # the difference is what each further tenant keeps, not the slots' peak.
                "per_tenant_mb": max(0.0, (more["rss_mb"] - many["rss_mb"]) / n),
            }
        kill = None
        if not args.skip_kill:
            print("dead replica (about 2.5 minutes) ...", file=sys.stderr, flush=True)
            kill = dead_replica_wait(work)
        text = report(sizes, costs, memory, kill, time.monotonic() - started)
        print(text)
        (ROOT / "bench" / "tenants-results.json").write_text(
            json.dumps({"costs": costs, "memory": memory, "kill": kill}, indent=2, default=str) + "\n"
        )
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
