#!/usr/bin/env python
"""Console page times (issue 11's speed goal; a benchmark, not a test): with a 50,000-
employee sandbox and 1,000 runs of history per sync, every console page must render in
under 300 ms of server time.

    python bench/console.py                          # 50,000 employees, 1,000 runs per sync (~7 min)
    python bench/console.py --size 2000 --runs 200   # a quick look (~1 min)

1. Seeds the sandbox (``python -m sandbox serve`` in its own process, as bench/run.py does).
2. Real runs through the product (``sync_batch.py``, in processes of their own): a first
   run (every record created; the employees sync rejects the sandbox's bad rows, so the
   failed-records queue and the rejected-records lists are real), and after them a no-op
   run, the newest. Both are recorded in the run history by the product itself.
3. Between them, the rest of the history: ``--runs`` runs per sync through the run-history
   store the product uses (utils/control.py ControlStore.record_run), each with a change
   log and an errors file in the output folder in the product's format, built from records
   of the real first run (field-level updates, and rejected rows with their reasons), so
   each run page has real-looking data to stream. Most hourly runs change a few records;
   one in twenty changes hundreds.
4. Builds the daemon's Flask app in this process (main.create_app over a runtime for the
   sandbox, as ``main.py --sandbox`` does, without its worker loop), signs in through the
   login form, finds every GET page of the console in the app's URL map, and times each
   with Flask's test client: the time from request to complete response inside the app
   (server time: no network, no browser). ``--samples`` requests per page after one
   warm-up; p50, p95 and max per page against the 300 ms goal.

Needs Redis (the run history lives there, as in production); REDIS_URL picks it
(default redis://127.0.0.1:6379/0). Its keys go under a fresh prefix, deleted at the end.
Prints the table, writes bench/console-results.json and bench/console-results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import harness as hx  # noqa: E402

GOAL_MS = 300.0
SYNCS = ("departments", "jobs", "titles", "employees", "vehicles")  # rosters: not at 50,000 (bench/run.py's rule)
TOKEN = "bench-console-token-0123456789abcdef0123"
COUNT_KEYS = ("created", "updated", "deactivated", "unchanged", "skipped", "failed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/console.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=50_000, help="employees in the sandbox (default 50,000)")
    p.add_argument("--runs", type=int, default=1000, help="runs of history per sync (default 1,000)")
    p.add_argument("--samples", type=int, default=20, help="timed requests per page (default 20)")
    p.add_argument("--failed", type=int, default=5000, help="records in the failed-records queue (default 5,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--work-dir", default=None, help="sandbox and output folder (default: a fresh one in /dev/shm or TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the work folder and the Redis keys")
    p.add_argument("--out", default=str(HERE / "console-results.json"))
    p.add_argument("--markdown", default=str(HERE / "console-results.md"))
    return p.parse_args(argv)


# --------------------------------------------------------------------------- history
def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class HistoryWriter:
    """Writes ``--runs`` past runs per sync: the store's entries plus the files they name."""

    def __init__(self, output: Path, store: Any, rng: random.Random) -> None:
        self.output = output
        self.store = store
        self.rng = rng
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self.rejected: dict[str, list[dict[str, Any]]] = {}
        self.written: dict[str, list[tuple[int, str, str]]] = {}  # sync -> (changes, run id, file name)

    def learn(self) -> None:
        """Records of the real first run, to build realistic changes from."""
        for path in sorted((self.output / "changes").glob("*.json")):
            body = _load(path)
            sync = body.get("sync")
            if sync and body.get("changes"):
                self.samples.setdefault(sync, []).extend(body["changes"][:2000])
        for path in sorted((self.output / "errors").glob("*.json")):
            body = _load(path)
            sync = body.get("sync")
            if sync and body.get("errors"):
                self.rejected.setdefault(sync, []).extend(body["errors"][:500])

    def _changes(self, sync: str, n: int, at: datetime) -> list[dict[str, Any]]:
        pool = self.samples.get(sync) or []
        out = []
        for change in self.rng.sample(pool, min(n, len(pool))):
            fields = change.get("fields") or {}
            names = [k for k, v in fields.items() if isinstance(v, dict)][:3] or list(fields)[:1]
            updated = {}
            for name in names:
                after = (fields[name] or {}).get("after")
                updated[name] = {"before": f"{after} (old)" if isinstance(after, str) else after, "after": after}
            out.append({"key": change.get("key"), "action": "update", "at": _iso(at), "fields": updated})
        return out

    def biggest(self, sync: str) -> str:
        """The run id of the history run of ``sync`` with the most changes whose file is
        still on disk (the product's OUTPUT_RETENTION_* prune files of old runs)."""
        kept = [(n, run_id) for n, run_id, name in self.written.get(sync, []) if (self.output / "changes" / name).exists()]
        return max(kept)[1] if kept else "none"

    def write(self, sync: str, runs: int, end: datetime) -> int:
        """``runs`` hourly runs of ``sync`` ending at ``end``, oldest first."""
        written = 0
        for i in range(runs):
            started = end - timedelta(hours=runs - i)
            big = self.rng.random() < 0.05
            changed = self.rng.randint(200, 900) if big else self.rng.randint(0, 12)
            rejected = self.rng.randint(0, 6) if sync == "employees" else 0
            failed_run = self.rng.random() < 0.02
            status = "failed" if failed_run else ("partial" if rejected else "success")
            duration = round(self.rng.uniform(2.0, 12.0) + changed * 0.05, 3)
            finished = started + timedelta(seconds=duration)
            # Run ids follow the product's shape; their time is now (the store finds a run
            # from the time in its id, and its stream entries are written now).
            from config.bootstrap import new_run_id

            run_id = new_run_id()
            name = f"{sync}-{_stamp(started)}-{i:04d}.json"
            changes = [] if failed_run else self._changes(sync, changed, finished)
            counts = {k: 0 for k in COUNT_KEYS}
            counts["updated"] = len(changes)
            counts["failed"] = rejected
            counts["unchanged"] = max(0, len(self.samples.get(sync) or []) - len(changes))
            header = {
                "run_id": run_id, "sync": sync, "status": status, "started_at": _iso(started),
                "finished_at": _iso(finished), "dry_run": False, "counts": counts,
                "errors_file": name if rejected else None,
                "error": "SafetyAmp answered 503 for 5 minutes (circuit breaker opened)" if failed_run else None,
                "guard_tripped": False, "plan": None, "unconfirmed": [],
            }  # fmt: skip
            # The product's layout (indent 2, the list last): the console pages through it.
            (self.output / "changes" / name).write_text(json.dumps({**header, "changes": changes}, indent=2), encoding="utf-8")
            if rejected:
                pool = self.rejected.get(sync) or []
                errors = [dict(e, at=_iso(finished)) for e in self.rng.sample(pool, min(rejected, len(pool)))]
                (self.output / "errors" / name).write_text(
                    json.dumps({"run_id": run_id, "sync": sync, "status": status, "errors": errors}, indent=2),
                    encoding="utf-8",
                )
            self.store.record_run(
                {
                    "run_id": run_id, "sync": sync, "status": status, "started_at": _iso(started),
                    "finished_at": _iso(finished), "duration_seconds": duration, "counts": counts,
                    "error": header["error"], "runner": {"host": "bench", "pid": os.getpid(), "kind": "daemon"},
                    "changes_file": name, "errors_file": name if rejected else None,
                    "guard_tripped": False, "forced": False,
                }
            )  # fmt: skip
            self.written.setdefault(sync, []).append((len(changes), run_id, name))
            written += 1
        return written


