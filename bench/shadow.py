"""What the SafetyAmp target shadow costs on disk and in time at a given size.

    python bench/shadow.py --sandbox-dir DIR [--employees 50000] [--work-dir /dev/shm/shadow]

DIR is a sandbox a sync has run against (``sync_batch.py --sandbox --sandbox-dir DIR``):
its SafetyAmp records are the templates. Each collection is scaled to the counts of a
50,000-employee account in the bench (users = employees, assets, sites, clusters and
titles in the proportions of the 50,000 run of bench/run.py), every record a copy of a
real one with its id, key, names, e-mail and phone made unique, then saved and loaded
through services/target_shadow.py's ShadowStore as a cycle does. Prints one JSON line:
bytes on disk per collection and in all, JSON bytes, save and load seconds, wall and CPU
(median of 3; CPU is the figure to trust on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.store import open_store
from services.target_shadow import ShadowStore

# Per employee, from bench/run.py's 50,000 run (70,573 records written on the first run:
# 50,000 users; the rest assets, sites, clusters and titles).
SHARES = {"users": 1.0, "assets": 0.3, "sites": 0.1, "site_clusters": 0.002, "user_titles": 0.004, "roles": 0.0001}


def scaled(templates: list[dict[str, Any]], count: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        row = dict(rng.choice(templates))
        row["id"] = 100_000 + i
        for field in ("emp_id", "external_code", "code"):
            if field in row:
                row[field] = f"{row[field]}-{i}"
        if "email" in row:
            row["email"] = f"person.{i}.{rng.randrange(10**6)}@sandbox-co.com"
        for field in ("first_name", "last_name", "name"):
            if isinstance(row.get(field), str):
                row[field] = f"{row[field]}{rng.choice('abcdefghij')}{i % 997}"
        if row.get("mobile_phone"):
            row["mobile_phone"] = f"+1713{rng.randrange(10**7):07d}"
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandbox-dir", required=True)
    parser.add_argument("--employees", type=int, default=50_000)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args(argv)
    rng = random.Random(14)
    with open_store(args.sandbox_dir) as store:
        templates = {c: store.all("safetyamp", c) for c in SHARES}
    data = {c: scaled(rows, max(1, round(args.employees * SHARES[c])), rng) for c, rows in templates.items() if rows}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="shadow-bench-"))
    shadow = ShadowStore(work, scope="bench", redis=None, prefix="bench:", max_age_seconds=86400)
    saves, loads, save_cpu, load_cpu = [], [], [], []
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        manifest = shadow.save(data, keep={}, generation="g", full_read_at=time.time())
        saves.append(time.perf_counter() - started)
        save_cpu.append(time.process_time() - cpu)
        started, cpu = time.perf_counter(), time.process_time()
        for name in data:
            assert shadow.load(manifest, name) is not None
        loads.append(time.perf_counter() - started)
        load_cpu.append(time.process_time() - cpu)
    started, cpu = time.perf_counter(), time.process_time()
    keep = {k: v for k, v in manifest["files"].items() if k != "users"}
    shadow.save({"users": data["users"]}, keep=keep, generation="g", full_read_at=time.time())
    users_only, users_only_cpu = time.perf_counter() - started, time.process_time() - cpu
    files = {name: (shadow.directory / fname).stat().st_size for name, fname in shadow.manifest()["files"].items()}
    print(
        json.dumps(
            {
                "employees": args.employees,
                "records": {c: len(r) for c, r in data.items()},
                "json_bytes": sum(len(json.dumps(r, separators=(",", ":"))) for r in data.values()),
                "gzip_bytes": files,
                "gzip_bytes_total": sum(files.values()),
                "save_seconds_all": round(statistics.median(saves), 3),
                "save_seconds_users_only": round(users_only, 3),
                "load_seconds_all": round(statistics.median(loads), 3),
                "save_cpu_seconds_all": round(statistics.median(save_cpu), 3),
                "save_cpu_seconds_users_only": round(users_only_cpu, 3),
                "load_cpu_seconds_all": round(statistics.median(load_cpu), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
