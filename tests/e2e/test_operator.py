"""Issue 10, "the operator's view": triggers, quarantine, /health and the CLI's operator
commands, driven as an operator meets them (the daemon and the CLI in subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import WEBHOOK_SECRET, free_port, get, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "operator-token-123-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SYNCS = ("departments", "jobs", "titles", "employees", "vehicles", "rosters")


class Daemon:
    """``python main.py --sandbox`` in its own process, stopped at the end."""

    def __init__(self, tmp: Path, size: int = 40, sandbox: bool = True, **env: str) -> None:
        self.batch = BatchRunner(tmp, size=size)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = self.batch.env(
            PORT=str(self.port),
            HOST="127.0.0.1",
            SYNC_TRIGGER_TOKEN=TOKEN,
            SAMSARA_WEBHOOK_SECRET=WEBHOOK_SECRET,
            WEBHOOK_DEBOUNCE_SECONDS="0",
            **env,
        )
        cmd = [sys.executable, "main.py"]
        if sandbox:
            cmd += ["--sandbox", "--sandbox-dir", str(self.batch.dir), "--sandbox-size", str(size)]
        self.log = tmp / "daemon.log"
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def health(self) -> dict[str, Any]:
        r = get(self.base + "/health")
        return r.json() if r is not None and r.headers.get("content-type", "").startswith("application/json") else {}

    def run_ids(self) -> dict[str, str]:
        return {s: r.get("run_id") for s, r in (self.health().get("last_runs") or {}).items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def signed_webhook(base: str, event_id: str) -> requests.Response:
    from utils.webhooks import sign

    body = json.dumps({"eventId": event_id, "eventType": "VehicleUpdated", "data": {}}).encode()
    ts = str(int(time.time()))
    headers = {
        "X-Samsara-Timestamp": ts,
        "X-Samsara-Signature": sign(WEBHOOK_SECRET, ts, body),
        "Content-Type": "application/json",
    }
    return requests.post(base + "/webhooks/samsara", data=body, headers=headers, timeout=5)


# ---------------------------------------------------------------------------- daemon
def test_sync_all_then_one_sync_runs_every_sync_and_health_says_partial(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    try:
        first = wait_for(
            lambda: (ids := d.run_ids()) and set(ids) == set(SYNCS) and d.health()["running"] is None and ids, 120, 0.3
        )
        assert first, d.tail()
        health = d.health()
        # The seeded sandbox holds employees the validator refuses: employees is partial.
        assert health["last_runs"]["employees"]["status"] == "partial"
        assert health["status"] == "degraded", health["status"]
        assert health["sync_states"]["employees"]["state"] == "partial"
        assert get(d.base + "/health").status_code == 200
        user = next(k for k in created_keys(d.batch, "rosters") if k.startswith("user/"))
        diag = get(f"{d.base}/diagnose/rosters/{user}", headers=AUTH)
        assert diag.status_code == 200 and diag.json()["verdict"] == "IN_SYNC", diag.text

        # Both triggers land within one tick of the worker: they must add up, not replace.
        assert requests.post(d.base + "/sync", headers=AUTH, timeout=5).status_code == 202
        assert requests.post(d.base + "/sync/employees", headers=AUTH, timeout=5).status_code == 202
        rerun = wait_for(lambda: (ids := d.run_ids()) and all(ids[s] != first[s] for s in SYNCS) and ids, 60, 0.3)
        assert rerun, f"only these syncs ran again: {[s for s, i in d.run_ids().items() if i != first[s]]}"
        assert len(set(rerun.values())) == 1, "the two triggers should coalesce into one cycle"
        print(f"\nPOST /sync + POST /sync/employees: one cycle ran {len(rerun)} syncs; /health was {health['status']}: "
              f"{health['problems']}")  # fmt: skip
    finally:
        d.stop()


def test_webhooks_respect_quarantine_and_an_operator_trigger_overrides_it(tmp_path: Path) -> None:
    d = Daemon(
        tmp_path,
        size=20,
        SYNC_TYPES="vehicles",
        SANDBOX_FAULTS=json.dumps({"samsara": {"error_rate": 1.0}}),
        HTTP_MAX_RETRY_SECONDS="1",
        BREAKER_FAILURE_THRESHOLD="1000",
    )
    try:
        # The runner quarantines the sync before the daemon records its last run: wait for both.
        failed = wait_for(
            lambda: (h := d.health()).get("quarantine", {}).get("vehicles") and "vehicles" in h.get("last_runs", {}) and h,
            90,
            0.3,
        )
        assert failed, d.tail()
        assert failed["last_runs"]["vehicles"]["status"] == "failed"
        assert failed["status"] == "failing"
        assert failed["sync_states"]["vehicles"]["state"] == "quarantined"
        assert get(d.base + "/health").status_code == 503
        before = failed["last_runs"]["vehicles"]["run_id"]
        mark = d.batch.mark()
        started = time.monotonic()
        for n in range(3):
            assert signed_webhook(d.base, f"evt-{n}").status_code == 202
            time.sleep(1.5)
        time.sleep(3)
        waited = time.monotonic() - started
        assert d.health()["last_runs"]["vehicles"]["run_id"] == before, "a webhook started a run of a quarantined sync"
        assert not d.batch.requests("samsara", since=mark), "a webhook made the quarantined sync call Samsara"
        held = sum("event-triggered run not started" in line for line in d.log.read_text().splitlines())

        # The operator's authenticated trigger is the override.
        assert requests.post(d.base + "/sync/vehicles", headers=AUTH, timeout=5).status_code == 202
        forced = wait_for(lambda: (r := d.health()["last_runs"]["vehicles"])["run_id"] != before and r, 60, 0.3)
        assert forced, "the operator's trigger did not run the quarantined sync"
        assert d.batch.requests("samsara", since=mark)
        print(f"\n3 signed webhooks in {waited:.1f} s during a {failed['quarantine']['vehicles']['backoff_seconds']:.0f} s "
              f"quarantine: 0 runs, 0 Samsara requests, {held} 'not started' log line(s); operator POST /sync/vehicles: "
              f"ran ({forced['status']}), {len(d.batch.requests('samsara', since=mark))} Samsara request(s)")  # fmt: skip
    finally:
        d.stop()


def test_health_during_a_configuration_error_is_not_200(tmp_path: Path) -> None:
    d = Daemon(tmp_path, sandbox=False)  # no settings at all: nothing is configured
    try:
        # (a 503 Response is falsy: compare with None)
        settled = wait_for(lambda: (x := get(d.base + "/health")) is not None and x.json()["status"] != "starting", 30, 0.2)
        assert settled, d.tail()
        r = get(d.base + "/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "configuration_error"
        assert body["problems"] and "configuration" in body["problems"][0]
        assert get(d.base + "/live").status_code == 200  # the process itself is alive
        assert get(d.base + "/ready").status_code == 503
    finally:
        d.stop()


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """REDIS_URL and a fresh REDIS_PREFIX (keys deleted afterwards). The quarantine is
    shared through Redis: two CLI runs only see each other's state there (without Redis
    each process keeps its own, by design)."""
    import os
    import uuid

    import redis

    from tests.support.redis_server import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI: {exc}")
        pytest.skip(f"needs a real Redis at {REDIS_URL}")
    prefix = f"test-operator-{uuid.uuid4().hex}:"
    yield {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix}
    for key in list(client.scan_iter(match=prefix + "*")):
        client.delete(key)


def cli(batch: BatchRunner, *args: str, expect: tuple[int, ...] = (0,), **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "sync_batch.py", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=batch.env(**env), capture_output=True, text=True, timeout=300)
    assert proc.returncode in expect, f"exit {proc.returncode}\nstdout:{proc.stdout[-3000:]}\nstderr:{proc.stderr[-3000:]}"
    return proc


def sandbox_args(batch: BatchRunner) -> list[str]:
    return ["--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", str(batch.size)]


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_help_lists_the_operator_commands_and_old_forms_still_work(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=30)
    top = cli(batch, "--help").stdout
    for command in ("failed", "diagnose"):
        assert command in top, top
    assert "--force" in top
    assert "list" in cli(batch, "failed", "--help").stdout
    assert "KEY" in cli(batch, "diagnose", "--help").stdout.upper()
    batch.run("--only", "departments,jobs,titles,employees")
    # global options before or after the command
    before = cli(batch, *sandbox_args(batch), "failed", "list", "--sync", "employees", "--json")
    after = cli(batch, "failed", "list", "--sync", "employees", *sandbox_args(batch), "--json")
    assert json.loads(before.stdout.splitlines()[-1]) == json.loads(after.stdout.splitlines()[-1])
    report = json.loads(cli(batch, *sandbox_args(batch), "diagnose", "employees", "1001", "--json").stdout.splitlines()[-1])
    assert report["sync"] == "employees" and report["verdict"]
    # a sandbox folder that happens to be called like a command is still a folder
    odd = BatchRunner(tmp_path / "failed", size=30)
    odd.dir = tmp_path / "diagnose"
    summary = odd.run("--only", "departments")
    assert summary["runs"][0]["sync"] == "departments"


def test_first_partial_run_names_its_errors_and_failed_list_shows_every_failed_record(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=40)
    summary = batch.run("--only", "departments,jobs,titles,employees")
    employees = next(r for r in summary["runs"] if r["sync"] == "employees")
    assert employees["status"] == "partial" and employees["failed"] > 0
    errors_file = Path(employees["errors_file"])
    assert errors_file.is_file() and errors_file.parent == batch.output / "errors"
    rejected = {e["key"] for e in json.loads(errors_file.read_text())["errors"] if e["kind"] in ("rejected", "failed")}
    assert len(rejected) == employees["failed"]

    listed = json.loads(cli(batch, *sandbox_args(batch), "failed", "list", "--json").stdout.splitlines()[-1])
    keys = {(r["sync"], r["key"]) for r in listed}
    assert {("employees", k) for k in rejected} <= keys
    assert all(r.get("reason") for r in listed)
    text = cli(batch, *sandbox_args(batch), "failed", "list", "--sync", "employees").stdout
    assert "no failed records" not in text
    for key in rejected:
        assert key in text
    assert errors_file.name in text

    # the text summary names the errors file and suggests diagnose
    plain = cli(batch, *sandbox_args(batch), "--only", "employees").stdout
    assert "errors/employees-" in plain and "diagnose employees" in plain and "failed list" in plain
    print(f"\nfirst run: employees partial failed={employees['failed']}; failed list: {len(listed)} record(s) "
          f"({sorted({r['status'] for r in listed})})")  # fmt: skip


def test_dry_run_text_summary_is_labelled(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=30)
    out = cli(batch, *sandbox_args(batch), "--only", "departments", "--dry-run").stdout
    assert any(line.startswith("dry run ") for line in out.splitlines()), out
    assert "nothing was sent" in out
    summary = batch.run("--only", "departments", "--dry-run")
    assert summary["dry_run"] is True


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_a_failed_cli_run_quarantines_and_later_runs_obey_it_unless_forced(tmp_path: Path, redis_env) -> None:
    batch = BatchRunner(tmp_path, size=20)
    broken = {"SANDBOX_FAULTS": json.dumps({"samsara": {"error_rate": 1.0}}), "HTTP_MAX_RETRY_SECONDS": "1",
              "BREAKER_FAILURE_THRESHOLD": "1000", **redis_env}  # fmt: skip
    first = batch.run("--only", "vehicles", expect=(1,), **broken)
    assert first["runs"][0]["status"] == "failed"

    mark = batch.mark()
    held = batch.run("--only", "vehicles", **broken)
    run = held["runs"][0]
    assert run["status"] == "skipped" and "quarantined" in run["error"], run
    assert held["_exit"] == 0
    assert not batch.requests("samsara", since=mark), "a quarantined sync still called Samsara"
    text = cli(batch, *sandbox_args(batch), "--only", "vehicles", **broken).stdout
    assert "quarantined" in text and "--force" in text

    forced = batch.run("--only", "vehicles", "--force", expect=(1,), **broken)
    assert forced["runs"][0]["status"] == "failed"
    assert batch.requests("samsara", since=mark)

    print(f"\nCLI: failed run; next run {run['status']} ({run['error'][:60]}...), 0 Samsara requests, exit "
          f"{held['_exit']}; --force ran: {forced['runs'][0]['status']}")  # fmt: skip
    healed = batch.run("--only", "vehicles", "--force", **redis_env)
    assert healed["runs"][0]["status"] in ("success", "partial")
    again = batch.run("--only", "vehicles", **redis_env)  # a good run lifted the quarantine
    assert again["runs"][0]["status"] in ("success", "partial")


def created_keys(batch: BatchRunner, sync: str) -> list[str]:
    """Keys the first run of ``sync`` created, from its changes file."""
    changes = json.loads(min((batch.output / "changes").glob(f"{sync}-*.json")).read_text())
    return [str(c["key"]) for c in changes["changes"] if c["action"] == "create"]


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_diagnose_rosters_user_and_class_and_no_empty_what_to_do(tmp_path: Path) -> None:
    batch = BatchRunner(tmp_path, size=30)
    batch.run()
    rosters = created_keys(batch, "rosters")
    user = next(k for k in rosters if k.startswith("user/")).removeprefix("user/")
    group = next(k for k in rosters if k.startswith("class/")).removeprefix("class/")

    def diagnose(*args: str) -> dict[str, Any]:
        return json.loads(cli(batch, *sandbox_args(batch), "diagnose", *args, "--json").stdout.splitlines()[-1])

    report = diagnose("rosters", user)  # a bare sourcedId
    assert report["sync"] == "rosters" and report["key"] == f"user/{user}" and report["verdict"] == "IN_SYNC", report
    assert report["target"]["externalId"] == user and report["source"]["externalId"] == user

    text = cli(batch, *sandbox_args(batch), "diagnose", "rosters", f"user/{user}").stdout
    assert "IN_SYNC" in text and "Nothing to do" in text
    assert not text.rstrip().endswith("what to do:"), text

    report = diagnose("rosters", f"class/{group}")
    assert report["verdict"] == "IN_SYNC", report
    assert report["target"]["externalId"] == group and report["source"]["members"] == report["target_members"]

    unknown = diagnose("rosters", "no-such-id")
    assert unknown["verdict"] == "NOT_IN_SCOPE" and unknown["remediation"]

    emp = cli(batch, *sandbox_args(batch), "diagnose", "employees", created_keys(batch, "employees")[0]).stdout
    assert "IN_SYNC" in emp and not emp.rstrip().endswith("what to do:"), emp
