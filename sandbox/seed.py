"""Creates a sandbox directory: credentials, TLS files, the Viewpoint database, target state.

Why one seeding step: every run of the daemon against the sandbox must start from a
complete, consistent world (a Vista database whose employees exist in Entra ID and drive
Samsara vehicles, a SafetyAmp account holding only its reference data). A directory counts
as seeded only once ``seed.json`` exists; the marker is written last and atomically, so an
interrupted seed is redone from scratch instead of being half-used.

Layout of a sandbox directory::

    seed.json          marker: seed, size, when (written last)
    secrets.json       dummy credentials (0600), generated randomly per directory
    viewpoint.sqlite   Vista tables from services.viewpoint_schema (company 1 + decoy company 2)
    targets.sqlite     SafetyAmp / Samsara / Graph state and the request log (sandbox.store)
    ca.pem, server.pem, server-key.pem   TLS for the Graph/Entra emulator
"""

from __future__ import annotations

import json
import os
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event

from sandbox import dataset, tls
from sandbox.store import TARGETS_FILE, Store
from services.viewpoint_schema import build_metadata

MARKER_FILE = "seed.json"
SECRETS_FILE = "secrets.json"
VIEWPOINT_FILE = "viewpoint.sqlite"
TITLE_COLUMN = "udEmpTitle"
SAFETYAMP_FQDN = "sandbox.safetyamp.com"
COMPANY = 1
DECOY_COMPANY = 2  # rows the sync must never pick up
SEED_VERSION = 1

# First ids per SafetyAmp collection. Distinct ranges make a client that sends a site id
# where a cluster id belongs fail validation instead of silently pointing elsewhere.
SAFETYAMP_FIRST_IDS = {
    "roles": 1,
    "site_clusters": 101,
    "asset_types": 41,
    "user_titles": 501,
    "sites": 2001,
    "assets": 7001,
    "users": 10001,
}


@dataclass(frozen=True, repr=False)
class SandboxSecrets:
    """Dummy credentials of one sandbox directory. Treated as secrets: never logged."""

    safetyamp_token: str
    samsara_api_key: str
    graph_tenant_id: str
    graph_client_id: str
    graph_client_secret: str

    def __repr__(self) -> str:
        return "SandboxSecrets(<hidden>)"


