"""sync_batch pushes its metrics with push-add (POST) to a Pushgateway."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sync_batch import push_metrics
from utils.metrics import Metrics

pytestmark = pytest.mark.unit


def test_push_add_posts_the_registry():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        do_POST = do_PUT = _handle

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        m = Metrics()
        m.sync_runs.labels("jobs", "success").inc()
        assert push_metrics(f"http://127.0.0.1:{server.server_port}", m.registry)
    finally:
        server.shutdown()
    method, path, body = seen[0]
    assert method == "POST" and path == "/metrics/job/safetyamp_sync_batch"
    assert b'sync_runs_total{status="success",sync="jobs"} 1.0' in body


def test_push_failure_is_not_fatal():
    assert push_metrics("http://127.0.0.1:1", Metrics().registry) is False
