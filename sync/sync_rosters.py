"""The rosters sync: OneRoster (REST 1.1/1.2 or a CSV drop) -> SCIM 2.0 Users and Groups.

Not a BaseSync: that loop serves one SafetyAmp collection keyed by one field, while a
roster is two linked collections (a Group's members are the SCIM ids of Users created
in the same run) read either completely or as a delta. What it shares with the other
syncs: the functional core (``sync.engine.plan``), the deactivation guard and its held
batches (sync/guard.py), the applier (sync/apply.py: write-ahead change log, the
failed-record tracker, the consecutive-error limit, the write fence), the result and
rejection types. It speaks to SCIM in intents (the ``ScimTarget`` port); the request
formats live in services/scim_api.py.

The walk of one run goes one way: read the source and the target, plan the users
(pure: ``desired_users``, ``plan_users``), judge the guard, apply them, plan the groups
from the snapshot and the users' ids (pure: ``plan_groups``), apply them, record.

One run:

1. full or delta: a full read when asked (``--full``), when the cursor is unknown, when
   the last full run is older than ROSTER_FULL_SYNC_HOURS, or for a CSV drop (whose
   manifest says per file whether it is bulk or delta); otherwise a delta from the
   cursor (the start of the previous complete run) minus ROSTER_DELTA_OVERLAP_SECONDS;
2. read the source (``RosterSource.read``) and the SCIM target (all Users and Groups);
3. Users: active students/teachers (ROSTER_ROLES) of the configured schools
   (ROSTER_SCHOOLS, empty = all) become SCIM Users keyed by ``externalId = sourcedId``;
   ``tobedeleted``, ``enabledUser=false``, a role or school out of scope, or absence from
   a *complete* read deactivate (``active=false``; DELETE only with
   SCIM_DELETE_MODE=delete); the deactivation guard (DEACTIVATION_GUARD_PERCENT) applies;
4. Groups: one per class in scope (``externalId = class sourcedId``); members follow the
   enrollments: exactly, from a complete enrollments read; add/remove, from a delta.
   A class whose enrollments could not be read keeps its members. A deactivated user
   leaves every group. A class that is gone or ``tobedeleted`` loses its members (SCIM
   Groups have no ``active``), or is deleted with SCIM_DELETE_MODE=delete;
5. the cursor moves to this run's start only when the run was complete and clean.

With SCIM Bulk (the target announces it, SCIM_BULK on) steps 3 and 4 are planned first
and applied together: a user created in this run stands in its groups as
``bulkId:u<n>`` (RFC 7644 section 3.7.2), and the writes go out as Bulk requests
(``_apply_bulk``; docs/rosters.md, "SCIM Bulk").

The SCIM side assumes this sync is the only writer of ``externalId`` in the tenant:
a User or Group with an externalId is "ours" (docs/rosters.md).
"""

from __future__ import annotations

import logging
import resource as rusage
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.apply import COUNTED, Applier, Done, Entry
from sync.base import Desired, Rejected, RunResult, SyncContext, create_once, fingerprint, record_rejections, run_recorded
from sync.engine import FieldChange, diff, plan
from sync.guard import Refusal, guard_reason, judge
from sync.ports import BULK_REF, ScimWrite
from sync.roster_model import ACTIVE, RosterClass, RosterSnapshot, RosterUser
from utils.data_validator import InvalidValue, clean_code, clean_name, shown_key
from utils.errors import AmbiguousWriteError, ConflictError, FatalError, RecordError, RetriableError
from utils.timefmt import iso_z, parse_iso

log = logging.getLogger("sync.rosters")

USERS, GROUPS = "Users", "Groups"
SCIM_CODE_MAX_LENGTH = 255
"""sourcedId, userName and e-mail (an e-mail address has at most 254 characters)."""
SCIM_NAME_MAX_LENGTH = 255
DEACTIVATED = {"active": False}
DEFAULT_ROLES = ("student", "teacher")


# --------------------------------------------------------------------------------------
# pure rules (unit tested with literals)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RosterPolicy:
    """What the settings say about the roster: who is in scope and how they are written."""

    roles: tuple[str, ...] = DEFAULT_ROLES
    schools: tuple[str, ...] = ()
    username_field: str = "username"
    role_attribute: str = "title"
    delete_mode: bool = False

    @classmethod
    def from_settings(cls, s: Any) -> RosterPolicy:
        return cls(
            roles=tuple(s.roster_roles or DEFAULT_ROLES),
            schools=tuple(s.roster_schools or ()),
            username_field=s.roster_username_field,
            role_attribute=s.roster_role_attribute,
            delete_mode=s.scim_delete_mode == "delete",
        )


def user_in_scope(user: RosterUser, roles: Iterable[str], schools: Iterable[str]) -> tuple[bool | None, str]:
    """(True, "") to provision; (False, why) to deprovision; (None, why) when the source
    says too little to decide (no role information at all): neither."""
    if user.status != ACTIVE:
        return False, "status tobedeleted"
    if not user.enabled:
        return False, "enabledUser false"
    if user.roles is None:
        return None, "the source gives no role for this user"
    wanted = {r.lower() for r in roles}
    school_set = set(schools)
    for role, org in user.roles:
        if role.lower() in wanted and (not school_set or org in school_set):
            return True, ""
    if not any(role.lower() in wanted for role, _org in user.roles):
        return False, f"role {user.primary_role or '-'} not in ROSTER_ROLES"
    return False, "not in a configured school"