# ---------------------------------------------------------------------------- timing
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def build_app(env: dict[str, str]) -> tuple[Any, Any]:
    """The daemon's Flask app over a runtime for the sandbox, as main.py builds it (no worker)."""
    from config.bootstrap import build_runtime
    from config.settings import load_settings
    from main import Daemon, create_app

    settings = load_settings(env)
    syncs = settings.enabled_syncs()
    settings.check(syncs)
    runtime = build_runtime(settings, syncs)
    daemon = Daemon(None, ())
    daemon.attach(settings, syncs, runtime)
    return create_app(daemon), daemon


def sign_in(client: Any) -> None:
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    answer = client.post(
        "/console/login", data={"password": TOKEN, "csrf_token": token.group(1) if token else "", "next": "/console/"}
    )
    if answer.status_code not in (302, 303):
        raise RuntimeError(f"sign-in refused: {answer.status_code} {answer.get_data(as_text=True)[:300]}")


def pages(app: Any, values: dict[str, str], extra: list[str]) -> tuple[list[str], list[str]]:
    """Every GET page of the console with its URL parameters filled in, and those that
    could not be (an unknown parameter name)."""
    urls, unknown = [], []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/console") or "GET" not in (rule.methods or ()) or rule.endpoint.endswith("static"):
            continue
        if rule.rule.endswith(("/login", "/logout")):
            continue
        missing = [a for a in rule.arguments if a not in values]
        if missing:
            unknown.append(f"{rule.rule} (no value for {', '.join(missing)})")
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[^:<>]+:)?{arg}>", values[arg], url)
        urls.append(url)
    return urls + extra, unknown


