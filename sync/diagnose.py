"""`diagnose SYNC KEY`: why a record is (not) where it should be, in words an operator
can act on.

It runs the sync's own load and mapping in dry-run mode (so the verdict uses exactly
the production rules), reads the target once, and combines that with the failed-record
tracker's history. Nothing is written.

Verdicts: IN_SYNC, PENDING (the next run will send the shown change), ISSUE_IN_SOURCE
(the system of record holds a value we cannot send: fix it there), ISSUE_IN_TARGET (the
target refused the record: fix it there or retry), NOT_IN_SCOPE (not a record this sync
manages: other company, filtered status, unknown key).
"""

from __future__ import annotations

from typing import Any

from sync.base import BaseSync
from sync.engine import diff
from sync.registry import SYNCS
from utils.data_validator import InvalidValue
from utils.errors import ConfigurationError

SOURCE_NAMES = {
    "departments": "Viewpoint department (bPRDP.PRDept)",
    "jobs": "Viewpoint job (bJCJM.Job)",
    "titles": "the title column of Viewpoint employees",
    "employees": "Viewpoint employee (bPREH.Employee)",
    "vehicles": "Samsara vehicle",
}


class ImpossibleKey(ConfigurationError):
    """A key no record of the sync can have: bad operator input, refused before anything
    is read. A ConfigurationError so that both entry points already answer it as bad
    input (exit 2, HTTP 400), without the "configuration error" prefix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.message = reason
        self.args = (reason,)


def _remedy(sync: str, key: str, reason: str) -> list[str]:
    where = f"{SOURCE_NAMES.get(sync, sync)} {key}"
    r = reason.lower()
    steps: list[str] = []
    if "e-mail" in r and "shared" in r:
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
    steps.append(f"Then run `python sync_batch.py --only {sync}` (or wait for the next cycle) and diagnose again.")
    return steps


def diagnose(runtime: Any, sync: str, key: str) -> dict[str, Any]:
    """The report for one record; ``runtime`` is config.bootstrap.Runtime."""
    known = [name for name, cls in SYNCS.items() if issubclass(cls, BaseSync)]
    if sync not in known:
        raise ConfigurationError(f"diagnose knows the syncs {', '.join(known)}; not {sync!r}")
    rule = getattr(SYNCS[sync], "key_from_text", None)
    if rule is not None:
        try:
            key = rule(key)
        except InvalidValue as exc:  # refused before anything is read: a clean 400 / exit 2
            raise ImpossibleKey(f"not a key of the {sync} sync: {exc.reason}") from None
    from config.bootstrap import new_context, new_run_id

    ctx = new_context(runtime, run_id=new_run_id() + "-diagnose", dry_run=True)
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
        "remediation": [],
    }
    hard = [r for r in rejections if r.kind == "rejected"]
    if hard:
        report["verdict"] = "ISSUE_IN_SOURCE"
        for r in hard:
            report["remediation"] += _remedy(sync, norm, r.reason)
        return report
    if want is None and norm in desired.deactivate:
        inactive = target is None or all(target.get(k) == v for k, v in (job.deactivation or {}).items())
        report["verdict"] = "IN_SYNC" if inactive else "PENDING"
        report["remediation"] = (
            ["Inactive in the source and not active in the target: nothing to do."]
            if inactive
            else [f"Inactive in the source; the next run deactivates it ({job.deactivation})."]
        )
        return report
    if want is None:
        report["verdict"] = "NOT_IN_SCOPE"
        report["remediation"] = [
            f"No {SOURCE_NAMES.get(sync, sync)} {norm} is in scope (wrong company, closed/filtered status, or unknown key). "
            "Check the key and VIEWPOINT_COMPANY / JOB_OPEN_STATUSES."
        ]
        return report
    changes = diff(want, target) if target is not None else ()
    report["diff"] = {c.field: c.as_dict() for c in changes}
    if tracked:
        report["verdict"] = "ISSUE_IN_TARGET"
        report["remediation"] = [
            f"SafetyAmp refused the last attempt ({tracked.get('attempts')} so far): {tracked.get('reason')}.",
            "Fix the conflicting record in SafetyAmp (or the source value), then "
            f"`python sync_batch.py failed retry --sync {sync} --key {norm}`.",
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
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['sync']} {report['key']}: {report['verdict']}"]
    for r in report["rejections"]:
        lines.append(f"  {r['kind']}: {r['reason']}")
    for field, change in report["diff"].items():
        lines.append(f"  {field}: {change['before']!r} -> {change['after']!r}")
    if report.get("tracker"):
        t = report["tracker"]
        lines.append(f"  last error: {t.get('reason')} (attempts {t.get('attempts')}, next retry {t.get('next_retry')})")
    lines.append("  what to do:")
    lines += [f"    - {step}" for step in report["remediation"]]
    return "\n".join(lines)
