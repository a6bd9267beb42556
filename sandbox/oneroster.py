"""OneRoster REST emulator (Flask): rostering 1.1 and 1.2 over the sandbox's district.

Why: the rosters sync must meet what real OneRoster servers do before it meets one
(docs/emulated-apis.md "OneRoster", with the public sources):

- both base paths, ``/ims/oneroster/v1p1`` and ``/ims/oneroster/rostering/v1p2``, with the
  version's representation (1.1: ``role`` + ``orgs[]``, booleans as "true"/"false"
  strings; 1.2: ``roles[]`` with ``roleType``/``org`` and ``primaryOrg``);
- ``POST /token``: OAuth 2.0 client credentials (RFC 6749 §4.4), client authenticated by
  HTTP Basic or in the body, scopes checked against the 1EdTech roster scopes; tokens
  expire (``expires_in``);
- OAuth 1.0a request signing (HMAC-SHA256 or HMAC-SHA1) on the 1.1 paths, verified with
  oauthlib, with a timestamp window and a nonce that may not be replayed;
- ``limit``/``offset`` paging with ``X-Total-Count`` and an RFC 8288 ``Link`` header
  (next/prev/first/last); ``limit`` is capped at MAX_LIMIT silently, as some vendors do;
  about one page in seven is short although more records follow (deterministic per seed),
  so a client that stops on a short page loses records here first;
- ``filter`` with the spec's predicates (``= != > >= < <= ~``, two joined by AND or OR),
  ``sort``/``orderBy`` and ``fields``; ``dateLastModified>'...'`` is the delta;
- ``tobedeleted`` records are listed, with their ``dateLastModified``, like active ones;
- errors in the IMSX status-info shape (``imsx_codeMajor``/``imsx_severity``/
  ``imsx_description``/``imsx_CodeMinor``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from sandbox.roster_seed import ROSTER_FILE, RosterCredentials, RosterDB, iso
from sandbox.wsgi import json_response

SERVICE = "oneroster"
BASES = {"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
TOKEN_TTL_S = 3600
OAUTH1_WINDOW_S = 600
QUIRK_ONE_IN = 7
SCOPE_NAMES = ("roster-core.readonly", "roster.readonly", "roster-demographics.readonly")
SCOPES = {f"https://purl.imsglobal.org/spec/or/{v}/scope/{n}" for v in ("v1p1", "v1p2") for n in SCOPE_NAMES}

_PRED = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(>=|<=|!=|=|>|<|~)\s*'(.*)'\s*$")


def status_info(status: int, description: str, minor: str) -> Response:
    """An IMSX status-info error body (the OneRoster binding's error shape)."""
    body = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [{"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": minor}]
        },
    }
    return json_response(body, status)


class OneRosterErrors:
    """429/5xx for fault injection, in the IMSX shape (Assumption: vendors' gateways
    may answer otherwise)."""

    def rate_limited(self, retry_after: str) -> Response:
        response = status_info(429, "Too many requests", "server_busy")
        response.headers["Retry-After"] = retry_after
        return response

    def server_error(self, status: int) -> Response:
        return status_info(status, "Server error", "internal_server_error")


def parse_filter(expr: str) -> list[tuple[str, str, str]] | None:
    """``field op 'value' [AND|OR field op 'value']`` -> predicates and the joiner;
    None when malformed. The joiner is kept as the first tuple's op prefix."""
    if " AND " in expr and " OR " in expr:
        return None
    joiner = "OR" if " OR " in expr else "AND"
    parts = expr.split(f" {joiner} ")
    if len(parts) > 2:
        return None
    out = []
    for part in parts:
        m = _PRED.match(part)
        if not m:
            return None
        out.append((m.group(1), m.group(2), m.group(3)))
    return [(f"{joiner}:{f}", op, v) for f, op, v in out]


def _as_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _matches(record: dict[str, Any], field: str, op: str, value: str) -> bool:
    have = record.get(field)
    if isinstance(have, dict):
        have = have.get("sourcedId")
    if isinstance(have, bool):
        have = "true" if have else "false"
    if have is None:
        return op == "!="
    left: Any = str(have)
    right: Any = value
    if field == "dateLastModified":
        left, right = _as_time(left), _as_time(value)
        if left is None or right is None:
            return False
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == "~":
        return str(value).lower() in str(have).lower()
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    return left <= right


