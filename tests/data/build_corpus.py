#!/usr/bin/env python
"""Builds tests/data/bad_source_rows.json: malformed and hostile Viewpoint rows.

    python tests/data/build_corpus.py          # rewrite the JSON (deterministic)
    python tests/data/build_corpus.py --check  # exit 1 if the committed JSON is stale

Each entry is one source row with exactly one defect (or one hostile-but-valid value)
and what the product must do with it, stated independently of the product's code:

    {"id": "email-no-at-1", "table": "bPREH", "category": "invalid e-mail",
     "expect": "rejected" | "dropped" | "synced" | "duplicate" | "title_rejected",
     "reason": "substring of the error record's reason",
     "want": {target field: exact value}   (synced/dropped rows),
     "row": {column: value}}

``expect``: ``rejected`` = one error record (kind rejected), nothing sent;
``dropped`` = one error record (kind field_dropped), the record synced without that
field; ``synced`` = no error record, the target holds ``want`` exactly (hostile values
such as SQL metacharacters, HTML and emoji are data, stored verbatim); ``duplicate`` =
rows sharing an employee number: one error record for the number, nothing sent;
``title_rejected`` = one error record in the titles sync, the employee synced without
a title. Employee numbers are 7000+ (the sandbox uses 1000-1999). ``"{OPEN_JOB}"`` is
replaced at insert time by an open job of the sandbox (the employee's home site).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("bad_source_rows.json")
OPEN_JOB = "{OPEN_JOB}"


class Corpus:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.next_emp = 7000

    def emp(self) -> int:
        self.next_emp += 1
        return self.next_emp

    def employee(self, category: str, expect: str, reason: str = "", want: dict[str, Any] | None = None,
                 emp: int | None = None, **columns: Any) -> dict[str, Any]:  # fmt: skip
        number = self.emp() if emp is None else emp
        row = {
            "PRCo": 1, "Employee": number, "FirstName": "Corpus", "LastName": f"Row{number}", "MidName": None,
            "Email": f"corpus.{number}@corpus-test.com", "Phone": None, "CellPhone": None, "Sex": "M",
            "HireDate": "2020-01-15", "TermDate": None, "RecentRehireDate": None, "ActiveYN": "Y", "PRDept": "100",
            "JCCo": 1, "Job": OPEN_JOB, "udEmpTitle": None,
        }  # fmt: skip
        row.update(columns)
        n = sum(1 for e in self.entries if e["category"] == category) + 1
        entry = {"id": f"{category.replace(' ', '-')}-{n}", "table": "bPREH", "category": category, "expect": expect,
                 "reason": reason, "want": want or {}, "row": row}  # fmt: skip
        self.entries.append(entry)
        return entry

    def other(self, table: str, category: str, reason: str, row: dict[str, Any], expect: str = "rejected",
              want: dict[str, Any] | None = None) -> None:  # fmt: skip
        n = sum(1 for e in self.entries if e["category"] == category) + 1
        self.entries.append({"id": f"{category.replace(' ', '-')}-{n}", "table": table, "category": category,
                             "expect": expect, "reason": reason, "want": want or {}, "row": row})  # fmt: skip


def build() -> list[dict[str, Any]]:
    c = Corpus()

    # -- NULLs and blanks in required columns -------------------------------------------
    for _ in range(10):
        c.employee("null employee", "rejected", "bPREH row without Employee", Employee=None, emp=None)
    for _ in range(8):
        c.employee("null last name", "rejected", "LastName is empty", LastName=None)
    for _ in range(8):
        c.employee("null first name", "rejected", "FirstName is empty", FirstName=None)
    for blank in ("", "   ", "\t", "\u00a0", " \n "):
        c.employee("blank last name", "rejected", "LastName is empty", LastName=blank)
    for active in (None, "", "X", "?", "1"):
        c.employee("bad ActiveYN", "rejected", "ActiveYN is", ActiveYN=active)
    for mail in (None, "", "   "):
        c.employee("no e-mail", "rejected", "no e-mail", Email=mail)

    # -- invalid e-mails ------------------------------------------------------------------
    invalid_mails = [
        ("no at", "corpus.example.com", "has no @"), ("two at", "a@b@corpus-test.com", "@ signs"),
        ("space", "ann smith@corpus-test.com", "contains spaces"), ("leading dot", ".ann@corpus-test.com", "invalid characters"),
        ("double dot", "ann..b@corpus-test.com", "invalid characters"), ("no domain dot", "ann@localhost", "has no dot"),
        ("numeric tld", "ann@corpus-test.123", "top-level domain"), ("underscore domain", "ann@corp_test.com", "not a valid host"),
        ("non-ascii", "zoë@corpus-test.com", "non-ASCII"), ("emoji", "ann😀@corpus-test.com", "non-ASCII"),
        ("control", "ann\x07@corpus-test.com", "control character"), ("nul", "ann\x00x@corpus-test.com", "control character"),
        ("display name", "Ann <ann@corpus-test.com>", "spaces"), ("list", "a@corpus-test.com;b@corpus-test.com", "@ signs"),
        ("quoted local", '"ann"@corpus-test.com', "invalid characters"), ("ip literal", "ann@[127.0.0.1]", "not a valid host"),
        ("long local", "a" * 65 + "@corpus-test.com", "limit is 64"), ("long", "a@" + "b" * 250 + ".com", "limit is 254"),
        ("trailing dot", "ann@corpus-test.com.", "not a valid host"), ("hyphen label", "ann@-corp.com", "not a valid host"),
        ("only at", "@", "nothing before the @"), ("nothing before", "@corpus-test.com", "nothing before the @"),
        ("sql", "x'; DROP TABLE bPREH;--@corpus-test.com", "spaces"), ("html", "<script>@corpus-test.com", "invalid characters"),
        ("comma", "ann,b@corpus-test.com", "invalid characters"), ("bidi", "ann\u202e@corpus-test.com", "control character"),
        ("tab inside", "ann\tb@corpus-test.com", "control character"), ("newline", "ann@corpus-test.com\nBcc: x@y.com", "control character"),
        ("zero width", "ann\u200b@corpus-test.com", "invisible formatting character"), ("tag", "ann\U000e0041@corpus-test.com", "Unicode tag character"),
        ("percent", "ann%corpus-test.com", "has no @"), ("fullwidth at", "ann＠corpus-test.com", "has no @"),
    ]  # fmt: skip
    for _name, mail, reason in invalid_mails:
        c.employee("invalid e-mail", "rejected", reason, Email=mail)

    # -- duplicate e-mails: each employee of a pair/triple is rejected -------------------
    for group in range(8):
        size = 3 if group < 2 else 2
        shared = f"shared.{group}@corpus-test.com" if group % 2 else f"Shared.{group}@Corpus-Test.com "
        for i in range(size):
            c.employee(
                "duplicate e-mail", "rejected", "is shared with employee", Email=shared if i == 0 else shared.strip().lower()
            )

    # -- phones in every shape --------------------------------------------------------------
    valid_phones = [
        ("(504) 555-0101", "+15045550101"), ("504.555.0102", "+15045550102"), ("504-555-0103", "+15045550103"),
        ("+1 504 555 0104", "+15045550104"), ("1-504-555-0105", "+15045550105"), ("5045550106", "+15045550106"),
        ("504 555 0107 x12", "+15045550107"), ("504-555-0108 ext. 9", "+15045550108"), ("+44 20 7946 0958", "+442079460958"),
        ("５０４５５５０１１０", "+15045550110"), ("  504/555/0111  ", "+15045550111"), ("+1 (504) 555-0112", "+15045550112"),
    ]  # fmt: skip
    for raw, e164 in valid_phones:
        c.employee("phone valid shape", "synced", want={"mobile_phone": e164}, CellPhone=raw)
    invalid_phones = [
        ("555-0101", "has 7 digits"), ("504-555-010", "has 9 digits"), ("504-555-01011", "has 11 digits"),
        ("CALL ME", "characters other than digits"), ("N/A", "characters other than digits"), ("none", "characters other than digits"),
        ("(012) 555-0101", "cannot start with 0"), ("(112) 555-0101", "cannot start with 1"), ("(411) 555-0101", "service code"),
        ("504-055-0101", "exchange 055"), ("504-155-0101", "exchange 155"), ("504-911-0101", "service code"),
        ("000-000-0000", "cannot start with 0"), ("+0 504 555 0101", "cannot start with 0"), ("+1 504 555 010", "needs 11"),
        ("+4412345", "E.164 allows 8 to 15"), ("+4412345678901234", "E.164 allows 8 to 15"), ("504−555−0101", "characters other than digits"),
        ("504 555 0101 😀", "characters other than digits"), ("504-555-0101\x00", "characters other than digits"),
        ("++15045550101", "characters other than digits"), ("1" * 30, "has 30 digits"), ("504-555-0101; DROP", "characters other than digits"),
        ("<b>5045550101</b>", "characters other than digits"), ("911-555-0101", "service code"),
    ]  # fmt: skip
    for raw, reason in invalid_phones:
        c.employee("phone invalid shape", "dropped", reason, want={"mobile_phone": None}, CellPhone=raw)
    for raw, reason in (
        ("12", "has 2 digits"),
        ("(099) 555-0101", "cannot start with 0"),
        ("ext 5", "characters other than digits"),
    ):
        c.employee("work phone invalid", "dropped", reason, want={"work_phone": None}, Phone=raw)

    # -- names: length and control characters -------------------------------------------
    for field in ("FirstName", "LastName"):
        for n in (1000, 1000, 101, 250):
            c.employee("long name", "rejected", f"is {n} characters; the limit is 100", **{field: "N" * n})
    c.employee("long name", "rejected", "middle_name is 1000 characters", MidName="M" * 1000)
    controls = [
        "Ann\x00",
        "Ann\x07e",
        "\x1b[31mAnn",
        "Ann\x7f",
        "A\x08nn",
        "Ann\u202eeM",
        "Ann\u2066x",
        "A\x0enn",
        "A\x15nn",
        "A\x9bnn",
    ]
    for i, name in enumerate(controls):
        field = "FirstName" if i % 2 == 0 else "LastName"
        c.employee("control character name", "rejected", "contains a control character", **{field: name})

    # -- invisible, separator and tag characters in names (the text policy) --------------
    invisible = [
        ("FirstName", "A\u200bnn", "first_name contains an invisible formatting character (U+200B)"),  # zero-width space
        ("LastName", "Lee\u200f", "last_name contains an invisible formatting character (U+200F)"),  # right-to-left mark
        ("FirstName", "Ann\u200e", "first_name contains an invisible formatting character (U+200E)"),
        ("LastName", "Lee\U000e0041\U000e007f", "last_name contains a Unicode tag character (U+E0041)"),
        ("FirstName", "\U000e0020Ann", "first_name contains a Unicode tag character (U+E0020)"),
        ("LastName", "Lee\u2028Smith", "last_name contains a line or paragraph separator (U+2028)"),
        ("FirstName", "\u3164", "first_name contains an invisible character (U+3164)"),  # Hangul filler: a name that looks empty
        ("LastName", "Lee\u2800", "last_name contains an invisible character (U+2800)"),  # braille blank
        ("FirstName", "A\u034fnn", "first_name contains an invisible character (U+034F)"),  # combining grapheme joiner
        ("FirstName", "Ann\u2029Marie", "first_name contains a line or paragraph separator (U+2029)"),
        ("LastName", "Le\x85e", "last_name contains a control character (U+0085)"),  # NEL: a mis-decoded "..."
        ("MidName", "M\u00adx", "middle_name contains an invisible formatting character (U+00AD)"),  # soft hyphen
        ("FirstName", "\ufeffAnn", "first_name contains an invisible formatting character (U+FEFF)"),
        ("LastName", "Lee\u2060", "last_name contains an invisible formatting character (U+2060)"),  # word joiner
        ("FirstName", "\u200dAnn", "first_name contains an invisible formatting character (U+200D)"),  # joins nothing
        ("LastName", "Lee\ue000", "last_name contains a private-use character (U+E000)"),
        ("FirstName", "A\x1cnn", "first_name contains a control character (U+001C)"),  # str.split() white space
    ]
    for field, name, reason in invisible:
        c.employee("invisible character name", "rejected", reason, **{field: name})
    for name in ("نیک\u200cنام", "José 👷\u200d♀️", "क्\u200dषमा", "🇺🇸 Lee"):  # ZWNJ/ZWJ where names need them
        c.employee("joiner name", "synced", want={"last_name": name}, LastName=name)

    # -- hostile but valid: stored verbatim (data, never code) ---------------------------
    verbatim = [
        ("sql", "O'Brien"), ("sql", "Robert'); DROP TABLE bPREH;--"), ("sql", "1' OR '1'='1"), ("sql", "%_\\"),
        ("sql", "'; DELETE FROM records; --"), ("sql", "\"quoted\""), ("sql", "admin'--"), ("sql", "x; SELECT 1"),
        ("html", "<script>alert(1)</script>"), ("html", "<b>Bold</b>"), ("html", "Smith &amp; Sons"),
        ("html", "<img src=x onerror=alert(1)>"), ("html", "</td><td>"), ("html", "&#60;x&#62;"),
        ("emoji", "Zoë 😀"), ("emoji", "🚧"), ("emoji", "José 👷\u200d♀️"), ("emoji", "李小龍"), ("emoji", "Ærøskøbing"),
        ("template", "{{7*7}}"), ("template", "${jndi:ldap://x}"), ("format", "%s%s%n"), ("path", "../../etc/passwd"),
        ("csv", "=cmd|' /C calc'!A0"),
    ]  # fmt: skip
    for kind, name in verbatim:
        c.employee(f"hostile {kind} name", "synced", want={"last_name": name}, LastName=name)
    for raw, clean in (
        ("  Ann  ", "Ann"),
        ("Ann\tMarie", "Ann Marie"),
        ("Ann\u00a0 Marie", "Ann Marie"),
        ("Ann\nMarie", "Ann Marie"),
        ("Ann\r\nMarie", "Ann Marie"),
    ):
        c.employee("whitespace name", "synced", want={"first_name": clean}, FirstName=raw)

    # -- dates ------------------------------------------------------------------------------
    for day in ("2099-01-01", "2031-06-30", "2100-12-31", "2040-02-29", "9999-12-31"):
        c.employee(
            "future hire date", "dropped", "more than a year in the future", want={"current_hire_date": None}, HireDate=day
        )
    for day in ("1900-01-01", "1753-01-01", "0001-01-01"):
        c.employee(
            "placeholder hire date", "dropped", "a placeholder, not a date", want={"current_hire_date": None}, HireDate=day
        )

    # -- titles (the titles sync owns them) ------------------------------------------------
    for title in ("Foreman\x07", "T" * 1000, "Lead\x1b[0m", "Welder\u202e", "X" * 101, "Fore\u2028man", "Lead\u200bHand",
                  "Weld\U000e0041er"):  # fmt: skip
        c.employee("bad title", "title_rejected", "title:", want={"current_title_id": None}, udEmpTitle=title)

    # -- duplicate employee numbers: one error for the number, nothing sent ---------------
    for group in range(10):
        number = 7900 + group
        shapes = [{}, {}] if group < 6 else ([{}, {}, {}] if group < 8 else [{}, {"ActiveYN": "N", "TermDate": "2025-01-31"}])
        for i, extra in enumerate(shapes):
            c.employee("duplicate employee number", "duplicate", f"employee number {number} appears on {len(shapes)}",
                       emp=number, Email=f"dup.{number}.{i}@corpus-test.com", **extra)  # fmt: skip

    # -- departments and jobs ----------------------------------------------------------------
    for i, (code, desc, reason) in enumerate([
        (None, "No code", "without PRDept"), ("", "Blank code", "without PRDept"), ("  ", "Spaces", "without PRDept"),
        ("C1", "Bad\x07desc", "control character"), ("C2", "D" * 1000, "limit is 60"), ("C3", "Esc\x1b[2J", "control character"),
        ("D\x07", "Bell", "PRDept contains a control character (U+0007)"),
        ("D\x1b1", "Escape", "PRDept contains a control character (U+001B)"),
        ("D\r\n2", "Line break", "PRDept contains a control character (U+000D)"),
        ("D\u20283", "Separator", "PRDept contains a line or paragraph separator (U+2028)"),
        ("D\u200b4", "Zero width", "PRDept contains an invisible formatting character (U+200B)"),
        ("D\u31649", "Filler", "PRDept contains an invisible character (U+3164)"),
        ("D\u200f5", "RLM", "PRDept contains an invisible formatting character (U+200F)"),
        ("D\U000e00416", "Tag", "PRDept contains a Unicode tag character (U+E0041)"),
        ("D  7", "Two spaces", "has two spaces in a row"),
        ("D\t8", "Tab", "PRDept contains a control character (U+0009)"),
        ("D\xa09", "No-break space", "PRDept contains white space other than a plain space (U+00A0)"),
        ("C4", "Sep\u2028arator", "Description contains a line or paragraph separator (U+2028)"),
        ("C5", "Zero\u200bwidth", "Description contains an invisible formatting character (U+200B)"),
        ("C6", "Right\u200fmark", "Description contains an invisible formatting character (U+200F)"),
        ("C7", "Tag\U000e0041\U000e007fged", "Description contains a Unicode tag character (U+E0041)"),
        ("C8", "Bell\x07", "Description contains a control character (U+0007)"),
    ]):  # fmt: skip
        c.other("bPRDP", "bad department", reason, {"PRCo": 1, "PRDept": code, "Description": desc, "KeyID": 9000 + i})
    # A line break or tab inside a name is white space: one space, and the department syncs.
    for i, (code, desc, name) in enumerate(
        [("CZ1", "Line\r\nbreak", "CZ1 - Line break"), ("CZ2", "Tab\there", "CZ2 - Tab here")]
    ):
        c.other("bPRDP", "department name with line break", "", {"PRCo": 1, "PRDept": code, "Description": desc, "KeyID": 9050 + i},
                expect="synced", want={"name": name})  # fmt: skip
    for i, (job, desc, reason) in enumerate([
        (None, "No job", "without Job"), ("   ", "Blank job", "without Job"), ("CJ-1", "Job\x00x", "control character"),
        ("CJ-2", "J" * 1000, "limit is 60"), ("CJ-3", "Ok", "control character"), ("CJ-4", "Bidi\u202e", "control character"),
        ("J\x07", "Bell", "Job contains a control character (U+0007)"),
        ("J\x1b2", "Escape", "Job contains a control character (U+001B)"),
        ("J\r\n3", "Line break", "Job contains a control character (U+000D)"),
        ("J\u20284", "Separator", "Job contains a line or paragraph separator (U+2028)"),
        ("J\u200b5", "Zero width", "Job contains an invisible formatting character (U+200B)"),
        ("J\U000e00416", "Tag", "Job contains a Unicode tag character (U+E0041)"),
        ("J  7", "Two spaces", "has two spaces in a row"),
        ("CJ-5", "Sep\u2028arator", "Description contains a line or paragraph separator (U+2028)"),
        ("CJ-6", "Zero\u200bwidth", "Description contains an invisible formatting character (U+200B)"),
        ("CJ-7", "Ok", "ShipCity contains an invisible formatting character (U+200F)"),
        ("CJ-8", "Tag\U000e0041ged", "Description contains a Unicode tag character (U+E0041)"),
        ("CJ-9", "Esc\x1b[2J", "Description contains a control character (U+001B)"),
    ]):  # fmt: skip
        row = {"JCCo": 1, "Job": job, "Description": desc, "Contract": None, "JobStatus": 1, "ShipAddress": "1 Main St",
               "ShipCity": "Metairie", "ShipState": "LA", "ShipZip": "70001", "KeyID": 9100 + i}  # fmt: skip
        if job == "CJ-3":
            row["ShipCity"] = "Met\x07airie"
        if job == "CJ-7":
            row["ShipCity"] = "Met\u200fairie"
        c.other("bJCJM", "bad job", reason, row)
    for i, (job, desc, street, want) in enumerate([
        ("CJZ-1", "Line\r\nbreak", "1 Main St\r\nSuite 4", {"name": "CJZ-1 - Line break", "street": "1 Main St Suite 4"}),
        ("CJZ-2", "Tab\there", "2 Main St", {"name": "CJZ-2 - Tab here", "street": "2 Main St"}),
    ]):  # fmt: skip
        row = {"JCCo": 1, "Job": job, "Description": desc, "Contract": None, "JobStatus": 1, "ShipAddress": street,
               "ShipCity": "Metairie", "ShipState": "LA", "ShipZip": "70001", "KeyID": 9150 + i}  # fmt: skip
        c.other("bJCJM", "job name with line break", "", row, expect="synced", want=want)
    return c.entries


def render() -> str:
    """One row per line: small diffs when a case is added."""
    rows = [json.dumps(e, ensure_ascii=True, sort_keys=True) for e in build()]
    return "[\n" + ",\n".join(rows) + "\n]\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python tests/data/build_corpus.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(json.loads(text))} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
