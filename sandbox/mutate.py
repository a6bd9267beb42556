"""Realistic changes to the sandbox's sources, so successive sync runs have work to do.

Why: a sync that works once against a fresh seed proves little. Between two runs real
sources drift: people are hired, leave, come back, change phones, e-mails and names; jobs
are renamed, closed and opened; gateways are swapped between trucks; IT fixes mailboxes.
``mutate`` applies such changes to about ``percent`` % of the records in Viewpoint, Samsara
and Entra ID (never to the targets: those are the sync's to change), from a seeded RNG, so
a failing scenario can be replayed.

Rosters (OneRoster) will hook in through :data:`EXTRA_MUTATORS` once that source exists.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, select, update

from sandbox import dataset
from sandbox.roster_seed import mutate_rosters  # issue 4: roster moves, withdrawals, new teachers
from sandbox.seed import COMPANY, VIEWPOINT_FILE, read_marker, resolve_seed, viewpoint_engine
from sandbox.store import Store, open_store
from services.viewpoint_schema import build_metadata

ALL = 1 << 40  # "no limit" for store pages


@dataclass
class MutationContext:
    """What a mutator gets: the RNG, open Viewpoint connection, target store and the plan."""

    rng: random.Random
    conn: Connection
    tables: dict[str, Table]
    title_column: str
    store: Store
    percent: float
    today: date
    now: datetime
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, kind: str, n: int = 1) -> None:
        """Count ``n`` changes of ``kind`` for the summary."""
        self.counts[kind] = self.counts.get(kind, 0) + n

    def share(self, total: int, weight: float) -> int:
        """How many of ``total`` records a change of this weight touches (at least one)."""
        if total <= 0:
            return 0
        return max(1, round(total * self.percent / 100 * weight))


# Every kind of change the built-in mutators make; the summary always lists all of them.
KINDS = (
    "hires", "terminations", "rehires", "phone_changes", "email_changes", "name_changes",
    "job_moves", "jobs_renamed", "jobs_closed", "jobs_created", "departments_created",
    "gateways_swapped", "vehicles_created", "vehicles_removed", "drivers_created",
    "drivers_deactivated", "graph_users_created", "graph_users_disabled",
    "graph_users_enabled", "graph_mail_changes",
)  # fmt: skip

Mutator = Callable[[MutationContext], None]
# Later sources (rosters) append their own mutators here; each counts into ctx.counts.
EXTRA_MUTATORS: list[Mutator] = []


def mutate(directory: str | Path, percent: float, seed: int | None = None) -> dict[str, Any]:
    """Apply changes to ~``percent`` % of the source records; return what changed.

    Repeatable: the same starting state, percent and seed give the same changes (dates
    follow today's date). ``seed=None`` uses ``SANDBOX_SEED`` or a random seed; the seed
    used is part of the summary.
    """
    root = Path(directory)
    marker = read_marker(root)
    if marker is None:
        raise FileNotFoundError(f"{root} is not a seeded sandbox directory (no seed.json)")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    used_seed = resolve_seed(seed)
    title_column = str(marker.get("title_column", "udEmpTitle"))
    metadata = build_metadata(title_column)
    engine = viewpoint_engine(root / VIEWPOINT_FILE)
    store = open_store(root)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn, store.atomic():
            ctx = MutationContext(
                rng=random.Random(used_seed), conn=conn, tables=dict(metadata.tables),
                title_column=title_column, store=store, percent=float(percent),
                today=now.date(), now=now, counts=dict.fromkeys(KINDS, 0),
            )  # fmt: skip
            for mutator in (*MUTATORS, *EXTRA_MUTATORS):
                mutator(ctx)
    finally:
        store.close()
        engine.dispose()
    return {"seed": used_seed, "percent": percent, **ctx.counts}


# -- helpers ------------------------------------------------------------------------------


def _employees(ctx: MutationContext) -> list[dict[str, Any]]:
    preh = ctx.tables["bPREH"]
    rows = ctx.conn.execute(select(preh).where(preh.c.PRCo == COMPANY).order_by(preh.c.Employee)).mappings()
    return [dict(r) for r in rows]


def _update_employee(ctx: MutationContext, employee: int, **values: Any) -> None:
    preh = ctx.tables["bPREH"]
    values["LastUpdated"] = ctx.now.replace(tzinfo=None, microsecond=0)
    ctx.conn.execute(update(preh).where(preh.c.PRCo == COMPANY, preh.c.Employee == employee).values(**values))


def _graph_by_employee(ctx: MutationContext) -> dict[str, tuple[int, dict[str, Any]]]:
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for rid, user in ctx.store.page("graph", "users", limit=ALL):
        if user.get("employeeId"):
            found.setdefault(str(user["employeeId"]), (rid, user))
    return found


def _drivers_by_payroll(ctx: MutationContext) -> dict[str, tuple[int, dict[str, Any]]]:
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for rid, drv in ctx.store.page("samsara", "drivers", limit=ALL):
        payroll = (drv.get("externalIds") or {}).get("payrollId")
        if payroll:
            found.setdefault(str(payroll), (rid, drv))
    return found


def _registry(ctx: MutationContext, employees: list[dict[str, Any]]) -> dataset.Registry:
    phones = [p for r in employees for p in (r["Phone"], r["CellPhone"]) if p]
    reg = dataset.Registry(rng=ctx.rng, phones=dataset.PhoneBook(ctx.rng, phones))
    reg.sort_names.update(r["SortName"] for r in employees if r["SortName"])
    reg.emails.extend(r["Email"] for r in employees if r["Email"])
    for user in ctx.store.all("graph", "users"):
        for address in (user.get("mail"), user.get("userPrincipalName")):
            if address:
                reg.mailboxes.add(address.replace(dataset.TENANT_DOMAIN, dataset.COMPANY_DOMAIN))
    return reg


def _open_jobs(ctx: MutationContext) -> list[str]:
    jcjm = ctx.tables["bJCJM"]
    rows = ctx.conn.execute(select(jcjm.c.Job).where(jcjm.c.JCCo == COMPANY, jcjm.c.JobStatus.in_((1, 2))).order_by(jcjm.c.Job))
    return [r[0] for r in rows]


# -- mutators -----------------------------------------------------------------------------


def mutate_people(ctx: MutationContext) -> None:
    """Hires, terminations, rehires, phone / e-mail / name changes, job moves."""
    rng = ctx.rng
    employees = _employees(ctx)
    if not employees:
        return
    reg = _registry(ctx, employees)
    graph = _graph_by_employee(ctx)
    drivers = _drivers_by_payroll(ctx)
    depts = [
        r[0]
        for r in ctx.conn.execute(
            select(ctx.tables["bPRDP"].c.PRDept)
            .where(ctx.tables["bPRDP"].c.PRCo == COMPANY)
            .order_by(ctx.tables["bPRDP"].c.PRDept)
        )
    ]
    jobs = _open_jobs(ctx)
    total = len(employees)
    active = [r for r in employees if r["ActiveYN"] == "Y"]
    inactive = [r for r in employees if r["ActiveYN"] != "Y"]
    rng.shuffle(active)
    plan = {
        "terminations": ctx.share(total, 0.2),
        "phone_changes": ctx.share(total, 0.2),
        "email_changes": ctx.share(total, 0.15),
        "name_changes": ctx.share(total, 0.1),
        "job_moves": ctx.share(total, 0.1),
    }
    picked: dict[str, list[dict[str, Any]]] = {}
    cursor = 0
    for kind, n in plan.items():
        picked[kind] = active[cursor : cursor + n]
        cursor += n

    for row in picked["terminations"]:
        term = ctx.today - timedelta(days=rng.randint(0, 3))
        _update_employee(ctx, row["Employee"], TermDate=term, RecentSeparationDate=term, ActiveYN="N")
        ctx.bump("terminations")
        user = graph.get(str(row["Employee"]))
        if user and user[1].get("accountEnabled") and rng.random() < 0.6:
            # IT disables most leavers' accounts the same day, some later.
            user[1]["accountEnabled"] = False
            ctx.store.replace("graph", "users", user[0], user[1])
            ctx.bump("graph_users_disabled")
        drv = drivers.get(str(row["Employee"]))
        if drv and drv[1].get("driverActivationStatus") == "active" and rng.random() < 0.5:
            drv[1]["driverActivationStatus"] = "deactivated"
            drv[1]["updatedAtTime"] = dataset.rfc3339(ctx.now)
            ctx.store.replace("samsara", "drivers", drv[0], drv[1])
            ctx.bump("drivers_deactivated")

    for row in rng.sample(inactive, min(len(inactive), ctx.share(total, 0.1))):
        # Some installs clear TermDate on rehire, some keep the old one.
        values: dict[str, Any] = {"ActiveYN": "Y", "RecentRehireDate": ctx.today}
        if rng.random() < 0.5:
            values["TermDate"] = None
        _update_employee(ctx, row["Employee"], **values)
        ctx.bump("rehires")
        user = graph.get(str(row["Employee"]))
        if user and not user[1].get("accountEnabled"):
            user[1]["accountEnabled"] = True
            ctx.store.replace("graph", "users", user[0], user[1])
            ctx.bump("graph_users_enabled")

    for row in picked["phone_changes"]:
        city = next((c for c in dataset.CITIES if c[0] == row["City"]), dataset.CITIES[0])
        if rng.random() < 0.1:
            cell = rng.choice(dataset.BAD_PHONES)
        else:
            cell = reg.phones.shape(reg.phones.new(city[3]))
        _update_employee(ctx, row["Employee"], CellPhone=cell)
        ctx.bump("phone_changes")

    for row in picked["email_changes"]:
        first, last = row["FirstName"] or "x", row["LastName"]
        roll = rng.random()
        if roll < 0.1:
            email = None  # HR blanked it
        elif roll < 0.2 and reg.emails:
            email = rng.choice(reg.emails)  # typed someone else's: a duplicate
        else:
            email = (
                f"{dataset.ascii_fold(first)[:12]}.{dataset.ascii_fold(last)[:12]}"
                f"{rng.randint(100, 999)}@{rng.choice(dataset.PERSONAL_DOMAINS)}"
            )
        _update_employee(ctx, row["Employee"], Email=email)
        ctx.bump("email_changes")

    for row in picked["name_changes"]:
        last = rng.choice(dataset.LAST + dataset.LAST_UNICODE)
        first = row["FirstName"] or ""
        _update_employee(ctx, row["Employee"], LastName=last, SortName=reg.sort_name(first, last, row["Employee"]))
        ctx.bump("name_changes")
        user = graph.get(str(row["Employee"]))
        if user:
            user[1]["surname"] = last
            user[1]["displayName"] = f"{first} {last}"
            if user[1].get("mail") and rng.random() < 0.5:
                address = reg.mailbox(first, last)
                user[1]["mail"] = address
                user[1]["userPrincipalName"] = address
                ctx.bump("graph_mail_changes")
            ctx.store.replace("graph", "users", user[0], user[1])

    for row in picked["job_moves"]:
        if not jobs:
            break
        job = rng.choice(jobs)
        _update_employee(ctx, row["Employee"], Job=job)
        _add_payroll(ctx, row, job)
        ctx.bump("job_moves")

    number = max(r["Employee"] for r in employees)
    key_id = _max(ctx, ctx.tables["bPREH"].c.KeyID)
    for _ in range(ctx.share(total, 0.2)):
        number += rng.randint(1, 3)
        key_id += 1
        row, person = dataset.employee_row(
            rng, reg, company=COMPANY, employee=number, today=ctx.today, depts=depts or ["100"],
            jobs=jobs, title_column=ctx.title_column, kind=dataset.pick_kind(rng),
            status="active", key_id=key_id,
        )  # fmt: skip
        row["HireDate"] = person.hire = ctx.today - timedelta(days=rng.randint(0, 14))
        row["LastUpdated"] = ctx.now.replace(tzinfo=None, microsecond=0)
        ctx.conn.execute(ctx.tables["bPREH"].insert(), [row])
        ctx.bump("hires")
        if rng.random() < 0.85:
            ctx.store.insert("graph", "users", dataset.entra_user(rng, person))
            ctx.bump("graph_users_created")
        if rng.random() < 0.4:
            rid = ctx.store.next_rid("samsara", "drivers")
            usernames = {str(d.get("username")) for d in ctx.store.all("samsara", "drivers")}
            data = dataset.driver(rng, index=rid - 1, person=person, created=ctx.now, usernames=usernames)
            ctx.store.insert("samsara", "drivers", data, rid=rid)
            ctx.bump("drivers_created")

    # IT tidies mailboxes independently of HR: fills missing ones, moves cloud-only ones.
    untidy = [u for u in graph.values() if dataset.TENANT_DOMAIN in (u[1].get("mail") or "@")]
    untidy += [u for u in graph.values() if u[1].get("mail") is None]
    untidy_rids = {rid for rid, _user in untidy}
    tidy = [u for u in graph.values() if u[0] not in untidy_rids]
    quota = ctx.share(len(graph), 0.05)
    pool = untidy[:quota] + rng.sample(tidy, min(len(tidy), quota))
    for rid, account in pool[:quota]:
        account["mail"] = reg.mailbox(account.get("givenName") or "user", account.get("surname") or "user")
        ctx.store.replace("graph", "users", rid, account)
        ctx.bump("graph_mail_changes")


def _max(ctx: MutationContext, column: Any) -> int:
    return int(ctx.conn.execute(select(func.coalesce(func.max(column), 0))).scalar_one())


def _add_payroll(ctx: MutationContext, row: dict[str, Any], job: str) -> None:
    """A payroll row for last week on ``job`` (bPRJC drives "most recent job worked")."""
    prjc = ctx.tables["bPRJC"]
    week = ctx.today - timedelta(days=(ctx.today.weekday() + 1) % 7)
    phase = ctx.rng.choice(dataset.PHASES)
    exists = ctx.conn.execute(
        select(func.count())
        .select_from(prjc)
        .where(
            prjc.c.PRCo == COMPANY,
            prjc.c.PRGroup == 1,
            prjc.c.PREndDate == week,
            prjc.c.Employee == row["Employee"],
            prjc.c.JCCo == COMPANY,
            prjc.c.Job == job,
            prjc.c.Phase == phase,
        )
    ).scalar_one()
    if exists:
        return
    hours = round(ctx.rng.uniform(8, 45), 2)
    ctx.conn.execute(
        prjc.insert(),
        [
            {
                "PRCo": COMPANY, "PRGroup": 1, "PREndDate": week, "Employee": row["Employee"],
                "JCCo": COMPANY, "Job": job, "Phase": phase, "Mth": week.replace(day=1),
                "Craft": row["Craft"], "Class": row["Class"], "Hrs": hours,
                "Amt": round(hours * ctx.rng.uniform(18, 55), 2),
            }
        ],
    )  # fmt: skip


def mutate_jobs(ctx: MutationContext) -> None:
    """Renamed jobs, closed jobs, new jobs, and now and then a new department."""
    rng = ctx.rng
    jcjm, jccm, prdp = ctx.tables["bJCJM"], ctx.tables["bJCCM"], ctx.tables["bPRDP"]
    jobs = [dict(r) for r in ctx.conn.execute(select(jcjm).where(jcjm.c.JCCo == COMPANY).order_by(jcjm.c.Job)).mappings()]
    total = len(jobs)
    for job in rng.sample(jobs, min(total, ctx.share(total, 0.4))):
        description = f"{rng.choice(dataset.CLIENTS)} {rng.choice(dataset.PROJECTS)}"
        if job["Description"] and rng.random() < 0.5:
            description = f"{job['Description']} - Phase {rng.randint(2, 4)}"[:60]
        ctx.conn.execute(update(jcjm).where(jcjm.c.JCCo == COMPANY, jcjm.c.Job == job["Job"]).values(Description=description))
        ctx.bump("jobs_renamed")
    open_jobs = [j for j in jobs if j["JobStatus"] in (1, 2)]
    for job in rng.sample(open_jobs, min(len(open_jobs), ctx.share(total, 0.3))):
        ctx.conn.execute(update(jcjm).where(jcjm.c.JCCo == COMPANY, jcjm.c.Job == job["Job"]).values(JobStatus=3))
        ctx.conn.execute(update(jccm).where(jccm.c.JCCo == COMPANY, jccm.c.Contract == job["Contract"]).values(ContractStatus=3))
        ctx.bump("jobs_closed")

    depts = [r[0] for r in ctx.conn.execute(select(prdp.c.PRDept).where(prdp.c.PRCo == COMPANY))]
    if rng.random() < min(1.0, ctx.percent / 10):
        from sandbox.seed import department_rows

        numeric = [int(d) for d in depts if d.strip().isdigit()]
        index = (max(numeric) // 100) if numeric else 0
        row = department_rows(COMPANY, index, 1)[0]
        row["KeyID"] = _max(ctx, prdp.c.KeyID) + 1
        ctx.conn.execute(prdp.insert(), [row])
        depts.append(row["PRDept"])
        ctx.bump("departments_created")

    year = ctx.today.year
    prefix = f"{year % 100:02d}-"
    used = [
        int(code.strip(" .-").split("-")[1])
        for code in (j["Job"] for j in jobs)
        if code.strip(" .-").startswith(prefix) and code.strip(" .-").split("-")[1].isdigit()
    ]
    number = max(used, default=99)
    key_id = _max(ctx, jcjm.c.KeyID)
    for _ in range(ctx.share(total, 0.3)):
        number += 1
        key_id += 1
        code = dataset.job_code(rng, year, number)
        row = dataset.job_row(rng, company=COMPANY, code=code, status=1, key_id=key_id)
        ctx.conn.execute(jcjm.insert(), [row])
        ctx.conn.execute(
            jccm.insert(),
            [
                {
                    "JCCo": COMPANY, "Contract": code, "Description": row["Description"],
                    "Department": rng.choice(depts) if depts else None, "ContractStatus": 1,
                    "KeyID": key_id,
                }
            ],
        )  # fmt: skip
        ctx.bump("jobs_created")


def mutate_fleet(ctx: MutationContext) -> None:
    """Swapped gateways (serial changes, id stays), new vehicles, removed vehicles."""
    rng = ctx.rng
    vehicles = ctx.store.page("samsara", "vehicles", limit=ALL)
    total = len(vehicles)
    stamp = dataset.rfc3339(ctx.now)
    removed = rng.sample(vehicles, min(total, ctx.share(total, 0.3)))
    removed_rids = {rid for rid, _ in removed}
    survivors = [v for v in vehicles if v[0] not in removed_rids]
    for rid, data in rng.sample(survivors, min(len(survivors), ctx.share(total, 0.4))):
        serial = dataset.gateway_serial(rng)
        data["serial"] = serial
        data["gateway"] = {**(data.get("gateway") or {}), "serial": serial}
        data["updatedAtTime"] = stamp
        ctx.store.replace("samsara", "vehicles", rid, data)
        ctx.bump("gateways_swapped")
    for rid, _data in removed:
        ctx.store.delete("samsara", "vehicles", rid)
        ctx.bump("vehicles_removed")
    drivers = [d for d in ctx.store.all("samsara", "drivers") if d.get("driverActivationStatus") == "active"]
    for _ in range(ctx.share(total, 0.3)):
        rid = ctx.store.next_rid("samsara", "vehicles")
        assigned = rng.choice(drivers) if drivers and rng.random() < 0.6 else None
        data = dataset.vehicle(rng, index=rid - 1, created=ctx.now, driver=assigned)
        ctx.store.insert("samsara", "vehicles", data, rid=rid)
        ctx.bump("vehicles_created")


MUTATORS: tuple[Mutator, ...] = (mutate_jobs, mutate_people, mutate_fleet, mutate_rosters)  # rosters: issue 4
