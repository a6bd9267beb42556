"""utils.locks against real Redis (db 15) and real processes.

Redis: redis://127.0.0.1:6379/15 (``TEST_REDIS_URL`` overrides it), a unique prefix per
test, removed afterwards; unreachable Redis fails the suite in CI (CI=true), elsewhere
fakeredis stands in (tests needing Lua are skipped if it has no Lua engine). Lock
expiry is Redis's own clock, so the renewal and crash tests wait for real, with TTLs
of a second or less.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import load_settings
from tests.support.redis_server import REDIS_URL, connect, free_port, key_prefix, shared_server
from utils.circuit_breaker import make_redis
from utils.errors import FatalError
from utils.locks import FileLock, LockHeldError, LockParams, RedisLock, build_lock, redis_location

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    yield from shared_server()


@pytest.fixture
def redis_client(redis_server: tuple[str, Any]) -> Iterator[redis.Redis]:
    client = connect(redis_server, decode=True, needs_lua=True)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    yield from key_prefix(redis_client, "lock")


# --------------------------------------------------------------------------- Redis lock


def test_two_locks_one_wins_and_holder_says_who(redis_client: redis.Redis, prefix: str) -> None:
    first = RedisLock(redis_client, "employees", prefix=prefix, ttl_seconds=30)
    second = RedisLock(redis_client, "employees", prefix=prefix, ttl_seconds=30)
    assert first.acquire() is True
    try:
        assert second.acquire() is False
        holder = second.holder()
        assert holder is not None
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid() and holder["name"] == "employees"
        assert holder["since"].endswith("Z") and "token" not in holder
        stored = json.loads(redis_client.get(f"{prefix}lock:employees"))
        assert len(stored["token"]) == 32  # the token is in Redis, never handed out by holder()
        assert 0 < redis_client.pttl(f"{prefix}lock:employees") <= 30_000
        with pytest.raises(LockHeldError, match=r"lock employees is held by .* pid"):
            with second:
                pass
    finally:
        assert first.release() is True
    assert second.holder() is None
    assert second.acquire() is True
    second.release()


def test_different_names_do_not_exclude_each_other(redis_client: redis.Redis, prefix: str) -> None:
    with RedisLock(redis_client, "jobs", prefix=prefix), RedisLock(redis_client, "vehicles", prefix=prefix) as vehicles:
        assert vehicles.held


def test_release_by_a_non_owner_is_refused(redis_client: redis.Redis, prefix: str) -> None:
    owner = RedisLock(redis_client, "jobs", prefix=prefix, ttl_seconds=30)
    stranger = RedisLock(redis_client, "jobs", prefix=prefix, ttl_seconds=30)
    assert owner.acquire()
    assert stranger.release() is False  # never acquired: nothing to release
    # a former owner whose key expired and was taken by someone else
    stale = RedisLock(redis_client, "jobs", prefix=prefix, ttl_seconds=30)
    stale._value = json.dumps({"token": "someone-elses-old-token"})
    assert stale.release() is False
    assert owner.holder() is not None and owner.held
    assert owner.release() is True
    assert owner.release() is False  # twice is harmless


def test_renewal_keeps_the_lock_past_its_ttl(redis_client: redis.Redis, prefix: str) -> None:
    lock = RedisLock(redis_client, "departments", prefix=prefix, ttl_seconds=0.6, renew_every=0.15)
    rival = RedisLock(redis_client, "departments", prefix=prefix, ttl_seconds=0.6)
    assert lock.acquire()
    time.sleep(1.2)  # twice the TTL: only the renewal thread keeps it
    assert rival.acquire() is False
    assert not lock.lost.is_set() and lock.held
    assert lock.release() is True
    assert rival.acquire() is True
    rival.release()


def test_losing_the_key_sets_lost(redis_client: redis.Redis, prefix: str) -> None:
    lock = RedisLock(redis_client, "titles", prefix=prefix, ttl_seconds=0.6, renew_every=0.1)
    assert lock.acquire()
    redis_client.set(f"{prefix}lock:titles", json.dumps({"token": "new-holder"}))  # a failover lost our key
    assert lock.lost.wait(2)
    assert not lock.held
    assert lock.release() is False  # the new holder's key stays
    assert json.loads(redis_client.get(f"{prefix}lock:titles"))["token"] == "new-holder"


def test_a_crashed_owner_blocks_until_expiry_then_another_acquires(
    redis_client: redis.Redis, redis_server: tuple[str, Any], prefix: str
) -> None:
    if redis_server[0] != "real":
        pytest.skip("a separate process needs a real Redis")
    script = textwrap.dedent(
        f"""
        import sys, time, redis
        sys.path.insert(0, {str(ROOT)!r})
        from utils.locks import RedisLock
        client = redis.Redis.from_url({REDIS_URL!r}, decode_responses=True)
        lock = RedisLock(client, "rosters", prefix={prefix!r}, ttl_seconds=0.5, renew_every=0.1)
        assert lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "locked"
        waiter = RedisLock(redis_client, "rosters", prefix=prefix, ttl_seconds=5, poll_seconds=0.05)
        assert waiter.acquire() is False
        holder = waiter.holder()
        assert holder is not None and holder["pid"] == owner.pid
        os.kill(owner.pid, signal.SIGKILL)  # no release, no more renewals
        owner.wait(timeout=5)
        started = time.monotonic()
        assert waiter.acquire(blocking=True, timeout=3) is True
        assert time.monotonic() - started < 1.0  # within the dead owner's 0.5 s TTL
        waiter.release()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_blocking_acquire_gives_up_after_timeout(redis_client: redis.Redis, prefix: str) -> None:
    sleeps: list[float] = []
    holder = RedisLock(redis_client, "jobs", prefix=prefix)
    waiter = RedisLock(redis_client, "jobs", prefix=prefix, poll_seconds=0.01, sleep=sleeps.append)
    assert holder.acquire()
    try:
        assert waiter.acquire(blocking=True, timeout=0.05) is False
        assert sleeps  # it polled
    finally:
        holder.release()


