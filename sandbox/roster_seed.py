"""The sandbox's school district: OneRoster orgs, users, classes and enrollments.

Why a file of its own (``oneroster.sqlite``) instead of the targets' store: the SIS is a
*source*, changed only by ``python -m sandbox mutate``, and the emulator filters it by
``dateLastModified`` (the delta) and by school, which plain SQL columns make cheap.

The district scales with the sandbox size N (employees): ``2 + N // 150`` schools (at
most 8), ``2 N`` students, ``max(3, N // 10)`` teachers with three classes each, every
student in four classes of their school. Awkward but legal data is seeded on purpose:
class ids with braces and colons, a few administrators and guardians (not synced by
default), students already ``tobedeleted``, and a few with ``enabledUser=false``.
Records carry ``dateLastModified`` days or months in the past, as a SIS's do, so a delta
right after seeding is empty.

Credentials (OneRoster client id/secret, the SCIM bearer token) live in ``rosters.json``
(0600), beside the other sandbox secrets.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROSTER_FILE = "oneroster.sqlite"
CREDS_FILE = "rosters.json"
DISTRICT_ID = "district-1"
KINDS = ("orgs", "users", "classes", "enrollments", "courses", "academicSessions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, sourced_id TEXT NOT NULL, status TEXT NOT NULL,
    modified TEXT NOT NULL, school TEXT, class_id TEXT, user_id TEXT, role TEXT,
    data TEXT NOT NULL,
    UNIQUE (kind, sourced_id)
);
CREATE INDEX IF NOT EXISTS records_modified ON records (kind, modified);
CREATE INDEX IF NOT EXISTS records_school ON records (kind, school);
CREATE INDEX IF NOT EXISTS records_class ON records (kind, class_id);
CREATE INDEX IF NOT EXISTS records_kind_seq ON records (kind, seq);
"""


@dataclass(frozen=True, repr=False)
class RosterCredentials:
    """Dummy OneRoster and SCIM credentials of one sandbox directory (never logged)."""

    client_id: str
    client_secret: str
    scim_token: str

    def __repr__(self) -> str:
        return "RosterCredentials(<hidden>)"


