"""Microsoft Graph (``/v1.0/users``, ``$batch``) and Entra ID token endpoint emulator.

Why HTTPS and a real token endpoint: the daemon acquires tokens with MSAL, which only
accepts ``https`` authorities and performs OIDC discovery first. Serving
``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token``
over TLS (a CA generated per sandbox, see sandbox/tls.py) lets the product's real MSAL
code run unchanged against the sandbox.

The Graph side follows Microsoft's documentation (docs/emulated-apis.md, "Microsoft Graph"): ``employeeId`` is only returned when
``$select``-ed, ``$top`` defaults to 100 and stops at 999, ``$skip`` is refused, paging is
by an opaque ``$skiptoken`` inside an absolute ``@odata.nextLink``, ``ne``/``eq null``
filters need ``ConsistencyLevel: eventual`` plus ``$count=true``, and ``$batch`` takes at
most 20 sub-requests, each with its own status (a sub-request can be throttled while the
batch itself answers 200). Errors use Graph's ``{"error": {"code", "message",
"innerError"}}`` shape; token errors use the OAuth ``error``/``error_description`` shape
with AADSTS codes.
"""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from flask import Flask, has_request_context, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from sandbox.faults import FaultInjector
from sandbox.store import Condition, Store
from sandbox.wsgi import bearer_token, decode_opaque, encode_opaque, json_response

SERVICE = "graph"
LOGIN_SERVICE = "entra"  # the token endpoints are Entra ID, a different Microsoft service
TOKEN_LIFETIME_S = 3599
DEFAULT_TOP = 100
MAX_TOP = 999
MAX_BATCH = 20
CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"

# Properties of microsoft.graph.user the sandbox knows (canonical spelling).
USER_PROPERTIES = (
    "id", "accountEnabled", "businessPhones", "city", "companyName", "country",
    "createdDateTime", "department", "displayName", "employeeHireDate", "employeeId",
    "employeeType", "givenName", "jobTitle", "mail", "mailNickname", "mobilePhone",
    "officeLocation", "onPremisesSamAccountName", "otherMails", "preferredLanguage",
    "state", "surname", "usageLocation", "userPrincipalName", "userType",
)  # fmt: skip
_CANONICAL = {name.lower(): name for name in USER_PROPERTIES}
# Returned when no $select is given (Graph v1.0 default user properties).
DEFAULT_SELECT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip
FILTERABLE = {
    "id", "accountEnabled", "department", "displayName", "employeeId", "givenName",
    "jobTitle", "mail", "mobilePhone", "surname", "userPrincipalName", "userType",
}  # fmt: skip
BOOLEAN_PROPERTIES = {"accountEnabled"}


class GraphError(Exception):
    """A Graph error answer: status, code, message (and extra headers, e.g. Location)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _error_body(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }


def _response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A Graph JSON answer with Graph's request-id headers (works outside Flask too)."""
    request_id = str(uuid.uuid4())
    client_id = request.headers.get("client-request-id") if has_request_context() else None
    extra = {"request-id": request_id, "client-request-id": client_id or request_id, **(headers or {})}
    return json_response(body, status, extra, content_type=CONTENT_TYPE)


class GraphErrors:
    """Graph's 429/5xx bodies (fault injection)."""

    def rate_limited(self, retry_after: str) -> Response:
        """429 TooManyRequests with integer ``Retry-After`` seconds."""
        body = _error_body(
            "TooManyRequests",
            "Too many requests. Retry after the number of seconds in Retry-After.",
            str(uuid.uuid4()),
        )
        return _response(429, body, {"Retry-After": retry_after})

    def server_error(self, status: int) -> Response:
        """500 generalException, 502 UnknownError, 503 serviceNotAvailable (+Retry-After)."""
        codes = {
            500: ("generalException", "General exception while processing."),
            502: ("UnknownError", "Bad Gateway"),
            503: ("serviceNotAvailable", "Service is unavailable. Try again later."),
        }
        code, message = codes.get(status, codes[500])
        headers = {"Retry-After": "1"} if status == 503 else {}
        return _response(status, _error_body(code, message, str(uuid.uuid4())), headers)


def route(path: str) -> tuple[str, bool]:
    """Middleware routing: Graph paths get Graph faults; login paths are Entra, fault-free."""
    return (SERVICE, True) if path.startswith("/v1.0") else (LOGIN_SERVICE, False)


