"""OneRoster JSON (either version, REST or a CSV row read as JSON) -> the roster model.

The one conversion both roster adapters use: services/oneroster_api.py for the REST
answers and services/oneroster_csv.py for the rows of a CSV drop (shaped as the REST
JSON first). Raises ValueError for a record that cannot be used (no sourcedId);
``collect`` turns those into ``RosterSnapshot.rejected``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from sync.roster_model import ACTIVE, TOBEDELETED, RosterClass, RosterEnrollment, RosterSnapshot, RosterUser


def ref(value: Any) -> str | None:
    """A GUID reference's sourcedId (``{"sourcedId": ...}``) or a plain id string."""
    if isinstance(value, Mapping):
        value = value.get("sourcedId")
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def text(value: Any) -> str | None:
    if value is None:
        return None
    out = str(value).strip()
    return out or None


def flag(value: Any, default: bool = True) -> bool:
    """OneRoster booleans arrive as JSON booleans or as "true"/"false" strings (1.1)."""
    if isinstance(value, bool):
        return value
    t = text(value)
    if t is None:
        return default
    return t.lower() in ("true", "1", "yes", "y")


def status(value: Any) -> str:
    """``active`` or ``tobedeleted``. Blank (CSV bulk files leave it empty) is active;
    1.0's ``inactive`` is read as ``tobedeleted``."""
    t = (text(value) or ACTIVE).lower()
    if t in ("tobedeleted", "inactive", "deleted"):
        return TOBEDELETED
    return ACTIVE


def user_from_json(obj: Mapping[str, Any]) -> RosterUser:
    """A user of either version: 1.1 ``role`` + ``orgs[]``, 1.2 ``roles[]`` (+ ``primaryOrg``)."""
    sid = ref(obj.get("sourcedId"))
    if sid is None:
        raise ValueError("user without sourcedId")
    roles: list[tuple[str, str | None]] | None
    primary: str | None = None
    if isinstance(obj.get("roles"), list):
        roles = []
        for item in obj["roles"]:
            if not isinstance(item, Mapping):
                continue
            role = text(item.get("role"))
            if role is None:
                continue
            roles.append((role, ref(item.get("org"))))
            if primary is None and (text(item.get("roleType")) or "").lower() == "primary":
                primary = role
        if primary is None and roles:
            primary = roles[0][0]
        if roles and not any(org for _r, org in roles) and ref(obj.get("primaryOrg")):
            roles = [(r, ref(obj.get("primaryOrg"))) for r, _o in roles]
    elif text(obj.get("role")) is not None:
        primary = text(obj.get("role"))
        assert primary is not None
        listed = obj.get("orgs")
        orgs = [ref(o) for o in listed] if isinstance(listed, list) else []
        orgs = [o for o in orgs if o]
        roles = [(primary, o) for o in orgs] or [(primary, None)]
    else:
        roles = None
    return RosterUser(
        sourced_id=sid,
        status=status(obj.get("status")),
        enabled=flag(obj.get("enabledUser"), True),
        username=text(obj.get("username")),
        given_name=text(obj.get("givenName")),
        family_name=text(obj.get("familyName")),
        email=text(obj.get("email")),
        identifier=text(obj.get("identifier")),
        roles=tuple(roles) if roles is not None else None,
        primary_role=primary,
        date_last_modified=text(obj.get("dateLastModified")),
    )


def class_from_json(obj: Mapping[str, Any]) -> RosterClass:
    sid = ref(obj.get("sourcedId"))
    if sid is None:
        raise ValueError("class without sourcedId")
    return RosterClass(
        sourced_id=sid,
        status=status(obj.get("status")),
        title=text(obj.get("title")),
        class_code=text(obj.get("classCode")),
        school=ref(obj.get("school")),
        date_last_modified=text(obj.get("dateLastModified")),
    )


def enrollment_from_json(obj: Mapping[str, Any]) -> RosterEnrollment:
    sid = ref(obj.get("sourcedId"))
    if sid is None:
        raise ValueError("enrollment without sourcedId")
    # A district holds a million of these: the user, class, school and role they name
    # repeat (11 enrollments per user, 70 per class), so those strings are interned, one
    # copy each (docs/rosters.md, "Memory at district scale").
    return RosterEnrollment(
        sourced_id=sid,
        status=sys.intern(status(obj.get("status"))),
        user=_interned(ref(obj.get("user"))),
        class_id=_interned(ref(obj.get("class"))),
        school=_interned(ref(obj.get("school"))),
        role=_interned((text(obj.get("role")) or "").lower() or None),
        # dateLastModified is not kept for enrollments: nothing reads it (the delta is
        # the source's filter), and a million of them cost 80 MB
    )


def _interned(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def collect(items: list[Any], parse: Callable[[Mapping[str, Any]], Any], kind: str, snap: RosterSnapshot) -> dict[str, Any]:
    """Parse records into ``{sourcedId: record}``; unusable ones become ``snap.rejected``."""
    out: dict[str, Any] = {}
    for n, item in enumerate(items):
        try:
            if isinstance(item, ValueError):  # converted as its page arrived, and refused
                raise item
            rec = parse(item) if isinstance(item, Mapping) else item
        except ValueError as exc:
            snap.rejected.append((f"{kind}#{n + 1}", f"{kind} #{n + 1} ignored: {exc}"))
            continue
        out[rec.sourced_id] = rec
    return out
