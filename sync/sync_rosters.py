"""The rosters sync: OneRoster (REST 1.1/1.2 or a CSV drop) -> SCIM 2.0 Users and Groups.

Not a BaseSync: that loop serves one SafetyAmp collection keyed by one field, while a
roster is two linked collections (a Group's members are the SCIM ids of Users created
in the same run) read either completely or as a delta. What it shares with the other
syncs is the functional core (``sync.engine.plan``, ``guard_allows``), the result and
rejection types, the failed-record tracker and the EventManager's change/error files.

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

The SCIM side assumes this sync is the only writer of ``externalId`` in the tenant:
a User or Group with an externalId is "ours" (docs/rosters.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.base import (
    COUNT_KEYS,
    Desired,
    Rejected,
    RunResult,
    SyncContext,
    apply_in_order,
    approve_or_hold,
    create_once,
    fingerprint,
    held_message,
    nothing_held,
    run_recorded,
)
from sync.engine import FieldChange, diff, guard_allows, plan
from sync.roster_model import ACTIVE, RosterClass, RosterSnapshot, RosterUser
from utils.data_validator import InvalidValue, clean_code, clean_name, shown_key
from utils.errors import (
    ConflictError,
    FatalError,
    RecordError,
    RetriableError,
)
from utils.timefmt import iso_z, parse_iso

log = logging.getLogger("sync.rosters")

USERS, GROUPS = "Users", "Groups"
EMPTY_READ = "the source returned no"
"""How the guard's empty-read reason starts: that refusal is never approvable."""
SCIM_CODE_MAX_LENGTH = 255
"""sourcedId, userName and e-mail (an e-mail address has at most 254 characters)."""
SCIM_NAME_MAX_LENGTH = 255
DEACTIVATED = {"active": False}
DEFAULT_ROLES = ("student", "teacher")

# flat field -> SCIM attribute path (RFC 7643 §4.1); "role" depends on ROSTER_ROLE_ATTRIBUTE
USER_PATHS = {
    "userName": "userName",
    "displayName": "displayName",
    "givenName": "name.givenName",
    "familyName": "name.familyName",
    "active": "active",
    "externalId": "externalId",
}


# --------------------------------------------------------------------------------------
# pure helpers (unit tested with literals)
# --------------------------------------------------------------------------------------
def scim_user_flat(row: Mapping[str, Any], role_attribute: str = "title") -> dict[str, Any]:
    """The comparable fields of a SCIM User."""
    raw_name = row.get("name")
    name: Mapping[str, Any] = raw_name if isinstance(raw_name, Mapping) else {}
    emails = [e for e in _items(row.get("emails")) if isinstance(e, Mapping)]
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    flat = {
        "userName": row.get("userName"),
        "displayName": row.get("displayName"),
        "givenName": name.get("givenName"),
        "familyName": name.get("familyName"),
        "email": primary.get("value") if primary else None,
        "active": row.get("active"),
        "externalId": row.get("externalId"),
    }
    if role_attribute == "title":
        flat["role"] = row.get("title")
    elif role_attribute == "roles":
        roles = [r for r in _items(row.get("roles")) if isinstance(r, Mapping)]
        first = next((r for r in roles if r.get("primary")), roles[0] if roles else None)
        flat["role"] = first.get("value") if first else None
    return flat


def user_ops(changes: Mapping[str, Any], role_attribute: str = "title") -> list[dict[str, Any]]:
    """PatchOp operations (RFC 7644 §3.5.2.3 replace) for changed flat fields."""
    ops: list[dict[str, Any]] = []
    for name in sorted(changes):
        value = changes[name]
        if name == "email":
            ops.append({"op": "replace", "path": "emails", "value": [{"value": value, "type": "work", "primary": True}]})
        elif name == "role":
            if role_attribute == "title":
                ops.append({"op": "replace", "path": "title", "value": value})
            elif role_attribute == "roles":
                ops.append({"op": "replace", "path": "roles", "value": [{"value": value, "primary": True}]})
        else:
            ops.append({"op": "replace", "path": USER_PATHS[name], "value": value})
    return ops


