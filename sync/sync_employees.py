"""Viewpoint employees (bPREH) + Microsoft Graph mail -> SafetyAmp users.

Key: ``emp_id`` = bPREH.Employee. Rules (docs/configuration.md repeats them for operators):
- Active = ActiveYN 'Y' and no TermDate, or rehired on/after the TermDate, or a TermDate
  still in the future (a scheduled termination: active until that day). Active
  employees are created/updated with ``system_access: 1``; terminated ones that exist
  in SafetyAmp are deactivated (EMPLOYEE_DEACTIVATION_MODE=revoke_access sets
  ``system_access: 0``); nobody is ever deleted.
- E-mail: the enabled Entra user's ``mail`` matched by ``employeeId``, else bPREH.Email.
  Required by SafetyAmp: an employee without a usable one is rejected with the reason.
  An e-mail shared by several employees is rejected for each of them (SafetyAmp keeps
  e-mails unique; picking a winner would be arbitrary), as is one already held by
  another SafetyAmp user.
- Phones: E.164. A phone that cannot be normalised, or one shared with another person,
  is dropped from the record (reported as ``field_dropped``), the rest still syncs.
- Home site: the site of the job worked most recently (bPRJC, JOB_HISTORY_DAYS back),
  else the site of the employee's default job (bPREH.Job), else DEFAULT_HOME_SITE_ID;
  none of these -> rejected with that reason.
- A field empty in every source is left unmanaged (never cleared in SafetyAmp).
- An employee number on several bPREH rows (a view, a damaged table) is rejected once and
  neither created, updated nor deactivated; so is a row whose ActiveYN is not Y or N.
- Employee numbers follow one rule wherever they are written (``employee_number``: the
  digits 0-9, at most 16, leading zeros dropped): a bPREH row whose Employee is not one is
  rejected with the reason; an Entra user or a SafetyAmp user whose employeeId/emp_id is
  not one matches nobody (not ours: never updated or deactivated).
- Names follow the text policy (utils/data_validator.py): a control, invisible, separator,
  tag or private-use character rejects the record with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from sync.base import BaseSync, Desired, Rejected, SyncContext, fingerprint
from sync.ports import Row
from sync.sync_titles import is_active_employee, title_key
from utils.data_validator import (
    InvalidValue,
    clean_name,
    employee_number,
    iso_date,
    normalize_email,
    normalize_phone,
    shown_key,
    to_date,
)

USER_FIELDS = (
    "emp_id",
    "first_name",
    "middle_name",
    "last_name",
    "email",
    "mobile_phone",
    "work_phone",
    "home_site_id",
    "current_title_id",
    "current_hire_date",
    "system_access",
)


def _norm_emp(value: Any) -> str | None:
    """An employee number in its one canonical form (``employee_number``), or None when
    it is blank or cannot be one: such a value matches no Vista employee."""
    try:
        return employee_number(value)
    except InvalidValue:
        return None


def mail_by_employee_id(users: list[Row]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Enabled Entra users' mail by employeeId. Mails on *.onmicrosoft.com are tenant
    defaults, not work addresses, and are ignored; so is an employeeId that is not an
    employee number (that user is nobody's). An employeeId on two enabled users is
    ambiguous: it maps to nothing and is returned in the second value."""
    seen: dict[str, list[str]] = {}
    for user in users:
        if user.get("accountEnabled") is False:
            continue
        emp = _norm_emp(user.get("employeeId"))
        mail = user.get("mail")
        mail = mail.strip() if isinstance(mail, str) else ""
        if emp is None:
            continue
        seen.setdefault(emp, []).append(mail)
    mails: dict[str, str] = {}
    dupes: dict[str, list[str]] = {}
    for emp, found in seen.items():
        if len(found) > 1:
            dupes[emp] = found
            continue
        if found[0] and "onmicrosoft.com" not in found[0].lower():
            mails[emp] = found[0]
    return mails, dupes


