"""BaseSync: the imperative shell around the pure planner.

One run of one sync: load the source and map it (validating every record) -> read the
target once -> drop records the failed-record tracker holds back -> ``plan`` -> guard
the deactivations -> apply (bounded concurrency; the adapters' rate limiter keeps the
pace) -> record every change and rejection with the EventManager -> return counts.

What each sync adds is small: how to build the desired records (``load``), which
target collection holds them and by which key, and the payload details of a create.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sync.apply import COUNTED, Applier, Done, Entry
from sync.apply import apply_in_order as apply_in_order  # its home was here; utils/locks.py names it so
from sync.engine import Action, plan
from sync.guard import guard_reason, held_refusal, judge
from sync.idle import IdleCheck, digest
from sync.ports import (
    ChangeLog,
    FailedRecords,
    GraphDirectory,
    Metrics,
    OperatorControl,
    Quarantine,
    Row,
    SafetyAmpTarget,
    SamsaraFleet,
    TargetRecords,
    ViewpointSource,
)
from sync.roster_model import CursorStore, RosterSource, ScimTarget
from utils.data_validator import InvalidValue, clean_code
from utils.errors import (
    AmbiguousWriteError,
    ChangeLogError,
    ConfigurationError,
    ConflictError,
    RecordError,
    SourceUnavailableError,
    SyncError,
)
from utils.locks import Lock, WriteFence
from utils.logger import in_context

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger("sync")

T = TypeVar("T")

AMBIGUOUS_CREATE_ATTEMPTS = 3
"""Creates whose outcome was unknown, each re-checked by key before the next one."""

COUNT_KEYS = ("created", "updated", "deactivated", "unchanged", "skipped", "failed")


@dataclass(frozen=True)
class Rejected:
    """A source record we refused (validation) or a field we dropped from it."""

    key: str
    reason: str
    fields: tuple[str, ...] = ()
    payload: Mapping[str, Any] | None = None
    kind: str = "rejected"  # rejected | field_dropped


@dataclass
class Desired:
    """What a sync's ``load`` returns: the target as the source wants it."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    deactivate: set[str] = field(default_factory=set)
    source_count: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """Outcome of one sync run; also the per-sync entry of the JSON summary."""

    sync: str
    status: str = "success"  # success | partial | failed | skipped
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in COUNT_KEYS})
    duration_seconds: float = 0.0
    error: str | None = None
    guard_tripped: bool = False
    plan: list[dict[str, Any]] = field(default_factory=list)
    """The writes a dry run would send (filled in dry runs only)."""
    blameless: bool = False
    """Failed for a reason outside the sync and its services (its change log could not
    be written, a setting is wrong): the quarantine does not back it off, the fix is ours
    to make and the next run after it must go ahead."""
    configuration_error: bool = False
    """Failed on a setting only the run could check (a VIEWPOINT_TITLE_COLUMN the database
    lacks): sync_batch.py exits 2, as for any configuration error."""
    rejected: int = 0
    """Source records refused before any write (also counted in ``counts["failed"]``);
    the quarantine judges a run by its write failures only."""
    errors_file: str | None = None
    """The run's errors file (every rejected or failed record), when it wrote one."""
    changes_file: str | None = None
    """The run's changes file, once written."""
    started_at: str | None = None
    """When the run started (ISO UTC), for the run history."""
    approval: dict[str, Any] | None = None
    """The operator's approval that let a batch the deactivation guard held go through
    (utils.control), when this run used one."""
    held: list[str] = field(default_factory=list)
    """The keys whose deactivation the guard refused in this run and an operator may
    approve (not the empty-read refusal)."""
    overrode_quarantine: bool = False
    """An operator's run went ahead although the sync was quarantined."""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sync": self.sync, "status": self.status, **self.counts}
        out["duration_seconds"] = round(self.duration_seconds, 3)
        if self.error:
            out["error"] = self.error
        if self.guard_tripped:
            out["guard_tripped"] = True
        if self.configuration_error:
            out["configuration_error"] = True
        if self.errors_file:
            out["errors_file"] = self.errors_file
        if self.approval:
            out["approval"] = self.approval
        return out


