"""The one way product code makes a Redis client (breakers, locks, quarantine, operator
state, the failed-record tracker and the roster cursor all use it).

Redis is bookkeeping here: a client must never stall a run or a request, so timeouts are
short and a failed command is retried once (a pooled connection dropped by a Redis
restart), not redis-py's default ten times. No connection is made until the first
command."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

__all__ = ["make_redis"]


def make_redis(url: Any, *, socket_timeout: float = 2.0) -> redis.Redis:
    """A lazy Redis client that answers text (``decode_responses``) and times out in
    ``socket_timeout`` seconds. ``url`` may be a str or a SecretStr (it may carry a
    password)."""
    text = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return redis.Redis.from_url(
        text,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        health_check_interval=30,
        decode_responses=True,
    )
