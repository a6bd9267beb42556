"""Per-run cache of target collections, shared by every sync of a run.

Each SafetyAmp collection is read at most once per run (the predecessor re-read users,
sites and titles in several syncs). Writes that succeed are folded back into the cache,
so a later sync of the same run sees the sites the jobs sync just created without
reading them again.

With a target shadow (services/target_shadow.py, TARGET_SHADOW), a cycle the runner
opened with ``begin_cycle`` may take its collections from the shadow (the last full
read plus every acknowledged write) instead of reading them; ``end_cycle`` saves what
the cycle knows as the next shadow. Every write request goes through ``target``, which
marks the shared write generation dirty before the first one, so no other runner
trusts a shadow that misses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from services.target_shadow import DIRTY
from sync.ports import Row, SafetyAmpTarget
from utils.errors import ConfigurationError, RecordError
from utils.logger import in_context

log = logging.getLogger("sync.targets")


class TargetCache:
    """Read-once view of a SafetyAmp account for the length of one run."""

    def __init__(self, target: SafetyAmpTarget, shadow: Any = None) -> None:
        self._raw = target
        self._target = _Watched(target, self)
        self._data: dict[str, dict[Any, Row]] = {}
        self._lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}
        self._prefetch_errors: dict[str, BaseException] = {}
        # the target shadow (services.target_shadow.ShadowStore); None: none kept
        self._store = shadow
        self._manifest: dict[str, Any] | None = None  # set when this cycle plans against the shadow
        self._observed: str | None = None  # the write generation when the cycle began
        self._known = False  # the generation could be read when the cycle began
        self._began_at = 0.0
        self._wrote = False
        self._dirty: str | None = None  # the dirty generation this runner set before its first write
        self._stale: list[str] = []  # why a write found the shadow stale
        self._from_shadow: set[str] = set()
        self._changed: set[str] = set()
        self._reread: set[str] = set()  # invalidated: read from SafetyAmp, not the shadow
        self.reason: str = "no target shadow"
        """Why this cycle reads the whole target (or "shadow" when it plans against it)."""

    def prefetch(self, collections: Iterable[str]) -> threading.Thread:
        """Read ``collections`` (in order) on a background thread, so the target's
        latency and rate limit overlap the source reads and the mapping instead of
        adding to them. Still one read per collection: a sync asking meanwhile waits for
        the read under way. A failed read is not repeated in the background: the first
        sync that needs the collection gets its error (as if it had read it itself), and
        a later one reads afresh."""
        names = list(dict.fromkeys(collections))
        if self._manifest is not None:
            # Planning against the shadow: its files are on local disk, there is no
            # latency to hide, and a sync whose inputs did not change never loads them
            # (sync/idle.py): reading them ahead would only spend the CPU it saves.
            names = [n for n in names if n not in self._manifest["files"]]

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
            rows = None
            if self._manifest is not None and collection not in self._reread:
                rows = self._store.load(self._manifest, collection)
                if rows is not None:
                    with self._lock:
                        self._from_shadow.add(collection)
            try:
                if rows is None:
                    rows = self._raw.list(collection)
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
                self._data[collection][row["id"]] = {**existing, **_shared_names(row)}
                self._changed.add(collection)

    def merge(self, collection: str, record_id: Any, fields: Mapping[str, Any]) -> None:
        """Fold an update's fields into a cached record."""
        with self._lock:
            if collection in self._data and record_id in self._data[collection]:
                self._data[collection][record_id].update(_shared_names(fields))
                self._changed.add(collection)

    def invalidate(self, collection: str | None = None) -> None:
        """Forget ``collection`` (None: all): the next ``get`` reads it from SafetyAmp,
        never from the shadow."""
        with self._lock:
            shadowed = list(self._manifest["files"]) if self._manifest is not None else []
            names = [*self._data, *shadowed] if collection is None else [collection]
            for name in names:
                self._data.pop(name, None)
                self._from_shadow.discard(name)
                self._reread.add(name)

    # -- the target shadow ---------------------------------------------------------
    def identity(self) -> str | None:
        """The target as this cycle sees it, as one value, while it plans against the
        shadow and nothing has changed it yet: the shadow's generation and file names
        (a file is never rewritten; a new full read or a write makes new ones). None:
        the cycle read SafetyAmp (fully or a collection the shadow lacked), wrote, found
        the shadow stale or re-read a collection: no earlier plan can stand in for this
        one (sync/idle.py)."""
        with self._lock:
            if self._manifest is None or self._wrote or self._changed or self._reread or self._stale:
                return None
            if any(name not in self._from_shadow for name in self._data):
                return None
            seen = {"scope": self._manifest.get("scope"), "generation": self._observed, "files": self._manifest["files"]}
        return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()

    def unchanged_plan(self, sync: str) -> dict[str, Any] | None:
        """What the last plan of ``sync`` that found nothing to write saved (sync/idle.py)."""
        return None if self._store is None else self._store.note(f"plan-{sync}")

    def save_unchanged_plan(self, sync: str, record: Mapping[str, Any]) -> None:
        if self._store is not None:
            self._store.save_note(f"plan-{sync}", record)

    def shadowed(self, collection: str) -> bool:
        """True when this cycle's ``collection`` came from the shadow, not from a read:
        a write planned from it is checked against SafetyAmp first (sync/base.py)."""
        with self._lock:
            return collection in self._from_shadow

    def mark_stale(self, collection: str, reason: str) -> None:
        """A write found the shadow wrong about ``collection``: the next cycle reads fully."""
        with self._lock:
            first = not self._stale
            self._stale.append(f"{collection}: {reason}")
        if first:
            log.info("target shadow stale (%s): %s; the next cycle reads SafetyAmp fully", collection, reason)

    def begin_cycle(self, *, full: bool = False, first_full: bool = False) -> str:
        """Decide, under the cycle lock, whether this cycle plans against the shadow;
        returns "shadow" or why it reads fully. ``full``: the caller asks for a full read
        (``--full``); ``first_full``: a daemon's first cycle reads fully."""
        store = self._store
        self._began_at = time.time()
        if store is None:
            self.reason = "no target shadow (TARGET_SHADOW=false)"
            return self.reason
        try:
            self._observed = store.generation()
            self._known = True
        except Exception as exc:  # GenerationUnknown: Redis cannot vouch for any shadow
            self.reason = f"the write generation cannot be read ({exc}); a shadow nothing vouches for is not used"
            log.info("target: full read: %s", self.reason)
            return self.reason
        manifest = store.manifest()
        why = store.unusable(manifest, self._observed)
        if why is None and full:
            why = "a full read was asked for"
        if why is None and first_full and store.cycles == 0:
            why = "first cycle of this process"
        store.cycles += 1
        if why is not None:
            self.reason = why
            log.info("target: full read: %s", why)
            return why
        self._manifest = manifest
        self.reason = "shadow"
        log.info("target: planning against the shadow of %s", _when(manifest))
        return "shadow"

    def end_cycle(self, *, publish: bool, still_ours: Callable[[], bool] | None = None) -> str:
        """After the cycle's syncs (the cycle lock still held): save what this cycle knows
        as the next shadow and publish its generation, or, when it may not (not a cycle
        under the lock, a stale shadow, a generation that moved), leave a dirty mark if it
        wrote. Returns what it did (for logs and tests); never raises."""
        store = self._store
        if store is None:
            return "no shadow"
        try:
            return self._end_cycle(store, publish, still_ours)
        except Exception as exc:  # a shadow must never fail the cycle
            log.warning("target shadow not saved (%s: %s); the next cycle reads fully", type(exc).__name__, exc)
            if self._wrote:
                store.mark_dirty()
            return "failed"

    def _end_cycle(self, store: Any, publish: bool, still_ours: Callable[[], bool] | None) -> str:
        if not publish or not self._known or self._stale:
            if self._wrote:
                store.mark_dirty()  # after the last write: a shadow read meanwhile is not vouched for
            return "stale" if self._stale else "not published"
        if self._wrote and self._dirty is None:
            store.mark_dirty()
            return "not published"
        with self._lock:
            data = {name: list(rows.values()) for name, rows in self._data.items()}
            changed = set(self._changed)
            from_shadow = set(self._from_shadow)
        if self._manifest is not None and not self._wrote:
            fresh = {n: r for n, r in data.items() if n not in from_shadow}
            if not fresh or self._observed is None:
                return "unchanged"  # nothing written, nothing read: the shadow is as good as it was
            # Nothing written, but collections the shadow lacked were read (a cycle with
            # more syncs than the one that saved it): add them, under the same generation.
            if still_ours is not None and not still_ours():
                return "not published"
            keep = {n: f for n, f in self._manifest["files"].items() if n not in fresh}
            store.save(fresh, keep=keep, generation=self._observed, full_read_at=float(self._manifest["full_read_at"]))
            return "added"
        if self._manifest is not None:
            keep = {n: f for n, f in self._manifest["files"].items() if n not in data or (n in from_shadow and n not in changed)}
            rows = {n: r for n, r in data.items() if n not in keep}
            read_at = float(self._manifest["full_read_at"])
        else:
            keep, rows, read_at = {}, data, self._began_at
            if not rows:
                if self._wrote:
                    store.mark_dirty()
                return "nothing read"
        if self._wrote:
            expected, generation = self._dirty, uuid.uuid4().hex
        elif self._observed is not None and not self._observed.startswith(DIRTY):
            # A full read without writes: the account is what generation G says; save it
            # under G, so other runners' shadows of G stay valid too.
            expected, generation = None, self._observed
        else:
            expected, generation = self._observed, uuid.uuid4().hex
        if still_ours is not None and not still_ours():
            return "not published"
        store.save(rows, keep=keep, generation=generation, full_read_at=read_at)
        if expected is None and generation == self._observed:
            try:
                same = store.generation() == generation
            except Exception:
                same = False
            return "saved" if same else "not published"
        if store.publish(expected, generation):
            log.info("target shadow saved (%d collections rewritten)", len(rows))
            return "published"
        log.info("another runner wrote to SafetyAmp during this cycle; the next cycle reads fully")
        return "not published"

    def _before_write(self) -> None:
        """Before a write request: the first one of the run marks the generation dirty."""
        if self._store is None:
            return
        with self._lock:
            if self._wrote:
                return
            self._wrote = True
            self._dirty = self._store.mark_dirty()


