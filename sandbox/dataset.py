"""Generators for the demo dataset: people, departments, jobs, vehicles, drivers, Entra users.

Why a module of its own: the seed (sandbox/seed.py) and the change generator
(sandbox/mutate.py) must produce records of the same shape and the same kinds of
awkwardness, from the same seeded ``random.Random``, so that a run is repeatable.

The data is fictitious (names from common-name lists, reserved ``example.*`` domains for
personal mail, made-up company domain ``sandbox-co.com``) and deliberately untidy the way
real HR data is: unicode and over-long names, shared or missing e-mails, phones in a
dozen shapes or plainly invalid, terminated and rehired people, jobs with padded codes.
"""

from __future__ import annotations

import random
import re
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

COMPANY_DOMAIN = "sandbox-co.com"
TENANT_DOMAIN = "sandboxco.onmicrosoft.com"
PERSONAL_DOMAINS = ("example.com", "example.net", "example.org")

FIRST_M = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven",
    "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald",
    "Jason", "Edward", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan",
    "Carlos", "Luis", "Juan", "Miguel", "Tuan", "Minh", "DeShawn", "Tyrone", "Beau", "Remy",
)  # fmt: skip
FIRST_F = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Kimberly",
    "Emily", "Donna", "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie",
    "Maria", "Ana", "Lan", "Keisha", "Tamika", "Claire", "Amelie",
)  # fmt: skip
FIRST_UNICODE_M = ("José", "François", "Björn", "Søren", "Łukasz", "Maël", "Nuño", "Thành")
FIRST_UNICODE_F = ("Zoë", "Renée", "Chloé", "Inés", "Anaïs", "Mỹ", "Françoise", "Begoña")
LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson",
    "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris",
    "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Hill", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Roberts", "Turner",
    "Phillips", "Campbell", "Parker", "Evans", "Edwards", "Collins", "Stewart", "Morris",
    "Hebert", "Landry", "Broussard", "Thibodeaux", "Guidry", "Boudreaux", "Fontenot",
    "LeBlanc", "Richard", "Hernandez", "Lopez", "Gonzalez", "Perez", "Sanchez", "Ramirez",
    "Tran", "Pham", "Le", "Washington", "Jefferson", "Batiste", "Dupre", "Melancon",
)  # fmt: skip
LAST_UNICODE = (
    "Nguyễn", "Müller", "García", "Núñez", "Peña", "O'Brien", "Đặng", "Lefèvre", "Çelik",
    "Dvořák", "Trần", "Ibáñez", "D'Arcy", "St. Pierre", "De La Cruz", "Van der Berg",
)  # fmt: skip
LONG_FIRST = "Maria de los Angeles Guadalupe Concepcion Esperanza Dolores Catalina Fernanda Isabel Victoria del Rosario"
LONG_LAST = "Featherstonehaugh-Wolfeschlegelsteinhausenbergerdorff-Montgomery-Cholmondeley-Marjoribanks-Ffrangcon-Davies"

TITLES = (
    "Laborer", "Carpenter", "Journeyman Electrician", "Apprentice Electrician", "Foreman",
    "General Foreman", "Superintendent", "Project Manager", "Project Engineer",
    "Safety Manager", "Equipment Operator", "Pipefitter", "Welder", "Truck Driver",
    "Estimator", "Office Manager",
)  # fmt: skip
# The same titles as HR types them now and then: case and trailing blanks differ.
TITLE_VARIANTS = ("foreman", "Foreman ", "LABORER", "Welder  ")

DEPARTMENT_NAMES = (
    "Electrical", "Mechanical", "Plumbing", "Fire Protection", "Civil", "Industrial",
    "Service", "Fleet", "Safety", "Administration", "Estimating", "Controls", "Fabrication",
    "Instrumentation", "Low Voltage", "Pipeline",
)  # fmt: skip
REGIONS = ("North", "South", "East", "West", "Gulf", "Metro", "Delta", "River")

