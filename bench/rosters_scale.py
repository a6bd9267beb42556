#!/usr/bin/env python
"""Rosters at district scale (issue 14, goal 2): memory, reads, writes and SCIM Bulk.

    python bench/rosters_scale.py                                # 1k, 10k, 100k users
    python bench/rosters_scale.py --sizes 1000,10000 --rate-users 500
    python bench/rosters_scale.py --sizes 100000 --root /tmp/rscale --no-rate

For each size (OneRoster users in scope: students and teachers) it seeds a school district
with ``--classes-per-student`` classes each (11: 100,000 users hold about 1,060,000
enrollments), starts the emulators in their own process (``python -m sandbox serve``,
scim2-server announcing Bulk with maxOperations 1000 and maxPayloadSize 1 MB), and runs
``sync_batch.py --only rosters`` in a process of its own, as bench/run.py does:

1. a first run (full read, every user and class created);
2. a no-op run (a delta: nothing changed in the SIS);
3. ``python -m sandbox mutate --percent 5``, then a delta run with those changes.

Per run: peak RSS of the sync process (``os.wait4``), wall time, the requests the
emulators logged next to the paging minimum, SCIM Bulk requests and the operations they
carried (the product's log), and the SCIM resources that changed (read back through the
SCIM API before and after). Then, without Bulk (``SCIM_BULK=false``), a first run against
a SCIM emulator rate limited to ``--rate-per-minute``: the share of that limit the writes
used (the SafetyAmp path's "rate use" of bench/run.py, for SCIM).

Writes bench/rosters-scale.json (the figures) and prints a Markdown table for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import harness as hx  # noqa: E402

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
GOALS = {"rss_mb": 1024.0, "writes_per_change": 1.0, "bulk_per_1000": 2.0, "rate_use": 0.9}
STUDENTS_PER_N, TEACHERS_PER_N = 2, 0.1  # sandbox/roster_seed.py: 2 N students, N // 10 teachers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/rosters_scale.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="users in scope per district (comma list)")
    p.add_argument("--classes-per-student", type=int, default=11, help="enrollments per student (default 11)")
    p.add_argument("--root", default=None, help="work folder (kept; a district seeded there before is reused)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--percent", type=float, default=5.0, help="share of the SIS changed before the delta run")
    p.add_argument("--rate-per-minute", type=float, default=1200.0, help="SCIM limit of the run without Bulk")
    p.add_argument("--rate-users", type=int, default=500, help="users in the run without Bulk (default 500)")
    p.add_argument("--no-rate", action="store_true", help="skip the run without Bulk")
    p.add_argument("--no-mutate", action="store_true", help="only the first and the no-op run per size")
    p.add_argument("--json", default=str(HERE / "rosters-scale.json"), help="where the figures go")
    return p.parse_args(argv)


def employees_for(users: int) -> int:
    """The sandbox size N whose district has ``users`` students and teachers."""
    return max(3, math.ceil(users / (STUDENTS_PER_N + TEACHERS_PER_N)))


def seed(directory: Path, users: int, classes_per_student: int, seed_value: int) -> dict[str, int]:
    """A sandbox with a small company (the SafetyAmp side is not run) and the district."""
    from sandbox.roster_seed import ensure_roster
    from sandbox.seed import ensure_seeded

    marker = ensure_seeded(directory, size=20, seed=seed_value)
    return ensure_roster(directory, size=employees_for(users), seed=str(marker["seed"]), classes_per_student=classes_per_student)


class District:
    """One seeded district, its emulators and the runs made against it."""

    def __init__(self, args: argparse.Namespace, root: Path, name: str, users: int, faults: dict[str, Any] | None = None):
        self.args = args
        self.name = name
        self.dir = root / name
        self.out = root / f"{name}-output"
        self.users = users
        self.prefix = f"rscale-{uuid.uuid4().hex[:8]}-{name}:"
        t = time.monotonic()
        self.counts = seed(self.dir, users, args.classes_per_student, args.seed)
        self.seed_seconds = time.monotonic() - t
        self.sandbox = hx.Sandbox(REPO, self.dir, size=20, seed=args.seed, faults=faults)
        self.extra: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        from config.bootstrap import sandbox_overrides

        base = {
            "OUTPUT_DIR": str(self.out),
            "REDIS_PREFIX": self.prefix,
            "SYNC_TYPES": "rosters",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            # A 1,000-operation Bulk request takes seconds on scim2-server, longer when the
            # machine is shared: a generous timeout keeps lost responses out of the figures
            # (tests/integration/test_scim_bulk.py covers them).
            "SCIM_TIMEOUT_SECONDS": "120",
            **self.extra,
        }
        return self.sandbox.settings_env(sandbox_overrides, base)

    def run(self, label: str, modified_after: str | None) -> dict[str, Any]:
        before, page = hx.scim_state(self.sandbox.endpoints)
        changed_sis = hx.roster_counts(self.dir, modified_after) if modified_after else {}
        mark = hx.last_request_id(self.dir)
        log_path = self.dir.parent / f"{self.name}-{label}.log"
        product = hx.run_product(REPO, self.env(), log_path, label)
        reqs = hx.requests_between(self.dir, mark, hx.last_request_id(self.dir))
        after, _ = hx.scim_state(self.sandbox.endpoints)
        changed = hx.changed_records(before, after)
        users = sum(1 for k in after if k[0] == "Users")
        groups = sum(1 for k in after if k[0] == "Groups")
        bulk = bulk_log(log_path)
        scim = [r for r in reqs if r["service"] == "scim"]
        oneroster = [r for r in reqs if r["service"] == "oneroster"]
        scim_writes = [r for r in scim if r["method"] in WRITE_METHODS]
        operations = bulk["operations"] + sum(1 for r in scim_writes if r["path"].rstrip("/") != "/v2/Bulk")
        bulk_requests = sum(1 for r in scim_writes if r["path"].rstrip("/") == "/v2/Bulk")
        schools = 1  # ROSTER_SCHOOLS is empty in the sandbox: one enrollments collection
        run = product.summary.get("runs", [{}])[0]
        done = sum(int(run.get(k) or 0) for k in ("created", "updated", "deactivated"))
        out = {
            "label": label,
            "status": run.get("status"),
            "wall_seconds": round(product.wall_seconds, 1),
            "cpu_seconds": round(product.cpu_seconds, 1),
            "max_rss_mb": round(product.max_rss_mb, 1),
            "counts": {k: run.get(k) for k in ("created", "updated", "deactivated", "unchanged", "skipped", "failed")},
            "scim_changed": changed,
            "scim_users": users,
            "scim_groups": groups,
            "scim_requests": len(scim),
            "scim_gets": sum(1 for r in scim if r["method"] == "GET"),
            # a delta in which nothing changed in the SIS reads nothing from SCIM (sync/sync_rosters.py)
            "scim_min_gets": 0
            if modified_after and not any(changed_sis.values())
            else 1
            + math.ceil(len([k for k in before if k[0] == "Users"]) / page)
            + math.ceil(len([k for k in before if k[0] == "Groups"]) / page)
            if before
            else 3,
            "scim_write_requests": len(scim_writes),
            "bulk_requests": bulk_requests,
            "operations": operations,
            "writes_per_change": round(operations / done, 3) if done else None,
            "bulk_per_1000_changes": round(1000 * bulk_requests / done, 2) if done and bulk_requests else None,
            "oneroster_gets": sum(1 for r in oneroster if r["method"] == "GET"),
            "oneroster_min_gets": oneroster_minimum(changed_sis, schools, 1000) if modified_after else None,
            "sis_changed": changed_sis,
        }
        print_run(self.name, out)
        return out

    def schools(self) -> int:
        import sqlite3

        with sqlite3.connect(f"file:{self.dir / hx.ROSTER_FILE}?mode=ro", uri=True) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM records WHERE kind='orgs' AND sourced_id LIKE 'school-%'").fetchone()[0]
            )


def oneroster_minimum(changed: dict[str, int], schools: int, page: int) -> int:
    """A delta's fewest OneRoster list reads: one page (at least) per collection, and per
    school for enrollments when ROSTER_SCHOOLS names schools (``schools``; the sandbox
    names none: 1)."""
    users = max(1, math.ceil(changed.get("users", 0) / page))
    classes = max(1, math.ceil(changed.get("classes", 0) / page))
    enrollments = max(schools, math.ceil(changed.get("enrollments", 0) / page))
    return users + classes + enrollments


def bulk_log(path: Path) -> dict[str, int]:
    """The product's own count of Bulk requests and operations (sync/sync_rosters.py logs it)."""
    out = {"requests": 0, "operations": 0}
    for line in path.read_text(errors="replace").splitlines():
        if "SCIM Bulk requests carried" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        out = {"requests": int(entry.get("bulk_requests", 0)), "operations": int(entry.get("bulk_operations", 0))}
    return out


