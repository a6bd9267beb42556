"""Job-level quarantine: a sync whose run mostly failed backs off.

A run is *bad* when the sync failed as a whole, or when most of the writes it attempted
failed (FAILURE_RATIO of at least MIN_ATTEMPTS). After n bad runs in a row, the sync is
skipped until ``interval * 2**(n-1)`` has passed, capped at a day — the same idea as
Entra provisioning's quarantine, so a broken target is not hammered every cycle and the
on-call sees one clear state instead of a wall of errors.

One rule for every runner (the daemon, sync_batch.py, CronJobs): a run that is not a
dry run waits the quarantine out unless an operator forced it (``sync_batch.py
--force``, an authenticated ``POST /sync``; ``sync.runner._run_guarded``), and every run
that goes ahead is recorded here: a good one lifts the quarantine, a bad one extends
it. Webhook-started runs never force (``sync.runner.event_hold``).

State lives in Redis (shared by replicas and the CronJob) under ``{prefix}quarantine``;
when Redis is unreachable it is kept in memory, which is the safe direction (at worst a
replica retries sooner).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from utils.scrub import scrub, scrub_value

log = logging.getLogger("quarantine")

FAILURE_RATIO = 0.5
MIN_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 86_400.0


def is_bad_run(status: str, counts: dict[str, int]) -> bool:
    if status == "failed":
        return True
    attempted = counts.get("created", 0) + counts.get("updated", 0) + counts.get("deactivated", 0) + counts.get("failed", 0)
    return attempted >= MIN_ATTEMPTS and counts.get("failed", 0) >= FAILURE_RATIO * attempted


class Quarantine:
    """Per-sync back-off state. ``interval_seconds`` is the normal run interval."""

    def __init__(
        self,
        redis_client: Any | None,
        *,
        prefix: str,
        interval_seconds: float,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
    ) -> None:
        self._redis = redis_client
        self._key = f"{prefix}quarantine"
        self._interval = interval_seconds
        self._clock = clock
        self._metrics = metrics
        self._local: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _read(self, sync: str) -> dict[str, Any] | None:
        if self._redis is not None:
            try:
                raw = self._redis.hget(self._key, sync)
                return json.loads(raw) if raw else None
            except Exception as exc:  # Redis down: remembered locally only
                log.warning("quarantine state unavailable in Redis: %s", type(exc).__name__)
        with self._lock:
            return self._local.get(sync)

    def _write(self, sync: str, state: dict[str, Any] | None) -> None:
        with self._lock:
            if state is None:
                self._local.pop(sync, None)
            else:
                self._local[sync] = state
        if self._redis is not None:
            try:
                if state is None:
                    self._redis.hdel(self._key, sync)
                else:
                    self._redis.hset(self._key, sync, json.dumps(state))
            except Exception as exc:
                log.warning("could not store quarantine state in Redis: %s", type(exc).__name__)
        if self._metrics is not None:
            self._metrics.quarantined.labels(sync).set(1 if state else 0)

    def status(self, sync: str) -> dict[str, Any] | None:
        """None when not quarantined; else bad_runs, until (unix time), reason (scrubbed
        again on the way out: a reason stored by an older version may hold a secret)."""
        state = self._read(sync)
        return scrub_value(state) if state else state

    def blocks(self, sync: str) -> str | None:
        """A reason to skip this sync now, or None."""
        state = self._read(sync)
        if self._metrics is not None:
            self._metrics.quarantined.labels(sync).set(1 if state else 0)
        if not state:
            return None
        remaining = float(state["until"]) - self._clock()
        if remaining <= 0:
            return None
        reason = scrub(str(state["reason"]))
        return f"quarantined after {state['bad_runs']} failing run(s) ({reason}); next try in {int(remaining)} s"

    def record(self, sync: str, status: str, counts: dict[str, int], error: str | None) -> None:
        """Update after a run (skipped runs do not count either way)."""
        if status == "skipped":
            return
        if not is_bad_run(status, counts):
            if self._read(sync):
                log.info("quarantine lifted", extra={"sync": sync})
            self._write(sync, None)
            return
        previous = self._read(sync) or {"bad_runs": 0}
        bad = int(previous["bad_runs"]) + 1
        backoff = min(MAX_BACKOFF_SECONDS, self._interval * 2 ** (bad - 1))
        # Scrubbed before it is cut (a cut could split a secret past recognition) and
        # before it is stored: Redis is read by /health, other replicas and later runs.
        reason = scrub(error or f"{counts.get('failed', 0)} record(s) failed")
        state = {"bad_runs": bad, "until": self._clock() + backoff, "reason": reason[:300], "backoff_seconds": backoff}
        self._write(sync, state)
        log.warning("sync quarantined for %d s after %d failing run(s)", int(backoff), bad, extra={"sync": sync})
