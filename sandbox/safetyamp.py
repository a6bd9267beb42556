"""SafetyAmp REST API emulator (Flask), as documented by SafetyAmp and as IIUS uses it.

Why so strict: the real API is only partly documented (docs/emulated-apis.md, "SafetyAmp"), and the
daemon must be proven against everything that *is* known before it meets production:
the four required headers, 0-based ``page``/``limit`` paging, the ``{"data": ...}``
envelope, ``YYYY-mm-dd H:i:s`` UTC timestamps, a site-cluster tree, and Laravel-style 422
bodies for validation and uniqueness (email, mobile phone, emp_id, external_code, code).
Where the vendor documents nothing, the behaviour is a marked assumption, listed in
docs/emulated-apis.md; most of them follow Laravel's defaults, which the 422 body shape
betrays (e.g. TrimStrings / ConvertEmptyStringsToNull, case-insensitive uniqueness).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Response

from sandbox.store import Store, UniqueViolation
from sandbox.wsgi import bearer_token, json_response

SERVICE = "safetyamp"

COLLECTIONS: dict[str, set[str]] = {
    # collection -> allowed methods on the item URL (list URL: GET, and POST if "POST")
    "users": {"POST", "PATCH"},
    "sites": {"POST", "PUT"},
    "site_clusters": {"POST", "PATCH", "PUT"},
    "user_titles": {"POST"},
    "roles": set(),
    "asset_types": {"POST"},
    "assets": {"POST", "PUT"},
}

DEFAULT_LIMIT = 25  # SA-docs
MAX_LIMIT = 1000  # Assumption: larger limits are silently capped, as many Laravel APIs do.
# Query parameters that are never treated as equality filters (Assumption).
RESERVED_PARAMS = frozenset({"page", "limit", "sort", "order", "include", "with", "per_page"})
# Server-managed fields a client cannot set (Assumption: Laravel $guarded-style).
SERVER_FIELDS = frozenset({"id", "created_at", "updated_at", "deleted_at", "depth", "children"})

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
BARE_LIBRARY_AGENT = re.compile(
    r"^(python-requests|python-urllib\d*|python-httpx|aiohttp|curl|wget|okhttp|go-http-client"
    r"|java|axios|node-fetch|undici|libwww-perl|postmanruntime)(/[\w.\-]*)?$",
    re.IGNORECASE,
)


def now_text() -> str:
    """Current time in SafetyAmp's documented format (``YYYY-mm-dd H:i:s``, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _message(status: int, message: str) -> Response:
    return json_response({"message": message}, status)