def item_offset(path: Path, n: int) -> int | None:
    """Byte offset of the ``n``-th item (from 0) of a run file's list (the console's page
    address), or None when the list is shorter."""
    mark = b"\n    {\n"
    seen, base, tail = -1, 0, b""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            data = tail + chunk
            at = data.find(mark)
            while at >= 0:
                seen += 1
                if seen == n:
                    return base - len(tail) + at + 1
                at = data.find(mark, at + 1)
            tail = data[-(len(mark) - 1) :]
            base += len(chunk)
    return None


def run_file(output: Path, entry: dict[str, Any] | None, kind: str) -> Path | None:
    name = (entry or {}).get(f"{kind}_file")
    if not name:
        return None
    path = Path(str(name))
    return path if path.is_absolute() else output / kind / path.name


def edit_targets(directory: Path, count: int) -> int:
    """Change the mobile phone of ``count`` SafetyAmp users by hand, so the next plan has
    that many updates (what a preview then shows)."""
    from sandbox.store import open_store

    st = open_store(directory)
    try:
        users = [u for u in st.all("safetyamp", "users") if u.get("emp_id") and u.get("system_access") == 1][:count]
        for i, user in enumerate(users):
            st.replace("safetyamp", "users", int(user["id"]), {**user, "mobile_phone": f"+1555{i:07d}"})
        return len(users)
    finally:
        st.close()


def fill_failed_queue(settings: Any, keys: list[str], count: int) -> int:
    """``count`` employees refused by SafetyAmp, through the product's failed-record
    tracker (what a day of a target refusing writes leaves): the queue the page lists."""
    from utils.failed_sync_tracker import build_tracker

    tracker = build_tracker(settings.redis_url, settings.redis_prefix)
    for i, key in enumerate(keys[:count]):
        reason = "email: The email has already been taken." if i % 3 else "mobile_phone: The mobile phone format is invalid."
        tracker.record_failure("employees", key, f"fp-{i}", reason, ["email" if i % 3 else "mobile_phone"])
    return min(count, len(keys))


def wait_job(daemon: Any, job_id: str, timeout: float = 900.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = daemon.jobs.get(job_id) or {}
        if job.get("state") in ("done", "failed"):
            return dict(job)
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} not finished after {timeout:.0f} s")