def user_create_payload(flat: Mapping[str, Any], role_attribute: str = "title") -> dict[str, Any]:
    """A SCIM User for POST from the flat desired record (None fields left out)."""
    payload: dict[str, Any] = {k: flat[k] for k in ("userName", "displayName", "externalId", "active") if flat.get(k) is not None}
    name = {k: flat[k] for k in ("givenName", "familyName") if flat.get(k) is not None}
    if name:
        payload["name"] = name
    if flat.get("email"):
        payload["emails"] = [{"value": flat["email"], "type": "work", "primary": True}]
    if flat.get("role"):
        if role_attribute == "title":
            payload["title"] = flat["role"]
        elif role_attribute == "roles":
            payload["roles"] = [{"value": flat["role"], "primary": True}]
    return payload


def member_ids(row: Mapping[str, Any]) -> set[str]:
    return {str(m["value"]) for m in _items(row.get("members")) if isinstance(m, Mapping) and m.get("value")}


def _items(value: Any) -> list[Any]:
    """A multi-valued SCIM attribute as a list (a provider's odd value is no value)."""
    return value if isinstance(value, list) else []


def member_ops(add: Iterable[str], remove: Iterable[str]) -> list[dict[str, Any]]:
    """Membership PatchOps: one ``add`` with every new member, one ``remove`` per leaver
    with a value filter path (RFC 7644 §3.5.2.1/§3.5.2.2)."""
    ops: list[dict[str, Any]] = []
    adds = sorted(add)
    if adds:
        ops.append({"op": "add", "path": "members", "value": [{"value": i} for i in adds]})
    for i in sorted(remove):
        ops.append({"op": "remove", "path": f'members[value eq "{_escape(i)}"]'})
    return ops


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


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


# --------------------------------------------------------------------------------------
# the sync
# --------------------------------------------------------------------------------------
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


_COUNTED = {"create": "created", "update": "updated", "deactivate": "deactivated"}


