"""The small interfaces the engine needs from outside systems.

sync/ never imports requests, sqlalchemy, msal or redis: it talks to these Protocols.
services/ implements them against the real systems (and the sandbox emulators);
tests implement them with in-memory fakes. Records cross these ports as plain dicts:
source rows keyed by the vendor's own column/field names, target records as the
target's JSON objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
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
