"""Samsara Fleet API emulator (Flask): ``/fleet/vehicles`` and ``/fleet/drivers``.

Why: the vehicles sync must survive Samsara's documented paging contract (opaque ``after``
cursors, ``limit`` max 512, pages that are short or even empty while ``hasNextPage`` is
still true) and its 429s with fractional ``Retry-After`` (docs/emulated-apis.md, "Samsara"). A
client that stops on the first empty page, or treats the gateway ``serial`` as the
vehicle's identity, fails here before it fails in production.

Short and empty pages are deterministic: whether page *k* of a walk is short follows from
the sandbox seed, so a failing test replays exactly.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.wrappers import Response

from sandbox.store import Condition, Store
from sandbox.wsgi import bearer_token, decode_opaque, encode_opaque, json_response

SERVICE = "samsara"
MAX_LIMIT = 512  # SAM-pg: default and maximum
CURSOR_TTL_S = 30 * 24 * 3600  # SAM-pg: cursors expire after 30 days
QUIRK_ONE_IN = 7  # about one page in seven is short or empty (Assumption on frequency)


def omit_nulls(value: Any) -> Any:
    """``value`` without null members, at any depth.

    Samsara's published schema types every field (``parentTagId`` is a string) and says an
    optional field without a value is omitted, never null. Applied to every answer, so a
    sandbox folder seeded before a generator was fixed still serves what Samsara would.
    """
    if isinstance(value, dict):
        return {k: omit_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [omit_nulls(v) for v in value]
    return value


def _error(status: int, message: str) -> Response:
    """Samsara's error body: a message and a request id (Assumption on exact wording)."""
    return json_response({"message": message, "requestId": uuid.uuid4().hex}, status)


class SamsaraErrors:
    """Samsara's 429/5xx bodies (fault injection)."""

    def rate_limited(self, retry_after: str) -> Response:
        """429 with a fractional ``Retry-After`` (SAM-rl)."""
        response = _error(429, "Rate limit exceeded. Retry after the time in Retry-After.")
        response.headers["Retry-After"] = retry_after
        return response

    def server_error(self, status: int) -> Response:
        """JSON 5xx (Assumption on wording)."""
        text = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable"}
        return _error(status, text.get(status, "Server error"))


def page_quirk(seed: str, collection: str, filter_key: str, page_index: int) -> str | None:
    """``"empty"``, ``"short"`` or None for page ``page_index`` of a walk (deterministic)."""
    digest = hashlib.sha256(f"{seed}:{collection}:{filter_key}:{page_index}".encode()).digest()
    roll = digest[0] % QUIRK_ONE_IN
    if roll == 0:
        return "empty"
    if roll == 1:
        return "short"
    return None


# ---- webhooks: events as Samsara delivers them ---------------------------------------
# The emulator serves the Fleet API; it subscribes no webhook and sends nothing by itself.
# Tests and bench/run.py build the deliveries here, in Samsara's shape, and post them to
# the product's endpoint. Signing is written again from Samsara's description (not the
# product's utils/webhooks.py), so the product's check is tested against an independent
# signer. docs/emulated-apis.md, "Samsara", lists the sources and the assumptions.
WEBHOOK_ORG_ID = 20936  # any number: Samsara's example org
WEBHOOK_ID = "1411751028848270"  # the webhook's id, a numeric string as in Samsara's examples


def webhook_event(event_type: str, data: dict[str, Any] | None = None, *, event_id: str | None = None) -> dict[str, Any]:
    """One Webhooks 2.0 event body: ``eventId`` (a UUID), ``eventTime`` (RFC 3339, UTC,
    milliseconds), ``eventType``, ``orgId``, ``webhookId`` and ``data`` (for the vehicle
    and driver events, ``{"vehicle": {...}}`` or ``{"driver": {...}}``: the object as the
    Fleet API returns it)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return {
        "eventId": event_id or str(uuid.uuid4()),
        "eventTime": stamp,
        "eventType": event_type,
        "orgId": WEBHOOK_ORG_ID,
        "webhookId": WEBHOOK_ID,
        "data": data or {},
    }


def signed_delivery(secret_b64: str, event: dict[str, Any], *, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one delivery: the JSON body, ``X-Samsara-Timestamp`` (Unix
    seconds) and ``X-Samsara-Signature: v1=<hex>``, the HMAC-SHA256 of
    ``v1:<timestamp>:<body>`` keyed with the base64-decoded webhook secret."""
    import base64
    import hmac
    import json

    body = json.dumps(event, separators=(",", ":")).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(base64.b64decode(secret_b64), b"v1:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Samsara-Timestamp": ts, "X-Samsara-Signature": f"v1={digest}"}
    return body, headers