class SafetyAmpErrors:
    """SafetyAmp's 429/5xx bodies (fault injection)."""

    def rate_limited(self, retry_after: str) -> Response:
        """Laravel's throttle middleware answer (Assumption: SafetyAmp is Laravel)."""
        return json_response(
            {"message": "Too Many Attempts."},
            429,
            {"Retry-After": retry_after, "X-RateLimit-Remaining": "0"},
        )

    def server_error(self, status: int) -> Response:
        """500/503 in Laravel's JSON; 502 as the HTML page a gateway (nginx) produces."""
        if status == 502:
            html = (
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return Response(html, status=502, content_type="text/html")
        text = "Service Unavailable" if status == 503 else "Server Error"
        return _message(status, text)


class ValidationErrors:
    """Collects Laravel validation messages in rule order and renders the 422 body."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        """Record one message for ``field``."""
        self.errors.setdefault(field, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def response(self) -> Response:
        """Laravel's ``ValidationException`` JSON: first message + "(and N more errors)"."""
        messages = [m for field in self.errors.values() for m in field]
        summary = messages[0]
        extra = len(messages) - 1
        if extra:
            summary += f" (and {extra} more error{'s' if extra > 1 else ''})"
        return json_response({"message": summary, "errors": self.errors}, 422)


def _attr(field: str) -> str:
    """Laravel's attribute name in messages: ``mobile_phone`` -> ``mobile phone``."""
    return field.replace("_", " ")


def _clean_input(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Laravel's default TrimStrings + ConvertEmptyStringsToNull middleware (Assumption)."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key in SERVER_FIELDS:
            continue
        if isinstance(value, str):
            value = value.strip() or None
        out[key] = value
    return out


class _Validator:
    """Per-collection rules; each check appends Laravel-worded messages."""

    def __init__(self, store: Store, data: Mapping[str, Any], rid: int | None) -> None:
        self.store = store
        self.data = data
        self.rid = rid
        self.errors = ValidationErrors()

    def present(self, field: str) -> bool:
        return self.data.get(field) is not None

    def required(self, field: str) -> bool:
        if not self.present(field):
            self.errors.add(field, f"The {_attr(field)} field is required.")
            return False
        return True

    def string(self, field: str, max_len: int = 255, *, strict: bool = True) -> None:
        """Laravel ``string|max:N``; ``strict=False`` lets numbers through (codes, ids)."""
        value = self.data.get(field)
        if value is None:
            return
        if not isinstance(value, str):
            if strict:
                self.errors.add(field, f"The {_attr(field)} field must be a string.")
        elif len(value) > max_len:
            self.errors.add(field, f"The {_attr(field)} field must not be greater than {max_len} characters.")

    def email(self, field: str) -> None:
        value = self.data.get(field)
        if isinstance(value, str) and not EMAIL.match(value):
            self.errors.add(field, f"The {_attr(field)} field must be a valid email address.")

    def e164(self, field: str) -> None:
        value = self.data.get(field)
        if value is not None and not (isinstance(value, str) and E164.match(value)):
            self.errors.add(field, f"The {_attr(field)} field format is invalid.")

    def flag(self, field: str) -> None:
        value = self.data.get(field)
        if value is not None and value not in (0, 1, "0", "1", True, False):
            self.errors.add(field, f"The selected {_attr(field)} is invalid.")

    def exists(self, field: str, collection: str, value: Any = None) -> None:
        """Laravel ``exists``: the id must name an object of ``collection``."""
        value = self.data.get(field) if value is None else value
        if value is None:
            return
        try:
            rid = int(value)
        except (TypeError, ValueError):
            rid = -1
        if isinstance(value, bool) or self.store.get(SERVICE, collection, rid) is None:
            self.errors.add(field, f"The selected {_attr(field)} is invalid.")

    def unique(self, field: str, collection: str) -> None:
        """Laravel ``unique`` (an indexed probe; the object's own value does not count)."""
        value = self.data.get(field)
        if value is None:
            return
        rid = self.store.rid_by_unique(SERVICE, collection, field, value)
        if rid is not None and rid != self.rid:
            self.errors.add(field, f"The {_attr(field)} has already been taken.")


def _validate_users(v: _Validator) -> None:
    for field in ("first_name", "last_name"):
        if v.required(field):
            v.string(field)
    v.string("middle_name")
    if v.required("email"):
        v.string("email")
        v.email("email")
        v.unique("email", "users")
    v.string("emp_id", 255, strict=False)
    v.unique("emp_id", "users")
    v.e164("mobile_phone")
    v.unique("mobile_phone", "users")
    v.e164("work_phone")
    v.flag("system_access")
    v.flag("text_opt_out")
    # Assumption: references are checked like Laravel "exists" rules.
    v.exists("home_site_id", "sites")
    v.exists("current_title_id", "user_titles")
    roles = v.data.get("roles")
    if roles is not None:
        if not isinstance(roles, list):
            v.errors.add("roles", "The roles field must be an array.")
        else:
            for i, role in enumerate(roles):
                role_id = role.get("id") if isinstance(role, Mapping) else role
                v.exists(f"roles.{i}.id", "roles", value=-1 if role_id is None else role_id)


def _validate_sites(v: _Validator) -> None:
    if v.required("name"):
        v.string("name")
    v.string("external_code", 255, strict=False)
    v.unique("external_code", "sites")
    v.exists("cluster_id", "site_clusters")
    v.flag("active")


def _validate_site_clusters(v: _Validator) -> None:
    if v.required("name"):
        v.string("name")
    parent = v.data.get("parent_cluster_id")
    v.exists("parent_cluster_id", "site_clusters")
    if parent is not None and v.rid is not None and not v.errors.errors.get("parent_cluster_id"):
        # A cluster cannot move under itself or one of its descendants.
        node: int | None = int(parent)
        while node is not None:
            if node == v.rid:
                v.errors.add("parent_cluster_id", "The selected parent cluster id is invalid.")
                break
            row = v.store.get(SERVICE, "site_clusters", node)
            node = row.get("parent_cluster_id") if row else None


def _validate_user_titles(v: _Validator) -> None:
    if v.required("name"):
        v.string("name")
        v.unique("name", "user_titles")


def _validate_asset_types(v: _Validator) -> None:
    if v.required("name"):
        v.string("name")
    v.exists("site_id", "sites")


def _validate_assets(v: _Validator) -> None:
    if v.required("name"):
        v.string("name")
    if v.required("asset_type_id"):
        v.exists("asset_type_id", "asset_types")
    if v.required("site_id"):
        v.exists("site_id", "sites")
    v.string("code", 255, strict=False)
    v.unique("code", "assets")
    v.flag("status")


VALIDATORS: dict[str, Callable[[_Validator], None]] = {
    "users": _validate_users,
    "sites": _validate_sites,
    "site_clusters": _validate_site_clusters,
    "user_titles": _validate_user_titles,
    "asset_types": _validate_asset_types,
    "assets": _validate_assets,
}


def _cluster_depth(store: Store, parent_id: Any) -> int:
    if parent_id is None:
        return 0
    parent = store.get(SERVICE, "site_clusters", int(parent_id))
    return int(parent.get("depth", 0)) + 1 if parent else 0


def _redepth_children(store: Store, rid: int, depth: int) -> None:
    """Keep ``depth`` right for the subtree of a cluster that moved."""
    children = store.page(SERVICE, "site_clusters", limit=1_000_000, where=[("parent_cluster_id", "eq", rid)])
    for child_rid, child in children:
        if child.get("depth") != depth + 1:
            child["depth"] = depth + 1
            store.replace(SERVICE, "site_clusters", child_rid, child)
        _redepth_children(store, child_rid, depth + 1)


def check_headers(token: str, fqdn: str) -> Response | None:
    """The four headers SA-docs require on every request, in the order we check them."""
    if not secrets.compare_digest(bearer_token(request.headers.get("Authorization")), token):
        return _message(401, "Unauthenticated.")
    sent_fqdn = request.headers.get("Fqdn", "").strip().lower()
    if not sent_fqdn:
        return _message(401, "The Fqdn header is required.")
    if sent_fqdn != fqdn.lower():
        return _message(401, "The Fqdn header does not match this API token.")
    agent = request.headers.get("User-Agent", "").strip()
    if not agent or BARE_LIBRARY_AGENT.match(agent):
        # Assumption: SA-docs require a descriptive User-Agent; the answer is ours.
        return _message(400, "A descriptive User-Agent header is required.")
    accepted = [a.split(";")[0].strip().lower() for a in request.headers.get("Accept", "").split(",")]
    if "application/json" not in accepted:
        return _message(406, "This API only serves application/json; send Accept: application/json.")
    return None


def create_app(store: Store, *, token: str, fqdn: str) -> Flask:
    """The SafetyAmp emulator as a Flask app bound to one store and one credential pair."""
    app = Flask("sandbox.safetyamp")
    app.url_map.strict_slashes = False

    @app.before_request
    def _headers() -> Response | None:
        return check_headers(token, fqdn)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(sorted(set(exc.valid_methods or []) - {"OPTIONS"}))
            return _message(
                405,
                f"The {request.method} method is not supported for route "
                f"{request.path.lstrip('/')}. Supported methods: {allowed}.",
            )
        if isinstance(exc, NotFound):
            return _message(404, f"The route {request.path.lstrip('/')} could not be found.")
        return _message(exc.code or 500, exc.description or "Error")

    def _known(collection: str) -> None:
        if collection not in COLLECTIONS:
            raise NotFound()

    def _item_methods(collection: str) -> list[str]:
        return ["GET", "HEAD", *sorted(COLLECTIONS[collection] - {"POST"})]

    @app.get("/api/<collection>")
    def list_objects(collection: str) -> Response:
        _known(collection)
        if collection == "site_clusters":
            return json_response({"data": _cluster_tree(store)}, 200)
        errors = ValidationErrors()
        page = _int_param("page", 0, errors)
        limit = _int_param("limit", DEFAULT_LIMIT, errors)
        if page is not None and page < 0:
            errors.add("page", "The page field must be at least 0.")
        if limit is not None and limit < 1:
            errors.add("limit", "The limit field must be at least 1.")
        if errors:
            return errors.response()
        assert page is not None and limit is not None
        limit = min(limit, MAX_LIMIT)
        where = [
            (key, "eq", value)
            for key, value in request.args.items()
            if key not in RESERVED_PARAMS and key.replace("_", "").isalnum()
        ]
        rows = store.page(SERVICE, collection, limit=limit, offset=page * limit, where=where)
        return json_response({"data": [data for _rid, data in rows]}, 200)

    @app.post("/api/<collection>")
    def create_object(collection: str) -> Response:
        _known(collection)
        if "POST" not in COLLECTIONS[collection]:
            raise MethodNotAllowed(valid_methods=["GET", "HEAD"])
        payload = _payload()
        if isinstance(payload, Response):
            return payload
        data = _clean_input(payload)
        with store.atomic():
            check = _Validator(store, data, None)
            VALIDATORS[collection](check)
            if check.errors:
                return check.errors.response()
            rid = store.next_rid(SERVICE, collection)
            stamp = now_text()
            record = {"id": rid, **data}
            if collection == "site_clusters":
                record["depth"] = _cluster_depth(store, data.get("parent_cluster_id"))
            record["created_at"] = stamp
            record["updated_at"] = stamp
            try:
                store.insert(SERVICE, collection, record, rid=rid)
            except UniqueViolation as exc:  # guarded above; kept as a safety net
                return _taken(exc)
        return json_response({"data": record}, 201)

    @app.get("/api/<collection>/<int:rid>")
    def get_object(collection: str, rid: int) -> Response:
        _known(collection)
        record = store.get(SERVICE, collection, rid)
        if record is None:
            return _message(404, "Not found.")
        return json_response({"data": record}, 200)

    @app.route("/api/<collection>/<int:rid>", methods=["PATCH", "PUT", "DELETE"])
    def update_object(collection: str, rid: int) -> Response:
        _known(collection)
        if request.method not in COLLECTIONS[collection]:
            raise MethodNotAllowed(valid_methods=_item_methods(collection))
        payload = _payload()
        if isinstance(payload, Response):
            return payload
        changes = _clean_input(payload)
        with store.atomic():
            current = store.get(SERVICE, collection, rid)
            if current is None:
                return _message(404, "Not found.")
            # PATCH merges; PUT merges too (Assumption: real PUT semantics unobserved).
            merged = {**current, **changes}
            check = _Validator(store, merged, rid)
            VALIDATORS[collection](check)
            if check.errors:
                return check.errors.response()
            if collection == "site_clusters":
                merged["depth"] = _cluster_depth(store, merged.get("parent_cluster_id"))
            merged["updated_at"] = now_text()
            try:
                store.replace(SERVICE, collection, rid, merged)
            except UniqueViolation as exc:
                return _taken(exc)
            if collection == "site_clusters" and merged["depth"] != current.get("depth"):
                _redepth_children(store, rid, merged["depth"])
        return json_response({"data": merged}, 200)

    return app


def _taken(exc: UniqueViolation) -> Response:
    errors = ValidationErrors()
    for field in exc.fields:
        errors.add(field, f"The {_attr(field)} has already been taken.")
    return errors.response()


def _int_param(name: str, default: int, errors: ValidationErrors) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        errors.add(name, f"The {name} field must be an integer.")
        return None


def _payload() -> dict[str, Any] | Response:
    """The JSON object body, or a 400 (Assumption: the vendor's answer is undocumented)."""
    body = request.get_json(silent=True, force=True)
    if body is None and not request.get_data():
        return {}
    if not isinstance(body, dict):
        return _message(400, "The request body must be a JSON object.")
    return body


def _cluster_tree(store: Store) -> list[dict[str, Any]]:
    """All clusters as a tree: root nodes with nested ``children`` (how IIUS reads it)."""
    nodes = {row["id"]: {**row, "children": []} for row in store.all(SERVICE, "site_clusters")}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node.get("parent_cluster_id"))
        (parent["children"] if parent else roots).append(node)
    return roots
