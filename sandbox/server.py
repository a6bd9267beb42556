"""Starts every emulator of a sandbox directory on free loopback ports.

Why in-process threads: tests, ``sync_batch.py --sandbox`` and the daemon all need the
whole outside world in a second or two, without Docker and without network access. Each
emulator is a werkzeug server in a daemon thread on ``127.0.0.1:0``; the state lives in
the directory, so stopping (or killing) the process loses nothing that was acknowledged.

``start_sandbox(...).endpoints`` is the contract the product's sandbox wiring reads:
URLs, dummy credentials and the CA bundle for the HTTPS Graph/Entra emulator.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from sandbox import graph, safetyamp, samsara, tls
from sandbox.faults import FaultInjector, parse_faults, validate_faults
from sandbox.seed import SAFETYAMP_FQDN, VIEWPOINT_FILE, ensure_seeded, load_secrets, resolve_seed
from sandbox.store import Store, open_store
from sandbox.wsgi import EmulatorMiddleware, QuietRequestHandler

log = logging.getLogger("sandbox")
HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05


@dataclass
class RunningSandbox:
    """A started sandbox: ``endpoints`` for clients, ``stop()`` to shut it down.

    Also a context manager (``with start_sandbox(d) as sb: ...``).
    """

    directory: Path
    endpoints: dict[str, dict[str, str]]
    seed: int
    _servers: list[tuple[BaseWSGIServer, threading.Thread]] = field(default_factory=list, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _closers: list[Any] = field(default_factory=list, repr=False)  # rosters (issue 4): scim journal

    def __repr__(self) -> str:  # endpoints hold credentials: keep them out of reprs and logs
        return f"RunningSandbox(directory={str(self.directory)!r}, stopped={self._store is None})"

    def stop(self) -> None:
        """Stop every server and close the store; the state stays on disk."""
        for server, _thread in self._servers:
            server.shutdown()
        for server, thread in self._servers:
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()
        for close in self._closers:  # rosters (issue 4)
            close()
        self._closers.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(name: str, app: Any, ssl_context: Any = None) -> tuple[BaseWSGIServer, threading.Thread]:
    server = make_server(HOST, 0, app, threaded=True, request_handler=QuietRequestHandler, ssl_context=ssl_context)
    # A short poll interval keeps stop() (and so every test's teardown) fast.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, name=f"sandbox-{name}", daemon=True
    )
    thread.start()
    return server, thread


def start_sandbox(
    directory: str | Path,
    size: int = 200,
    faults: dict[str, Any] | None = None,
    seed: int | None = None,
) -> RunningSandbox:
    """Seed ``directory`` if needed and start the SafetyAmp, Samsara and Graph emulators.

    ``faults=None`` reads ``SANDBOX_FAULTS``; ``seed=None`` reads ``SANDBOX_SEED`` (else a
    random seed). The seed drives fault randomness; the data seed is fixed at seeding time
    and recorded in ``seed.json`` (Samsara's short pages follow it).
    """
    root = Path(directory).resolve()
    fault_config = parse_faults(os.environ.get("SANDBOX_FAULTS")) if faults is None else validate_faults(faults)
    run_seed = resolve_seed(seed)
    # Several processes may start on one folder at once (the daemon and two CronJob runs
    # in the overlap test, an operator beside a running daemon): seeding, the start
    # counter and the roster/SCIM files are set up under one exclusive lock, so none of
    # them sees another's half-written file.
    with setup_lock(root):
        return _start_locked(root, size, fault_config, run_seed)


@contextlib.contextmanager
def setup_lock(root: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``<root>/.setup.lock`` (released by the kernel if we die)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".setup.lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _endpoints(
    root: Path, creds: Any, servers: list[Any], roster_endpoints: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The port file's content: where each emulator listens and its dummy credentials."""
    (sa_server, _), (sam_server, _), (graph_server, _) = servers[:3]
    graph_origin = f"https://{HOST}:{graph_server.server_port}"
    return {
        "safetyamp": {
            "url": f"http://{HOST}:{sa_server.server_port}",
            "token": creds.safetyamp_token,
            "fqdn": SAFETYAMP_FQDN,
            "max_page_size": str(safetyamp.MAX_LIMIT),  # its documented page cap (docs/emulated-apis.md)
        },
        "samsara": {"url": f"http://{HOST}:{sam_server.server_port}", "api_key": creds.samsara_api_key},
        "graph": {
            "authority_url": graph_origin,
            "graph_url": graph_origin,
            "tenant_id": creds.graph_tenant_id,
            "client_id": creds.graph_client_id,
            "client_secret": creds.graph_client_secret,
            "ca_bundle": str(root / tls.CA_FILE),
        },
        "viewpoint": {"url": f"sqlite:///{root / VIEWPOINT_FILE}"},
        **roster_endpoints,  # rosters (issue 4): "oneroster" and "scim"
    }


def _start_locked(root: Path, size: int, fault_config: dict[str, Any], run_seed: int) -> RunningSandbox:
    marker = ensure_seeded(root, size=size, seed=run_seed)
    data_seed = str(marker["seed"])
    creds = load_secrets(root)
    store = open_store(root)
    # Faults follow SANDBOX_SEED *and* how many times this folder has been started, so a
    # sequence of runs is repeatable as a whole while each run meets different faults
    # (a fixed per-run sequence would fail the same request every run, which no real
    # outage does, and would make "converges within N runs" untestable).
    starts = int(store.meta_get("starts") or "0") + 1
    store.meta_set("starts", str(starts))
    fault_seed = run_seed * 1_000_003 + starts
    sandbox = RunningSandbox(directory=root, endpoints={}, seed=run_seed, _store=store)
    try:
        sa_injector = FaultInjector("safetyamp", fault_config.get("safetyamp"), fault_seed)
        sa_app = EmulatorMiddleware(
            safetyamp.create_app(store, token=creds.safetyamp_token, fqdn=SAFETYAMP_FQDN),
            service="safetyamp", store=store, injector=sa_injector, errors=safetyamp.SafetyAmpErrors(),
        )  # fmt: skip
        sam_injector = FaultInjector("samsara", fault_config.get("samsara"), fault_seed, fractional_retry_after=True)
        sam_app = EmulatorMiddleware(
            samsara.create_app(store, api_key=creds.samsara_api_key, seed=data_seed),
            service="samsara", store=store, injector=sam_injector, errors=samsara.SamsaraErrors(),
        )  # fmt: skip
        graph_injector = FaultInjector("graph", fault_config.get("graph"), fault_seed)
        graph_app = EmulatorMiddleware(
            graph.create_app(
                store, tenant_id=creds.graph_tenant_id, client_id=creds.graph_client_id,
                client_secret=creds.graph_client_secret, injector=graph_injector, seed=data_seed,
            ),
            service="graph", store=store, injector=graph_injector, errors=graph.GraphErrors(),
            route=graph.route,
        )  # fmt: skip
        sandbox._servers.append(_serve("safetyamp", sa_app))
        sandbox._servers.append(_serve("samsara", sam_app))
        sandbox._servers.append(_serve("graph", graph_app, tls.server_context(root)))
        # --- rosters (issue 4): OneRoster emulator + scim2-server (sandbox/rosters.py) ---
        from sandbox.rosters import start_rosters

        roster_servers, roster_endpoints, closers = start_rosters(
            root, size=int(marker.get("size", size)), data_seed=data_seed, run_seed=fault_seed, store=store,
            faults=fault_config, serve=_serve, host=HOST,
        )  # fmt: skip
        sandbox._servers += roster_servers
        sandbox._closers += closers
        # --- end rosters ---
    except BaseException:
        sandbox.stop()
        raise
    sandbox.endpoints = _endpoints(root, creds, sandbox._servers, roster_endpoints)
    log.info("sandbox started in %s", root)
    return sandbox
