"""Starting the sandbox for the product's own ``--sandbox`` runs (main.py and
sync_batch.py; product code never imports this, the entry points do).

One place decides what ``--sandbox`` means for the settings:

* without ``--tenants``: one sandbox in ``--sandbox-dir``; its endpoints become forced
  settings (``config.bootstrap.sandbox_overrides``) and a TENANTS_DIR of the
  environment is dropped, so a sandbox run never reaches a real tenant's systems;
* with ``--tenants N``: N accounts (sandbox/tenants.py) in ``<sandbox-dir>/tenants``;
  TENANTS_DIR and SECRETS_DIR are forced into the environment (the tenant watcher
  reads them from there), with a Redis prefix of that folder unless one is set.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

SANDBOX_DIR = "output/sandbox"


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sandbox``, ``--sandbox-dir``, ``--sandbox-size`` and ``--tenants`` (the same
    for main.py and sync_batch.py); check them with ``check_sandbox_arguments``."""
    parser.add_argument("--sandbox", action="store_true", help="run against the built-in sandbox (no credentials needed)")
    parser.add_argument("--sandbox-dir", default=SANDBOX_DIR, help="sandbox state folder (created and seeded if missing)")
    parser.add_argument("--sandbox-size", type=int, default=200, help="employees in a newly seeded sandbox (default 200)")
    parser.add_argument(
        "--tenants",
        type=int,
        default=None,
        metavar="N",
        help="with --sandbox: N tenant accounts (companies and districts, docs/tenants.md), served as TENANTS_DIR",
    )


def check_sandbox_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sandbox_size < 1:
        parser.error("--sandbox-size must be at least 1")
    if args.tenants is not None and (not args.sandbox or args.tenants < 1):
        parser.error("--tenants N needs --sandbox and N >= 1")


def start_for_product(
    stack: ExitStack,
    sandbox_dir: Path,
    *,
    size: int,
    tenants: int | None,
    environ: dict[str, str],
) -> dict[str, str]:
    """Start what ``--sandbox`` asks for (stopped when ``stack`` closes); returns the
    settings overrides and updates ``environ`` in place."""
    from sandbox.server import start_sandbox
    from sandbox.tenants import product_environ, start_tenants

    if tenants:
        running = stack.enter_context(start_tenants(Path(sandbox_dir) / "tenants", tenants, size=size))
        environ.update(product_environ(running, environ))
        return {}
    from config.bootstrap import sandbox_overrides

    environ.pop("TENANTS_DIR", None)
    sandbox = stack.enter_context(start_sandbox(Path(sandbox_dir), size=size))
    return sandbox_overrides(sandbox.endpoints, Path(sandbox_dir), environ)
