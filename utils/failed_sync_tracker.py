"""Failed-record tracker: remembers records a target refused, and when to try them again.

Implements ``sync.ports.FailedRecords`` (plus ``get``/``list``/``retry``/``dismiss`` for
the ``failed`` operator commands and the console). A record that failed is skipped on
later runs until its retry is due, following the schedule of Microsoft Entra's
provisioning engine (the best-known provisioning engine; docs/reliability.md "The per-
record retry schedule"): retries 2, 6, 12, 24, 48, 96 and 168 hours after successive
failures; after the eighth failure the record is *quarantined*: held until its inputs
change or an operator runs ``failed retry``.

A record whose inputs changed (a different ``fingerprint``, the hash of the values the
sync would send) is retried at once, whatever its schedule: someone probably fixed it.

Only record-level failures (``utils.errors.RecordError``: validation, 422, 409) belong
here. Throttling (429, ``RateLimitedError``) and other retriable errors never reach the
tracker: they are the HTTP retry policy's business and say nothing about the record.
The caller passes an already-scrubbed ``reason``; it is scrubbed once more here and cut
to MAX_REASON_CHARS, and nothing else about the record (no payload) is stored.

Storage::

    FailedSyncTracker   Redis: one hash per sync, ``{prefix}failed:{sync}``, field = record
                        key, value = JSON entry; beside it two sorted sets of the same
                        keys, ``{prefix}failed-due:{sync}`` (score: when the record is
                        due, see ``due_score``) and ``{prefix}failed-seen:{sync}`` (score:
                        its last failure), written in the same transaction, so that a
                        count is HLEN, expiry finds its victims without reading the hash
                        and a page of the console's queue decodes only the entries it
                        shows (``page``). The three keys' TTL is refreshed on every write.
    InMemoryTracker     a dict, same behaviour (tests; fallback while Redis is down)
    ResilientTracker    wraps the Redis tracker: when Redis stops answering it logs one
                        warning, serves from an InMemoryTracker, probes Redis every
                        ``probe_interval`` and, once Redis answers, writes what happened
                        meanwhile back and returns to Redis. A Redis outage therefore never
                        fails a run; at worst some records are retried early.

Entries also expire one by one ``retention`` (30 days) after their last failure, without
relying on Redis 7.4 hash-field TTLs: a record that left the source stops being counted,
and a quarantined record gets a fresh attempt about monthly, so a fix made on the target
side (the duplicate e-mail was freed) is eventually picked up without an operator.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis

from utils.redis_client import make_redis
from utils.scrub import scrub
from utils.timefmt import iso_z

__all__ = [
    "DEFAULT_RETENTION",
    "DEFAULT_SCHEDULE",
    "STATUSES",
    "FailedSyncTracker",
    "InMemoryTracker",
    "ResilientTracker",
    "RunTracker",
    "TrackerBase",
    "build_tracker",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Entry = dict[str, Any]

DEFAULT_SCHEDULE: tuple[timedelta, ...] = tuple(timedelta(hours=h) for h in (2, 6, 12, 24, 48, 96, 168))
"""Wait after the 1st, 2nd, ... 7th failure with the same inputs; the 8th quarantines."""
DEFAULT_RETENTION = timedelta(days=30)
MAX_REASON_CHARS = 2000
"""A reason longer than this (an HTML error page) is cut: it is shown in ``failed list``
and kept in Redis for weeks."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None


# --------------------------------------------------------------------------- the rules
# Pure functions shared by every backend: the schedule lives here and only here.


def failed_entry(
    previous: Entry | None,
    *,
    fingerprint: str,
    reason: str,
    fields: Iterable[str],
    now: datetime,
    schedule: tuple[timedelta, ...],
) -> Entry:
    """The entry after one more failure. Same inputs as last time: one more attempt on
    the schedule (quarantined past its end); different inputs: attempt 1 again."""
    same = previous is not None and previous.get("fingerprint") == fingerprint
    attempts = int(previous.get("attempts", 0)) + 1 if same and previous else 1
    first = previous["first_failed"] if same and previous else iso_z(now)
    quarantined = attempts > len(schedule)
    text = scrub(str(reason))
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS] + " ...[cut]"
    return {
        "fingerprint": fingerprint,
        "reason": text,
        "fields": sorted({str(f) for f in fields}),
        "attempts": attempts,
        "first_failed": first,
        "last_failed": iso_z(now),
        "next_retry": None if quarantined else iso_z(now + schedule[attempts - 1]),
        "quarantined": quarantined,
    }


