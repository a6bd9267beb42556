"""Per-run cache of target collections, shared by every sync of a run.

Each SafetyAmp collection is read at most once per run (the predecessor re-read users,
sites and titles in several syncs). Writes that succeed are folded back into the cache,
so a later sync of the same run sees the sites the jobs sync just created without
reading them again. The cache lives for one run only: the next run starts clean, so a
change made in SafetyAmp by a person is always seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sync.ports import Row, SafetyAmpTarget
from utils.errors import ConfigurationError
from utils.logger import in_context

log = logging.getLogger("sync.targets")


class TargetCache:
    """Read-once view of a SafetyAmp account for the length of one run."""

    def __init__(self, target: SafetyAmpTarget) -> None:
        self._target = target
        self._data: dict[str, dict[Any, Row]] = {}
        self._lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}
        self._prefetch_errors: dict[str, BaseException] = {}

    def prefetch(self, collections: Iterable[str]) -> threading.Thread:
        """Read ``collections`` (in order) on a background thread, so the target's
        latency and rate limit overlap the source reads and the mapping instead of
        adding to them. Still one read per collection: a sync asking meanwhile waits for
        the read under way. A failed read is not repeated in the background: the first
        sync that needs the collection gets its error (as if it had read it itself), and
        a later one reads afresh."""
        names = list(dict.fromkeys(collections))

        def work() -> None:
            for name in names:
                try:
                    self._load(name, prefetch=True)
                except Exception as exc:  # reported by the sync that needs it
                    log.debug("prefetch of %s failed: %s", name, exc)

        thread = threading.Thread(target=in_context(work), name="prefetch-targets", daemon=True)
        thread.start()
        return thread

    @property
    def target(self) -> SafetyAmpTarget:
        return self._target

    def get(self, collection: str) -> list[Row]:
        """Every record of ``collection``; read from the target on first use only."""
        return self._load(collection)

    def _load(self, collection: str, *, prefetch: bool = False) -> list[Row]:
        with self._lock:
            if collection in self._data:
                return list(self._data[collection].values())
            loader = self._loading.setdefault(collection, threading.Lock())
        with loader:  # one reader per collection even when two threads ask at once
            with self._lock:
                if collection in self._data:
                    return list(self._data[collection].values())
                failed = self._prefetch_errors.pop(collection, None)
            if failed is not None and not prefetch:
                raise failed
            try:
                rows = self._target.list(collection)
            except BaseException as exc:
                if prefetch:
                    with self._lock:
                        self._prefetch_errors[collection] = exc
                raise
            with self._lock:
                # A record whose id is missing or not a plain value (a list, an object)
                # is kept under its position: the syncs treat it as not theirs.
                self._data[collection] = {_cache_key(row, i): dict(row) for i, row in enumerate(rows)}
                return list(self._data[collection].values())

    def put(self, collection: str, row: Mapping[str, Any]) -> None:
        """Record a created or updated object (as the target returned it)."""
        with self._lock:
            if collection in self._data and "id" in row:
                existing = self._data[collection].get(row["id"], {})
                self._data[collection][row["id"]] = {**existing, **dict(row)}

    def merge(self, collection: str, record_id: Any, fields: Mapping[str, Any]) -> None:
        """Fold an update's fields into a cached record."""
        with self._lock:
            if collection in self._data and record_id in self._data[collection]:
                self._data[collection][record_id].update(fields)

    def invalidate(self, collection: str | None = None) -> None:
        with self._lock:
            if collection is None:
                self._data.clear()
            else:
                self._data.pop(collection, None)


def _cache_key(row: Row, index: int) -> Any:
    rid = row.get("id")
    return rid if isinstance(rid, (int, str)) else ("#", index)


class NoTarget:
    """The target records of a run with no SafetyAmp sync (rosters only): nothing to
    prefetch, and reading or writing SafetyAmp in it is a wiring bug, reported as such."""

    def prefetch(self, collections: Iterable[str]) -> None:
        return None

    @property
    def target(self) -> SafetyAmpTarget:
        raise ConfigurationError("this run has no SafetyAmp target (no SafetyAmp sync was enabled)")

    def get(self, collection: str) -> list[Row]:
        raise ConfigurationError(f"this run has no SafetyAmp target to read {collection} from")

    def put(self, collection: str, row: Mapping[str, Any]) -> None:
        raise ConfigurationError(f"this run has no SafetyAmp target to write {collection} to")

    def merge(self, collection: str, record_id: Any, fields: Mapping[str, Any]) -> None:
        raise ConfigurationError(f"this run has no SafetyAmp target to write {collection} to")
