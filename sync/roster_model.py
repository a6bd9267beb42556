"""The rosters sync's view of its source and target: version-free records and two ports.

Why a model of its own: OneRoster comes in four shapes (REST 1.1, REST 1.2, CSV 1.1,
CSV 1.2) that disagree on where a user's role and schools live (1.1: ``role`` and
``orgs``; 1.2: ``roles[]`` with an ``org`` each, and in CSV a separate roles.csv). The
adapters in services/ turn every shape into these frozen records, so sync/sync_rosters.py
plans once for all of them and never sees a vendor field name.

``RosterSnapshot`` also says how much of each collection a read covers, because that
decides what absence means:

    *_full = True    a complete read: a record missing from it is gone from the source
    *_full = False   a delta: only the records it lists changed; absence means nothing
    *_full = None    the collection was not supplied at all (a CSV drop marked "absent")
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sync.ports import ScimTarget as ScimTarget  # the port lives with the others; this name stays

ACTIVE = "active"
TOBEDELETED = "tobedeleted"


@dataclass(frozen=True, slots=True)
class RosterUser:
    """One OneRoster user. ``roles`` pairs each role with the org it holds it in
    (``None`` when the source gave no role information at all, e.g. a 1.2 CSV drop
    without roles.csv)."""

    sourced_id: str
    status: str = ACTIVE
    enabled: bool = True
    username: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    identifier: str | None = None
    roles: tuple[tuple[str, str | None], ...] | None = ()
    primary_role: str | None = None
    date_last_modified: str | None = None

    @property
    def orgs(self) -> set[str]:
        return {org for _role, org in (self.roles or ()) if org}


@dataclass(frozen=True, slots=True)
class RosterClass:
    """One OneRoster class (a section): becomes a SCIM Group."""

    sourced_id: str
    status: str = ACTIVE
    title: str | None = None
    class_code: str | None = None
    school: str | None = None
    date_last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class RosterEnrollment:
    """A user's place in a class (student, teacher, aide, ...). Slotted, as the other
    records: a district's million enrollments as objects with a ``__dict__`` each cost
    about twice the memory."""

    sourced_id: str
    status: str = ACTIVE
    user: str | None = None
    class_id: str | None = None
    school: str | None = None
    role: str | None = None
    date_last_modified: str | None = None
    """Not filled by the REST and CSV adapters (services/oneroster_json.py): unused, and
    a million of them cost 80 MB."""


@dataclass
class RosterSnapshot:
    """What one read of the source returned (see the module docstring for *_full)."""

    users: dict[str, RosterUser] = field(default_factory=dict)
    classes: dict[str, RosterClass] = field(default_factory=dict)
    enrollments: dict[str, RosterEnrollment] = field(default_factory=dict)
    users_full: bool | None = True
    classes_full: bool | None = True
    enrollments_full: bool | None = True
    enrollment_gaps: set[str] = field(default_factory=set)
    """Schools whose enrollments could not be read completely ("*" = every school):
    the classes of those schools keep their members this run."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(key, reason) of source records that could not be used (no sourcedId, ...)."""
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def is_delta(self) -> bool:
        return not (self.users_full and self.classes_full and self.enrollments_full)

    def enrollments_gap_for(self, school: str | None) -> bool:
        return "*" in self.enrollment_gaps or (school is not None and school in self.enrollment_gaps)


class RosterSource(Protocol):
    """A OneRoster source (REST or CSV). A read that cannot cover a collection it
    claims to cover raises SourceUnavailableError: never a silently partial list."""

    supports_delta: bool
    """True for REST (dateLastModified filter); a CSV drop says per file itself."""

    def read(self, since: datetime | None, schools: Collection[str]) -> RosterSnapshot:
        """Users, classes and enrollments; ``since`` asks for a delta (records modified
        after it), None for a full read. ``schools`` may narrow what is read."""
        ...


class CursorStore(Protocol):
    """Where the delta cursor lives between runs (Redis in production)."""

    def load(self) -> dict[str, str] | None:
        """``{"cursor": iso, "last_full": iso}`` or None (unknown: do a full run)."""
        ...

    def save(self, state: Mapping[str, str]) -> None:
        """Remember the cursor of a complete run."""
        ...
