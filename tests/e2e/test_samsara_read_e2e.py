"""Samsara: events plus a periodic full read (issue 14), through the real CLI and the
sandbox, on real Redis. With SAMSARA_WEBHOOK_SECRET an idle vehicles run sends no request
to Samsara (counted by the emulator); a signed event (the marker the webhook bumps) makes
the next run read Samsara again, and a vehicle changed there reaches SafetyAmp; a saved
read older than SAMSARA_FULL_READ_HOURS is not used; without the secret every run reads."""

from __future__ import annotations

import time

import pytest
import redis

from services.samsara_read import marker_key, note_event
from tests.e2e.conftest import BatchRunner
from tests.e2e.test_daemon import WEBHOOK_SECRET
from tests.support.redis_server import REDIS_URL, real_client_and_prefix

pytestmark = pytest.mark.e2e

ONLY = ("--only", "vehicles")


@pytest.fixture
def prefix():
    yield from real_client_and_prefix("samsara-read")


def samsara_gets(batch: BatchRunner, since: int) -> int:
    return len([r for r in batch.requests("samsara", since=since) if r["method"] == "GET"])


def rename_vehicle(batch: BatchRunner, name: str) -> str:
    """An edit in Samsara itself (as a fleet manager renaming a vehicle); returns its asset code."""
    with batch.store() as st:
        vehicle = st.all("samsara", "vehicles")[0]
        rid = st.rid_by_unique("samsara", "vehicles", "id", vehicle["id"])
        st.replace("samsara", "vehicles", rid, {**vehicle, "name": name})
    return f"samsara:{vehicle['id']}"


def asset_name(batch: BatchRunner, code: str) -> str | None:
    rows = [a for a in batch.store().all("safetyamp", "assets") if a.get("code") == code]
    assert len(rows) == 1, rows
    return rows[0].get("name")


def test_idle_runs_read_nothing_an_event_makes_the_next_run_read(tmp_path, prefix) -> None:
    client, name = prefix
    batch = BatchRunner(tmp_path, size=60)
    env = {"SAMSARA_WEBHOOK_SECRET": WEBHOOK_SECRET, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": name}

    first = batch.run(*ONLY, expect=(0, 1), **env)
    assert "samsara: full read: no saved read" in first["_stderr"]
    assert sum(first["requests"]["samsara"].values()) > 0
    saved = list((batch.output / "state" / "samsara-read").glob("*/read.json.gz"))
    assert len(saved) == 1 and saved[0].stat().st_mode & 0o077 == 0
    assert client.get(marker_key(name)) is not None

    # idle: not one request to Samsara
    mark = batch.mark()
    idle = batch.run(*ONLY, expect=(0, 1), **env)
    assert "samsara: using the saved read" in idle["_stderr"]
    assert samsara_gets(batch, mark) == 0
    assert sum(idle["requests"]["samsara"].values()) == 0

    # a change in Samsara whose event has not arrived (yet): not seen
    code = rename_vehicle(batch, "Renamed In Samsara")
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1), **env)
    assert samsara_gets(batch, mark) == 0
    assert asset_name(batch, code) != "Renamed In Samsara"

    # the event arrives (main.py's webhook does exactly this after the signature check)
    rt = redis.Redis.from_url(REDIS_URL)
    note_event(rt, name)
    mark = batch.mark()
    after = batch.run(*ONLY, expect=(0, 1), **env)
    assert "samsara: full read: Samsara sent events since it was taken" in after["_stderr"]
    assert samsara_gets(batch, mark) > 0
    assert asset_name(batch, code) == "Renamed In Samsara"

    # and that read is saved: idle again
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1), **env)
    assert samsara_gets(batch, mark) == 0

    # --full reads whatever the events say
    mark = batch.mark()
    full = batch.run(*ONLY, "--full", expect=(0, 1), **env)
    assert "samsara: full read: a full read was asked for" in full["_stderr"]
    assert samsara_gets(batch, mark) > 0

    # a saved read older than SAMSARA_FULL_READ_HOURS is not used
    time.sleep(1.5)
    mark = batch.mark()
    aged = batch.run(*ONLY, expect=(0, 1), **env, SAMSARA_FULL_READ_HOURS="0.0003")  # about 1 s
    assert "SAMSARA_FULL_READ_HOURS=0.0003" in aged["_stderr"]
    assert samsara_gets(batch, mark) > 0

    # Redis lost the marker (restarted empty): nothing vouches for the saved read
    client.delete(marker_key(name))
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1), **env)
    assert samsara_gets(batch, mark) > 0


