"""services/samsara_read.py on the real Redis: when a saved Samsara read may stand in for
Samsara, and what it keeps on disk (never the API key)."""

from __future__ import annotations

import gzip

import pytest
import redis

from config.settings import Settings
from services.samsara_read import FILE, build_samsara_read, marker_key, note_event, read_scope
from tests.support.redis_server import real_client_and_prefix

pytestmark = pytest.mark.integration

KEY = "samsara-api-key-never-on-disk-0123456789"


@pytest.fixture
def client():
    yield from real_client_and_prefix("samsara-read")


def settings(tmp_path, prefix: str, **extra: str) -> Settings:
    env = {"OUTPUT_DIR": str(tmp_path), "REDIS_PREFIX": prefix, "SAMSARA_API_KEY": KEY, **extra}
    return Settings.model_validate(env)


def test_off_without_the_webhook_secret(tmp_path, client) -> None:
    _, prefix = client
    assert build_samsara_read(settings(tmp_path, prefix), None) is None


def test_saved_read_valid_until_an_event_or_its_age(tmp_path, client) -> None:
    c, prefix = client
    now = [1_000_000.0]
    store = build_samsara_read(
        settings(tmp_path, prefix, SAMSARA_WEBHOOK_SECRET="c2Ftc2FyYS13ZWJob29rLXNlY3JldC0xMjM0NTY3OA=="), c
    )
    assert store is not None
    store.clock = lambda: now[0]
    assert store.unusable(store.load(), full=False, first_daemon_run=False) == "no saved read"

    marker = store.marker(start=True)
    assert marker is not None and int(marker) > 1000  # a random start: a Redis restarted empty never matches
    store.save([{"id": "1", "name": "Truck"}], [], marker=marker, read_at=now[0])
    saved = store.load()
    assert saved["vehicles"] == [{"id": "1", "name": "Truck"}]
    assert store.unusable(saved, full=False, first_daemon_run=False) is None
    assert store.unusable(saved, full=True, first_daemon_run=False) == "a full read was asked for"
    assert store.unusable(saved, full=False, first_daemon_run=True) is not None
    raw = (store.directory / FILE).read_bytes()
    assert KEY.encode() not in gzip.decompress(raw) and KEY not in str(store.directory)
    assert (store.directory / FILE).stat().st_mode & 0o077 == 0

    now[0] += 24 * 3600 + 1
    assert "SAMSARA_FULL_READ_HOURS=24" in store.unusable(saved, full=False, first_daemon_run=False)
    now[0] -= 2

    note_event(c, prefix)
    assert store.unusable(saved, full=False, first_daemon_run=False) == "Samsara sent events since it was taken"

    c.delete(marker_key(prefix))  # Redis restarted empty
    assert store.unusable(saved, full=False, first_daemon_run=False) == "Redis cannot vouch for it (no event marker)"


def test_unreachable_redis_never_vouches(tmp_path, client) -> None:
    _, prefix = client
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    store = build_samsara_read(
        settings(tmp_path, prefix, SAMSARA_WEBHOOK_SECRET="c2Ftc2FyYS13ZWJob29rLXNlY3JldC0xMjM0NTY3OA=="), dead
    )
    assert store.marker(start=True) is None
    store.save([], [], marker="5", read_at=store.clock())
    assert store.unusable(store.load(), full=False, first_daemon_run=False) == "Redis cannot vouch for it (no event marker)"
    note_event(dead, prefix)  # logs, never raises: the webhook still answers


def test_scope_changes_with_the_key_url_and_prefix(tmp_path) -> None:
    base = read_scope(settings(tmp_path, "p:"))
    assert read_scope(settings(tmp_path, "q:")) != base
    assert read_scope(settings(tmp_path, "p:", SAMSARA_API_KEY="another-key")) != base
    assert read_scope(settings(tmp_path, "p:", SAMSARA_URL="https://api.eu.samsara.com")) != base
    assert read_scope(settings(tmp_path, "p:", SAMSARA_READ_SCOPE="sandbox-x")) != base


# ---- the event types: which events make the next vehicles run read Samsara -----------
SECRET = "c2Ftc2FyYS13ZWJob29rLXNlY3JldC0xMjM0NTY3OA=="


def _webhook_app(tmp_path, c, prefix):
    """The product's webhook endpoint in process, with a runtime on the real Redis."""
    from config.bootstrap import Runtime
    from main import Daemon, create_app
    from services.http import RequestStats
    from utils.metrics import Metrics

    s = settings(tmp_path, prefix, SAMSARA_WEBHOOK_SECRET=SECRET, WEBHOOK_DEBOUNCE_SECONDS="0")
    metrics = Metrics()
    rt = Runtime(settings=s, metrics=metrics, stats=RequestStats(metrics=metrics), tracker=None, redis=c)
    daemon = Daemon(s, ("vehicles",), rt)
    store = build_samsara_read(s, c)
    assert store is not None
    marker = store.marker(start=True)
    store.save([{"id": "1", "name": "Truck"}], [], marker=marker, read_at=store.clock())
    return daemon, create_app(daemon).test_client(), store