@dataclass
class SyncContext:
    """Everything a sync may use, wired once by ``bootstrap`` (tests pass fakes)."""

    settings: Settings
    targets: TargetRecords
    """The SafetyAmp account for this run (services.data_manager.NoTarget when no sync of
    the run uses SafetyAmp)."""
    tracker: FailedRecords
    events: ChangeLog
    metrics: Metrics
    today: date
    viewpoint: ViewpointSource | None = None
    graph: GraphDirectory | None = None
    samsara: SamsaraFleet | None = None
    samsara_read: Any = None
    """services.samsara_read.SamsaraReadStore: the saved Samsara read the vehicles sync may
    use instead of reading Samsara (with SAMSARA_WEBHOOK_SECRET); None: always read."""
    dry_run: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[str, int, int], None] | None = None
    max_workers: int = 4
    source_cache: dict[str, object] = field(default_factory=dict)
    locks: Callable[[str], Lock] | None = None
    """name -> lock (acquire(blocking=False) -> bool, release(), holder()); None: no locking."""
    quarantine: Quarantine | None = None
    control: OperatorControl | None = None
    """utils.control.ControlStore: operator pauses, held deactivations and approvals, run
    history; None: no operator state (tests)."""
    fence: WriteFence | None = None
    """utils.locks.WriteFence: the locks this runner must still own for a write to go out
    (checked in Redis before every write request); None: no locking (dry runs, tests)."""
    on_result: Callable[[RunResult], None] | None = None
    """Called after each sync of the cycle (the daemon's /health shows it at once)."""
    on_start: Callable[[str], None] | None = None
    """Called when a sync of the cycle starts (the daemon's state shows it running)."""
    runner_kind: str = "cli"
    """Who runs: ``daemon`` or ``cli`` (sync_batch.py); kept in the run history."""
    only_key: str | None = None
    """Plan and apply this one record only (the console's "sync this record now"): the
    desired and current records are cut down to this key after they are read; nothing
    else is created, updated or deactivated."""
    forced: frozenset[str] = frozenset()
    requested_by: dict[str, str] = field(default_factory=dict)
    """sync -> who asked for this run (console operators, "trigger token"); the run history shows it."""
    """Syncs an operator forced (``sync_batch.py --force``, an authenticated ``POST /sync``):
    quarantine does not hold them back. Their outcome counts like any run's."""
    # rosters (issue 4): OneRoster source, SCIM target, delta cursor store, --full
    oneroster: RosterSource | None = None
    scim: ScimTarget | None = None
    roster_cursor: CursorStore | None = None
    full: bool = False
    _source_pending: dict[str, threading.Event] = field(default_factory=dict, repr=False)
    _source_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _source_digests: dict[str, str] = field(default_factory=dict, repr=False)
    _declared: set[str] | None = field(default=None, repr=False)
    _undeclared: set[str] = field(default_factory=set, repr=False)

    @property
    def safetyamp(self) -> SafetyAmpTarget:
        return self.targets.target

    def source(self, name: str, loader: Callable[[], T]) -> T:
        """Read a source collection once per run (employees are used by two syncs). A
        read started by ``prefetch_sources`` is waited for; if it failed, the source is
        read here, so the error (after its own retries) is this sync's. One name, one
        loader: the cached value is what that loader returned."""
        with self._source_lock:
            pending = self._source_pending.get(name)
            if self._declared is not None and name not in self._declared:
                self._undeclared.add(name)
        if pending is not None:
            pending.wait()
        with self._source_lock:
            if name in self.source_cache:
                return cast(T, self.source_cache[name])
        value = loader()
        with self._source_lock:
            return cast(T, self.source_cache.setdefault(name, value))

    def source_digest(self, name: str, loader: Callable[[], object]) -> str:
        """A hash of the source ``name`` (read through ``source``), once per run
        (sync/idle.py)."""
        value = self.source(name, loader)
        with self._source_lock:
            known = self._source_digests.get(name)
        if known is None:
            known = digest(value)
            with self._source_lock:
                self._source_digests[name] = known
        return known

    def track_reads(self, declared: set[str] | None) -> set[str]:
        """Start noting source reads outside ``declared`` (None: stop); returns the names
        noted since the last call (sync/idle.py: a plan that read more than its key
        describes is not saved)."""
        with self._source_lock:
            noted = set(self._undeclared)
            self._declared = declared
            self._undeclared = set()
        return noted

    def prefetch_sources(self, loaders: Mapping[str, Callable[[], object]]) -> threading.Thread:
        """Read sources (in order) on a background thread while earlier syncs run: the
        database's and the APIs' waiting overlaps other work instead of adding to it.
        Still one read per source and run."""
        with self._source_lock:
            todo = {n: f for n, f in loaders.items() if n not in self.source_cache and n not in self._source_pending}
            events = {n: self._source_pending.setdefault(n, threading.Event()) for n in todo}

        def work() -> None:
            for name, loader in todo.items():
                try:
                    value = loader()
                    with self._source_lock:
                        self.source_cache.setdefault(name, value)
                except Exception as exc:  # the sync that needs it reads it again and reports
                    log.debug("prefetch of source %s failed: %s", name, exc)
                finally:
                    with self._source_lock:
                        self._source_pending.pop(name, None)
                    events[name].set()

        thread = threading.Thread(target=in_context(work), name="prefetch-sources", daemon=True)
        thread.start()
        return thread