def print_run(name: str, r: dict[str, Any]) -> None:
    print(
        f"  {name} {r['label']:<7} {r['status']}: wall {r['wall_seconds']:.1f} s, CPU {r['cpu_seconds']:.1f} s, "
        f"peak RSS {r['max_rss_mb']:.0f} MB; SCIM {r['scim_gets']} GETs (min {r['scim_min_gets']}), "
        f"{r['scim_write_requests']} write requests ({r['bulk_requests']} Bulk) carrying {r['operations']} operations "
        f"for {r['scim_changed']['total']} changed resources; OneRoster {r['oneroster_gets']} GETs"
        + (f" (min {r['oneroster_min_gets']})" if r["oneroster_min_gets"] is not None else ""),
        flush=True,
    )


def rate_figures(requests: list[dict[str, Any]], per_minute: float) -> dict[str, Any]:
    """bench/figures.py's rate use, for the SCIM emulator: requests it accepted from the
    first to the last write, per second, over the limit."""
    allowed = per_minute / 60.0
    scim = [r for r in requests if r["service"] == "scim"]
    accepted = [r for r in scim if r["status"] != 429]
    writes = [r for r in accepted if r["method"] in WRITE_METHODS]
    out: dict[str, Any] = {"allowed_per_second": allowed, "accepted": len(accepted), "answered_429": len(scim) - len(accepted)}
    if len(writes) >= 2 and writes[-1]["ts"] > writes[0]["ts"]:
        first, last = writes[0]["ts"], writes[-1]["ts"]
        window = [r for r in accepted if first <= r["ts"] <= last]
        achieved = (len(window) - 1) / (last - first)
        out.update(window_seconds=round(last - first, 1), writes=len(writes), achieved_per_second=round(achieved, 2))
        out["fill"] = round(achieved / allowed, 3)
    return out


