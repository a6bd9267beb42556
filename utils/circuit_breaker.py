"""One circuit breaker per outside service, shared by every replica through Redis.

Why: when SafetyAmp (or Samsara, Graph...) is down, every replica and the CronJob
should stop hammering it at once, and one probe, not every caller, should test whether
it is back (probe leasing avoids every caller passing in half-open,
micronaut-core#11485).

Why hand-written rather than pybreaker's ``CircuitRedisStorage``:

* creating a breaker instance writes the initial state to the shared storage, so every
  pod start or CronJob run resets a breaker other replicas had opened
  (danielfm/pybreaker#26), and a replica seeing "open" in Redis stamps its own
  ``opened_at`` (#24): the recovery timeout never ends while traffic continues;
* breakers share one Redis namespace unless each is given its own, so one service's
  failures trip all of them (#88);
* half-open closes after a single success; a success threshold is still an open
  request (#96);
* state, counter and ``opened_at`` are separate keys updated by separate commands, with
  no lock or script between replicas (#44); and half-open admits every caller, not
  one probe.

What is left is small: three short Lua scripts (each transition is one atomic
round trip, no WATCH retry storms between workers) and a local fallback.

States and transitions (``closed`` 0, ``half_open`` 1, ``open`` 2 in
``circuit_breaker_state``)::

    closed     --failure #failure_threshold in a row-->  open (opened_at = now)
    closed     --success-->                              closed, failure count reset
    open       --allow_request after recovery_seconds--> half_open
    half_open  --allow_request-->  admitted only if it wins the probe lease
                                   (SET NX PX lease_seconds); everyone else refused
    half_open  --probe success-->  lease released (the next probe may go);
                                   closed after success_threshold successes
    half_open  --probe failure-->  open again (opened_at = now)

A caller is a thread (HttpClient calls ``allow_request`` and then ``record_*`` on the
same thread), identified towards each breaker by a random token. Only the thread
holding the lease moves a half-open breaker: a late answer to a request sent before
the breaker opened proves nothing about now. The lease holder may call again (its
retry after a 429 stays the probe); a probe whose caller never reports (a 429 it gave
up on, a crash) frees the lease after ``lease_seconds``, measured by Redis.

429 never trips it: ``services.http.HttpClient`` reports neither success nor failure
for a throttled answer (``_feed_breaker``), so rate limiting cannot open a breaker.
4xx answers count as successes (the service is up and answering); 5xx, timeouts and
dropped connections count as failures.

A counter shared by all replicas also answers Polly's warning that one bad node can
poison the shared state (App-vNext/Polly#259): failures must be *consecutive* across
the fleet, so a healthy replica's successes reset the count a sick replica builds up.

Redis layout (hash tags keep both keys of a service on one cluster slot)::

    {prefix}breaker:{<service>}        hash: state, failures, successes, opened_at
    {prefix}breaker:{<service>}:probe  string: the probe holder's token, PX lease

Times are the callers' wall clocks (``clock``, injectable): replicas' clocks agree to
well under ``recovery_seconds`` (NTP), which is all that is needed.

Redis unreachable: the breaker logs one warning, keeps working on in-process state
(seeded from the last state it saw in Redis, so an open breaker stays open), tries
Redis again at most every ``redis_retry_seconds`` and logs once when it is back, where
the shared state is authoritative again. A request never fails because Redis is down.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from utils.metrics import BREAKER_STATE_VALUES, Metrics
from utils.timefmt import iso_z

__all__ = ["SERVICES", "STATES", "CircuitBreaker", "build_breakers"]

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("safetyamp", "samsara", "graph", "oneroster", "scim")
"""Outside services that get a breaker (Viewpoint SQL does not: a sync without its
source simply fails)."""
STATES: tuple[str, ...] = ("closed", "half_open", "open")
KEY_TTL_SECONDS = 7 * 24 * 3600
"""A breaker hash nobody touched for a week is dropped (a renamed prefix, a retired
service); an absent hash reads as closed."""

_OUTAGE = (redis.exceptions.RedisError, OSError)

# Each script returns {state, allowed, failures, successes, opened_at}.
_VIEW = """
local function view(allowed)
  local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'successes', 'opened_at')
  return {h[1] or 'closed', allowed, h[2] or '0', h[3] or '0', h[4] or ''}
