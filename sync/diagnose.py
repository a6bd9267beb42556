"""`diagnose SYNC KEY`: why a record is (not) where it should be, in words an operator
can act on.

It runs the sync's own load and mapping in dry-run mode (so the verdict uses exactly
the production rules), reads the target once, and combines that with the failed-record
tracker's history. Nothing is written.

Verdicts: IN_SYNC, PENDING (the next run will send the shown change), ISSUE_IN_SOURCE
(the system of record holds a value we cannot send: fix it there), ISSUE_IN_TARGET (the
target refused the record: fix it there or retry), NOT_IN_SCOPE (not a record this sync
manages: other company, filtered status, unknown key).

Rosters: the key is a OneRoster sourcedId, of a user (a SCIM User) or a class (a SCIM
Group); ``user/<id>`` or ``class/<id>`` chooses when both exist. The source is read in
full and mapped by the rosters sync's own rules; the target is looked up by
``externalId``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sync.base import BaseSync, Desired, Rejected
from sync.engine import diff
from sync.registry import SYNCS
from utils.data_validator import InvalidValue
from utils.errors import ConfigurationError
from utils.logger import current_tenant

SOURCE_NAMES = {
    "departments": "Viewpoint department (bPRDP.PRDept)",
    "jobs": "Viewpoint job (bJCJM.Job)",
    "titles": "Viewpoint job title",
    "employees": "Viewpoint employee (bPREH.Employee)",
    "vehicles": "Samsara vehicle",
    "rosters": "OneRoster record",
}
NOTHING_TO_DO = "Nothing to do: the target matches the source."
GONE_FROM_SOURCE = {
    "employees": "terminated in Viewpoint Vista",
    "jobs": "closed in Viewpoint Vista",
}
"""How a record the source no longer has active is said, per sync (``verdict_text``)."""
TARGET_NAMES = {"rosters": "the SCIM service"}


def _cli() -> str:
    """The command the advice names: with tenants, with the tenant it concerns."""
    tenant = current_tenant()
    return "python sync_batch.py" + (f" --tenant {tenant}" if tenant else "")


def _target_name(sync: str) -> str:
    return TARGET_NAMES.get(sync, "SafetyAmp")


def tracked_note(sync: str, key: str, tracked: dict[str, Any], *, still_applies: bool, state: str = "") -> str:
    """What the failed-records queue's entry of a record means when the verdict is not
    about it (the record left the source, or a deactivation is pending), and how to clear
    or retry it: the lookup must not hide it behind "in sync"."""
    when = f", last {tracked.get('last_failed')}" if tracked.get("last_failed") else ""
    head = f"The failed-records queue still holds a failure of this record ({tracked.get('attempts')} attempt(s){when}): {tracked.get('reason')}."
    dismiss = f"Dismiss it (Dismiss on the console's failed-records page, or `{_cli()} failed dismiss --sync {sync} --key {key}`)"
    if not still_applies:
        return (
            f"{head} It no longer applies now that the record is {state}: {dismiss}; left alone, it expires 30 days after "
            "its last failure."
        )
    return (
        f"{head} The next run sends the deactivation all the same (the queue holds back creates and updates only) and "
        f"forgets the entry once it goes through; to try at once: Retry on the failed-records page, or `{_cli()} "
        f"failed retry --sync {sync} --key {key}`, then run the sync. {dismiss} if it no longer applies."
    )


class ImpossibleKey(ConfigurationError):
    """A key no record of the sync can have: bad operator input, refused before anything
    is read. A ConfigurationError so that both entry points already answer it as bad
    input (exit 2, HTTP 400), without the "configuration error" prefix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.message = reason
        self.args = (reason,)