def iso(moment: datetime) -> str:
    """OneRoster dateTime: ISO 8601 UTC with milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def load_credentials(directory: Path) -> RosterCredentials:
    path = directory / CREDS_FILE
    if not path.exists():
        values = {
            "client_id": "oneroster-" + secrets.token_hex(8),
            "client_secret": secrets.token_urlsafe(32),
            "scim_token": "scim-" + secrets.token_urlsafe(32),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(values, handle)
        os.replace(tmp, path)
    return RosterCredentials(**json.loads(path.read_text(encoding="utf-8")))


class RosterDB:
    """The district's records: one row per OneRoster object, its JSON in ``data``.

    One connection per instance, guarded by the caller (the emulator opens one per
    request thread through ``connect``; writes come from seeding and ``mutate`` only).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def put(self, kind: str, data: dict[str, Any]) -> None:
        """Insert or replace one record (keeps its position in the listing order)."""
        self.conn.execute(
            "INSERT INTO records (kind, sourced_id, status, modified, school, class_id, user_id, role, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, sourced_id) DO UPDATE SET status=excluded.status, modified=excluded.modified,"
            " school=excluded.school, class_id=excluded.class_id, user_id=excluded.user_id, role=excluded.role,"
            " data=excluded.data",
            (
                kind,
                data["sourcedId"],
                data.get("status", "active"),
                data["dateLastModified"],
                _school_of(kind, data),
                data.get("class") if kind == "enrollments" else None,
                data.get("user") if kind == "enrollments" else None,
                data.get("role"),
                json.dumps(data, separators=(",", ":")),
            ),
        )

    def get(self, kind: str, sourced_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM records WHERE kind=? AND sourced_id=?", (kind, sourced_id)).fetchone()
        return json.loads(row[0]) if row else None

    def all(self, kind: str, where: str = "", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        sql = "SELECT data FROM records WHERE kind=?" + (f" AND {where}" if where else "") + " ORDER BY seq"
        return [json.loads(r[0]) for r in self.conn.execute(sql, (kind, *params)).fetchall()]

    def count(self, kind: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM records WHERE kind=?", (kind,)).fetchone()[0])


def _school_of(kind: str, data: dict[str, Any]) -> str | None:
    if kind in ("classes", "enrollments"):
        return data.get("school")
    if kind == "users":
        orgs = [r.get("org") for r in data.get("roles") or []]
        return orgs[0] if orgs else None
    return None


def open_roster(directory: str | Path) -> RosterDB:
    """Open the district of a sandbox directory (seed it first with ``ensure_roster``)."""
    return RosterDB(Path(directory) / ROSTER_FILE)


def ensure_roster(directory: Path, *, size: int, seed: int | str, classes_per_student: int = 4) -> dict[str, int]:
    """Seed ``oneroster.sqlite`` unless it exists; written to a temporary file and renamed,
    so an interrupted seed is redone. Returns the record counts. ``classes_per_student``
    (default 4) scales the enrollments: bench/rosters_scale.py seeds 100,000 users with
    11 each for a million enrollments before it starts the sandbox."""
    path = directory / ROSTER_FILE
    load_credentials(directory)
    if path.exists():
        db = RosterDB(path)
        try:
            return {k: db.count(k) for k in KINDS}
        finally:
            db.close()
    tmp = directory / f".{ROSTER_FILE}.tmp"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    db = RosterDB(tmp)
    try:
        with db.atomic():
            seed_district(db, random.Random(f"{seed}:rosters"), size, datetime.now(UTC), classes_per_student)
        counts = {k: db.count(k) for k in KINDS}
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)
    return counts


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _past(rng: random.Random, now: datetime) -> str:
    return iso(now - timedelta(days=rng.randint(2, 300), seconds=rng.randint(0, 86_000)))


def new_user(
    rng: random.Random, now: datetime, role: str, school: str, *, modified: str | None = None, used: set[str] | None = None
) -> dict[str, Any]:
    """A OneRoster user in the emulator's canonical (1.2-like) form."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    base = ascii_name.lower().replace("'", "").replace(" ", "")
    username = base
    n = 1
    while used is not None and username in used:
        n += 1
        username = f"{base}{n}"
    if used is not None:
        used.add(username)
    sid = _guid(rng)
    domain = "students.sandbox-district.org" if role == "student" else "sandbox-district.org"
    return {
        "sourcedId": sid,
        "status": "active",
        "dateLastModified": modified or _past(rng, now),
        "enabledUser": True,
        "username": username,
        "userIds": [{"type": "SIS", "identifier": f"{rng.randint(100000, 999999)}"}],
        "givenName": first,
        "familyName": last,
        "middleName": None,
        "role": role,
        "roles": [{"roleType": "primary", "role": role, "org": school}],
        "identifier": f"{role[0].upper()}{rng.randint(10000, 99999)}",
        "email": f"{username}@{domain}",
        "grades": [str(rng.randint(6, 12))] if role == "student" else [],
    }


def new_enrollment(rng: random.Random, user: str, cls: dict[str, Any], role: str, modified: str) -> dict[str, Any]:
    return {
        "sourcedId": _guid(rng),
        "status": "active",
        "dateLastModified": modified,
        "user": user,
        "class": cls["sourcedId"],
        "school": cls["school"],
        "role": role,
        "primary": role == "teacher",
        "beginDate": None,
        "endDate": None,
    }


FIRST_NAMES = (
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Mia",
    "Lucas",
    "Zoë",
    "Mateo",
    "Sofia",
    "Ethan",
    "Chloé",
    "Amir",
    "Priya",
    "Jamal",
    "Hana",
    "Diego",
    "Grace",
    "Owen",
    "Leila",
    "Kenji",
    "Nora",
    "Isaac",
    "Maya",
    "Omar",
)
LAST_NAMES = (
    "Garcia",
    "Smith",
    "Nguyen",
    "Johnson",
    "O'Brien",
    "Müller",
    "Kim",
    "Patel",
    "Brown",
    "Lopez",
    "Williams",
    "Chen",
    "Davis",
    "Martinez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Moore",
    "Jackson",
    "Lee",
)
SUBJECTS = ("Math", "English", "Science", "History", "Art", "Music", "Spanish", "PE", "Biology", "Chemistry")


def seed_district(db: RosterDB, rng: random.Random, size: int, now: datetime, classes_per_student: int = 4) -> None:
    n_schools = min(8, 2 + size // 150)
    n_teachers = max(3, size // 10)
    n_students = max(6, size * 2)
    year = now.year if now.month >= 8 else now.year - 1
    db.put("orgs", {"sourcedId": DISTRICT_ID, "status": "active", "dateLastModified": _past(rng, now),
                    "name": "Sandbox Unified School District", "type": "district", "identifier": "SUSD",
                    "parent": None})  # fmt: skip
    schools = []
    for i in range(n_schools):
        sid = f"school-{i + 1:02d}"
        schools.append(sid)
        db.put("orgs", {"sourcedId": sid, "status": "active", "dateLastModified": _past(rng, now),
                        "name": f"{rng.choice(LAST_NAMES)} {'High' if i % 2 else 'Middle'} School",
                        "type": "school", "identifier": f"S{i + 1:03d}", "parent": DISTRICT_ID})  # fmt: skip
    term = f"term-{year}"
    db.put("academicSessions", {"sourcedId": term, "status": "active", "dateLastModified": _past(rng, now),
                                "title": f"{year}-{year + 1}", "type": "schoolYear", "startDate": f"{year}-08-15",
                                "endDate": f"{year + 1}-06-10", "schoolYear": str(year + 1)})  # fmt: skip
    used: set[str] = set()
    classes_by_school: dict[str, list[dict[str, Any]]] = {s: [] for s in schools}
    for t in range(n_teachers):
        school = schools[t % n_schools]
        teacher = new_user(rng, now, "teacher", school, used=used)
        db.put("users", teacher)
        for k in range(3):
            subject = SUBJECTS[(t + k) % len(SUBJECTS)]
            course = f"course-{subject.lower()}-{school}"
            if db.get("courses", course) is None:
                db.put("courses", {"sourcedId": course, "status": "active", "dateLastModified": _past(rng, now),
                                   "title": subject, "courseCode": subject[:4].upper(), "org": school})  # fmt: skip
            # awkward but legal ids: braces and colons (the CSV binding allows any string)
            cid = f"{{cls:{year}:{school}:{t:03d}-{k}}}" if (t + k) % 4 == 0 else _guid(rng)
            cls = {
                "sourcedId": cid,
                "status": "active",
                "dateLastModified": _past(rng, now),
                "title": f"{subject} {k + 1} - {teacher['familyName']}",
                "classCode": f"{subject[:4].upper()}-{t:03d}-{k + 1}",
                "classType": "scheduled",
                "location": f"Room {100 + t * 3 + k}",
                "course": course,
                "school": school,
                "terms": [term],
                "periods": [str(k + 1)],
            }
            db.put("classes", cls)
            classes_by_school[school].append(cls)
            db.put("enrollments", new_enrollment(rng, teacher["sourcedId"], cls, "teacher", _past(rng, now)))
    for s in range(n_students):
        school = schools[s % n_schools]
        student = new_user(rng, now, "student", school, used=used)
        if s % 97 == 5:
            student["status"] = "tobedeleted"  # withdrawn before the sandbox began
        elif s % 89 == 7:
            student["enabledUser"] = False
        db.put("users", student)
        pool = classes_by_school[school]
        for cls in rng.sample(pool, k=min(classes_per_student, len(pool))):
            enr = new_enrollment(rng, student["sourcedId"], cls, "student", _past(rng, now))
            if student["status"] == "tobedeleted":
                enr["status"] = "tobedeleted"
            db.put("enrollments", enr)
    for school in schools:  # people the default ROSTER_ROLES leave out
        db.put("users", new_user(rng, now, "administrator", school, used=used))
        db.put("users", new_user(rng, now, "guardian", school, used=used))


# -- mutate (python -m sandbox mutate) -----------------------------------------------------
ROSTER_KINDS = ("roster_moves", "roster_withdrawals", "roster_teachers_added", "roster_email_changes")


def mutate_rosters(ctx: Any) -> None:
    """The SIS's drift between two runs, stamped with today's ``dateLastModified``:
    students move between classes of their school (old enrollment ``tobedeleted``, a new
    one active), some withdraw (user and enrollments ``tobedeleted``), teachers join as
    co-teachers, e-mails change. ``ctx`` is ``sandbox.mutate.MutationContext``; the
    district is found beside its store. A folder without a district is left alone."""
    for kind in ROSTER_KINDS:
        ctx.counts.setdefault(kind, 0)
    directory = Path(ctx.store.path).parent
    if not (directory / ROSTER_FILE).exists():
        return
    rng: random.Random = ctx.rng
    stamp = iso(ctx.now)
    db = open_roster(directory)
    try:
        with db.atomic():
            users = db.all("users", "status='active'")
            students = [u for u in users if u.get("role") == "student" and u.get("enabledUser", True)]
            teachers = [u for u in users if u.get("role") == "teacher"]
            classes = db.all("classes", "status='active'")
            by_school: dict[str, list[dict[str, Any]]] = {}
            for cls in classes:
                by_school.setdefault(cls["school"], []).append(cls)
            enrollments = db.all("enrollments", "status='active'")
            by_user: dict[str, list[dict[str, Any]]] = {}
            for enr in enrollments:
                by_user.setdefault(enr["user"], []).append(enr)
            touched: set[str] = set()
            used = {str(u.get("username")) for u in db.all("users")}

            for student in rng.sample(students, k=min(len(students), ctx.share(len(students), 0.3))):
                touched.add(student["sourcedId"])
                student.update(status="tobedeleted", dateLastModified=stamp)
                db.put("users", student)
                for enr in by_user.get(student["sourcedId"], []):
                    enr.update(status="tobedeleted", dateLastModified=stamp)
                    db.put("enrollments", enr)
                ctx.bump("roster_withdrawals")

            movers = [s for s in students if s["sourcedId"] not in touched]
            for student in rng.sample(movers, k=min(len(movers), ctx.share(len(students), 1.0))):
                mine = by_user.get(student["sourcedId"], [])
                school = (student.get("roles") or [{}])[0].get("org")
                taken = {e["class"] for e in mine}
                options = [c for c in by_school.get(school, []) if c["sourcedId"] not in taken]
                if not mine or not options:
                    continue
                touched.add(student["sourcedId"])
                old = rng.choice(mine)
                old.update(status="tobedeleted", dateLastModified=stamp)
                db.put("enrollments", old)
                db.put("enrollments", new_enrollment(rng, student["sourcedId"], rng.choice(options), "student", stamp))
                ctx.bump("roster_moves")

            schools = sorted(by_school)
            for _ in range(ctx.share(max(1, len(teachers)), 1.0) if schools else 0):
                school = rng.choice(schools)
                teacher = new_user(rng, ctx.now, "teacher", school, modified=stamp, used=used)
                db.put("users", teacher)
                db.put("enrollments", new_enrollment(rng, teacher["sourcedId"], rng.choice(by_school[school]), "teacher", stamp))
                ctx.bump("roster_teachers_added")

            others = [s for s in students if s["sourcedId"] not in touched]
            for student in rng.sample(others, k=min(len(others), ctx.share(len(students), 0.3))):
                local, _, domain = (student.get("email") or "x@sandbox-district.org").partition("@")
                student.update(email=f"{local}.{rng.randint(2, 99)}@{domain}", dateLastModified=stamp)
                db.put("users", student)
                ctx.bump("roster_email_changes")
    finally:
        db.close()
