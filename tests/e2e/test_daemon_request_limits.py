"""Hostile HTTP against the real daemon: oversized bodies and malformed webhooks.

A body over the limit must be refused with 413 *before it is read*: the daemon's peak
memory (VmHWM) must not grow by the body's size, nothing may be spooled to the temp
folder, and the server must stop taking the bytes long before the sender is done.
Each case streams a 200 MB body over a raw socket, with a Content-Length and chunked
(no length at all), to every endpoint that takes a body.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import WEBHOOK_SECRET, free_port, get, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "operator-token-limits-123-0123456789abcdef"
BODY_BYTES = 200 * 1024 * 1024
PIECE = b"x" * 65536


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def temp_files_open(pid: int, tmpdir: Path) -> list[str]:
    """Files of the daemon under its TMPDIR (waitress spools with tempfile.TemporaryFile,
    which has no directory entry: only the open descriptor shows it)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(tmpdir)):
            found.append(target)
    return found


def stream_body(port: int, path: str, *, chunked: bool, pid: int, tmpdir: Path) -> dict:
    """POST a BODY_BYTES body piece by piece while reading the answer; returns the status
    line, how many body bytes the server took before it closed, and any temp file seen."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY_BYTES}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0
    spooled: list[str] = []
    stop = threading.Event()

    def sender() -> None:
        nonlocal sent
        frame = (b"%x\r\n" % len(PIECE)) + PIECE + b"\r\n" if chunked else PIECE
        try:
            while sent < BODY_BYTES and not stop.is_set():
                sock.sendall(frame)
                sent += len(PIECE)
            if chunked and not stop.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: what we want
            pass

    def watcher() -> None:  # a temp file may live only for the last chunk: look all the time
        while not stop.is_set():
            spooled.extend(temp_files_open(pid, tmpdir))

    thread = threading.Thread(target=sender, daemon=True)
    watch = threading.Thread(target=watcher, daemon=True)
    watch.start()
    thread.start()
    answer = b""
    try:
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError as exc:
        answer += f"<{type(exc).__name__}>".encode()
    time.sleep(0.2)  # the server may still be discarding what it read
    stop.set()
    thread.join(timeout=60)
    watch.join(timeout=10)
    sock.close()
    return {"status": answer.split(b"\r\n", 1)[0].decode(errors="replace"), "sent": sent, "spooled": spooled}


@pytest.fixture
def daemon(tmp_path: Path):
    port = free_port()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = BatchRunner(tmp_path).env(
        PORT=str(port),
        HOST="127.0.0.1",
        SYNC_TRIGGER_TOKEN=TOKEN,
        SAMSARA_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_DEBOUNCE_SECONDS="3600",  # an accepted webhook must not start a run mid-measurement
        SYNC_INTERVAL_MINUTES="60",
        SYNC_TYPES="departments,vehicles",
        TMPDIR=str(tmpdir),
    )
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--sandbox-size", "20"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "daemon.log", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # settle: the first cycle (both syncs) has finished, so the baseline includes it
        done = wait_for(
            lambda: (r := get(base + "/health")) is not None and len(r.json().get("last_runs", {})) == 2 and r.json(), 120, 0.5
        )
        assert done, (tmp_path / "daemon.log").read_text()[-3000:]
        yield proc, port, base, tmpdir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_oversized_bodies_are_refused_before_they_are_read(daemon) -> None:
    proc, port, base, tmpdir = daemon
    before_kb = vm_hwm_kb(proc.pid)
    results = {}
    for path in ("/webhooks/samsara", "/sync", "/sync/vehicles", "/health"):
        for chunked in (False, True):
            results[(path, chunked)] = stream_body(port, path, chunked=chunked, pid=proc.pid, tmpdir=tmpdir)
    growth_mb = (vm_hwm_kb(proc.pid) - before_kb) / 1024
    print(f"\nVmHWM before {before_kb / 1024:.1f} MB, growth {growth_mb:.1f} MB")
    for (path, chunked), result in results.items():
        kind = "chunked" if chunked else "length"
        print(
            f"  {path} {kind}: {result['status']}; {result['sent'] >> 20} MB taken; temp files seen: {len(set(result['spooled']))}"
        )
    for case, result in results.items():
        assert result["status"].startswith("HTTP/1.1 413"), (case, result["status"])
        # the server stopped taking the body: what got through fits in socket buffers
        assert result["sent"] < 32 * 1024 * 1024, (case, result["sent"])
        assert not result["spooled"], (case, result["spooled"])
    assert growth_mb < 20, f"peak memory grew by {growth_mb:.1f} MB"
    assert not list(tmpdir.iterdir())
    assert proc.poll() is None
    assert get(base + "/live").status_code == 200


def test_a_body_at_the_limit_is_taken_and_a_bad_webhook_is_a_clean_refusal(daemon) -> None:
    from utils.webhooks import sign

    limit = 1_048_576  # the documented limit (docs/configuration.md)

    proc, _port, base, _tmpdir = daemon
    url = base + "/webhooks/samsara"

    def signed(body: bytes, ts: str | None = None) -> dict[str, str]:
        ts = ts or str(int(time.time()))
        return {"X-Samsara-Timestamp": ts, "X-Samsara-Signature": sign(WEBHOOK_SECRET, ts, body)}

    padding = limit - len(b'{"eventType":"Ping","pad":""}')
    at_limit = b'{"eventType":"Ping","pad":"' + b"x" * padding + b'"}'
    assert len(at_limit) == limit
    assert requests.post(url, data=at_limit, headers=signed(at_limit), timeout=10).status_code == 200
    over = at_limit[:-2] + b'x"}'
    assert requests.post(url, data=over, headers=signed(over), timeout=10).status_code == 413
    # validly signed, but not an event: 400, not 500
    for body in (b"[1, 2, 3]", b'"text"', b"{broken", b"null"):
        resp = requests.post(url, data=body, headers=signed(body), timeout=10)
        assert resp.status_code == 400, (body, resp.status_code, resp.text)
        assert "error" in resp.json()
    # NaN timestamp: refused, and still refused when replayed later
    nan = {"X-Samsara-Timestamp": "nan", "X-Samsara-Signature": sign(WEBHOOK_SECRET, "nan", b"{}")}
    assert requests.post(url, data=b"{}", headers=nan, timeout=10).status_code == 401
    # a captured request replayed with a Unicode space after the signature
    body = json.dumps({"eventId": "e-9", "eventType": "VehicleUpdated"}).encode()
    headers = signed(body)
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 202
    for suffix in ("\xa0", "\x85"):
        replay = {**headers, "X-Samsara-Signature": headers["X-Samsara-Signature"] + suffix}
        assert requests.post(url, data=body, headers=replay, timeout=10).status_code == 401, repr(suffix)
    assert proc.poll() is None