def _remedy(sync: str, key: str, reason: str, where: str | None = None) -> list[str]:
    where = where or f"{SOURCE_NAMES.get(sync, sync)} {key}"
    r = reason.lower()
    steps: list[str] = []
    if sync == "rosters" and "username" in r and ("conflict" in r or "409" in r or "already" in r or "unique" in r):
        steps.append(f"In the SCIM service, the userName of {where} belongs to another user: rename or remove that one.")
    elif sync == "rosters" and "username" in r:
        steps.append(
            f"Give {where} a username in the SIS, or choose another userName source with ROSTER_USERNAME_FIELD "
            "(email, identifier or sourcedId)."
        )
    elif sync == "rosters" and "no role" in r:
        steps.append(
            f"The SIS gives no role for {where}: export roles (roles.csv in a OneRoster 1.2 CSV drop) so the sync "
            "can tell students and teachers apart."
        )
    elif "e-mail" in r and "shared" in r:
        steps.append(f"Give {where} its own e-mail address (in Entra ID `mail` or bPREH.Email); SafetyAmp needs unique e-mails.")
    elif "e-mail" in r and "already belongs" in r:
        steps.append("Find the SafetyAmp user named in the reason: merge the two people, or correct the e-mail on the wrong one.")
    elif "no e-mail" in r:
        steps.append(
            f"Add a work e-mail: set employeeId={key} on the person's Entra ID account (with a mail), or fill bPREH.Email."
        )
    elif "invalid" in r and "e-mail" in r:
        steps.append(f"Correct the e-mail of {where}: {reason}.")
    elif "phone" in r:
        steps.append(f"Fix the phone number of {where} ({reason}); the record syncs without it meanwhile.")
    elif "home site" in r:
        steps.append(
            f"Give {where} an open job: a payroll row on an open job (bPRJC), or a default job in bPREH.Job; "
            "or set DEFAULT_HOME_SITE_ID for people without a job."
        )
    elif "name" in r or "characters" in r:
        steps.append(f"Correct the name fields of {where}: {reason}.")
    elif "driver" in r:
        steps.append(
            "In Samsara, set the driver's payroll external id (SAMSARA_DRIVER_EMPLOYEE_FIELD) to the Viewpoint employee number."
        )
    else:
        steps.append(f"Correct {where}: {reason}.")
    steps.append(f"Then run `{_cli()} --only {sync}` (or wait for the next cycle) and diagnose again.")
    return steps


def normalise_key(sync: str, key: str) -> str:
    """The key ``key`` names in ``sync``, as the sync itself keys its records (the one
    rule for diagnose and the console's one-record sync); ImpossibleKey when no record
    of the sync can have it."""
    cls = SYNCS.get(sync)
    rule = getattr(cls, "key_from_text", None)
    if rule is not None:
        try:
            key = rule(key)
        except InvalidValue as exc:  # refused before anything is read: a clean 400 / exit 2
            raise ImpossibleKey(f"not a key of the {sync} sync: {exc.reason}") from None
    if cls is not None and issubclass(cls, BaseSync):
        key = cls.key_of(object.__new__(cls), {cls.key_field: key}) or key  # key_of reads no state
    return key


def diagnose(runtime: Any, sync: str, key: str) -> dict[str, Any]:
    """The report for one record; ``runtime`` is config.bootstrap.Runtime."""
    known = [name for name, cls in SYNCS.items() if issubclass(cls, BaseSync)] + ["rosters"]
    if sync not in known:
        raise ConfigurationError(f"diagnose knows the syncs {', '.join(known)}; not {sync!r}")
    key = normalise_key(sync, key)
    from config.bootstrap import new_context, new_run_id

    ctx = new_context(runtime, run_id=new_run_id() + "-diagnose", dry_run=True)
    if sync == "rosters":
        return _diagnose_roster(ctx, runtime, key)
    job: BaseSync = SYNCS[sync](ctx)  # type: ignore[assignment]
    job.prepare()
    desired = job.load()
    current = job.current()
    norm = job.key_of({job.key_field: key}) or key
    rejections = [r for r in desired.rejected if r.key == norm]
    target = current.get(norm)
    tracked = runtime.tracker.get(sync, norm) if hasattr(runtime.tracker, "get") else None
    want = desired.records.get(norm)
    report: dict[str, Any] = {
        "sync": sync,
        "key": norm,
        "source": want,
        "target": target,
        "diff": {},
        "rejections": [{"reason": r.reason, "kind": r.kind, "fields": list(r.fields)} for r in rejections],
        "tracker": tracked,
        "verdict": "",
        "verdict_text": "",
        "remediation": [],
    }
    return _judge(report, job, desired, rejections)


