"""Single-writer locks: the daemon and a CronJob started at the same moment never both
write to a target; the loser reports ``skipped`` and exits 0.

Why this design:

* **Redis, one key per lock** (``{prefix}lock:{name}``), taken with one atomic
  ``SET key value NX PX ttl`` (inside the acquire script): no window between "is it
  free?" and "take it". The value is JSON with a random token plus host, pid and since,
  so ``holder()`` can tell an operator who holds it, and only the holder's token can
  extend or release it.
* **Expiry plus renewal.** A crashed holder (OOM-killed pod) cannot release; the key
  expires ``ttl_seconds`` after its last confirmation and the next run goes ahead. While
  the holder runs, a daemon thread confirms (extends) the key every ``renew_every`` (a
  third of the TTL), so a holder that is reading or planning keeps it.
* **Every write is checked, not every renewal.** Redis restarted without its data (or a
  failover, or an expiry during a long pause) takes the key away at once; a renewal
  notices up to ``renew_every`` later, and a holder that kept writing until then created
  the same site clusters as the runner that took the free key meanwhile (the defect
  this closes). So the runner activates a ``WriteFence`` (the cycle lock plus the
  sync's lock) around its writes, and the HTTP client calls ``check_write()``
  immediately before it sends any write request, after rate-limit waits and before each
  retry: one Lua script compares every token and extends every key atomically. A key
  that is gone or holds another token raises ``LockLostError`` ("lock lost: ..."),
  logged once as "lock lost"; the sync fails with that message and no further write of
  this runner goes out (``sync.runner`` builds the fence, ``sync.base.apply_in_order``
  activates it in its worker threads). The check is one Redis round trip per write
  request (well under a millisecond next to the target's tens of milliseconds), and
  nothing else: no read of the target.
* **A holder that cannot reach Redis** keeps writing for at most ``grace_seconds``
  (half the TTL) after its last successful confirmation, then stops with "lock lost":
  a short Redis outage does not fail a running sync, and whoever takes the key after
  it expired waits for what the holder may have sent meanwhile (next point).
* **Handing over a lock that was not released cleanly.** A write that passed its check
  an instant before Redis restarted is still in flight; the next holder must not read
  the target before it has landed, or it plans (and sends) the same create. A clean
  ``release`` leaves a persistent marker ``{key}:state`` = ``released``; every
  confirmation records ``held <Redis time ms> <hold ms>`` there instead (``hold`` =
  grace + settle: how long after that confirmation a write of the holder may still
  land, with ``settle_seconds`` = the write clients' connect + read timeout + 1 s, set
  by ``config.bootstrap``). ``acquire`` reads and replaces the marker atomically:

  - ``released``: the previous holder finished its writes before letting go; no wait
    (the normal run: it pays nothing, no extra read, no delay);
  - ``held T H``: the previous holder crashed, or its key expired or vanished under
    it; wait until Redis time T + H. After a crash the key itself expired TTL after T,
    so the wait is ``max(0, H - TTL)``;
  - no marker: Redis lost everything (restart without persistence), or this lock was
    never taken with this prefix. Redis's ``uptime_in_seconds`` tells them apart: a
    holder of the lost keyspace checked its last write before Redis started (its
    checks fail as soon as Redis answers again), so wait until start + settle. On a
    Redis that has been up longer than that (a first run ever on a long-running
    Redis) there is nothing to wait for; a first run on a Redis started with it (a
    new deployment) waits out the rest of the settle time once.

  The wait happens inside ``acquire`` (the renewal thread keeps the key meanwhile; a
  ``stop`` event ends it early, and such a lock is then not marked released), so when
  ``acquire`` returns the target shows every write a previous holder can still make,
  and the runner's first read (it reads after taking the cycle lock) sees them. No
  create needs a find-by-key of its own: re-reading by key before each create could
  not see a write still in flight either, and would cost one read per create on every
  first run.
* **Release by owner only**: a compare-and-``DEL`` script, so a holder whose lock
  already expired cannot delete the next holder's lock (nor mark it released).
* **No Redis.** ``build_lock`` decides: with LOCK_REQUIRED (the default) a lock that
  cannot be taken is a ``FatalError`` naming the Redis host and port (never the
  password). Without it, a ``FileLock`` (``fcntl.flock`` on ``<dir>/<name>.lock``)
  still excludes processes on the same machine (a laptop, a single VM, the sandbox),
  with a warning that other machines are not excluded. flock locks are released by the
  kernel when the holder dies, so a crash never leaves a stale file lock behind, and
  one cannot be lost: its fence check costs nothing.

What remains (docs/reliability.md): a target that applies a request after the client
gave up on it (longer than its timeout) can still land later; so can a write of a
process frozen between its check and its send (the check is immediately before the
send; only a stop-the-world pause there could do it). A ``FLUSHALL`` on a long-running
Redis, an eviction policy that drops the ``:state`` markers (``allkeys-*``), or a
failover that loses the last acquire (asynchronous replication) look like a first run;
run Redis with ``noeviction`` or a ``volatile-*`` policy and do not flush it under a
running sync. A holder that
cannot reach a restarted Redis while the next runner can (a partition at the same
moment as the restart) writes on within its grace, unseen by the next runner. All runners
should share LOCK_TTL_SECONDS and the write timeouts (one ConfigMap): the ``held``
marker carries the previous holder's own ``hold``, but after a restart without data a
taker can only go by its own. One Redis, not Redis Cluster (the check script spans
several keys).
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import redis

from utils.errors import FatalError, LockLostError
from utils.logger import in_context

__all__ = [
    "FileLock",
    "Lock",
    "LockHeldError",
    "LockParams",
    "RedisLock",
    "WriteFence",
    "build_lock",
    "check_write",
    "fenced",
    "redis_location",
    "request_bound_seconds",
]

log = logging.getLogger(__name__)

_OUTAGE = (redis.exceptions.RedisError, OSError)

# Scripts call TIME and then write: replicate_commands() lets Redis before 5 accept that
# (effects replication); from Redis 7 it is a no-op.
_ACQUIRE = """
redis.replicate_commands()
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local before = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], 'held ' .. now .. ' ' .. ARGV[3])
return {before, now}
"""

_CONFIRM = """
redis.replicate_commands()
local n = #KEYS / 2
for i = 1, n do
  if redis.call('GET', KEYS[2 * i - 1]) ~= ARGV[3 * i - 2] then
    return i
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[3 * i - 1])
  redis.call('SET', KEYS[2 * i], 'held ' .. now .. ' ' .. ARGV[3 * i])
