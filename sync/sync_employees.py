"""Viewpoint employees (bPREH) + Microsoft Graph mail -> SafetyAmp users.

Key: ``emp_id`` = bPREH.Employee. Rules (docs/configuration.md repeats them for operators):
- Active = ActiveYN 'Y' and no TermDate, or rehired on/after the TermDate, or a TermDate
  still in the future (a scheduled termination: active until that day). Active
  employees are created/updated with ``system_access: 1``; terminated ones that exist
  in SafetyAmp are deactivated (EMPLOYEE_DEACTIVATION_MODE=revoke_access sets
  ``system_access: 0``); nobody is ever deleted.
- E-mail: the enabled Entra user's ``mail`` matched by ``employeeId``, else bPREH.Email
  (``mail_by_employee_id``: only users whose accountEnabled is true and whose mail is a
  work address compete; two such users on one employeeId are ambiguous, so neither counts).
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
- Active, employee numbers and title keys are Vista's rules (sync/vista.py).
- Created users get the SAFETYAMP_DEFAULT_ROLE role, SAFETYAMP_TIMEZONE, text_opt_out 1 and
  country US; updates only ever touch ``USER_FIELDS``.
- Names follow the text policy (utils/data_validator.py): a control, invisible, separator,
  tag or private-use character rejects the record with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sync.base import BaseSync, Desired, Rejected, SyncContext, fingerprint
from sync.ports import Row
from sync.vista import active_flag_known, employee_key, is_active_employee, title_key
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
"""The fields the sync manages on every run; the create-only defaults are sent once."""


def mail_by_employee_id(users: Iterable[Row]) -> tuple[dict[str, str], dict[str, list[Row]]]:
    """Entra users' work mail by employee number: the one rule (issue 12).

    - Only ``accountEnabled is True`` counts. Graph returns the flag whenever it is
      selected; a user without it is not known to be enabled, and a disabled one's
      mailbox is not where a working person reads mail.
    - Only a usable work mail counts: a null mail, a non-text one and the tenant-default
      ``*.onmicrosoft.com`` addresses are ignored, so an admin or service account that
      carries the same employeeId without a work mailbox competes with nobody.
    - The employeeId is read as an employee number (``employee_key``: "000123" -> "123");
      one that is not an employee number is nobody's.
    - Two or more users left on one employee number: we cannot tell which mail is right,
      so neither is kept; they come back in the second value (number -> users) to be
      reported, and the employee falls back to bPREH.Email.
    """
    candidates: dict[str, list[Row]] = {}
    for user in users:
        if user.get("accountEnabled") is not True:
            continue
        key = employee_key(user.get("employeeId"))
        mail = user.get("mail")
        if key is None or not isinstance(mail, str) or not mail.strip() or "onmicrosoft.com" in mail.lower():
            continue
        candidates.setdefault(key, []).append(user)
    mails: dict[str, str] = {}
    duplicates: dict[str, list[Row]] = {}
    for key, group in candidates.items():
        if len(group) > 1:
            duplicates[key] = group
        else:
            mails[key] = str(group[0]["mail"]).strip()
    return mails, duplicates


@dataclass(frozen=True)
class EmployeeInputs:
    """Everything ``map_employees`` needs, gathered by ``EmployeeSync.gather`` (I/O)."""

    rows: list[Row]
    latest_jobs: Mapping[Any, Any] = field(default_factory=dict)
    entra_users: list[Row] = field(default_factory=list)
    sites: list[Row] = field(default_factory=list)
    titles: list[Row] = field(default_factory=list)
    roles: list[Row] = field(default_factory=list)
    users: list[Row] = field(default_factory=list)  # SafetyAmp users (uniqueness checks)


@dataclass(frozen=True)
class EmployeeRules:
    """The settings the mapping follows (from ``config.settings.Settings``)."""

    today: date
    role_name: str = "Field"
    timezone: str = "America/Chicago"
    default_home_site_id: int | None = None
    job_history_days: int = 365


@dataclass(frozen=True)
class _Lookups:
    sites: dict[str, Any]
    titles: dict[str | None, Any]
    role_id: Any


def _lookups(inputs: EmployeeInputs, rules: EmployeeRules) -> _Lookups:
    sites = {}
    for site in inputs.sites:
        code = str(site.get("external_code") or "").strip()
        if code and str(site.get("active", 1)) != "0":
            sites[code] = site.get("id")
    titles = {title_key(t.get("name")): t.get("id") for t in inputs.titles}
    role_name = rules.role_name.casefold()
    roles = [r.get("id") for r in inputs.roles if str(r.get("name", "")).casefold() == role_name]
    return _Lookups(sites, titles, roles[0] if roles else None)


def map_employees(inputs: EmployeeInputs, rules: EmployeeRules) -> Desired:
    """The SafetyAmp users the bPREH rows want (pure: no I/O, no clock, no settings).

    Records carry the create-only defaults too (``roles`` with the role id it found,
    ``timezone``, ``text_opt_out``, ``country``): ``EmployeeSync.compare_fields`` keeps
    updates to ``USER_FIELDS``, so they are sent on create only."""
    mapper = _Mapper(inputs, rules)
    return mapper.run()


class _Mapper:
    """One call of ``map_employees``: the inputs, the lookups built from them once, and
    the ``Desired`` being filled."""

    def __init__(self, inputs: EmployeeInputs, rules: EmployeeRules) -> None:
        self.inputs = inputs
        self.rules = rules
        self.look = _lookups(inputs, rules)
        self.mails, self.ambiguous = mail_by_employee_id(inputs.entra_users)
        self.latest = {emp: str(v).strip() for k, v in inputs.latest_jobs.items() if (emp := employee_key(k)) is not None}
        self.out = Desired(source_count=len(inputs.rows))

    def run(self) -> Desired:
        out = self.out
        if self.look.role_id is None:
            out.notes.append(f"role {self.rules.role_name!r} not found in SafetyAmp; new users get no role")
        candidates: dict[str, dict[str, Any]] = {}
        for key, row in self._unique_rows():
            if not active_flag_known(row):
                out.rejected.append(
                    Rejected(key, f"ActiveYN is {row.get('ActiveYN')!r}; expected Y or N", ("ActiveYN",), _safe(row))
                )
                continue
            if not is_active_employee(row, self.rules.today):
                out.deactivate.add(key)
                continue
            record = self._record(key, row)
            if record is not None:
                candidates[key] = record
                out.fingerprints[key] = fingerprint(row, self.mails.get(key), self.latest.get(key))
        _reject_shared(candidates, self._owners(), out)
        out.records = candidates
        return out

    def _unique_rows(self) -> list[tuple[str, Row]]:
        """Rows with a valid employee number found on one row only. Counted first: a
        number on two rows (a view joining bPREH to something) is ambiguous as a whole;
        neither row may create, update or deactivate, whatever their order or state."""
        out = self.out
        keys: list[str | None] = []
        for row in self.inputs.rows:
            try:
                keys.append(employee_number(row.get("Employee"), "bPREH.Employee"))
            except InvalidValue as exc:
                keys.append("")  # refused and reported here
                out.rejected.append(Rejected(shown_key(row.get("Employee")), exc.reason, ("Employee",), _safe(row)))
        occurrences = Counter(k for k in keys if k)
        reported: set[str] = set()
        unique: list[tuple[str, Row]] = []
        for row, key in zip(self.inputs.rows, keys, strict=True):
            if key is None:
                out.rejected.append(Rejected("(blank)", "bPREH row without Employee", ("Employee",)))
            elif key and occurrences[key] > 1:
                if key not in reported:
                    reported.add(key)
                    why = f"employee number {key} appears on {occurrences[key]} bPREH rows; none is synced"
                    out.rejected.append(Rejected(key, why, ("Employee",)))
            elif key:
                unique.append((key, row))
        return unique

    def _record(self, key: str, row: Row) -> dict[str, Any] | None:
        names = self._names(key, row)
        email = self._email(key, row) if names is not None else None
        if names is None or email is None:
            return None
        site_id, site_reason = self._home_site(key, row)
        if site_id is None:
            self.out.rejected.append(Rejected(key, site_reason, ("home_site_id",), _safe(row)))
            return None
        first, middle, last = names
        record: dict[str, Any] = {
            "emp_id": key,
            "first_name": first,
            "middle_name": middle,
            "last_name": last,
            "email": email,
            **self._phones(key, row),
            "home_site_id": site_id,
            "current_title_id": self.look.titles.get(title_key(row.get("Title"))),
            "current_hire_date": self._hire_date(key, row),
            "system_access": 1,
        }
        # create-only (not in USER_FIELDS): what a new user starts with
        record["roles"] = [{"id": self.look.role_id}] if self.look.role_id is not None else None
        record.update(timezone=self.rules.timezone, text_opt_out=1, country="US")
        return record

    def _names(self, key: str, row: Row) -> tuple[str, str | None, str] | None:
        try:
            first = clean_name(row.get("FirstName"), "first_name")
            last = clean_name(row.get("LastName"), "last_name")
            middle = clean_name(row.get("MidName"), "middle_name")
        except InvalidValue as exc:
            self.out.rejected.append(Rejected(key, exc.reason, ("FirstName", "LastName", "MidName"), _safe(row)))
            return None
        if not first or not last:
            missing = "FirstName" if not first else "LastName"
            why = f"{missing} is empty in bPREH; SafetyAmp requires first and last name"
            self.out.rejected.append(Rejected(key, why, (missing,), _safe(row)))
            return None
        return first, middle, last

    def _email(self, key: str, row: Row) -> str | None:
        raw_mail = self.mails.get(key) or row.get("Email")
        source = "Entra ID" if self.mails.get(key) else "bPREH.Email"
        try:
            email = normalize_email(raw_mail)
        except InvalidValue as exc:
            self.out.rejected.append(Rejected(key, f"e-mail from {source} is invalid: {exc.reason}", ("email",), _safe(row)))
            return None
        if not email:
            why = " (its employeeId is on several Entra users)" if key in self.ambiguous else ""
            reason = f"no e-mail: no enabled Entra user with employeeId {key}{why} and bPREH.Email is empty"
            self.out.rejected.append(Rejected(key, reason, ("email",), _safe(row)))
            return None
        return email

    def _phones(self, key: str, row: Row) -> dict[str, str | None]:
        phones: dict[str, str | None] = {}
        for name, column in (("mobile_phone", "CellPhone"), ("work_phone", "Phone")):
            try:
                phones[name] = normalize_phone(row.get(column))
            except InvalidValue as exc:
                phones[name] = None
                self.out.rejected.append(
                    Rejected(key, f"{column} {exc.reason}; {name} left out", (name,), _safe(row), kind="field_dropped")
                )
        return phones

    def _hire_date(self, key: str, row: Row) -> str | None:
        """The most recent of HireDate and RecentRehireDate; a bad one drops the field."""
        dropped = ("current_hire_date",)
        try:
            hire = to_date(row.get("HireDate"), field="HireDate")
            rehire = to_date(row.get("RecentRehireDate"), field="RecentRehireDate")
        except InvalidValue as exc:
            self.out.rejected.append(Rejected(key, f"{exc.reason}; current_hire_date left out", dropped, kind="field_dropped"))
            return None
        if rehire is not None and (hire is None or rehire > hire):
            hire = rehire
        try:
            return iso_date(hire, today=self.rules.today)
        except InvalidValue as exc:
            why = f"HireDate {exc.reason}; current_hire_date left out"
            self.out.rejected.append(Rejected(key, why, dropped, kind="field_dropped"))
            return None

    def _home_site(self, key: str, row: Row) -> tuple[Any, str]:
        sites = self.look.sites
        worked = self.latest.get(key)
        if worked and worked in sites:
            return sites[worked], ""
        default_job = str(row.get("Job") or "").strip()
        if default_job and default_job in sites:
            return sites[default_job], ""
        if self.rules.default_home_site_id is not None:
            return self.rules.default_home_site_id, ""
        parts = [
            f"latest job worked {worked!r} has no active site"
            if worked
            else f"no job worked in the last {self.rules.job_history_days} days (bPRJC)",
            f"default job {default_job!r} has no active site" if default_job else "no default job (bPREH.Job)",
            "DEFAULT_HOME_SITE_ID is not set",
        ]
        return None, "no home site: " + "; ".join(parts)

    def _owners(self) -> dict[str, dict[str, str]]:
        """Who holds each e-mail and phone in SafetyAmp now (lower-cased value -> emp)."""
        current: dict[str, Row] = {}
        for user in self.inputs.users:  # BaseSync.current's rule: the first user of a key
            emp = employee_key(user.get("emp_id"))
            if emp is not None and isinstance(user.get("id"), (int, str)):
                current.setdefault(emp, user)
        owners: dict[str, dict[str, str]] = {"email": {}, "mobile_phone": {}, "work_phone": {}}
        for emp, user in current.items():
            for name, held in owners.items():
                value = user.get(name)
                value = value.strip().lower() if isinstance(value, str) else ""
                if value:
                    held[value] = emp
        return owners


def _reject_shared(candidates: dict[str, dict[str, Any]], owners: dict[str, dict[str, str]], out: Desired) -> None:
    """Uniqueness SafetyAmp enforces, checked before sending (a 422 costs a request)."""
    by_mail: dict[str, list[str]] = {}
    for key, rec in candidates.items():
        by_mail.setdefault(rec["email"].lower(), []).append(key)
    for mail, keys in by_mail.items():
        if len(keys) > 1:
            for key in keys:
                others = ", ".join(k for k in keys if k != key)
                why = f"e-mail {mail} is shared with employee(s) {others}; SafetyAmp needs a unique e-mail"
                out.rejected.append(Rejected(key, why, ("email",)))
                candidates.pop(key)
    for key in list(candidates):
        rec = candidates[key]
        holder = owners["email"].get(rec["email"].lower())
        if holder is not None and holder != key:
            why = f"e-mail {rec['email']} already belongs to SafetyAmp user with emp_id {holder}"
            out.rejected.append(Rejected(key, why, ("email",)))
            candidates.pop(key)
    for name in ("mobile_phone", "work_phone"):
        users_of: dict[str, list[str]] = {}
        for key, rec in candidates.items():
            if rec[name]:
                users_of.setdefault(rec[name], []).append(key)
        for phone, keys in users_of.items():
            holder = owners[name].get(phone.lower()) if name == "mobile_phone" else None
            if len(keys) == 1 and (holder is None or holder in keys):
                continue
            for key in keys:
                candidates[key][name] = None
                why = f"{name} {phone} is shared with another person; left out"
                out.rejected.append(Rejected(key, why, (name,), kind="field_dropped"))


class EmployeeSync(BaseSync):
    name = "employees"
    collection = "users"
    key_field = "emp_id"
    compare_fields = USER_FIELDS  # roles, timezone, text_opt_out, country: on create only

    @property
    def deactivation(self) -> dict[str, Any] | None:  # type: ignore[override]
        return {"system_access": 0} if self.settings.employee_deactivation_mode == "revoke_access" else None

    def key_of(self, row: Row) -> str | None:
        # A SafetyAmp user whose emp_id is not an employee number is not ours.
        return employee_key(row.get("emp_id"))

    @classmethod
    def key_from_text(cls, text: str) -> str:
        key = employee_number(text, "key")
        if key is None:
            raise InvalidValue("an employee number is needed (the key is blank)")
        return key

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

    def inputs(self) -> dict[str, Callable[[], Any]]:
        vp = self.viewpoint
        since = _history_start(self.ctx)
        out: dict[str, Callable[[], Any]] = {"employees": vp.employees, f"latest_jobs:{since}": lambda: vp.latest_jobs(since)}
        if self.ctx.graph is not None:
            out["graph_users"] = self.ctx.graph.users
        return out

    def gather(self) -> EmployeeInputs:
        """The I/O half of ``load``: each source and each target collection read once."""
        read = {name: self.ctx.source(name, loader) for name, loader in self.inputs().items()}
        since = _history_start(self.ctx)
        targets = self.ctx.targets
        return EmployeeInputs(
            rows=read["employees"],
            latest_jobs=read[f"latest_jobs:{since}"],
            entra_users=read.get("graph_users", []),
            sites=targets.get("sites"),
            titles=targets.get("user_titles"),
            roles=targets.get("roles"),
            users=targets.get(self.collection),
        )

    def rules(self) -> EmployeeRules:
        s = self.settings
        return EmployeeRules(
            today=self.ctx.today,
            role_name=s.safetyamp_default_role,
            timezone=s.safetyamp_timezone,
            default_home_site_id=s.default_home_site_id,
            job_history_days=s.job_history_days,
        )

    def load(self) -> Desired:
        desired = map_employees(self.gather(), self.rules())
        self.release()
        return desired

    def release(self) -> None:
        # Employees is the last sync of a run to read these (titles reads the rows before
        # it): let them go before the apply phase (about 85 MB at 50 000 employees).
        for name in ("employees", f"latest_jobs:{_history_start(self.ctx)}", "graph_users"):
            self.ctx.source_cache.pop(name, None)

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