CITIES = (
    ("New Orleans", "LA", "701", ("504",)), ("Metairie", "LA", "700", ("504",)),
    ("Baton Rouge", "LA", "708", ("225",)), ("Lafayette", "LA", "705", ("337",)),
    ("Houma", "LA", "703", ("985",)), ("Slidell", "LA", "704", ("985",)),
    ("Lake Charles", "LA", "706", ("337",)), ("Gulfport", "MS", "395", ("228",)),
    ("Mobile", "AL", "366", ("251",)), ("Houston", "TX", "770", ("713", "832", "281")),
    ("Beaumont", "TX", "777", ("409",)),
)  # fmt: skip
STREETS = (
    "Magazine St", "Canal St", "Tchoupitoulas St", "Veterans Blvd", "Airline Hwy",
    "Perkins Rd", "Johnston St", "Main St", "Oak Ave", "Bayou Rd", "Pine St", "Live Oak Dr",
)  # fmt: skip
CLIENTS = (
    "Ochsner", "Tulane", "St. Tammany Parish", "Port of South Louisiana", "Entergy",
    "Norco Refinery", "Plaquemine Plant", "LSU Health", "Jefferson Parish Schools",
    "City of Kenner", "Meraux Terminal", "Lakeside Mall", "Audubon Zoo", "Belle Chasse Yard",
    "Baptist Hospital", "Keesler AFB", "Port Fourchon", "Superdome", "Memorial Medical",
)  # fmt: skip
PROJECTS = (
    "Substation Upgrade", "Hospital Expansion", "Parking Garage", "Turnaround", "Renovation",
    "Pump Station", "Warehouse", "Gym Rebuild", "Lighting Retrofit", "Tank Farm",
    "Data Center", "Service Contract", "Chiller Replacement", "Fire Alarm Upgrade",
)  # fmt: skip
CRAFTS = (("ELEC", ("JOUR", "APPR", "FORE")), ("PIPE", ("JOUR", "APPR")), ("LAB", ("GEN",)))
PHASES = ("01-100-00", "01-200-00", "16-100-00", "16-400-00", "22-100-00", "99-000-00")
VEHICLE_MODELS = (
    ("Ford", "F-150"), ("Ford", "F-250"), ("Ford", "Transit 250"), ("Chevrolet", "Silverado 2500HD"),
    ("RAM", "2500"), ("Freightliner", "M2 106"), ("Isuzu", "NPR HD"), ("Kenworth", "T270"),
    ("Toyota", "Tacoma"),
)  # fmt: skip
# A root tag has no parentTagId at all: Samsara omits the field rather than sending null.
VEHICLE_TAGS = (
    {"id": "3914", "name": "Fleet"},
    {"id": "3915", "name": "Service Trucks", "parentTagId": "3914"},
    {"id": "3916", "name": "Heavy", "parentTagId": "3914"},
)
BAD_PHONES = ("555-01", "n/a", "(504) 555-0199 x12", "0", "TBD", "504-555-01999", "none")

_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VIN_VALUES = dict(
    zip("ABCDEFGHJKLMNPRSTUVWXYZ", (1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9), strict=True)
)
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_YEARS = "ABCDEFGHJKLMNPRSTVWXY123456789"  # 2010 = A ... (30-year cycle)


def ascii_fold(text: str) -> str:
    """Lowercase ASCII letters and digits of ``text`` (``Nguyễn`` -> ``nguyen``)."""
    folded = unicodedata.normalize("NFKD", text.replace("Đ", "D").replace("đ", "d"))
    return re.sub(r"[^a-z0-9]", "", folded.encode("ascii", "ignore").decode().lower())


def mail_local(first: str, last: str) -> str:
    """``first.last`` as an IT department would spell it (ASCII, at most 20 + 20 chars)."""
    return f"{ascii_fold(first)[:20] or 'user'}.{ascii_fold(last)[:20] or 'user'}"


