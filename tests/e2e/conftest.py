"""Helpers for end-to-end runs: the real CLI in a subprocess against a sandbox folder, and
the console's daemon in this process (``console_daemon``) with the clients its tests use."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.redis_server import REDIS_URL, connect, shared_server

ROOT = Path(__file__).resolve().parents[2]


class BatchRunner:
    """Runs `python sync_batch.py --sandbox --json` as a user would, in its own process."""

    def __init__(self, tmp: Path, size: int = 120) -> None:
        self.dir = tmp / "sandbox"
        self.output = tmp / "output"
        self.size = size

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "SQL_", "VIEWPOINT_"))
        }
        env.pop("SANDBOX_FAULTS", None)
        env.update({"OUTPUT_DIR": str(self.output), "LOG_FORMAT": "json", "SANDBOX_SEED": "7"})
        env.update(extra)
        return env

    def run(self, *args: str, expect: tuple[int, ...] = (0,), **env: str) -> dict[str, Any]:
        cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(self.dir),
               "--sandbox-size", str(self.size), "--json", *args]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=600)
        assert proc.returncode in expect, f"exit {proc.returncode}\nstdout:{proc.stdout[-2000:]}\nstderr:{proc.stderr[-4000:]}"
        lines = proc.stdout.strip().splitlines()
        assert lines, proc.stderr[-2000:]
        summary = json.loads(lines[-1])
        summary["_stderr"] = proc.stderr
        summary["_exit"] = proc.returncode
        return summary

    def mutate(self, percent: float, seed: int = 11) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "sandbox", "mutate", "--dir", str(self.dir), "--percent", str(percent), "--seed", str(seed)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def store(self):
        from sandbox.store import open_store

        return open_store(self.dir)

    def mark(self) -> int:
        """The id of the last request the emulators logged (count what comes after it)."""
        with self.store() as st:
            return st.last_request_id()

    def requests(self, service: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """The requests the emulators received after request id ``since``."""
        with self.store() as st:
            return st.requests(service, since_id=since)


def writes(summary: dict[str, Any], service: str = "safetyamp") -> int:
    return sum(n for m, n in summary["requests"][service].items() if m != "GET")


def run_counts(summary: dict[str, Any], key: str, syncs: tuple[str, ...] | None = None) -> int:
    return sum(r[key] for r in summary["runs"] if syncs is None or r["sync"] in syncs)


@pytest.fixture
def batch(tmp_path: Path) -> BatchRunner:
    return BatchRunner(tmp_path)


# ---- the console's daemon, in this process -------------------------------------------------
@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    yield from shared_server()


@contextmanager
def console_daemon(
    root: Path, redis_server: tuple[str, Any], env: dict[str, str], *, size: int, worker: bool = False
) -> Iterator[SimpleNamespace]:
    """A ``main.Daemon`` on a fresh sandbox under ``root`` (``size`` records, seed 7) and the
    shared Redis under a key prefix of its own (deleted afterwards), after its first complete
    cycle: run here, or with ``worker`` by its worker thread (which then goes on running).
    Yields app (``main.create_app``), daemon, settings, runtime, root, dir (the sandbox) and
    syncs; ``env`` adds to OUTPUT_DIR, REDIS_URL and REDIS_PREFIX."""
    from config.bootstrap import build_runtime, sandbox_overrides
    from config.settings import load_settings
    from main import Daemon, create_app
    from sandbox.server import start_sandbox
    from utils.scrub import add_secrets

    client = connect(redis_server, decode=True)
    prefix = f"test-console-{uuid.uuid4().hex}:"
    env = {
        "OUTPUT_DIR": str(root / "output"),
        "REDIS_URL": REDIS_URL if redis_server[0] == "real" else "redis://127.0.0.1:1/0",
        "REDIS_PREFIX": prefix,
        **env,
    }
    try:
        with start_sandbox(root / "sandbox", size=size, faults={}, seed=7) as sb:
            settings = load_settings(env, overrides=sandbox_overrides(sb.endpoints, root / "sandbox", env), dotenv_path=None)
            add_secrets(settings.secret_values())  # as main.py does (configure_logging)
            syncs = settings.enabled_syncs()
            runtime = build_runtime(settings, syncs, redis_client=client)
            daemon = Daemon(settings, syncs, runtime)
            _first_cycle(daemon, syncs, worker)
            try:
                yield SimpleNamespace(
                    app=create_app(daemon), daemon=daemon, settings=settings, runtime=runtime, root=root,
                    dir=root / "sandbox", syncs=syncs,
                )  # fmt: skip
            finally:
                daemon.stop.set()
                daemon.jobs.close()
                if daemon.worker.ident:
                    daemon.worker.join(timeout=25)
                runtime.close()
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


def _first_cycle(daemon: Any, syncs: tuple[str, ...], worker: bool) -> None:
    if not worker:
        results = daemon.run_cycle(syncs)
        assert {r.status for r in results} <= {"success", "partial"}, [r.summary() for r in results]
        return
    daemon.worker.start()
    deadline = time.monotonic() + 120
    while len(daemon.state.last_runs) < len(syncs) or daemon.state.running:
        assert time.monotonic() < deadline, "the first cycle did not finish"
        time.sleep(0.2)


def behind_proxy(app: Any, groups: str, *, addr: str, user: str) -> Any:
    """A test client whose requests come from ``addr`` with the sign-on proxy's headers for ``user``."""
    web = app.test_client()
    web.environ_base.update(
        REMOTE_ADDR=addr,
        HTTP_X_FORWARDED_USER=user,
        HTTP_X_FORWARDED_EMAIL=f"{user}@example.com",
        HTTP_X_FORWARDED_GROUPS=groups,
    )
    return web


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def finished_job(web: Any, location: str, timeout: float = 120.0) -> str:
    """Follow a job page the way its script does (the fragment) until the job is done."""
    fragment = location.replace("/console/jobs/", "/console/fragment/jobs/")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = web.get(fragment)
        assert answer.status_code == 200, answer.text[:500]
        if 'data-final="1"' in answer.text:
            return str(web.get(location).text)
        time.sleep(0.2)
    raise AssertionError(f"{location} did not finish in {timeout} s")


def sandbox_sql(sandbox_dir: Path, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """Run ``statement`` once per row on the sandbox's Viewpoint database (a change at the source)."""
    import sqlite3

    conn = sqlite3.connect(sandbox_dir / "viewpoint.sqlite")
    try:
        with conn:
            conn.executemany(statement, rows)
    finally:
        conn.close()