def size_run(args: argparse.Namespace, root: Path, users: int) -> dict[str, Any]:
    name = f"u{users}"
    print(f"\n=== {users:,} users, {args.classes_per_student} classes per student ===", flush=True)
    d = District(args, root, name, users)
    print(f"  seeded: {d.counts} ({d.seed_seconds:.0f} s)", flush=True)
    runs = []
    started = d.sandbox.start()
    print(f"  emulators ready in {started:.0f} s", flush=True)
    try:
        first_start = hx_now()
        runs.append(d.run("first", None))
        noop_start = hx_now()
        runs.append(d.run("noop", first_start))
    finally:
        d.sandbox.stop()
    if args.no_mutate:
        return {"users": users, "seeded": d.counts, "seed_seconds": round(d.seed_seconds), "runs": runs}
    mutated = hx.mutate(REPO, d.dir, args.percent, args.seed)
    print(f"  mutate {args.percent:g} %: {mutated}", flush=True)
    d.sandbox.start()
    try:
        runs.append(d.run("mutate", noop_start))
    finally:
        d.sandbox.stop()
    return {"users": users, "seeded": d.counts, "seed_seconds": round(d.seed_seconds), "runs": runs}


def rate_run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    per_minute = args.rate_per_minute
    print(f"\n=== without Bulk: {args.rate_users:,} users, SCIM limited to {per_minute:g} requests/minute ===", flush=True)
    d = District(args, root, f"rate-u{args.rate_users}", args.rate_users, faults={"scim": {"rate_limit_per_minute": per_minute}})
    d.extra = {"SCIM_BULK": "false", "SCIM_RATE_LIMIT_PER_SECOND": f"{per_minute / 60:g}"}
    d.sandbox.start()
    try:
        mark = hx.last_request_id(d.dir)
        run = d.run("first", None)
        rate = rate_figures(hx.requests_between(d.dir, mark, hx.last_request_id(d.dir)), per_minute)
    finally:
        d.sandbox.stop()
    print(f"  rate use without Bulk: {rate}", flush=True)
    return {"users": args.rate_users, "rate_per_minute": per_minute, "run": run, **rate}


