"""services.oneroster_csv over CSV drops this test builds: OneRoster 1.1 and 1.2 headers,
zip and folder, bulk/delta/absent files and the awkward rows real drops carry (UTF-8
BOM, CRLF, quoted commas, blank status, ids with braces or colons, dateModified)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from services.oneroster_csv import OneRosterCSV, parse_user_ids, read_csv_text
from sync.roster_model import ACTIVE, TOBEDELETED
from utils.errors import SourceUnavailableError

pytestmark = pytest.mark.unit

MANIFEST_11 = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,{u}\nfile.classes,{c}\nfile.enrollments,{e}\nfile.orgs,absent\n"
MANIFEST_12 = MANIFEST_11.replace("1.1", "1.2") + "file.roles,{r}\n"

USERS_11 = (
    "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,"
    "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\r\n"
    'u-1,,,true,"sch-1,sch-2",student,ava.g,"{LDAP:ava},{SIS:1:2}",Ava,"Garcia, Jr.",,S1,ava@x.org,,,,"09,10",\r\n'
    "{U:2},active,2026-01-02T03:04:05Z,true,sch-1,teacher,t.lee,,Tom,Lee,,T2,tom@x.org,,,,,\r\n"
    "urn:sis:3,tobedeleted,2026-01-02T03:04:05Z,true,sch-1,student,gone,,Gone,Away,,S3,,,,,,\r\n"
    ",,,true,sch-1,student,nobody,,No,Id,,,,,,,,\r\n"
    "u-5,,,FALSE,sch-1,student,off,,Off,Line,,S5,,,,,,\r\n"
    "\r\n"
)
CLASSES_11 = (
    "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,"
    "termSourcedIds,subjects,subjectCodes,periods\r\n"
    '{cls:2026:A},,,"Math, Period 1",09,c-1,MATH-1,scheduled,Room 1,sch-1,"t1,t2",Math,,1\r\n'
)
ENROLLMENTS_11 = (
    "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\r\n"
    "e-1,,,{cls:2026:A},sch-1,u-1,student,false,,\r\n"
    "e-2,,,{cls:2026:A},sch-1,{U:2},teacher,true,,\r\n"
)
# 1.2: role and schools moved to roles.csv; ManageBac writes dateModified
USERS_12 = (
    "sourcedId,status,dateModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,"
    "sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,preferredGivenName,preferredMiddleName,"
    "preferredFamilyName,primaryOrgSourcedId,pronouns\n"
    "u-1,active,2026-02-03,true,ava.g,,Ava,Garcia,,S1,ava@x.org,,,,,,,,,,sch-1,\n"
    "u-2,,,true,tom,,Tom,Lee,,T2,tom@x.org,,,,,,,,,,sch-1,\n"
    "u-3,,,true,norole,,No,Role,,T3,,,,,,,,,,,,\n"
)
ROLES_12 = (
    "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId\n"
    "r-1,,,u-1,primary,student,,,sch-1,\n"
    "r-2,,,u-2,primary,teacher,,,sch-1,\n"
    "r-3,,,u-2,secondary,administrator,,,sch-2,\n"
)


def make_drop(tmp: Path, files: dict[str, str], *, as_zip: bool, bom: bool = False, folder: str = "") -> Path:
    def data(text: str) -> bytes:
        return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")

    tmp.mkdir(parents=True, exist_ok=True)
    if as_zip:
        path = tmp / "drop.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, text in files.items():
                z.writestr(f"{folder}{name}", data(text))
        return path
    path = tmp / "drop"
    (path / folder).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / folder / name).write_bytes(data(text))
    return path


@pytest.mark.parametrize("as_zip", [True, False])
@pytest.mark.parametrize("bom", [True, False])
def test_v11_bulk_drop_with_awkward_rows(tmp_path: Path, as_zip: bool, bom: bool) -> None:
    drop = make_drop(
        tmp_path,
        {"manifest.csv": MANIFEST_11.format(u="bulk", c="bulk", e="bulk"), "users.csv": USERS_11,
         "classes.csv": CLASSES_11, "enrollments.csv": ENROLLMENTS_11},
        as_zip=as_zip, bom=bom,
    )  # fmt: skip
    snap = OneRosterCSV(drop).read()
    assert snap.source == "oneroster-csv-1.1"
    assert (snap.users_full, snap.classes_full, snap.enrollments_full) == (True, True, True)
    assert set(snap.users) == {"u-1", "{U:2}", "urn:sis:3", "u-5"}
    ava = snap.users["u-1"]
    assert ava.status == ACTIVE  # blank status in a bulk file
    assert ava.family_name == "Garcia, Jr."  # quoted comma
    assert ava.orgs == {"sch-1", "sch-2"}  # quoted list
    assert ava.primary_role == "student" and ava.email == "ava@x.org"
    assert snap.users["{U:2}"].primary_role == "teacher"
    assert snap.users["urn:sis:3"].status == TOBEDELETED
    assert snap.users["u-5"].enabled is False  # "FALSE", any case
    assert [k for k, _ in snap.rejected] == ["users.csv row#4"]  # the row without sourcedId
    cls = snap.classes["{cls:2026:A}"]
    assert cls.title == "Math, Period 1" and cls.school == "sch-1" and cls.class_code == "MATH-1"
    assert {(e.user, e.class_id, e.role) for e in snap.enrollments.values()} == {
        ("u-1", "{cls:2026:A}", "student"),
        ("{U:2}", "{cls:2026:A}", "teacher"),
    }


def test_v12_roles_file_gives_roles_and_schools(tmp_path: Path) -> None:
    drop = make_drop(
        tmp_path,
        {"manifest.csv": MANIFEST_12.format(u="bulk", c="absent", e="absent", r="bulk"), "users.csv": USERS_12,
         "roles.csv": ROLES_12},
        as_zip=True, folder="export-2026/",
    )  # fmt: skip
    snap = OneRosterCSV(drop).read()
    assert snap.source == "oneroster-csv-1.2"
    assert snap.classes_full is None and snap.enrollments_full is None and not snap.classes
    u1, u2, u3 = snap.users["u-1"], snap.users["u-2"], snap.users["u-3"]
    assert u1.roles == (("student", "sch-1"),) and u1.date_last_modified == "2026-02-03"
    assert u2.primary_role == "teacher" and set(u2.roles or ()) == {("teacher", "sch-1"), ("administrator", "sch-2")}
    assert u3.roles == ()  # in the drop, no role: the sync rejects it rather than guessing


def test_v12_without_roles_file_leaves_roles_unknown(tmp_path: Path) -> None:
    drop = make_drop(
        tmp_path,
        {"manifest.csv": MANIFEST_12.format(u="delta", c="absent", e="absent", r="absent"), "users.csv": USERS_12},
        as_zip=False,
    )
    snap = OneRosterCSV(drop).read()
    assert snap.users_full is False  # a delta: absence means nothing
    assert snap.users["u-1"].roles is None  # unknown, not "no role": never a reason to deactivate


def test_delta_files_keep_status(tmp_path: Path) -> None:
    users = USERS_11.splitlines()[0] + "\nu-9,tobedeleted,2026-03-01T00:00:00Z,true,sch-1,student,x,,X,Y,,,,,,,,\n"
    drop = make_drop(
        tmp_path,
        {"manifest.csv": MANIFEST_11.format(u="delta", c="absent", e="delta"), "users.csv": users,
         "enrollments.csv": ENROLLMENTS_11.replace(",,,{cls", ",tobedeleted,2026-03-01,{cls", 1)},
        as_zip=True,
    )  # fmt: skip
    snap = OneRosterCSV(drop).read()
    assert snap.users["u-9"].status == TOBEDELETED
    assert snap.enrollments["e-1"].status == TOBEDELETED and snap.enrollments["e-2"].status == ACTIVE
    assert snap.is_delta


def test_missing_manifest_or_announced_file_is_an_incomplete_source(tmp_path: Path) -> None:
    no_manifest = make_drop(tmp_path / "a", {"users.csv": USERS_11}, as_zip=True)
    with pytest.raises(SourceUnavailableError, match="manifest"):
        OneRosterCSV(no_manifest).read()
    missing_file = make_drop(
        tmp_path / "b", {"manifest.csv": MANIFEST_11.format(u="bulk", c="bulk", e="bulk"), "users.csv": USERS_11}, as_zip=False
    )
    with pytest.raises(SourceUnavailableError, match=r"classes\.csv"):
        OneRosterCSV(missing_file).read()
    with pytest.raises(SourceUnavailableError):
        OneRosterCSV(tmp_path / "nowhere.zip").read()
    bad_mode = make_drop(tmp_path / "c", {"manifest.csv": MANIFEST_11.format(u="full", c="absent", e="absent")}, as_zip=True)
    with pytest.raises(SourceUnavailableError, match=r"file\.users"):
        OneRosterCSV(bad_mode).read()


def test_low_level_parsing() -> None:
    assert parse_user_ids("{LDAP:jdoe},{SIS:12:34}, {Bad}") == [
        {"type": "LDAP", "identifier": "jdoe"},
        {"type": "SIS", "identifier": "12:34"},
    ]
    rows = read_csv_text(b'\xef\xbb\xbf SourcedId ,Title\r\n{a:b},"x,\r\ny"\r\n', "t.csv")
    assert rows == [{"SourcedId": "{a:b}", "Title": "x,\r\ny"}]
    assert read_csv_text(io.BytesIO(b"").getvalue(), "empty.csv") == []
