"""OneRoster CSV adapter: a district's drop (a zip, or a folder) read as a ``RosterSource``.

The drop holds ``manifest.csv`` (``propertyName,value`` rows: ``manifest.version``,
``oneroster.version`` 1.0/1.1/1.2, and ``file.<name>`` = ``bulk`` | ``delta`` | ``absent``)
plus the data files it announces. Read here: users.csv, classes.csv, enrollments.csv and,
for 1.2, roles.csv (1.2 moved a user's role and schools out of users.csv into roles.csv:
``userSourcedId, roleType, role, orgSourcedId``). Sources: the 1EdTech CSV binding as
republished by vendors (ManageBac's 1.2 custom specification, D2L's and HMH's 1.1
manifest pages; docs/emulated-apis.md lists them).

What a file's mode means to the sync (``RosterSnapshot.*_full``): ``bulk`` is a complete
read (absence = gone), ``delta`` lists changes only (``status`` tells active or
tobedeleted), ``absent`` supplies nothing.

Written to survive real drops rather than the spec's happy path:
- UTF-8 with or without a BOM (Excel adds one), CRLF or LF line ends, quoted fields with
  commas or line breaks (``"org1,org2"``), header names matched case-insensitively and
  trimmed, columns in any order, extra or missing trailing columns;
- a blank ``status`` is ``active`` (bulk files must leave it blank; in a delta file we
  read blank as active too, an assumption);
- ids kept exactly as given (braces, colons, dashes), only surrounding spaces trimmed;
- ``userIds`` as ``{type:id},{type:id}``;
- ManageBac writes ``dateModified`` for ``dateLastModified``: both are accepted.

Errors: a missing or unreadable drop, manifest or announced file raises
SourceUnavailableError (nothing is deactivated); a row without sourcedId is rejected
with its line number and the rest of the file is used.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from services.oneroster_json import class_from_json, collect, enrollment_from_json, text, user_from_json
from sync.roster_model import RosterSnapshot
from utils.errors import SourceUnavailableError

SERVICE = "oneroster"
MODES = ("bulk", "delta", "absent")
_ALIASES = {"datemodified": "dateLastModified"}


def _canon(name: str) -> str:
    n = (name or "").replace("\ufeff", "").strip()
    return _ALIASES.get(n.lower(), n)


def read_csv_text(data: bytes, name: str) -> list[dict[str, str]]:
    """Rows of one CSV file as dicts keyed by trimmed header names (lower-cased keys
    are matched through ``field``)."""
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        decoded = data.decode("cp1252")  # Excel on Windows, when the drop is hand-made
    reader = csv.reader(io.StringIO(decoded, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    keys = [_canon(h) for h in header]
    rows = []
    for values in reader:
        if not values or all(not v.strip() for v in values):
            continue
        row = {k: v for k, v in zip(keys, values, strict=False) if k}
        rows.append(row)
    return rows


def field(row: Mapping[str, str], name: str) -> str | None:
    """A column's trimmed value (None when blank or missing), header case ignored."""
    if name in row:
        return text(row[name])
    lower = name.lower()
    for k, v in row.items():
        if k.lower() == lower:
            return text(v)
    return None


def split_list(value: str | None) -> list[str]:
    """A CSV list column (``"a,b"``) -> ``["a", "b"]``."""
    if not value:
        return []
    return [p.strip() for p in value.split(",") if p.strip()]


def parse_user_ids(value: str | None) -> list[dict[str, str]]:
    """``{LDAP:jdoe},{SIS:123}`` -> ``[{"type": "LDAP", "identifier": "jdoe"}, ...]``;
    the identifier keeps any further colons."""
    out = []
    for part in (value or "").split("}"):
        part = part.strip().lstrip(",").strip()
        if not part.startswith("{"):
            continue
        kind, _, ident = part[1:].partition(":")
        if ident.strip():
            out.append({"type": kind.strip(), "identifier": ident.strip()})
    return out