def rfc3339(moment: datetime) -> str:
    """Samsara's timestamp format (UTC, ``Z`` suffix)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_date(rng: random.Random, start: date, end: date) -> date:
    """A uniformly random day in ``[start, end]``."""
    span = max(0, (end - start).days)
    return start + timedelta(days=rng.randint(0, span))


class PhoneBook:
    """Hands out 10-digit US numbers never handed out before (collisions only on purpose)."""

    def __init__(self, rng: random.Random, used: Iterable[str] = ()) -> None:
        self.rng = rng
        self.used = {re.sub(r"\D", "", u)[-10:] for u in used}

    def new(self, area_codes: tuple[str, ...]) -> str:
        """A fresh number in one of ``area_codes``."""
        while True:
            digits = f"{self.rng.choice(area_codes)}{self.rng.randint(201, 989)}{self.rng.randint(0, 9999):04d}"
            if digits not in self.used:
                self.used.add(digits)
                return digits

    def shape(self, digits: str) -> str:
        """One of the shapes people type a US number in."""
        a, b, c = digits[:3], digits[3:6], digits[6:]
        shapes = (
            f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"{a}-{b}-{c}", digits,
            f"1-{a}-{b}-{c}", f"({a}){b}-{c}",
        )  # fmt: skip
        return self.rng.choice(shapes)


def e164(digits: str | None) -> str | None:
    """``+1XXXXXXXXXX`` for a 10-digit US number."""
    return f"+1{digits}" if digits else None


def vin(rng: random.Random, year: int) -> str:
    """A structurally valid 17-character VIN (check digit and model-year code included)."""
    chars = [rng.choice("1345"), *(rng.choice(_VIN_CHARS) for _ in range(16))]
    chars[9] = _VIN_YEARS[(year - 2010) % 30]
    total = 0
    for i, ch in enumerate(chars):
        value = int(ch) if ch.isdigit() else _VIN_VALUES[ch]
        total += value * _VIN_WEIGHTS[i]
    check = total % 11
    chars[8] = "X" if check == 10 else str(check)
    return "".join(chars)


def gateway_serial(rng: random.Random) -> str:
    """A Samsara gateway serial: ``G`` + 9 characters."""
    return "G" + "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ23456789") for _ in range(9))


@dataclass
class Person:
    """What the other generators need to know about a generated employee."""

    company: int
    employee: int
    first: str
    last: str
    active: bool
    hire: date
    term: date | None
    title: str | None
    cell_digits: str | None
    dept: str
    kind: str | None = None  # the awkwardness this record carries, if any
    mail: str | None = None  # company mailbox, when the person has one


@dataclass
class Registry:
    """Shared uniqueness state while generating (mailboxes, sort names, phones)."""

    rng: random.Random
    phones: PhoneBook
    mailboxes: set[str] = field(default_factory=set)
    sort_names: set[str] = field(default_factory=set)
    emails: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)

    def mailbox(self, first: str, last: str) -> str:
        """A company address not yet in use: ``first.last``, then ``first.last2`` ..."""
        base = mail_local(first, last)
        local, n = base, 1
        while f"{local}@{COMPANY_DOMAIN}" in self.mailboxes:
            n += 1
            local = f"{base}{n}"
        address = f"{local}@{COMPANY_DOMAIN}"
        self.mailboxes.add(address)
        return address

    def sort_name(self, first: str, last: str, employee: int) -> str:
        """Vista's SortName (unique per company): upper-case last name + first initial."""
        base = (ascii_fold(last).upper() + ascii_fold(first)[:1].upper())[:15] or "EMP"
        name = base
        if name in self.sort_names:
            name = (base[: 15 - len(str(employee))] + str(employee))[:15]
        self.sort_names.add(name)
        return name


AWKWARD_KINDS = (
    "missing_email", "shared_email", "bad_phone", "shared_cell", "unicode_name", "long_name",
    "no_job",
)  # fmt: skip


def pick_kind(rng: random.Random, awkward_rate: float = 0.10) -> str | None:
    """Which awkwardness (if any) the next employee gets."""
    return rng.choice(AWKWARD_KINDS) if rng.random() < awkward_rate else None