class _Tokens:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, set[str]]] = {}
        self._nonces: dict[str, float] = {}

    def issue(self, scopes: set[str]) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
            self._tokens[token] = (now + TOKEN_TTL_S, scopes)
        return token

    def scopes(self, token: str) -> set[str] | None:
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[0] <= time.time():
            return None
        return entry[1]

    def nonce_fresh(self, nonce: str) -> bool:
        with self._lock:
            now = time.time()
            self._nonces = {k: v for k, v in self._nonces.items() if v > now - 2 * OAUTH1_WINDOW_S}
            if nonce in self._nonces:
                return False
            self._nonces[nonce] = now
            return True


def _quirk(seed: str, key: str) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return digest[0] % QUIRK_ONE_IN == 0


def render(kind: str, data: dict[str, Any], version: str, base_url: str) -> dict[str, Any]:
    """A stored record in the version's JSON representation."""

    def guid(target: str, sid: str | None, typ: str) -> dict[str, Any] | None:
        if not sid:
            return None
        return {"href": f"{base_url}/{target}/{sid}", "sourcedId": sid, "type": typ}

    v11 = version == "1.1"

    def b(value: Any) -> Any:
        return ("true" if value else "false") if v11 else bool(value)

    common = {
        "sourcedId": data["sourcedId"],
        "status": data.get("status", "active"),
        "dateLastModified": data["dateLastModified"],
    }
    if kind == "users":
        out = {
            **common,
            "username": data.get("username"),
            "userIds": data.get("userIds") or [],
            "enabledUser": b(data.get("enabledUser", True)),
            "givenName": data.get("givenName"),
            "familyName": data.get("familyName"),
            "middleName": data.get("middleName"),
            "identifier": data.get("identifier"),
            "email": data.get("email"),
            "sms": None,
            "phone": None,
            "agents": [],
            "grades": data.get("grades") or [],
        }
        roles = data.get("roles") or []
        if v11:
            out["role"] = data.get("role")
            out["orgs"] = [guid("orgs", r.get("org"), "org") for r in roles if r.get("org")]
        else:
            out["roles"] = [
                {"roleType": r.get("roleType", "primary"), "role": r.get("role"), "org": guid("orgs", r.get("org"), "org")}
                for r in roles
            ]
            out["primaryOrg"] = guid("orgs", roles[0].get("org"), "org") if roles else None
        return out
    if kind == "classes":
        return {
            **common,
            "title": data.get("title"),
            "classCode": data.get("classCode"),
            "classType": data.get("classType", "scheduled"),
            "location": data.get("location"),
            "grades": [],
            "subjects": [],
            "course": guid("courses", data.get("course"), "course"),
            "school": guid("schools", data.get("school"), "org"),
            "terms": [guid("academicSessions", t, "academicSession") for t in data.get("terms") or []],
            "periods": data.get("periods") or [],
        }
    if kind == "enrollments":
        return {
            **common,
            "user": guid("users", data.get("user"), "user"),
            "class": guid("classes", data.get("class"), "class"),
            "school": guid("schools", data.get("school"), "org"),
            "role": data.get("role"),
            "primary": b(data.get("primary", False)),
            "beginDate": data.get("beginDate"),
            "endDate": data.get("endDate"),
        }
    if kind == "orgs":
        return {**common, "name": data.get("name"), "type": data.get("type"), "identifier": data.get("identifier"),
                "parent": guid("orgs", data.get("parent"), "org"), "children": []}  # fmt: skip
    return {**common, **{k: v for k, v in data.items() if k not in common}}


