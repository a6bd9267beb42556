"""Operator state shared by every runner: pauses, held deactivations and their
approvals, the audit log and the run history.

The daemon's replicas, the CronJob and an operator's ``sync_batch.py`` are separate
processes; what an operator decides in one of them (pause a sync, approve a batch the
deactivation guard held) must be obeyed by all of them, so it lives in Redis under
``{prefix}control:...`` (and the streams ``{prefix}audit`` and ``{prefix}runs:{sync}``).

When Redis does not answer, the state is kept in this process's memory (like
``utils.quarantine``): a pause made meanwhile holds for this process only, and the
history and audit entries of that time are kept in memory (bounded) and logged. A
Redis outage never fails a run: the lock (utils/locks.py) already refuses to run a
sync without Redis unless LOCK_REQUIRED=false.

Everything stored is scrubbed first (utils/scrub.py): reasons, details and errors are
read back by /health, the console and other replicas.

Layout::

    {prefix}control:paused      hash  sync -> {"sync","by","at","reason"}
    {prefix}control:holds       hash  sync -> {"sync","keys","count","digest","reason","run_id","at"}
    {prefix}control:approvals   hash  sync -> {"sync","digest","count","by","at","expires_at","expires"}
    {prefix}audit               stream (field "entry": JSON), trimmed by age (MINID)
    {prefix}runs:{sync}         stream (fields "run_id", "status", "entry"), capped (MAXLEN)
    {prefix}runs:syncs          set of the syncs with a history

An approval is used once: ``take_approval`` deletes it in a MULTI/EXEC transaction that
WATCHes it, so of two runners that find the same approval exactly one gets it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

from utils.scrub import scrub, scrub_value

log = logging.getLogger("control")
audit_log = logging.getLogger("audit")

MAX_REASON_CHARS = 500
MAX_ERROR_CHARS = 2000
REDIS_RETRY_SECONDS = 5.0
# What makes Redis "down" (its state then lives in memory for REDIS_RETRY_SECONDS); any
# other error is about the request or the data and leaves Redis in use.
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?", re.ASCII)
"""After Redis failed to answer, it is not asked again for this long (memory meanwhile)."""
LOCAL_AUDIT_ENTRIES = 1000
"""Audit entries kept in memory while Redis is unreachable (they are logged too)."""
SKEW_SCAN_LIMIT = 1000
STATUS_SCAN_LIMIT = 5000
"""Most history entries one ``runs(status=...)`` call reads looking for matches: a page
of a rare status in a long history is cut short rather than read to the end."""

RUN_FIELDS = (
    "run_id",
    "sync",
    "status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "counts",
    "error",
    "runner",
    "changes_file",
    "errors_file",
    "guard_tripped",
    "requested_by",
    "forced",
    "approval",
    "key",
)


def digest(keys: Iterable[str]) -> str:
    """The identity of a batch of keys: sha256 of the sorted, distinct keys (one per line)."""
    return hashlib.sha256("\n".join(sorted({str(k) for k in keys})).encode("utf-8", "surrogatepass")).hexdigest()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _loads(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(_text(raw))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _parse_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class ControlStore:
    """Operator state shared by every runner (daemon replicas, CronJobs, sync_batch.py)
    through Redis under {prefix}; in memory when Redis is unreachable (like utils/quarantine.py)."""

    def __init__(
        self,
        redis_client: Any,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
        approval_ttl_seconds: float = 3600,
        audit_retention_days: float = 90,
        run_history_length: int = 10000,
    ) -> None:
        self._redis = redis_client
        self._prefix = prefix
        self._clock = clock
        self._metrics = metrics
        self.approval_ttl_seconds = float(approval_ttl_seconds)
        self.audit_retention_days = float(audit_retention_days)
        self.run_history_length = int(run_history_length)
        self._paused_key = f"{prefix}control:paused"
        self._holds_key = f"{prefix}control:holds"
        self._approvals_key = f"{prefix}control:approvals"
        self._audit_key = f"{prefix}audit"
        self._run_syncs_key = f"{prefix}runs:syncs"
        self._lock = threading.Lock()
        self._local: dict[str, dict[str, dict[str, Any]]] = {"paused": {}, "holds": {}, "approvals": {}}
        self._local_audit: deque[dict[str, Any]] = deque(maxlen=LOCAL_AUDIT_ENTRIES)
        self._local_runs: dict[str, deque[dict[str, Any]]] = {}
        self._local_seq = 0
        self._warned = False
        self._down_until = 0.0
        self._clock_mono = time.monotonic

    # ---- plumbing -------------------------------------------------------------------
    def _hash_key(self, table: str) -> str:
        return {"paused": self._paused_key, "holds": self._holds_key, "approvals": self._approvals_key}[table]

    def _runs_key(self, sync: str) -> str:
        return f"{self._prefix}runs:{sync}"

    @property
    def _use_redis(self) -> bool:
        return self._redis is not None and self._clock_mono() >= self._down_until

    def _redis_failed(self, exc: BaseException, what: str) -> None:
        if not isinstance(exc, REDIS_DOWN):
            # An answer about the data (WRONGTYPE, a bad stream id) is not an outage:
            # taking Redis out of use for it would let this process keep pauses and
            # approvals in its own memory while every other runner reads Redis.
            log.warning("operator state: Redis refused to %s: %s", what, type(exc).__name__)
            return
        # Redis is not asked again for a few seconds: a Redis that times out would
        # otherwise add its timeout to every call (the overview polls every few seconds).
        self._down_until = self._clock_mono() + REDIS_RETRY_SECONDS
        # One warning per outage, not one per call.
        if not self._warned:
            log.warning("operator state unavailable in Redis (%s): kept in memory: %s", what, type(exc).__name__)
            self._warned = True

    def _redis_ok(self) -> None:
        if self._warned:
            log.info("operator state: Redis answers again")
            self._warned = False

    def _get(self, table: str, sync: str) -> dict[str, Any] | None:
        if self._use_redis:
            try:
                value = _loads(self._redis.hget(self._hash_key(table), sync))
                self._redis_ok()
                return value
            except Exception as exc:
                self._redis_failed(exc, f"read {table}")
        with self._lock:
            found = self._local[table].get(sync)
            return dict(found) if found else None

    def _all(self, table: str) -> dict[str, dict[str, Any]]:
        if self._use_redis:
            try:
                raw = self._redis.hgetall(self._hash_key(table))
                self._redis_ok()
                out = {}
                for name, value in raw.items():
                    entry = _loads(value)
                    if entry is not None:
                        out[_text(name)] = entry
                return out
            except Exception as exc:
                self._redis_failed(exc, f"read {table}")
        with self._lock:
            return {k: dict(v) for k, v in self._local[table].items()}

    def _put(self, table: str, sync: str, value: dict[str, Any] | None) -> None:
        with self._lock:
            if value is None:
                self._local[table].pop(sync, None)
            else:
                self._local[table][sync] = dict(value)
        if self._use_redis:
            try:
                if value is None:
                    self._redis.hdel(self._hash_key(table), sync)
                else:
                    self._redis.hset(self._hash_key(table), sync, json.dumps(value))
                self._redis_ok()
            except Exception as exc:
                self._redis_failed(exc, f"write {table}")

    def reachable(self) -> bool:
        """Whether Redis answers now (an operator's command refuses to change state that
        would only live in its own memory)."""
        if self._redis is None:
            return False
        try:
            self._redis.ping()
        except Exception as exc:
            self._redis_failed(exc, "ping")
            return False
        self._down_until = 0.0
        self._redis_ok()
        return True

    # ---- pause ----------------------------------------------------------------------
    def pause(self, sync: str, *, by: str, reason: str = "") -> None:
        entry = {
            "sync": sync,
            "by": scrub(str(by))[:200],
            "at": _iso(self._clock()),
            "reason": scrub(str(reason or ""))[:MAX_REASON_CHARS],
        }
        self._put("paused", sync, entry)
        self._gauge(sync, True)
        log.warning("sync paused by %s: %s", entry["by"], entry["reason"] or "(no reason given)", extra={"sync": sync})

    def resume(self, sync: str, *, by: str) -> None:
        self._put("paused", sync, None)
        self._gauge(sync, False)
        log.warning("sync resumed by %s", scrub(str(by))[:200], extra={"sync": sync})

    def paused(self, sync: str) -> dict[str, Any] | None:
        """{"sync","by","at" (ISO UTC),"reason"} or None; sets the sync_paused gauge."""
        entry = self._get("paused", sync)
        self._gauge(sync, entry is not None)
        return scrub_value(entry) if entry else None

    def pauses(self) -> dict[str, dict[str, Any]]:
        found = {k: scrub_value(v) for k, v in self._all("paused").items()}
        return found

    def refresh_paused(self, syncs: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Every paused sync (as ``pauses``), with the sync_paused gauge of each of
        ``syncs`` set from it: a pause or resume made by another process shows at once."""
        found = self.pauses()
        for sync in syncs:
            self._gauge(sync, sync in found)
        return found

    @staticmethod
    def pause_reason(entry: dict[str, Any]) -> str:
        """The skip reason a paused sync's run reports."""
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        return f"paused by {entry.get('by', '?')} at {entry.get('at', '?')}{reason}"

    def _gauge(self, sync: str, on: bool) -> None:
        gauge = getattr(self._metrics, "paused", None)
        if gauge is not None:
            gauge.labels(sync).set(1 if on else 0)

    # ---- deactivations held by the guard ----------------------------------------------
    def hold(self, sync: str, keys: list[str], *, reason: str, run_id: str) -> dict[str, Any]:
        """The guard refused these exact deactivations: stored (replacing an older hold of
        that sync; an approval of a different batch is withdrawn: the list changed)."""
        ordered = sorted({str(k) for k in keys})
        entry = {
            "sync": sync,
            "keys": ordered,
            "count": len(ordered),
            "digest": digest(ordered),
            "reason": scrub(str(reason))[:MAX_REASON_CHARS],
            "run_id": str(run_id),
            "at": _iso(self._clock()),
        }
        self._put("holds", sync, entry)
        approval = self._get("approvals", sync)
        if approval is not None and approval.get("digest") != entry["digest"]:
            self._put("approvals", sync, None)
            log.warning("the held batch changed: the approval of the previous batch no longer applies", extra={"sync": sync})
        return entry

    def clear_hold(self, sync: str) -> None:
        """A run of ``sync`` found nothing to hold: an older hold is obsolete (its list
        no longer matches what the source says). An approval stays until it expires."""
        self._put("holds", sync, None)

    def held(self, sync: str) -> dict[str, Any] | None:
        return self._get("holds", sync)

    def holds(self) -> dict[str, dict[str, Any]]:
        return self._all("holds")

    def approve(self, sync: str, digest_: str, *, by: str) -> dict[str, Any]:
        """Approve exactly the held batch with this digest (ValueError when there is no
        hold or it has another digest: the list changed, a new approval is needed)."""
        hold = self.held(sync)
        if hold is None:
            raise ValueError(f"no deactivation of {sync} is held: nothing to approve")
        wanted = str(digest_).strip().lower()
        if not wanted or hold.get("digest") != wanted:
            raise ValueError(
                f"the held {sync} batch has digest {hold.get('digest')} ({hold.get('count')} record(s)), not {digest_!r}: "
                "the list changed; review the current one and approve its digest"
            )
        now = self._clock()
        expires = now + self.approval_ttl_seconds
        entry = {
            "sync": sync,
            "digest": wanted,
            "count": hold.get("count"),
            "by": scrub(str(by))[:200],
            "at": _iso(now),
            "expires_at": _iso(expires),
            "expires": expires,
        }
        self._put("approvals", sync, entry)
        return self._public_approval(entry)

    @staticmethod
    def _public_approval(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: entry.get(k) for k in ("sync", "digest", "count", "by", "at", "expires_at")}

    def approval(self, sync: str) -> dict[str, Any] | None:
        """The current, unexpired approval of ``sync``, or None."""
        entry = self._get("approvals", sync)
        if entry is None or float(entry.get("expires") or 0) <= self._clock():
            return None
        return self._public_approval(entry)

    def take_approval(self, sync: str, keys: list[str]) -> dict[str, Any] | None:
        """The approval of exactly ``keys``, deleted (once: of two takers one gets it), or
        None (no approval, another batch, or expired). A used approval clears the hold."""
        wanted = digest(keys)
        if self._use_redis:
            try:
                taken = self._take_redis(sync, wanted)
                self._redis_ok()
            except Exception as exc:
                self._redis_failed(exc, "take an approval")
            else:
                with self._lock:  # the local copy must not grant it a second time
                    if taken is not None:
                        self._local["approvals"].pop(sync, None)
                        self._local["holds"].pop(sync, None)
                return self._public_approval(taken) if taken is not None else None
        with self._lock:
            entry = self._local["approvals"].get(sync)
            if not self._usable(entry, wanted):
                return None
            assert entry is not None
            self._local["approvals"].pop(sync, None)
            hold = self._local["holds"].get(sync)
            if hold is not None and hold.get("digest") == wanted:
                self._local["holds"].pop(sync, None)
        return self._public_approval(entry)

    def _usable(self, entry: dict[str, Any] | None, wanted: str) -> bool:
        return entry is not None and entry.get("digest") == wanted and float(entry.get("expires") or 0) > self._clock()

    def _take_redis(self, sync: str, wanted: str) -> dict[str, Any] | None:
        from redis.exceptions import WatchError

        for _attempt in range(20):
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(self._approvals_key, self._holds_key)
                    entry = _loads(pipe.hget(self._approvals_key, sync))
                    if not self._usable(entry, wanted):
                        pipe.unwatch()
                        return None
                    hold = _loads(pipe.hget(self._holds_key, sync))
                    pipe.multi()
                    pipe.hdel(self._approvals_key, sync)
                    if hold is not None and hold.get("digest") == wanted:
                        pipe.hdel(self._holds_key, sync)
                    pipe.execute()
                    return entry
                except WatchError:
                    continue  # changed under us (another taker, another sync's hold): look again
        raise RuntimeError("the approval kept changing while it was being taken")

    # ---- audit log ------------------------------------------------------------------
    def audit(
        self, *, actor: str, role: str, action: str, target: str, result: str, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One operator action: appended to the audit stream (trimmed by age) and written
        to the JSON log (logger "audit"); scrubbed."""
        now = self._clock()
        entry: dict[str, Any] = {
            "at": _iso(now),
            "actor": scrub(str(actor))[:200],
            "role": scrub(str(role))[:50],
            "action": scrub(str(action))[:100],
            "target": scrub(str(target))[:300],
            "result": scrub(str(result))[:MAX_REASON_CHARS],
            "detail": scrub_value(detail or {}),
        }
        blob = json.dumps(entry, default=str)
        entry_id = None
        if self._use_redis:
            try:
                entry_id = _text(self._redis.xadd(self._audit_key, {"entry": blob}))
                # Trimmed against the new entry's id (Redis's clock, which made every id
                # in the stream), not ours: a replica's skewed clock cannot empty it.
                oldest = _parse_id(entry_id)[0] - int(self.audit_retention_days * 86_400_000)
                self._redis.xtrim(self._audit_key, minid=max(0, oldest), approximate=True)
                self._redis_ok()
            except Exception as exc:
                self._redis_failed(exc, "audit")
        if entry_id is None:
            with self._lock:
                self._local_seq += 1
                entry_id = f"{int(now * 1000)}-{self._local_seq}"
                self._local_audit.appendleft({"id": entry_id, **entry})
        entry = {"id": entry_id, **entry}
        audit_log.info(
            "%s %s %s: %s",
            entry["actor"],
            entry["action"],
            entry["target"],
            entry["result"],
            extra={"audit": {k: v for k, v in entry.items()}},
        )
        return entry

    def audit_log(self, *, count: int = 50, before: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before`` = an entry id for paging."""
        count = max(1, min(int(count), 1000))
        if before:
            before = _stream_id(before)  # a ValueError for the caller, before Redis is asked
        if self._use_redis:
            try:
                top = f"({before}" if before else "+"
                rows = self._redis.xrevrange(self._audit_key, max=top, min="-", count=count)
                self._redis_ok()
                out = []
                for entry_id, fields in rows:
                    entry = _loads(_field(fields, "entry")) or {}
                    out.append({"id": _text(entry_id), **_audit_shape(entry)})
                return out
            except Exception as exc:
                self._redis_failed(exc, "read the audit log")
        with self._lock:
            rows = list(self._local_audit)
        if before:
            limit = _parse_id(before)
            rows = [r for r in rows if _parse_id(r["id"]) < limit]
        return [{"id": r["id"], **_audit_shape(r)} for r in rows[:count]]

    # ---- run history ----------------------------------------------------------------
    def record_run(self, entry: dict[str, Any]) -> None:
        """One sync run (not dry runs), kept in a capped stream per sync; never raises."""
        try:
            clean = {k: entry.get(k) for k in RUN_FIELDS}
            if clean.get("error"):
                clean["error"] = scrub(str(clean["error"]))[:MAX_ERROR_CHARS]
            clean = scrub_value(clean)
            sync = str(clean["sync"])
            blob = json.dumps(clean, default=str)
        except Exception:
            log.warning("could not record the run in the history", exc_info=True)
            return
        if self._use_redis:
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.xadd(
                    self._runs_key(sync),
                    {"run_id": str(clean.get("run_id")), "status": str(clean.get("status")), "entry": blob},
                    maxlen=self.run_history_length,
                    approximate=True,
                )
                pipe.sadd(self._run_syncs_key, sync)
                pipe.execute()
                self._redis_ok()
                return
            except Exception as exc:
                self._redis_failed(exc, "record a run")
        with self._lock:
            self._local_seq += 1
            runs = self._local_runs.setdefault(sync, deque(maxlen=max(1, min(self.run_history_length, 1000))))
            runs.appendleft({"id": f"{int(self._clock() * 1000)}-{self._local_seq}", **clean})

    def runs(
        self, *, sync: str | None = None, status: str | None = None, count: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; each with an "id" to pass as ``before`` for the next page.
        Without ``sync``, the runs of every sync merged by time (ids then name the sync
        too). With ``status``, at most STATUS_SCAN_LIMIT entries are read per sync."""
        count = max(1, min(int(count), 1000))
        if before:
            _cursor(before)  # a ValueError for the caller, before Redis is asked
        if self._use_redis:
            try:
                syncs = [sync] if sync else sorted(_text(s) for s in self._redis.smembers(self._run_syncs_key))
                rows = self._runs_redis(syncs, status, count, before, merged=sync is None)
                self._redis_ok()
                return rows
            except Exception as exc:
                self._redis_failed(exc, "read the run history")
        with self._lock:
            pool = [(name, dict(r)) for name, runs in self._local_runs.items() if sync in (None, name) for r in runs]
        ordered = sorted((((_parse_id(r["id"]), name), r) for name, r in pool), key=lambda t: t[0], reverse=True)
        if before:
            limit = _cursor(before)
            ordered = [(k, r) for k, r in ordered if k < limit or (sync is not None and k[0] < limit[0])]
        out = []
        for (_, name), r in ordered:
            if status and r.get("status") != status:
                continue
            if sync is None:
                r["id"] = f"{r['id']}:{name}"
            out.append(r)
        return out[:count]

    def _runs_redis(
        self, syncs: list[str], status: str | None, count: int, before: str | None, *, merged: bool
    ) -> list[dict[str, Any]]:
        limit = _cursor(before) if before else None
        found: list[tuple[tuple[int, int], str, dict[str, Any]]] = []
        for name in syncs:
            key = self._runs_key(name)
            if limit is None:
                top = "+"
            elif not merged or name < limit[1]:
                # In the merged view entries of the same id order by sync name: the page
                # stopped at (id, sync) so this sync's entry with that very id is still due.
                top = f"{limit[0][0]}-{limit[0][1]}" if merged else f"({limit[0][0]}-{limit[0][1]}"
            else:
                top = f"({limit[0][0]}-{limit[0][1]}"
            matched = 0
            scanned = 0
            batch = count if not status else max(count * 4, 100)
            while matched < count and scanned < (STATUS_SCAN_LIMIT if status else count):
                rows = self._redis.xrevrange(key, max=top, min="-", count=batch)
                if not rows:
                    break
                for entry_id, fields in rows:
                    scanned += 1
                    if status and _text(_field(fields, "status")) != status:
                        continue
                    entry = _loads(_field(fields, "entry")) or {}
                    sid = _text(entry_id)
                    entry["id"] = f"{sid}:{name}" if merged else sid
                    found.append((_parse_id(sid), name, entry))
                    matched += 1
                    if matched >= count:
                        break
                if len(rows) < batch:
                    break
                top = f"({_text(rows[-1][0])}"
        found.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [entry for _, _, entry in found[:count]]

    def run(self, run_id: str, sync: str) -> dict[str, Any] | None:
        """One run of ``sync`` by its run id (from the first entry recorded at or after the
        run id's start time, so a lookup reads a few entries, not the history)."""
        if self._use_redis:
            try:
                found = self._run_redis(str(run_id), sync)
                self._redis_ok()
                return found
            except Exception as exc:
                self._redis_failed(exc, "read the run history")
        with self._lock:
            for r in self._local_runs.get(sync, ()):
                if r.get("run_id") == run_id:
                    return dict(r)
        return None

    def _run_redis(self, run_id: str, sync: str) -> dict[str, Any] | None:
        key = self._runs_key(sync)
        start = _run_id_ms(run_id)
        bottom = f"{start}-0" if start is not None else "-"
        read = 0
        # Forward from the run's start: its entry was recorded when it finished. Without a
        # parseable run id, a bounded scan (ids come from new_run_id in every runner).
        while read < STATUS_SCAN_LIMIT:
            rows = self._redis.xrange(key, min=bottom, max="+", count=200)
            for entry_id, fields in rows:
                read += 1
                if _text(_field(fields, "run_id")) == run_id:
                    entry = _loads(_field(fields, "entry")) or {}
                    entry["id"] = _text(entry_id)
                    return entry
            if len(rows) < 200:
                break
            bottom = f"({_text(rows[-1][0])}"
        if start is not None:
            # A runner whose clock ran ahead of Redis's: the newest entries, bounded.
            for entry_id, fields in self._redis.xrevrange(key, max="+", min="-", count=SKEW_SCAN_LIMIT):
                if _text(_field(fields, "run_id")) == run_id:
                    entry = _loads(_field(fields, "entry")) or {}
                    entry["id"] = _text(entry_id)
                    return entry
        return None


def _field(fields: Any, name: str) -> Any:
    if name in fields:
        return fields[name]
    return fields.get(name.encode())


def _audit_shape(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("at", "actor", "role", "action", "target", "result", "detail")}


def cursor_problem(text: str, *, runs: bool) -> str | None:
    """Why ``text`` is not a paging cursor of the run history (``runs``) or the audit log."""
    try:
        _cursor(text) if runs else _stream_id(text)
    except ValueError:
        return "before must be an id from the page before (a link on that page)"
    return None


def _stream_id(text: str) -> str:
    """``text`` as a Redis stream id ("<ms>-<seq>" or "<ms>"), or a ValueError."""
    if not STREAM_ID.fullmatch(str(text)):
        raise ValueError(f"not a history id: {str(text)[:40]!r}")
    return str(text)


def _cursor(before: str) -> tuple[tuple[int, int], str]:
    """An id from ``runs`` ("<stream id>" or, merged, "<stream id>:<sync>") as a sort key."""
    sid, _, name = str(before).partition(":")
    if not STREAM_ID.fullmatch(sid):
        raise ValueError(f"not a run history id: {str(before)[:40]!r}")
    return _parse_id(sid), name


def _run_id_ms(run_id: str) -> int | None:
    """The start time (ms) of a run id made by config.bootstrap.new_run_id, minus a
    minute of clock skew between replicas."""
    try:
        moment = datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(0, int(moment.timestamp() * 1000) - 60_000)
