"""Fault injection for the emulators: latency, rate limits, throttling, errors, dropped links.

Why: the daemon's retry policy, circuit breakers and "never a duplicate" rule only matter
when the outside systems misbehave, and the real ones do (Samsara and Graph document 429
with ``Retry-After``; gateways in front of SafetyAmp answer 502 HTML pages; connections
drop). The sandbox therefore misbehaves on request, repeatably.

Configuration is the JSON in ``SANDBOX_FAULTS``, keyed by service::

    {"safetyamp": {"error_rate": 0.2, "rate_limit_per_minute": 60, "latency_ms": 100,
                   "reset_rate": 0.05, "throttle_rate": 0.1, "lost_response_rate": 0.0}}

* ``latency_ms``: added to every request; 5 % of requests take ten times as long (spikes).
* ``rate_limit_per_minute`` (+ optional ``burst``, default one second's worth): a token
  bucket; an empty bucket answers 429 with ``Retry-After`` = time until the next token.
* ``throttle_rate``: random 429s regardless of the bucket (server-side throttling).
* ``error_rate``: random 500/502/503 with a vendor-like body.
* ``reset_rate``: the connection is dropped before the request is handled (nothing written).
* ``lost_response_rate``: writes only: the write is committed, then the connection is
  dropped, so the client cannot know it succeeded.
* ``slow_write_rate`` (+ ``slow_write_ms``, default 3000): writes only: the server takes
  that long before it applies and answers the write, longer than a client's timeout: the
  client gives up while the write is still on its way in (a busy target, a gateway that
  keeps the upstream request running after it timed the client out).

Randomness comes from one ``random.Random`` per service seeded from ``SANDBOX_SEED`` (or
the seed given to ``start_sandbox``), guarded by a lock, so a sequential client sees the
same faults on every run.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

SERVICES = ("safetyamp", "samsara", "graph", "oneroster", "scim")

_RATE_KEYS = ("error_rate", "throttle_rate", "reset_rate", "lost_response_rate", "slow_write_rate")
_KEYS = (*_RATE_KEYS, "latency_ms", "rate_limit_per_minute", "burst", "slow_write_ms")

SPIKE_PROBABILITY = 0.05
SPIKE_FACTOR = 10


def parse_faults(raw: str | None) -> dict[str, dict[str, float]]:
    """Parse and validate ``SANDBOX_FAULTS``; empty or missing means no faults.

    Raises ValueError naming the problem (bad JSON, unknown service or key, bad value),
    because a typo in a fault setting must not silently run a fault-free test.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"SANDBOX_FAULTS is not valid JSON: {exc}") from exc
    return validate_faults(parsed)


def validate_faults(faults: Any) -> dict[str, dict[str, float]]:
    """Check a faults mapping (from JSON or from Python) and return a clean copy."""
    if not isinstance(faults, Mapping):
        raise ValueError("SANDBOX_FAULTS must be a JSON object keyed by service")
    clean: dict[str, dict[str, float]] = {}
    for service, settings in faults.items():
        if service not in SERVICES:
            raise ValueError(f"SANDBOX_FAULTS: unknown service {service!r} (known: {', '.join(SERVICES)})")
        if not isinstance(settings, Mapping):
            raise ValueError(f"SANDBOX_FAULTS[{service!r}] must be an object")
        out: dict[str, float] = {}
        for key, value in settings.items():
            where = f"SANDBOX_FAULTS[{service!r}][{key!r}]"
            if key not in _KEYS:
                raise ValueError(f"{where}: unknown key (known: {', '.join(_KEYS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where} must be a number, got {value!r}")
            number = float(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
            if key in _RATE_KEYS and number > 1:
                raise ValueError(f"{where} is a probability and must be <= 1, got {value!r}")
            if key in ("rate_limit_per_minute", "burst") and number <= 0:
                raise ValueError(f"{where} must be > 0 (omit it for no limit), got {value!r}")
            out[key] = number
        clean[service] = out
    return clean


class FaultInjector:
    """The fault decisions for one service; thread-safe, seeded.

    ``fractional_retry_after`` selects Samsara's style (``Retry-After: 0.40235``) over
    the integer seconds Graph and (by assumption) SafetyAmp send.
    """

    def __init__(
        self,
        service: str,
        settings: Mapping[str, float] | None,
        seed: int | str | None,
        *,
        fractional_retry_after: bool = False,
    ) -> None:
        cfg = dict(settings or {})
        self.service = service
        self.error_rate = cfg.get("error_rate", 0.0)
        self.throttle_rate = cfg.get("throttle_rate", 0.0)
        self.reset_rate = cfg.get("reset_rate", 0.0)
        self.lost_response_rate = cfg.get("lost_response_rate", 0.0)
        self.slow_write_rate = cfg.get("slow_write_rate", 0.0)
        self.slow_write_s = cfg.get("slow_write_ms", 3000.0) / 1000.0
        self.latency_s = cfg.get("latency_ms", 0.0) / 1000.0
        per_minute = cfg.get("rate_limit_per_minute")
        self.rate_per_s = per_minute / 60.0 if per_minute else None
        self.capacity = cfg.get("burst") or (max(1.0, math.floor(self.rate_per_s)) if self.rate_per_s else 0.0)
        self.fractional = fractional_retry_after
        self._rng = random.Random(f"{seed}:{service}:faults")
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = time.monotonic()

    @property
    def active(self) -> bool:
        """True when any fault is configured (lets the hot path skip the lock)."""
        return bool(
            self.error_rate
            or self.throttle_rate
            or self.reset_rate
            or self.lost_response_rate
            or self.slow_write_rate
            or self.latency_s
            or self.rate_per_s
        )

    def roll(self, probability: float) -> bool:
        """One seeded Bernoulli draw."""
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def latency(self) -> float:
        """Seconds to sleep before answering (with occasional x10 spikes)."""
        if not self.latency_s:
            return 0.0
        with self._lock:
            spike = self._rng.random() < SPIKE_PROBABILITY
        return self.latency_s * (SPIKE_FACTOR if spike else 1)

    def take_token(self) -> float | None:
        """Consume a rate-limit token: None if allowed, else seconds until one is free."""
        if self.rate_per_s is None:
            return None
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate_per_s)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate_per_s

    def random_retry_after(self) -> float:
        """A plausible server-chosen wait for a random throttle."""
        with self._lock:
            if self.fractional:
                return self._rng.uniform(0.05, 1.0)
            return float(self._rng.randint(1, 2))

    def error_status(self) -> int:
        """Which 5xx a random server error uses."""
        with self._lock:
            return self._rng.choice((500, 502, 503))

    def format_retry_after(self, seconds: float) -> str:
        """``Retry-After`` header value in this vendor's style."""
        if self.fractional:
            return f"{max(seconds, 0.00001):.5f}"
        return str(max(1, math.ceil(seconds)))

    def check(self) -> tuple[str, float] | None:
        """Decide the pre-handling fault for one request.

        Returns None (handle normally), ``("rate_limited", retry_after)``,
        ``("reset", 0)``, ``("throttled", retry_after)`` or ``("error", status)``.
        The rate limit is checked first: a refused request costs the server nothing.
        """
        wait = self.take_token()
        if wait is not None:
            return ("rate_limited", wait)
        if self.roll(self.reset_rate):
            return ("reset", 0.0)
        if self.roll(self.throttle_rate):
            return ("throttled", self.random_retry_after())
        if self.roll(self.error_rate):
            return ("error", float(self.error_status()))
        return None