def create_app(directory: Path, *, creds: RosterCredentials, seed: str) -> Flask:
    """The OneRoster emulator over ``directory/oneroster.sqlite``."""
    app = Flask("sandbox.oneroster")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    tokens = _Tokens()
    db = RosterDB(directory / ROSTER_FILE)
    db_lock = threading.Lock()
    listings: dict[tuple[str, ...], tuple[int, list[dict[str, Any]]]] = {}

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return status_info(exc.code or 500, exc.description or exc.name, "unknownobject" if exc.code == 404 else "invalid_data")

    # -- token endpoint (RFC 6749 §4.4, errors §5.2) ----------------------------------
    @app.post("/token")
    def token() -> Response:
        client_id = client_secret = None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = None
        elif request.form.get("client_id"):
            client_id, client_secret = request.form.get("client_id"), request.form.get("client_secret")
        if request.form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if client_id != creds.client_id or not secrets.compare_digest(client_secret or "", creds.client_secret):
            return json_response({"error": "invalid_client"}, 401, {"WWW-Authenticate": 'Basic realm="oneroster"'})
        asked = set((request.form.get("scope") or "").split())
        if asked - SCOPES:
            return json_response({"error": "invalid_scope", "error_description": " ".join(sorted(asked - SCOPES))}, 400)
        granted = asked or {s for s in SCOPES if "roster-core" in s}
        access = tokens.issue(granted)
        body = {"access_token": access, "token_type": "bearer", "expires_in": TOKEN_TTL_S, "scope": " ".join(sorted(granted))}
        return json_response(body, 200, {"Cache-Control": "no-store"})

    # -- authentication of API calls ---------------------------------------------------
    def authenticate(version: str) -> Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        vtag = "v1p1" if version == "1.1" else "v1p2"
        if scheme.lower() == "bearer":
            granted = tokens.scopes(value.strip())
            if granted is None:
                return status_info(401, "Unauthorized: unknown or expired access token", "unauthorisedrequest")
            if not any(f"/{vtag}/" in s for s in granted):
                return status_info(403, f"Forbidden: the token has no {vtag} scope", "forbidden")
            return None
        if scheme == "OAuth" and version == "1.1":
            return verify_oauth1(header)
        return status_info(401, "Unauthorized: credentials missing", "unauthorisedrequest")

    def verify_oauth1(header: str) -> Response | None:
        from oauthlib.common import Request as OAuthRequest
        from oauthlib.oauth1.rfc5849 import signature as sig

        headers = {"Authorization": header}
        try:
            params = sig.collect_parameters(uri_query=urlsplit(request.url).query, headers=headers, exclude_oauth_signature=False)
        except ValueError:
            return status_info(401, "Unauthorized: malformed OAuth header", "unauthorisedrequest")
        oauth = {k: v for k, v in params if k.startswith("oauth_")}
        if oauth.get("oauth_consumer_key") != creds.client_id:
            return status_info(401, "Unauthorized: unknown consumer key", "unauthorisedrequest")
        method = oauth.get("oauth_signature_method")
        if method not in ("HMAC-SHA256", "HMAC-SHA1"):
            return status_info(401, f"Unauthorized: signature method {method!r} not supported", "unauthorisedrequest")
        try:
            stamp = int(oauth.get("oauth_timestamp", "0"))
        except ValueError:
            stamp = 0
        if abs(time.time() - stamp) > OAUTH1_WINDOW_S:
            return status_info(401, "Unauthorized: timestamp outside the allowed window", "unauthorisedrequest")
        req = OAuthRequest(request.url, request.method, headers=headers)
        req.params = [(k, v) for k, v in params if k != "oauth_signature"]
        req.signature = oauth.get("oauth_signature", "")
        verify = sig.verify_hmac_sha256 if method == "HMAC-SHA256" else sig.verify_hmac_sha1
        if not verify(req, creds.client_secret):
            return status_info(401, "Unauthorized: invalid signature", "unauthorisedrequest")
        if not tokens.nonce_fresh(f"{oauth.get('oauth_nonce')}:{stamp}"):
            return status_info(401, "Unauthorized: nonce already used", "unauthorisedrequest")
        return None

    # -- listing ---------------------------------------------------------------------
    def listing(version: str, kind: str, key: str, where: Callable[[dict[str, Any]], bool] | None = None) -> Response:
        denied = authenticate(version)
        if denied is not None:
            return denied
        args = request.args
        try:
            limit = int(args.get("limit", DEFAULT_LIMIT))
            offset = int(args.get("offset", 0))
        except ValueError:
            return status_info(400, "limit and offset must be integers", "invalid_data")
        if limit < 1 or offset < 0:
            return status_info(400, "limit must be >= 1 and offset >= 0", "invalid_data")
        limit = min(limit, MAX_LIMIT)
        raw_filter = args.get("filter")
        preds = parse_filter(raw_filter) if raw_filter else []
        if preds is None:
            return status_info(400, f"invalid filter {raw_filter!r}", "invalid_filter_field")
        base_url = f"{request.host_url.rstrip('/')}{BASES[version]}"
        sort = args.get("sort")
        order = args.get("orderBy", "asc").lower()
        since = _sql_since(preds) if where is None and not sort else None
        if since:
            with db_lock:  # string order is time order only if every stored time has iso()'s form
                odd = db.conn.execute(
                    "SELECT 1 FROM records WHERE kind=? AND modified NOT GLOB ? LIMIT 1", (kind, _ISO_GLOB)
                ).fetchone()
            since = None if odd else since
        if since is not None:
            # The common reads (a whole collection, or a dateLastModified delta) page in
            # SQL: rendering a million enrollments for every page, or even once, made the
            # first page of a district's enrollments take longer than a client's timeout.
            cond, params = ("", (kind,)) if since == "" else (" AND modified > ?", (kind, since))
            with db_lock:
                total = int(db.conn.execute(f"SELECT COUNT(*) FROM records WHERE kind=?{cond}", params).fetchone()[0])
                take = limit
                if offset + limit < total and _quirk(seed, f"{request.path}|{raw_filter}|{offset}|{limit}"):
                    take = max(1, limit // 2)
                rows = db.conn.execute(
                    f"SELECT data FROM records WHERE kind=?{cond} ORDER BY seq LIMIT ? OFFSET ?", (*params, take, offset)
                ).fetchall()
            page = [render(kind, json.loads(r[0]), version, base_url) for r in rows]
            return _page_response(key, page, args, request.base_url, offset, limit, total)
        # The filtered, rendered list of the previous page's query is kept while the file
        # is unchanged (PRAGMA data_version moves when another connection commits, e.g.
        # ``mutate``): a client paging through a million enrollments otherwise has every
        # page re-read and re-render the whole table.
        cache_key = (version, kind, request.path, raw_filter or "", sort or "", order, base_url)
        with db_lock:
            data_version = db.conn.execute("PRAGMA data_version").fetchone()[0]
            hit = listings.get(cache_key)
            if hit is not None and hit[0] == data_version:
                rendered = hit[1]
            else:
                records = db.all(kind)
                if where is not None:
                    records = [r for r in records if where(r)]
                rendered = [render(kind, r, version, base_url) for r in records]
                del records
                if preds:
                    joiner = preds[0][0].split(":", 1)[0]
                    checks = [(f.split(":", 1)[1], op, v) for f, op, v in preds]
                    combine = any if joiner == "OR" else all
                    rendered = [r for r in rendered if combine(_matches(r, f, op, v) for f, op, v in checks)]
                if sort:
                    rendered.sort(key=lambda r: str(r.get(sort) or ""), reverse=order == "desc")
                listings.clear()  # one query kept: memory stays at one collection's worth
                listings[cache_key] = (data_version, rendered)
        total = len(rendered)
        take = limit
        if offset + limit < total and _quirk(seed, f"{request.path}|{raw_filter}|{offset}|{limit}"):
            take = max(1, limit // 2)
        page = rendered[offset : offset + take]
        return _page_response(key, page, args, request.base_url, offset, limit, total)

    def single(version: str, kind: str, key: str, sid: str) -> Response:
        denied = authenticate(version)
        if denied is not None:
            return denied
        with db_lock:
            data = db.get(kind, sid)
        if data is None:
            return status_info(404, f"{key} {sid} not found", "unknownobject")
        base_url = f"{request.host_url.rstrip('/')}{BASES[version]}"
        return json_response({key: render(kind, data, version, base_url)}, 200)

    def role_is(role: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: any(x.get("role") == role for x in r.get("roles") or [])

    def in_school(school: str) -> Callable[[dict[str, Any]], bool]:
        return lambda r: r.get("school") == school or any(x.get("org") == school for x in r.get("roles") or [])

    for version, base in BASES.items():
        v = version

        def add(rule: str, fn: Callable[..., Response], name: str, base: str = base, v: str = v) -> None:
            app.add_url_rule(base + rule, endpoint=f"{name}_{v}", view_func=fn, methods=["GET"])

        add("/users", lambda v=v: listing(v, "users", "users"), "users")
        add("/students", lambda v=v: listing(v, "users", "users", role_is("student")), "students")
        add("/teachers", lambda v=v: listing(v, "users", "users", role_is("teacher")), "teachers")
        add("/classes", lambda v=v: listing(v, "classes", "classes"), "classes")
        add("/enrollments", lambda v=v: listing(v, "enrollments", "enrollments"), "enrollments")
        add("/orgs", lambda v=v: listing(v, "orgs", "orgs"), "orgs")
        add("/schools", lambda v=v: listing(v, "orgs", "orgs", lambda r: r.get("type") == "school"), "schools")
        add("/courses", lambda v=v: listing(v, "courses", "courses"), "courses")
        add("/academicSessions", lambda v=v: listing(v, "academicSessions", "academicSessions"), "sessions")
        add(
            "/schools/<school>/classes", lambda school, v=v: listing(v, "classes", "classes", in_school(school)), "school_classes"
        )
        add(
            "/schools/<school>/enrollments",
            lambda school, v=v: listing(v, "enrollments", "enrollments", in_school(school)),
            "school_enr",
        )
        add(
            "/schools/<school>/students",
            lambda school, v=v: listing(v, "users", "users", lambda r: in_school(school)(r) and role_is("student")(r)),
            "school_students",
        )
        add(
            "/schools/<school>/teachers",
            lambda school, v=v: listing(v, "users", "users", lambda r: in_school(school)(r) and role_is("teacher")(r)),
            "school_teachers",
        )
        add(
            "/classes/<cls>/enrollments",
            lambda cls, v=v: listing(v, "enrollments", "enrollments", lambda r: r.get("class") == cls),
            "class_enr",
        )
        add("/users/<sid>", lambda sid, v=v: single(v, "users", "user", sid), "user")
        add("/classes/<sid>", lambda sid, v=v: single(v, "classes", "class", sid), "class")
        add("/enrollments/<sid>", lambda sid, v=v: single(v, "enrollments", "enrollment", sid), "enrollment")
        add("/orgs/<sid>", lambda sid, v=v: single(v, "orgs", "org", sid), "org")

    return app


_ISO_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z"


def _sql_since(preds: list[tuple[str, str, str]]) -> str | None:
    """ "" for no filter; the stored form of T for exactly ``dateLastModified>'T'`` with T
    at millisecond precision (stored times are ``iso()``: one format, so string order
    is time order); None for anything else (filtered in Python)."""
    if not preds:
        return ""
    if len(preds) != 1 or preds[0][0] != "AND:dateLastModified" or preds[0][1] != ">":
        return None
    moment = _as_time(preds[0][2])
    if moment is None or moment.microsecond % 1000:
        return None
    return iso(moment)


def _page_response(key: str, page: list[dict[str, Any]], args: Any, base: str, offset: int, limit: int, total: int) -> Response:
    fields = [f.strip() for f in (args.get("fields") or "").split(",") if f.strip()]
    if fields:
        page = [{k: r.get(k) for k in fields} for r in page]
    response = json_response({key: page}, 200)
    response.headers["X-Total-Count"] = str(total)
    response.headers["Link"] = link_header(base, args, offset, len(page), limit, total)
    return response


def link_header(base: str, args: Any, offset: int, got: int, limit: int, total: int) -> str:
    """RFC 8288 Link with next/prev/first/last, repeating the other query parameters."""
    keep = [(k, v) for k, v in args.items(multi=True) if k not in ("limit", "offset")]

    def url(off: int) -> str:
        return f"{base}?{urlencode([*keep, ('limit', limit), ('offset', off)])}"

    links = [f'<{url(0)}>; rel="first"']
    last = max(0, ((total - 1) // limit) * limit) if total else 0
    links.append(f'<{url(last)}>; rel="last"')
    if offset + got < total:
        links.append(f'<{url(offset + got)}>; rel="next"')
    if offset > 0:
        links.append(f'<{url(max(0, offset - limit))}>; rel="prev"')
    return ", ".join(links)