end
return 0
"""
"""KEYS: lock, state, lock, state, ...; ARGV: value, ttl ms, hold ms per lock. Returns 0
when every key holds its value (all extended, all states stamped), else the 1-based
index of the first that does not (nothing extended)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], 'released')
end
return 1
"""

_MISSING_KEY = "its key is gone or holds another runner's token (Redis restarted empty, or it expired and was taken)"


def request_bound_seconds(timeout: float | tuple[float, float] | None) -> float:
    """How long a request sent with ``timeout`` (requests' float, or (connect, read))
    may take before the client gives up on it: connect plus read, plus a second."""
    if timeout is None:
        return 0.0
    if isinstance(timeout, tuple):
        return sum(float(t) for t in timeout if t) + 1.0
    return 2 * float(timeout) + 1.0


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
    _clock: Callable[[], float]
    _sleep: Callable[[float], None]

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def release(self) -> bool:
        raise NotImplementedError

    def holder(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def _wait(self, attempt: Callable[[], bool], blocking: bool, timeout: float | None, poll: float) -> bool:
        if attempt():
            return True
        if not blocking:
            return False
        deadline = None if timeout is None else self._clock() + timeout
        while deadline is None or self._clock() < deadline:
            self._sleep(poll if deadline is None else max(0.0, min(poll, deadline - self._clock())))
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
    """A lock held in Redis, confirmed before every write, renewed while held, released
    only by its owner, and handed over safely after a loss (module docstring).

    ``acquire`` raises FatalError if Redis cannot be reached (the caller asked for a
    Redis lock; ``build_lock`` is where a fallback is chosen). ``release`` never raises:
    if Redis is gone, the key expires by itself.

    ``settle_seconds``: the longest a write checked under this lock may take to land
    (``request_bound_seconds`` of the write clients' timeout); ``stop``: ends a handover
    wait early (the daemon's shutdown).

    ``clock`` (monotonic seconds) and ``sleep`` are injectable, as in services.http: the
    blocking acquire's polling and timeout, the handover wait and the grace of an
    unreachable Redis run on them, so tests pass a fake clock instead of waiting. Two
    things stay in real time: key expiry, which is Redis's own clock (the handover
    arithmetic uses Redis's TIME), and the renewal thread's cadence (``renew_every``).
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
        clock: Callable[[], float] = time.monotonic,
        where: str | None = None,
        settle_seconds: float = 0.0,
        stop: threading.Event | None = None,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be > 0")
        if settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")
        self.name = name
        self.key = f"{prefix}lock:{name}"
        self.state_key = f"{self.key}:state"
        self.ttl_seconds = float(ttl_seconds)
        self.renew_every = float(renew_every) if renew_every is not None else self.ttl_seconds / 3
        if not 0 < self.renew_every < self.ttl_seconds:
            raise ValueError("renew_every must be > 0 and shorter than ttl_seconds")
        self.grace_seconds = self.ttl_seconds / 2
        """How long after its last confirmation a holder that cannot reach Redis writes on."""
        self.settle_seconds = float(settle_seconds)
        self.lost = threading.Event()
        self.lost_reason: str | None = None
        self.handover_wait = 0.0
        """Seconds the last ``acquire`` waited for a previous holder's writes to land."""
        self._r = redis_client
        self._poll = poll_seconds
        self._sleep = sleep
        self._clock = clock
        self._halt = stop
        self._where = where or redis_location(redis_client)
        self._value: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._confirm = redis_client.register_script(_CONFIRM)
        self._release = redis_client.register_script(_RELEASE)
        self._last_ok = 0.0
        self._handover_until = 0.0
        self._unreachable_warned = False
        self._lose_lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True between a successful acquire and release, unless ownership was lost."""
        return self._value is not None and not self.lost.is_set()

    @property
    def hold_seconds(self) -> float:
        """How long after its last confirmation a write of this holder may still land."""
        return self.grace_seconds + self.settle_seconds

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    @property
    def _hold_ms(self) -> int:
        return int(self.hold_seconds * 1000)

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lock (``SET NX PX``). Non-blocking by default; with ``blocking``,
        poll until taken or ``timeout`` seconds passed (None: wait forever). Once taken,
        wait out the handover if the previous holder did not release cleanly."""
        if self._value is not None:
            raise RuntimeError(f"lock {self.name} is already held by this object")
        value = json.dumps(_identity(self.name, uuid.uuid4().hex), sort_keys=True)
        taken: list[Any] = []

        def attempt() -> bool:
            sent = self._clock()
            try:
                got = self._acquire(keys=[self.key, self.state_key], args=[value, self._ttl_ms, self._hold_ms])
            except _OUTAGE as exc:
                raise FatalError(f"cannot take the {self.name} lock: Redis unreachable at {self._where}") from exc
            if not got:
                return False
            taken[:] = [sent, got]
            return True

        if not self._wait(attempt, blocking, timeout, self._poll):
            return False
        sent, (before, now_ms) = taken
        self._value = value
        self._last_ok = sent
        self.lost.clear()
        self.lost_reason = None
        self._stop.clear()
        self._thread = threading.Thread(target=in_context(self._renew_loop), name=f"lock-renew-{self.name}", daemon=True)
        self._thread.start()
        wait, why = self._handover(str(before), int(now_ms))
        self.handover_wait = wait
        self._handover_until = self._clock() + wait
        if wait > 0:
            log.warning(
                "lock %s: %s; waiting %.1f s for writes it may have in flight to land before reading the target",
                self.name,
                why,
                wait,
                extra={"event": "lock_handover_wait", "wait_seconds": round(wait, 1)},
            )
            if self._halt is not None:
                self._halt.wait(wait)
            else:
                self._sleep(wait)
        return True

    def _handover(self, before: str, now_ms: int) -> tuple[float, str]:
        """(seconds to wait, why) from the marker the previous holder left behind."""
        if before == "released":
            return 0.0, ""
        parts = before.split()
        if len(parts) == 3 and parts[0] == "held" and all(p.isascii() and p.isdigit() for p in parts[1:]):
            until = int(parts[1]) + int(parts[2])  # that holder's own hold: its settings, not ours
            why = "its previous holder did not release it (it crashed, or the key expired or vanished under it)"
        elif before == "":
            uptime = self._uptime_seconds()
            settle_ms = int(self.settle_seconds * 1000)
            if uptime is None:
                until, why = now_ms + settle_ms, "Redis keeps no record of it and its uptime is unknown"
            else:
                until = now_ms - uptime * 1000 + settle_ms
                why = f"Redis started {uptime} s ago and keeps no record of it (restarted without its data, or a new lock)"
        else:
            until, why = now_ms + self._hold_ms, "its record in Redis is unreadable"
        return max(0.0, (until - now_ms) / 1000), why

    def _uptime_seconds(self) -> int | None:
        try:
            return int(self._r.info("server")["uptime_in_seconds"])
        except (*_OUTAGE, KeyError, TypeError, ValueError):
            return None

    def release(self) -> bool:
        """Stop renewing and delete the key if (and only if) this object still owns it;
        mark it released (a clean handover) unless it was lost or its own handover wait
        was cut short. Returns True when it deleted the key."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ttl_seconds)
        self._thread = None
        value, self._value = self._value, None
        if value is None:
            return False
        clean = not self.lost.is_set() and self._clock() >= self._handover_until
        try:
            return bool(self._release(keys=[self.key, self.state_key], args=[value, "1" if clean else "0"]))
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

    def confirm(self) -> None:
        """Check (and extend) ownership now; raise LockLostError when it is gone."""
        confirm_all([self])

    def lost_error(self) -> LockLostError:
        return LockLostError(f"lock lost: the {self.name} lock is no longer ours: {self.lost_reason}; stopped writing")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                confirm_all([self])
            except LockLostError:
                return

    def _unconfirmed(self, exc: BaseException) -> None:
        """Redis did not answer a confirmation: write on within the grace, else lose."""
        age = self._clock() - self._last_ok
        if age >= self.grace_seconds:
            self._lose(
                f"Redis at {self._where} could not confirm it for {age:.0f} s ({type(exc).__name__}), "
                f"longer than the {self.grace_seconds:g} s a holder may write unconfirmed"
            )
            raise self.lost_error() from exc
        if not self._unreachable_warned:
            self._unreachable_warned = True
            log.warning(
                "lock %s: cannot confirm it, Redis unreachable at %s (%s); writing on for at most %.0f s more",
                self.name,
                self._where,
                type(exc).__name__,
                self.grace_seconds - age,
                extra={"event": "lock_unconfirmed"},
            )

    def _lose(self, why: str) -> None:
        with self._lose_lock:
            if self.lost.is_set():
                return
            self.lost_reason = why
            self.lost.set()
        log.error(
            "lock lost: %s: %s; stopped writing, another runner may hold it now",
            self.name,
            why,
            extra={"event": "lock_lost"},
        )


def confirm_all(locks: Sequence[RedisLock]) -> None:
    """One atomic check of ``locks`` (those sharing a Redis client go in one script):
    every key still holds its holder's token -> all extended; otherwise the first lock
    found gone is marked lost and LockLostError raised. Redis unreachable: allowed within
    each lock's grace (``RedisLock._unconfirmed``)."""
    for lock in locks:
        if lock.lost.is_set():
            raise lock.lost_error()
        if lock._value is None:
            raise LockLostError(f"lock lost: the {lock.name} lock is not held (released already)")
    groups: dict[int, list[RedisLock]] = {}
    for lock in locks:
        groups.setdefault(id(lock._r), []).append(lock)
    for group in groups.values():
        keys: list[str] = []
        args: list[Any] = []
        for lock in group:
            keys += [lock.key, lock.state_key]
            args += [lock._value, lock._ttl_ms, lock._hold_ms]
        sent = [lock._clock() for lock in group]  # each lock's own clock (one, outside tests)
        try:
            gone = int(group[0]._confirm(keys=keys, args=args))
        except _OUTAGE as exc:
            for lock in group:
                lock._unconfirmed(exc)
            continue
        if gone:
            lock = group[gone - 1]
            lock._lose(_MISSING_KEY)
            raise lock.lost_error()
        for lock, at in zip(group, sent, strict=True):
            lock._last_ok = at
            lock._unreachable_warned = False


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.lost = threading.Event()
        self._poll = poll_seconds
        self._sleep = sleep
        self._clock = clock
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

        return self._wait(attempt, blocking, timeout, self._poll)

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


class WriteFence:
    """The locks a runner must still own for a write to go out (the cycle lock and the
    lock of the sync that writes). ``check`` confirms them together, atomically, in
    Redis; FileLocks cannot be lost and cost nothing. Activate one with ``fenced`` so
    that ``check_write`` (called by the HTTP client before every write request) finds it.
    """

    def __init__(self, locks: Iterable[Lock | None]) -> None:
        self.locks: tuple[Lock, ...] = tuple(lock for lock in locks if lock is not None)

    def is_lost(self) -> bool:
        return any(lock.lost.is_set() for lock in self.locks)

    def raise_if_lost(self) -> None:
        """Without asking Redis: raise LockLostError if a lock is already known lost."""
        for lock in self.locks:
            if lock.lost.is_set():
                error = getattr(lock, "lost_error", None)
                raise error() if error is not None else LockLostError(f"lock lost: the {lock.name} lock is no longer ours")

    def check(self) -> None:
        """Confirm every lock in Redis now (and extend it); LockLostError when one is gone."""
        self.raise_if_lost()
        held = [lock for lock in self.locks if isinstance(lock, RedisLock)]
        if held:
            confirm_all(held)


_FENCE: ContextVar[WriteFence | None] = ContextVar("safetyamp_sync_write_fence", default=None)
"""The fence of the write in progress. A context variable, not a parameter, because the
check belongs right before the request is sent (after rate-limit waits and between
retries), deep inside adapters whose signatures know nothing of locks; worker threads
do not inherit it, so ``sync.base.apply_in_order`` activates it in each of them."""


@contextlib.contextmanager
def fenced(fence: WriteFence | None) -> Iterator[None]:
    """Within this block (this thread), ``check_write`` checks ``fence``."""
    token = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(token)


def check_write() -> None:
    """Raise LockLostError unless the locks of the write about to be sent are still this
    runner's. Called by ``services.http.HttpClient`` immediately before every write
    request; a no-op outside ``fenced`` (dry runs, tests, tools)."""
    fence = _FENCE.get()
    if fence is not None:
        fence.check()


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
    *,
    settle_seconds: float = 0.0,
    stop: threading.Event | None = None,
) -> RedisLock | FileLock:
    """The lock for ``name``: a RedisLock when Redis answers a PING; otherwise a
    FatalError when required (LOCK_REQUIRED, or ``required`` if given), else a
    FileLock in ``fallback_dir`` (default ``OUTPUT_DIR/locks``, or the temp folder)
    with a warning. ``settings_or_params`` is a Settings or a LockParams;
    ``settle_seconds`` and ``stop`` go to the RedisLock."""
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
            return RedisLock(
                redis_client,
                name,
                prefix=params.prefix,
                ttl_seconds=params.ttl_seconds,
                where=where,
                settle_seconds=settle_seconds,
                stop=stop,
            )
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