def employee_row(
    rng: random.Random,
    reg: Registry,
    *,
    company: int,
    employee: int,
    today: date,
    depts: list[str],
    jobs: list[str],
    title_column: str,
    kind: str | None,
    status: str,
    key_id: int,
) -> tuple[dict[str, Any], Person]:
    """One bPREH row plus the :class:`Person` behind it.

    ``status`` is ``active``, ``terminated`` or ``rehired``; ``kind`` one of
    :data:`AWKWARD_KINDS` or None.
    """
    sex = rng.choice("MF")
    unicode_name = kind == "unicode_name" or rng.random() < 0.04
    if unicode_name:
        first = rng.choice(FIRST_UNICODE_M if sex == "M" else FIRST_UNICODE_F)
        last = rng.choice(LAST_UNICODE)
    else:
        first = rng.choice(FIRST_M if sex == "M" else FIRST_F)
        last = rng.choice(LAST)
    if kind == "long_name":
        if rng.random() < 0.5:
            last = LONG_LAST
        else:
            first = LONG_FIRST
    city, state, zip3, areas = rng.choice(CITIES)
    hire = random_date(rng, date(1998, 1, 5), today - timedelta(days=21))
    birth = hire - timedelta(days=rng.randint(18 * 365, 50 * 365))
    term: date | None = None
    rehire: date | None = None
    separation: date | None = None
    active = True
    if status == "terminated":
        term = random_date(rng, hire + timedelta(days=14), today - timedelta(days=1))
        separation = term
        active = False
    elif status == "rehired":
        separation = random_date(rng, hire + timedelta(days=30), today - timedelta(days=60))
        rehire = random_date(rng, separation + timedelta(days=7), today - timedelta(days=1))
        # Vista installs differ: some clear TermDate on rehire, others leave the old one.
        term = separation if rng.random() < 0.5 else None
    cell_digits: str | None = None
    cell: str | None = None
    if kind == "bad_phone":
        cell = rng.choice(BAD_PHONES)
    elif kind == "shared_cell" and reg.cells:
        cell_digits = rng.choice(reg.cells)
        cell = reg.phones.shape(cell_digits)
    elif rng.random() < 0.88:
        cell_digits = reg.phones.new(areas)
        cell = reg.phones.shape(cell_digits)
        reg.cells.append(cell_digits)
    phone = reg.phones.shape(reg.phones.new(areas)) if rng.random() < 0.45 else None
    mailbox = reg.mailbox(first, last)
    if kind == "missing_email" or rng.random() < 0.04:
        email = None
    elif kind == "shared_email" and reg.emails:
        email = rng.choice(reg.emails)
    elif rng.random() < 0.6:
        email = mailbox
    else:
        email = f"{ascii_fold(first)[:12]}{ascii_fold(last)[:12]}{rng.randint(1, 99)}@{rng.choice(PERSONAL_DOMAINS)}"
    if email:
        reg.emails.append(email)
    if rng.random() < 0.05:
        title: str | None = None
    elif rng.random() < 0.03:
        title = rng.choice(TITLE_VARIANTS)
    else:
        title = rng.choice(TITLES)
    craft, classes = rng.choice(CRAFTS)
    dept = rng.choice(depts)
    job = None if kind == "no_job" or not jobs else rng.choice(jobs)
    # Vista keeps naive smalldatetime values; we store UTC wall time without tzinfo.
    updated = datetime.combine(random_date(rng, hire, today), datetime.min.time(), tzinfo=UTC).replace(tzinfo=None)
    row: dict[str, Any] = {
        "PRCo": company,
        "Employee": employee,
        "LastName": last,
        "FirstName": first,
        "MidName": rng.choice("ABCDEFGHJKLMNPRSTW") if rng.random() < 0.4 else None,
        "Suffix": rng.choice(("Jr", "Sr", "III")) if rng.random() < 0.03 else None,
        "SortName": reg.sort_name(first, last, employee),
        "Address": f"{rng.randint(100, 9999)} {rng.choice(STREETS)}",
        "City": city,
        "State": state,
        "Zip": f"{zip3}{rng.randint(0, 99):02d}",
        "Phone": phone,
        "CellPhone": cell,
        "Email": email,
        "Sex": sex,
        "BirthDate": birth,
        "HireDate": hire,
        "TermDate": term,
        "RecentRehireDate": rehire,
        "RecentSeparationDate": separation,
        "ActiveYN": "Y" if active else "N",
        "PRDept": dept,
        "Craft": craft,
        "Class": rng.choice(classes),
        "JCCo": company,
        "Job": job,
        title_column: title,
        "LastUpdated": updated,
        "Notes": None,
        "KeyID": key_id,
    }
    person = Person(
        company=company,
        employee=employee,
        first=first,
        last=last,
        active=active,
        hire=rehire or hire,
        term=term if not active else None,
        title=title,
        cell_digits=cell_digits,
        dept=dept,
        kind=kind,
        mail=mailbox,
    )
    return row, person


