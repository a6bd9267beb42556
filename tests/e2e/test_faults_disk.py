"""The output folder as a fault: a full disk, an unwritable OUTPUT_DIR, and retention.

* Full disk (the CLI): OUTPUT_DIR on a 256 KB tmpfs with 200 KB already used. Every write
  the emulators acknowledged must have its intent in the change log (write-ahead: the
  intent is on disk before the request goes out); a sync whose log cannot be written
  stops sending and says ``cannot write the change log``; the other syncs report; the
  ``--json`` summary is printed (stdout needs no disk); exit 1; no traceback.
* Unwritable OUTPUT_DIR (the daemon): a path under a regular file, which root cannot
  write to either. Every cycle is a failed run of each sync, visible in /health
  last_runs with the reason and in sync_runs_total{status="failed"}, so alerts fire.
* Retention and quiet runs: a run with nothing to say writes one small changes file per
  sync (no errors file, no log left); runs older than OUTPUT_RETENTION_DAYS or beyond
  the newest OUTPUT_RETENTION_RUNS per sync are deleted by both entry points, never a
  run in progress nor a file the product did not write.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, get, wait_for
from tests.support.disk import small_tmpfs

pytestmark = pytest.mark.e2e

ALL_SYNCS = ("departments", "jobs", "titles", "employees", "vehicles", "rosters")
KEY_FIELDS = {
    "site_clusters": "external_code",
    "sites": "external_code",
    "user_titles": "name",
    "users": "emp_id",
    "assets": "code",
}
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def log_lines(output: Path) -> list[dict[str, Any]]:
    """Every line of every run's JSON-lines log, each with its run's name (a line cut
    short by the full disk would fail json.loads: there must be none)."""
    lines = []
    for path in sorted((output / "logs").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            lines.append({**json.loads(line), "run": path.stem})
    return lines


def recorded_writes(output: Path) -> list[dict[str, Any]]:
    """The write-ahead records of every run, one per write (its seq within its run):
    intents still in a log (a run that could not finish), and the changes and errors
    of finished runs, which carry their intent's seq, target and record id."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for line in log_lines(output):
        if line["type"] == "intent":
            found[(line["run"], line["seq"])] = line
    for folder, items in (("changes", "changes"), ("errors", "errors")):
        for path in (output / folder).glob("*.json"):
            for entry in json.loads(path.read_text(encoding="utf-8"))[items]:
                if "intent" in entry:
                    found.setdefault((path.stem, entry["intent"]), {**entry, "seq": entry["intent"], "run": path.stem})
    return list(found.values())


def _norm(value: Any) -> str:
    return str(value).strip().lower()


def _target_of(request: dict[str, Any]) -> tuple[str, str | None]:
    """(collection or SCIM resource, record id or None) of a write request's path."""
    parts = [p for p in request["path"].split("?")[0].split("/") if p]  # /api/users/7, /v2/Users/<id>
    return parts[1], parts[2] if len(parts) > 2 else None


def safetyamp_keys(batch: BatchRunner) -> dict[str, set[str]]:
    with batch.store() as st:
        return {c: {_norm(r.get(f)) for r in st.all("safetyamp", c)} for c, f in KEY_FIELDS.items()}


# ------------------------------------------------------------------------- full disk
def test_full_disk_no_write_goes_out_unrecorded_and_every_sync_reports(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=120)
    batch.run("--dry-run", OUTPUT_DIR=str(tmp_path / "seed-output"))  # seeds the sandbox, sends nothing
    mark = batch.mark()
    before = safetyamp_keys(batch)

    with small_tmpfs(batch.output, 256, used_kb=200):
        summary = batch.run(expect=(1,))
        lines = log_lines(batch.output)
        intents = recorded_writes(batch.output)

    stderr = summary["_stderr"]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert summary["status"] == "failed" and summary["_exit"] == 1
    runs = {r["sync"]: r for r in summary["runs"]}
    assert set(runs) == set(ALL_SYNCS), "every sync must report, not only those before the disk filled"
    unrecorded = {s: r for s, r in runs.items() if "cannot write the change log" in (r.get("error") or "")}
    assert unrecorded, runs
    for sync, run in runs.items():
        assert run["status"] in ("success", "partial", "failed"), run
        if run["status"] == "failed":
            assert sync in unrecorded, f"{sync} failed for another reason: {run}"
    # the summary's request counts are what the emulators saw
    sent = batch.requests(since=mark)
    acknowledged = [
        r for r in sent if r["method"] in WRITE_METHODS and 200 <= r["status"] < 300 and r["service"] in ("safetyamp", "scim")
    ]
    assert acknowledged, "the disk filled before any write: the scenario tests nothing"

    creates = Counter(i["target"] for i in intents if i["action"] == "create")
    by_id = {(i["target"], str(i["id"])) for i in intents if i.get("id") is not None}
    posts = Counter(_target_of(r)[0] for r in acknowledged if r["method"] == "POST")
    for target, n in posts.items():
        assert creates[target] >= n, f"{n} acknowledged POSTs to {target}, {creates[target]} create intents recorded"
    for r in acknowledged:
        if r["method"] != "POST":
            assert _target_of(r) in by_id, f"{r['method']} {r['path']} acknowledged without an intent record"
    # and by key: every record that now exists in SafetyAmp and did not before was intended
    intended_keys = {(i["target"], _norm(i["key"])) for i in intents if i["action"] == "create"}
    after = safetyamp_keys(batch)
    for collection, keys in after.items():
        for key in keys - before[collection]:
            assert (collection, key) in intended_keys, f"{collection} {key} was created without an intent record"

    # an intent left in a log has its outcome after it, unless that could not be written
    # either: at most the writes in flight (8 workers) when a sync stopped
    outcomes = {(line["run"], line.get("intent")) for line in lines if line["type"] in ("change", "error", "settled")}
    missing = [i for i in lines if i["type"] == "intent" and (i["run"], i["seq"]) not in outcomes]
    assert len(missing) <= len(unrecorded) * 8, missing
    print(
        f"\nfull disk: {len(acknowledged)} writes acknowledged, {len(intents)} intents recorded, "
        f"{len(missing)} without a recorded outcome; syncs: "
        + ", ".join(f"{s}={r['status']} (created {r['created']})" for s, r in runs.items())
        + "\n  "
        + next(iter(unrecorded.values()))["error"]
    )