def test_without_webhooks_every_run_reads_samsara(tmp_path, prefix) -> None:
    _, name = prefix
    batch = BatchRunner(tmp_path, size=20)
    env = {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": name}
    batch.run(*ONLY, expect=(0, 1), **env)
    mark = batch.mark()
    batch.run(*ONLY, expect=(0, 1), **env)
    assert samsara_gets(batch, mark) > 0
    assert not (batch.output / "state" / "samsara-read").exists()


def test_daemon_a_signed_event_makes_the_next_run_read_and_the_change_reach_safetyamp(tmp_path, prefix) -> None:
    import subprocess
    import sys

    import requests

    from tests.e2e.conftest import ROOT
    from tests.e2e.test_daemon import free_port, get, wait_for

    client, name = prefix
    batch = BatchRunner(tmp_path, size=40)
    port, token = free_port(), "operator-token-123-0123456789abcdef"
    env = batch.env(
        PORT=str(port), HOST="127.0.0.1", SYNC_TRIGGER_TOKEN=token, SAMSARA_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_DEBOUNCE_SECONDS="0", REDIS_URL=REDIS_URL, REDIS_PREFIX=name,
    )  # fmt: skip
    cmd = [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(batch.dir), "--sandbox-size", "40"]
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"

    def vehicles_run() -> str | None:
        r = get(base + "/health")
        run = r.json().get("last_runs", {}).get("vehicles") if r is not None and r.status_code == 200 else None
        return run["run_id"] if run else None

    def post_event(event_id: str, event_type: str) -> requests.Response:
        """A delivery as Samsara makes it (the sandbox's builder and signer)."""
        from sandbox.samsara import signed_delivery, webhook_event

        body, headers = signed_delivery(WEBHOOK_SECRET, webhook_event(event_type, event_id=event_id))
        return requests.post(base + "/webhooks/samsara", data=body, headers=headers, timeout=5)

    try:
        first = wait_for(vehicles_run, 120.0, 0.5)
        assert first, "no vehicles run finished"
        # an event about something else than vehicles and drivers (a route stop): 200,
        # the marker stays, and a run asked for now reads nothing from Samsara
        marker = client.get(marker_key(name))
        ignored = post_event("e-6", "RouteStopArrival")
        assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
        assert client.get(marker_key(name)) == marker
        mark = batch.mark()
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.post(base + "/sync/vehicles", headers=auth, timeout=5).status_code == 202
        assert wait_for(lambda: (r := vehicles_run()) and r != first and r, 60.0, 0.5)
        assert samsara_gets(batch, mark) == 0

        code = rename_vehicle(batch, "Renamed Then Announced")
        before = vehicles_run()
        mark = batch.mark()
        assert post_event("e-7", "VehicleUpdated").status_code == 202
        assert int(client.get(marker_key(name))) == int(marker) + 1
        assert wait_for(lambda: (r := vehicles_run()) and r != before and r, 60.0, 0.5), "the event did not start a run"
        assert samsara_gets(batch, mark) > 0
        assert asset_name(batch, code) == "Renamed Then Announced"

        # a type Samsara did not document (yet): conservative, the next run reads
        before = vehicles_run()
        mark = batch.mark()
        assert post_event("e-8", "VehicleArchived").status_code == 202
        assert int(client.get(marker_key(name))) == int(marker) + 2
        assert wait_for(lambda: (r := vehicles_run()) and r != before and r, 60.0, 0.5), "the event did not start a run"
        assert samsara_gets(batch, mark) > 0
        metrics = requests.get(base + "/metrics", timeout=5).text
        for line in (
            'samsara_webhook_events_total{event_type="RouteStopArrival",outcome="ignored"} 1.0',
            'samsara_webhook_events_total{event_type="VehicleUpdated",outcome="read"} 1.0',
            'samsara_webhook_events_total{event_type="other",outcome="read"} 1.0',
        ):
            assert line in metrics, line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