class _Drop:
    """Uniform access to a zip or a folder (files may sit in one top-level folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._names: dict[str, str] = {}
        if path.is_dir():
            for p in path.rglob("*.csv"):
                self._names.setdefault(p.name.lower(), str(p))
        elif path.is_file():
            try:
                self._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise SourceUnavailableError(f"oneroster csv: {path} is not a zip file", service=SERVICE) from exc
            for info in self._zip.infolist():
                if not info.is_dir():
                    self._names.setdefault(PurePosixPath(info.filename).name.lower(), info.filename)
        else:
            raise SourceUnavailableError(f"oneroster csv: {path} does not exist", service=SERVICE)

    def has(self, name: str) -> bool:
        return name.lower() in self._names

    def read(self, name: str) -> bytes:
        where = self._names.get(name.lower())
        if where is None:
            raise SourceUnavailableError(f"oneroster csv: {name} is missing from {self.path}", service=SERVICE)
        try:
            if self._zip is not None:
                return self._zip.read(where)
            return Path(where).read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise SourceUnavailableError(
                f"oneroster csv: could not read {name} from {self.path}: {exc}", service=SERVICE
            ) from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


class OneRosterCSV:
    """A ``RosterSource`` over a CSV drop; re-reads the drop on every ``read``."""

    supports_delta = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def manifest(self) -> dict[str, str]:
        drop = _Drop(self.path)
        try:
            return self._manifest(drop)
        finally:
            drop.close()

    def _manifest(self, drop: _Drop) -> dict[str, str]:
        if not drop.has("manifest.csv"):
            raise SourceUnavailableError(
                f"oneroster csv: no manifest.csv in {self.path} (a 1.1/1.2 drop must carry one)", service=SERVICE
            )
        props: dict[str, str] = {}
        for row in read_csv_text(drop.read("manifest.csv"), "manifest.csv"):
            name, value = field(row, "propertyName"), field(row, "value")
            if name:
                props[name] = (value or "").strip()
        return props

    def read(self, since: datetime | None = None, schools: Collection[str] = ()) -> RosterSnapshot:
        drop = _Drop(self.path)
        try:
            return self._read(drop)
        finally:
            drop.close()

    def _read(self, drop: _Drop) -> RosterSnapshot:
        props = self._manifest(drop)
        version = props.get("oneroster.version", "1.1")

        def mode(name: str) -> str:
            value = (props.get(f"file.{name}") or "absent").lower()
            if value not in MODES:
                raise SourceUnavailableError(
                    f"oneroster csv: manifest file.{name}={value!r} (expected bulk, delta or absent)", service=SERVICE
                )
            return value

        def rows(name: str) -> list[dict[str, str]]:
            return read_csv_text(drop.read(f"{name}.csv"), f"{name}.csv")

        def full(m: str) -> bool | None:
            return None if m == "absent" else m == "bulk"

        users_mode, classes_mode, enr_mode = mode("users"), mode("classes"), mode("enrollments")
        snap = RosterSnapshot(
            users_full=full(users_mode),
            classes_full=full(classes_mode),
            enrollments_full=full(enr_mode),
            source=f"oneroster-csv-{version}",
        )
        if users_mode != "absent":
            roles_by_user: dict[str, list[dict[str, Any]]] | None = None
            roles_mode = mode("roles") if "file.roles" in props else "absent"
            if roles_mode != "absent":
                roles_by_user = {}
                for r in rows("roles"):
                    uid = field(r, "userSourcedId")
                    if uid and (field(r, "status") or "active").lower() != "tobedeleted":
                        roles_by_user.setdefault(uid, []).append(
                            {"roleType": field(r, "roleType"), "role": field(r, "role"), "org": field(r, "orgSourcedId")}
                        )
            snap.users = collect(_numbered(rows("users"), _user_json(roles_by_user)), user_from_json, "users.csv row", snap)
        if classes_mode != "absent":
            snap.classes = collect(_numbered(rows("classes"), _class_json), class_from_json, "classes.csv row", snap)
        if enr_mode != "absent":
            snap.enrollments = collect(
                _numbered(rows("enrollments"), _enrollment_json), enrollment_from_json, "enrollments.csv row", snap
            )
        return snap


def _numbered(rows: list[dict[str, str]], convert: Callable[[Mapping[str, str]], dict[str, Any]]) -> list[dict[str, Any]]:
    return [convert(r) for r in rows]


def _user_json(roles_by_user: dict[str, list[dict[str, Any]]] | None) -> Callable[[Mapping[str, str]], dict[str, Any]]:
    def convert(row: Mapping[str, str]) -> dict[str, Any]:
        sid = field(row, "sourcedId")
        obj: dict[str, Any] = {
            "sourcedId": sid,
            "status": field(row, "status"),
            "dateLastModified": field(row, "dateLastModified"),
            "enabledUser": field(row, "enabledUser"),
            "username": field(row, "username"),
            "userIds": parse_user_ids(field(row, "userIds")),
            "givenName": field(row, "givenName"),
            "familyName": field(row, "familyName"),
            "email": field(row, "email"),
            "identifier": field(row, "identifier"),
        }
        if roles_by_user is not None:
            obj["roles"] = roles_by_user.get(sid or "", [])
            primary_org = field(row, "primaryOrgSourcedId")
            if primary_org:
                obj["primaryOrg"] = primary_org
        elif field(row, "role"):  # 1.1 (and 1.2 drops that keep the 1.1 columns)
            obj["role"] = field(row, "role")
            obj["orgs"] = split_list(field(row, "orgSourcedIds"))
        return obj

    return convert


def _class_json(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "sourcedId": field(row, "sourcedId"),
        "status": field(row, "status"),
        "dateLastModified": field(row, "dateLastModified"),
        "title": field(row, "title"),
        "classCode": field(row, "classCode"),
        "school": field(row, "schoolSourcedId"),
    }


def _enrollment_json(row: Mapping[str, str]) -> dict[str, Any]:
    return {
        "sourcedId": field(row, "sourcedId"),
        "status": field(row, "status"),
        "dateLastModified": field(row, "dateLastModified"),
        "user": field(row, "userSourcedId"),
        "class": field(row, "classSourcedId"),
        "school": field(row, "schoolSourcedId"),
        "role": field(row, "role"),
    }


def iter_rows(path: str | Path, name: str) -> Iterator[dict[str, str]]:
    """Rows of one file of a drop (operator tooling and tests)."""
    drop = _Drop(Path(path))
    try:
        yield from read_csv_text(drop.read(name), name)
    finally:
        drop.close()