_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False)
"""One encoder for every fingerprint (same text as json.dumps with these options, without
building an encoder per call: 70 000 records a run at 50 000 employees)."""


def fingerprint(*parts: Any) -> str:
    """Stable hash of a record's inputs: the tracker retries a record at once when it changes."""
    blob = _FINGERPRINT_JSON.encode(parts)
    # surrogatepass: a lone surrogate (valid in JSON from an API) hashes instead of
    # failing the sync; every other text encodes exactly as before (same fingerprints).
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class BaseSync:
    """Run loop shared by every SafetyAmp sync."""

    name: str = ""
    collection: str = ""
    key_field: str = ""
    deactivation: Mapping[str, Any] | None = None
    compare_fields: tuple[str, ...] | None = None
    """Fields an update may change (None: all desired fields)."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._slog: Any = None  # the running sync's change log (set by _run)
        self._fresh: dict[str, Row] | None = None
        """The collection read afresh for the checks of writes planned from the shadow,
        when reading it costs fewer requests than looking each key up."""

    @property
    def viewpoint(self) -> ViewpointSource:
        if self.ctx.viewpoint is None:
            raise ConfigurationError(f"the {self.name} sync needs Viewpoint: set VIEWPOINT_DB_URL or SQL_*")
        return self.ctx.viewpoint

    @property
    def samsara(self) -> SamsaraFleet:
        if self.ctx.samsara is None:
            raise ConfigurationError(f"the {self.name} sync needs Samsara: set SAMSARA_API_KEY")
        return self.ctx.samsara

    # ---- what a sync provides ---------------------------------------------------
    def load(self) -> Desired:
        raise NotImplementedError

    def inputs(self) -> dict[str, Callable[[], Any]]:
        """Every named source read ``load`` makes through ``ctx.source``, by name: an
        idle cycle compares their digests with the last quiet plan's instead of planning
        again (sync/idle.py). Empty: this sync plans every run."""
        return {}

    def release(self) -> None:
        """Let go of source values no later sync of the cycle reads (memory)."""

    @classmethod
    def sources(cls, ctx: SyncContext) -> dict[str, Callable[[], Any]]:
        """The named reads ``load`` makes through ``ctx.source``: the runner starts them
        in the background at the start of a cycle (none by default)."""
        return {}

    def key_of(self, row: Row) -> str | None:
        value = row.get(self.key_field)
        if value is None or str(value).strip() == "":
            return None
        return str(value).strip()

    @classmethod
    def key_from_text(cls, text: str) -> str:
        """The key an operator's ``text`` names (``diagnose``); InvalidValue with the
        reason when no record of this sync can have it."""
        key = clean_code(text, "key")
        if key is None:
            raise InvalidValue(f"a {cls.key_field} is needed (the key is blank)")
        return key

    def current(self) -> dict[str, Row]:
        """Target records by key (records without a key, or without an id to write
        them by, are not ours)."""
        out: dict[str, Row] = {}
        for row in self.ctx.targets.get(self.collection):
            key = self.key_of(row)
            if key is not None and isinstance(row.get("id"), (int, str)):
                out.setdefault(key, row)
        return out

    def create_payload(self, action: Action) -> dict[str, Any]:
        """Payload of a create; syncs add create-only defaults here."""
        return dict(action.payload)

    def update_payload(self, action: Action, current: Row) -> dict[str, Any]:
        return dict(action.payload)

    def active_count(self, current: Mapping[str, Row]) -> int:
        """Active target records (the guard's base)."""
        if not self.deactivation:
            return len(current)
        return sum(1 for row in current.values() if any(row.get(k) != v for k, v in self.deactivation.items()))

    def prepare(self) -> list[Row]:
        """Hook before loading (e.g. ensure a parent record exists); returns the records
        it created so they are counted and logged like any other create."""
        return []

    # ---- the run ----------------------------------------------------------------
    def run(self) -> RunResult:
        return run_recorded(self.name, self.ctx, self._run)

    def _run(self, result: RunResult, slog: Any) -> None:
        self._slog = slog
        for _row in self.prepare():  # each one recorded, intent and outcome, by _create
            result.counts["created"] += 1
        idle = IdleCheck.start(self) if result.counts["created"] == 0 else None
        if idle is not None and idle.replay(result, slog):
            self.release()
            return
        desired = self.load()
        whole = self.current()
        current = whole
        only = self.ctx.only_key
        if only is not None:
            # One record: everything else is left out of the plan (the guard still judges
            # against the whole target, and an empty read still stops it).
            desired = only_record(desired, only)
            current = {k: v for k, v in whole.items() if k == only}
        record_rejections(desired.rejected, result, slog)
        records = self._not_held_back(desired, result)
        actions = plan(
            records, current, deactivate=desired.deactivate, deactivation=self.deactivation, compare=self.compare_fields
        )
        actions, refused = self._one_record_hold(actions, only, result)
        actions = self._guard(actions, desired, whole, result)
        writes = [a for a in actions if a.is_write]
        if self.ctx.dry_run or only is not None:  # only these show it: 70 000 described writes cost 150 MB
            result.plan = [self._describe(a) for a in writes]
        result.counts["unchanged"] += len(actions) - len(writes)
        if not self.ctx.dry_run:
            self._fresh_for_checks(writes, len(whole))
        applier: Applier[Action, Row] = Applier(self.name, self.ctx, slog, result, workers=self.ctx.max_workers)
        applier.apply(writes, lambda a: self._entry(a, desired), lambda a: self._send(a, current.get(a.key), records.get(a.key)))
        if idle is not None:
            idle.finish(result, desired, len(writes), refused)
        if result.guard_tripped:
            result.status = "failed"
        elif refused:
            result.status = "skipped"
        elif result.counts["failed"]:
            result.status = "partial"

    def _one_record_hold(self, actions: list[Action], only: str | None, result: RunResult) -> tuple[list[Action], bool]:
        """A one-record run ("sync this record now") leaves out the deactivation of a
        record in the batch the guard holds: alone, it would go round the approval (and
        change the list an operator may be reviewing)."""
        if only is None or not any(a.kind == "deactivate" for a in actions):
            return actions, False
        refused = held_refusal(self.ctx, self.name, only)
        if not refused:
            return actions, False
        result.error = refused
        log.warning(refused, extra={"sync": self.name})
        return [a for a in actions if a.kind != "deactivate"], True

    def _not_held_back(self, desired: Desired, result: RunResult) -> dict[str, dict[str, Any]]:
        """The desired records less those the failed-record tracker holds back (counted
        skipped). A one-record run ("sync this record now") is an operator asking for that
        record now: the queue's wait does not hold it back (it stays queued until a write
        succeeds)."""
        records = {}
        waits = not self.ctx.dry_run and self.ctx.only_key is None
        for key, rec in desired.records.items():
            fp = desired.fingerprints.get(key, "")
            if waits and self.ctx.tracker.should_skip(self.name, key, fp):
                result.counts["skipped"] += 1
                continue
            records[key] = rec
        return records

    def _guard(self, actions: list[Action], desired: Desired, whole: Mapping[str, Row], result: RunResult) -> list[Action]:
        """``actions`` less the deactivations the guard refuses (sync/guard.py).

        An empty read while the target holds records trips the guard even when nothing
        was planned for deactivation: otherwise a wrong VIEWPOINT_COMPANY or an emptied
        view reports "success" forever while leavers keep their access."""
        deactivations = [a.key for a in actions if a.kind == "deactivate"]
        refusal = None
        if deactivations or desired.source_count == 0:
            percent = self.settings.deactivation_guard_percent
            active = self.active_count(whole) if deactivations else 0
            refusal = guard_reason(len(deactivations), active, percent, source_count=desired.source_count, held=len(whole))
        (verdict,) = judge(self.ctx, result, self.name, [(refusal, deactivations)])
        if verdict == "refused":
            return [a for a in actions if a.kind != "deactivate"]
        return actions

    def _describe(self, action: Action) -> dict[str, Any]:
        return {
            "key": action.key,
            "action": action.kind,
            "changes": {c.field: c.as_dict() for c in action.changes},
        }

    def _entry(self, action: Action, desired: Desired) -> Entry:
        return Entry(
            action.key,
            action.kind,
            self.collection,
            action.target_id,
            desired.fingerprints.get(action.key, ""),
            dict(action.payload),
            {c.field: c.as_dict() for c in action.changes},
        )

    def _send(self, action: Action, row: Row | None, want: Mapping[str, Any] | None = None) -> Done[Row]:
        """One planned write to SafetyAmp (the applier records it)."""
        shadowed = getattr(self.ctx.targets, "shadowed", None)
        if shadowed is not None and shadowed(self.collection):
            return self._send_from_shadow(action, row, want)
        return self._send_direct(action, row)

    def _send_direct(self, action: Action, row: Row | None) -> Done[Row]:
        if action.kind == "create":
            created = self._create(self.create_payload(action), action.key, recorded=True)
            self.ctx.targets.put(self.collection, created)
            return Done("created", None, dict(action.payload))
        assert row is not None and action.target_id is not None
        self.ctx.safetyamp.update(self.collection, action.target_id, self.update_payload(action, row))
        self.ctx.targets.merge(self.collection, action.target_id, action.payload)
        return Done(COUNTED[action.kind], _subset(row, action.payload), dict(action.payload))

    # ---- writes planned from the target shadow ------------------------------------
    def _send_from_shadow(self, action: Action, row: Row | None, want: Mapping[str, Any] | None) -> Done[Row]:
        """A write planned against the target shadow (services/target_shadow.py), which
        may miss what others changed in SafetyAmp since the last full read:

        - a create first looks the key up (one GET): found, the record is adopted and
          re-planned against what SafetyAmp holds (never a second record);
        - a deactivation first reads the record by key: gone or already inactive, nothing
          is sent; otherwise it is re-planned against SafetyAmp's copy (the guard judged
          the batch before, from the same numbers as a full read);
        - an update goes out directly; refused with a 404 (the id is gone), the record is
          read by key and re-planned (created again when it is missing).

        Each discovery marks the shadow stale: the next cycle reads SafetyAmp fully."""
        if action.kind == "create":
            fresh = self._find(action.payload.get(self.key_field, action.key), action.key)
            if fresh is None:
                try:
                    return self._send_direct(action, None)
                except ConflictError as exc:  # the key exists after all (a case, a race): re-read it
                    if self.key_field not in exc.field_errors and exc.status != 409:
                        raise
                    fresh = self.ctx.safetyamp.find_by(self.collection, self.key_field, action.payload.get(self.key_field))
                    if fresh is None:
                        raise
            self.ctx.targets.mark_stale(self.collection, f"{action.key} exists although the shadow lacks it")
            return self._replan(action, fresh, want, adopted=True)
        if action.kind == "deactivate":
            fresh = self._find(row.get(self.key_field) if row else action.key, action.key)
            if fresh is None or fresh.get("id") != action.target_id:
                self.ctx.targets.mark_stale(self.collection, f"{action.key} is gone or has another id")
            if fresh is None:
                return Done("unchanged")
            return self._replan(action, fresh, want)
        assert row is not None and action.target_id is not None
        try:
            return self._send_plain(action, row)
        except RecordError as exc:
            if exc.status != 404:
                raise
        self.ctx.targets.mark_stale(self.collection, f"{action.key}: id {action.target_id} is gone")
        fresh = self.ctx.safetyamp.find_by(self.collection, self.key_field, row.get(self.key_field) or action.key)
        if fresh is None:
            if not want:
                return Done("unchanged")
            created = self._create(self.create_payload(_create_action(action.key, want)), action.key, recorded=True)
            self.ctx.targets.put(self.collection, created)
            return Done("created", None, dict(want), logged_as="create")
        return self._replan(action, fresh, want)

    def _fresh_for_checks(self, writes: Sequence[Action], held: int) -> None:
        """Writes planned from the shadow are checked against SafetyAmp (creates and
        deactivations: one lookup by key each). When there are more of them than the
        pages of a full read of the collection, one full read of it serves every check."""
        shadowed = getattr(self.ctx.targets, "shadowed", None)
        if shadowed is None or not shadowed(self.collection):
            return
        checks = sum(1 for a in writes if a.kind in ("create", "deactivate"))
        pages = -(-held // max(1, int(self.settings.safetyamp_page_size))) + 1
        if checks <= pages:
            return
        fresh: dict[str, Row] = {}
        for row in self.ctx.safetyamp.list(self.collection):
            key = self.key_of(row)
            if key is not None and isinstance(row.get("id"), (int, str)):
                fresh.setdefault(key, row)
        self._fresh = fresh
        log.info("%d writes to check against SafetyAmp: read %s once instead", checks, self.collection, extra={"sync": self.name})

    def _send_plain(self, action: Action, row: Row) -> Done[Row]:
        self.ctx.safetyamp.update(self.collection, action.target_id, self.update_payload(action, row))
        self.ctx.targets.merge(self.collection, action.target_id, action.payload)
        return Done(COUNTED[action.kind], _subset(row, action.payload), dict(action.payload))

    def _find(self, value: Any, key: str) -> Row | None:
        """SafetyAmp's record of this key now (one read, or the fresh read of the
        collection when one was made for the checks), or None."""
        if self._fresh is not None:
            return self._fresh.get(key)
        if value is None:
            return None
        fresh = self.ctx.safetyamp.find_by(self.collection, self.key_field, value)
        if fresh is not None and not isinstance(fresh.get("id"), (int, str)):
            return None
        return fresh

    def _replan(self, action: Action, fresh: Row, want: Mapping[str, Any] | None, *, adopted: bool = False) -> Done[Row]:
        """Plan ``action``'s record again against SafetyAmp's copy ``fresh`` and send what
        is left to change (one write at most)."""
        self.ctx.targets.put(self.collection, fresh)
        key = action.key
        if action.kind == "deactivate":
            again = plan({}, {key: fresh}, deactivate=[key], deactivation=self.deactivation, compare=self.compare_fields)
        else:
            again = plan({key: dict(want or action.payload)}, {key: fresh}, compare=self.compare_fields)
        todo = [a for a in again if a.is_write]
        if not todo or todo[0].kind != action.kind or dict(todo[0].payload) != dict(action.payload):
            self.ctx.targets.mark_stale(self.collection, f"{key}: SafetyAmp holds other values than the shadow")
        if not todo:
            return Done("unchanged", logged_as="adopted" if adopted else None)
        step = todo[0]
        self.ctx.safetyamp.update(self.collection, fresh["id"], self.update_payload(step, fresh))
        self.ctx.targets.merge(self.collection, fresh["id"], step.payload)
        outcome = "updated" if step.kind == "update" else COUNTED[step.kind]
        return Done(outcome, _subset(fresh, step.payload), dict(step.payload), logged_as="adopted" if adopted else None)

    def _create(
        self,
        payload: dict[str, Any],
        key: str,
        collection: str | None = None,
        key_field: str | None = None,
        *,
        recorded: bool = False,
    ) -> Row:
        """Create one record (re-checked by key when the answer is lost). ``recorded``:
        the applier records this write; otherwise (``prepare`` hooks) the create records
        its own intent before sending and its outcome after."""
        target = self.ctx.safetyamp
        collection = collection or self.collection
        key_field = key_field or self.key_field
        slog = None
        intent = None
        if not recorded:
            if self._slog is None:
                raise RuntimeError(f"{self.name}: a create outside a run would go out without a change log record")
            slog = self._slog
            intent = slog.intent(key, "create", target=collection)
        shadowed = getattr(self.ctx.targets, "shadowed", None)
        if not recorded and shadowed is not None and shadowed(collection):
            # A create planned from the shadow (a prepare hook): look the key up first.
            found = target.find_by(collection, key_field, payload.get(key_field, key))
            if found is not None:
                self.ctx.targets.mark_stale(collection, f"{key} exists although the shadow lacks it")
                if slog is not None:
                    slog.settled(intent, "already in SafetyAmp (the shadow lacked it): adopted")
                return found
        try:
            created = create_once(
                lambda: target.create(collection, payload),
                lambda: target.find_by(collection, key_field, payload.get(key_field, key)),
                sync=self.name,
                key=key,
            )
        except SyncError as exc:
            if slog is not None and not isinstance(exc, ChangeLogError):
                slog.error(key, exc.message, payload=payload, kind="failed", intent=intent)
            raise
        if slog is not None:
            slog.change(key, "create", None, dict(created), None, intent=intent)
        return created


def record_rejections(rejected: Sequence[Rejected], result: RunResult, slog: Any, prefix: str = "") -> None:
    """Record the source records a sync refused (and the fields it dropped): refusals
    count as failed, and as rejected (not write failures) for the quarantine."""
    for rej in rejected:
        slog.error(prefix + rej.key, rej.reason, payload=rej.payload, fields=list(rej.fields), kind=rej.kind)
        count_rejection(rej.kind, result)


def count_rejection(kind: str, result: RunResult) -> None:
    """A refusal counts as failed, and as rejected for the quarantine; a dropped field
    does not count."""
    if kind == "rejected":
        result.counts["failed"] += 1
        result.rejected += 1


def only_record(desired: Desired, key: str) -> Desired:
    """``desired`` cut down to one key (a one-record run); the source count stays whole."""
    return Desired(
        records={k: v for k, v in desired.records.items() if k == key},
        fingerprints={k: v for k, v in desired.fingerprints.items() if k == key},
        rejected=[r for r in desired.rejected if r.key == key],
        deactivate={k for k in desired.deactivate if k == key},
        source_count=desired.source_count,
        notes=desired.notes,
    )


def run_recorded(name: str, ctx: SyncContext, body: Callable[[RunResult, Any], Mapping[str, Any] | None]) -> RunResult:
    """One sync run with its change log (EventManager): ``body(result, slog)`` does the
    work and may return extra fields for the changes file. Whatever goes wrong becomes the
    result's status and error, never an exception: a bug must fail this sync, not the
    daemon or the other syncs of the cycle."""
    result = RunResult(name)
    result.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    try:
        slog = ctx.events.start(name, dry_run=ctx.dry_run)
    except ChangeLogError as exc:  # nothing was read or sent: say so and let the next sync try
        result.status, result.error = "failed", exc.message
        result.duration_seconds = time.monotonic() - started
        log.error("sync failed: %s", result.error, extra={"sync": name})
        result.blameless = True
        _change_log_failed(ctx, name)
        return result
    extra: Mapping[str, Any] | None = None
    log_failed = False
    try:
        extra = body(result, slog)
    except SourceUnavailableError as exc:
        result.status, result.error = "failed", f"source unavailable: {exc.message}"
    except ConfigurationError as exc:  # found only at run time (a title column bPREH lacks)
        result.status, result.error = "failed", exc.message
        result.configuration_error = result.blameless = True  # a setting to fix: no back-off
    except SyncError as exc:  # FatalError, a page that failed to load, the change log, ...
        result.status, result.error = "failed", exc.message
        log_failed = isinstance(exc, ChangeLogError)
    except Exception as exc:
        log.exception("sync crashed", extra={"sync": name})
        result.status, result.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
    result.duration_seconds = time.monotonic() - started
    try:
        files = slog.finish(
            result.counts,
            result.status,
            {
                "error": result.error,
                "guard_tripped": result.guard_tripped,
                "plan": result.plan if ctx.dry_run else None,
                "approval": result.approval,
                **(extra or {}),
            },
        )
    except ChangeLogError as exc:
        if not log_failed:  # the writes are in the log; the run's files are not: it failed
            result.status = "failed"
            result.error = f"{result.error}; {exc.message}" if result.error else exc.message
            log_failed = True
    else:
        result.changes_file = str(files.changes)
        if files.errors is not None:
            result.errors_file = str(files.errors)
    if result.status == "failed":
        log.error("sync failed: %s", result.error, extra={"sync": name})
    if log_failed:
        result.blameless = True
        _change_log_failed(ctx, name)
    return result


def _change_log_failed(ctx: SyncContext, name: str) -> None:
    """Count a run stopped by its change log (the SyncChangeLogUnwritable alert)."""
    counter = getattr(ctx.metrics, "change_log_failures", None)
    if counter is not None and not ctx.dry_run:
        counter.labels(name).inc()


def create_once(
    create: Callable[[], Row], find: Callable[[], Row | None], *, sync: str, key: Any, attempts: int = AMBIGUOUS_CREATE_ATTEMPTS
) -> Row:
    """Create a record, re-checking by key when an attempt may have reached the target (a
    timeout, a reset after sending, a 5xx to a POST): a lost response never becomes a
    duplicate.

    Sent again (up to ``attempts`` times) only when the target had *finished* with the
    request (it answered, e.g. HTTP 500) and a read by key does not find the record. A
    request that may still be on its way in (a timeout, a dropped connection, a gateway's
    502/504) can be applied after that read: such a create, not found by key, is left
    unconfirmed (AmbiguousWriteError: failed for this run, never tracked as a refusal) and
    the next run, which reads the whole target (an unknown outcome makes the target shadow
    stale), finds it or creates it once."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except AmbiguousWriteError as exc:
            found = find()
            if found is not None:
                log.info("create was applied despite the lost response; not sending again", extra={"sync": sync, "key": key})
                return found
            if not exc.settled:
                raise AmbiguousWriteError(
                    f"{exc.message}; not found by key yet and the request may still be applied, so it is not sent "
                    "again in this run (the next run reads the target and creates it only if it is missing)",
                    service=exc.service,
                    status=exc.status,
                    settled=False,
                ) from exc
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _create_action(key: str, want: Mapping[str, Any]) -> Action:
    """The create ``plan`` would make for ``want`` (when an update's record is gone)."""
    (action,) = plan({key: dict(want)}, {})
    return action


def _subset(row: Row | None, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: row.get(k) for k in payload}
