"""One daemon serving tenants (TENANTS_DIR), in process, against sandbox accounts and real
Redis: /health per tenant, operator endpoints and webhooks per tenant, the console's
tenant selector, tenants added, changed and removed without a restart, and a bad file
that stops only its own tenant."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import main
from config.settings import load_settings
from sandbox.tenants import cross_tenant, start_tenants
from tests.support.redis_server import REDIS_URL, delete_prefix, require_real_redis, wait_until
from utils.webhooks import sign

TOKEN = "operator-token-tenants-0123456789abcdef"
CONSOLE = "console-token-tenants-0123456789abcdef"
HOOK_A = base64.b64encode(b"co-01-webhook-secret-0123456789").decode()
HOOK_B = base64.b64encode(b"co-02-webhook-secret-0123456789").decode()


@pytest.fixture
def fleet_daemon(tmp_path: Path) -> Iterator[tuple[Any, Any, Any, Path]]:
    require_real_redis(REDIS_URL)
    sandbox = start_tenants(tmp_path / "sb", 3, size=20, seed=5, interval_minutes=60)
    aside = tmp_path / "aside"
    aside.mkdir()
    shutil.move(str(sandbox.tenants_dir / "sd-03.env"), aside / "sd-03.env")  # added later
    for tenant, var in (("co-01", "CO01_HOOK"), ("co-02", "CO02_HOOK")):
        path = sandbox.tenants_dir / f"{tenant}.env"
        path.write_text(path.read_text() + f"SAMSARA_WEBHOOK_SECRET_FROM_ENV={var}\nWEBHOOK_DEBOUNCE_SECONDS=0\n")
    prefix = f"test-tenant-daemon-{uuid.uuid4().hex[:8]}:"
    environ = {
        "TENANTS_DIR": str(sandbox.tenants_dir),
        "SECRETS_DIR": str(sandbox.secrets_dir),
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "OUTPUT_DIR": str(tmp_path / "out"),
        "SYNC_TRIGGER_TOKEN": TOKEN,
        "CONSOLE_TOKEN": CONSOLE,
        "LOCK_REQUIRED": "true",
        "CO01_HOOK": HOOK_A,
        "CO02_HOOK": HOOK_B,
    }
    settings = load_settings(environ, dotenv_path=None)
    daemon = main.Daemon(None, ())
    fleet = main.start_fleet(daemon, settings, environ)
    fleet._poll_seconds = 0.0
    daemon.attach_fleet(settings, fleet)
    daemon.worker.start()
    client = main.create_app(daemon).test_client()
    try:
        yield daemon, client, sandbox, aside
    finally:
        daemon.stop.set()
        daemon.worker.join(10)
        fleet.close(20)
        sandbox.stop()
        delete_prefix(REDIS_URL, prefix)


def ran(client: Any, tenant: str) -> bool:
    body = client.get(f"/health?tenant={tenant}").get_json()
    return bool(body.get("last_runs")) and not body.get("running")


def test_one_daemon_serves_each_tenant_apart(fleet_daemon) -> None:
    _daemon, client, sandbox, aside = fleet_daemon
    assert wait_until(lambda: ran(client, "co-01") and ran(client, "co-02"), 60), client.get("/health").get_json()

    # /health: the process with one line per tenant, and each tenant in detail.
    body = client.get("/health").get_json()
    assert set(body["tenants"]) == {"co-01", "co-02"} and body["slots"] == 4
    detail = client.get("/health?tenant=co-02").get_json()
    assert detail["syncs"] == ["departments", "jobs", "titles", "employees", "vehicles"]
    assert client.get("/health?tenant=nope").status_code == 404

    # Operator endpoints name the tenant.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/sync", headers=auth).status_code == 400
    assert client.post("/sync/jobs?tenant=zz", headers=auth).status_code == 404
    before = client.get("/health?tenant=co-01").get_json()["last_runs"]["jobs"]["finished_at"]
    answer = client.post("/sync/jobs?tenant=co-01", headers=auth)
    assert answer.status_code == 202 and answer.get_json()["tenant"] == "co-01"
    assert wait_until(lambda: client.get("/health?tenant=co-01").get_json()["last_runs"]["jobs"]["finished_at"] != before, 30)
    diag = client.get("/diagnose/jobs/nothing-such?tenant=co-02", headers=auth)
    assert diag.status_code == 200

    # Webhooks: each tenant's own URL and secret; another tenant's secret is refused.
    event = json.dumps({"eventId": "e1", "eventType": "VehicleUpdated", "data": {}}).encode()
    ts = str(int(time.time()))

    def hook(tenant: str, secret: str) -> int:
        headers = {"X-Samsara-Timestamp": ts, "X-Samsara-Signature": sign(secret, ts, event)}
        return client.post(f"/webhooks/samsara/{tenant}", data=event, headers=headers).status_code

    assert hook("co-01", HOOK_A) == 202
    assert hook("co-02", HOOK_A) == 401
    assert hook("co-99", HOOK_A) == 404
    assert client.post("/webhooks/samsara", data=event).status_code == 404

    # The console: a selector, and every page concerns the chosen tenant only.
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    client.post("/console/login", data={"csrf_token": csrf, "password": CONSOLE})
    config_b = client.get("/console/config?tenant=co-02").get_data(as_text=True)
    assert 'data-testid="tenant-select"' in config_b
    assert str(Path("tenants") / "co-02") in config_b and str(Path("tenants") / "co-01") not in config_b
    remembered = client.get("/console/config").get_data(as_text=True)  # the cookie keeps the choice
    assert str(Path("tenants") / "co-02") in remembered

    # Added without a restart; a bad file stops only itself; a removed tenant stops.
    shutil.move(str(aside / "sd-03.env"), sandbox.tenants_dir / "sd-03.env")
    bad = sandbox.tenants_dir / "co-bad.env"
    bad.write_text("SYNC_TYPES=vehicles\nSAMSARA_API_KEY=an-inline-secret-value\n")
    assert wait_until(lambda: ran(client, "sd-03"), 60), "the added tenant did not run"
    body = client.get("/health").get_json()
    assert "co-bad.env" in body["invalid_tenants"] and "an-inline-secret-value" not in json.dumps(body)
    assert body["status"] == "degraded" and set(body["tenants"]) == {"co-01", "co-02", "sd-03"}
    (sandbox.tenants_dir / "co-02.env").unlink()
    assert wait_until(lambda: "co-02" not in client.get("/health").get_json()["tenants"], 30)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'tenant="sd-03"' in metrics and 'tenant="co-02"' not in metrics
    assert 'sync_tenants{state="active"} 2.0' in metrics

    # Nothing crossed from one tenant's account to another's.
    assert cross_tenant(sandbox.directory) == []
