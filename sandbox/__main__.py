"""Command line of the sandbox (README "The daemon" and docs/emulated-apis.md "Using it").

``python -m sandbox serve --dir DIR [--port-file FILE] [--size N]`` runs every emulator in
the foreground, writes the endpoints JSON (with the dummy credentials, mode 0600) to FILE,
prints one "ready" line to stderr and stops on SIGTERM/SIGINT, keeping the state.

``python -m sandbox mutate --dir DIR --percent P [--seed S]`` applies source changes and
prints their summary as JSON.

``python -m sandbox tenants --dir DIR --count N [--size S] [--seed S] [--fault TENANT=SPEC ...]
[--port-file FILE]`` runs N customer accounts in the foreground (sandbox/tenants.py), writes
their tenant files and secret files, prints one "ready" line naming both folders and stops
on SIGTERM/SIGINT, keeping the state; FILE gets ``tenants.json``'s content.

Faults come from ``SANDBOX_FAULTS``, repeatable randomness from ``SANDBOX_SEED``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def _serve(args: argparse.Namespace) -> int:
    from sandbox.seed import write_private
    from sandbox.server import start_sandbox

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sandbox = start_sandbox(args.dir, size=args.size, seed=args.seed)
    try:
        if args.port_file:
            # 0600 and atomic: the file carries the (dummy) credentials and is polled by readers.
            port_file = Path(args.port_file)
            port_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(port_file, json.dumps(sandbox.endpoints, indent=2))
        ep = sandbox.endpoints
        print(
            f"sandbox ready: dir={sandbox.directory} safetyamp={ep['safetyamp']['url']} "
            f"samsara={ep['samsara']['url']} graph={ep['graph']['graph_url']} "
            f"viewpoint={ep['viewpoint']['url']}"
            + (f" oneroster={ep['oneroster']['url']} scim={ep['scim']['url']}" if "oneroster" in ep else ""),  # issue 4
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    print("sandbox stopped; state kept in " + str(sandbox.directory), file=sys.stderr, flush=True)
    return 0


def _tenants(args: argparse.Namespace) -> int:
    from sandbox.seed import write_private
    from sandbox.tenants import start_tenants

    faults: dict[str, str] = {}
    for item in args.fault or []:
        tenant, sep, spec = item.partition("=")
        if not sep or not tenant or not spec:
            raise ValueError(f"--fault takes TENANT=SPEC (SPEC: the SANDBOX_FAULTS JSON), got {item!r}")
        if tenant in faults:
            raise ValueError(f"--fault: tenant {tenant} given twice")
        faults[tenant] = spec
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    running = start_tenants(args.dir, args.count, size=args.size, seed=args.seed, faults=faults)
    try:
        if args.port_file:
            port_file = Path(args.port_file)
            port_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(port_file, running.state_file.read_text(encoding="utf-8"))
        kinds = running.kinds()
        companies = sum(1 for k in kinds.values() if k == "company")
        print(
            f"sandbox tenants ready: dir={running.directory} tenants={running.tenants_dir} secrets={running.secrets_dir} "
            f"accounts={len(kinds)} ({companies} companies, {len(kinds) - companies} districts) ids={','.join(kinds)} "
            f"started_in={running.started_in_s:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
    print("sandbox tenants stopped; state kept in " + str(running.directory), file=sys.stderr, flush=True)
    return 0


def _mutate(args: argparse.Namespace) -> int:
    from sandbox.mutate import mutate

    summary = mutate(args.dir, args.percent, seed=args.seed)
    print(json.dumps(summary))
    return 0


def _admin(args: argparse.Namespace) -> int:
    from sandbox import admin

    if args.action == "create":
        values = json.loads(args.json or "{}")
        if not isinstance(values, dict):
            raise ValueError("--json must be an object")
        out = admin.create(args.dir, args.collection, values)
    elif args.key is None:
        raise ValueError(f"{args.action} needs --key")
    elif args.action == "delete":
        out = admin.delete(args.dir, args.collection, args.key)
    elif args.action == "edit":
        values = {}
        for item in args.set or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ValueError(f"--set wants FIELD=VALUE (JSON or text), got {item!r}")
            try:
                values[name] = json.loads(value)
            except ValueError:
                values[name] = value
        if not values:
            raise ValueError("edit needs at least one --set FIELD=VALUE")
        out = admin.edit(args.dir, args.collection, args.key, values)
    else:
        out = admin.get(args.dir, args.collection, args.key) or {}
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for usage or configuration errors)."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run every emulator in the foreground")
    serve.add_argument("--dir", required=True, help="sandbox state directory (seeded if missing)")
    serve.add_argument("--port-file", help="write the endpoints JSON here once ready")
    serve.add_argument("--size", type=int, default=200, help="employees in a newly seeded sandbox")
    serve.add_argument("--seed", type=int, default=None, help="seed (default: SANDBOX_SEED or random)")
    change = commands.add_parser("mutate", help="apply realistic source changes")
    change.add_argument("--dir", required=True, help="a seeded sandbox directory")
    change.add_argument("--percent", type=float, required=True, help="share of records to change")
    change.add_argument("--seed", type=int, default=None, help="seed (default: SANDBOX_SEED or random)")
    edits = commands.add_parser("admin", help="edit SafetyAmp records as an administrator would (outside the sync)")
    edits.add_argument("action", choices=("edit", "delete", "create", "get"))
    edits.add_argument("--dir", required=True, help="a seeded sandbox directory")
    edits.add_argument("--collection", required=True, choices=("users", "sites", "site_clusters", "assets", "user_titles"))
    edits.add_argument("--key", help="the record's business key (emp_id, external_code, code, title name)")
    edits.add_argument("--set", action="append", metavar="FIELD=VALUE", help="edit: a field's new value (JSON or text)")
    edits.add_argument("--json", help="create: the record as a JSON object")
    many = commands.add_parser("tenants", help="run N customer accounts (companies and districts) in the foreground")
    many.add_argument("--dir", required=True, help="state directory (accounts seeded if missing, reused otherwise)")
    many.add_argument("--count", type=int, required=True, help="number of accounts (every third a school district)")
    many.add_argument("--size", type=int, default=30, help="employees/students of a newly seeded account")
    many.add_argument("--seed", type=int, default=None, help="seed (default: SANDBOX_SEED or random)")
    many.add_argument(
        "--fault", action="append", metavar="TENANT=SPEC", help="SANDBOX_FAULTS JSON for one account only (repeatable)"
    )
    many.add_argument("--port-file", help="write tenants.json's content (endpoints, credentials; 0600) here once ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "tenants":
            return _tenants(args)
        if args.command == "admin":
            return _admin(args)
        return _serve(args) if args.command == "serve" else _mutate(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
