"""Name -> sync class, in run order (departments, jobs, titles, employees, vehicles, rosters).

Every class is called as ``cls(ctx).run() -> RunResult``; rosters is not a BaseSync."""

from __future__ import annotations

from sync.base import BaseSync
from sync.sync_departments import DepartmentSync
from sync.sync_employees import EmployeeSync
from sync.sync_jobs import JobSync
from sync.sync_rosters import RosterSync
from sync.sync_titles import TitleSync
from sync.sync_vehicles import VehicleSync

SYNCS: dict[str, type[BaseSync] | type[RosterSync]] = {
    "departments": DepartmentSync,
    "jobs": JobSync,
    "titles": TitleSync,
    "employees": EmployeeSync,
    "vehicles": VehicleSync,
    "rosters": RosterSync,
}