def skip_entry(entry: Entry | None, fingerprint: str, now: datetime) -> bool:
    """True while ``entry`` failed with these same inputs and is quarantined or not due."""
    if entry is None or entry.get("fingerprint") != fingerprint:
        return False
    if entry.get("quarantined"):
        return True
    due = _parse(entry.get("next_retry"))
    return due is not None and now < due


def expired(entry: Entry, now: datetime, retention: timedelta) -> bool:
    last = _parse(entry.get("last_failed"))
    return last is None or now - last >= retention


def status_of(entry: Entry, now: datetime) -> str:
    """``quarantined``, ``waiting`` (retry not due yet) or ``due``."""
    if entry.get("quarantined"):
        return "quarantined"
    due = _parse(entry.get("next_retry"))
    return "waiting" if due is not None and now < due else "due"


STATUSES = ("due", "waiting", "quarantined")


def due_score(entry: Entry) -> float:
    """Where an entry stands in the queue: 0 for due at once (released by an operator),
    the time of its next retry, +inf once quarantined. ``status_of`` in one number: due
    when the score is not after now, waiting while it is, quarantined at infinity."""
    if entry.get("quarantined"):
        return float("inf")
    due = _parse(entry.get("next_retry"))
    return due.timestamp() if due is not None else 0.0


def seen_score(entry: Entry | None) -> float:
    """The last failure in Unix seconds (-inf when unreadable: such an entry expires)."""
    try:
        last = _parse((entry or {}).get("last_failed"))
    except (TypeError, ValueError):
        return float("-inf")
    return last.timestamp() if last is not None else float("-inf")


def released(entry: Entry) -> Entry:
    """An entry an operator asked to retry: due now, attempts kept (so it goes straight
    back to quarantine if it fails again)."""
    return {**entry, "next_retry": None, "quarantined": False}


# --------------------------------------------------------------------------- backends