def _post(client, event: dict | bytes, secret: str = SECRET):
    """A delivery signed as Samsara signs it (the sandbox's signer, not the product's)."""
    import time

    from sandbox.samsara import signed_delivery
    from utils.webhooks import sign

    if isinstance(event, dict):
        body, headers = signed_delivery(secret, event)
    else:
        ts = str(int(time.time()))
        body, headers = event, {"X-Samsara-Timestamp": ts, "X-Samsara-Signature": sign(secret, ts, event)}
    return client.post("/webhooks/samsara", data=body, headers=headers)


def _counted(daemon, event_type: str, outcome: str) -> float:
    value = daemon.runtime.metrics.registry.get_sample_value(
        "samsara_webhook_events_total", {"event_type": event_type, "outcome": outcome}
    )
    return value or 0.0


def _run_pending(daemon) -> bool:
    """Whether an event asked for a vehicles run (request_after answers True only when
    nothing was pending, and then leaves one pending: ask on a fresh daemon only once)."""
    return daemon.state.triggers.request_after("vehicles", 0) is False


@pytest.mark.parametrize(
    "event_type", ["RouteStopArrival", "DocumentSubmitted", "EngineFaultOn", "GeofenceEntry", "AlertIncident", "Alert"]
)
def test_an_event_that_cannot_change_vehicles_or_drivers_keeps_the_saved_read(tmp_path, client, event_type) -> None:
    c, prefix = client
    daemon, http, store = _webhook_app(tmp_path, c, prefix)
    answer = _post(http, {"eventId": "e-1", "eventTime": "2026-11-29T07:00:00.000Z", "eventType": event_type, "data": {}})
    assert answer.status_code == 200, answer.data
    assert answer.get_json()["status"] == "ignored"
    assert store.unusable(store.load(), full=False, first_daemon_run=False) is None  # the next run reads nothing
    assert not _run_pending(daemon)
    assert _counted(daemon, event_type, "ignored") == 1


@pytest.mark.parametrize("event_type", ["VehicleCreated", "VehicleUpdated", "DriverCreated", "DriverUpdated"])
def test_a_vehicle_or_driver_event_makes_the_next_run_read(tmp_path, client, event_type) -> None:
    c, prefix = client
    daemon, http, store = _webhook_app(tmp_path, c, prefix)
    answer = _post(http, {"eventId": "e-2", "eventType": event_type, "data": {}})
    assert answer.status_code == 202, answer.data
    assert store.unusable(store.load(), full=False, first_daemon_run=False) == "Samsara sent events since it was taken"
    assert _run_pending(daemon)
    assert _counted(daemon, event_type, "read") == 1


@pytest.mark.parametrize(
    ("event", "label"),
    [
        ({"eventId": "e-3", "eventType": "VehicleDeleted", "data": {}}, "other"),  # not a documented type (yet)
        ({"eventId": "e-4", "eventType": "x" * 300}, "other"),  # a label never holds what a sender chose
        ({"eventId": "e-5", "data": {}}, "missing"),
        ({"eventId": "e-6", "eventType": ["VehicleUpdated"]}, "missing"),  # not a string
        ({"eventId": "e-7", "eventType": None}, "missing"),
    ],
)
def test_an_unknown_or_missing_type_makes_the_next_run_read(tmp_path, client, event, label) -> None:
    c, prefix = client
    daemon, http, store = _webhook_app(tmp_path, c, prefix)
    answer = _post(http, event)
    assert answer.status_code == 202, answer.data
    assert store.unusable(store.load(), full=False, first_daemon_run=False) == "Samsara sent events since it was taken"
    assert _run_pending(daemon)
    assert _counted(daemon, label, "read") == 1


def test_ping_refused_and_invalid_events_are_counted_and_never_read(tmp_path, client) -> None:
    c, prefix = client
    daemon, http, store = _webhook_app(tmp_path, c, prefix)
    assert _post(http, {"eventId": "p", "eventType": "Ping"}).status_code == 200
    forged = _post(http, {"eventId": "s", "eventType": "VehicleUpdated"}, secret="b3RoZXItc2VjcmV0LTAxMjM0NTY3ODlhYmNk")
    assert forged.status_code == 401
    assert _post(http, b"[1]").status_code == 400
    assert store.unusable(store.load(), full=False, first_daemon_run=False) is None
    assert not _run_pending(daemon)
    assert _counted(daemon, "Ping", "ping") == 1
    assert _counted(daemon, "none", "refused") == 1
    assert _counted(daemon, "none", "invalid") == 1
    text = http.get("/metrics").get_data(as_text=True)
    assert SECRET not in text and 'samsara_webhook_events_total{event_type="Ping",outcome="ping"} 1.0' in text
