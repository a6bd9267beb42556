"""The bad-input corpus (tests/data/bad_source_rows.json) through the whole product.

The corpus's rows are inserted with plain SQL into a sandbox's viewpoint.sqlite, next to
the sandbox's own employees. bPREH, bPRDP and bJCJM are first rebuilt without their
primary keys and NOT NULL constraints: the product must survive what a view, a linked
server or a careless migration can return, not only what Vista's DDL allows.

Asserted for every row: its expected outcome (tests/data/build_corpus.py explains the
kinds) and *exactly one* error record with the expected reason when it is bad; nothing
bad reached SafetyAmp (no refused key, no character the text policy refuses, no
oversized value in any record); a line break inside a department or job name became one
space; the valid rows end exactly as in a sandbox without the corpus; the process
never crashed (exit 0, no "internal error"); the source tables are intact; and a
second run is steady: no write, and no sync quarantined because of known-bad rows.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BatchRunner, writes
from tests.e2e.test_faults_oracle import _raw, clean_state, duplicates, log_lines, state_diff, target_state
from tests.e2e.test_rosters_e2e import rosters  # noqa: F401 - fixture (real Redis for the roster cursor)

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_source_rows.json"
SIZE = 40
SYNCS = "departments,jobs,titles,employees"
FIRST_CORPUS_EMP = 7000


def relax(conn: sqlite3.Connection, table: str) -> None:
    """Rebuild ``table`` with the same columns and types, without keys or NOT NULL."""
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()[0]
    loose = re.sub(r",\s*PRIMARY KEY\s*\([^)]*\)", "", ddl.replace("NOT NULL", ""))
    loose = loose.replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "{table}_loose"', 1)
    conn.execute(loose)
    conn.execute(f'INSERT INTO "{table}_loose" SELECT * FROM "{table}"')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{table}_loose" RENAME TO "{table}"')


def insert_corpus(sandbox: Path, corpus: list[dict[str, Any]]) -> dict[str, int]:
    conn = sqlite3.connect(sandbox / "viewpoint.sqlite")
    try:
        with conn:
            for table in ("bPREH", "bPRDP", "bJCJM"):
                relax(conn, table)
            open_job = conn.execute(
                'SELECT "Job" FROM "bJCJM" WHERE "JCCo" = 1 AND "JobStatus" = 1 ORDER BY "Job" LIMIT 1'
            ).fetchone()[0]
            for entry in corpus:
                row = {k: (open_job if v == "{OPEN_JOB}" else v) for k, v in entry["row"].items()}
                cols = ", ".join(f'"{c}"' for c in row)
                conn.execute(f'INSERT INTO "{entry["table"]}" ({cols}) VALUES ({", ".join("?" * len(row))})', list(row.values()))
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in ("bPREH", "bPRDP", "bJCJM")}
    finally:
        conn.close()


def latest_errors(output: Path, sync: str) -> list[dict[str, Any]]:
    files = sorted((output / "errors").glob(f"{sync}-*.json"))
    return json.loads(files[-1].read_text())["errors"] if files else []


def title_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def shown(key: str) -> str:
    """A key as the errors file shows it (docs/configuration.md): at most 100 characters,
    every character Python does not consider printable escaped."""
    key = key if len(key) <= 100 else key[:100] + "..."
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in key)


def refused_character(ch: str) -> bool:
    """The text policy (docs/configuration.md), stated independently of the product's
    code: controls, invisible formatting (ZWJ/ZWNJ aside, which the test checks sit
    between two visible characters), line/paragraph separators, tags, private use."""
    category = unicodedata.category(ch)
    return (
        category in ("Cc", "Cs", "Co", "Zl", "Zp")
        or 0xE0000 <= ord(ch) <= 0xE007F
        or (category == "Cf" and ch not in "\u200c\u200d")
    )


def bad_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    for i, ch in enumerate(value):
        if refused_character(ch):
            return True
        if ch in "\u200c\u200d" and not (0 < i < len(value) - 1 and not value[i - 1].isspace() and not value[i + 1].isspace()):
            return True
    return len(value) > 255


def test_every_bad_row_gets_one_error_record_and_nothing_bad_is_sent(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sandbox.seed import ensure_seeded

    corpus = json.loads(CORPUS.read_text())
    assert len(corpus) >= 200
    want_clean = dict(clean_state(tmp_path_factory, SIZE))
    batch = BatchRunner(tmp_path, size=SIZE)
    ensure_seeded(batch.dir, size=SIZE, seed=7)
    counts_before = insert_corpus(batch.dir, corpus)

    first = batch.run(SYNC_TYPES=SYNCS)
    logs = log_lines(first["_stderr"])
    assert first["_exit"] == 0 and first["status"] == "partial", first
    assert not [x for x in logs if "internal error" in x.get("message", "") or "crashed" in x.get("message", "")]
    errors = {sync: latest_errors(batch.output, sync) for sync in ("departments", "jobs", "titles", "employees")}
    by_key = {sync: Counter(str(e["key"]) for e in entries) for sync, entries in errors.items()}
    users = target_state(batch.dir)["users"]
    problems: list[str] = []

    def one_error(sync: str, key: str, kind: str, reason: str, entry_id: str) -> None:
        mine = [e for e in errors[sync] if str(e["key"]) == key]
        if len(mine) != 1 or mine[0]["kind"] != kind or reason not in mine[0]["reason"]:
            problems.append(
                f"{entry_id}: want one {kind} error with {reason!r} for {sync} key {key!r}, got {[(e['kind'], e['reason'][:80]) for e in mine]}"
            )

    blanks = Counter()
    state = target_state(batch.dir)
    for entry in corpus:
        row, expect, eid = entry["row"], entry["expect"], entry["id"]
        if entry["table"] != "bPREH":
            sync, column, collection = (
                ("departments", "PRDept", "site_clusters") if entry["table"] == "bPRDP" else ("jobs", "Job", "sites")
            )
            key = (row[column] or "").strip()
            if not key:
                blanks[sync] += 1
            elif expect == "synced":
                if by_key[sync][key]:
                    problems.append(f"{eid}: valid {sync} row {key} got error records")
                got_row = state[collection].get(key.lower()) or {}
                for field, value in entry["want"].items():
                    if got_row.get(field) != value:
                        problems.append(f"{eid}: {collection} {key}.{field} = {got_row.get(field)!r}, want {value!r}")
            else:
                one_error(sync, shown(key), "rejected", entry["reason"], eid)
            continue
        if row["Employee"] is None:
            blanks["employees"] += 1
            continue
        key = str(row["Employee"])
        if expect in ("rejected", "duplicate"):
            one_error("employees", key, "rejected", entry["reason"], eid)
            if key in users:
                problems.append(f"{eid}: refused employee {key} reached SafetyAmp")
        elif expect == "dropped":
            one_error("employees", key, "field_dropped", entry["reason"], eid)
        if expect in ("synced", "dropped", "title_rejected"):
            if by_key["employees"][key] and expect != "dropped":
                problems.append(
                    f"{eid}: valid row {key} got error records {[e['reason'][:60] for e in errors['employees'] if str(e['key']) == key]}"
                )
            user = users.get(key)
            if user is None:
                problems.append(f"{eid}: employee {key} was not created")
            else:
                for field, value in entry["want"].items():
                    if user.get(field) != value:
                        problems.append(f"{eid}: {key}.{field} = {user.get(field)!r}, want {value!r}")
        if expect == "title_rejected":
            tkey = shown(title_key(row["udEmpTitle"]))
            if sum(1 for e in errors["titles"] if e["key"] == tkey and e["reason"].startswith("title:")) != 1:
                problems.append(f"{eid}: no single titles error for {tkey[:20]!r}")
    for sync, n in blanks.items():
        got = by_key[sync]["(blank)"]
        if got != n:
            problems.append(f"{sync}: {n} rows without a key, {got} '(blank)' error records")
    assert problems == [], "\n".join(problems[:40])

    # Nothing bad sent: no refused value anywhere in SafetyAmp.
    for collection, rows in _raw(batch.dir).items():
        for record in rows:
            assert not any(bad_text(v) for v in record.values()), (collection, record)
    assert duplicates(batch.dir) == {}
    # Valid rows unaffected: the sandbox's own records are exactly as without the corpus.
    got = target_state(batch.dir)
    got["users"] = {k: v for k, v in got["users"].items() if not k.isdigit() or int(k) < FIRST_CORPUS_EMP}
    got["site_clusters"] = {k: v for k, v in got["site_clusters"].items() if not k.startswith("cz")}  # corpus departments
    got["sites"] = {k: v for k, v in got["sites"].items() if not k.startswith("cjz-")}  # corpus jobs
    got.pop("assets"), want_clean.pop("assets")  # vehicles are not part of this run
    assert state_diff(got, want_clean) == []
    # The source is intact (the SQL metacharacters stayed data).
    conn = sqlite3.connect(batch.dir / "viewpoint.sqlite")
    try:
        assert {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in counts_before} == counts_before
    finally:
        conn.close()

    second = batch.run(SYNC_TYPES=SYNCS)
    assert second["_exit"] == 0 and writes(second) == 0, second["requests"]
    quarantined = [x["message"] for x in log_lines(second["_stderr"]) if "quarantined" in x.get("message", "")]
    assert quarantined == [], quarantined
    n_bad = sum(1 for e in corpus if e["expect"] != "synced")
    print(f"\ncorpus: {len(corpus)} rows ({n_bad} bad); error records run 1: "
          f"{ {s: len(e) for s, e in errors.items()} }; employees created from corpus: "
          f"{sum(1 for k in users if k.isdigit() and int(k) >= FIRST_CORPUS_EMP)}")  # fmt: skip


# --------------------------------------------------------------------------- OneRoster -> SCIM

ROSTER_BAD_USERS = [
    # (sourcedId, field, value, reason)
    ("bad-zwsp", "givenName", "A\u200bnn", "givenName contains an invisible formatting character (U+200B)"),
    ("bad-rlm", "familyName", "Lee\u200f", "familyName contains an invisible formatting character (U+200F)"),
    ("bad-tag", "givenName", "Ann\U000e0041\U000e007f", "givenName contains a Unicode tag character (U+E0041)"),
    ("bad-ls", "familyName", "Lee\u2028Smith", "familyName contains a line or paragraph separator (U+2028)"),
    ("bad-bel", "givenName", "Ann\x07", "givenName contains a control character (U+0007)"),
    ("bad-esc", "username", "bad\x1buser", "userName contains a control character (U+001B)"),
    ("bad-mail", "email", "x\u200b@sandbox-district.org", "email contains an invisible formatting character (U+200B)"),
    ("bad-\x07-id", "givenName", "Ann", "sourcedId contains a control character (U+0007)"),
    ("bad-\U000e0041-id", "givenName", "Ann", "sourcedId contains a Unicode tag character (U+E0041)"),
]
ROSTER_GOOD_USERS = [  # hostile but valid: what real names need, and a line break that becomes a space
    ("good-zwnj", {"familyName": "نیک\u200cنام"}, {"familyName": "نیک\u200cنام"}),
    ("good-zwj", {"givenName": "Zoë 👷\u200d♀️"}, {"givenName": "Zoë 👷\u200d♀️"}),
    ("good-crlf", {"givenName": "Ann\r\nMarie"}, {"givenName": "Ann Marie"}),
]
ROSTER_BAD_CLASSES = [
    ("cls-bad-ls", {"title": "Math\u20287"}, "title contains a line or paragraph separator (U+2028)"),
    ("cls-bad-zwsp", {"title": "Art\u200b"}, "title contains an invisible formatting character (U+200B)"),
    ("cls-\x1b-bad", {"title": "Music"}, "class sourcedId contains a control character (U+001B)"),
]


def test_bad_roster_values_never_reach_scim(rosters: BatchRunner) -> None:  # noqa: F811
    from datetime import UTC, datetime

    from sandbox.roster_seed import ensure_roster, new_user, open_roster
    from sandbox.seed import ensure_seeded
    from tests.e2e.test_rosters_e2e import REDIS_URL, scim_state

    batch = rosters
    ensure_seeded(batch.dir, size=batch.size, seed=7)
    ensure_roster(batch.dir, size=batch.size, seed=7)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    db = open_roster(batch.dir)
    try:
        school = next(o["sourcedId"] for o in db.all("orgs") if o["type"] == "school")
        rng = __import__("random").Random(5)

        serial = iter(range(1, 1000))

        def user(sid: str, **fields: Any) -> dict[str, Any]:
            row = new_user(rng, datetime.now(UTC), "student", school, modified=now)
            n = next(serial)
            row.update({"sourcedId": sid, "username": f"corpus.user{n}", "email": f"corpus.user{n}@sandbox-district.org",
                        **fields})  # fmt: skip
            return row

        with db.atomic():
            for sid, field, value, _ in ROSTER_BAD_USERS:
                db.put("users", user(sid, **{field: value}))
            for sid, fields, _ in ROSTER_GOOD_USERS:
                db.put("users", user(sid, **fields))
            for sid, fields, _ in ROSTER_BAD_CLASSES:
                db.put("classes", {"sourcedId": sid, "status": "active", "dateLastModified": now, "title": "x",
                                   "classCode": "X-1", "classType": "scheduled", "school": school, **fields})  # fmt: skip
    finally:
        db.close()

    first = batch.run("--only", "rosters", REDIS_URL=REDIS_URL)
    assert first["_exit"] == 0 and first["status"] == "partial", (first["status"], first["_stderr"][-2000:])
    logs = log_lines(first["_stderr"])
    assert not [x for x in logs if "internal error" in x.get("message", "") or "crashed" in x.get("message", "")]
    errors = latest_errors(batch.output, "rosters")
    problems = []
    for key, reason in [(f"user/{shown(s)}", r) for s, _, _, r in ROSTER_BAD_USERS] + [
        (f"class/{shown(s)}", r) for s, _, r in ROSTER_BAD_CLASSES
    ]:
        mine = [e for e in errors if e["key"] == key]
        if len(mine) != 1 or mine[0]["kind"] != "rejected" or reason not in mine[0]["reason"]:
            problems.append(f"{key}: want one rejected error with {reason!r}, got {[(e['kind'], e['reason']) for e in mine]}")
    assert problems == [], "\n".join(problems)

    state = scim_state(batch)
    users = {r.get("externalId"): r for (t, _), r in state.items() if t == "User"}
    groups = {r.get("externalId"): r for (t, _), r in state.items() if t == "Group"}
    sent: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if bad_text(value):
                sent.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(list(state.values()))
    assert sent == [], sent  # nothing the text policy refuses reached SCIM
    assert not {s for s, _, _, _ in ROSTER_BAD_USERS} & set(users)
    assert not {s for s, _, _ in ROSTER_BAD_CLASSES} & set(groups)
    for sid, _fields, want in ROSTER_GOOD_USERS:
        name = users[sid]["name"]
        assert {k: name.get(k) for k in want} == want, (sid, name)
    assert len(users) > batch.size  # the rest of the district was provisioned

    second = batch.run("--only", "rosters", REDIS_URL=REDIS_URL)
    assert second["_exit"] == 0 and writes(second, "scim") == 0, second["requests"]
    assert not [x for x in log_lines(second["_stderr"]) if "quarantined" in x.get("message", "")]
    r1 = first["runs"][0]
    print(f"\nroster corpus: {len(ROSTER_BAD_USERS)} bad users + {len(ROSTER_BAD_CLASSES)} bad classes -> "
          f"{sum(1 for e in errors if e['kind'] == 'rejected')} rejected error records; run 1 created {r1['created']} "
          f"(SCIM holds {len(users)} users, {len(groups)} groups), failed {r1['failed']}; run 2: 0 SCIM writes")  # fmt: skip
