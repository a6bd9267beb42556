"""utils.locks against real Redis (db 15) and real processes.

Redis: redis://127.0.0.1:6379/15 (``TEST_REDIS_URL`` overrides it), a unique prefix per
test, removed afterwards; unreachable Redis fails the suite in CI (CI=true), elsewhere
fakeredis stands in (tests needing Lua are skipped if it has no Lua engine).

Time: what the lock measures itself (a blocking acquire's polling and timeout, the
handover wait, the grace of an unreachable Redis) runs on an injected ``FakeClock``.
Key expiry is Redis's own clock, which no fake reaches: the tests about expiry shorten
the key with PEXPIRE or use TTLs of a few tenths of a second and wait for the key to
go, and the renewal test waits (briefly) for the real renewal thread.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import load_settings
from tests.fakes.transport import FakeClock
from tests.support.redis_server import REDIS_URL, RedisProcess, connect, free_port, key_prefix, shared_server
from utils.errors import FatalError, LockLostError
from utils.locks import (
    FileLock,
    LockHeldError,
    LockParams,
    RedisLock,
    WriteFence,
    build_lock,
    check_write,
    fenced,
    redis_location,
)
from utils.redis_client import make_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _until(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate`` in real time: for what Redis's clock or a real thread does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


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
    lock = RedisLock(redis_client, "departments", prefix=prefix, ttl_seconds=30, renew_every=0.05)
    rival = RedisLock(redis_client, "departments", prefix=prefix, ttl_seconds=30)
    assert lock.acquire()
    redis_client.pexpire(lock.key, 10_000)  # as if most of the TTL had passed with nothing written
    assert _until(lambda: redis_client.pttl(lock.key) > 25_000, 5)  # the renewal thread alone extended it
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
    clock = FakeClock()
    holder = RedisLock(redis_client, "jobs", prefix=prefix)
    waiter = RedisLock(redis_client, "jobs", prefix=prefix, poll_seconds=0.25, sleep=clock.sleep, clock=clock)
    assert holder.acquire()
    try:
        assert waiter.acquire(blocking=True, timeout=1.0) is False
        assert clock.sleeps == [0.25, 0.25, 0.25, 0.25]  # polled until the timeout, on its clock
        clock.sleeps.clear()
        assert waiter.acquire(blocking=True, timeout=0.6) is False
        assert clock.sleeps == pytest.approx([0.25, 0.25, 0.1])  # the last wait ends at the deadline, not past it
    finally:
        holder.release()


def test_blocking_acquire_takes_the_lock_once_it_is_free(redis_client: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    holder = RedisLock(redis_client, "jobs", prefix=prefix)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 3:
            holder.release()  # freed while the waiter polls

    waiter = RedisLock(redis_client, "jobs", prefix=prefix, poll_seconds=0.5, sleep=sleep, clock=clock)
    assert holder.acquire()
    assert waiter.acquire(blocking=True, timeout=None) is True
    assert clock.sleeps == [0.5, 0.5, 0.5] and waiter.held
    assert waiter.release() is True


def test_renew_every_must_be_shorter_than_ttl(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        RedisLock(redis_client, "x", ttl_seconds=1, renew_every=1)


# --------------------------------------------------------------- write fence and handover


def _state(client: redis.Redis, lock: RedisLock) -> str | None:
    return client.get(lock.state_key)


def test_check_confirms_and_extends_every_lock_of_the_fence_at_once(redis_client: redis.Redis, prefix: str) -> None:
    cycle = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30, settle_seconds=5)
    sync = RedisLock(redis_client, "sync-jobs", prefix=prefix, ttl_seconds=30, settle_seconds=5)
    assert cycle.acquire() and sync.acquire()
    try:
        for lock in (cycle, sync):
            redis_client.pexpire(lock.key, 1_000)  # as if the TTL had almost run out
        WriteFence([cycle, sync]).check()
        for lock in (cycle, sync):
            assert redis_client.pttl(lock.key) > 25_000  # both extended to the full TTL
            word, stamp, hold = _state(redis_client, lock).split()  # type: ignore[union-attr]
            assert word == "held" and int(hold) == 20_000  # grace (TTL/2) + settle, in ms
            assert abs(int(stamp) / 1000 - time.time()) < 5  # Redis's clock
    finally:
        sync.release()
        cycle.release()
    assert _state(redis_client, sync) == "released" and _state(redis_client, cycle) == "released"


def test_check_refuses_when_one_key_is_gone_and_extends_none(
    redis_client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    cycle = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30)
    sync = RedisLock(redis_client, "sync-departments", prefix=prefix, ttl_seconds=30)
    assert cycle.acquire() and sync.acquire()
    try:
        redis_client.pexpire(cycle.key, 5_000)
        redis_client.delete(sync.key)  # Redis lost it (restart, failover), or it expired
        with caplog.at_level(logging.ERROR, logger="utils.locks"), pytest.raises(LockLostError) as caught:
            WriteFence([cycle, sync]).check()
        assert str(caught.value).startswith("lock lost: the sync-departments lock is no longer ours: its key is gone")
        assert redis_client.pttl(cycle.key) <= 5_000  # all or nothing: the cycle lock was not extended
        assert sync.lost.is_set() and not cycle.lost.is_set()
        assert [r.getMessage() for r in caplog.records if "lock lost" in r.getMessage()] == [
            "lock lost: sync-departments: " + str(caught.value).split("no longer ours: ")[1].replace("; stopped writing", "")
            + "; stopped writing, another runner may hold it now"
        ]  # fmt: skip
        with pytest.raises(LockLostError):  # known lost: refused without asking Redis again
            WriteFence([cycle, sync]).raise_if_lost()
    finally:
        sync.release()
        cycle.release()
    assert _state(redis_client, sync) != "released"  # a lost lock is never marked released


def test_check_refuses_a_key_that_holds_another_runners_token(redis_client: redis.Redis, prefix: str) -> None:
    mine = RedisLock(redis_client, "sync-titles", prefix=prefix, ttl_seconds=30)
    assert mine.acquire()
    redis_client.set(mine.key, json.dumps({"token": "the-next-holder"}), px=30_000)
    with pytest.raises(LockLostError):
        mine.confirm()
    assert mine.release() is False
    assert json.loads(redis_client.get(mine.key))["token"] == "the-next-holder"  # theirs stays, not marked
    assert _state(redis_client, mine) != "released"


def test_check_write_checks_only_inside_fenced(redis_client: redis.Redis, prefix: str, tmp_path: Path) -> None:
    lock = RedisLock(redis_client, "sync-vehicles", prefix=prefix, ttl_seconds=30)
    assert lock.acquire()
    redis_client.delete(lock.key)
    check_write()  # no fence active: tools, dry runs
    with fenced(WriteFence([FileLock(tmp_path / "f.lock")])):
        check_write()  # a file lock cannot be lost
    with fenced(WriteFence([lock])), pytest.raises(LockLostError):
        check_write()
    lock.release()


def test_clean_release_hands_over_without_waiting(redis_client: redis.Redis, prefix: str) -> None:
    sleeps: list[float] = []
    first = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30, settle_seconds=61)
    assert first.acquire()
    first.confirm()
    assert first.release() is True
    second = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30, settle_seconds=61, sleep=sleeps.append)
    assert second.acquire() and second.handover_wait == 0 and sleeps == []
    second.release()


def test_a_first_run_on_a_long_running_redis_does_not_wait(
    redis_client: redis.Redis, redis_server: tuple[str, Any], prefix: str
) -> None:
    if redis_server[0] != "real":
        pytest.skip("fakeredis has no uptime")
    if int(redis_client.info("server")["uptime_in_seconds"]) < 10:
        pytest.skip("the shared Redis started less than 10 s ago")
    sleeps: list[float] = []
    lock = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=4, settle_seconds=5, sleep=sleeps.append)
    assert lock.acquire() and lock.handover_wait == 0 and sleeps == []
    lock.release()


def test_taking_over_a_lost_lock_waits_for_the_holders_last_writes(redis_client: redis.Redis, prefix: str) -> None:
    holder = RedisLock(redis_client, "sync-departments", prefix=prefix, ttl_seconds=30, settle_seconds=9)
    assert holder.acquire()
    holder.confirm()  # the holder's last confirmation: a write of it may land until +15 s + 9 s
    confirmed = time.monotonic()
    redis_client.delete(holder.key)  # the key vanished (evicted, deleted) but not its state
    clock = FakeClock()
    taker = RedisLock(redis_client, "sync-departments", prefix=prefix, ttl_seconds=2, sleep=clock.sleep, clock=clock)
    assert taker.acquire()
    sleeps = clock.sleeps
    assert 23 < sleeps[0] + (time.monotonic() - confirmed) <= 24.1, sleeps  # the holder's hold, not the taker's
    assert taker.handover_wait == sleeps[0]
    with pytest.raises(LockLostError):
        holder.confirm()  # and the old holder learns it at its next write
    assert taker.release() is True
    assert _state(redis_client, taker) == "released"  # it waited the handover out: a clean handover
    holder.release()


def test_a_crashed_holder_needs_no_wait_beyond_its_expiry(redis_client: redis.Redis, prefix: str) -> None:
    dead = RedisLock(redis_client, "sync-jobs", prefix=prefix, ttl_seconds=0.3, renew_every=0.25, settle_seconds=0.05)
    assert dead.acquire()
    dead._stop.set()  # SIGKILL: no renewal, no release
    dead.confirm()
    assert _until(lambda: not redis_client.exists(dead.key), 2)  # Redis expires it one TTL after the last confirmation
    clock = FakeClock()
    taker = RedisLock(redis_client, "sync-jobs", prefix=prefix, ttl_seconds=0.3, sleep=clock.sleep, clock=clock)
    assert taker.acquire()
    assert clock.sleeps == [] and taker.handover_wait == 0  # grace 0.15 + settle 0.05 < TTL 0.3: all landed
    taker.release()


def test_a_handover_cut_short_by_shutdown_is_not_released_as_clean(redis_client: redis.Redis, prefix: str) -> None:
    holder = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30, settle_seconds=30)
    assert holder.acquire()
    redis_client.delete(holder.key)
    stop = threading.Event()
    stop.set()  # SIGTERM arrived
    taker = RedisLock(redis_client, "sync-cycle", prefix=prefix, ttl_seconds=30, stop=stop)
    started = time.monotonic()
    assert taker.acquire()
    assert taker.handover_wait > 40 and time.monotonic() - started < 1
    taker.release()
    assert _state(redis_client, taker).startswith("held ")  # the next taker still waits  # type: ignore[union-attr]
    holder.release()


@pytest.mark.skipif(shutil.which("redis-server") is None and os.environ.get("CI") != "true", reason="needs redis-server")
def test_redis_restarted_empty_holder_stops_and_taker_waits_from_the_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisProcess(tmp_path).start()
    try:
        client = make_redis(server.url)
        holder = RedisLock(client, "sync-departments", ttl_seconds=4, settle_seconds=3)  # grace 2 s
        assert holder.acquire()
        server.stop()
        with caplog.at_level(logging.WARNING, logger="utils.locks"):
            holder.confirm()  # unreachable, within the 2 s grace: writes go on
        assert "writing on for at most" in caplog.text and holder.held
        starting = time.monotonic()
        server.start()  # empty
        restarted = time.monotonic()
        with pytest.raises(LockLostError, match="its key is gone"):
            holder.confirm()
        sleeps: list[float] = []
        taker = RedisLock(make_redis(server.url), "sync-departments", ttl_seconds=4, settle_seconds=3, sleep=sleeps.append)
        assert taker.acquire()
        # Until Redis's start + settle. Redis started between ``starting`` and ``restarted``
        # (a loaded machine takes a while to get it answering) and reports its uptime in
        # whole seconds, so the wait may end up to a second later than start + settle.
        waited_until = sleeps[0] + (time.monotonic() - starting)
        assert 3 - 0.1 <= waited_until <= 3 + 1 + (restarted - starting) + 0.3, (sleeps, restarted - starting)
        taker.release()
        holder.release()
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None and os.environ.get("CI") != "true", reason="needs redis-server")
def test_redis_unreachable_past_the_grace_loses_the_lock(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path).start()
    try:
        clock = FakeClock()
        lock = RedisLock(make_redis(server.url), "sync-employees", ttl_seconds=60, clock=clock)
        assert lock.acquire()
        lock._stop.set()  # only the explicit checks below
        lock.confirm()
        server.stop()
        clock.advance(29.9)
        lock.confirm()  # within the 30 s grace (half the TTL) of the last confirmation
        assert lock.held
        clock.advance(0.2)
        with pytest.raises(LockLostError, match="could not confirm it for 30 s"):
            lock.confirm()
        assert lock.lost.is_set()
    finally:
        server.stop()


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