# ---------------------------------------------------------------- daemon, unwritable
def test_daemon_with_unwritable_output_counts_failed_runs_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file: nothing can be created under it, not even by root\n")
    port = free_port()
    env = BatchRunner(tmp_path).env(PORT=str(port), HOST="127.0.0.1", OUTPUT_DIR=str(blocker / "output"))
    log_path = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--sandbox-size", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log_path, "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def all_reported() -> dict[str, Any] | None:
            r = get(base + "/health")
            if r is None or r.status_code not in (200, 503):  # 503 "failing" once every sync failed
                return None
            runs = r.json()["last_runs"]
            return runs if set(ALL_SYNCS) <= set(runs) else None

        last_runs = wait_for(all_reported, 120.0, 0.5)
        assert last_runs, f"/health never showed a run of every sync\n{log_path.read_text()[-3000:]}"
        for sync in ALL_SYNCS:
            assert last_runs[sync]["status"] == "failed", last_runs[sync]
            assert "cannot write the change log" in last_runs[sync]["error"], last_runs[sync]
        metrics = get(base + "/metrics").text
        for sync in ALL_SYNCS:
            failed = re.search(rf'^sync_runs_total\{{status="failed",sync="{sync}"\}} (\S+)$', metrics, re.M) or re.search(
                rf'^sync_runs_total\{{sync="{sync}",status="failed"\}} (\S+)$', metrics, re.M
            )
            assert failed and float(failed.group(1)) >= 1, f"sync_runs_total failed for {sync}: {failed}"
            broken = re.search(rf'^sync_change_log_write_failures_total\{{sync="{sync}"\}} (\S+)$', metrics, re.M)
            assert broken and float(broken.group(1)) >= 1, f"no change-log failure counted for {sync}"
        with BatchRunner(tmp_path).store() as st:
            writes = [r for r in st.requests() if r["method"] in WRITE_METHODS and r["service"] in ("safetyamp", "scim")]
        assert writes == [], "a write was sent although its change log could not be written"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
        text = log_path.read_text()
        assert "sync cycle crashed" not in text and "Traceback" not in text, text[-3000:]
        print("\nunwritable OUTPUT_DIR: " + last_runs["employees"]["error"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------- retention
def _fake_run(output: Path, name: str, *, finished: bool = True, errors: bool = False, age_days: float = 0) -> list[Path]:
    """The files a run named ``name`` would have left (optionally aged by mtime)."""
    made = [output / "logs" / f"{name}.jsonl"]
    if finished:
        made = [output / "changes" / f"{name}.json"]
        if errors:
            made.append(output / "errors" / f"{name}.json")
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n", encoding="utf-8")
        if age_days:
            old = time.time() - age_days * 86400
            os.utime(path, (old, old))
    return made


def sync_of(name: str) -> str:
    """``changes/jobs-20261128T215029Z-2.json`` -> ``jobs``."""
    match = re.match(r"(.+?)-\d{8}T\d{6}Z", name.split("/")[-1])
    assert match, name
    return match.group(1)


def files_of(output: Path) -> set[str]:
    return {str(p.relative_to(output)) for sub in ("changes", "errors", "logs") for p in (output / sub).glob("*") if p.is_file()}


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_quiet_runs_write_one_small_file_per_sync_and_old_output_is_pruned(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=40)
    out = batch.output
    old = _fake_run(out, "jobs-20200101T000000Z", errors=True, age_days=2000)  # older than 30 days
    old_unfinished = _fake_run(out, "jobs-20200102T000000Z", finished=False, age_days=2000)  # killed long ago
    in_progress = _fake_run(out, "jobs-20200103T000000Z", finished=False)  # old name, but written to just now
    foreign = out / "changes" / "notes-by-an-operator.txt"
    foreign.write_text("not ours: never deleted\n", encoding="utf-8")

    first = batch.run(OUTPUT_RETENTION_RUNS="2")
    assert first["status"] in ("success", "partial")
    files = files_of(out)
    for path in old + old_unfinished:
        assert str(path.relative_to(out)) not in files, f"{path.name} is older than OUTPUT_RETENTION_DAYS and was kept"
    assert str(in_progress[0].relative_to(out)) in files, "a run still being written was deleted"
    assert foreign.exists()
    assert not [f for f in files if f.startswith("logs/") and f != str(in_progress[0].relative_to(out))], (
        "a finished run's JSON-lines log is left behind: its changes and errors files hold everything"
    )

    quiet = batch.run(OUTPUT_RETENTION_RUNS="2")
    new = files_of(out) - files
    per_sync = Counter(sync_of(name) for name in new)
    silent = []
    for run in quiet["runs"]:
        assert run["created"] == run["updated"] == run["deactivated"] == 0, run
        (changes,) = [out / n for n in new if n.startswith("changes/") and sync_of(n) == run["sync"]]
        doc = json.loads(changes.read_text(encoding="utf-8"))
        assert doc["changes"] == [] and doc["counts"]["unchanged"] == run["unchanged"]
        # an errors file only when there is something to say: records refused or fields dropped
        assert per_sync[run["sync"]] == (2 if doc["errors_file"] else 1), (run, sorted(new))
        if not doc["errors_file"]:
            silent.append(run["sync"])
            assert changes.stat().st_size < 1024, f"{changes.name}: {changes.stat().st_size} bytes for nothing to say"
    assert {"departments", "jobs", "titles", "rosters"} <= set(silent), silent

    batch.run(OUTPUT_RETENTION_RUNS="2")  # a third run: only the newest two runs per sync stay
    kept = Counter(sync_of(n) for n in files_of(out) if n.startswith("changes/") and n.endswith(".json") and "2020" not in n)
    assert kept == dict.fromkeys(ALL_SYNCS, 2), kept
    assert in_progress[0].exists() and foreign.exists()


def test_the_daemon_prunes_old_output_too(tmp_path: Path) -> None:
    out = tmp_path / "output"
    old = _fake_run(out, "departments-20200101T000000Z", errors=True, age_days=2000)
    port = free_port()
    env = BatchRunner(tmp_path).env(PORT=str(port), HOST="127.0.0.1", SYNC_TYPES="departments", OUTPUT_RETENTION_DAYS="7")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--sandbox-size", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ran = wait_for(lambda: (r := get(base + "/health")) is not None and r.json()["last_runs"].get("departments"), 90.0, 0.5)
        assert ran, "no departments run within 90 s"
        assert not any(p.exists() for p in old), "the daemon kept output older than OUTPUT_RETENTION_DAYS"
        assert len(list((out / "changes").glob("departments-*.json"))) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- file-size limit (RLIMIT_FSIZE)
def test_a_file_size_limit_stops_the_sync_cleanly_instead_of_killing_the_process(tmp_path: Path) -> None:
    """Under RLIMIT_FSIZE the kernel sends SIGXFSZ at the write that passes the limit;
    CPython ignores that signal from start-up, so the write fails with EFBIG like on a
    full disk: the sync stops before its next request and reports why, the process lives
    on (exit -25 would mean it was killed, with no summary). The emulators run in a process
    of their own, without the limit (their SQLite files grow too)."""
    import resource

    port_file = tmp_path / "ports.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(tmp_path / "sb"), "--port-file", str(port_file), "--size", "120"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(port_file.exists, 60), "sandbox serve wrote no port file"
        ep = json.loads(port_file.read_text())
        env = BatchRunner(tmp_path).env(
            SYNC_TYPES="departments,jobs,titles,employees",
            OUTPUT_DIR=str(tmp_path / "out"),
            VIEWPOINT_DB_URL=ep["viewpoint"]["url"],
            SAFETYAMP_URL=ep["safetyamp"]["url"],
            SAFETYAMP_TOKEN=ep["safetyamp"]["token"],
            SAFETYAMP_FQDN=ep["safetyamp"]["fqdn"],
            SAFETYAMP_RATE_LIMIT_PER_MINUTE="60000",
            LOCK_REQUIRED="false",
            REDIS_PREFIX=f"test-fsize-{os.getpid()}-{tmp_path.name}:",
        )

        def limit() -> None:
            # 64 KB per file: room for SQLite's 32 KB shared-memory file beside the source
            # database; the employees change log (120 creates) passes it
            resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

        run = subprocess.run(
            [sys.executable, "sync_batch.py", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit,
        )  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert run.returncode == 1, f"exit {run.returncode} (-25 is SIGXFSZ)\nstderr: {run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    errors = [r.get("error") or "" for r in summary["runs"] if r["status"] == "failed"]
    assert errors and all("cannot write the change log" in e for e in errors), summary