# -- skiptokens ---------------------------------------------------------------------------


SKIPTOKEN_PREFIX = "RFNwdAIAAQAAA"  # the shape real skiptokens start with; opaque to clients


def _encode_skiptoken(rid: int) -> str:
    return SKIPTOKEN_PREFIX + encode_opaque({"r": rid, "n": secrets.token_hex(4)})


def _decode_skiptoken(token: str) -> int:
    payload = decode_opaque(token[len(SKIPTOKEN_PREFIX) :]) if token.startswith(SKIPTOKEN_PREFIX) else None
    if payload is None or not isinstance(payload.get("r"), int):
        raise GraphError(400, "Request_BadRequest", "Invalid skip token.")
    return int(payload["r"])


# -- $filter ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][\w/]*)"
    r"|(?P<punct>[(),]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: syntax error at position {pos}.")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        return text[1:-1].replace("''", "'")
    if kind == "num":
        return text
    if kind == "word" and text in ("true", "false"):
        return text == "true"
    if kind == "word" and text == "null":
        return None
    raise GraphError(400, "BadRequest", f"Invalid filter clause: unexpected '{text}'.")


def _property(name: str) -> str:
    canonical = _CANONICAL.get(name.lower())
    if canonical is None:
        raise GraphError(
            400,
            "Request_BadRequest",
            f"Could not find a property named '{name}' on type 'microsoft.graph.user'.",
        )
    if canonical not in FILTERABLE:
        raise GraphError(
            400,
            "Request_UnsupportedQuery",
            f"Unsupported or invalid query filter clause specified for property '{canonical}' of resource 'User'.",
        )
    return canonical


def _check_type(prop: str, value: Any) -> None:
    if value is None:
        return
    boolean = prop in BOOLEAN_PROPERTIES
    if boolean != isinstance(value, bool):
        found = "Edm.Boolean" if isinstance(value, bool) else "Edm.String"
        wanted = "Edm.Boolean" if boolean else "Edm.String"
        raise GraphError(
            400,
            "Request_BadRequest",
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{wanted}' and '{found}' for operator kind 'Equal'.",
        )


def parse_filter(text: str, advanced: bool) -> list[Condition]:
    """Parse the supported ``$filter`` subset into store conditions.

    Supported: ``prop eq|ne literal``, ``prop in (...)``, ``startsWith(prop,'x')``,
    joined by ``and``. ``ne`` and ``eq null`` are advanced queries (Microsoft Graph "advanced query capabilities").
    """
    tokens = _tokenize(text)
    conditions: list[Condition] = []
    i = 0

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise GraphError(400, "BadRequest", "Invalid filter clause: unexpected end.")
        token = tokens[i]
        if expected is not None and token[1].lower() != expected:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: expected '{expected}'.")
        i += 1
        return token

    while True:
        kind, word = take()
        if kind != "word":
            raise GraphError(400, "BadRequest", f"Invalid filter clause near '{word}'.")
        if word.lower() == "startswith":
            take("(")
            prop = _property(take()[1])
            take(",")
            value = _literal(*take())
            take(")")
            conditions.append((prop, "prefix", value))
        else:
            prop = _property(word)
            _op_kind, op = take()
            op = op.lower()
            if op in ("eq", "ne"):
                value = _literal(*take())
                _check_type(prop, value)
                if (op == "ne" or value is None) and not advanced:
                    raise GraphError(
                        400,
                        "Request_UnsupportedQuery",
                        f"Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'.",
                    )
                conditions.append((prop, op, value))
            elif op == "in":
                take("(")
                values = [_literal(*take())]
                while tokens[i : i + 1] == [("punct", ",")]:
                    take(",")
                    values.append(_literal(*take()))
                take(")")
                for value in values:
                    _check_type(prop, value)
                conditions.append((prop, "in", values))
            else:
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Unsupported filter operator '{op}' (the sandbox emulates eq, ne, in, startsWith).",
                )
        if i >= len(tokens):
            return conditions
        joiner = take()[1].lower()
        if joiner != "and":
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported filter combinator '{joiner}' (the sandbox emulates 'and').",
            )


# -- request handling shared by direct calls and $batch -----------------------------------