end
"""

_ALLOW = (
    _VIEW
    + """
-- ARGV: now, recovery_seconds, lease_ms, token, key_ttl
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return view(1) end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0') or 0
  if tonumber(ARGV[1]) - opened < tonumber(ARGV[2]) then return view(0) end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'successes', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then return view(1) end
if redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return view(1)
end
return view(0)
"""
)

_FAILURE = (
    _VIEW
    + """
-- ARGV: now, failure_threshold, token, key_ttl
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if failures >= tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'successes', 0)
  end
  redis.call('EXPIRE', KEYS[1], ARGV[4])
elseif state == 'half_open' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'successes', 0)
  redis.call('DEL', KEYS[2])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return view(0)
"""
)

_SUCCESS = (
    _VIEW
    + """
-- ARGV: success_threshold, token, key_ttl
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  local failures = redis.call('HGET', KEYS[1], 'failures')
  if failures and failures ~= '0' then
    redis.call('HSET', KEYS[1], 'failures', 0)
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
elseif state == 'half_open' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
  local successes = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if successes >= tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'successes', 0, 'opened_at', '')
  end
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return view(0)
"""
)


@dataclass
class _View:
    """One observation of a breaker's state."""

    state: str = "closed"
    allowed: bool = True
    failures: int = 0
    successes: int = 0
    opened_at: float | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _parse_view(raw: Any) -> _View:
    state, allowed, failures, successes, opened_at = (_text(v) for v in raw)
    return _View(
        state=state if state in STATES else "closed",
        allowed=allowed == "1",
        failures=int(float(failures or 0)),
        successes=int(float(successes or 0)),
        opened_at=float(opened_at) if opened_at else None,
    )


class _LocalState:
    """The same state machine in process memory: the fallback while Redis is down, and
    the whole breaker when no Redis client is given. The probe lease is a deadline."""

    def __init__(self) -> None:
        self.view = _View()
        self.lease_token: str | None = None
        self.lease_until = 0.0

    def seed(self, view: _View) -> None:
        """Start from what Redis last said: an open breaker stays open."""
        state = "open" if view.state in ("open", "half_open") else "closed"
        self.view = _View(state=state, failures=view.failures, opened_at=view.opened_at)
        self.lease_token = None

    def allow(self, now: float, recovery: float, lease: float, token: str) -> _View:
        v = self.view
        if v.state == "open":
            if now - (v.opened_at or 0.0) < recovery:
                return self._out(False)
            v.state, v.successes = "half_open", 0
        if v.state == "half_open":
            if self.lease_token not in (None, token) and now < self.lease_until:
                return self._out(False)
            self.lease_token, self.lease_until = token, now + lease
        return self._out(True)

    def failure(self, now: float, threshold: int, token: str) -> _View:
        v = self.view
        if v.state == "closed":
            v.failures += 1
            if v.failures >= threshold:
                v.state, v.opened_at, v.successes = "open", now, 0
        elif v.state == "half_open" and self._holds(token, now):
            v.state, v.opened_at, v.successes = "open", now, 0
            self.lease_token = None
        return self._out(False)

    def success(self, now: float, threshold: int, token: str) -> _View:
        v = self.view
        if v.state == "closed":
            v.failures = 0
        elif v.state == "half_open" and self._holds(token, now):
            self.lease_token = None
            v.successes += 1
            if v.successes >= threshold:
                self.view = _View()
        return self._out(False)

    def _holds(self, token: str, now: float) -> bool:
        return self.lease_token == token and now < self.lease_until

    def _out(self, allowed: bool) -> _View:
        v = self.view
        return _View(v.state, allowed, v.failures, v.successes, v.opened_at)


