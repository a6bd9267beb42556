"""Starts the roster side of a sandbox: the OneRoster emulator and scim2-server.

Kept out of sandbox/server.py so that file only gains one call: ``start_rosters`` seeds
the district if needed (sandbox/roster_seed.py), serves both apps through the shared
``EmulatorMiddleware`` (request log in the store, so tests count SCIM writes on the
server's side; faults when SANDBOX_FAULTS names "oneroster" or "scim") and returns the
endpoints the port file carries (docs/emulated-apis.md "Using it"):

    "oneroster": {"url", "version", "client_id", "client_secret", "token_url"}
    "scim":      {"url", "token"}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer

from sandbox import oneroster, scim
from sandbox.faults import FaultInjector
from sandbox.roster_seed import ensure_roster, load_credentials
from sandbox.store import Store
from sandbox.wsgi import EmulatorMiddleware

ONEROSTER_VERSION = "1.2"


def start_rosters(
    root: Path,
    *,
    size: int,
    data_seed: str,
    run_seed: int,
    store: Store,
    faults: Mapping[str, Any],
    serve: Callable[[str, Any], tuple[BaseWSGIServer, threading.Thread]],
    host: str,
) -> tuple[list[tuple[BaseWSGIServer, threading.Thread]], dict[str, dict[str, str]], list[Callable[[], None]]]:
    """Start both servers; returns (servers, endpoints, closers)."""
    ensure_roster(root, size=size, seed=data_seed)
    creds = load_credentials(root)
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []
    or_app = EmulatorMiddleware(
        oneroster.create_app(root, creds=creds, seed=data_seed),
        service="oneroster", store=store, injector=FaultInjector("oneroster", faults.get("oneroster"), run_seed),
        errors=oneroster.OneRosterErrors(),
    )  # fmt: skip
    scim_app, storage = scim.create_app(root, token=creds.scim_token)
    wrapped = EmulatorMiddleware(
        scim_app, service="scim", store=store, injector=FaultInjector("scim", faults.get("scim"), run_seed),
        errors=scim.ScimErrors(),
    )  # fmt: skip
    servers.append(serve("oneroster", or_app))
    servers.append(serve("scim", wrapped))
    or_url = f"http://{host}:{servers[0][0].server_port}"
    endpoints = {
        "oneroster": {
            "url": or_url,
            "version": ONEROSTER_VERSION,
            "client_id": creds.client_id,
            "client_secret": creds.client_secret,
            "token_url": f"{or_url}/token",
        },
        "scim": {"url": f"http://{host}:{servers[1][0].server_port}/v2", "token": creds.scim_token},
    }
    return servers, endpoints, [storage.close]
