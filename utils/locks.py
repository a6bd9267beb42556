"""Single-writer locks: the daemon and a CronJob started at the same moment never both
write to a target; the loser reports ``skipped`` and exits 0 (DESIGN.md).

Why this design:

* **Redis, one key per lock** (``{prefix}lock:{name}``), taken with one atomic
  ``SET key value NX PX ttl``: no window between "is it free?" and "take it". The value
  is JSON with a random token plus host, pid and since, so ``holder()`` can tell an
  operator who holds it, and only the holder's token can extend or release it.
* **Expiry plus renewal.** A crashed holder (OOM-killed pod) cannot release; the key
  expires ``ttl_seconds`` after its last renewal and the next run goes ahead. While the
  holder runs, a daemon thread extends the key every ``renew_every`` (a third of the TTL)
  with a compare-and-``PEXPIRE`` script. If the key was lost (it expired during a long
  GC pause or a Redis failover, and someone else may hold it now), the thread sets
  ``lost`` so the sync can stop writing before it races the new holder.
* **Release by owner only**: a compare-and-``DEL`` script, so a holder whose lock
  already expired cannot delete the next holder's lock.
* **No Redis.** ``build_lock`` decides: with LOCK_REQUIRED (the default) a lock that
  cannot be taken is a ``FatalError`` naming the Redis host and port (never the
  password). Without it, a ``FileLock`` (``fcntl.flock`` on ``<dir>/<name>.lock``)
  still excludes processes on the same machine (a laptop, a single VM, the sandbox),
  with a warning that other machines are not excluded. flock locks are released by the
  kernel when the holder dies, so a crash never leaves a stale file lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import redis

from utils.errors import FatalError

__all__ = ["FileLock", "Lock", "LockHeldError", "LockParams", "RedisLock", "build_lock", "redis_location"]

log = logging.getLogger(__name__)

_OUTAGE = (redis.exceptions.RedisError, OSError)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockHeldError(Exception):
    """Raised by ``with lock:`` when another runner holds the lock. Not a SyncError: a
    held lock is the expected outcome of two runners starting together (``skipped``)."""

    def __init__(self, name: str, holder: dict[str, Any] | None) -> None:
        who = f" by {holder.get('host')} pid {holder.get('pid')} since {holder.get('since')}" if holder else ""
        super().__init__(f"lock {name} is held{who}")
        self.name = name
        self.holder = holder


class Lock(Protocol):
    """What a runner needs from a single-writer lock (RedisLock and FileLock)."""

    name: str
    lost: threading.Event

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool: ...

    def release(self) -> bool: ...

    def holder(self) -> dict[str, Any] | None: ...

    def __enter__(self) -> Lock: ...

    def __exit__(self, *exc: object) -> None: ...


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _identity(name: str, token: str) -> dict[str, Any]:
    return {"name": name, "host": socket.gethostname(), "pid": os.getpid(), "since": _now_iso(), "token": token}


def _public(info: Any) -> dict[str, Any] | None:
    """The holder's description without its token (the token is what lets one release)."""
    if not isinstance(info, dict):
        return None
    return {k: v for k, v in info.items() if k != "token"}


