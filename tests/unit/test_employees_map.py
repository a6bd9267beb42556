"""The employees mapping as pure functions: ``mail_by_employee_id`` (the one Entra mail
rule the sync runs) and ``map_employees`` (bPREH rows + lookups -> Desired), with literals."""

from __future__ import annotations

from datetime import date

import pytest

from sync.engine import plan
from sync.sync_employees import USER_FIELDS, EmployeeInputs, EmployeeRules, mail_by_employee_id, map_employees

pytestmark = pytest.mark.unit
TODAY = date(2026, 11, 1)
RULES = EmployeeRules(today=TODAY, role_name="Field", timezone="America/Chicago", job_history_days=365)
SITES = [{"id": 5, "external_code": "J1"}, {"id": 6, "external_code": "J2", "active": 0}]
ROLES = [{"id": 3, "name": "Office"}, {"id": 9, "name": "field"}]


def row(n, **kw):
    base = {"Employee": n, "FirstName": "Ann", "MidName": None, "LastName": "Lee", "Email": f"e{n}@co.com",
            "Phone": None, "CellPhone": None, "HireDate": date(2020, 1, 1), "TermDate": None,
            "RecentRehireDate": None, "ActiveYN": "Y", "Job": "J1", "Title": "Foreman"}  # fmt: skip
    return {**base, **kw}


def inputs(rows, **kw):
    return EmployeeInputs(rows=rows, sites=kw.pop("sites", SITES), roles=kw.pop("roles", ROLES), **kw)


def test_mail_by_employee_id_rules():
    users = [
        {"id": "u1", "employeeId": "1", "mail": "p1@acme.test", "accountEnabled": True},
        {"id": "a", "employeeId": " 000123 ", "mail": " Ann@acme.test ", "accountEnabled": True},
        {"id": "b", "employeeId": "E-7", "mail": "e7@acme.test", "accountEnabled": True},
        {"id": "b2", "employeeId": "\u00b2", "mail": "sup@acme.test", "accountEnabled": True},
        {"id": "b3", "employeeId": "1" * 5000, "mail": "huge@acme.test", "accountEnabled": True},
        {"id": "c", "employeeId": "5", "mail": "off@acme.test", "accountEnabled": False},
        {"id": "d", "employeeId": "6", "mail": None, "accountEnabled": True},
        {"id": "e", "employeeId": "8", "mail": "x@acme.onmicrosoft.com", "accountEnabled": True},
        {"id": "f", "employeeId": None, "mail": "nobody@acme.test", "accountEnabled": True},
        {"id": "g", "employeeId": "", "mail": "blank@acme.test", "accountEnabled": True},
        {"id": "h", "employeeId": "9", "mail": "no-flag@acme.test"},
        {"id": "i1", "employeeId": "42", "mail": "one@acme.test", "accountEnabled": True},
        {"id": "i2", "employeeId": "0042", "mail": "two@acme.test", "accountEnabled": True},
        {"id": "j", "employeeId": "42", "mail": "disabled@acme.test", "accountEnabled": False},
        {"id": "k", "employeeId": "77", "mail": "k@acme.test", "accountEnabled": True},
        {"id": "k-admin", "employeeId": "77", "mail": "k@acme.onmicrosoft.com", "accountEnabled": True},
        {"id": "k-svc", "employeeId": "77", "mail": None, "accountEnabled": True},
    ]
    mails, duplicates = mail_by_employee_id(users)
    # not employee numbers ("E-7", a superscript digit, 5000 digits): nobody's mail;
    # 9 has no accountEnabled (not known to be enabled); 77's admin accounts have no work mail
    assert mails == {"1": "p1@acme.test", "123": "Ann@acme.test", "77": "k@acme.test"}
    assert list(duplicates) == ["42"]
    assert [u["id"] for u in duplicates["42"]] == ["i1", "i2"]


def test_map_returns_the_role_it_decided_in_each_record_and_updates_leave_it_alone():
    desired = map_employees(inputs([row(1)]), RULES)
    rec = desired.records["1"]
    assert rec["roles"] == [{"id": 9}]  # matched without case
    assert (rec["timezone"], rec["text_opt_out"], rec["country"]) == ("America/Chicago", 1, "US")
    assert rec["home_site_id"] == 5 and rec["email"] == "e1@co.com" and desired.notes == []
    current = {"1": {"id": 70, **{k: rec[k] for k in USER_FIELDS}, "roles": [{"id": 3}], "timezone": "UTC"}}
    (action,) = plan(desired.records, current, compare=USER_FIELDS)
    assert action.kind == "unchanged"  # a role or time zone changed in SafetyAmp is left alone
    (create,) = plan(desired.records, {}, compare=USER_FIELDS)
    assert create.payload["roles"] == [{"id": 9}]


def test_map_without_the_role_notes_it_and_creates_without_one():
    desired = map_employees(inputs([row(1)], roles=[{"id": 3, "name": "Office"}]), RULES)
    assert desired.notes == ["role 'Field' not found in SafetyAmp; new users get no role"]
    (create,) = plan(desired.records, {}, compare=USER_FIELDS)
    assert "roles" not in create.payload


def test_map_refuses_ambiguous_and_damaged_rows_and_deactivates_leavers():
    rows = [row(1), row("0001"), row(2, ActiveYN=""), row(3, ActiveYN="N", TermDate=date(2026, 1, 1)),
            row("E-4"), row(None), row(5)]  # fmt: skip
    desired = map_employees(inputs(rows), RULES)
    assert set(desired.records) == {"5"} and desired.deactivate == {"3"}
    reasons = {r.key: r.reason for r in desired.rejected}
    assert reasons["1"] == "employee number 1 appears on 2 bPREH rows; none is synced"
    assert reasons["2"].startswith("ActiveYN is ''")
    assert "not an employee number" in reasons["E-4"] and reasons["(blank)"] == "bPREH row without Employee"
    assert desired.source_count == 7 and set(desired.fingerprints) == {"5"}


def test_map_checks_uniqueness_against_the_safetyamp_users_it_was_given():
    users = [{"id": 70, "emp_id": "9", "email": "E5@co.com", "mobile_phone": "+15045550100"}]
    rows = [row(5), row(6, CellPhone="(504) 555-0100")]
    desired = map_employees(inputs(rows, users=users), RULES)
    reasons = {r.key: r.reason for r in desired.rejected}
    assert reasons["5"] == "e-mail e5@co.com already belongs to SafetyAmp user with emp_id 9"
    assert desired.records["6"]["mobile_phone"] is None and "shared with another person" in reasons["6"]


def test_map_home_site_falls_back_from_latest_job_to_default_job_to_setting():
    rows = [row(1, Job="J2"), row(2, Job="J1"), row(3, Job=None)]
    desired = map_employees(inputs(rows, latest_jobs={"0001": " J1 "}), RULES)
    assert desired.records["1"]["home_site_id"] == 5 and desired.records["2"]["home_site_id"] == 5
    reasons = {r.key: r.reason for r in desired.rejected}
    assert reasons["3"] == (
        "no home site: no job worked in the last 365 days (bPRJC); no default job (bPREH.Job); DEFAULT_HOME_SITE_ID is not set"
    )
    fallback = EmployeeRules(today=TODAY, default_home_site_id=44)
    assert map_employees(inputs(rows), fallback).records["3"]["home_site_id"] == 44