def hx_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| users (enrollments) | run | status | wall s | peak RSS MB | SCIM GETs / minimum | OneRoster GETs / minimum "
        "| SCIM write requests (Bulk) | operations / changes | Bulk requests per 1,000 changes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["sizes"]:
        for r in s["runs"]:
            changes = sum(int(r["counts"].get(k) or 0) for k in ("created", "updated", "deactivated"))
            lines.append(
                f"| {s['users']:,} ({s['seeded'].get('enrollments', 0):,}) | {r['label']} | {r['status']} | {r['wall_seconds']} "
                f"| {r['max_rss_mb']:.0f} | {r['scim_gets']} / {r['scim_min_gets']} "
                f"| {r['oneroster_gets']} / {r['oneroster_min_gets'] if r['oneroster_min_gets'] is not None else '-'} "
                f"| {r['scim_write_requests']} ({r['bulk_requests']}) | {r['operations']} / {changes} "
                f"| {r['bulk_per_1000_changes'] if r['bulk_per_1000_changes'] is not None else '-'} |"
            )
    rate = results.get("rate")
    if rate:
        lines.append("")
        lines.append(
            f"Without Bulk (SCIM_BULK=false), {rate['users']:,} users, SCIM limited to {rate['rate_per_minute']:g}/min: "
            f"{rate.get('achieved_per_second', 'n/a')}/s of {rate['allowed_per_second']:.1f}/s allowed = fill "
            f"{rate.get('fill', 'n/a')} over {rate.get('window_seconds', 'n/a')} s, {rate['answered_429']} answered 429."
        )
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> list[str]:
    out = []
    for s in results["sizes"]:
        for r in s["runs"]:
            if r["label"] in ("first", "noop"):
                ok = r["max_rss_mb"] < GOALS["rss_mb"]
                out.append(
                    f"[{'PASS' if ok else 'MISS'}] {s['users']:,} users, {r['label']} run: peak RSS {r['max_rss_mb']:.0f} MB (< 1024)"
                )
            if r["label"] == "noop":
                ok = r["scim_write_requests"] == 0 and r["oneroster_gets"] <= (r["oneroster_min_gets"] or 0) + 1
                out.append(
                    f"[{'PASS' if ok else 'MISS'}] {s['users']:,} users, no-op: OneRoster {r['oneroster_gets']} GETs "
                    f"(minimum {r['oneroster_min_gets']} + token), SCIM writes {r['scim_write_requests']}"
                )
            if r["label"] == "mutate" and r["writes_per_change"] is not None:
                ok = r["writes_per_change"] <= GOALS["writes_per_change"]
                out.append(
                    f"[{'PASS' if ok else 'MISS'}] {s['users']:,} users, delta: operations per change {r['writes_per_change']}"
                )
            if r["label"] in ("first", "mutate") and r["bulk_per_1000_changes"] is not None:
                # per started thousand: a delta of 143 changes cannot take less than 1 request
                changes = sum(int(r["counts"].get(k) or 0) for k in ("created", "updated", "deactivated"))
                ok = r["bulk_requests"] <= GOALS["bulk_per_1000"] * math.ceil(changes / 1000)
                out.append(
                    f"[{'PASS' if ok else 'MISS'}] {s['users']:,} users, {r['label']}: {r['bulk_requests']} Bulk requests for "
                    f"{changes:,} changes ({r['bulk_per_1000_changes']} per 1,000; goal <= 2 per started 1,000)"
                )
    rate = results.get("rate")
    if rate and rate.get("fill") is not None:
        ok = rate["fill"] >= GOALS["rate_use"]
        out.append(f"[{'PASS' if ok else 'MISS'}] without Bulk: rate limit filled {rate['fill']} (>= 0.9)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = (
        Path(args.root)
        if args.root
        else Path(tempfile.mkdtemp(prefix="rosters-scale-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    )
    root.mkdir(parents=True, exist_ok=True)
    print(f"work folder {root}", flush=True)
    results: dict[str, Any] = {"sizes": [], "classes_per_student": args.classes_per_student}
    for users in sorted({int(x) for x in args.sizes.split(",") if x.strip()}):
        results["sizes"].append(size_run(args, root, users))
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.no_rate:
        results["rate"] = rate_run(args, root)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print("\n" + markdown(results))
    print("\n" + "\n".join(goals(results)))
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
