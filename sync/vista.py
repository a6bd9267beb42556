"""Viewpoint Vista's rules, in one place for every sync that reads bPREH.

- Who is active (``is_active_employee``): ActiveYN 'Y' and not terminated, rehired on or
  after the TermDate, or a TermDate still in the future.
- What an employee number is (``employee_key``): the one canonical form of
  ``utils.data_validator.employee_number``; a value that cannot be one matches nobody.
- Which title a row holds (``title_key``): the title's name without case and surrounding
  blanks, so "Foreman" and "foreman " are one SafetyAmp user title.

Pure functions: no I/O, no clock (``today`` is an argument).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sync.ports import Row
from utils.data_validator import InvalidValue, employee_number, to_date


def employee_key(value: Any) -> str | None:
    """An employee number in its one canonical form (``employee_number``), or None when
    it is blank or cannot be one: such a value (an Entra employeeId "E-7", a SafetyAmp
    emp_id "²") matches no Vista employee."""
    try:
        return employee_number(value)
    except InvalidValue:
        return None


def title_key(name: object) -> str | None:
    """A title's name as a key: blanks folded, case ignored; None when blank."""
    if name is None:
        return None
    text = " ".join(str(name).split())
    return text.casefold() or None


def active_flag_known(row: Row) -> bool:
    """bPREH.ActiveYN is NOT NULL in Vista and holds Y or N: anything else is damage, not
    a termination (never deactivate on it)."""
    return str(row.get("ActiveYN") or "").strip().upper() in ("Y", "N")


def is_active_employee(row: Row, today: date | None = None) -> bool:
    """Vista's 'active' rule used across syncs: ActiveYN = 'Y' and not terminated, or
    rehired after the last termination (RecentRehireDate on or after TermDate). With
    ``today``, a TermDate still in the future on an ActiveYN = 'Y' row is a scheduled
    termination: the person works until that day, so stays active until it has passed
    (deactivating early would lock a working person out of the safety app)."""
    if str(row.get("ActiveYN") or "").strip().upper() != "Y":
        return False
    term = row.get("TermDate")
    if term is None:
        return True
    try:
        day = to_date(term, field="TermDate")
    except InvalidValue:
        day = None  # not a date: the termination stands
    try:
        rehire = to_date(row.get("RecentRehireDate"), field="RecentRehireDate")
    except InvalidValue:
        rehire = None  # not a date: no rehire we can trust
    if rehire is not None and day is not None and rehire >= day:
        return True
    return today is not None and day is not None and day > today