def _judge(report: dict[str, Any], job: BaseSync, desired: Desired, rejections: list[Rejected]) -> dict[str, Any]:
    """Fill in the verdict and what to do, from the mapped record and the target's."""
    sync, norm, want, target, tracked = report["sync"], report["key"], report["source"], report["target"], report["tracker"]
    hard = [r for r in rejections if r.kind == "rejected"]
    if hard:
        report["verdict"] = "ISSUE_IN_SOURCE"
        for r in hard:
            report["remediation"] += _remedy(sync, norm, r.reason)
        return report
    if want is None:
        return _judge_absent(report, job, desired)
    # What plan() would compare: fields outside compare_fields are sent on create only.
    compare = job.compare_fields
    managed = want if compare is None else {k: v for k, v in want.items() if k in compare}
    changes = diff(managed, target) if target is not None else ()
    report["diff"] = {c.field: c.as_dict() for c in changes}
    if tracked:
        report["verdict"] = "ISSUE_IN_TARGET"
        report["remediation"] = [
            f"SafetyAmp refused the last attempt ({tracked.get('attempts')} so far): {tracked.get('reason')}.",
            "Fix the conflicting record in SafetyAmp (or the source value), then "
            f"`{_cli()} failed retry --sync {sync} --key {norm}`.",
        ]
        for r in rejections:
            report["remediation"] += _remedy(sync, norm, r.reason)[:1]
        return report
    if target is None or changes:
        report["verdict"] = "PENDING"
        report["remediation"] = ["The next run sends this change; nothing to do unless it stays pending."]
    else:
        report["verdict"] = "IN_SYNC"
    for r in rejections:  # field_dropped: in sync, but a value is being left out
        report["remediation"] += _remedy(sync, norm, r.reason)[:1]
    if not report["remediation"]:
        report["remediation"] = [NOTHING_TO_DO]
    return report


def _judge_absent(report: dict[str, Any], job: BaseSync, desired: Desired) -> dict[str, Any]:
    """No record is wanted: a leaver to deactivate, or nothing this sync manages (and a
    failure left in the queue from before, named with how to dismiss or retry it)."""
    sync, norm, target, tracked = report["sync"], report["key"], report["target"], report["tracker"]
    if norm not in desired.deactivate:
        report["verdict"] = "NOT_IN_SCOPE"
        report["remediation"] = [
            f"No {SOURCE_NAMES.get(sync, sync)} {norm} is in scope (wrong company, closed/filtered status, or unknown key). "
            "Check the key and VIEWPOINT_COMPANY / JOB_OPEN_STATUSES."
        ]
        if tracked:
            report["remediation"].append(tracked_note(sync, norm, tracked, still_applies=False, state="out of this sync's scope"))
        return report
    gone = GONE_FROM_SOURCE.get(sync, f"inactive in the source ({SOURCE_NAMES.get(sync, sync)})")
    where = _target_name(sync)
    deactivation = job.deactivation or {}
    fields = ", ".join(f"{k} = {v}" for k, v in deactivation.items())
    if target is None:
        inactive, state = True, f"not in {where}"
    elif not deactivation:
        inactive, state = True, f"kept in {where} (this sync is set not to deactivate)"
    elif all(target.get(k) == v for k, v in deactivation.items()):
        inactive, state = True, f"deactivated in {where} ({fields})"
    else:
        inactive, state = False, f"still active in {where}: the next run deactivates it ({fields})"
    report["verdict"] = "IN_SYNC" if inactive else "PENDING"
    report["verdict_text"] = f"{gone}, {state}"
    report["remediation"] = (
        [f"Nothing to sync: {gone}, {state}."] if inactive else [f"{gone.capitalize()}; the next run deactivates it ({fields})."]
    )
    if tracked:
        report["remediation"].append(tracked_note(sync, norm, tracked, still_applies=not inactive, state=gone))
    return report


