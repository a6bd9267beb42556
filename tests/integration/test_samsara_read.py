"""services/samsara_read.py on the real Redis: when a saved Samsara read may stand in for
Samsara, and what it keeps on disk (never the API key)."""

from __future__ import annotations

import gzip
import uuid

import pytest
import redis

from config.settings import Settings
from services.samsara_read import FILE, build_samsara_read, marker_key, note_event, read_scope
from tests.support.redis_server import REDIS_URL

pytestmark = pytest.mark.integration

KEY = "samsara-api-key-never-on-disk-0123456789"


@pytest.fixture
def client():
    c = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        c.ping()
    except redis.RedisError:
        pytest.skip("needs the real Redis at " + REDIS_URL)
    prefix = f"test-samsara-read-{uuid.uuid4().hex}:"
    yield c, prefix
    for key in c.scan_iter(match=prefix + "*"):
        c.delete(key)


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