def class_in_scope(cls: RosterClass, schools: Iterable[str]) -> bool:
    school_set = set(schools)
    return cls.status == ACTIVE and (not school_set or cls.school in school_set)


def plan_members(
    desired: set[str] | None,
    current: set[str],
    ours: set[str],
    *,
    add: set[str] = frozenset(),  # type: ignore[assignment]
    remove: set[str] = frozenset(),  # type: ignore[assignment]
    keep: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[set[str], set[str]]:
    """(to add, to remove) for one group.

    ``desired`` (SCIM ids) is the exact managed membership from a complete read, or None
    for a delta, where ``add``/``remove`` say what changed. Only ``ours`` members are ever
    removed (someone else's members stay); ``keep`` are never removed (users whose
    deactivation the guard held back)."""
    if desired is not None:
        to_add = desired - current
        to_remove = (current & ours) - desired
    else:
        to_add = add - current
        to_remove = (remove & current) - add
    return to_add, to_remove - keep


def desired_users(snap: RosterSnapshot, ours: Collection[str], policy: RosterPolicy) -> tuple[Desired, dict[str, str]]:
    """The SCIM Users the source wants (flat fields, by sourcedId), the users to take
    down with the reason why, and the users refused. ``ours``: the externalIds the
    target holds (a complete read takes down those missing from it)."""
    out = Desired(source_count=len(snap.users))
    reasons: dict[str, str] = {}
    for sid, user in snap.users.items():
        verdict, why = user_in_scope(user, policy.roles, policy.schools)
        if verdict is None:
            if sid not in ours:
                out.rejected.append(Rejected(sid, why))
            continue
        if verdict is False:
            out.deactivate.add(sid)
            reasons[sid] = why
            continue
        rec = user_record(user, policy)
        if isinstance(rec, Rejected):
            out.rejected.append(rec)
            continue
        out.records[sid] = rec
        out.fingerprints[sid] = fingerprint(rec)
    if snap.users_full:
        for sid in ours:
            if sid not in snap.users:
                out.deactivate.add(sid)
                reasons[sid] = "absent from a complete read of the source"
    return out, reasons


def user_record(user: RosterUser, policy: RosterPolicy) -> dict[str, Any] | Rejected:
    """A user in scope as flat SCIM User fields, or why it is refused."""
    sid = user.sourced_id
    try:
        # The text policy (utils/data_validator.py), as for SafetyAmp: nothing with a
        # control, invisible or separator character reaches SCIM.
        clean_code(sid, "sourcedId", SCIM_CODE_MAX_LENGTH)
        user_name = clean_code(_user_name(user, policy.username_field), "userName", SCIM_CODE_MAX_LENGTH)
        given = clean_name(user.given_name, "givenName", SCIM_NAME_MAX_LENGTH)
        family = clean_name(user.family_name, "familyName", SCIM_NAME_MAX_LENGTH)
        email = clean_code(user.email, "email", SCIM_CODE_MAX_LENGTH)
        role = clean_name(_role_for(user, policy.roles), "role", SCIM_NAME_MAX_LENGTH)
    except InvalidValue as exc:
        return Rejected(shown_key(sid), exc.reason, (exc.field,) if exc.field else ())
    if not user_name:
        return Rejected(sid, f"no {policy.username_field} to use as userName (ROSTER_USERNAME_FIELD)", ("userName",))
    rec = {
        "userName": user_name,
        "displayName": " ".join(p for p in (given, family) if p) or None,
        "givenName": given,
        "familyName": family,
        "email": email,
        "active": True,
        "externalId": sid,
    }
    if policy.role_attribute != "none":
        rec["role"] = role
    return rec


def class_names(snap: RosterSnapshot) -> tuple[dict[str, str], dict[str, str]]:
    """Each class's Group displayName under the text policy, and the classes refused
    by it (sourcedId -> reason): those are neither provisioned nor treated as gone."""
    names: dict[str, str] = {}
    refused: dict[str, str] = {}
    for sid, cls in snap.classes.items():
        try:
            clean_code(sid, "class sourcedId", SCIM_CODE_MAX_LENGTH)
            title = clean_name(cls.title, "title", SCIM_NAME_MAX_LENGTH)
            code = clean_name(cls.class_code, "classCode", SCIM_NAME_MAX_LENGTH) if not title else None
        except InvalidValue as exc:
            refused[sid] = exc.reason
            continue
        names[sid] = title or code or sid
    return names, refused


def gone_classes(snap: RosterSnapshot, ours: Collection[str], names: Mapping[str, str], schools: Iterable[str]) -> set[str]:
    """Classes to take down: out of scope or, on a complete read, gone from the source
    (a class whose name was refused is still in the source: left as it is)."""
    gone = {sid for sid, cls in snap.classes.items() if sid in names and not class_in_scope(cls, schools)}
    if snap.classes_full:
        gone |= {k for k in ours if k not in snap.classes}
    return gone


@dataclass
class _Write:
    """One planned write to the target."""

    resource: str
    kind: str  # create | update | deactivate
    key: str
    row: dict[str, Any] | None
    desired: dict[str, Any] = field(default_factory=dict)
    changes: tuple[FieldChange, ...] = ()
    add: set[str] = field(default_factory=set)
    remove: set[str] = field(default_factory=set)
    fingerprint: str = ""
    reason: str = ""

    @property
    def log_key(self) -> str:
        return f"{'user' if self.resource == USERS else 'class'}/{self.key}"

    def describe(self) -> dict[str, Any]:
        changes = {c.field: c.as_dict() for c in self.changes}
        if self.add:
            changes["members_added"] = {"before": None, "after": sorted(self.add)}
        if self.remove:
            changes["members_removed"] = {"before": sorted(self.remove), "after": None}
        out: dict[str, Any] = {"key": self.log_key, "action": self.kind, "changes": changes}
        if self.reason:
            out["reason"] = self.reason
        return out

    def entry(self) -> Entry:
        changes = self.describe()["changes"]
        target_id = str(self.row["id"]) if self.row else None
        return Entry(self.log_key, self.kind, self.resource, target_id, self.fingerprint, changes, changes)


@dataclass
class TargetView:
    """What the sync reads from the SCIM target once per run: its Users and Groups with
    an externalId ("ours"), by externalId, with their comparable fields."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    """Group externalId -> the SCIM ids of its members."""


@dataclass
class UserPlan:
    """The user writes of a run (deactivations included) and what the guard says of them."""

    writes: list[_Write]
    unchanged: int
    deactivations: list[str]
    refusal: Refusal | None


def plan_users(
    records: Mapping[str, Mapping[str, Any]],
    desired: Desired,
    reasons: Mapping[str, str],
    view: TargetView,
    percent: float,
    complete: bool,
) -> UserPlan:
    """Creates, updates and deactivations of Users: ``records`` are the desired users
    still to try (the tracker's held-back ones left out), ``desired`` the whole picture."""
    actions = plan(records, view.user_fields, deactivate=desired.deactivate, deactivation=DEACTIVATED)
    deact = [a.key for a in actions if a.kind == "deactivate"]
    active = sum(1 for r in view.user_fields.values() if r.get("active") is not False)
    refusal = guard_reason(
        len(deact), active, percent, source_count=desired.source_count, held=len(deact) if complete else 0, what="users"
    )
    writes = [
        _Write(
            USERS,
            a.kind,
            a.key,
            view.users.get(a.key),
            dict(records.get(a.key) or DEACTIVATED),
            a.changes,
            fingerprint=desired.fingerprints.get(a.key, ""),
            reason=reasons.get(a.key, "") if a.kind == "deactivate" else "",
        )
        for a in actions
        if a.is_write
    ]
    return UserPlan(writes, sum(1 for a in actions if not a.is_write), deact, refusal)


@dataclass
class UserState:
    """The users once their writes were applied: what the groups are planned from."""

    ids: dict[str, str]
    """externalId -> SCIM id (users created in this run included)."""
    active: dict[str, bool]
    deactivated_ids: set[str]
    held_ids: set[str]
    """SCIM ids of users whose deactivation the guard held back: they keep their groups."""

    def member(self, ext: str | None) -> str | None:
        """The SCIM id of an active user of ours, or None."""
        if ext and self.active.get(ext) and ext in self.ids:
            return self.ids[ext]
        return None


def users_after(
    ours: Mapping[str, Mapping[str, Any]], writes: Iterable[_Write], applied: Mapping[str, str], held: Collection[str]
) -> UserState:
    """``applied``: log key -> SCIM id of the user writes that went through."""
    ids = {k: str(r["id"]) for k, r in ours.items()}
    active = {k: r.get("active") is not False for k, r in ours.items()}
    deactivated: set[str] = set()
    for w in writes:
        got = applied.get(w.log_key)
        if got is None:
            continue
        if w.kind == "create":
            ids[w.key] = got
            active[w.key] = True
        elif w.kind == "deactivate":
            active[w.key] = False
            if w.key in ids:
                deactivated.add(ids[w.key])
        else:
            active[w.key] = w.desired.get("active", active.get(w.key)) is not False
    for key in held:
        active[key] = True
    return UserState(ids, active, deactivated, {ids[k] for k in held if k in ids})


def classes_to_take_down(snap: RosterSnapshot, view: TargetView, names: Mapping[str, str], policy: RosterPolicy) -> list[str]:
    """The Groups of ours this run would take down (the guard's batch): known before any
    user is written, since a user created now is in no class yet."""
    our_user_ids = {str(r["id"]) for r in view.users.values()}
    return sorted(
        k
        for k in gone_classes(snap, view.groups, names, policy.schools)
        if k in view.groups and (policy.delete_mode or view.members[k] & our_user_ids)
    )


@dataclass
class GroupPlan:
    writes: list[_Write] = field(default_factory=list)
    unchanged: int = 0


def plan_groups(
    snap: RosterSnapshot, view: TargetView, users: UserState, names: Mapping[str, str], policy: RosterPolicy
) -> GroupPlan:
    """The Group writes of a run, from the source, the target as read and the users as
    they are now (with the ids of the users created in this run)."""
    gone = gone_classes(snap, view.groups, names, policy.schools)
    desired = {sid: {"displayName": names[sid], "externalId": sid} for sid in snap.classes if sid in names and sid not in gone}
    exact, adds, removes = membership(snap, desired.keys() | (view.groups.keys() - gone), users, policy)
    current = {k: {"displayName": r.get("displayName"), "externalId": r.get("externalId")} for k, r in view.groups.items()}
    actions = {a.key: a for a in plan(desired, current)}
    touched = (set(desired) | set(exact) | set(adds) | set(removes) | gone) - (snap.classes.keys() - names.keys())
    if users.deactivated_ids:
        touched |= {k for k in view.groups if view.members[k] & users.deactivated_ids}
    ours_user_ids = set(users.ids.values())
    out, take_downs = GroupPlan(), []
    for key in sorted(touched):
        row = view.groups.get(key)
        if key in gone:
            leave = view.members[key] & ours_user_ids if row is not None else set()
            if row is not None and (policy.delete_mode or leave):
                take_downs.append(_Write(GROUPS, "deactivate", key, row, remove=set() if policy.delete_mode else leave))
            elif row is not None:
                out.unchanged += 1
            continue
        if key not in desired and row is None:
            continue  # a delta enrollment of a class we never provisioned (out of scope)
        to_add, to_remove = plan_members(
            exact.get(key),
            view.members.get(key, set()),
            ours_user_ids,
            add=adds.get(key, set()),
            remove=removes.get(key, set()),
            keep=users.held_ids,
        )
        if exact.get(key) is None:
            to_remove |= (view.members.get(key, set()) & users.deactivated_ids) - users.held_ids
        write = _group_write(key, row, desired.get(key), actions.get(key), to_add, to_remove)
        if write is None:
            out.unchanged += 1
        else:
            out.writes.append(write)
    out.writes += take_downs
    return out


def _group_write(
    key: str, row: dict[str, Any] | None, want: dict[str, Any] | None, action: Any, to_add: set[str], to_remove: set[str]
) -> _Write | None:
    """A class's create or update (None: nothing to change)."""
    if row is None:
        assert want is not None and action is not None and action.kind == "create"
        return _Write(
            GROUPS, "create", key, None, dict(want), action.changes, add=to_add, fingerprint=fingerprint(want, sorted(to_add))
        )
    changes = action.changes if action is not None and action.kind == "update" else ()
    if not (changes or to_add or to_remove):
        return None
    fp = fingerprint(want, sorted(to_add), sorted(to_remove))
    return _Write(GROUPS, "update", key, row, dict(want or {}), changes, add=to_add, remove=to_remove, fingerprint=fp)


def membership(
    snap: RosterSnapshot, classes: Collection[str], users: UserState, policy: RosterPolicy
) -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """Membership intent per class: (exact members, from a complete enrollments read;
    members to add and to remove, from a delta). ``classes``: the classes that may have
    an exact membership."""
    wanted_roles = {r.lower() for r in policy.roles}
    if snap.enrollments_full:
        return exact_members(snap, classes, users, wanted_roles), {}, {}
    if snap.enrollments_full is False:
        adds, removes = delta_members(snap, users, wanted_roles, policy.schools)
        return {}, adds, removes
    return {}, {}, {}


def exact_members(
    snap: RosterSnapshot, classes: Collection[str], users: UserState, wanted_roles: Collection[str]
) -> dict[str, set[str]]:
    """Each class's members from a complete read; a class whose enrollments were not read
    (an enrollment gap) is left out: it keeps its members."""
    by_class: dict[str, set[str]] = {}
    for e in snap.enrollments.values():
        if e.status == ACTIVE and e.class_id and (e.role is None or e.role in wanted_roles):
            uid = users.member(e.user)
            if uid:
                by_class.setdefault(e.class_id, set()).add(uid)
    exact: dict[str, set[str]] = {}
    for sid in classes:
        known = snap.classes.get(sid)
        school = known.school if known else None
        if snap.enrollments_gap_for(school) or (known is None and snap.enrollment_gaps):
            continue  # its enrollments were not read: keep its members
        exact[sid] = by_class.get(sid, set())
    return exact


def delta_members(
    snap: RosterSnapshot, users: UserState, wanted_roles: Collection[str], schools: Collection[str]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Members to add and to remove per class, from the enrollments of a delta."""
    adds: dict[str, set[str]] = {}
    removes: dict[str, set[str]] = {}
    for e in snap.enrollments.values():
        if not e.class_id or (schools and e.school and e.school not in schools):
            continue
        if e.status == ACTIVE and (e.role is None or e.role in wanted_roles):
            uid = users.member(e.user)
            if uid:
                adds.setdefault(e.class_id, set()).add(uid)
        elif e.user in users.ids:
            removes.setdefault(e.class_id, set()).add(users.ids[e.user])
    return adds, removes


# --------------------------------------------------------------------------------------
# the sync
# --------------------------------------------------------------------------------------
class RosterSync:
    """``RosterSync(ctx).run() -> RunResult``; ctx.oneroster, ctx.scim (and optionally
    ctx.roster_cursor, ctx.full) are set by config.bootstrap."""

    name = "rosters"

    def __init__(self, ctx: SyncContext, *, now: Callable[[], datetime] | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.source: Any = ctx.oneroster  # RosterSource
        self.target: Any = ctx.scim  # ScimTarget
        self.cursor = ctx.roster_cursor
        self._now = now or (lambda: datetime.now(UTC))
        self._users_by_name: dict[str, list[dict[str, Any]]] = {}
        self._view = TargetView()
        self.policy = RosterPolicy.from_settings(self.settings)
        self.workers = int(self.settings.scim_max_concurrency)

    # ---- shell: read, plan (pure), apply, record ----------------------------------
    def run(self) -> RunResult:
        return run_recorded(self.name, self.ctx, self._run)

    def _run(self, result: RunResult, slog: Any) -> dict[str, Any]:
        if self.source is None or self.target is None:
            raise FatalError("the rosters sync needs a OneRoster source and a SCIM target (ONEROSTER_*, SCIM_*)")
        run_started = self._now()
        full, since, state = self._mode()
        log.info(
            "rosters: %s read%s",
            "full" if full else "delta",
            f" since {since.isoformat()}" if since else "",
            extra={"sync": self.name},
        )
        snap: RosterSnapshot = self.source.read(None if full else since, self.policy.schools)
        log.info(
            "rosters: read %d users, %d classes, %d enrollments (peak RSS %d MB)",
            len(snap.users),
            len(snap.classes),
            len(snap.enrollments),
            _peak_rss_mb(),
            extra={"sync": self.name},
        )
        for key, reason in snap.rejected:
            slog.error(key, reason, kind="rejected")
            result.counts["failed"] += 1
            result.rejected += 1
        for note in snap.notes:
            log.warning(note, extra={"sync": self.name})
        if _nothing_changed(snap):
            # A delta plans only what changed: with nothing, no plan can hold a write, so
            # the SCIM service is not read (100,000 users: 115 pages). Drift made by others
            # there waits for the next full run (ROSTER_FULL_SYNC_HOURS), as with any delta.
            log.info("rosters: nothing changed in the SIS since the last run; the SCIM service is not read")
            self._finish(result, snap)
            self._save_cursor(result, snap, full, run_started, state)
            return {"mode": "delta", "since": _iso(since) if since else None, "source": snap.source}
        view = self._read_target()
        log.info(
            "rosters: SCIM holds %d Users and %d Groups of ours (peak RSS %d MB)",
            len(view.users),
            len(view.groups),
            _peak_rss_mb(),
            extra={"sync": self.name},
        )
        applier: Applier[_Write, str] = Applier(self.name, self.ctx, slog, result, workers=self.workers)
        self._sync(snap, view, applier, result, slog)
        self._finish(result, snap)
        self._save_cursor(result, snap, full, run_started, state)
        return {"mode": "full" if full else "delta", "since": _iso(since) if since else None, "source": snap.source}

    def _save_cursor(
        self, result: RunResult, snap: RosterSnapshot, full: bool, run_started: datetime, state: dict[str, str] | None
    ) -> None:
        # Rejected source records do not hold the cursor back: only a change in the source
        # can fix them, and that change brings them into a later delta anyway. A failed
        # write, a held deactivation or an unread enrollment set does.
        clean = not result.guard_tripped and not snap.enrollment_gaps and result.counts["failed"] == result.rejected
        if not self.ctx.dry_run and self.cursor is not None and self.source.supports_delta and clean:
            last_full = run_started if full else _parse(state.get("last_full") if state else None) or run_started
            self.cursor.save({"cursor": _iso(run_started), "last_full": _iso(last_full)})

    def _sync(self, snap: RosterSnapshot, view: TargetView, applier: Applier[_Write, str], result: RunResult, slog: Any) -> None:
        """Users first (a Group's members are the SCIM ids of Users created now), then Groups."""
        desired, reasons = desired_users(snap, view.users.keys(), self.policy)
        record_rejections(desired.rejected, result, slog, prefix="user/")
        records = {k: r for k, r in desired.records.items() if not self._held_back(f"user/{k}", desired.fingerprints[k], result)}
        users = plan_users(
            records, desired, reasons, view, float(self.settings.deactivation_guard_percent), bool(snap.users_full)
        )
        names, refused = class_names(snap)
        gone = classes_to_take_down(snap, view, names, self.policy)
        group_refusal = guard_reason(
            len(gone),
            len(view.groups),
            float(self.settings.deactivation_guard_percent),
            source_count=len(snap.classes),
            held=len(gone) if snap.classes_full else 0,
            what="groups",
        )
        # The guard judges users and classes as one batch: one approval covers what one run refused.
        user_verdict, group_verdict = judge(
            self.ctx,
            result,
            self.name,
            [(users.refusal, [f"user/{k}" for k in users.deactivations]), (group_refusal, [f"class/{k}" for k in gone])],
        )
        held: set[str] = set()
        user_writes = users.writes
        if user_verdict == "refused":
            held = set(users.deactivations)
            user_writes = [w for w in user_writes if w.kind != "deactivate"]
        result.counts["unchanged"] += users.unchanged
        # SCIM Bulk: users and groups go out together, a new user named in a group by the
        # bulkId of its create (RFC 7644 section 3.7.2); else users first, then groups with
        # the ids the users' writes returned.
        bulk = not self.ctx.dry_run and self.target.bulk_max_operations() is not None
        if bulk:
            applied = {w.log_key: str(w.row["id"]) if w.row else f"{BULK_REF}u{i}" for i, w in enumerate(user_writes)}
        else:
            applied = self._apply(applier, user_writes, result)
        state = users_after(view.users, user_writes, applied, held)
        for sid, reason in refused.items():
            slog.error(f"class/{shown_key(sid)}", reason, kind="rejected")
            result.counts["failed"] += 1
            result.rejected += 1
        groups = plan_groups(snap, view, state, names, self.policy)
        group_writes = [w for w in groups.writes if w.kind != "create" or not self._held_back(w.log_key, w.fingerprint, result)]
        if group_verdict != "free":  # refused: no class goes; approved: exactly the approved ones
            allowed = set(gone) if group_verdict == "approved" else set()
            group_writes = [w for w in group_writes if w.kind != "deactivate" or w.key in allowed]
        result.counts["unchanged"] += groups.unchanged
        if bulk:
            self._apply_bulk(applier, user_writes, group_writes, result)
        else:
            self._apply(applier, group_writes, result)

    def _held_back(self, log_key: str, fp: str, result: RunResult) -> bool:
        """True (and counted skipped) while the failed-record tracker holds the record back."""
        if not self.ctx.dry_run and self.ctx.tracker.should_skip(self.name, log_key, fp):
            result.counts["skipped"] += 1
            return True
        return False

    def _read_target(self) -> TargetView:
        """Users and Groups page by page, each kept slim as it arrives (``slim``: id,
        externalId, version, the User's fields; a Group's members as a set of ids):
        100,000 users in 14,000 groups never sit in memory as raw JSON."""
        view = TargetView()
        self._users_by_name = {}
        for raw in self.target.read_all(USERS):
            if not raw.get("id"):
                continue
            r = self.target.slim(USERS, raw)
            if isinstance(r.get("userName"), str):
                self._users_by_name.setdefault(r["userName"].casefold(), []).append(r)
            if r.get("externalId"):
                key = str(r["externalId"])
                view.users[key] = r
                view.user_fields[key] = self.target.user_fields(r)
        for raw in self.target.read_all(GROUPS):
            if raw.get("id") and raw.get("externalId"):
                key = str(raw["externalId"])
                view.groups[key] = self.target.slim(GROUPS, raw)
                view.members[key] = self.target.member_ids(raw)
        self._view = view
        return view

    def _finish(self, result: RunResult, snap: RosterSnapshot) -> None:
        # Refused source records are the source's business: the quarantine judges the
        # writes (without this, five known-bad users quarantined a steady rosters sync).
        if result.guard_tripped:
            result.status = "failed"
        elif result.counts["failed"]:
            result.status = "partial"
        elif snap.enrollment_gaps:
            result.status = "partial"
            result.error = "; ".join(snap.notes) or "some enrollments could not be read; their classes kept their members"

    # ---- mode -------------------------------------------------------------------
    def _mode(self) -> tuple[bool, datetime | None, dict[str, str] | None]:
        if not getattr(self.source, "supports_delta", False):
            return True, None, None
        state = self.cursor.load() if self.cursor is not None else None
        if self.ctx.full or not state:
            return True, None, state
        cursor = _parse(state.get("cursor"))
        last_full = _parse(state.get("last_full"))
        hours = float(self.settings.roster_full_sync_hours)
        if cursor is None or last_full is None or hours <= 0 or self._now() - last_full >= timedelta(hours=hours):
            return True, None, state
        overlap = float(self.settings.roster_delta_overlap_seconds)
        return False, cursor - timedelta(seconds=overlap), state

    # ---- apply ------------------------------------------------------------------
    def _apply(self, applier: Applier[_Write, str], writes: list[_Write], result: RunResult) -> dict[str, str]:
        """Apply writes in parallel; returns {log_key: SCIM id} of those that went through
        (a dry run: of every write, new ones with a placeholder id, so that it can plan
        the groups of the users it would create)."""
        if self.ctx.dry_run or self.ctx.only_key is not None:  # only these show it: 112,000 described writes cost 100+ MB
            result.plan += [w.describe() for w in writes]
        ids = applier.apply(writes, _Write.entry, self._send)
        if self.ctx.dry_run:
            return {w.log_key: str(w.row["id"]) if w.row else f"(new){w.key}" for w in writes}
        return {w.log_key: rid for w, rid in zip(writes, ids, strict=True) if rid is not None}

    # ---- apply in SCIM Bulk requests -------------------------------------------------
    def _apply_bulk(self, applier: Applier[_Write, str], users: list[_Write], groups: list[_Write], result: RunResult) -> None:
        """Every write as operations of Bulk requests, users before groups, cut by the
        provider's maxOperations and maxPayloadSize. A group member ``bulkId:u<i>`` is the
        user of ``users[i]``: the reference goes out as is when that create is in the same
        request, is replaced by its id when an earlier request created it, and is dropped
        when that create failed (the member is added by a later run)."""
        writes = users + groups
        refs = [f"u{i}" for i in range(len(users))] + [f"g{i}" for i in range(len(groups))]
        if self.ctx.only_key is not None:  # (never a dry run: that one plans without Bulk)
            result.plan += [w.describe() for w in writes]
        window = max(1, int(self.target.bulk_max_operations() or 1))
        ids: dict[str, str | None] = {}
        """ref of a create -> its SCIM id once its request answered (None: it failed)."""
        pending: dict[int, list[ScimWrite]] = {}

        def resolved(start: int) -> list[ScimWrite]:
            """The intents of the next writes (up to maxOperations) with every reference
            to an earlier request's create replaced by its id."""
            chunk = range(start, min(len(writes), start + window))
            mine = {refs[i] for i in chunk}
            return [self._intent(self._resolve(writes[i], ids, mine), refs[i]) for i in chunk]

        def next_batch(start: int) -> int:
            intents = resolved(start)
            take = self.target.bulk_take(intents)
            pending[start] = intents[:take]
            return take

        position = {id(w): i for i, w in enumerate(writes)}

        def send_batch(batch: Sequence[_Write]) -> Sequence[Done[str] | Exception]:
            start = position[id(batch[0])]
            intents = pending.pop(start)
            outcomes = self.target.send_batch(intents)
            out: list[Done[str] | Exception] = []
            for w, intent, o in zip(batch, intents, outcomes, strict=True):
                got: Done[str] | Exception
                try:
                    named_new = any(m.startswith(BULK_REF) for m in w.add)
                    got = self._settle_bulk(self._resolve(w, ids, set()), o, named_new=named_new)
                except (RecordError, RetriableError, FatalError) as exc:
                    got = exc
                if w.kind == "create":
                    ids[intent.ref] = got.value if isinstance(got, Done) else None
                out.append(got)
            return out

        applier.apply_batches(writes, next_batch, _Write.entry, send_batch)
        sent = getattr(self.target, "bulk_requests", None)
        if sent is not None:
            log.info(
                "rosters: %d SCIM Bulk requests carried %d operations",
                sent,
                getattr(self.target, "bulk_operations", 0),
                extra={"sync": self.name, "bulk_requests": sent, "bulk_operations": getattr(self.target, "bulk_operations", 0)},
            )

    def _intent(self, w: _Write, ref: str) -> ScimWrite:
        """A planned write as an intent of the ScimTarget port."""
        if w.kind == "create":
            if w.resource == USERS:
                return ScimWrite("create_user", ref, None, w.desired)
            return ScimWrite("create_group", ref, None, w.desired, add=tuple(sorted(w.add)))
        assert w.row is not None
        if w.resource == USERS:
            if w.kind == "deactivate":
                return ScimWrite("delete_user" if self.policy.delete_mode else "deactivate_user", ref, w.row)
            return ScimWrite("update_user", ref, w.row, {c.field: c.after for c in w.changes})
        if w.kind == "deactivate" and self.policy.delete_mode:
            return ScimWrite("delete_group", ref, w.row)
        name = w.desired.get("displayName") if w.kind == "update" else None
        rename = name if name is not None and name != w.row.get("displayName") else None
        return ScimWrite(
            "change_members", ref, w.row, add=tuple(sorted(w.add)), remove=tuple(sorted(w.remove)), display_name=rename
        )

    @staticmethod
    def _resolve(w: _Write, ids: Mapping[str, str | None], same_request: Collection[str]) -> _Write:
        """``w`` with its ``bulkId:`` members replaced by the ids of users created earlier,
        kept when created in the same request (``same_request``), dropped when that
        create failed."""
        if not any(m.startswith(BULK_REF) for m in w.add):
            return w
        add: set[str] = set()
        for m in w.add:
            ref = m[len(BULK_REF) :] if m.startswith(BULK_REF) else None
            if ref is None:
                add.add(m)
            elif ids.get(ref):
                add.add(str(ids[ref]))
            elif ref in same_request and ref not in ids:
                add.add(m)
        return _replace_add(w, add)

    def _settle_bulk(self, w: _Write, o: Any, *, named_new: bool = False) -> Done[str]:
        """One operation's outcome as the single-request path would have ended it:
        - went through: counted;
        - refused (4xx): the record fails, except a 409 on a user create (the userName
          is taken: adopt it as the single path does), a 412 (changed since read:
          re-read once and re-plan) and a group refused because a user it named failed
          (sent again alone, without that user);
        - 5xx of that operation, or unknown (the bulk response was lost): a create is
          first looked up by its key (``create_once``: never a duplicate; not sent again
          in this run while the request may still be on its way in);
        - anything else (a 429 of the operation, Bulk refused: not applied) and every
          change that is not a create goes out again alone, under the retry policy
          (PATCH and DELETE are idempotent; with ETags a change already applied answers
          412 and is re-read)."""
        if o.error is None:
            return Done(COUNTED[w.kind], value=o.id)
        exc = o.error
        if isinstance(exc, FatalError):
            raise exc
        if isinstance(exc, ConflictError) and w.kind == "create" and w.resource == USERS:
            return self._adopt(w, exc)
        if isinstance(exc, RecordError):
            if exc.status == 412 and w.row is not None:  # changed since read: re-read, then plan it again
                log.info("%s %s changed since it was read (412); re-reading once", w.resource, w.row.get("id"))
                return self._send(_replace_row(w, self.target.get(w.resource, str(w.row["id"]))))
            if w.resource == GROUPS and named_new:
                return self._send(w)
            raise exc
        if w.kind == "create" and isinstance(exc, AmbiguousWriteError):  # (a 429, or Bulk refused: not applied)
            found = self.target.find(w.resource, "externalId", w.key)
            if found is not None:
                log.info(
                    "bulk create was applied despite the lost response; not sending again",
                    extra={"sync": self.name, "key": w.key},
                )
                return Done("created", value=str(found["id"]))
            if isinstance(exc, AmbiguousWriteError) and not exc.settled:
                raise AmbiguousWriteError(
                    f"{exc.message}; not found by key yet and the request may still be applied, so it is not sent again in "
                    "this run (the next run reads the target and creates it only if it is missing)",
                    service=exc.service,
                    status=exc.status,
                    settled=False,
                )
        return self._send(w)

    def _send(self, w: _Write) -> Done[str]:
        """One write to the SCIM target, as intents (the adapter owns the formats)."""
        if w.kind == "create":
            return self._create_user(w) if w.resource == USERS else self._create_group(w)
        assert w.row is not None
        if w.kind == "deactivate" and self.policy.delete_mode:
            if w.resource == USERS:
                self.target.deactivate_user(w.row, delete=True)
            else:
                self.target.delete_group(w.row)
            return Done("deactivated", value=str(w.row["id"]))
        send = self._send_user_fields if w.resource == USERS else self._send_group_change
        return self._with_fresh_read(w, lambda row: send(w, row))

    def _send_user_fields(self, w: _Write, row: Mapping[str, Any]) -> bool:
        changes = _changed(w.desired, self.target.user_fields(row))
        if not changes:
            return False
        if w.kind == "deactivate":
            self.target.deactivate_user(row)
        else:
            self.target.update_user(row, changes)
        return True

    def _send_group_change(self, w: _Write, row: Mapping[str, Any]) -> bool:
        # a row re-read (after a 412) carries its members; one from the run's read is slim
        have = self.target.member_ids(row) if "members" in row else self._view.members.get(w.key, set())
        name = w.desired.get("displayName") if w.kind == "update" else None
        rename = name if name is not None and name != row.get("displayName") else None
        add, remove = w.add - have, w.remove & have
        if rename is None and not add and not remove:
            return False
        self.target.change_members(row, add=add, remove=remove, display_name=rename)
        return True

    def _with_fresh_read(self, w: _Write, send: Callable[[Mapping[str, Any]], bool]) -> Done[str]:
        """``send(row)`` (False: nothing to send); on 412 (changed since it was read) re-read
        the resource once and plan the write again against what it holds now."""
        row: Mapping[str, Any] = w.row or {}
        rid = str(row.get("id"))
        for attempt in range(2):
            try:
                return Done(COUNTED[w.kind] if send(row) else "unchanged", value=rid)
            except RecordError as exc:
                if exc.status != 412 or attempt:
                    raise
                log.info("%s %s changed since it was read (412); re-reading once", w.resource, rid)
                row = self.target.get(w.resource, rid)
        raise AssertionError("unreachable")

    def _create_group(self, w: _Write) -> Done[str]:
        created = create_once(
            lambda: self.target.create_group(w.desired, w.add),
            lambda: self.target.find(GROUPS, "externalId", w.key),
            sync=self.name,
            key=w.key,
        )
        return Done("created", value=str(created["id"]))

    def _create_user(self, w: _Write) -> Done[str]:
        try:
            created = create_once(
                lambda: self.target.create_user(w.desired),
                lambda: self.target.find(USERS, "externalId", w.key),
                sync=self.name,
                key=w.key,
            )
            return Done("created", value=str(created["id"]))
        except ConflictError as exc:
            return self._adopt(w, exc)

    def _adopt(self, w: _Write, exc: ConflictError) -> Done[str]:
        """409 on a create: the userName is taken. Adopt that user when it is not someone
        else's (no externalId, or ours); otherwise the record fails and is tracked."""
        user_name = str(w.desired["userName"])
        found = self.target.find(USERS, "userName", user_name)
        if found is None:
            found = self._case_variant(user_name, w.key)
        if found is None or (found.get("externalId") and str(found["externalId"]) != w.key):
            raise exc
        changes = _changed(w.desired, self.target.user_fields(found))
        if changes:
            self.target.update_user(found, changes)
        log.info("userName %s already existed without our externalId; adopted it", user_name, extra={"sync": self.name})
        return Done("updated", logged_as="adopted", value=str(found["id"]))

    def _case_variant(self, user_name: str, key: str) -> dict[str, Any] | None:
        """The user read this run whose userName equals ``user_name`` ignoring case.

        userName is caseExact false (RFC 7643 section 4.1.1), yet some servers compare
        ``filter=userName eq`` case-sensitively while their uniqueness check does not:
        the 409 then has no match by filter. Several case variants: ours if one is ours,
        else none (the record fails rather than adopt a guess)."""
        variants = self._users_by_name.get(user_name.casefold(), [])
        if len(variants) == 1:
            return variants[0]
        return next((r for r in variants if str(r.get("externalId") or "") == key), None)


def _nothing_changed(snap: RosterSnapshot) -> bool:
    """A delta (no collection read whole) with no record, no refusal and no gap."""
    covered = (snap.users_full, snap.classes_full, snap.enrollments_full)
    return not any(covered) and not (
        snap.users or snap.classes or snap.enrollments or snap.rejected or snap.enrollment_gaps or snap.notes
    )


def _peak_rss_mb() -> int:
    """This process's peak resident memory so far (the run's log shows where it grows)."""
    peak = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss
    return int(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024)


def _replace_add(w: _Write, add: set[str]) -> _Write:
    return replace(w, add=add)


def _replace_row(w: _Write, row: dict[str, Any]) -> _Write:
    return replace(w, row=row)


def _changed(desired: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {c.field: c.after for c in diff(desired, current)}


def _user_name(user: RosterUser, username_field: str) -> str | None:
    if username_field == "email":
        return user.email
    if username_field == "identifier":
        return user.identifier
    if username_field == "sourcedId":
        return user.sourced_id
    return user.username


def _role_for(user: RosterUser, roles: Iterable[str]) -> str | None:
    wanted = [r.lower() for r in roles]
    if user.primary_role and user.primary_role.lower() in wanted:
        return user.primary_role.lower()
    for role, _org in user.roles or ():
        if role.lower() in wanted:
            return role.lower()
    return user.primary_role


# The cursor's timestamps: written and read by utils/timefmt.py, the one home of that format.
_iso = iso_z
_parse = parse_iso