def _diagnose_roster(ctx: Any, runtime: Any, key: str) -> dict[str, Any]:
    """A OneRoster user (SCIM User) or class (SCIM Group) by sourcedId."""
    from sync.sync_rosters import GROUPS, USERS, RosterSync

    job = RosterSync(ctx)
    if job.source is None or job.target is None:
        raise ConfigurationError("diagnose rosters needs a OneRoster source and a SCIM target (ONEROSTER_*, SCIM_*)")
    kind, _, sid = key.partition("/") if key.startswith(("user/", "class/")) else ("", "", key)
    sid = sid.strip()
    snap = job.source.read(None, job.policy.schools)
    user_row = job.target.find(USERS, "externalId", sid) if kind in ("", "user") else None
    group_row = job.target.find(GROUPS, "externalId", sid) if kind in ("", "class") else None
    if not kind:
        is_class = (sid in snap.classes or group_row is not None) and not (sid in snap.users or user_row is not None)
        kind = "class" if is_class else "user"
    log_key = f"{kind}/{sid}"
    tracked = runtime.tracker.get("rosters", log_key) if hasattr(runtime.tracker, "get") else None
    report: dict[str, Any] = {
        "sync": "rosters",
        "key": log_key,
        "source": None,
        "source_record": None,
        "target": None,
        "diff": {},
        "rejections": [{"reason": reason, "kind": "rejected", "fields": []} for k, reason in snap.rejected if k == sid],
        "tracker": tracked,
        "verdict": "",
        "verdict_text": "",
        "remediation": [],
    }
    if kind == "user":
        _diagnose_roster_user(report, job, snap, sid, user_row)
    else:
        _diagnose_roster_class(report, job, snap, sid, group_row)
    return report


def _diagnose_roster_user(report: dict[str, Any], job: Any, snap: Any, sid: str, user_row: dict[str, Any] | None) -> None:
    from sync.sync_rosters import desired_users

    ours = {sid: user_row} if user_row is not None and user_row.get("id") else {}
    desired, reasons = desired_users(snap, ours, job.policy)
    report["rejections"] += [
        {"reason": r.reason, "kind": r.kind, "fields": list(r.fields)} for r in desired.rejected if r.key == sid
    ]
    user = snap.users.get(sid)
    want = desired.records.get(sid)
    report.update(source=want, source_record=asdict(user) if user else None, target=user_row)
    current = job.target.user_fields(user_row) if user_row is not None else None
    _roster_verdict(report, sid, "user", want, current, sid in desired.deactivate, reasons.get(sid, ""))


def _diagnose_roster_class(report: dict[str, Any], job: Any, snap: Any, sid: str, group_row: dict[str, Any] | None) -> None:
    from sync.sync_rosters import USERS, class_in_scope, desired_users

    cls = snap.classes.get(sid)
    report.update(source_record=asdict(cls) if cls else None, target=group_row)
    in_scope = cls is not None and class_in_scope(cls, job.policy.schools)
    want = {"displayName": cls.title or cls.class_code or sid, "externalId": sid} if cls is not None and in_scope else None
    current = None
    if group_row is not None:
        current = {"displayName": group_row.get("displayName"), "externalId": group_row.get("externalId")}
    # Members in the SIS's terms (user sourcedIds): the enrolled users this sync provisions,
    # against the group's members that are users of ours (others are never touched).
    ext_of: dict[str, str] = {}
    have: set[str] = set()
    if group_row is not None:
        ext_of = {str(u["id"]): str(u["externalId"]) for u in job.target.list(USERS) if u.get("id") and u.get("externalId")}
        have = {ext_of[m] for m in job.target.member_ids(group_row) if m in ext_of}
    members: set[str] = set()
    if want is not None:
        wanted_users, _ = desired_users(snap, (), job.policy)
        wanted_roles = {r.lower() for r in job.policy.roles}
        members = {
            e.user
            for e in snap.enrollments.values()
            if e.class_id == sid and e.status == "active" and e.user in wanted_users.records
            and (e.role is None or e.role in wanted_roles)
        }  # fmt: skip
        report["source"] = {**want, "members": sorted(members)}
    if current is not None:
        report["target_members"] = sorted(have)
    gone = want is None and group_row is not None
    _roster_verdict(report, sid, "class", want, current, gone and bool(have), "")
    if want is not None and group_row is not None:
        added, removed = sorted(members - have), sorted(have - members)
        if added:
            report["diff"]["members_added"] = {"before": None, "after": added}
        if removed:
            report["diff"]["members_removed"] = {"before": removed, "after": None}
        if (added or removed) and report["verdict"] == "IN_SYNC":
            report["verdict"] = "PENDING"
            report["remediation"] = ["The next run sends this change; nothing to do unless it stays pending."]
    if want is not None and snap.enrollments_gap_for(cls.school if cls else None):
        report["remediation"].insert(
            0, "The enrollments of this class's school could not be read completely: its members are kept."
        )