def test_renew_every_must_be_shorter_than_ttl(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        RedisLock(redis_client, "x", ttl_seconds=1, renew_every=1)


# --------------------------------------------------------------------------- file lock


HOLD_FILE_LOCK = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from utils.locks import FileLock
lock = FileLock(Path(sys.argv[2]), "employees")
print("locked" if lock.acquire() else "busy", flush=True)
sys.stdin.readline()
"""


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "employees.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE_LOCK, str(ROOT), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        mine = FileLock(path, "employees")
        assert mine.acquire() is False
        holder = mine.holder()
        assert holder is not None and holder["pid"] == child.pid and "token" not in holder
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=5)
        assert mine.holder() is None
        assert mine.acquire() is True
        assert mine.holder() is not None and mine.holder()["pid"] == os.getpid()  # type: ignore[index]
        second = subprocess.run(
            [sys.executable, "-c", HOLD_FILE_LOCK, str(ROOT), str(path)], input="\n", capture_output=True, text=True, timeout=10
        )
        assert second.stdout.strip() == "busy"
        assert mine.release() is True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_file_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "jobs.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE_LOCK, str(ROOT), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    child.kill()
    child.wait(timeout=5)
    with FileLock(path) as lock:
        assert lock.held and lock.name == "jobs"


# --------------------------------------------------------------------------- build_lock


def test_build_lock_uses_redis_when_it_answers(redis_client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    settings = load_settings({"REDIS_PREFIX": prefix, "LOCK_TTL_SECONDS": "45", "OUTPUT_DIR": str(tmp_path)}, dotenv_path=None)
    lock = build_lock(settings, "employees", redis_client)
    assert isinstance(lock, RedisLock)
    assert lock.key == f"{prefix}lock:employees" and lock.ttl_seconds == 45 and lock.renew_every == 15


def test_required_lock_without_redis_is_fatal_and_hides_the_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:hunter2-sentinel@127.0.0.1:{port}/0"
    settings = load_settings({"REDIS_URL": url, "OUTPUT_DIR": str(tmp_path)}, dotenv_path=None)
    assert settings.lock_required is True
    with pytest.raises(FatalError) as caught:
        build_lock(settings, "employees", make_redis(settings.redis_url))
    assert str(caught.value) == f"cannot take the employees lock: Redis unreachable at 127.0.0.1:{port}"
    assert "hunter2" not in repr(caught.value)
    with pytest.raises(FatalError, match=f"127.0.0.1:{port}"):
        build_lock(LockParams(redis_url=url), "jobs", None)


def test_optional_lock_without_redis_falls_back_to_a_file_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        {"REDIS_URL": f"redis://:pw-sentinel@127.0.0.1:{free_port()}/0", "LOCK_REQUIRED": "false", "OUTPUT_DIR": str(tmp_path)},
        dotenv_path=None,
    )
    with caplog.at_level(logging.WARNING, logger="utils.locks"):
        lock = build_lock(settings, "vehicles", make_redis(settings.redis_url))
    assert isinstance(lock, FileLock) and lock.path == tmp_path / "locks" / "vehicles.lock"
    assert "this machine only" in caplog.text and "pw-sentinel" not in caplog.text
    explicit = build_lock(settings, "a/b", None, fallback_dir=tmp_path / "elsewhere", required=False)
    assert isinstance(explicit, FileLock) and explicit.path == tmp_path / "elsewhere" / "a_b.lock"
    with lock:
        assert build_lock(settings, "vehicles", None).acquire() is False


def test_redis_location_never_shows_a_password() -> None:
    assert redis_location(None, "redis://:pw@cache.internal:6380/1") == "cache.internal:6380"
    assert redis_location(make_redis("redis://user:pw@10.0.0.5/0")) == "10.0.0.5:6379"
    assert redis_location(None, "unix:///var/run/redis.sock") == "/var/run/redis.sock"