def resolve_seed(seed: int | None) -> int:
    """The seed to use: the argument, else ``SANDBOX_SEED``, else a random one."""
    if seed is not None:
        return int(seed)
    raw = os.environ.get("SANDBOX_SEED", "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"SANDBOX_SEED must be an integer, got {raw!r}") from exc
    return secrets.randbelow(2**31)


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_secrets(directory: Path) -> SandboxSecrets:
    """The directory's credentials (created on first use)."""
    path = directory / SECRETS_FILE
    if not path.exists():
        values = {
            "safetyamp_token": secrets.token_urlsafe(32),
            "samsara_api_key": "samsara_api_" + secrets.token_urlsafe(24),
            "graph_tenant_id": str(uuid.uuid4()),
            "graph_client_id": str(uuid.uuid4()),
            "graph_client_secret": secrets.token_urlsafe(30),
        }
        write_private(path, json.dumps(values, indent=2))
    return SandboxSecrets(**json.loads(path.read_text(encoding="utf-8")))


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The seed marker, or None if the directory is not (completely) seeded."""
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def ensure_seeded(directory: Path, *, size: int = 200, seed: int | None = None) -> dict[str, Any]:
    """Seed ``directory`` unless it carries a marker; return the marker.

    An already-seeded directory is left alone (its size and seed win over the arguments):
    the sandbox's value is that state survives between runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    marker = read_marker(directory)
    if marker is not None:
        return marker
    if size < 1:
        raise ValueError(f"sandbox size must be >= 1, got {size}")
    seed = resolve_seed(seed)
    for name in (
        MARKER_FILE, SECRETS_FILE, VIEWPOINT_FILE, TARGETS_FILE, tls.CA_FILE, tls.CERT_FILE,
        tls.KEY_FILE,
    ):  # fmt: skip
        for suffix in ("", "-wal", "-shm", "-journal"):
            (directory / f"{name}{suffix}").unlink(missing_ok=True)
    load_secrets(directory)
    tls.write_certificates(directory)
    today = datetime.now(UTC).date()
    rng = random.Random(seed)
    people, viewpoint_counts = seed_viewpoint(directory / VIEWPOINT_FILE, rng, size, today)
    store = Store(directory / TARGETS_FILE)
    try:
        target_counts = seed_targets(store, rng, people, size, today, seed)
    finally:
        store.close()
    marker = {
        "version": SEED_VERSION,
        "seed": seed,
        "size": size,
        "title_column": TITLE_COLUMN,
        "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": {**viewpoint_counts, **target_counts},
    }
    write_private(directory / MARKER_FILE, json.dumps(marker, indent=2))
    return marker


def viewpoint_engine(path: Path) -> Any:
    """SQLAlchemy engine for the sandbox's Viewpoint file (WAL, so readers never block)."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA busy_timeout=30000")

    return engine


def department_rows(company: int, start: int, count: int) -> list[dict[str, Any]]:
    """bPRDP rows ``"100"``, ``"200"``, ... with unique bDesc (<= 30 chars) descriptions."""
    names = dataset.DEPARTMENT_NAMES
    regions = dataset.REGIONS
    rows = []
    for k in range(start, start + count):
        description = f"{names[k % len(names)]} - {regions[(k // len(names)) % len(regions)]}"
        cycle = k // (len(names) * len(regions))
        if cycle:
            description = f"{description} {cycle + 1}"
        rows.append(
            {
                "PRCo": company,
                "PRDept": str(100 * (k + 1)),
                "Description": description[:30],
                "GLCo": company,
                "KeyID": k + 1,
            }
        )
    return rows


def payroll_rows(
    rng: random.Random,
    person: dataset.Person,
    default_job: str | None,
    jobs: list[str],
    today: date,
    craft: str,
    klass: str,
) -> list[dict[str, Any]]:
    """bPRJC rows for the last ~120 days: weekly, mostly one job, sometimes moving on."""
    if default_job is None:
        return []
    last_sunday = today - timedelta(days=(today.weekday() + 1) % 7)
    weeks = [last_sunday - timedelta(weeks=k) for k in range(16, -1, -1)]
    end = person.term or today
    worked = [w for w in weeks if person.hire <= w <= end + timedelta(days=6)]
    if not worked:
        return []
    history = [rng.choice(jobs) for _ in range(rng.randint(0, 2))]
    # Mostly the default job is also the latest worked; now and then it is stale.
    history.append(default_job if rng.random() < 0.7 else rng.choice(jobs))
    switch_points = sorted(rng.sample(range(len(worked)), min(len(history) - 1, len(worked))))
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    current = 0
    for i, week in enumerate(worked):
        while current < len(switch_points) and i >= switch_points[current]:
            current += 1
        if rng.random() > 0.8:
            continue
        job = history[min(current, len(history) - 1)]
        entries = [(job, rng.choice(dataset.PHASES))]
        if rng.random() < 0.15:
            entries.append((rng.choice(jobs), rng.choice(dataset.PHASES)))
        for entry_job, phase in entries:
            hours = round(rng.uniform(8, 45), 2)
            key = (week, entry_job, phase)
            rows[key] = {
                "PRCo": person.company,
                "PRGroup": 1,
                "PREndDate": week,
                "Employee": person.employee,
                "JCCo": person.company,
                "Job": entry_job,
                "Phase": phase,
                "Mth": week.replace(day=1),
                "Craft": craft,
                "Class": klass,
                "Hrs": hours,
                "Amt": round(hours * rng.uniform(18, 55), 2),
            }
    return list(rows.values())


def seed_viewpoint(path: Path, rng: random.Random, size: int, today: date) -> tuple[list[dataset.Person], dict[str, int]]:
    """Create and fill the Viewpoint SQLite database; returns company 1's people."""
    metadata = build_metadata(TITLE_COLUMN)
    tables = metadata.tables
    engine = viewpoint_engine(path)
    metadata.create_all(engine)
    reg = dataset.Registry(rng=rng, phones=dataset.PhoneBook(rng))

    departments = department_rows(COMPANY, 0, max(5, size // 25))
    dept_codes = [d["PRDept"] for d in departments]
    job_rows: list[dict[str, Any]] = []
    contract_rows: list[dict[str, Any]] = []
    for k in range(max(10, size // 5)):
        code = dataset.job_code(rng, 2019 + k % 7, 100 + k // 7)
        row = dataset.job_row(rng, company=COMPANY, code=code, status=dataset.job_status(rng), key_id=k + 1)
        job_rows.append(row)
        contract_rows.append(
            {
                "JCCo": COMPANY,
                "Contract": code,
                "Description": row["Description"],
                "Department": rng.choice(dept_codes),
                "ContractStatus": row["JobStatus"],
                "KeyID": k + 1,
            }
        )
    open_jobs = [j["Job"] for j in job_rows if j["JobStatus"] in (1, 2)] or [job_rows[0]["Job"]]
    all_jobs = [j["Job"] for j in job_rows]

    employees: list[dict[str, Any]] = []
    people: list[dataset.Person] = []
    payroll: list[dict[str, Any]] = []
    number = 1000
    for k in range(size):
        number += rng.randint(1, 3)
        roll = rng.random()
        status = "terminated" if roll < 0.08 else "rehired" if roll < 0.11 else "active"
        row, person = dataset.employee_row(
            rng, reg, company=COMPANY, employee=number, today=today, depts=dept_codes,
            jobs=open_jobs, title_column=TITLE_COLUMN, kind=dataset.pick_kind(rng),
            status=status, key_id=k + 1,
        )  # fmt: skip
        employees.append(row)
        people.append(person)
        payroll += payroll_rows(rng, person, row["Job"], all_jobs, today, row["Craft"], row["Class"])

    # Decoy company 2: same employee numbers, same dept codes, one job whose trimmed code
    # equals company 1's first job. A sync that forgets the company filter shows it here.
    decoy_depts = department_rows(DECOY_COMPANY, 0, 2)
    first_core = job_rows[0]["Job"].strip(" .-")
    decoy_jobs = [
        dataset.job_row(rng, company=DECOY_COMPANY, code=code, status=1, key_id=10_000 + i)
        for i, code in enumerate((f"{first_core}-", "90-001-", "90-002-"))
    ]
    for i, existing in enumerate(employees[: min(5, len(employees))]):
        row, decoy = dataset.employee_row(
            rng, reg, company=DECOY_COMPANY, employee=existing["Employee"], today=today,
            depts=[d["PRDept"] for d in decoy_depts], jobs=[j["Job"] for j in decoy_jobs],
            title_column=TITLE_COLUMN, kind=None, status="active", key_id=100_000 + i,
        )  # fmt: skip
        employees.append(row)
        payroll += payroll_rows(rng, decoy, row["Job"], [j["Job"] for j in decoy_jobs], today, row["Craft"], row["Class"])

    with engine.begin() as conn:
        conn.execute(
            tables["bHQCO"].insert(),
            [
                {"HQCo": COMPANY, "Name": "Sandbox Construction Co", "City": "New Orleans", "State": "LA"},
                {"HQCo": DECOY_COMPANY, "Name": "Sandbox Holdings LLC", "City": "Houston", "State": "TX"},
            ],
        )
        conn.execute(tables["bPRDP"].insert(), departments + decoy_depts)
        conn.execute(tables["bJCCM"].insert(), contract_rows)
        conn.execute(tables["bJCJM"].insert(), job_rows + decoy_jobs)
        conn.execute(tables["bPREH"].insert(), employees)
        if payroll:
            conn.execute(tables["bPRJC"].insert(), payroll)
    engine.dispose()
    counts = {
        "viewpoint_departments": len(departments),
        "viewpoint_jobs": len(job_rows),
        "viewpoint_employees": size,
        "viewpoint_payroll_rows": len(payroll),
    }
    return people, counts


def seed_targets(
    store: Store,
    rng: random.Random,
    people: list[dataset.Person],
    size: int,
    today: date,
    seed: int,
) -> dict[str, int]:
    """SafetyAmp reference data, Samsara fleet and drivers, Entra ID users."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    sa = "safetyamp"
    with store.atomic():
        store.meta_set("seed", str(seed))
        for collection, first in SAFETYAMP_FIRST_IDS.items():
            store.set_next_rid(sa, collection, first)

        def add(collection: str, data: dict[str, Any]) -> int:
            rid = store.next_rid(sa, collection)
            store.insert(sa, collection, {"id": rid, **data, "created_at": stamp, "updated_at": stamp}, rid=rid)
            return rid

        for role in ("Field", "Office", "Administrator"):
            add("roles", {"name": role})
        company = add(
            "site_clusters",
            {"name": "Company", "external_code": "COMPANY", "parent_cluster_id": None, "depth": 0},
        )
        fleet = add(
            "sites",
            {"name": "Fleet Yard", "external_code": "FLEET", "cluster_id": company, "active": 1},
        )
        for asset_type in ("Vehicle", "Trailer"):
            add("asset_types", {"name": asset_type, "site_id": fleet})

        for person in people:
            if (person.active and rng.random() < 0.9) or (not person.active and rng.random() < 0.5):
                store.insert("graph", "users", dataset.entra_user(rng, person))
        service_accounts = max(3, size // 40)
        for i in range(service_accounts):
            store.insert("graph", "users", dataset.service_account(rng, i))

        start = datetime(2019, 1, 1, tzinfo=UTC)
        span = int((datetime.now(UTC) - start).total_seconds())
        usernames: set[str] = set()
        drivers: list[dict[str, Any]] = []
        for person in people:
            if (person.active and rng.random() < 0.4) or (not person.active and rng.random() < 0.1):
                created = start + timedelta(seconds=rng.randint(0, span))
                data = dataset.driver(rng, index=len(drivers), person=person, created=created, usernames=usernames)
                store.insert("samsara", "drivers", data)
                drivers.append(data)
        active_drivers = [d for d in drivers if d["driverActivationStatus"] == "active"]
        vehicles = max(5, size // 3)
        for i in range(vehicles):
            assigned = rng.choice(active_drivers) if active_drivers and rng.random() < 0.6 else None
            created = start + timedelta(seconds=rng.randint(0, span))
            store.insert("samsara", "vehicles", dataset.vehicle(rng, index=i, created=created, driver=assigned))
    return {
        "graph_users": store.count("graph", "users"),
        "samsara_drivers": len(drivers),
        "samsara_vehicles": vehicles,
    }