class _LockBase:
    name: str

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def release(self) -> bool:
        raise NotImplementedError

    def holder(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _wait(
        self, attempt: Callable[[], bool], blocking: bool, timeout: float | None, poll: float, sleep: Callable[[float], None]
    ) -> bool:
        if attempt():
            return True
        if not blocking:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            if attempt():
                return True
        return False

    def __enter__(self) -> Any:
        if not self.acquire():
            raise LockHeldError(self.name, self.holder())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class RedisLock(_LockBase):
    """A lock held in Redis, renewed while held, released only by its owner.

    ``acquire`` raises FatalError if Redis cannot be reached (the caller asked for a
    Redis lock; ``build_lock`` is where a fallback is chosen). ``release`` never raises:
    if Redis is gone, the key expires by itself.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        name: str,
        *,
        prefix: str = "safetyamp-sync:",
        ttl_seconds: float = 60.0,
        renew_every: float | None = None,
        poll_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
        where: str | None = None,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0")
        self.name = name
        self.key = f"{prefix}lock:{name}"
        self.ttl_seconds = float(ttl_seconds)
        self.renew_every = float(renew_every) if renew_every is not None else self.ttl_seconds / 3
        if not 0 < self.renew_every < self.ttl_seconds:
            raise ValueError("renew_every must be > 0 and shorter than ttl_seconds")
        self.lost = threading.Event()
        self._r = redis_client
        self._poll = poll_seconds
        self._sleep = sleep
        self._where = where or redis_location(redis_client)
        self._value: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = redis_client.register_script(_RENEW)
        self._release = redis_client.register_script(_RELEASE)

    @property
    def held(self) -> bool:
        """True between a successful acquire and release, unless ownership was lost."""
        return self._value is not None and not self.lost.is_set()

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lock (``SET NX PX``). Non-blocking by default; with ``blocking``,
        poll until taken or ``timeout`` seconds passed (None: wait forever)."""
        if self._value is not None:
            raise RuntimeError(f"lock {self.name} is already held by this object")
        value = json.dumps(_identity(self.name, uuid.uuid4().hex), sort_keys=True)

        def attempt() -> bool:
            try:
                return bool(self._r.set(self.key, value, nx=True, px=self._ttl_ms))
            except _OUTAGE as exc:
                raise FatalError(f"cannot take the {self.name} lock: Redis unreachable at {self._where}") from exc

        if not self._wait(attempt, blocking, timeout, self._poll, self._sleep):
            return False
        self._value = value
        self.lost.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lock-renew-{self.name}", daemon=True)
        self._thread.start()
        return True

    def release(self) -> bool:
        """Stop renewing and delete the key if (and only if) this object still owns it.
        Returns True when it deleted the key."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ttl_seconds)
        self._thread = None
        value, self._value = self._value, None
        if value is None:
            return False
        try:
            return bool(self._release(keys=[self.key], args=[value]))
        except _OUTAGE as exc:
            log.warning(
                "lock %s: release failed (%s); the lock expires by itself within %.0f s",
                self.name,
                type(exc).__name__,
                self.ttl_seconds,
                extra={"event": "lock_release_failed"},
            )
            return False

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now: ``{"name", "host", "pid", "since"}``, or None if free."""
        raw = self._r.get(self.key)
        if raw is None:
            return None
        try:
            info = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except ValueError:
            return {"name": self.name, "host": None, "pid": None, "since": None}
        return _public(info)

    def _renew_loop(self) -> None:
        value = self._value
        assert value is not None
        last_ok = time.monotonic()
        warned = False
        while not self._stop.wait(self.renew_every):
            try:
                extended = self._renew(keys=[self.key], args=[value, self._ttl_ms])
            except _OUTAGE as exc:
                if not warned:
                    log.warning(
                        "lock %s: renewal failed (%s); retrying",
                        self.name,
                        type(exc).__name__,
                        extra={"event": "lock_renew_failed"},
                    )
                    warned = True
                if time.monotonic() - last_ok >= self.ttl_seconds:
                    self._lose("Redis could not be reached for longer than the lock's TTL")
                    return
                continue
            if not extended:
                self._lose("the key expired or was taken over")
                return
            last_ok, warned = time.monotonic(), False

    def _lose(self, why: str) -> None:
        self.lost.set()
        log.error("lock %s lost: %s; stop writing, another runner may hold it now", self.name, why, extra={"event": "lock_lost"})


class FileLock(_LockBase):
    """An exclusive ``fcntl.flock`` on a file: excludes processes on this machine only.

    The file holds the holder's JSON description (host, pid, since). The kernel drops
    the lock when the holder exits or dies, so there is nothing to expire or renew;
    ``lost`` exists for interface parity and is never set.
    """

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        *,
        poll_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.lost = threading.Event()
        self._poll = poll_seconds
        self._sleep = sleep
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        if self._file is not None:
            raise RuntimeError(f"lock {self.name} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> bool:
            handle = open(self.path, "a+", encoding="utf-8")  # kept open while held
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_public(_identity(self.name, "")), sort_keys=True))
            handle.flush()
            self._file = handle
            return True

        return self._wait(attempt, blocking, timeout, self._poll, self._sleep)

    def release(self) -> bool:
        handle, self._file = self._file, None
        if handle is None:
            return False
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
        return True

    def holder(self) -> dict[str, Any] | None:
        """The holder's description, or None when nobody holds the lock."""
        try:
            probe = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return None
        with probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held (by another process, or by this one through another handle)
            else:
                fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
                return None
            try:
                return _public(json.loads(probe.read() or "null")) or {"name": self.name}
            except ValueError:
                return {"name": self.name}


@dataclass(frozen=True)
class LockParams:
    """What ``build_lock`` needs when no Settings object is at hand."""

    prefix: str = "safetyamp-sync:"
    ttl_seconds: float = 60.0
    required: bool = True
    redis_url: str | None = None
    fallback_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> LockParams:
        url = settings.redis_url
        return cls(
            prefix=settings.redis_prefix,
            ttl_seconds=settings.lock_ttl_seconds,
            required=settings.lock_required,
            redis_url=url.get_secret_value() if hasattr(url, "get_secret_value") else url,
            fallback_dir=Path(settings.output_dir) / "locks",
        )


def redis_location(redis_client: redis.Redis | None, url: str | None = None) -> str:
    """``host:port`` (or the socket path) of a client or URL, never its password."""
    if redis_client is not None:
        kwargs = getattr(getattr(redis_client, "connection_pool", None), "connection_kwargs", {}) or {}
        if kwargs.get("path"):
            return str(kwargs["path"])
        if kwargs.get("host"):
            return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    if url:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path
        try:
            port = parts.port or 6379
        except ValueError:
            port = 6379
        return f"{parts.hostname or '?'}:{port}"
    return "?"


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def build_lock(
    settings_or_params: Any,
    name: str,
    redis_client: redis.Redis | None,
    fallback_dir: Path | None = None,
    required: bool | None = None,
) -> RedisLock | FileLock:
    """The lock for ``name``: a RedisLock when Redis answers a PING; otherwise a
    FatalError when required (LOCK_REQUIRED, or ``required`` if given), else a
    FileLock in ``fallback_dir`` (default ``OUTPUT_DIR/locks``, or the temp folder)
    with a warning. ``settings_or_params`` is a Settings or a LockParams."""
    params = settings_or_params if isinstance(settings_or_params, LockParams) else LockParams.from_settings(settings_or_params)
    must = params.required if required is None else required
    where = redis_location(redis_client, params.redis_url)
    reason = "no Redis client"
    if redis_client is not None:
        try:
            redis_client.ping()
        except _OUTAGE as exc:
            reason = type(exc).__name__
        else:
            return RedisLock(redis_client, name, prefix=params.prefix, ttl_seconds=params.ttl_seconds, where=where)
    if must:
        raise FatalError(f"cannot take the {name} lock: Redis unreachable at {where}")
    folder = fallback_dir or params.fallback_dir or Path(tempfile.gettempdir()) / "safetyamp-sync-locks"
    path = Path(folder) / f"{_SAFE_NAME.sub('_', name)}.lock"
    log.warning(
        "lock %s: Redis unreachable at %s (%s); using the file lock %s, which excludes runners on this machine only",
        name,
        where,
        reason,
        path,
        extra={"event": "lock_fallback"},
    )
    return FileLock(path, name)