def _select(args: Mapping[str, str]) -> tuple[str, ...] | None:
    raw = args.get("$select")
    if raw is None:
        return None
    names: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            raise GraphError(
                400,
                "Request_BadRequest",
                "Parsing OData Select and Expand failed: Could not find a property named "
                f"'{name}' on type 'microsoft.graph.user'.",
            )
        names.append(canonical)
    return tuple(names)


def _project(user: Mapping[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    return {name: user.get(name) for name in (select or DEFAULT_SELECT)}


def _context(base: str, select: tuple[str, ...] | None, single: bool = False) -> str:
    suffix = f"({','.join(select)})" if select else ""
    return f"{base}/v1.0/$metadata#users{suffix}{'/$entity' if single else ''}"


class GraphApi:
    """Graph request handling, independent of Flask so ``$batch`` can reuse it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(
        self, path: str, args: Mapping[str, str], headers: Mapping[str, str], base: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one GET below ``/v1.0``: ``(status, body, extra headers)``."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["v1.0", "users"] or len(parts) > 3:
            segment = parts[1] if len(parts) > 1 else ""
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
        if len(parts) == 3 and parts[2] in DELTA_SEGMENTS:
            return self._delta(args, base)
        select = _select(args)
        if len(parts) == 3:
            return self._one(parts[2], select, base)
        return self._list(args, headers, select, base)

    def _one(self, key: str, select: tuple[str, ...] | None, base: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        field = "userPrincipalName" if "@" in key else "id"
        rid = self.store.rid_by_unique(SERVICE, "users", field, key)
        user = self.store.get(SERVICE, "users", rid) if rid is not None else None
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        body = {"@odata.context": _context(base, select, single=True), **_project(user, select)}
        return 200, body, {}

    def _list(
        self,
        args: Mapping[str, str],
        headers: Mapping[str, str],
        select: tuple[str, ...] | None,
        base: str,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if "$skip" in args:
            raise GraphError(400, "Request_BadRequest", "'$skip' is not supported by the service.")
        if "$orderby" in args or "$search" in args:
            raise GraphError(400, "Request_UnsupportedQuery", "$orderby and $search are not emulated.")
        raw_top = args.get("$top")
        top = DEFAULT_TOP
        if raw_top is not None:
            try:
                top = int(raw_top)
            except ValueError:
                top = 0
            if not 1 <= top <= MAX_TOP:
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    f"Invalid page size specified: '{raw_top}'. Must be between 1 and {MAX_TOP} inclusive.",
                )
        eventual = any(k.lower() == "consistencylevel" and v.lower() == "eventual" for k, v in headers.items())
        count = args.get("$count", "").lower() == "true"
        if count and not eventual:
            raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")
        where = parse_filter(args["$filter"], eventual and count) if args.get("$filter") else []
        after = _decode_skiptoken(args["$skiptoken"]) if "$skiptoken" in args else None
        rows = self.store.page(SERVICE, "users", limit=top + 1, after_rid=after, where=where)
        page = rows[:top]
        body: dict[str, Any] = {"@odata.context": _context(base, select)}
        if count:
            body["@odata.count"] = self.store.count(SERVICE, "users", where)
        body["value"] = [_project(user, select) for _rid, user in page]
        if len(rows) > top:
            keep = [(k, v) for k, v in args.items() if k != "$skiptoken"]
            keep.append(("$skiptoken", _encode_skiptoken(page[-1][0])))
            query = urlencode(keep, quote_via=quote, safe="$,'()")
            body["@odata.nextLink"] = f"{base}/v1.0/users?{query}"
        return 200, body, {}

    # -- delta query (docs/emulated-apis.md, "Delta query") --------------------------------

    def _delta(self, args: Mapping[str, str], base: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """``/users/delta``: a round of pages (``$skiptoken`` in ``@odata.nextLink``) that ends
        with an ``@odata.deltaLink`` (``$deltatoken``). The first round lists every user;
        a round from a deltaLink lists the users changed since it was issued (their
        current state) and the deleted ones as ``@removed``. Query options other than
        ``$select`` are refused; ``$select`` is carried inside the tokens."""
        unsupported = sorted(k for k in args if k not in ("$select", "$skiptoken", "$deltatoken"))
        if unsupported:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported query option(s) for users delta: {', '.join(unsupported)}.",
            )
        if "$skiptoken" in args and "$deltatoken" in args:
            raise GraphError(400, "Request_BadRequest", "Specify either $skiptoken or $deltatoken, not both.")
        if "$skiptoken" in args and "$select" in args:
            raise GraphError(400, "Request_BadRequest", "$select cannot be combined with $skiptoken.")
        generation = delta_generation(self.store)
        if "$skiptoken" in args:
            state = self._delta_state(args["$skiptoken"], generation, base)
            if not all(isinstance(state.get(k), int) for k in ("f", "u", "a")):
                raise GraphError(400, "Request_BadRequest", "Invalid skip token.")
        elif "$deltatoken" in args:
            state = self._delta_state(args["$deltatoken"], generation, base)
            if "$select" in args:  # Entra resources may change the tracked properties here
                state["sel"] = list(_select(args) or ())
            state.update({"f": 0, "u": self.store.change_seq(), "a": 0})
        else:  # a new round: every user as of now
            select = _select(args)
            state = {"g": generation, "sel": list(select or ()), "f": 1, "s": 0, "u": self.store.change_seq(), "a": 0}
        select = tuple(state["sel"]) or None
        tracked = ("id", *(p for p in select or DEFAULT_SELECT if p != "id"))
        size = delta_page_size(self.store)
        values: list[dict[str, Any]] = []
        if state["f"]:
            rows = self.store.page(SERVICE, "users", limit=size + 1, after_rid=state["a"])
            more = len(rows) > size
            page_rids = [rid for rid, _ in rows[:size]]
            values = [{p: user.get(p) for p in tracked} for _rid, user in rows[:size]]
        else:
            changes = self.store.changes_since(
                SERVICE, "users", since=state["s"], upto=state["u"], after_rid=state["a"], limit=size + 1
            )
            more = len(changes) > size
            page_rids = []
            for rid, ident, deleted in changes[:size]:
                page_rids.append(rid)
                user = None if deleted else self.store.get(SERVICE, "users", rid)
                if user is None:  # deleted (an Entra delete is soft: restorable, reason "changed")
                    values.append({"id": ident, "@removed": {"reason": "changed"}})
                else:
                    values.append({p: user.get(p) for p in tracked})
        body: dict[str, Any] = {"@odata.context": _context(base, select)}
        if more:
            token = {**state, "a": page_rids[-1]}
            body["@odata.nextLink"] = f"{base}/v1.0/users/delta?$skiptoken={DELTA_TOKEN_PREFIX}{encode_opaque(token)}"
        else:
            token = {"g": generation, "sel": state["sel"], "s": state["u"], "t": round(time.time(), 3)}
            body["@odata.deltaLink"] = f"{base}/v1.0/users/delta?$deltatoken={DELTA_TOKEN_PREFIX}{encode_opaque(token)}"
        body["value"] = values
        return 200, body, {}

    def _delta_state(self, raw: str, generation: str, base: str) -> dict[str, Any]:
        payload = decode_opaque(raw[len(DELTA_TOKEN_PREFIX) :]) if raw.startswith(DELTA_TOKEN_PREFIX) else None
        if payload is None or not isinstance(payload.get("s"), int) or not isinstance(payload.get("sel"), list):
            raise GraphError(400, "syncStateNotFound", SYNC_STATE_NOT_FOUND)
        if payload.get("g") != generation:
            # Synchronization reset: 410 and a Location with the initial request.
            raise GraphError(
                410,
                "resyncRequired",
                "The delta token is no longer valid; restart with a full synchronization.",
                {"Location": f"{base}/v1.0/users/delta"},
            )
        issued = payload.get("t")
        if isinstance(issued, (int, float)) and time.time() - issued > delta_token_lifetime(self.store):
            raise GraphError(400, "syncStateNotFound", SYNC_STATE_NOT_FOUND)
        return payload


DELTA_SEGMENTS = ("delta", "microsoft.graph.delta")
DELTA_PAGE_SIZE = 200  # not documented ("varies"); $top is not supported on users delta
DELTA_TOKEN_PREFIX = "RFNwdAIAAQAAD"
DELTA_TOKEN_LIFETIME_S = 7 * 24 * 3600  # directory objects: seven days
SYNC_STATE_NOT_FOUND = "The sync state generation is not found. The delta token is expired and data must be synchronized again."


def delta_generation(store: Store) -> str:
    """The change-tracking generation of this sandbox: tokens of another one (another
    sandbox, or one before ``reset_delta_tracking``) answer 410 resyncRequired."""
    value = store.meta_get("graph.delta_generation")
    if value is None:
        value = secrets.token_hex(8)
        with store.atomic():
            current = store.meta_get("graph.delta_generation")
            if current is None:
                store.meta_set("graph.delta_generation", value)
            else:
                value = current
    return value


def reset_delta_tracking(store: Store) -> None:
    """A synchronization reset (tenant maintenance): every outstanding token answers 410."""
    store.meta_set("graph.delta_generation", secrets.token_hex(8))


def delta_page_size(store: Store) -> int:
    """Users per delta page (``graph.delta_page_size`` in the store's meta table, for tests)."""
    raw = store.meta_get("graph.delta_page_size")
    return int(raw) if raw is not None and raw.isdigit() and int(raw) > 0 else DELTA_PAGE_SIZE


def delta_token_lifetime(store: Store) -> float:
    """Seconds a deltaLink stays valid (7 days; ``graph.delta_token_lifetime_s`` in the
    store's meta table shortens it for tests of expiry)."""
    raw = store.meta_get("graph.delta_token_lifetime_s")
    try:
        return float(raw) if raw is not None else float(DELTA_TOKEN_LIFETIME_S)
    except ValueError:
        return float(DELTA_TOKEN_LIFETIME_S)


def create_app(
    store: Store,
    *,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    injector: FaultInjector,
    seed: str,
) -> Flask:
    """The Graph + Entra token emulator (both on one HTTPS origin)."""
    app = Flask("sandbox.graph")
    app.url_map.strict_slashes = False
    api = GraphApi(store)

    def base() -> str:
        return request.host_url.rstrip("/")

    def oauth_error(status: int, error: str, aadsts: int, text: str) -> Response:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace = str(uuid.uuid4())
        body = {
            "error": error,
            "error_description": f"AADSTS{aadsts}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {stamp}",
            "error_codes": [aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": trace,
        }
        return json_response(body, status)

    def unknown_tenant(tenant: str) -> Response:
        return oauth_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = "Request_ResourceNotFound" if exc.code == 404 else "BadRequest"
        body = _error_body(code, exc.description or exc.name, str(uuid.uuid4()))
        return _response(exc.code or 500, body)

    @app.get("/<tenant>/v2.0/.well-known/openid-configuration")
    def openid_configuration(tenant: str) -> Response:
        if tenant != tenant_id:
            return unknown_tenant(tenant)
        root = f"{base()}/{tenant_id}"
        body = {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic",
            ],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base()}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": urlsplit(base()).netloc,
        }  # fmt: skip
        return json_response(body)

    @app.get("/<tenant>/discovery/v2.0/keys")
    def jwks(tenant: str) -> Response:
        if tenant != tenant_id:
            return unknown_tenant(tenant)
        return json_response({"keys": []})

    @app.post("/<tenant>/oauth2/v2.0/token")
    def token(tenant: str) -> Response:
        if tenant != tenant_id:
            return unknown_tenant(tenant)
        form = request.form
        sent_id, sent_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            sent_id = request.authorization.username or sent_id
            sent_secret = request.authorization.password or sent_secret
        if form.get("grant_type") != "client_credentials":
            return oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type; the sandbox emulates client_credentials only.",
            )
        if sent_id != client_id:
            return oauth_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{sent_id}' was not found in the directory '{tenant_id}'.",
            )
        if not sent_secret or not secrets.compare_digest(sent_secret, client_secret):
            return oauth_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        scopes = (form.get("scope") or "").split()
        resources = {f"{base()}/.default", "https://graph.microsoft.com/.default"}
        if not scopes or not all(s in resources for s in scopes):
            return oauth_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {' '.join(scopes)} is not valid. Client"
                " credential flows must have a scope value with /.default suffixed to the"
                " resource identifier (application ID URI).",
            )
        access_token = secrets.token_urlsafe(48)
        store.insert(
            LOGIN_SERVICE,
            "tokens",
            {
                "token_sha256": hashlib.sha256(access_token.encode()).hexdigest(),
                "client_id": client_id,
                "expires_at": time.time() + TOKEN_LIFETIME_S,
            },
        )
        body = {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": access_token,
        }
        return json_response(body)

    def authenticate() -> None:
        value = bearer_token(request.headers.get("Authorization"))
        if not value:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        digest = hashlib.sha256(value.encode()).hexdigest()
        rid = store.rid_by_unique(LOGIN_SERVICE, "tokens", "token_sha256", digest)
        record = store.get(LOGIN_SERVICE, "tokens", rid) if rid is not None else None
        if record is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        if record["expires_at"] < time.time():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )

    def graph_call(handler: Any) -> Response:
        try:
            authenticate()
            status, body, headers = handler()
        except GraphError as exc:
            return _response(exc.status, _error_body(exc.code, exc.message, str(uuid.uuid4())), exc.headers)
        return _response(status, body, headers)

    @app.get("/v1.0/users")
    @app.get("/v1.0/users/<key>")
    def users(key: str | None = None) -> Response:
        return graph_call(lambda: api.get(request.path, request.args, dict(request.headers.items()), base()))

    @app.post("/v1.0/$batch")
    def batch() -> Response:
        return graph_call(lambda: _batch(api, injector, seed, base()))

    return app


