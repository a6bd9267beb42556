"""What the browser tests (and ``python -m tests.browser.screenshots``) share: Debian's
Chromium driven by Playwright for Python, the real daemon (``python main.py --sandbox``)
with the console switched on, and a record of every request a page makes.

Playwright's own browser download is not reachable from the machines this project is
built on, so the browser is Debian's ``chromium`` package (``.ci/run`` installs it),
launched by path. Each ``launch()`` gets a fresh temporary user-data-dir of its own
(Playwright creates it and removes it on close), so no profile, cookie or cache survives
from one run to the next.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root (CI and the dev machines run as root) Chromium refuses to start without
# --no-sandbox. The rest keep the browser from calling home: no QUIC, no first-run
# pages, no component updater, no sync, no background requests of its own, so every
# request a page shows is one the page made.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}  # the "1366x768 laptop screen"
# Console secrets for the test daemons only (CONSOLE_TOKEN wants at least 32 characters).
CONSOLE_TOKEN = "console-browser-test-token-0123456789abcdef"
TRIGGER_TOKEN = "trigger-browser-test-token-0123456789abcdef"
# Group names the SSO daemon maps to roles (what oauth2-proxy would put in X-Forwarded-Groups).
OPERATOR_GROUP = "sync-operators"
VIEWER_GROUP = "sync-viewers"


def missing(what: str) -> None:
    """Skip locally, fail in CI (CI installs everything these tests need)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI must provide it: .ci/run installs Debian's chromium and requirements-dev.txt)")
    pytest.skip(what)


def chromium_problem() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (requirements-dev.txt pins it)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium; closed (and its profile removed) after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


