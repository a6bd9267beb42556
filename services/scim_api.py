"""SCIM 2.0 client (RFC 7643 resources, RFC 7644 protocol): implements ``ScimTarget``.

Users and Groups of any SCIM service provider, with a bearer token (RFC 7644 §2). What
it relies on, each from RFC 7644:

- list: ``GET /Users?startIndex=1&count=N`` ListResponse paging (§3.4.2.4); the walk
  continues while ``totalResults`` says more, whatever a short page suggests;
- lookup: ``filter=externalId eq "<value>"`` (§3.4.2.2), the value JSON-escaped;
- create: ``POST`` (§3.3); change: ``PATCH`` with a PatchOp message (§3.5.2), one
  request per resource with all its operations; membership by ``add`` on ``members``
  and ``remove`` with the path ``members[value eq "<id>"]`` (§3.5.2.2 example);
- deprovision: ``active=false`` by PATCH; ``DELETE`` (§3.6) only when the sync is
  configured with SCIM_DELETE_MODE=delete;
- ETags (§3.14): when ``/ServiceProviderConfig`` announces ``etag.supported``, writes
  carry ``If-Match`` with the version read; a 412 is a RecordError with status 412 that
  the sync answers by re-reading the resource once;
- Bulk (§3.7): when ``/ServiceProviderConfig`` announces ``bulk.supported`` (and
  SCIM_BULK is on), the same writes as operations of ``POST /Bulk`` requests, cut to its
  maxOperations and maxPayloadSize (``bulk_take``), without ``failOnErrors``; each
  operation's answer is mapped back to its write as a single request's would be
  (``match_bulk_results``); a lost answer makes every operation's outcome unknown
  (AmbiguousWriteError), which the sync settles per create by its externalId.

Why not scim2-client: version 0.13 speaks through httpx2 (another HTTP stack with its own
exception tree) and validates responses strictly against scim2-models, which real
providers often bend. Going through ``services.http.HttpClient`` keeps one retry policy,
one request counter (the ``requests.scim`` of the run summary) and one error mapping:
429 -> RateLimitedError, 5xx/timeouts -> RetriableError (AmbiguousWriteError for a POST
that may have been applied: the sync looks the externalId up before creating again),
401/403 -> FatalError, 409 -> ConflictError (uniqueness, e.g. userName), other 4xx on a
write -> RecordError. This module adds FatalError for malformed lists.

The sync speaks intents (``create_user``, ``update_user``, ``deactivate_user``,
``create_group``, ``change_members``, ``delete_group``: the ``ScimTarget`` port of
sync/ports.py) in flat fields (``userName``, ``givenName``, ``email``, ``role``, ...);
the request formats (the User resource, PatchOps, member filters, If-Match) live here
only, in ``ScimIntents``.
"""

from __future__ import annotations

import builtins
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import requests

from config.settings import Settings
from services.http import HttpClient, RateLimiter, RequestStats, parse_json
from sync.ports import ScimOutcome, ScimWrite
from utils.errors import (
    AmbiguousWriteError,
    ConfigurationError,
    ConflictError,
    FatalError,
    RateLimitedError,
    RecordError,
    RetriableError,
)

log = logging.getLogger("services.scim")

SERVICE = "scim"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCHEMAS = {"Users": [USER_SCHEMA], "Groups": [GROUP_SCHEMA]}
MAX_PAGES = 100_000
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_PAYLOAD_MARGIN = 0.98
"""Share of maxPayloadSize a Bulk request is cut to (the sizes are those of the
request body as sent, ``wire_size``; the margin covers a provider counting bytes
differently)."""
WIRE_ITEM_SEPARATOR = ", "


USERS, GROUPS = "Users", "Groups"
SLIM_USER = ("externalId", "userName", "displayName", "name", "emails", "active", "title", "roles")
SLIM_GROUP = ("externalId", "displayName")

# flat field -> SCIM attribute path (RFC 7643 §4.1); "role" depends on ROSTER_ROLE_ATTRIBUTE
USER_PATHS = {
    "userName": "userName",
    "displayName": "displayName",
    "givenName": "name.givenName",
    "familyName": "name.familyName",
    "active": "active",
    "externalId": "externalId",
}


