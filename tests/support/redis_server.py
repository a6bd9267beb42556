"""Redis for tests: the shared server (fakeredis locally when absent, a failure in CI)
and throwaway `redis-server` processes that a test may stop and restart."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_server() -> Iterator[tuple[str, Any]]:
    """("real", url) or ("fake", FakeServer); use as a module fixture body."""
    import fakeredis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is required in CI and did not answer: {exc}")
        yield "fake", fakeredis.FakeServer()
    else:
        yield "real", REDIS_URL
    finally:
        client.close()


def connect(server: tuple[str, Any], *, decode: bool, needs_lua: bool = False) -> redis.Redis:
    """A client of ``shared_server()``'s server. ``needs_lua``: skip (locally only: CI has
    real Redis) when fakeredis was installed without its Lua engine."""
    import fakeredis

    kind, where = server
    if kind == "real":
        return redis.Redis.from_url(where, socket_timeout=2, socket_connect_timeout=2, decode_responses=decode)
    client = fakeredis.FakeRedis(server=where, decode_responses=decode)
    if needs_lua:
        try:
            client.eval("return 1", 0)
        except redis.exceptions.ResponseError:
            pytest.skip("fakeredis without a Lua engine (install fakeredis[lua]) cannot run Lua scripts")
    return client


def key_prefix(client: redis.Redis, label: str) -> Iterator[str]:
    """A fresh key prefix for one test; its keys are deleted afterwards (fixture body)."""
    name = f"test-{label}-{uuid.uuid4().hex}:"
    yield name
    for key in list(client.scan_iter(match=name + "*")):
        client.delete(key)


class RedisProcess:
    """A redis-server of the test's own, on a free port, that it may stop and start."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:  # waiting for a real process to listen: nothing to inject here
            try:
                probe.ping()
                return self
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def redis_process(directory: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(directory).start()
    try:
        yield server
    finally:
        server.stop()


def require_real_redis(url: str = REDIS_URL) -> str:
    """``url`` when a real Redis answers there (tests across processes cannot use
    fakeredis); a failure in CI, a skip locally otherwise."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {url} is required in CI and did not answer: {exc}")
        pytest.skip(f"Redis at {url} unreachable: {exc}")
    finally:
        client.close()
    return url


def real_client_and_prefix(label: str) -> Iterator[tuple[redis.Redis, str]]:
    """A client of the real Redis and a fresh key prefix for one test, whose keys are
    deleted afterwards (fixture body). No Redis: a failure in CI, a skip locally."""
    client = redis.Redis.from_url(require_real_redis(), socket_timeout=2, socket_connect_timeout=2)
    try:
        for name in key_prefix(client, label):
            yield client, name
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's clean-up)."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
    finally:
        client.close()


def wait_until(predicate: Any, timeout: float, step: float = 0.2) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` seconds (else its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()