class _Watched:
    """The SafetyAmp adapter as a run's writes see it: a write request first marks the
    shadow generation dirty (TargetCache._before_write); a write whose outcome is unknown
    (lost answer, timeout, malformed reply) makes the shadow stale."""

    def __init__(self, target: SafetyAmpTarget, cache: TargetCache) -> None:
        self._t = target
        self._cache = cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)

    def list(self, collection: str) -> list[Row]:
        return self._t.list(collection)

    def find_by(self, collection: str, field: str, value: Any) -> Row | None:
        return self._t.find_by(collection, field, value)

    def create(self, collection: str, payload: Mapping[str, Any]) -> Row:
        return self._write(collection, lambda: self._t.create(collection, payload))

    def update(self, collection: str, record_id: int | str, payload: Mapping[str, Any]) -> Row:
        return self._write(collection, lambda: self._t.update(collection, record_id, payload))

    def _write(self, collection: str, send: Callable[[], Row]) -> Row:
        self._cache._before_write()
        try:
            return send()
        except RecordError:
            raise  # refused: nothing changed (a 404 is the sync's to judge)
        except BaseException as exc:
            self._cache.mark_stale(collection, f"a write's outcome is unknown ({type(exc).__name__})")
            raise


def _when(manifest: Mapping[str, Any]) -> str:
    read_at = manifest.get("full_read_at")
    if not isinstance(read_at, (int, float)):
        return "?"
    return f"a full read {max(0.0, time.time() - float(read_at)) / 60:.0f} min ago"


def _shared_names(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its field names replaced by the process's shared (interned) strings.

    A JSON parser shares field names within one document only: every create's answer,
    parsed on its own, brings ~20 names of its own, and the cache keeps each created
    record until the shadow is saved (about 70 MB of the peak of a 50,000-employee
    first run; docs/performance.md). Values are left as they are."""
    return {sys.intern(k) if type(k) is str else k: v for k, v in row.items()}


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

    def shadowed(self, collection: str) -> bool:
        return False

    def mark_stale(self, collection: str, reason: str) -> None:
        return None