def wire_size(value: Any) -> int:
    """The bytes ``value`` takes in a request body: ``HttpClient`` hands it to requests as
    ``json=``, which serialises it with ``json.dumps``'s defaults (non-ASCII characters as
    ``\\uXXXX`` escapes, six bytes for an ``é`` that UTF-8 writes in two, and
    WIRE_ITEM_SEPARATOR between the items of a list)."""
    return len(json.dumps(value, allow_nan=False).encode("ascii"))


def filter_eq(attribute: str, value: str) -> str:
    """``attribute eq "value"`` with the value escaped as a JSON string (RFC 7644 §3.4.2.2)."""
    return f"{attribute} eq {json.dumps(value, ensure_ascii=False)}"


# --------------------------------------------------------------------------------------
# request formats (pure; unit tested with literals)
# --------------------------------------------------------------------------------------
def scim_user_flat(row: Mapping[str, Any], role_attribute: str = "title") -> dict[str, Any]:
    """The comparable fields of a SCIM User."""
    raw_name = row.get("name")
    name: Mapping[str, Any] = raw_name if isinstance(raw_name, Mapping) else {}
    emails = [e for e in _items(row.get("emails")) if isinstance(e, Mapping)]
    primary = next((e for e in emails if e.get("primary")), emails[0] if emails else None)
    flat = {
        "userName": row.get("userName"),
        "displayName": row.get("displayName"),
        "givenName": name.get("givenName"),
        "familyName": name.get("familyName"),
        "email": primary.get("value") if primary else None,
        "active": row.get("active"),
        "externalId": row.get("externalId"),
    }
    if role_attribute == "title":
        flat["role"] = row.get("title")
    elif role_attribute == "roles":
        roles = [r for r in _items(row.get("roles")) if isinstance(r, Mapping)]
        first = next((r for r in roles if r.get("primary")), roles[0] if roles else None)
        flat["role"] = first.get("value") if first else None
    return flat


def user_ops(changes: Mapping[str, Any], role_attribute: str = "title") -> list[dict[str, Any]]:
    """PatchOp operations (RFC 7644 §3.5.2.3 replace) for changed flat fields."""
    ops: list[dict[str, Any]] = []
    for name in sorted(changes):
        value = changes[name]
        if name == "email":
            ops.append({"op": "replace", "path": "emails", "value": [{"value": value, "type": "work", "primary": True}]})
        elif name == "role":
            if role_attribute == "title":
                ops.append({"op": "replace", "path": "title", "value": value})
            elif role_attribute == "roles":
                ops.append({"op": "replace", "path": "roles", "value": [{"value": value, "primary": True}]})
        else:
            ops.append({"op": "replace", "path": USER_PATHS[name], "value": value})
    return ops


def user_create_payload(flat: Mapping[str, Any], role_attribute: str = "title") -> dict[str, Any]:
    """A SCIM User for POST from the flat desired record (None fields left out)."""
    payload: dict[str, Any] = {k: flat[k] for k in ("userName", "displayName", "externalId", "active") if flat.get(k) is not None}
    name = {k: flat[k] for k in ("givenName", "familyName") if flat.get(k) is not None}
    if name:
        payload["name"] = name
    if flat.get("email"):
        payload["emails"] = [{"value": flat["email"], "type": "work", "primary": True}]
    if flat.get("role"):
        if role_attribute == "title":
            payload["title"] = flat["role"]
        elif role_attribute == "roles":
            payload["roles"] = [{"value": flat["role"], "primary": True}]
    return payload


def member_ids(row: Mapping[str, Any]) -> set[str]:
    """The SCIM ids of a Group's members (interned: see ``ScimIntents.slim``)."""
    return {sys.intern(str(m["value"])) for m in _items(row.get("members")) if isinstance(m, Mapping) and m.get("value")}


def member_ops(add: Iterable[str], remove: Iterable[str]) -> list[dict[str, Any]]:
    """Membership PatchOps: one ``add`` with every new member, one ``remove`` per leaver
    with a value filter path (RFC 7644 §3.5.2.1/§3.5.2.2)."""
    ops: list[dict[str, Any]] = []
    adds = sorted(add)
    if adds:
        ops.append({"op": "add", "path": "members", "value": [{"value": i} for i in adds]})
    for i in sorted(remove):
        ops.append({"op": "remove", "path": f'members[value eq "{_escape(i)}"]'})
    return ops