def _roster_verdict(
    report: dict[str, Any],
    sid: str,
    kind: str,
    want: dict[str, Any] | None,
    current: dict[str, Any] | None,
    to_deactivate: bool,
    why: str,
) -> None:
    noun = "OneRoster user" if kind == "user" else "OneRoster class"
    hard = [r for r in report["rejections"] if r["kind"] == "rejected"]
    tracked = report["tracker"]
    if hard:
        report["verdict"] = "ISSUE_IN_SOURCE"
        for r in hard:
            report["remediation"] += _remedy("rosters", sid, r["reason"], f"{noun} {sid}")
    elif want is None and kind == "user" and to_deactivate:
        inactive = current is None or current.get("active") is False
        report["verdict"] = "IN_SYNC" if inactive else "PENDING"
        state = "not in the SCIM service" if current is None else "inactive in the SCIM service"
        report["verdict_text"] = (
            f"out of scope in OneRoster ({why}), {state}"
            if inactive
            else f"out of scope in OneRoster ({why}), still active in the SCIM service: the next run deactivates it"
        )
        report["remediation"] = (
            [f"Out of scope in the source ({why}) and not active in the SCIM service: nothing to do."]
            if inactive
            else [f"Out of scope in the source ({why}); the next run deactivates the SCIM user."]
        )
        if tracked:
            report["remediation"].append(
                tracked_note("rosters", report["key"], tracked, still_applies=not inactive, state="out of scope in OneRoster")
            )
    elif want is None and kind == "class" and to_deactivate:
        report["verdict"] = "PENDING"
        report["remediation"] = ["The class is gone or out of scope in the source; the next run removes its members."]
    elif want is None:
        report["verdict"] = "NOT_IN_SCOPE"
        report["remediation"] = [
            f"No {noun} {sid} is in scope: it is not in the source, or outside ROSTER_SCHOOLS / ROSTER_ROLES, or "
            "the source gives no role for it. Check the sourcedId (user/<id> or class/<id>) and those settings."
        ]
    else:
        changes = diff(want, current) if current is not None else ()
        report["diff"] = {c.field: c.as_dict() for c in changes}
        if tracked:
            report["verdict"] = "ISSUE_IN_TARGET"
            report["remediation"] = [
                f"The SCIM service refused the last attempt ({tracked.get('attempts')} so far): {tracked.get('reason')}.",
                *_remedy("rosters", sid, str(tracked.get("reason") or ""), f"{noun} {sid}")[:1],
                f"Then `{_cli()} failed retry --sync rosters --key {report['key']}`.",
            ]
        elif current is None or changes:
            report["verdict"] = "PENDING"
            report["remediation"] = ["The next run sends this change; nothing to do unless it stays pending."]
        else:
            report["verdict"] = "IN_SYNC"
    if not report["remediation"]:
        report["remediation"] = [NOTHING_TO_DO]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['sync']} {report['key']}: {report['verdict']}"]
    if report.get("verdict_text"):
        lines[0] += f" ({report['verdict_text']})"
    for r in report["rejections"]:
        lines.append(f"  {r['kind']}: {r['reason']}")
    for field, change in report["diff"].items():
        lines.append(f"  {field}: {change['before']!r} -> {change['after']!r}")
    if report.get("tracker"):
        t = report["tracker"]
        lines.append(f"  last error: {t.get('reason')} (attempts {t.get('attempts')}, next retry {t.get('next_retry')})")
    if report["remediation"]:
        lines.append("  what to do:")
        lines += [f"    - {step}" for step in report["remediation"]]
    return "\n".join(lines)