class RosterSync:
    """``RosterSync(ctx).run() -> RunResult``; ctx.oneroster, ctx.scim (and optionally
    ctx.roster_cursor, ctx.full) are set by config.bootstrap."""

    name = "rosters"

    def __init__(self, ctx: SyncContext, *, now: Callable[[], datetime] | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.source: Any = getattr(ctx, "oneroster", None)  # RosterSource
        self.target: Any = getattr(ctx, "scim", None)  # ScimTarget
        self.cursor = getattr(ctx, "roster_cursor", None)
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._consecutive_errors = 0
        self._users_by_name: dict[str, list[dict[str, Any]]] = {}
        s = self.settings
        self.roles = tuple(getattr(s, "roster_roles", None) or DEFAULT_ROLES)
        self.schools = tuple(getattr(s, "roster_schools", None) or ())
        self.username_field = getattr(s, "roster_username_field", "username")
        self.role_attribute = getattr(s, "roster_role_attribute", "title")
        self.delete_mode = getattr(s, "scim_delete_mode", "deactivate") == "delete"
        self.workers = int(getattr(s, "scim_max_concurrency", 4))

    # ---- shell ------------------------------------------------------------------
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
        snap: RosterSnapshot = self.source.read(None if full else since, self.schools)
        rejected = len(snap.rejected)
        for key, reason in snap.rejected:
            slog.error(key, reason, kind="rejected")
            result.counts["failed"] += 1
        for note in snap.notes:
            log.warning(note, extra={"sync": self.name})

        users_now = self.target.list(USERS)
        groups_now = self.target.list(GROUPS)
        self._users_by_name = {}
        for r in users_now:
            if r.get("id") and isinstance(r.get("userName"), str):
                self._users_by_name.setdefault(r["userName"].casefold(), []).append(r)
        ours_users = {str(r["externalId"]): r for r in users_now if r.get("externalId") and r.get("id")}
        ours_groups = {str(r["externalId"]): r for r in groups_now if r.get("externalId") and r.get("id")}

        # ---- users ----------------------------------------------------------------
        desired, reasons = self._desired_users(snap, ours_users)
        rejected += len(desired.rejected)
        for rej in desired.rejected:
            slog.error(f"user/{rej.key}", rej.reason, payload=rej.payload, fields=list(rej.fields), kind=rej.kind)
            result.counts["failed"] += 1
        current_flat = {k: scim_user_flat(r, self.role_attribute) for k, r in ours_users.items()}
        records = {}
        for key, rec in desired.records.items():
            if not self.ctx.dry_run and self.ctx.tracker.should_skip(self.name, f"user/{key}", desired.fingerprints[key]):
                result.counts["skipped"] += 1
                continue
            records[key] = rec
        actions = plan(records, current_flat, deactivate=desired.deactivate, deactivation=DEACTIVATED)
        held: set[str] = set()
        deact = [a for a in actions if a.kind == "deactivate"]
        active_ours = sum(1 for r in current_flat.values() if r.get("active") is not False)
        user_guard = self._guard_reason(len(deact), active_ours, desired.source_count, bool(snap.users_full), "users")
        # The classes this run would deactivate are known before any user is written (a
        # user created now is in no class yet): the guard judges users and classes as one
        # batch, so one approval covers what one run refused.
        names, refused = self._class_names(snap)
        our_user_ids = {str(r["id"]) for r in ours_users.values()}
        gone = sorted(
            k
            for k in self._gone_classes(snap, ours_groups, names)
            if k in ours_groups and (self.delete_mode or member_ids(ours_groups[k]) & our_user_ids)
        )
        group_guard = self._guard_reason(len(gone), len(ours_groups), len(snap.classes), bool(snap.classes_full), "groups")
        batches = [(user_guard, [f"user/{a.key}" for a in deact]), (group_guard, [f"class/{k}" for k in gone])]
        approvable = [(why, keys) for why, keys in batches if why and not why.startswith(EMPTY_READ)]
        note = ""
        allowed_groups: set[str] | None = None  # None: the guard let every class through
        if approvable:
            keys = [k for _, batch in approvable for k in batch]
            result.approval = approve_or_hold(self.ctx, self.name, keys, "; ".join(why for why, _ in approvable))
            if result.approval is None:
                note = held_message(self.name, self.ctx)
                result.held = sorted(keys)
            else:
                approved = {why for why, _ in approvable}
                if user_guard in approved:
                    user_guard = None
                if group_guard in approved:
                    group_guard = None
                    allowed_groups = set(gone)
        if not result.held:
            nothing_held(self.ctx, self.name)
        if user_guard:
            held = {a.key for a in deact}
            actions = [a for a in actions if a.kind != "deactivate"]
            self._trip(result, user_guard, note)
            note = ""
        user_writes = [
            _Write(
                USERS,
                a.kind,
                a.key,
                ours_users.get(a.key),
                dict(records.get(a.key) or DEACTIVATED),
                a.changes,
                fingerprint=desired.fingerprints.get(a.key, ""),
                reason=reasons.get(a.key, "") if a.kind == "deactivate" else "",
            )
            for a in actions
            if a.is_write
        ]
        result.counts["unchanged"] += sum(1 for a in actions if not a.is_write)
        ids = {k: str(r["id"]) for k, r in ours_users.items()}
        active_after = {k: r.get("active") is not False for k, r in ours_users.items()}
        outcomes = self._apply(user_writes, result, slog)
        for w in user_writes:
            got = outcomes.get(w.log_key)
            if got is None:
                continue
            if w.kind == "create":
                ids[w.key] = got
                active_after[w.key] = True
            elif w.kind == "deactivate":
                active_after[w.key] = False
            else:
                active_after[w.key] = w.desired.get("active", active_after.get(w.key)) is not False
        for key in held:
            active_after[key] = True
        deactivated_ids = {ids[w.key] for w in user_writes if w.kind == "deactivate" and w.log_key in outcomes and w.key in ids}

        # ---- groups ---------------------------------------------------------------
        rejected += len(refused)
        for sid, reason in refused.items():
            slog.error(f"class/{shown_key(sid)}", reason, kind="rejected")
            result.counts["failed"] += 1
        group_writes, unchanged = self._plan_groups(
            snap, ours_groups, ids, active_after, deactivated_ids, {ids[k] for k in held if k in ids}, result, names
        )
        if group_guard:
            self._trip(result, group_guard, note)
            allowed_groups = set()
        if allowed_groups is not None:  # held, or approved: then exactly the approved classes
            group_writes = [w for w in group_writes if w.kind != "deactivate" or w.key in allowed_groups]
        result.counts["unchanged"] += unchanged
        self._apply(group_writes, result, slog)

        # ---- status and cursor ----------------------------------------------------
        # Refused source records are the source's business: the quarantine judges the
        # writes (without this, five known-bad users quarantined a steady rosters sync).
        result.rejected = rejected
        if result.guard_tripped:
            result.status = "failed"
        elif result.counts["failed"]:
            result.status = "partial"
        elif snap.enrollment_gaps:
            result.status = "partial"
            result.error = "; ".join(snap.notes) or "some enrollments could not be read; their classes kept their members"
        # Rejected source records do not hold the cursor back: only a change in the source
        # can fix them, and that change brings them into a later delta anyway. A failed
        # write, a held deactivation or an unread enrollment set does.
        clean = not result.guard_tripped and not snap.enrollment_gaps and result.counts["failed"] == rejected
        if not self.ctx.dry_run and self.cursor is not None and self.source.supports_delta and clean:
            last_full = run_started if full else _parse(state.get("last_full") if state else None) or run_started
            self.cursor.save({"cursor": _iso(run_started), "last_full": _iso(last_full)})
        return {"mode": "full" if full else "delta", "since": _iso(since) if since else None, "source": snap.source}

    # ---- mode -------------------------------------------------------------------
    def _mode(self) -> tuple[bool, datetime | None, dict[str, str] | None]:
        if not getattr(self.source, "supports_delta", False):
            return True, None, None
        state = self.cursor.load() if self.cursor is not None else None
        if getattr(self.ctx, "full", False) or not state:
            return True, None, state
        cursor = _parse(state.get("cursor"))
        last_full = _parse(state.get("last_full"))
        hours = float(getattr(self.settings, "roster_full_sync_hours", 24))
        if cursor is None or last_full is None or hours <= 0 or self._now() - last_full >= timedelta(hours=hours):
            return True, None, state
        overlap = float(getattr(self.settings, "roster_delta_overlap_seconds", 300))
        return False, cursor - timedelta(seconds=overlap), state

    # ---- users ------------------------------------------------------------------
    def _desired_users(self, snap: RosterSnapshot, ours: Mapping[str, Any]) -> tuple[Desired, dict[str, str]]:
        out = Desired(source_count=len(snap.users))
        reasons: dict[str, str] = {}
        for sid, user in snap.users.items():
            verdict, why = user_in_scope(user, self.roles, self.schools)
            if verdict is None:
                if sid not in ours:
                    out.rejected.append(Rejected(sid, why))
                continue
            if verdict is False:
                out.deactivate.add(sid)
                reasons[sid] = why
                continue
            try:
                # The text policy (utils/data_validator.py), as for SafetyAmp: nothing
                # with a control, invisible or separator character reaches SCIM.
                clean_code(sid, "sourcedId", SCIM_CODE_MAX_LENGTH)
                user_name = clean_code(self._user_name(user), "userName", SCIM_CODE_MAX_LENGTH)
                given = clean_name(user.given_name, "givenName", SCIM_NAME_MAX_LENGTH)
                family = clean_name(user.family_name, "familyName", SCIM_NAME_MAX_LENGTH)
                email = clean_code(user.email, "email", SCIM_CODE_MAX_LENGTH)
                role = clean_name(_role_for(user, self.roles), "role", SCIM_NAME_MAX_LENGTH)
            except InvalidValue as exc:
                out.rejected.append(Rejected(shown_key(sid), exc.reason, (exc.field,) if exc.field else ()))
                continue
            if not user_name:
                out.rejected.append(
                    Rejected(sid, f"no {self.username_field} to use as userName (ROSTER_USERNAME_FIELD)", ("userName",))
                )
                continue
            display = " ".join(p for p in (given, family) if p) or None
            rec = {
                "userName": user_name,
                "displayName": display,
                "givenName": given,
                "familyName": family,
                "email": email,
                "active": True,
                "externalId": sid,
            }
            if self.role_attribute != "none":
                rec["role"] = role
            out.records[sid] = rec
            out.fingerprints[sid] = fingerprint(rec)
        if snap.users_full:
            for sid in ours:
                if sid not in snap.users:
                    out.deactivate.add(sid)
                    reasons[sid] = "absent from a complete read of the source"
        return out, reasons

    def _user_name(self, user: RosterUser) -> str | None:
        f = self.username_field
        if f == "email":
            return user.email
        if f == "identifier":
            return user.identifier
        if f == "sourcedId":
            return user.sourced_id
        return user.username

    # ---- groups -----------------------------------------------------------------
    def _class_names(self, snap: RosterSnapshot) -> tuple[dict[str, str], dict[str, str]]:
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

    def _plan_groups(
        self,
        snap: RosterSnapshot,
        ours: Mapping[str, dict[str, Any]],
        ids: Mapping[str, str],
        active_after: Mapping[str, bool],
        deactivated_ids: set[str],
        held_ids: set[str],
        result: RunResult,
        names: Mapping[str, str],
    ) -> tuple[list[_Write], int]:
        ours_user_ids = set(ids.values())
        wanted_roles = {r.lower() for r in self.roles}

        def member_ok(ext: str | None) -> str | None:
            if ext and active_after.get(ext) and ext in ids:
                return ids[ext]
            return None

        refused = {sid for sid in snap.classes if sid not in names}
        gone = self._gone_classes(snap, ours, names)
        desired = {
            sid: {"displayName": names[sid], "externalId": sid} for sid in snap.classes if sid not in refused and sid not in gone
        }

        # membership intent per class
        exact: dict[str, set[str]] = {}
        adds: dict[str, set[str]] = {}
        removes: dict[str, set[str]] = {}
        if snap.enrollments_full:
            by_class: dict[str, set[str]] = {}
            for e in snap.enrollments.values():
                if e.status == ACTIVE and e.class_id and (e.role is None or e.role in wanted_roles):
                    uid = member_ok(e.user)
                    if uid:
                        by_class.setdefault(e.class_id, set()).add(uid)
            for sid in set(desired) | {k for k in ours if k not in gone}:
                known = snap.classes.get(sid)
                school = known.school if known else None
                if snap.enrollments_gap_for(school) or (known is None and snap.enrollment_gaps):
                    continue  # its enrollments were not read: keep its members
                exact[sid] = by_class.get(sid, set())
        elif snap.enrollments_full is False:
            for e in snap.enrollments.values():
                if not e.class_id or (self.schools and e.school and e.school not in self.schools):
                    continue
                uid = ids.get(e.user or "")
                if e.status == ACTIVE and (e.role is None or e.role in wanted_roles):
                    ok = member_ok(e.user)
                    if ok:
                        adds.setdefault(e.class_id, set()).add(ok)
                elif uid:
                    removes.setdefault(e.class_id, set()).add(uid)

        # plan the scalar fields with the engine, then add membership
        current_flat = {k: {"displayName": r.get("displayName"), "externalId": r.get("externalId")} for k, r in ours.items()}
        actions = {a.key: a for a in plan(desired, current_flat)}
        writes: list[_Write] = []
        unchanged = 0
        touched = (set(desired) | set(exact) | set(adds) | set(removes) | gone) - refused
        if deactivated_ids:
            touched |= {k for k, r in ours.items() if member_ids(r) & deactivated_ids}
        group_deacts: list[_Write] = []
        for key in sorted(touched):
            row = ours.get(key)
            current = member_ids(row) if row else set()
            if key in gone:
                if row is None:
                    continue
                leave = current & ours_user_ids
                if self.delete_mode or leave:
                    group_deacts.append(_Write(GROUPS, "deactivate", key, row, remove=set() if self.delete_mode else leave))
                else:
                    unchanged += 1
                continue
            if key not in desired and row is None:
                continue  # a delta enrollment of a class we never provisioned (out of scope)
            to_add, to_remove = plan_members(
                exact.get(key),
                current,
                ours_user_ids,
                add=adds.get(key, set()),
                remove=removes.get(key, set()),
                keep=held_ids,
            )
            if exact.get(key) is None:
                to_remove |= (current & deactivated_ids) - held_ids
            action = actions.get(key)
            if row is None:
                assert action is not None and action.kind == "create"
                fp = fingerprint(desired[key], sorted(to_add))
                if not self.ctx.dry_run and self.ctx.tracker.should_skip(self.name, f"class/{key}", fp):
                    result.counts["skipped"] += 1
                    continue
                writes.append(
                    _Write(
                        GROUPS,
                        "create",
                        key,
                        None,
                        dict(desired[key]),
                        action.changes,
                        add=to_add,
                        fingerprint=fingerprint(desired[key], sorted(to_add)),
                    )
                )
                continue
            changes = action.changes if action is not None and action.kind == "update" else ()
            if changes or to_add or to_remove:
                writes.append(
                    _Write(
                        GROUPS,
                        "update",
                        key,
                        row,
                        dict(desired.get(key) or {}),
                        changes,
                        add=to_add,
                        remove=to_remove,
                        fingerprint=fingerprint(desired.get(key), sorted(to_add), sorted(to_remove)),
                    )
                )
            else:
                unchanged += 1
        return writes + group_deacts, unchanged

    def _gone_classes(self, snap: RosterSnapshot, ours: Mapping[str, Any], names: Mapping[str, str]) -> set[str]:
        """Classes to take down: out of scope or, on a complete read, gone from the source
        (a class whose name was refused is still in the source: left as it is)."""
        gone = {sid for sid, cls in snap.classes.items() if sid in names and not class_in_scope(cls, self.schools)}
        if snap.classes_full:
            gone |= {k for k in ours if k not in snap.classes}
        return gone

    # ---- guard ------------------------------------------------------------------
    def _guard_reason(self, n: int, active: int, source_count: int, complete: bool, what: str) -> str | None:
        if not n:
            return None
        if complete and source_count == 0:
            return f"{EMPTY_READ} {what}"
        percent = float(self.settings.deactivation_guard_percent)
        if not guard_allows(n, active, percent):
            return f"{n} {what} deactivations exceed DEACTIVATION_GUARD_PERCENT={percent:g} of {active} active {what}"
        return None

    def _trip(self, result: RunResult, reason: str, note: str = "") -> None:
        result.guard_tripped = True
        try:
            self.ctx.metrics.deactivation_guard.labels(self.name).inc()
        except AttributeError:
            pass
        msg = f"deactivation guard tripped: {reason}; nothing was deactivated{note}"
        result.error = msg if not result.error else f"{result.error}; {msg}"
        log.error(msg, extra={"sync": self.name})

    # ---- apply ------------------------------------------------------------------
    def _apply(self, writes: list[_Write], result: RunResult, slog: Any) -> dict[str, str]:
        """Apply writes in parallel; returns {log_key: SCIM id} of those that went through."""
        result.plan += [w.describe() for w in writes]
        done: dict[str, str] = {}
        if self.ctx.dry_run:
            for w in writes:
                result.counts[_COUNTED[w.kind]] += 1
                slog.change(w.log_key, w.kind, None, None, w.describe()["changes"])
                # placeholder ids let the dry run plan the groups of users it would create
                done[w.log_key] = str(w.row["id"]) if w.row else f"(new){w.key}"
            return done
        if not writes:
            return done

        def settle(w: _Write, value: tuple[str, str | None] | str, count: int, total: int) -> None:
            outcome, sid = (value, None) if isinstance(value, str) else value
            if outcome in COUNT_KEYS:
                result.counts[outcome] += 1
            if sid is not None:
                done[w.log_key] = sid
            if self.ctx.progress:
                self.ctx.progress(self.name, count, total)

        apply_in_order(self.name, self.ctx, writes, lambda w: self._apply_one(w, slog), settle, self.workers)
        return done

    def _apply_one(self, w: _Write, slog: Any) -> tuple[str, str | None]:
        # Write-ahead: on disk before the request, or ChangeLogError and nothing is sent.
        intent = slog.intent(w.log_key, w.kind, target=w.resource, target_id=str(w.row["id"]) if w.row else None)
        try:
            outcome, sid = self._write(w)
        except RecordError as exc:
            reason = exc.message
            self.ctx.tracker.record_failure(self.name, w.log_key, w.fingerprint, reason, list(exc.field_errors))
            slog.error(w.log_key, reason, target_body=exc.body, payload=w.describe()["changes"], kind="failed", intent=intent)
            return "failed", None
        except RetriableError as exc:
            slog.error(
                w.log_key, f"gave up after retries: {exc.message}", payload=w.describe()["changes"], kind="failed", intent=intent
            )
            with self._lock:
                self._consecutive_errors += 1
                too_many = self._consecutive_errors >= int(self.settings.consecutive_error_limit)
            if too_many:
                raise FatalError(
                    f"{self._consecutive_errors} consecutive requests failed; stopping the rosters sync", service=exc.service
                ) from exc
            return "failed", None
        with self._lock:
            self._consecutive_errors = 0
        self.ctx.tracker.record_success(self.name, w.log_key)
        if outcome != "unchanged":
            slog.change(
                w.log_key, w.kind if outcome != "adopted" else "adopted", None, None, w.describe()["changes"], intent=intent
            )
        else:
            slog.settled(intent, "nothing left to change after re-reading the record")
        return ("updated" if outcome == "adopted" else outcome), sid

    def _etag(self, row: Mapping[str, Any] | None) -> str | None:
        if row is None or not self.target.etags:
            return None
        meta = row.get("meta")
        return meta.get("version") if isinstance(meta, Mapping) else None

    def _write(self, w: _Write) -> tuple[str, str | None]:
        t = self.target
        if w.resource == USERS:
            if w.kind == "create":
                return self._create_user(w)
            assert w.row is not None
            rid = str(w.row["id"])
            if w.kind == "deactivate" and self.delete_mode:
                t.delete(USERS, rid, self._etag(w.row))
                return "deactivated", rid
            return self._patch_with_retry(
                w, rid, lambda row: user_ops(_changed(w.desired, scim_user_flat(row, self.role_attribute)), self.role_attribute)
            )
        if w.kind == "create":
            payload = dict(w.desired)
            payload["members"] = [{"value": i} for i in sorted(w.add)]
            created = self._create(GROUPS, payload, w.key)
            return "created", str(created["id"])
        assert w.row is not None
        gid = str(w.row["id"])
        if w.kind == "deactivate" and self.delete_mode:
            t.delete(GROUPS, gid, self._etag(w.row))
            return "deactivated", gid

        def ops(row: Mapping[str, Any]) -> list[dict[str, Any]]:
            have = member_ids(row)
            out = []
            if (
                w.kind == "update"
                and w.desired.get("displayName") is not None
                and w.desired["displayName"] != row.get("displayName")
            ):
                out.append({"op": "replace", "path": "displayName", "value": w.desired["displayName"]})
            return out + member_ops(w.add - have, w.remove & have)

        return self._patch_with_retry(w, gid, ops)

    def _patch_with_retry(
        self, w: _Write, rid: str, ops_for: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    ) -> tuple[str, str | None]:
        """PATCH with If-Match; on 412 (changed meanwhile) re-read once and re-plan."""
        row: Mapping[str, Any] = w.row or {}
        for attempt in range(2):
            ops = ops_for(row)
            if not ops:
                return "unchanged", rid
            try:
                self.target.patch(w.resource, rid, ops, self._etag(row))
                return _COUNTED[w.kind], rid
            except RecordError as exc:
                if exc.status != 412 or attempt:
                    raise
                log.info("%s %s changed since it was read (412); re-reading once", w.resource, rid)
                row = self.target.get(w.resource, rid)
        raise AssertionError("unreachable")

    def _create_user(self, w: _Write) -> tuple[str, str | None]:
        payload = user_create_payload(w.desired, self.role_attribute)
        try:
            created = self._create(USERS, payload, w.key)
            return "created", str(created["id"])
        except ConflictError:
            # 409: the userName is taken. Adopt that user when it is not someone else's
            # (no externalId, or ours); otherwise the record fails and is tracked.
            found = self.target.find(USERS, "userName", str(payload["userName"]))
            if found is None:
                found = self._case_variant(str(payload["userName"]), w.key)
            if found is None or (found.get("externalId") and str(found["externalId"]) != w.key):
                raise
            rid = str(found["id"])
            ops = user_ops(_changed(w.desired, scim_user_flat(found, self.role_attribute)), self.role_attribute)
            if ops:
                self.target.patch(USERS, rid, ops, self._etag(found))
            log.info(
                "userName %s already existed without our externalId; adopted it", payload["userName"], extra={"sync": self.name}
            )
            return "adopted", rid

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

    def _create(self, resource: str, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        return create_once(
            lambda: self.target.create(resource, payload),
            lambda: self.target.find(resource, "externalId", key),
            sync=self.name,
            key=key,
        )


def _changed(desired: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {c.field: c.after for c in diff(desired, current)}


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