class ConsoleDaemon:
    """``python main.py --sandbox`` in its own process with the console configured.

    ``env`` adds or overrides settings (CONSOLE_TRUSTED_PROXY for the SSO daemon, ...).
    Its Redis keys live under a prefix of its own, deleted by ``stop()``; ``cli()`` runs
    ``sync_batch.py`` against the same sandbox, output folder and Redis prefix, as a
    CronJob next to the daemon would."""

    def __init__(self, tmp: Path, *, size: int = 40, console_token: str | None = CONSOLE_TOKEN, **env: str) -> None:
        self.tmp = tmp
        self.sandbox_dir = tmp / "sandbox"
        self.output = tmp / "output"
        self.size = size
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.redis_prefix = f"test-browser-{uuid.uuid4().hex[:12]}:"
        self.env = self._env(console_token=console_token, **env)
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self, *, console_token: str | None, **extra: str) -> dict[str, str]:
        from tests.support.redis_server import REDIS_URL

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "SQL_", "VIEWPOINT_", "CONSOLE_", "SANDBOX_"))
        }
        env.update(
            {
                "OUTPUT_DIR": str(self.output),
                "LOG_FORMAT": "json",
                "SANDBOX_SEED": "7",
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "REDIS_URL": REDIS_URL,
                "REDIS_PREFIX": self.redis_prefix,
                "SYNC_TRIGGER_TOKEN": TRIGGER_TOKEN,
            }
        )
        if console_token is not None:
            env["CONSOLE_TOKEN"] = console_token
        env.update(extra)
        return env

    def start(self) -> ConsoleDaemon:
        cmd = [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(self.sandbox_dir), "--sandbox-size", str(self.size)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        if not wait_for(lambda: self._get("/live") is not None, 20):
            raise RuntimeError(f"the daemon did not answer /live within 20 s:\n{self.tail()}")
        return self

    @contextmanager
    def running(self) -> Iterator[ConsoleDaemon]:
        """Started, after its first complete cycle; stopped (and its Redis keys deleted) after."""
        try:
            self.start()
            self.wait_first_cycle()
            yield self
        finally:
            self.stop()

    def _get(self, path: str) -> requests.Response | None:
        try:
            return requests.get(self.base + path, timeout=5)
        except requests.ConnectionError:
            return None

    def health(self) -> dict[str, Any]:
        r = self._get("/health")
        return r.json() if r is not None and r.headers.get("content-type", "").startswith("application/json") else {}

    def wait_first_cycle(self, timeout: float = 120) -> dict[str, Any]:
        """/health once every enabled sync has finished a run and none is running."""

        def settled() -> dict[str, Any] | None:
            h = self.health()
            runs = h.get("last_runs") or {}
            states = h.get("sync_states") or {}
            return h if runs and states and set(states) <= set(runs) and not h.get("running") else None

        health = wait_for(settled, timeout, 0.3)
        if not health:
            raise RuntimeError(f"no complete cycle within {timeout} s:\n{self.tail()}")
        return dict(health)

    def cli(self, *args: str, expect: tuple[int, ...] = (0,), **env: str) -> subprocess.CompletedProcess[str]:
        """``python sync_batch.py --sandbox ... ARGS`` against this daemon's sandbox and Redis."""
        cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(self.sandbox_dir),
               "--sandbox-size", str(self.size), *args]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True, timeout=300)
        assert proc.returncode in expect, f"exit {proc.returncode}\nstdout:{proc.stdout[-3000:]}\nstderr:{proc.stderr[-3000:]}"
        return proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drop_redis_keys()

    def _drop_redis_keys(self) -> None:
        import hashlib

        import redis

        # Keys under the daemon's prefix, and the roster cursor the sandbox scopes by its folder.
        scope = "sandbox-" + hashlib.sha256(str(self.sandbox_dir.resolve()).encode()).hexdigest()[:10] + ":"
        try:
            client = redis.Redis.from_url(self.env["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2)
            for pattern in (self.redis_prefix + "*", scope + "*"):
                for key in list(client.scan_iter(match=pattern)):
                    client.delete(key)
            client.close()
        except redis.exceptions.RedisError:
            pass  # no Redis: the daemon kept its state in memory, gone with the process

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def same_origin(url: str, base: str) -> bool:
    """True for the daemon's own origin and for requests that never touch a network
    (``data:``, ``blob:``, ``about:``)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    origin = urlsplit(base)
    return (parts.scheme, parts.hostname, parts.port) == (origin.scheme, origin.hostname, origin.port)


class RequestLog:
    """Every request the pages of one browser context make, in order. Requests to any
    other origin are recorded and then aborted, so a test that finds one has sent nothing
    off the machine."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[tuple[str, str]] = []  # (method, url)

    def attach(self, context: Any) -> None:
        context.on("request", lambda r: self.requests.append((r.method, r.url)))
        context.route(lambda url: not same_origin(url, self.base), lambda route: route.abort())

    def foreign(self) -> list[tuple[str, str]]:
        return [(m, u) for m, u in self.requests if not same_origin(u, self.base)]


def new_context(browser: Any, daemon: ConsoleDaemon, **options: Any) -> tuple[Any, RequestLog]:
    """A fresh browser context (its own cookies) at 1366x768 whose requests are logged."""
    context = browser.new_context(viewport=VIEWPORT, base_url=daemon.base, **options)
    log = RequestLog(daemon.base)
    log.attach(context)
    return context, log


def login(page: Any, token: str = CONSOLE_TOKEN) -> None:
    """The console's sign-in form (one password field), filled in as an operator does."""
    page.goto("/console/login")
    page.get_by_label("Console password").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def accept_confirmations(page: Any) -> None:
    """Say OK to the console's "are you sure" questions (Playwright cancels them by default)."""
    page.on("dialog", lambda dialog: dialog.accept())


def wait_job_done(page: Any, timeout_ms: float = 90_000) -> str:
    """On a job's page: wait until the page (refreshing itself) shows the job finished."""
    page.wait_for_selector("[data-testid=job-state][data-final]", timeout=timeout_ms)
    return str(page.get_by_test_id("job-state").get_attribute("data-state"))


def store(daemon: ConsoleDaemon) -> Any:
    """The emulators' store of ``daemon``'s sandbox (targets and their request log)."""
    from sandbox.store import open_store

    return open_store(daemon.sandbox_dir)


def seed(daemon: ConsoleDaemon) -> None:
    """Seed ``daemon``'s sandbox before it starts (the daemon would seed the same data)."""
    from sandbox.seed import ensure_seeded

    ensure_seeded(daemon.sandbox_dir, size=daemon.size, seed=7)


def plant_email_conflicts(daemon: ConsoleDaemon, count: int) -> list[str]:
    """Before the first run: SafetyAmp users made by hand that already hold the e-mail of
    ``count`` employees, so SafetyAmp refuses to create those employees (422, e-mail
    taken) and they land in the failed-records queue, as they would in production.
    Returns the employee numbers."""
    st = store(daemon)
    try:
        users = [u for u in st.all("graph", "users") if u.get("employeeId") and u.get("mail") and u.get("accountEnabled", True)]
        chosen = sorted(users, key=lambda u: int(u["employeeId"]))[:count]
        for i, user in enumerate(chosen):
            rid = 90_001 + i
            st.insert("safetyamp", "users", {"id": rid, "first_name": "Hand", "last_name": f"Made{i}",
                                             "email": user["mail"], "system_access": 1}, rid=rid)  # fmt: skip
        return [str(u["employeeId"]).strip() for u in chosen]
    finally:
        st.close()
