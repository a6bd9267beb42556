"""The sandbox's SCIM target: the real third-party ``scim2-server``, made durable.

A real SCIM server rather than a home-made one (a home-made one would agree with us), so the sandbox runs
scim2-server's own WSGI application (``BearerTokenApplication``, the one its
``scim2-server --bearer-token`` command serves) with the RFC 7643 schemas, the default
resource types (User with the enterprise extension, Group) and its default
ServiceProviderConfig (PATCH, filter with maxResults 1000, sort, bulk, ETags), plus the
bearer scheme. What it decides (uniqueness of userName, 409 bodies, ETag versions, 412,
PATCH semantics) is scim2-server's, not ours.

One quirk can be switched on (``create_app(..., username_filter_case_exact=True)``): a
``userName eq "..."`` filter that compares case-sensitively while uniqueness still ignores
case, as some SCIM services do although RFC 7643 section 4.1.1 makes ``userName``
``caseExact: false``. A client that meets a 409 on create and looks the name up by filter
then finds nothing; the rosters sync must cope (``CaseExactUserNameFilter``).

The one thing added is durability: scim2-server keeps resources in memory
(``InMemoryStorage``), while a sandbox folder must keep the target's state between
runs. ``JournaledStorage`` appends every acknowledged write to ``scim-journal.jsonl``
(flushed before the response is sent) and replays it on start, compacting it; versions
continue from the highest one seen so an ETag is never reused.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from scim2_models import ResourceType, ScimProvider
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import load_default_resource_types, load_default_schemas, load_default_service_provider_config
from werkzeug.wrappers import Request, Response

from sandbox.wsgi import json_response

JOURNAL_FILE = "scim-journal.jsonl"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
log = logging.getLogger("sandbox.scim")


class ScimErrors:
    """429/5xx for fault injection, in the RFC 7644 §3.12 error shape."""

    def rate_limited(self, retry_after: str) -> Response:
        response = json_response({"schemas": [ERROR_SCHEMA], "status": "429", "detail": "Too many requests"}, 429,
                                 content_type="application/scim+json")  # fmt: skip
        response.headers["Retry-After"] = retry_after
        return response

    def server_error(self, status: int) -> Response:
        return json_response({"schemas": [ERROR_SCHEMA], "status": str(status), "detail": "Server error"}, status,
                             content_type="application/scim+json")  # fmt: skip


def build_provider() -> ScimProvider:
    """RFC 7643 schemas and resource types, the default configuration plus bearer tokens."""
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    return ScimProvider.from_discovery(load_default_schemas().values(), load_default_resource_types().values(), config=config)


class JournaledStorage(InMemoryStorage):
    """scim2-server's in-memory storage with an append-only journal on disk."""

    def __init__(self, path: Path, provider: ScimProvider) -> None:
        super().__init__()
        self.path = path
        self._types = {rt.name: (rt, provider.model_for(rt)) for rt in provider.resource_types}
        state: dict[tuple[str, str], dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a kill: that write was never acknowledged
                key = (entry.get("type"), entry.get("id"))
                if entry.get("op") == "put":
                    state[key] = entry["resource"]
                elif entry.get("op") == "del":
                    state.pop(key, None)
        resources: list[Any] = []
        top = 0
        for (name, _rid), data in state.items():
            _rt, model = self._types[name]
            assert model is not None, f"no model for resource type {name}"
            resources.append(model.model_validate(data))
            m = re.search(r"(\d+)", str((data.get("meta") or {}).get("version") or ""))
            top = max(top, int(m.group(1)) if m else 0)
        self.resources = resources
        self.versions = itertools.count(top + 1)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for (name, rid), data in state.items():
                handle.write(json.dumps({"op": "put", "type": name, "id": rid, "resource": data}) + "\n")
        os.replace(tmp, path)
        self._journal = open(path, "a", encoding="utf-8")

    def _write(self, entry: dict[str, Any]) -> None:
        self._journal.write(json.dumps(entry, default=str) + "\n")
        self._journal.flush()

    def create(self, resource_type: ResourceType, resource: Any) -> Any:
        with self.lock:
            stored = super().create(resource_type, resource)
            self._write({"op": "put", "type": resource_type.name, "id": stored.id, "resource": stored.model_dump(mode="json")})
            return stored

    def update(self, resource_type: ResourceType, resource: Any, *, expected_version: str | None = None) -> Any:
        with self.lock:
            stored = super().update(resource_type, resource, expected_version=expected_version)
            self._write({"op": "put", "type": resource_type.name, "id": stored.id, "resource": stored.model_dump(mode="json")})
            return stored

    def delete(self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None) -> None:
        with self.lock:
            super().delete(resource_type, resource_id, expected_version=expected_version)
            self._write({"op": "del", "type": resource_type.name, "id": resource_id})

    def close(self) -> None:
        with self.lock:
            self._journal.close()


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_USERNAME_EQ = re.compile(r'^\s*userName\s+eq\s+("(?:[^"\\]|\\.)*")\s*$', re.IGNORECASE)


class CaseExactUserNameFilter:
    """WSGI wrapper: ``GET .../Users?filter=userName eq "X"`` keeps only the users whose
    userName is exactly ``X`` (case included), like SCIM services that compare filters
    case-sensitively. Everything else, uniqueness on create included, is scim2-server's."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        wanted = self._wanted(environ)
        if wanted is None:
            return self.app(environ, start_response)
        response = Response.from_app(self.app, environ)
        body = json.loads(response.get_data(as_text=True) or "null") if response.status_code == 200 else None
        if isinstance(body, dict) and isinstance(body.get("Resources"), list):
            kept = [r for r in body["Resources"] if isinstance(r, dict) and r.get("userName") == wanted]
            body.update(Resources=kept, totalResults=len(kept), itemsPerPage=len(kept))
            response.set_data(json.dumps(body))
        return response(environ, start_response)

    @staticmethod
    def _wanted(environ: dict[str, Any]) -> str | None:
        request = Request(environ)
        if request.method != "GET" or not request.path.rstrip("/").endswith("/Users"):
            return None
        raw = (parse_qs(environ.get("QUERY_STRING", "")).get("filter") or [""])[0]
        match = _USERNAME_EQ.match(raw)
        if match is None:
            return None
        value = json.loads(match.group(1))
        return value if isinstance(value, str) else None


def create_app(directory: Path, *, token: str, username_filter_case_exact: bool = False) -> tuple[WsgiApp, JournaledStorage]:
    """scim2-server's bearer-token WSGI application over the directory's journal
    (behind ``CaseExactUserNameFilter`` when asked for)."""
    provider = build_provider()
    storage = JournaledStorage(directory / JOURNAL_FILE, provider)
    service = ScimService(provider, secret=secrets.token_urlsafe(32))
    app: WsgiApp = BearerTokenApplication(storage, provider, service=service, bearer_tokens=[token])
    if username_filter_case_exact:
        app = CaseExactUserNameFilter(app)
    return app, storage