def job_code(rng: random.Random, year: int, number: int) -> str:
    """A Vista job code as masks and typists leave it: ``24-101-``, `` 24-101.``, ``24-101-  ``.

    The trimmed code stays unique because ``(year, number)`` is.
    """
    core = f"{year % 100:02d}-{number:03d}"
    roll = rng.random()
    if roll < 0.70:
        return f"{core}-"
    if roll < 0.80:
        return f" {core}."
    if roll < 0.90:
        return f"{core}-  "
    return core


def job_row(rng: random.Random, *, company: int, code: str, status: int, key_id: int) -> dict[str, Any]:
    """One bJCJM row (Contract = the job code, as in most Vista installs)."""
    city, state, zip3, _areas = rng.choice(CITIES)
    description: str | None = f"{rng.choice(CLIENTS)} {rng.choice(PROJECTS)}"
    if rng.random() < 0.02:
        description = None  # HR and PMs leave blanks; the sync must cope
    has_address = rng.random() < 0.85
    return {
        "JCCo": company,
        "Job": code,
        "Description": description,
        "Contract": code,
        "JobStatus": status,
        "ShipAddress": f"{rng.randint(100, 99999)} {rng.choice(STREETS)}" if has_address else None,
        "ShipCity": city if has_address else None,
        "ShipState": state if has_address and rng.random() < 0.95 else None,
        "ShipZip": f"{zip3}{rng.randint(0, 99):02d}" if has_address else None,
        "KeyID": key_id,
    }


def job_status(rng: random.Random) -> int:
    """1 open (80 %), 2 soft-closed (10 %), 3 hard-closed (10 %)."""
    roll = rng.random()
    return 1 if roll < 0.8 else 2 if roll < 0.9 else 3


def vehicle(rng: random.Random, *, index: int, created: datetime, driver: dict[str, Any] | None) -> dict[str, Any]:
    """One Samsara vehicle in the List-vehicles shape (SAM-lv)."""
    make, model = rng.choice(VEHICLE_MODELS)
    year = rng.randint(2012, 2025)
    serial = gateway_serial(rng)
    data: dict[str, Any] = {
        "id": f"281474976710{600 + index}",
        # Samsara names a vehicle after its gateway serial until someone renames it.
        "name": serial if rng.random() < 0.15 else f"{rng.choice(('TRK', 'Truck', 'SVC', 'V'))}-{100 + index}",
        "make": make,
        "model": model,
        "year": str(year),
        "serial": serial,
        "gateway": {"model": rng.choice(("VG54NA", "VG55NA")), "serial": serial},
        "externalIds": {},
        "tags": rng.sample(VEHICLE_TAGS, rng.randint(0, 2)),
        "harshAccelerationSettingType": "automatic",
        "vehicleRegulationMode": rng.choice(("regulated", "unregulated")),
        "createdAtTime": rfc3339(created),
        "updatedAtTime": rfc3339(created),
    }
    if rng.random() < 0.95:
        data["vin"] = vin(rng, year)
    if rng.random() < 0.9:
        data["licensePlate"] = f"{rng.choice('ABCDEFGHJK')}{rng.randint(100000, 999999)}"
    if rng.random() < 0.3:
        data["notes"] = rng.choice(("Spare", "Needs tires", "Assigned to yard", "Lift gate"))
    if rng.random() < 0.3:
        data["cameraSerial"] = "CC" + gateway_serial(rng)[1:]
    if rng.random() < 0.4:
        data["externalIds"] = {"maintenanceId": f"M-{rng.randint(1000, 9999)}"}
    if driver is not None:
        data["staticAssignedDriver"] = {"id": driver["id"], "name": driver["name"]}
    return data