class EmployeeSync(BaseSync):
    name = "employees"
    collection = "users"
    key_field = "emp_id"

    @property
    def deactivation(self) -> dict[str, Any] | None:  # type: ignore[override]
        return {"system_access": 0} if self.settings.employee_deactivation_mode == "revoke_access" else None

    def key_of(self, row: Row) -> str | None:
        # A SafetyAmp user whose emp_id is not an employee number is not ours.
        return _norm_emp(row.get("emp_id"))

    @classmethod
    def key_from_text(cls, text: str) -> str:
        key = employee_number(text, "key")
        if key is None:
            raise InvalidValue("an employee number is needed (the key is blank)")
        return key

    # ---- lookups built once per run ---------------------------------------------
    def _lookups(self) -> dict[str, Any]:
        sites = {}
        for site in self.ctx.targets.get("sites"):
            code = str(site.get("external_code") or "").strip()
            if code and str(site.get("active", 1)) != "0":
                sites[code] = site.get("id")
        titles = {title_key(t.get("name")): t.get("id") for t in self.ctx.targets.get("user_titles")}
        role_name = self.settings.safetyamp_default_role.casefold()
        roles = [r.get("id") for r in self.ctx.targets.get("roles") if str(r.get("name", "")).casefold() == role_name]
        return {"sites": sites, "titles": titles, "role_id": roles[0] if roles else None}

    @classmethod
    def sources(cls, ctx: SyncContext) -> dict[str, Callable[[], Any]]:
        """The latest-job query, read ahead by the runner: seconds of database time at
        50 000 employees for a small result. (The bPREH rows and the Entra users are
        read when needed: read ahead, they would be held in memory all at once.)"""
        vp = ctx.viewpoint
        if vp is None:
            return {}
        since = _history_start(ctx)
        return {f"latest_jobs:{since}": lambda: vp.latest_jobs(since)}

    def load(self) -> Desired:
        vp = self.viewpoint
        rows = self.ctx.source("employees", vp.employees)
        since = _history_start(self.ctx)
        latest_rows = self.ctx.source(f"latest_jobs:{since}", lambda: vp.latest_jobs(since))
        latest = {emp: str(v).strip() for k, v in latest_rows.items() if (emp := _norm_emp(k)) is not None}
        mails: dict[str, str] = {}
        if self.ctx.graph is not None:
            users = self.ctx.source("graph_users", self.ctx.graph.users)
            mails, ambiguous = mail_by_employee_id(users)
        else:
            ambiguous = {}
        look = self._lookups()
        self._role_id = look["role_id"]
        out = Desired(source_count=len(rows))
        if self._role_id is None:
            out.notes.append(f"role {self.settings.safetyamp_default_role!r} not found in SafetyAmp; new users get no role")

        candidates: dict[str, dict[str, Any]] = {}
        # Counted first: a number on two rows (a view joining bPREH to something) is
        # ambiguous as a whole; neither row may create, update or deactivate, whatever
        # the order of the rows or the state of the first one.
        keys: list[str | None] = []
        refused: set[int] = set()
        for i, row in enumerate(rows):
            try:
                keys.append(employee_number(row.get("Employee"), "bPREH.Employee"))
            except InvalidValue as exc:
                keys.append(None)
                refused.add(i)
                out.rejected.append(Rejected(shown_key(row.get("Employee")), exc.reason, ("Employee",), _safe(row)))
        occurrences = Counter(k for k in keys if k is not None)
        reported: set[str] = set()
        for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
            if key is None:
                if i not in refused:
                    out.rejected.append(Rejected("(blank)", "bPREH row without Employee", ("Employee",)))
                continue
            if occurrences[key] > 1:
                if key not in reported:
                    reported.add(key)
                    out.rejected.append(
                        Rejected(
                            key, f"employee number {key} appears on {occurrences[key]} bPREH rows; none is synced", ("Employee",)
                        )
                    )
                continue
            if str(row.get("ActiveYN") or "").strip().upper() not in ("Y", "N"):
                # NOT NULL in Vista: a blank is damage, not a termination (never deactivate on it).
                out.rejected.append(
                    Rejected(key, f"ActiveYN is {row.get('ActiveYN')!r}; expected Y or N", ("ActiveYN",), _safe(row))
                )
                continue
            if not is_active_employee(row, self.ctx.today):
                out.deactivate.add(key)
                continue
            record = self._map(key, row, latest, mails, ambiguous, look, out)
            if record is not None:
                candidates[key] = record
                out.fingerprints[key] = fingerprint(row, mails.get(key), latest.get(key))
        self._reject_shared(candidates, out)
        out.records = candidates
        # Employees is the last sync of a run to read these (titles reads the rows before
        # it): let them go before the apply phase (about 85 MB at 50 000 employees).
        for name in ("employees", f"latest_jobs:{since}", "graph_users"):
            self.ctx.source_cache.pop(name, None)
        return out

    def _map(
        self,
        key: str,
        row: Row,
        latest: dict[str, str],
        mails: dict[str, str],
        ambiguous: dict[str, list[str]],
        look: dict[str, Any],
        out: Desired,
    ) -> dict[str, Any] | None:
        try:
            first = clean_name(row.get("FirstName"), "first_name")
            last = clean_name(row.get("LastName"), "last_name")
            middle = clean_name(row.get("MidName"), "middle_name")
        except InvalidValue as exc:
            out.rejected.append(Rejected(key, exc.reason, ("FirstName", "LastName", "MidName"), _safe(row)))
            return None
        if not first or not last:
            missing = "FirstName" if not first else "LastName"
            out.rejected.append(
                Rejected(key, f"{missing} is empty in bPREH; SafetyAmp requires first and last name", (missing,), _safe(row))
            )
            return None
        raw_mail = mails.get(key) or row.get("Email")
        source = "Entra ID" if mails.get(key) else "bPREH.Email"
        try:
            email = normalize_email(raw_mail)
        except InvalidValue as exc:
            out.rejected.append(Rejected(key, f"e-mail from {source} is invalid: {exc.reason}", ("email",), _safe(row)))
            return None
        if not email:
            why = " (its employeeId is on several Entra users)" if key in ambiguous else ""
            out.rejected.append(
                Rejected(
                    key,
                    f"no e-mail: no enabled Entra user with employeeId {key}{why} and bPREH.Email is empty",
                    ("email",),
                    _safe(row),
                )
            )
            return None
        phones: dict[str, str | None] = {}
        for field, column in (("mobile_phone", "CellPhone"), ("work_phone", "Phone")):
            try:
                phones[field] = normalize_phone(row.get(column))
            except InvalidValue as exc:
                phones[field] = None
                out.rejected.append(
                    Rejected(key, f"{column} {exc.reason}; {field} left out", (field,), _safe(row), kind="field_dropped")
                )
        site_id, site_reason = self._home_site(key, row, latest, look["sites"])
        if site_id is None:
            out.rejected.append(Rejected(key, site_reason, ("home_site_id",), _safe(row)))
            return None
        hire_text = None
        try:
            hire = to_date(row.get("HireDate"), field="HireDate")
            rehire = to_date(row.get("RecentRehireDate"), field="RecentRehireDate")
        except InvalidValue as exc:
            out.rejected.append(
                Rejected(key, f"{exc.reason}; current_hire_date left out", ("current_hire_date",), kind="field_dropped")
            )
        else:
            if rehire is not None and (hire is None or rehire > hire):
                hire = rehire
            try:
                hire_text = iso_date(hire, today=self.ctx.today)
            except InvalidValue as exc:
                out.rejected.append(
                    Rejected(
                        key, f"HireDate {exc.reason}; current_hire_date left out", ("current_hire_date",), kind="field_dropped"
                    )
                )
        return {
            "emp_id": key,
            "first_name": first,
            "middle_name": middle,
            "last_name": last,
            "email": email,
            "mobile_phone": phones["mobile_phone"],
            "work_phone": phones["work_phone"],
            "home_site_id": site_id,
            "current_title_id": look["titles"].get(title_key(row.get("Title"))),
            "current_hire_date": hire_text,
            "system_access": 1,
        }

    def _home_site(self, key: str, row: Row, latest: dict[str, str], sites: dict[str, Any]) -> tuple[Any, str]:
        worked = latest.get(key)
        if worked and worked in sites:
            return sites[worked], ""
        default_job = str(row.get("Job") or "").strip()
        if default_job and default_job in sites:
            return sites[default_job], ""
        if self.settings.default_home_site_id is not None:
            return self.settings.default_home_site_id, ""
        parts = []
        parts.append(
            f"latest job worked {worked!r} has no active site"
            if worked
            else f"no job worked in the last {self.settings.job_history_days} days (bPRJC)"
        )
        parts.append(f"default job {default_job!r} has no active site" if default_job else "no default job (bPREH.Job)")
        parts.append("DEFAULT_HOME_SITE_ID is not set")
        return None, "no home site: " + "; ".join(parts)

    def _reject_shared(self, candidates: dict[str, dict[str, Any]], out: Desired) -> None:
        """Uniqueness SafetyAmp enforces, checked before sending (a 422 costs a request)."""
        current = self.current()
        owners: dict[str, dict[str, str]] = {"email": {}, "mobile_phone": {}, "work_phone": {}}
        for emp, user in current.items():
            for field in owners:
                value = user.get(field)
                value = value.strip().lower() if isinstance(value, str) else ""
                if value:
                    owners[field][value] = emp
        by_mail: dict[str, list[str]] = {}
        for key, rec in candidates.items():
            by_mail.setdefault(rec["email"].lower(), []).append(key)
        for mail, keys in by_mail.items():
            if len(keys) > 1:
                for key in keys:
                    others = ", ".join(k for k in keys if k != key)
                    out.rejected.append(
                        Rejected(
                            key, f"e-mail {mail} is shared with employee(s) {others}; SafetyAmp needs a unique e-mail", ("email",)
                        )
                    )
                    candidates.pop(key)
        for key in list(candidates):
            rec = candidates[key]
            holder = owners["email"].get(rec["email"].lower())
            if holder is not None and holder != key:
                out.rejected.append(
                    Rejected(key, f"e-mail {rec['email']} already belongs to SafetyAmp user with emp_id {holder}", ("email",))
                )
                candidates.pop(key)
        for field in ("mobile_phone", "work_phone"):
            users_of: dict[str, list[str]] = {}
            for key, rec in candidates.items():
                if rec[field]:
                    users_of.setdefault(rec[field], []).append(key)
            for phone, keys in users_of.items():
                holder = owners[field].get(phone.lower()) if field == "mobile_phone" else None
                clash = len(keys) > 1 or (holder is not None and holder not in keys)
                if not clash:
                    continue
                for key in keys:
                    candidates[key][field] = None
                    out.rejected.append(
                        Rejected(key, f"{field} {phone} is shared with another person; left out", (field,), kind="field_dropped")
                    )

    def create_payload(self, action):  # type: ignore[no-untyped-def]
        payload = dict(action.payload)
        if self._role_id is not None:
            payload.setdefault("roles", [{"id": self._role_id}])
        payload.setdefault("timezone", self.settings.safetyamp_timezone)
        payload.setdefault("text_opt_out", 1)
        payload.setdefault("country", "US")
        return payload

    def update_payload(self, action, current):  # type: ignore[no-untyped-def]
        # SafetyAmp is reported to want core fields even on PATCH (docs/emulated-apis.md,
        # observed by the predecessor): send them along, they cost nothing.
        payload = dict(action.payload)
        for core in ("first_name", "last_name", "email"):
            if core not in payload and current.get(core):
                payload[core] = current[core]
        return payload


def _history_start(ctx: SyncContext) -> date:
    """First day of the JOB_HISTORY_DAYS window for the latest job worked."""
    return ctx.today - timedelta(days=ctx.settings.job_history_days)


def _safe(row: Row) -> dict[str, Any]:
    """The source values worth showing an operator (no birth date, no SSN: never selected)."""
    keep = ("Employee", "FirstName", "LastName", "Email", "Phone", "CellPhone", "PRDept", "Job", "ActiveYN", "TermDate")
    return {k: row.get(k) for k in keep if k in row}