def _batch(api: GraphApi, injector: FaultInjector, seed: str, base: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """JSON batching: validate the envelope, answer each GET sub-request on its own."""
    payload = request.get_json(silent=True, force=True)
    items = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(items) > MAX_BATCH:
        raise GraphError(
            400,
            "BadRequest",
            f"Too many requests in the batch: {len(items)}. The limit is {MAX_BATCH}.",
        )
    seen: set[str] = set()
    for item in items:
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or not item_id or item_id in seen:
            raise GraphError(400, "BadRequest", "Each batch request needs a unique string id.")
        if not item.get("method") or not item.get("url"):
            raise GraphError(400, "BadRequest", f"Batch request '{item_id}' lacks method or url.")
        depends = item.get("dependsOn") or []
        if not isinstance(depends, list) or any(d not in seen for d in depends):
            raise GraphError(400, "BadRequest", f"Batch request '{item_id}' depends on an unknown request.")
        seen.add(item_id)
    statuses: dict[str, int] = {}
    responses: list[dict[str, Any]] = []
    for item in items:
        status, body, headers = _sub_request(api, injector, item, statuses, base)
        statuses[item["id"]] = status
        responses.append(
            {
                "id": item["id"],
                "status": status,
                "headers": {"Content-Type": CONTENT_TYPE, **headers},
                "body": body,
            }
        )
    # Graph does not promise response order (JSON batching docs): shuffle repeatably.
    random.Random(f"{seed}:{'|'.join(sorted(statuses))}").shuffle(responses)
    return 200, {"responses": responses}, {}


def _sub_request(
    api: GraphApi,
    injector: FaultInjector,
    item: Mapping[str, Any],
    statuses: Mapping[str, int],
    base: str,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    request_id = str(uuid.uuid4())
    if any(statuses.get(dep, 500) >= 400 for dep in item.get("dependsOn") or []):
        return 424, _error_body("FailedDependency", "A dependency failed.", request_id), {}
    # Batching does not bypass throttling: every sub-request costs a token (Microsoft Graph "JSON batching" and "throttling").
    wait = injector.take_token()
    if wait is None and injector.roll(injector.throttle_rate):
        wait = injector.random_retry_after()
    if wait is not None:
        body = _error_body("TooManyRequests", "Too many requests.", request_id)
        return 429, body, {"Retry-After": injector.format_retry_after(wait)}
    url = str(item["url"])
    if str(item["method"]).upper() != "GET":
        body = _error_body("Request_BadRequest", "The sandbox emulates GET sub-requests only.", request_id)
        return 405, body, {}
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        body = _error_body("BadRequest", "Batch sub-request URLs must be relative.", request_id)
        return 400, body, {}
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    args = dict(parse_qsl(parts.query, keep_blank_values=True))
    headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
    try:
        return api.get("/v1.0" + path, args, headers, base)
    except GraphError as exc:
        return exc.status, _error_body(exc.code, exc.message, request_id), exc.headers