def create_app(store: Store, *, api_key: str, seed: str) -> Flask:
    """The Samsara emulator bound to one store, API key and quirk seed."""
    app = Flask("sandbox.samsara")
    app.url_map.strict_slashes = False

    @app.before_request
    def _auth() -> Response | None:
        if not secrets.compare_digest(bearer_token(request.headers.get("Authorization")), api_key):
            return _error(401, "Unauthorized")
        return None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc, NotFound):
            return _error(404, "Not found")
        return _error(exc.code or 500, exc.name)

    def _list(collection: str, where: list[Condition], filter_key: str) -> Response:
        raw_limit = request.args.get("limit")
        limit = MAX_LIMIT
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                return _error(400, f"Invalid value for parameter 'limit': {raw_limit!r}")
            if not 1 <= limit <= MAX_LIMIT:
                return _error(400, f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        after_rid = 0
        page_index = 0
        after = request.args.get("after")
        if after:
            cursor = decode_opaque(after)
            if (
                cursor is None
                or cursor.get("c") != collection
                or cursor.get("f") != filter_key
                or not isinstance(cursor.get("r"), int)
                or not isinstance(cursor.get("k"), int)
            ):
                return _error(400, "Invalid pagination cursor.")
            if time.time() - float(cursor.get("t", 0)) > CURSOR_TTL_S:
                return _error(400, "Pagination cursor has expired.")
            after_rid, page_index = cursor["r"], cursor["k"]
        quirk = page_quirk(seed, collection, filter_key, page_index)
        take = 0 if quirk == "empty" else max(1, limit // 3) if quirk == "short" else limit
        rows = store.page(SERVICE, collection, limit=take + 1, after_rid=after_rid, where=where)
        # One row more than the page tells whether anything is left; an "empty" quirk
        # page with rows left says hasNextPage=true, as Samsara's docs warn it may.
        page, more = rows[:take], len(rows) > take
        last_rid = page[-1][0] if page else after_rid
        end_cursor = encode_opaque({"c": collection, "f": filter_key, "r": last_rid, "k": page_index + 1, "t": int(time.time())})
        return json_response(
            {
                "data": [omit_nulls(data) for _rid, data in page],
                "pagination": {"endCursor": end_cursor if more else "", "hasNextPage": more},
            },
            200,
        )

    @app.get("/fleet/vehicles")
    def list_vehicles() -> Response:
        return _list("vehicles", [], "")

    @app.get("/fleet/drivers")
    def list_drivers() -> Response:
        # Samsara API reference ("List all drivers"): driverActivationStatus defaults to
        # "active"; deactivated drivers are only listed when asked for.
        status = request.args.get("driverActivationStatus", "active")
        if status not in ("active", "deactivated"):
            return _error(400, f"Invalid value for parameter 'driverActivationStatus': {status!r}")
        return _list("drivers", [("driverActivationStatus", "eq", status)], status)

    @app.get("/fleet/vehicles/<vehicle_id>")
    def get_vehicle(vehicle_id: str) -> Response:
        return _get("vehicles", vehicle_id)

    @app.get("/fleet/drivers/<driver_id>")
    def get_driver(driver_id: str) -> Response:
        return _get("drivers", driver_id)

    def _get(collection: str, object_id: str) -> Response:
        rid = store.rid_by_unique(SERVICE, collection, "id", object_id)
        data = store.get(SERVICE, collection, rid) if rid is not None else None
        if data is None:
            return _error(404, f"{collection[:-1].capitalize()} {object_id} not found")
        return json_response({"data": omit_nulls(data)}, 200)

    return app