class CircuitBreaker:
    """A breaker for one outside service (implements ``services.http.Breaker``).

    ``redis_client=None`` keeps the state in this process only. Every method is
    thread-safe and never raises because of Redis. ``clock`` returns Unix seconds
    (wall time, compared across replicas); tests inject a fake one.

    The constructor sends nothing to Redis (a new instance must neither reset nor
    guess the shared state), so ``circuit_breaker_state`` appears for a shared breaker
    at its first observation: any call, or ``state``/``snapshot()`` (e.g. /health).
    """

    def __init__(
        self,
        service: str,
        redis_client: redis.Redis | None,
        *,
        prefix: str = "safetyamp-sync:",
        failure_threshold: int = 5,
        recovery_seconds: float = 60.0,
        success_threshold: int = 2,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        redis_retry_seconds: float = 15.0,
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ValueError("failure_threshold and success_threshold must be >= 1")
        if recovery_seconds <= 0 or lease_seconds <= 0:
            raise ValueError("recovery_seconds and lease_seconds must be > 0")
        self.service = service
        self.prefix = prefix
        self.failure_threshold = int(failure_threshold)
        self.recovery_seconds = float(recovery_seconds)
        self.success_threshold = int(success_threshold)
        self.lease_seconds = float(lease_seconds)
        self.redis_retry_seconds = float(redis_retry_seconds)
        self._redis = redis_client
        self._clock = clock
        self._metrics = metrics
        self._lock = threading.RLock()
        self._local = _LocalState()
        self._tokens = threading.local()
        self._last = _View()
        self._degraded_since: float | None = None
        self._next_redis_try = 0.0
        self.key = f"{prefix}breaker:{{{service}}}"
        self.lease_key = f"{self.key}:probe"
        if redis_client is not None:  # register_script sends nothing until first use
            self._allow_script = redis_client.register_script(_ALLOW)
            self._failure_script = redis_client.register_script(_FAILURE)
            self._success_script = redis_client.register_script(_SUCCESS)
        else:
            self._publish(self._last)  # in-process state is known: closed

    # --- the Breaker protocol --------------------------------------------------------
    def allow_request(self) -> bool:
        """True if a request may be sent now (closed, or this caller won the probe lease)."""
        token = self._token()
        now = self._clock()
        lease_ms = max(1, int(self.lease_seconds * 1000))
        view = self._run(
            lambda: self._allow_script(
                keys=[self.key, self.lease_key],
                args=[repr(now), repr(self.recovery_seconds), lease_ms, token, KEY_TTL_SECONDS],
            ),
            lambda: self._local.allow(now, self.recovery_seconds, self.lease_seconds, token),
        )
        return view.allowed

    def record_success(self) -> None:
        """The service answered (2xx, or a 4xx: it is up)."""
        token = self._token()
        now = self._clock()
        self._run(
            lambda: self._success_script(keys=[self.key, self.lease_key], args=[self.success_threshold, token, KEY_TTL_SECONDS]),
            lambda: self._local.success(now, self.success_threshold, token),
        )

    def record_failure(self) -> None:
        """The service failed (5xx, timeout, dropped connection). Never for a 429."""
        token = self._token()
        now = self._clock()
        self._run(
            lambda: self._failure_script(
                keys=[self.key, self.lease_key],
                args=[repr(now), self.failure_threshold, token, KEY_TTL_SECONDS],
            ),
            lambda: self._local.failure(now, self.failure_threshold, token),
        )

    # --- reading -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``closed``, ``half_open`` or ``open``, as stored (one Redis read)."""
        return self._read().state

    @property
    def degraded(self) -> bool:
        """True while Redis is configured but unreachable (local state in use)."""
        return self._degraded_since is not None

    def snapshot(self) -> dict[str, Any]:
        """For /health: state, consecutive failures, when it opened (UTC ISO 8601 or
        None), whether it runs on local state because Redis is down. No secrets."""
        view = self._read()
        return {
            "service": self.service,
            "state": view.state,
            "failures": view.failures,
            "successes": view.successes,
            "opened_at": iso_z(view.opened_at) if view.opened_at is not None else None,
            "degraded": self.degraded,
            "backend": "redis" if self._redis is not None and not self.degraded else "local",
        }

    def _read(self) -> _View:
        def from_redis() -> Any:
            assert self._redis is not None
            raw = self._redis.hmget(self.key, ["state", "failures", "successes", "opened_at"])
            return [raw[0] or "closed", "0", raw[1] or "0", raw[2] or "0", raw[3] or ""]

        return self._run(from_redis, lambda: self._local._out(False))

    # --- machinery ---------------------------------------------------------------------
    def _token(self) -> str:
        """This thread's identity towards this breaker (the probe lease's owner)."""
        token: str | None = getattr(self._tokens, "token", None)
        if token is None:
            token = self._tokens.token = uuid.uuid4().hex
        return token

    def _run(self, on_redis: Callable[[], Any], on_local: Callable[[], _View]) -> _View:
        view: _View | None = None
        if self._redis is not None and self._redis_due():
            try:
                view = _parse_view(on_redis())
            except _OUTAGE as exc:
                self._degrade(exc)
            else:
                self._recovered()
        if view is None:
            with self._lock:
                view = on_local()
        self._observe(view)
        return view

    def _redis_due(self) -> bool:
        with self._lock:
            return self._degraded_since is None or self._clock() >= self._next_redis_try

    def _degrade(self, exc: BaseException) -> None:
        with self._lock:
            now = self._clock()
            self._next_redis_try = now + self.redis_retry_seconds
            if self._degraded_since is not None:
                return
            self._degraded_since = now
            self._local.seed(self._last)
        log.warning(
            "circuit breaker %s: Redis unavailable (%s: %s); using this process's own state until it answers",
            self.service,
            type(exc).__name__,
            exc,
            extra={"event": "breaker_degraded", "service": self.service},
        )

    def _recovered(self) -> None:
        if self._degraded_since is None:
            return
        with self._lock:
            since, self._degraded_since = self._degraded_since, None
            if since is None:
                return
        log.info(
            "circuit breaker %s: Redis answers again after %.0f s; shared state in use",
            self.service,
            self._clock() - since,
            extra={"event": "breaker_recovered", "service": self.service},
        )

    def _observe(self, view: _View) -> None:
        with self._lock:
            previous, self._last = self._last.state, view
        if view.state != previous:
            level = logging.WARNING if view.state == "open" else logging.INFO
            log.log(
                level,
                "circuit breaker %s: %s -> %s",
                self.service,
                previous,
                view.state,
                extra={"event": "breaker_state", "service": self.service},
            )
        self._publish(view)

    def _publish(self, view: _View) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state.labels(self.service).set(BREAKER_STATE_VALUES[view.state])


class BreakerSettings(Protocol):
    """What ``build_breakers`` reads from ``config.settings.Settings`` (utils does not
    import config: it sits below it)."""

    @property
    def redis_prefix(self) -> str: ...
    @property
    def breaker_failure_threshold(self) -> int: ...
    @property
    def breaker_recovery_seconds(self) -> float: ...
    @property
    def breaker_success_threshold(self) -> int: ...
    @property
    def breaker_probe_lease_seconds(self) -> float: ...


def build_breakers(
    settings: BreakerSettings, redis_client: redis.Redis | None, metrics: Metrics | None
) -> dict[str, CircuitBreaker]:
    """One breaker per outside service (SERVICES), configured from Settings
    (BREAKER_*, REDIS_PREFIX). No connection is made here."""
    return {
        service: CircuitBreaker(
            service,
            redis_client,
            prefix=settings.redis_prefix,
            failure_threshold=settings.breaker_failure_threshold,
            recovery_seconds=settings.breaker_recovery_seconds,
            success_threshold=settings.breaker_success_threshold,
            lease_seconds=settings.breaker_probe_lease_seconds,
            metrics=metrics,
        )
        for service in SERVICES
    }