class TrackerBase:
    """The tracker's behaviour over five storage primitives; backends supply those.

    A base class rather than a Protocol because it carries the real logic: both
    backends must agree on every rule, and the one test suite runs over both.
    """

    def __init__(
        self,
        *,
        clock: Clock = _utc_now,
        schedule: Iterable[timedelta] = DEFAULT_SCHEDULE,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        self._clock = clock
        self.schedule = tuple(schedule)
        self.retention = retention
        if self.schedule and retention <= max(self.schedule):
            raise ValueError("retention must be longer than the longest retry wait, or entries expire while waiting")

    # --- storage primitives ------------------------------------------------------
    def _load(self, sync: str, key: str) -> Entry | None:
        raise NotImplementedError

    def _load_all(self, sync: str) -> dict[str, Entry]:
        raise NotImplementedError

    def _update(self, sync: str, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        """Atomically replace the entry with ``change(current)`` (None deletes it)."""
        raise NotImplementedError

    def _delete(self, sync: str, keys: Iterable[str]) -> None:
        raise NotImplementedError

    def _syncs(self) -> list[str]:
        raise NotImplementedError

    def ping(self) -> None:
        """Raise if the storage does not answer."""

    # --- behaviour ---------------------------------------------------------------
    def now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise ValueError("tracker clock must return timezone-aware datetimes")
        return moment.astimezone(UTC)

    def _live(self, entry: Entry | None, now: datetime) -> Entry | None:
        return None if entry is None or expired(entry, now, self.retention) else entry

    def should_skip(self, sync: str, key: str, fingerprint: str) -> bool:
        """True while the record failed with these same inputs and is quarantined or
        its next retry is not due yet."""
        now = self.now()
        return skip_entry(self._live(self._load(sync, str(key)), now), fingerprint, now)

    def record_failure(self, sync: str, key: str, fingerprint: str, reason: str, fields: Iterable[str]) -> None:
        """Remember a record-level failure and schedule the next attempt."""
        now = self.now()
        fields = list(fields)

        def change(current: Entry | None) -> Entry:
            return failed_entry(
                self._live(current, now),
                fingerprint=fingerprint,
                reason=reason,
                fields=fields,
                now=now,
                schedule=self.schedule,
            )

        self._update(sync, str(key), change)

    def record_success(self, sync: str, key: str) -> None:
        """Forget a record once it went through."""
        self._delete(sync, [str(key)])

    def get(self, sync: str, key: str) -> Entry | None:
        """The entry of one record (with ``sync``, ``key`` and ``status``), or None."""
        now = self.now()
        entry = self._live(self._load(sync, str(key)), now)
        return None if entry is None else self._present(sync, str(key), entry, now)

    def count(self, sync: str) -> int:
        """Records currently tracked as failing (waiting, due or quarantined)."""
        return len(self._entries(sync, self.now()))

    def page(
        self, sync: str | None = None, status: str | None = None, start: int = 0, count: int = 50
    ) -> tuple[list[Entry], int]:
        """One page of the queue for the console, and how many records match in all:
        the records of ``sync`` (every sync, by name, when None) with ``status`` (any when
        None), each sync's due first, then waiting by next retry, quarantined last (ties
        by key); ``count`` of them from ``start``. Backends that can (Redis) read only the
        entries of the page."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        now = self.now()
        rows: list[Entry] = []
        for name in [sync] if sync is not None else sorted(self._syncs()):
            entries = sorted(self._entries(name, now).items(), key=lambda item: (due_score(item[1]), item[0]))
            for key, entry in entries:
                if status is None or status_of(entry, now) == status:
                    rows.append(self._present(name, key, entry, now))
        start = max(0, int(start))
        return rows[start : start + max(0, int(count))], len(rows)

    def list(self, sync: str | None = None) -> list[Entry]:
        """Every tracked record, for ``failed list``: sorted by sync then key."""
        now = self.now()
        rows: list[Entry] = []
        for name in [sync] if sync is not None else sorted(self._syncs()):
            for key, entry in sorted(self._entries(name, now).items()):
                rows.append(self._present(name, key, entry, now))
        return rows

    def retry(self, sync: str | None = None, key: str | None = None) -> int:
        """Make matching records due now (the next run tries them); attempts are kept,
        so a record that fails again goes straight back where it was. Returns how many
        records were released."""
        now = self.now()
        hit = {"released": False}  # set, not incremented: Redis may re-run a transaction

        def release(current: Entry | None) -> Entry | None:
            live = self._live(current, now)
            hit["released"] = live is not None
            return current if live is None else released(live)

        count = 0
        for name in [sync] if sync is not None else sorted(self._syncs()):
            keys = [str(key)] if key is not None else sorted(self._entries(name, now))
            for one in keys:
                if self._live(self._load(name, one), now) is None:
                    continue
                hit["released"] = False
                self._update(name, one, release)
                count += hit["released"]
        return count

    def dismiss(self, sync: str, key: str) -> bool:
        """Forget one record (an operator's decision: the console's or ``failed dismiss``;
        the caller audits it). If the record still fails, its next run tracks it again
        from the first attempt. Returns whether it was tracked."""
        live = self._live(self._load(sync, str(key)), self.now()) is not None
        self._delete(sync, [str(key)])
        return live

    def put_entry(self, sync: str, key: str, entry: Mapping[str, Any]) -> None:
        """Store an entry as it is (used to copy state between backends)."""
        self._update(sync, str(key), lambda _: dict(entry))

    def _entries(self, sync: str, now: datetime) -> dict[str, Entry]:
        entries = self._load_all(sync)
        stale = [key for key, entry in entries.items() if expired(entry, now, self.retention)]
        if stale:
            self._delete(sync, stale)  # housekeeping: abandoned records go away
        return {k: v for k, v in entries.items() if k not in stale}

    @staticmethod
    def _present(sync: str, key: str, entry: Entry, now: datetime) -> Entry:
        return {"sync": sync, "key": key, **entry, "status": status_of(entry, now)}


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _loads(raw: Any) -> Entry | None:
    if raw is None:
        return None
    try:
        entry = json.loads(_decode(raw))
    except ValueError:
        return None  # unreadable entry: treat as untracked (the record is simply retried)
    return entry if isinstance(entry, dict) else None


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class FailedSyncTracker(TrackerBase):
    """The tracker on Redis. Read-modify-write uses WATCH/MULTI, so two workers failing
    the same record never lose an attempt. Redis errors propagate (wrap it in
    :class:`ResilientTracker` to survive an outage)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        prefix: str = "safetyamp-sync:",
        clock: Clock = _utc_now,
        schedule: Iterable[timedelta] = DEFAULT_SCHEDULE,
        *,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        super().__init__(clock=clock, schedule=schedule, retention=retention)
        self._r = redis_client
        self.prefix = prefix

    def _hash(self, sync: str) -> str:
        return f"{self.prefix}failed:{sync}"

    def _due_index(self, sync: str) -> str:
        return f"{self.prefix}failed-due:{sync}"

    def _seen_index(self, sync: str) -> str:
        return f"{self.prefix}failed-seen:{sync}"

    @property
    def _ttl(self) -> int:
        return max(1, int(self.retention.total_seconds()))

    def ping(self) -> None:
        self._r.ping()

    def _load(self, sync: str, key: str) -> Entry | None:
        return _loads(self._r.hget(self._hash(sync), key))

    def _load_all(self, sync: str) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for field, raw in self._r.hgetall(self._hash(sync)).items():
            entry = _loads(raw)
            if entry is not None:
                out[_decode(field)] = entry
        return out

    def _update(self, sync: str, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        name = self._hash(sync)

        due, seen = self._due_index(sync), self._seen_index(sync)

        def attempt(pipe: Any) -> Entry | None:
            new = change(_loads(pipe.hget(name, key)))
            pipe.multi()
            if new is None:
                pipe.hdel(name, key)
                pipe.zrem(due, key)
                pipe.zrem(seen, key)
            else:
                pipe.hset(name, key, json.dumps(new, sort_keys=True))
                pipe.zadd(due, {key: due_score(new)})
                pipe.zadd(seen, {key: seen_score(new)})
                for one in (name, due, seen):
                    pipe.expire(one, self._ttl)
            return new

        # redis-py's annotations say the callable returns None; value_from_callable passes its value through
        result = self._r.transaction(attempt, name, value_from_callable=True)  # type: ignore[arg-type]
        return cast(Entry | None, result)

    def _delete(self, sync: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            with self._r.pipeline(transaction=True) as pipe:
                pipe.hdel(self._hash(sync), *keys)
                pipe.zrem(self._due_index(sync), *keys)
                pipe.zrem(self._seen_index(sync), *keys)
                pipe.execute()

    # --- the console's queue: counts and pages without reading the whole hash -----------
    def count(self, sync: str) -> int:
        return self._settled(sync, self.now())

    def page(
        self, sync: str | None = None, status: str | None = None, start: int = 0, count: int = 50
    ) -> tuple[list[Entry], int]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        now = self.now()
        lo, hi = _due_bounds(status, now)
        skip, left = max(0, int(start)), max(0, int(count))
        total = 0
        rows: list[Entry] = []
        for name in [sync] if sync is not None else sorted(self._syncs()):
            if not self._settled(name, now):
                continue
            index = self._due_index(name)
            matching = int(self._r.zcount(index, lo, hi))
            total += matching
            if left and skip < matching:
                keys = [_decode(k) for k in self._r.zrangebyscore(index, lo, hi, start=skip, num=left)]
                raws = self._r.hmget(self._hash(name), keys) if keys else []
                for key, raw in zip(keys, raws, strict=True):
                    entry = _loads(raw)
                    if entry is not None:
                        rows.append(self._present(name, key, entry, now))
                left -= len(keys)
                skip = 0
            else:
                skip -= min(skip, matching)
        return rows, total

    def _settled(self, sync: str, now: datetime) -> int:
        """HLEN of the sync's hash once its indexes agree with it (rebuilt once from the
        hash if not: written by an older version, or a crash between versions) and its
        expired entries are gone; reads no entry unless one expired."""
        name, due, seen = self._hash(sync), self._due_index(sync), self._seen_index(sync)
        cutoff = (now - self.retention).timestamp()
        for _ in range(3):
            with self._r.pipeline(transaction=False) as pipe:
                pipe.hlen(name)
                pipe.zcard(due)
                pipe.zcard(seen)
                pipe.zrangebyscore(seen, "-inf", cutoff, start=0, num=500)
                size, n_due, n_seen, stale = pipe.execute()
            if not size == n_due == n_seen:
                self._reindex(sync)
                continue
            if not stale:
                return int(size)
            self._expire(sync, [_decode(k) for k in stale], now)
        return int(self._r.hlen(name))

    def _reindex(self, sync: str) -> None:
        name, due, seen = self._hash(sync), self._due_index(sync), self._seen_index(sync)

        def attempt(pipe: Any) -> None:
            raw = pipe.hgetall(name)
            ttl = pipe.ttl(name)
            entries = {_decode(k): _loads(v) for k, v in raw.items()}
            pipe.multi()
            pipe.delete(due, seen)
            if entries:
                pipe.zadd(due, {k: due_score(e or {}) for k, e in entries.items()})
                pipe.zadd(seen, {k: seen_score(e) for k, e in entries.items()})  # unreadable: -inf, expires now
                for one in (due, seen):
                    pipe.expire(one, ttl if ttl and ttl > 0 else self._ttl)

        log.info("failed-record tracker: indexing the %s queue", sync, extra={"event": "tracker_reindex"})
        self._r.transaction(attempt, name)

    def _expire(self, sync: str, keys: list[str], now: datetime) -> None:
        """Delete these entries if they are still expired (one may have failed again since)."""
        name = self._hash(sync)

        def attempt(pipe: Any) -> None:
            raws = pipe.hmget(name, keys)
            gone = [k for k, raw in zip(keys, raws, strict=True) if (e := _loads(raw)) is None or expired(e, now, self.retention)]
            pipe.multi()
            if gone:
                pipe.hdel(name, *gone)
                pipe.zrem(self._due_index(sync), *gone)
                pipe.zrem(self._seen_index(sync), *gone)

        self._r.transaction(attempt, name)

    def _syncs(self) -> list[str]:
        head = f"{self.prefix}failed:"
        found = {_decode(k)[len(head) :] for k in self._r.scan_iter(match=_glob_escape(head) + "*", count=500)}
        return sorted(found)


def _due_bounds(status: str | None, now: datetime) -> tuple[str, str]:
    """ZRANGEBYSCORE bounds of the due index for a status (``due_score``)."""
    moment = repr(now.timestamp())
    return {
        None: ("-inf", "+inf"),
        "due": ("-inf", moment),
        "waiting": ("(" + moment, "(+inf"),
        "quarantined": ("+inf", "+inf"),
    }[status]


class InMemoryTracker(TrackerBase):
    """The same tracker in a dict: for tests, and as ResilientTracker's fallback.
    Entries are stored as JSON text so callers can never alias internal state."""

    def __init__(
        self,
        clock: Clock = _utc_now,
        schedule: Iterable[timedelta] = DEFAULT_SCHEDULE,
        *,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        super().__init__(clock=clock, schedule=schedule, retention=retention)
        self._data: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()

    def _load(self, sync: str, key: str) -> Entry | None:
        with self._lock:
            return _loads(self._data.get(sync, {}).get(key))

    def _load_all(self, sync: str) -> dict[str, Entry]:
        with self._lock:
            items = list(self._data.get(sync, {}).items())
        return {k: e for k, e in ((k, _loads(v)) for k, v in items) if e is not None}

    def _update(self, sync: str, key: str, change: Callable[[Entry | None], Entry | None]) -> Entry | None:
        with self._lock:
            bucket = self._data.setdefault(sync, {})
            new = change(_loads(bucket.get(key)))
            if new is None:
                bucket.pop(key, None)
            else:
                bucket[key] = json.dumps(new, sort_keys=True)
            if not bucket:
                del self._data[sync]
            return new

    def _delete(self, sync: str, keys: Iterable[str]) -> None:
        with self._lock:
            bucket = self._data.get(sync)
            if bucket is None:
                return
            for key in keys:
                bucket.pop(key, None)
            if not bucket:
                del self._data[sync]

    def _syncs(self) -> list[str]:
        with self._lock:
            return sorted(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# --------------------------------------------------------------------------- resilience

_OUTAGE = (redis.exceptions.RedisError, OSError)
"""Anything Redis-side (refused, timed out, auth, read-only replica, OOM): the run goes
on without Redis rather than fail because of its bookkeeping."""


class ResilientTracker:
    """A tracker that keeps working while Redis is down.

    Healthy: every call goes to ``primary``. The first Redis error logs one warning and
    switches to ``fallback`` (``degraded`` becomes True); while degraded, Redis is probed
    at most once per ``probe_interval`` (so an unreachable host costs one socket timeout
    per interval, not one per record). When it answers, the records touched meanwhile
    are written back (failures copied, successes deleted), the fallback is cleared, an
    info line is logged and calls go to Redis again.

    While degraded, ``should_skip`` only knows failures seen since the outage began, so
    some records are retried before their time: harmless (at worst another 422), and
    better than skipping records on stale information.
    """

    def __init__(
        self,
        primary: TrackerBase,
        fallback: InMemoryTracker | None = None,
        *,
        probe_interval: timedelta = timedelta(seconds=30),
        clock: Clock | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = (
            fallback if fallback is not None else InMemoryTracker(primary._clock, primary.schedule, retention=primary.retention)
        )
        self.probe_interval = probe_interval
        self._clock = clock or primary._clock
        self._lock = threading.RLock()
        self._degraded_since: datetime | None = None
        self._last_probe: datetime | None = None
        self._pending: set[tuple[str, str]] = set()

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the in-memory fallback is in use."""
        return self._degraded_since is not None

    def health(self) -> dict[str, Any]:
        """For /health: no secrets, no outside call."""
        since = self._degraded_since
        return {
            "backend": "memory" if since else "redis",
            "degraded": since is not None,
            "degraded_since": iso_z(since) if since else None,
            "pending_writes": len(self._pending),
        }

    # --- FailedRecords -----------------------------------------------------------
    def should_skip(self, sync: str, key: str, fingerprint: str) -> bool:
        result: bool = self._call("should_skip", (sync, key, fingerprint))
        return result

    def record_failure(self, sync: str, key: str, fingerprint: str, reason: str, fields: Iterable[str]) -> None:
        self._call("record_failure", (sync, key, fingerprint, reason, list(fields)), touches=(sync, str(key)))

    def record_success(self, sync: str, key: str) -> None:
        self._call("record_success", (sync, key), touches=(sync, str(key)))

    def count(self, sync: str) -> int:
        result: int = self._call("count", (sync,))
        return result

    def get(self, sync: str, key: str) -> Entry | None:
        result: Entry | None = self._call("get", (sync, key))
        return result

    def page(
        self, sync: str | None = None, status: str | None = None, start: int = 0, count: int = 50
    ) -> tuple[list[Entry], int]:
        result: tuple[list[Entry], int] = self._call("page", (sync, status, start, count))
        return result

    def list(self, sync: str | None = None) -> list[Entry]:
        result: list[Entry] = self._call("list", (sync,))
        return result

    def retry(self, sync: str | None = None, key: str | None = None) -> int:
        result: int = self._call("retry", (sync, key))
        return result

    def dismiss(self, sync: str, key: str) -> bool:
        result: bool = self._call("dismiss", (sync, key), touches=(sync, str(key)))
        return result

    # --- switching ---------------------------------------------------------------
    def _call(self, method: str, args: tuple[Any, ...], touches: tuple[str, str] | None = None) -> Any:
        if self._degraded_since is None or self._recover():
            try:
                return getattr(self.primary, method)(*args)
            except _OUTAGE as exc:
                self._degrade(exc)
        with self._lock:
            result = getattr(self.fallback, method)(*args)
            if touches is not None:
                self._pending.add(touches)
            return result

    def _degrade(self, exc: BaseException) -> None:
        with self._lock:
            if self._degraded_since is None:
                now = self._now()
                self._degraded_since = now
                self._last_probe = now
                log.warning(
                    "failed-record tracker: Redis unavailable (%s: %s); using in-memory tracking until it answers",
                    type(exc).__name__,
                    exc,
                    extra={"event": "tracker_degraded"},
                )

    def _recover(self) -> bool:
        """Probe Redis if a probe is due; on success replay pending writes and switch
        back. Returns True when healthy again."""
        with self._lock:
            if self._degraded_since is None:
                return True
            now = self._now()
            if self._last_probe is not None and now - self._last_probe < self.probe_interval:
                return False
            self._last_probe = now
            try:
                self.primary.ping()
                for sync, key in sorted(self._pending):
                    entry = self.fallback._load(sync, key)
                    if entry is None:
                        self.primary.record_success(sync, key)
                    else:
                        self.primary.put_entry(sync, key, entry)
                    self._pending.discard((sync, key))
            except _OUTAGE:
                return False
            outage = now - self._degraded_since
            self.fallback.clear()
            self._degraded_since = None
            log.info(
                "failed-record tracker: Redis answers again after %s; back to Redis",
                outage,
                extra={"event": "tracker_recovered"},
            )
            return True

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)


def build_tracker(
    redis_url: Any,
    prefix: str = "safetyamp-sync:",
    *,
    clock: Clock = _utc_now,
    socket_timeout: float = 2.0,
    probe_interval: timedelta = timedelta(seconds=30),
) -> ResilientTracker:
    """Wire the production tracker. No connection is made here (redis-py connects on
    first use). ``redis_url`` may be a str or a SecretStr (it may carry a password).

    The client is ``utils.redis_client.make_redis``'s: short timeouts, one retry; the
    tracker is bookkeeping and must not stall a run."""
    client = make_redis(redis_url, socket_timeout=socket_timeout)
    primary = FailedSyncTracker(client, prefix, clock)
    return ResilientTracker(primary, InMemoryTracker(clock), probe_interval=probe_interval, clock=clock)


class RunTracker:
    """One run's view of a tracker: reads each sync's entries once, not once per record.

    ``should_skip`` is asked for every desired record (50 000 at a large employer): one
    Redis round trip each cost about as much as the whole plan. The first question
    about a sync loads its tracked records with one ``list`` (one HGETALL; usually a
    handful of entries) and answers the rest from that snapshot; ``record_success``
    skips the delete for a record that was not tracked (the common case: one HDEL saved
    per write). Failures and successes of tracked records go through at once.

    Made per run (``config.bootstrap.new_context``): a retry that an operator releases
    or that falls due during a run counts from the next run. Runs do not overlap (the
    cycle lock), so nothing else adds entries meanwhile. Everything else
    (``count``, ``get``, ``list``, ``retry``...) goes straight to the wrapped tracker.
    """

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self._lock = threading.Lock()
        self._snapshot: dict[str, dict[str, Entry]] = {}

    def _tracked(self, sync: str) -> dict[str, Entry]:
        with self._lock:
            known = self._snapshot.get(sync)
        if known is None:
            known = {str(row["key"]): row for row in self.tracker.list(sync)}
            with self._lock:
                known = self._snapshot.setdefault(sync, known)
        return known

    def should_skip(self, sync: str, key: str, fingerprint: str) -> bool:
        entry = self._tracked(sync).get(str(key))
        return entry is not None and entry.get("fingerprint") == fingerprint and entry.get("status") in ("quarantined", "waiting")

    def record_failure(self, sync: str, key: str, fingerprint: str, reason: str, fields: Iterable[str]) -> None:
        self.tracker.record_failure(sync, key, fingerprint, reason, fields)
        with self._lock:
            if sync in self._snapshot:
                self._snapshot[sync][str(key)] = {"fingerprint": fingerprint, "status": "waiting"}

    def record_success(self, sync: str, key: str) -> None:
        with self._lock:
            known = self._snapshot.get(sync)
            if known is not None and str(key) not in known:
                return
            if known is not None:
                known.pop(str(key), None)
        self.tracker.record_success(sync, key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)