def driver(rng: random.Random, *, index: int, person: Person, created: datetime, usernames: set[str]) -> dict[str, Any]:
    """One Samsara driver; ~90 % carry ``externalIds.payrollId`` = Vista Employee."""
    base = (ascii_fold(person.first)[:1] + ascii_fold(person.last)[:12]) or "driver"
    username, n = base, 1
    while username in usernames:
        n += 1
        username = f"{base}{n}"
    usernames.add(username)
    data: dict[str, Any] = {
        "id": str(5_000_000 + index),
        "name": f"{person.first} {person.last}",
        "username": username,
        "driverActivationStatus": "active" if person.active else "deactivated",
        "externalIds": {},
        "createdAtTime": rfc3339(created),
        "updatedAtTime": rfc3339(created),
    }
    if person.cell_digits and rng.random() < 0.8:
        data["phone"] = rng.choice((e164(person.cell_digits), person.cell_digits))
    if rng.random() < 0.9:
        data["externalIds"] = {"payrollId": str(person.employee)}
    if rng.random() < 0.2:
        data["notes"] = rng.choice(("CDL class A", "Yard only", "Night shift"))
    return data


def entra_user(rng: random.Random, person: Person) -> dict[str, Any]:
    """One Entra ID user for an employee (mail quirks: docs/emulated-apis.md, "Microsoft Graph")."""
    mailbox = person.mail or f"{mail_local(person.first, person.last)}@{COMPANY_DOMAIN}"
    roll = rng.random()
    mail: str | None = mailbox
    upn = mailbox
    if roll < 0.03:
        mail = None  # unlicensed / no mailbox
    elif roll < 0.06:
        upn = mailbox.replace(COMPANY_DOMAIN, TENANT_DOMAIN)
        mail = upn  # cloud-only account, never got a vanity domain
    enabled = person.active and rng.random() > 0.04
    return {
        "id": uuid_from(rng),
        "accountEnabled": enabled,
        "businessPhones": [],
        "department": None,
        "displayName": f"{person.first} {person.last}",
        "employeeId": str(person.employee),
        "givenName": person.first,
        "jobTitle": (person.title or "").strip() or None,
        "mail": mail,
        "mobilePhone": e164(person.cell_digits) if rng.random() < 0.5 else None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": person.last,
        "userPrincipalName": upn,
        "userType": "Member",
    }


SERVICE_ACCOUNTS = (
    ("svc-scanner", "Scanner Service"), ("svc-backup", "Backup Service"),
    ("conf-room-2a", "Conference Room 2A"), ("ap", "Accounts Payable"), ("it-admin", "IT Admin"),
    ("safety", "Safety Shared Mailbox"), ("svc-sync", "Sync Service Account"),
)  # fmt: skip


def service_account(rng: random.Random, index: int) -> dict[str, Any]:
    """An Entra user with no employeeId (shared mailbox, room, service principal's user)."""
    local, name = SERVICE_ACCOUNTS[index % len(SERVICE_ACCOUNTS)]
    if index >= len(SERVICE_ACCOUNTS):
        local = f"{local}{index // len(SERVICE_ACCOUNTS) + 1}"
    address = f"{local}@{COMPANY_DOMAIN}"
    return {
        "id": uuid_from(rng),
        "accountEnabled": rng.random() < 0.7,
        "businessPhones": [],
        "department": None,
        "displayName": name,
        "employeeId": None,
        "givenName": None,
        "jobTitle": None,
        "mail": address,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": None,
        "userPrincipalName": address,
        "userType": "Member",
    }


def uuid_from(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (repeatable, unlike uuid4())."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