def time_page(client: Any, url: str, samples: int) -> dict[str, Any]:
    first = client.get(url)
    status = first.status_code
    size = len(first.get_data())
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = client.get(url)
        answer.get_data()
        times.append((time.perf_counter() - started) * 1000.0)
        status = answer.status_code
    return {
        "url": url, "status": status, "bytes": size, "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1), "max_ms": round(max(times), 1),
        "kind": "export" if ".csv" in url else "page",
        "met": max(times) < GOAL_MS and status < 400,
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['measured_at']} by `{result['command']}` in {result['wall_seconds']:.0f} s on "
        f"{result['machine']}: {result['size']:,} employees, {result['runs_per_sync']:,} runs of history per sync "
        f"({result['history_entries']:,} in all), {result['failed_queue']:,} records in the failed-records queue, "
        f"{result['samples']} timed requests per page.",
        "",
        "| page | status | size (KB) | p50 (ms) | p95 (ms) | max (ms) | under 300 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for page in sorted(result["pages"], key=lambda p: (p["kind"] != "page", p["url"])):
        met = (
            ("met" if page["met"] else "**not met**")
            if page["kind"] == "page"
            else "(a download: " + ("also under" if page["met"] else "over") + " 300 ms)"
        )
        lines.append(
            f"| `{page['url']}` | {page['status']} | {page['bytes'] / 1024:.1f} | {page['p50_ms']} | {page['p95_ms']} | "
            f"{page['max_ms']} | {met} |"
        )
    lines += [
        "",
        f"Goal (every page under {GOAL_MS:.0f} ms server time, the slowest of {result['samples']} requests): "
        f"**{'met' if result['met'] else 'not met'}**. CSV exports are downloads, streamed: shown, not held to it.",
    ]
    if result["not_measured"]:
        lines += ["", "Not measured: " + "; ".join(result["not_measured"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    repo = HERE.parent
    base = args.work_dir or tempfile.mkdtemp(prefix="bench-console-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    work = Path(base)
    work.mkdir(parents=True, exist_ok=True)
    output = work / "output"
    prefix = f"bench-console-{uuid.uuid4().hex[:10]}:"
    import redis

    client = redis.Redis.from_url(args.redis_url, socket_timeout=5)
    client.ping()  # the history lives in Redis: without it the figures would not mean production

    sandbox = hx.Sandbox(repo, work / "sandbox", size=args.size, seed=args.seed)
    print(f"seeding a {args.size:,}-employee sandbox in {work} ...", flush=True)
    seeded = sandbox.start()
    print(f"  ready in {seeded:.0f} s", flush=True)
    try:
        from config.bootstrap import sandbox_overrides

        env = sandbox.settings_env(
            sandbox_overrides,
            {
                "OUTPUT_DIR": str(output), "REDIS_URL": args.redis_url, "REDIS_PREFIX": prefix,
                "SYNC_TYPES": ",".join(SYNCS), "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "CONSOLE_TOKEN": TOKEN,
            },
        )  # fmt: skip
        print("first run through the product (creates every record) ...", flush=True)
        first = hx.run_product(repo, env, work / "first.log", "first")
        print(f"  {first.wall_seconds:.0f} s: " + ", ".join(f"{r['sync']} {r['status']}" for r in first.summary["runs"]))

        from config.settings import load_settings
        from utils.control import ControlStore

        settings = load_settings(env)
        store = ControlStore(client, prefix=prefix, run_history_length=settings.run_history_length)
        writer = HistoryWriter(output, store, random.Random(args.seed))
        writer.learn()
        print(f"history: {args.runs:,} runs per sync through the run-history store, with their files ...", flush=True)
        end = datetime.now(UTC) - timedelta(minutes=5)
        written = sum(writer.write(sync, args.runs, end) for sync in SYNCS)
        print("no-op run through the product (the newest run) ...", flush=True)
        noop = hx.run_product(repo, env, work / "noop.log", "noop")
        print(f"  {noop.wall_seconds:.0f} s")

        os.environ.update(env)  # the in-process app reads the same settings
        app, daemon = build_app(env)
        http = app.test_client()
        sign_in(http)
        first_id = str(first.summary.get("run_id") or "")
        first_entry = store.run(first_id, "employees") if first_id else None
        big_id = writer.biggest("employees")
        page2 = store.runs(sync="employees", count=51)
        key = str((writer.samples.get("employees") or [{}])[0].get("key", "1002"))
        edited = edit_targets(work / "sandbox", min(700, max(10, args.size // 70)))
        employee_keys = [str(c.get("key")) for c in writer.samples.get("employees") or []]
        employee_keys += [str(100000 + i) for i in range(args.failed)]  # beyond the sampled ones
        queued = fill_failed_queue(settings, list(dict.fromkeys(employee_keys)), args.failed)
        print(f"failed-records queue: {queued:,} employees refused by SafetyAmp (through the tracker)", flush=True)
        print(f"jobs: a lookup of employee {key} and a preview of employees ({edited} users edited by hand) ...", flush=True)
        diagnose = wait_job(daemon, daemon.jobs.submit("diagnose", actor="bench", sync="employees", key=key))
        preview = wait_job(daemon, daemon.jobs.submit("preview", actor="bench", syncs=["employees"]))
        print(f"  lookup {diagnose['state']}, preview {preview['state']}", flush=True)
        values = {"sync": "employees", "run_id": first_id or "none", "key": key, "job_id": str(preview["id"])}
        extra = [
            "/console/runs?sync=employees",
            "/console/runs?sync=employees&status=failed",
            f"/console/runs?sync=employees&before={page2[-1]['id']}" if len(page2) > 50 else "/console/runs?sync=employees",
            f"/console/runs/employees/{first_id}?show=rejected",
            f"/console/runs/employees/{big_id}",
            f"/console/jobs/{diagnose['id']}",
            f"/console/lookup?sync=employees&record={key}",
            "/console/failed?sync=employees",
            "/console/failed?sync=employees&start=4000",
        ]
        changes = run_file(output, first_entry, "changes")
        deep = item_offset(changes, max(0, int(args.size * 0.8))) if changes and changes.exists() else None
        if deep is not None:
            extra.append(f"/console/runs/employees/{first_id}?show=changes&at={deep}")
        urls, unknown = pages(app, values, extra)
        print(f"timing {len(urls)} pages, {args.samples} requests each ...", flush=True)
        measured = []
        for url in urls:
            # A CSV export of a 50,000-record run is a download of tens of MB: 3 samples.
            figure = time_page(http, url, min(args.samples, 3) if ".csv" in url else args.samples)
            measured.append(figure)
            print(f"  {figure['max_ms']:8.1f} ms max  {figure['p50_ms']:7.1f} ms p50  {figure['status']}  {url}", flush=True)
        daemon.stop.set()
        if daemon.runtime is not None:
            daemon.runtime.close()
    finally:
        sandbox.stop()
        if not args.keep:
            import hashlib

            scope = "sandbox-" + hashlib.sha256(str((work / "sandbox").resolve()).encode()).hexdigest()[:10] + ":"
            for pattern in (prefix + "*", scope + "*"):  # ours, and the roster cursor scoped by the folder
                for key in client.scan_iter(match=pattern):
                    client.delete(key)
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/console.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "wall_seconds": time.monotonic() - began,
        "machine": f"{os.cpu_count()} CPU, Python {platform.python_version()}",
        "size": args.size,
        "runs_per_sync": args.runs,
        "history_entries": written + 2 * len(SYNCS),
        "samples": args.samples,
        "failed_queue": args.failed,
        "pages": measured,
        "not_measured": unknown,
        "met": all(p["met"] for p in measured if p["kind"] == "page") and bool(measured),
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    text = markdown(result)
    Path(args.markdown).write_text(text, encoding="utf-8")
    print()
    print(text)
    print("goal met" if result["met"] else "goal NOT met")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
