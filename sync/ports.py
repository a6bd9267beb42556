"""The small interfaces the engine needs from outside systems, and from the run-scoped
services bootstrap wires into ``SyncContext`` (the target cache, the change log, the
metrics, quarantine and operator control).

sync/ never imports requests, sqlalchemy, msal or redis: it talks to these Protocols.
services/ implements them against the real systems (and the sandbox emulators);
tests implement them with in-memory fakes. Records cross these ports as plain dicts:
source rows keyed by the vendor's own column/field names, target records as the
target's JSON objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

Row = dict[str, Any]


class ViewpointSource(Protocol):
    """Viewpoint Vista (SQL Server) read side. Every method reads one company
    (configured, never a literal) from the base tables (bPREH, bPRDP, ...), never SSN.
    A failed read raises SourceUnavailableError: never a partial list."""

    def departments(self) -> list[Row]:
        """bPRDP rows: PRDept, Description."""

    def jobs(self) -> list[Row]:
        """bJCJM rows joined to bJCCM: Job (trimmed), Description, JobStatus, Contract,
        Department (bJCCM.Department), ShipAddress, ShipCity, ShipState, ShipZip."""

    def employees(self) -> list[Row]:
        """bPREH rows, active and terminated: Employee, FirstName, MidName, LastName,
        Suffix, Email, Phone, CellPhone, Address, City, State, Zip, PRDept, HireDate,
        TermDate, RecentRehireDate, ActiveYN, JCCo, Job (trimmed), Title (the configured
        title column, aliased)."""

    def latest_jobs(self, since: date) -> dict[int, str]:
        """Employee -> Job (trimmed) of the most recent bPRJC row with PREndDate >= since."""

    def ping(self) -> None:
        """Cheap connectivity check (SELECT 1); raises SourceUnavailableError."""


class SafetyAmpTarget(Protocol):
    """SafetyAmp REST. ``collection`` is one of users, sites, site_clusters, user_titles,
    roles, asset_types, assets. Lists are complete or raise (never partial)."""

    def list(self, collection: str) -> list[Row]:
        """Every record of a collection (site_clusters flattened from its tree)."""

    def create(self, collection: str, payload: Mapping[str, Any]) -> Row:
        """POST; returns the created object (with ``id``)."""

    def update(self, collection: str, record_id: int | str, payload: Mapping[str, Any]) -> Row:
        """PATCH (users, site_clusters) or PUT (sites, assets) as the API expects."""

    def find_by(self, collection: str, field: str, value: Any) -> Row | None:
        """The record whose ``field`` equals ``value``, or None; used to re-check an
        ambiguous create before sending it again."""


class GraphDirectory(Protocol):
    """Microsoft Graph users (client credentials)."""

    def users(self) -> list[Row]:
        """Every user: id, employeeId, mail, userPrincipalName, accountEnabled."""


class SamsaraFleet(Protocol):
    """Samsara fleet API."""

    def vehicles(self) -> list[Row]:
        """Every vehicle of /fleet/vehicles (all cursor pages)."""

    def drivers(self) -> list[Row]:
        """Every driver of /fleet/drivers (all cursor pages)."""


class FailedRecords(Protocol):
    """Failed-record tracker (Redis in production)."""

    def should_skip(self, sync: str, key: str, fingerprint: str) -> bool:
        """True while the record failed with these same inputs and its retry is not due."""

    def record_failure(self, sync: str, key: str, fingerprint: str, reason: str, fields: Iterable[str]) -> None:
        """Remember a record-level failure; schedules the next attempt."""

    def record_success(self, sync: str, key: str) -> None:
        """Forget a record once it went through."""

    def count(self, sync: str) -> int:
        """Records currently tracked as failing for a sync."""

    def list(self, sync: str | None = None) -> list[dict[str, Any]]:
        """Every tracked record of ``sync`` (every sync when None), each with its ``status``
        (due, waiting, quarantined) as of now."""


BULK_REF = "bulkId:"
"""A member value naming a User created in the same bulk request (RFC 7644 section 3.7.2)."""


@dataclass(frozen=True)
class ScimWrite:
    """One write intent of a batch (``ScimTarget.send_batch``), in the port's flat terms.

    ``intent``: create_user | update_user | deactivate_user | delete_user | create_group |
    change_members | delete_group. ``ref`` is unique in the batch: the bulkId of a create,
    so ``add`` of a later write may name that user as ``bulkId:<ref>``. ``fields``: the
    flat fields of a create, or the changed ones of ``update_user``."""

    intent: str
    ref: str
    row: Mapping[str, Any] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    display_name: str | None = None


@dataclass(frozen=True)
class ScimOutcome:
    """What became of one ``ScimWrite`` of a batch: ``id`` (the resource's SCIM id) when
    it went through, else ``error`` (RecordError/ConflictError for a refusal of that
    operation, RetriableError/RateLimitedError for a 5xx/429 of that operation,
    AmbiguousWriteError when its outcome is unknown: the bulk response was lost)."""

    ref: str
    status: int
    id: str | None = None
    error: Exception | None = None


class ScimTarget(Protocol):
    """A SCIM 2.0 service provider (RFC 7644) in the rosters sync's terms. ``resource``
    is ``Users`` or ``Groups``; reads return the provider's JSON objects (lists are
    complete or raise); writes are intents in flat fields (``userName``, ``displayName``,
    ``givenName``, ``familyName``, ``email``, ``active``, ``externalId``, ``role``): the
    adapter owns the request formats (User resource, PatchOps, member filters, If-Match).
    A write refused because the resource changed since it was read raises RecordError
    with status 412; the sync re-reads it (``get``) and plans the write again."""

    def list(self, resource: str) -> list[dict[str, Any]]:
        """Every resource of a type (all pages)."""
        ...

    def get(self, resource: str, resource_id: str) -> dict[str, Any]:
        """One resource by its SCIM id."""
        ...

    def find(self, resource: str, attribute: str, value: str) -> dict[str, Any] | None:
        """The resource whose ``attribute`` equals ``value`` (a filter ``eq``), or None."""
        ...

    def read_all(self, resource: str) -> Iterable[dict[str, Any]]:
        """Every resource of a type, one at a time, as pages arrive (complete or raises)."""
        ...

    def slim(self, resource: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """What the sync keeps of a resource read: id, externalId, version and, for a
        User, what ``user_fields`` reads (a Group's members: ``member_ids``)."""
        ...

    def user_fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The flat, comparable fields of a User resource."""
        ...

    def member_ids(self, row: Mapping[str, Any]) -> set[str]:
        """The SCIM ids of a Group resource's members."""
        ...

    def create_user(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a User from flat fields (None fields left out); returns it (with ``id``)."""
        ...

    def update_user(self, row: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Set the flat ``changes`` on the User ``row`` (as read: its id and version)."""
        ...

    def deactivate_user(self, row: Mapping[str, Any], *, delete: bool = False) -> None:
        """``active=false``; removed instead when ``delete`` (SCIM_DELETE_MODE=delete)."""
        ...

    def create_group(self, fields: Mapping[str, Any], members: Iterable[str]) -> dict[str, Any]:
        """Create a Group (``displayName``, ``externalId``) with these member ids."""
        ...

    def change_members(
        self, row: Mapping[str, Any], *, add: Iterable[str] = (), remove: Iterable[str] = (), display_name: str | None = None
    ) -> None:
        """Add and remove members of the Group ``row`` (and rename it when
        ``display_name`` is given), in one write."""
        ...

    def delete_group(self, row: Mapping[str, Any]) -> None:
        """Remove the Group ``row`` (SCIM_DELETE_MODE=delete)."""
        ...

    def bulk_max_operations(self) -> int | None:
        """None when the provider takes no SCIM Bulk (or it is switched off); else its
        maxOperations."""
        ...

    def bulk_take(self, writes: Sequence[ScimWrite]) -> int:
        """How many of ``writes``, from the first, fit in one Bulk request (maxOperations,
        maxPayloadSize of the operations as they would be sent; at least one)."""
        ...

    def send_batch(self, writes: Sequence[ScimWrite]) -> Sequence[ScimOutcome]:
        """One Bulk request (RFC 7644 section 3.7) with these writes; one outcome each."""
        ...


class TargetRecords(Protocol):
    """The SafetyAmp account as one run sees it (services.data_manager.TargetCache):
    each collection read once, then kept up to date with the run's own writes."""

    @property
    def target(self) -> SafetyAmpTarget:
        """The adapter underneath, for writes."""

    def get(self, collection: str) -> list[Row]:
        """Every record of ``collection``; read from the target on first use only."""

    def put(self, collection: str, row: Mapping[str, Any]) -> None:
        """Add or replace a record this run created."""

    def merge(self, collection: str, record_id: Any, fields: Mapping[str, Any]) -> None:
        """Apply the fields this run updated to the cached record."""

    def prefetch(self, collections: Iterable[str]) -> object:
        """Start reading ``collections`` in the background (still one read each)."""

    def shadowed(self, collection: str) -> bool:
        """True when this cycle's ``collection`` came from the target shadow (the last
        full read plus acknowledged writes), not from a read of SafetyAmp."""

    def mark_stale(self, collection: str, reason: str) -> None:
        """A write found the shadow wrong: the next cycle reads SafetyAmp fully."""


class WrittenFiles(Protocol):
    """Where a finished run's change log went (services.event_manager.RunFiles)."""

    @property
    def changes(self) -> Path: ...

    @property
    def errors(self) -> Path | None: ...


class RunLog(Protocol):
    """One sync run's change log (services.event_manager.SyncLog): an intent is written
    durably before each write, then its outcome. Raises ChangeLogError once it cannot
    write: the caller must then not send the write."""

    def intent(self, key: Any, action: str, *, target: str, target_id: Any = None) -> int:
        """Record that a write is about to go out; returns its number for the outcome."""

    def change(
        self,
        key: Any,
        action: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        fields: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        intent: int | None = None,
    ) -> None:
        """Record one change (``created``, ``updated``, ``deactivated``, ...)."""

    def error(
        self,
        key: Any,
        reason: str,
        *,
        target_body: Any = None,
        payload: Mapping[str, Any] | None = None,
        fields: Iterable[str] | Mapping[str, Any] | None = None,
        kind: str = "rejected",
        intent: int | None = None,
    ) -> None:
        """Record a record-level problem (rejected, failed, field_dropped)."""

    def rejection(
        self,
        key: Any,
        reason: str,
        *,
        payload: Mapping[str, Any] | None = None,
        fields: Iterable[str] = (),
        kind: str = "rejected",
    ) -> dict[str, Any]:
        """A source record's rejection as ``error`` records it (scrubbed), without its time."""

    def errors_again(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Record ``rejection`` entries of an earlier run again, with this run's time."""

    def settled(self, intent: int, note: str) -> None:
        """Close an intent that ended in neither a change nor an error."""

    def finish(self, counts: Mapping[str, Any], status: str, extra: Mapping[str, Any] | None = None) -> WrittenFiles:
        """Write the run's changes (and errors) files."""


class ChangeLog(Protocol):
    """The change logs of one cycle (services.event_manager.EventManager): one RunLog
    per sync run, all under the cycle's ``run_id``."""

    run_id: str

    def start(self, sync: str, *, dry_run: bool | None = None) -> RunLog:
        """Open the log of one sync run; raises ChangeLogError when it cannot be written."""

    def prune(self, max_age_days: float, max_runs: int) -> list[Path]:
        """Delete the files of old runs; returns what was deleted."""


class CounterSample(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class GaugeSample(Protocol):
    def set(self, value: float) -> None: ...


class HistogramSample(Protocol):
    def observe(self, amount: float) -> None: ...


class Counter(Protocol):
    def labels(self, *values: str) -> CounterSample: ...


class Gauge(Protocol):
    def labels(self, *values: str) -> GaugeSample: ...


class Histogram(Protocol):
    def labels(self, *values: str) -> HistogramSample: ...


class Metrics(Protocol):
    """The series the engine reports to (utils.metrics.Metrics; names in docs/metrics.md)."""

    @property
    def sync_runs(self) -> Counter:
        """Runs by sync and final status."""

    @property
    def sync_records(self) -> Counter:
        """Records by sync and action (the run's counts)."""

    @property
    def sync_duration(self) -> Histogram:
        """Run duration by sync."""

    @property
    def last_success(self) -> Gauge:
        """When a sync last succeeded."""

    @property
    def failed_records(self) -> Gauge:
        """Records the failed-record tracker holds, by sync."""

    @property
    def deactivation_guard(self) -> Counter:
        """Deactivation batches the guard refused, by sync."""

    @property
    def change_log_failures(self) -> Counter:
        """Runs stopped because their change log could not be written, by sync."""


class Quarantine(Protocol):
    """Backs off a sync whose runs keep failing (utils.quarantine.Quarantine)."""

    def blocks(self, sync: str) -> str | None:
        """Why ``sync`` must not run now, or None."""

    def record(self, sync: str, status: str, counts: dict[str, int], error: str | None) -> None:
        """Judge a finished run."""


class OperatorControl(Protocol):
    """Operator state (utils.control.ControlStore): pauses, deactivation batches held by
    the guard and their approvals, the audit trail and the run history."""

    def paused(self, sync: str) -> dict[str, Any] | None:
        """The pause of ``sync``, or None."""

    def pause_reason(self, entry: dict[str, Any]) -> str:
        """A pause as the reason a run was skipped."""

    def hold(self, sync: str, keys: list[str], *, reason: str, run_id: str) -> dict[str, Any]:
        """Record a batch the guard refused, for an operator to approve."""

    def clear_hold(self, sync: str) -> None:
        """Forget an obsolete held batch."""

    def held(self, sync: str) -> dict[str, Any] | None:
        """The batch the guard holds for approval (keys, count, digest), or None."""

    def approval(self, sync: str) -> dict[str, Any] | None:
        """The operator's approval waiting for ``sync``, without using it."""

    def take_approval(self, sync: str, keys: list[str]) -> dict[str, Any] | None:
        """Use the approval of exactly this batch, once."""

    def audit(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        target: str,
        result: str,
        detail: dict[str, Any] | None = None,
    ) -> object:
        """Add an entry to the audit trail."""

    def record_run(self, entry: dict[str, Any]) -> None:
        """Add a run to the history."""
