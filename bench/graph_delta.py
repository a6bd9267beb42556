"""Graph delta query, measured (issue 14): what reading Entra users costs with GRAPH_DELTA
off (every user, every cycle) and on (a full round, then one request per idle cycle), on
a sandbox of N employees, with the kept state in a real Redis.

    python bench/graph_delta.py --size 50000 [--dir /tmp/bench-graph-delta] [--redis redis://127.0.0.1:6379/15]

Prints one line per figure and a JSON summary. Requests are counted on the emulator's
side (its request log), CPU is this process's (``time.process_time``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--dir", default="/tmp/bench-graph-delta")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--mutate", type=float, default=1.0, help="percent of the sandbox changed before the last round")
    args = parser.parse_args(argv)

    from config.settings import load_settings
    from sandbox.server import start_sandbox
    from sandbox.store import open_store
    from services.graph_api import build_graph
    from services.graph_delta import build_graph_directory
    from services.http import RequestStats
    from sync.sync_employees import mail_by_employee_id
    from utils.redis_client import make_redis

    prefix = f"bench-graph-delta-{uuid.uuid4().hex[:8]}:"
    client = make_redis(args.redis, socket_timeout=10)
    out: dict[str, Any] = {"size": args.size, "command": "python bench/graph_delta.py " + " ".join(argv or sys.argv[1:])}
    started = time.monotonic()
    with start_sandbox(Path(args.dir), size=args.size) as sb:
        out["seed_seconds"] = round(time.monotonic() - started, 1)
        g = sb.endpoints["graph"]
        settings = load_settings(
            {
                "MS_GRAPH_AUTHORITY_URL": g["authority_url"],
                "MS_GRAPH_URL": g["graph_url"],
                "MS_GRAPH_TENANT_ID": g["tenant_id"],
                "MS_GRAPH_CLIENT_ID": g["client_id"],
                "MS_GRAPH_CLIENT_SECRET": g["client_secret"],
                "MS_GRAPH_CA_BUNDLE": g["ca_bundle"],
                "REDIS_PREFIX": prefix,
            },
            dotenv_path=None,
        )
        graph = build_graph(settings, RequestStats())
        directory = build_graph_directory(settings, graph, client)
        graph.tokens.token()  # MSAL's discovery and token: cached for the rest

        def measure(name: str, fn: Any) -> Any:
            with open_store(sb.directory) as st:
                since = st.last_request_id()
            cpu, wall = time.process_time(), time.monotonic()
            result = fn()
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            with open_store(sb.directory) as st:
                calls = st.requests("graph", since_id=since)
            out[name] = {"graph_requests": len(calls), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3)}
            print(f"{name:<28} {len(calls):>6} Graph requests  cpu {cpu:7.3f} s  wall {wall:7.3f} s")
            return result

        full = measure("full read (GRAPH_DELTA=false)", graph.users)
        first = measure("first delta round", directory.users)
        directory.store._cached = None  # a new process: the users are read from Redis
        measure("idle round, new process", directory.users)
        idle = measure("idle round", directory.users)
        assert mail_by_employee_id(idle) == mail_by_employee_id(full) == mail_by_employee_id(first)
        subprocess.run(
            [sys.executable, "-m", "sandbox", "mutate", "--dir", str(sb.directory), "--percent", str(args.mutate)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        changed = measure(f"round after {args.mutate}% mutate", directory.users)
        assert mail_by_employee_id(changed) == mail_by_employee_id(graph.users())
        out["changes_in_round"] = len(directory.last_round.changed_ids) + len(directory.last_round.removed)
        stored = client.hget(f"{prefix}graph:delta", "users") or ""
        out["redis_users_bytes"] = len(stored)
        out["users"] = len(idle)
        print(f"users kept: {len(idle):,}; Redis value: {len(stored) / 1e6:.2f} MB (zlib+base64)")
    for key in list(client.scan_iter(match=prefix + "*")):
        client.delete(key)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
