"""The console as the real daemon serves it (waitress, not Flask's test client).

The Flask test client skips the WSGI server, and waitress strips proxy headers it was not
told to trust (X-Forwarded-Proto among them) before the app sees them: behind a TLS
ingress the session cookie then never got its Secure flag, although every test through
the test client said it did (outside review, 2026-11-29)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, get, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "console-token-over-waitress-0123456789abcdef"


def cookie_lines(response: requests.Response) -> list[str]:
    return [v for k, v in response.raw.headers.items() if k.lower() == "set-cookie"]


def test_the_session_cookie_is_secure_behind_a_tls_proxy_through_waitress(tmp_path: Path) -> None:
    port = free_port()
    env = BatchRunner(tmp_path).env(
        PORT=str(port), HOST="127.0.0.1", CONSOLE_TOKEN=TOKEN, SYNC_TYPES="departments", SYNC_INTERVAL_MINUTES="60"
    )
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--sandbox-size", "10"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        up = wait_for(lambda: (r := get(base + "/console/login")) is not None and r.status_code == 200, 90, 0.3)
        assert up, log.read_text()[-3000:]
        plain = requests.get(base + "/console/login", timeout=10)
        behind_tls = requests.get(base + "/console/login", headers={"X-Forwarded-Proto": "https"}, timeout=10)
        assert cookie_lines(plain) and cookie_lines(behind_tls), "the sign-in page sets no cookie: nothing to check"
        assert all("Secure" not in c for c in cookie_lines(plain)), cookie_lines(plain)
        assert all("Secure" in c and "HttpOnly" in c for c in cookie_lines(behind_tls)), cookie_lines(behind_tls)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
