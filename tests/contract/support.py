"""Helpers of the contract suite (tests/contract/conftest.py has the fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.bootstrap import sandbox_overrides
from config.settings import Settings, load_settings
from sandbox.server import RunningSandbox


def sandbox_settings(sandbox: RunningSandbox, tmp_path: Path, **env: str) -> Settings:
    """Settings that point every adapter at ``sandbox`` (what ``--sandbox`` does for the
    CLI), with fast retries and ``env`` on top."""
    # The product's own mapping (config.bootstrap.sandbox_overrides), so the contract
    # suite reaches the sandbox exactly as `--sandbox` runs do.
    base = {"OUTPUT_DIR": str(tmp_path), "HTTP_MAX_RETRY_SECONDS": "5"}
    base.update(sandbox_overrides(sandbox.endpoints, sandbox.directory, {**base, **env}))
    return load_settings({**base, **env}, dotenv_path=None)


def no_sleep(_seconds: float) -> None:
    """Retries of the real adapters do not wait (the emulators run fault-free here)."""


def all_of(rows: list[dict[str, Any]], field: str, values: set[Any]) -> list[dict[str, Any]]:
    return [r for r in rows if str(r.get(field)) in {str(v) for v in values}]