def _items(value: Any) -> builtins.list[Any]:
    """A multi-valued SCIM attribute as a list (a provider's odd value is no value)."""
    return value if isinstance(value, list) else []


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def bulk_status(value: Any) -> int:
    """An operation's status in a BulkResponse: RFC 7644 section 3.7.3 shows a string
    ("201"); some providers send a number or the draft's ``{"code": ...}``."""
    if isinstance(value, Mapping):
        value = value.get("code")
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def bulk_error(status: int, method: str, response: Any) -> Exception:
    """The error of one failed operation of a Bulk request, mapped as ``services.http``
    maps a single request's answer."""
    detail = response.get("detail") if isinstance(response, Mapping) else None
    message = f"scim: bulk {method} answered {status}" + (f": {detail}" if detail else "")
    body = dict(response) if isinstance(response, Mapping) else None
    if status == 409:
        return ConflictError(message, service=SERVICE, status=status, body=body)
    if status == 429:
        return RateLimitedError(message, service=SERVICE, status=status)
    if status in (401, 403):
        return FatalError(message, service=SERVICE, status=status)
    if status >= 500 or status == 0:
        if method == "POST":
            # the provider finished with the request (it answered): a read by key tells
            return AmbiguousWriteError(message, service=SERVICE, status=status, settled=True)
        return RetriableError(message, service=SERVICE, status=status)
    return RecordError(message, service=SERVICE, status=status, body=body)


# --------------------------------------------------------------------------------------
# intents over the resource verbs
# --------------------------------------------------------------------------------------
class ScimIntents:
    """The ``ScimTarget`` intents, written once over the resource verbs a subclass
    provides (``list``, ``get``, ``find``, ``create``, ``patch``, ``delete``, ``etags``,
    and for batches ``service_provider_config`` and ``post_bulk``): ``ScimAPI`` over
    HTTP, the tests' in-memory fake over a dict, so both translate an intent (and a batch
    of them: its limits, its cut, the reading of its answer) into the same requests."""

    role_attribute: str = "title"
    """Where the flat ``role`` goes: ``title``, ``roles`` (multi-valued) or ``none``."""

    @property
    def etags(self) -> bool:
        """Whether writes carry If-Match (the provider announced ETag support)."""
        return False

    # the verbs (ScimAPI implements them over HTTP)
    def list(self, resource: str) -> builtins.list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, resource: str, resource_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def find(self, resource: str, attribute: str, value: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def create(self, resource: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def patch(
        self, resource: str, resource_id: str, operations: Sequence[Mapping[str, Any]], etag: str | None = None
    ) -> dict[str, Any] | None:
        raise NotImplementedError

    def delete(self, resource: str, resource_id: str, etag: str | None = None) -> None:
        raise NotImplementedError

    def read_all(self, resource: str) -> Iterator[dict[str, Any]]:
        """Every resource of a type, one at a time (``ScimAPI``: page by page)."""
        yield from self.list(resource)

    # reading in the sync's terms
    def user_fields(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return scim_user_flat(row, self.role_attribute)

    def slim(self, resource: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """What the sync keeps of a resource read: its id, externalId and version, and
        for a User what ``user_fields`` reads; a Group's members go to ``member_ids``
        (a district's groups hold a million member objects). Ids are interned: the
        same user id in a group's members and in the Users is one string."""
        keep = SLIM_USER if resource == USERS else SLIM_GROUP
        out = {k: row[k] for k in keep if k in row}
        out["id"] = sys.intern(str(row["id"]))
        meta = row.get("meta")
        version = meta.get("version") if isinstance(meta, Mapping) else None
        if version:
            out["meta"] = {"version": version}
        return out

    def member_ids(self, row: Mapping[str, Any]) -> set[str]:
        return member_ids(row)

    # the intents
    def create_user(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """POST a User made from flat fields; returns the created resource."""
        return self.create(USERS, user_create_payload(fields, self.role_attribute))

    def update_user(self, row: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """PATCH the flat ``changes`` onto the User ``row`` (If-Match its version)."""
        self.patch(USERS, str(row["id"]), user_ops(changes, self.role_attribute), self._etag(row))

    def deactivate_user(self, row: Mapping[str, Any], *, delete: bool = False) -> None:
        """``active=false`` by PATCH, or DELETE when ``delete`` (SCIM_DELETE_MODE=delete)."""
        if delete:
            self.delete(USERS, str(row["id"]), self._etag(row))
        else:
            self.update_user(row, {"active": False})

    def create_group(self, fields: Mapping[str, Any], members: Iterable[str]) -> dict[str, Any]:
        """POST a Group (``displayName``, ``externalId``) with these member ids."""
        return self.create(GROUPS, {**fields, "members": [{"value": i} for i in sorted(members)]})

    def change_members(
        self,
        row: Mapping[str, Any],
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        display_name: str | None = None,
    ) -> None:
        """One PATCH of the Group ``row``: a new displayName (when given), the members to
        add and those to remove."""
        ops = [{"op": "replace", "path": "displayName", "value": display_name}] if display_name is not None else []
        self.patch(GROUPS, str(row["id"]), ops + member_ops(add, remove), self._etag(row))

    def delete_group(self, row: Mapping[str, Any]) -> None:
        """DELETE the Group ``row`` (SCIM_DELETE_MODE=delete)."""
        self.delete(GROUPS, str(row["id"]), self._etag(row))

    def _etag(self, row: Mapping[str, Any]) -> str | None:
        if not self.etags:
            return None
        meta = row.get("meta")
        return meta.get("version") if isinstance(meta, Mapping) else None

    # batches (SCIM Bulk, RFC 7644 section 3.7)
    bulk_enabled: bool = True
    """SCIM_BULK: off, every change is one request whatever the provider announces."""

    def service_provider_config(self) -> dict[str, Any]:
        """The provider's ``/ServiceProviderConfig`` (RFC 7643 section 5); nothing
        announced by default."""
        return {}

    def post_bulk(self, body: Mapping[str, Any]) -> Any:
        """The verb of a batch: ``POST /Bulk`` with this BulkRequest; returns the
        BulkResponse, raises as a single POST's answer is mapped (services.http)."""
        raise NotImplementedError

    def bulk_limits(self) -> tuple[int, int] | None:
        """(maxOperations, maxPayloadSize) when the provider announces ``bulk.supported``
        and SCIM_BULK is on; None otherwise (one request per change)."""
        if not self.bulk_enabled:
            return None
        bulk = self.service_provider_config().get("bulk")
        if not isinstance(bulk, dict) or not bulk.get("supported"):
            return None
        try:
            ops, size = int(bulk.get("maxOperations") or 0), int(bulk.get("maxPayloadSize") or 0)
        except (TypeError, ValueError):
            return None
        return (ops, size) if ops > 0 and size > 0 else None

    def bulk_max_operations(self) -> int | None:
        limits = self.bulk_limits()
        return limits[0] if limits else None

    def bulk_take(self, writes: Sequence[ScimWrite]) -> int:
        """How many of ``writes``, from the first, fit in one Bulk request: at most
        maxOperations, and the request body as sent (``wire_size``: references already
        replaced by ids, non-ASCII text as the escapes that go out) within the margin of
        maxPayloadSize (at least one: an oversized one goes alone and its 413 refuses
        that record only)."""
        limits = self.bulk_limits()
        if limits is None:
            return 1
        max_ops, max_bytes = limits
        budget = int(max_bytes * BULK_PAYLOAD_MARGIN)
        used = wire_size({"schemas": [BULK_REQUEST], "Operations": []})
        taken = 0
        for w in writes[:max_ops]:
            used += wire_size(self.bulk_operation(w)) + (len(WIRE_ITEM_SEPARATOR) if taken else 0)
            if taken and used > budget:
                break
            taken += 1
        return taken

    def send_batch(self, writes: Sequence[ScimWrite]) -> builtins.list[ScimOutcome]:
        """POST /Bulk with these writes. ``failOnErrors`` is left out on purpose: the
        records are independent, and RFC 7644 section 3.7 then has the provider "continue
        performing as many changes as possible", so every operation gets its own answer
        (with failOnErrors the ones after the limit get none and would be sent again)."""
        if self.bulk_limits() is None:
            refused = RetriableError("scim: Bulk not announced, off, or refused earlier in this run", service=SERVICE)
            return [ScimOutcome(w.ref, 0, error=refused) for w in writes]
        ops = [self.bulk_operation(w) for w in writes]
        try:
            answer = self.post_bulk({"schemas": [BULK_REQUEST], "Operations": ops})
        except AmbiguousWriteError as exc:
            # the whole response was lost: every operation's outcome is unknown
            lost = f"{exc.message} (bulk response lost: this operation may or may not have been applied)"
            return [
                ScimOutcome(w.ref, 0, error=AmbiguousWriteError(lost, service=SERVICE, status=exc.status, settled=exc.settled))
                for w in writes
            ]
        except (RetriableError, RecordError, FatalError) as exc:
            if isinstance(exc, FatalError) and exc.status in (401, 403):
                raise
            if exc.status in (404, 405, 413, 501) or isinstance(exc, FatalError):
                # the provider refused Bulk itself: one request per change from now on
                log.warning("SCIM Bulk refused (%s); sending one request per change", exc.message)
                self.bulk_enabled = False
                exc = RetriableError(f"bulk request refused: {exc.message}", service=SERVICE, status=exc.status)
            return [ScimOutcome(w.ref, 0, error=exc) for w in writes]
        results = answer.get("Operations") if isinstance(answer, dict) else None
        return match_bulk_results(writes, ops, results if isinstance(results, list) else [])

    def bulk_operation(self, w: ScimWrite) -> dict[str, Any]:
        """One ``Operations`` entry (method, path, bulkId, version, data) for an intent,
        the same formats as the single requests. Every operation carries ``bulkId`` (its
        ``ref``): required for POST, and how the response is matched to the write."""
        op: dict[str, Any] = {"bulkId": w.ref}
        row = w.row or {}
        rid = _seg(str(row.get("id")))
        if w.intent == "create_user":
            op.update(
                method="POST",
                path=f"/{USERS}",
                data={"schemas": SCHEMAS[USERS], **user_create_payload(w.fields, self.role_attribute)},
            )
        elif w.intent == "create_group":
            members = [{"value": i} for i in sorted(w.add)]
            op.update(method="POST", path=f"/{GROUPS}", data={"schemas": SCHEMAS[GROUPS], **w.fields, "members": members})
        elif w.intent in ("update_user", "deactivate_user"):
            changes = {"active": False} if w.intent == "deactivate_user" else w.fields
            op.update(
                method="PATCH",
                path=f"/{USERS}/{rid}",
                data={"schemas": [PATCH_OP], "Operations": user_ops(changes, self.role_attribute)},
            )
        elif w.intent == "change_members":
            ops = [{"op": "replace", "path": "displayName", "value": w.display_name}] if w.display_name is not None else []
            op.update(
                method="PATCH",
                path=f"/{GROUPS}/{rid}",
                data={"schemas": [PATCH_OP], "Operations": ops + member_ops(w.add, w.remove)},
            )
        elif w.intent in ("delete_user", "delete_group"):
            op.update(method="DELETE", path=f"/{USERS if w.intent == 'delete_user' else GROUPS}/{rid}")
        else:
            raise ValueError(f"unknown SCIM intent {w.intent!r}")
        version = self._etag(row) if row else None
        if version:
            op["version"] = version  # REQUIRED with ETags for PATCH/PUT/DELETE (RFC 7644 section 3.7)
        return op


class ScimAPI(ScimIntents):
    """SCIM Users/Groups over an ``HttpClient`` configured for the provider."""

    def __init__(self, http: HttpClient, *, page_size: int = 100, role_attribute: str = "title", bulk: bool = True) -> None:
        self.http = http
        self.page_size = page_size
        self.role_attribute = role_attribute
        self.bulk_enabled = bulk
        self._config: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.bulk_requests = 0
        self.bulk_operations = 0

    # -- discovery ----------------------------------------------------------------
    def service_provider_config(self) -> dict[str, Any]:
        """``/ServiceProviderConfig`` (read once; an unreadable one counts as 'nothing
        announced', since RFC 7644 §4 makes it mandatory but some providers omit it)."""
        with self._lock:
            if self._config is None:
                try:
                    body = self.http.request_json("GET", "/ServiceProviderConfig")
                except FatalError as exc:
                    if exc.status in (401, 403):
                        raise
                    log.warning("SCIM ServiceProviderConfig unreadable (%s); assuming no ETag support", exc.message)
                    body = {}
                self._config = body if isinstance(body, dict) else {}
            return self._config

    @property
    def etags(self) -> bool:
        etag = self.service_provider_config().get("etag")
        return bool(isinstance(etag, dict) and etag.get("supported"))

    # -- batches ------------------------------------------------------------------
    def post_bulk(self, body: Mapping[str, Any]) -> Any:
        with self._lock:
            self.bulk_requests += 1
            self.bulk_operations += len(body.get("Operations") or ())
        resp = self.http.request("POST", "/Bulk", json=body)
        return parse_json(resp) if resp.content else {}

    # -- reads --------------------------------------------------------------------
    def list(self, resource: str) -> list[dict[str, Any]]:
        return self._search(resource, {})

    def find(self, resource: str, attribute: str, value: str) -> dict[str, Any] | None:
        found = self._search(resource, {"filter": filter_eq(attribute, value)})
        if len(found) > 1:
            log.warning("SCIM %s: %d resources match %s; using the first", resource, len(found), attribute)
        return found[0] if found else None

    def get(self, resource: str, resource_id: str) -> dict[str, Any]:
        resp = self.http.request("GET", f"/{resource}/{_seg(resource_id)}")
        return _with_version(parse_json(resp), resp)

    def read_all(self, resource: str) -> Iterator[dict[str, Any]]:
        """Every resource of a type, page by page (a resource repeated by offset paging
        once): the caller keeps what it needs of each, never every page at once."""
        seen: set[str] = set()
        for item in self._iter_search(resource, {}):
            rid = str(item["id"])
            if rid not in seen:
                seen.add(rid)
                yield item

    def _search(self, resource: str, params: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in self._iter_search(resource, params):
            out[str(item["id"])] = item
        return list(out.values())

    def _iter_search(self, resource: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        start = 1
        for _ in range(MAX_PAGES):
            body = self.http.request_json("GET", f"/{resource}", params={**params, "startIndex": start, "count": self.page_size})
            if not isinstance(body, dict):
                raise FatalError(f"scim: malformed {resource} list (not an object)", service=SERVICE)
            items = body.get("Resources") or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise FatalError(f"scim: malformed {resource} list (Resources is not a list of objects)", service=SERVICE)
            for item in items:
                if item.get("id") is not None:
                    yield item
            total = body.get("totalResults")
            if not isinstance(total, int):
                raise FatalError(f"scim: {resource} list without totalResults", service=SERVICE)
            start += len(items)
            if start - 1 >= total:
                break
            if not items:
                raise FatalError(
                    f"scim: {resource} list returned an empty page at startIndex {start} while totalResults is {total}",
                    service=SERVICE,
                )
        else:
            raise FatalError(f"scim: {resource} list has more than {MAX_PAGES} pages", service=SERVICE)

    # -- writes -------------------------------------------------------------------
    def create(self, resource: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = {"schemas": SCHEMAS.get(resource, []), **payload}
        resp = self.http.request("POST", f"/{resource}", json=body)
        created = parse_json(resp) if resp.content else {}
        if not isinstance(created, dict) or not created.get("id"):
            raise FatalError(f"scim: POST /{resource} answered without an id", service=SERVICE)
        return _with_version(created, resp)

    def patch(
        self, resource: str, resource_id: str, operations: Sequence[Mapping[str, Any]], etag: str | None = None
    ) -> dict[str, Any] | None:
        headers = {"If-Match": etag} if etag else None
        body = {"schemas": [PATCH_OP], "Operations": [dict(op) for op in operations]}
        resp = self.http.request("PATCH", f"/{resource}/{_seg(resource_id)}", json=body, headers=headers)
        if resp.status_code == 204 or not resp.content:
            return None
        data = parse_json(resp)
        return _with_version(data, resp) if isinstance(data, dict) else None

    def delete(self, resource: str, resource_id: str, etag: str | None = None) -> None:
        headers = {"If-Match": etag} if etag else None
        self.http.request("DELETE", f"/{resource}/{_seg(resource_id)}", headers=headers, expect_json=False)


def match_bulk_results(
    writes: Sequence[ScimWrite], ops: Sequence[Mapping[str, Any]], results: Sequence[Any]
) -> builtins.list[ScimOutcome]:
    """One outcome per write from a BulkResponse's ``Operations``: matched by bulkId, then
    (a provider that echoes no bulkId for PATCH or DELETE) by location, then in order. An
    operation the response does not mention was not reported: settled (the provider
    answered), so a create is looked up by key before it is sent again."""
    by_ref: dict[str, Mapping[str, Any]] = {}
    loose: builtins.list[Mapping[str, Any]] = []
    for r in results:
        if not isinstance(r, Mapping):
            continue
        ref = r.get("bulkId")
        if isinstance(ref, str) and ref not in by_ref:
            by_ref[ref] = r
        else:
            loose.append(r)
    by_location = {str(r.get("location")).rstrip("/").rsplit("/", 1)[-1]: r for r in loose if r.get("location")}
    out: builtins.list[ScimOutcome] = []
    for w, op in zip(writes, ops, strict=True):
        r = by_ref.get(w.ref)
        if r is None and w.row is not None:
            r = by_location.get(str(w.row.get("id")))
        if r is None:
            out.append(
                ScimOutcome(
                    w.ref,
                    0,
                    error=AmbiguousWriteError(
                        f"scim: the bulk response has no result for {op['method']} {op['path']}",
                        service=SERVICE,
                        settled=True,
                    ),
                )
            )
            continue
        status = bulk_status(r.get("status"))
        if 200 <= status < 300:
            rid = (w.row or {}).get("id")
            location = r.get("location")
            if op["method"] == "POST" or rid is None:
                rid = str(location).rstrip("/").rsplit("/", 1)[-1] if location else None
                response = r.get("response")
                if isinstance(response, Mapping) and response.get("id"):
                    rid = response["id"]
            if not rid:
                out.append(
                    ScimOutcome(
                        w.ref, status, error=FatalError("scim: a bulk POST succeeded without a location", service=SERVICE)
                    )
                )
                continue
            out.append(ScimOutcome(w.ref, status, id=str(rid)))
        else:
            out.append(ScimOutcome(w.ref, status, error=bulk_error(status, str(op["method"]), r.get("response"))))
    return out


def _with_version(data: Any, resp: requests.Response) -> dict[str, Any]:
    """Keep the ETag header as meta.version when the body lacks it (RFC 7644 §3.14)."""
    if not isinstance(data, dict):
        raise FatalError("scim: malformed resource (not an object)", service=SERVICE)
    etag = resp.headers.get("ETag")
    if etag:
        meta = data.setdefault("meta", {})
        if isinstance(meta, dict) and not meta.get("version"):
            meta["version"] = etag
    return data


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def scim_limiter(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
) -> RateLimiter:
    """SCIM_RATE_LIMIT_PER_SECOND as a limiter (a second's worth of burst)."""
    rate = settings.scim_rate_limit_per_second
    return RateLimiter(rate, burst=max(1, int(rate)), clock=clock, sleep=sleep)


def build_scim(
    settings: Settings,
    stats: RequestStats,
    session: requests.Session | None = None,
    *,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    breaker: Any = None,
) -> ScimAPI:
    """A ScimAPI from settings (SCIM_URL, SCIM_TOKEN, SCIM_*)."""
    token = settings.scim_token.get_secret_value() if settings.scim_token else ""
    if not settings.scim_url or not token:
        raise ConfigurationError("SCIM_URL and SCIM_TOKEN are required for the rosters sync")
    http = HttpClient(
        SERVICE,
        settings.scim_url,
        session or requests.Session(),
        stats=stats,
        limiter=limiter or scim_limiter(settings, clock=clock, sleep=sleep),
        timeout=settings.scim_timeout_seconds,
        max_attempts=settings.http_max_attempts,
        max_retry_seconds=settings.http_max_retry_seconds,
        default_headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/scim+json, application/json",
            "Content-Type": "application/scim+json",
        },
        sleep=sleep,
        clock=clock,
        breaker=breaker,
        secrets=[token],
    )
    return ScimAPI(
        http, page_size=settings.scim_page_size, role_attribute=settings.roster_role_attribute, bulk=bool(settings.scim_bulk)
    )
