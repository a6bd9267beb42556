"""Helpers of the contract suite (tests/contract/conftest.py has the fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from sandbox.server import RunningSandbox


def sandbox_settings(sandbox: RunningSandbox, tmp_path: Path, **env: str) -> Settings:
    """Settings that point every adapter at ``sandbox`` (what ``--sandbox`` does for the
    CLI), with fast retries and ``env`` on top."""
    ep = sandbox.endpoints
    sa, sam, gr, vp, sc = ep["safetyamp"], ep["samsara"], ep["graph"], ep["viewpoint"], ep["scim"]
    base = {
        "OUTPUT_DIR": str(tmp_path),
        "SAFETYAMP_URL": sa["url"],
        "SAFETYAMP_TOKEN": sa["token"],
        "SAFETYAMP_FQDN": sa["fqdn"],
        "SAFETYAMP_RATE_LIMIT_PER_MINUTE": "60000",
        "SAMSARA_URL": sam["url"],
        "SAMSARA_API_KEY": sam["api_key"],
        "SAMSARA_RATE_LIMIT_PER_SECOND": "1000",
        "MS_GRAPH_AUTHORITY_URL": gr["authority_url"],
        "MS_GRAPH_URL": gr["graph_url"],
        "MS_GRAPH_TENANT_ID": gr["tenant_id"],
        "MS_GRAPH_CLIENT_ID": gr["client_id"],
        "MS_GRAPH_CLIENT_SECRET": gr["client_secret"],
        "MS_GRAPH_CA_BUNDLE": gr["ca_bundle"],
        "VIEWPOINT_DB_URL": vp["url"],
        "SCIM_URL": sc["url"],
        "SCIM_TOKEN": sc["token"],
        "HTTP_MAX_RETRY_SECONDS": "5",
    }
    return load_settings({**base, **env}, dotenv_path=None)


def no_sleep(_seconds: float) -> None:
    """Retries of the real adapters do not wait (the emulators run fault-free here)."""


def all_of(rows: list[dict[str, Any]], field: str, values: set[Any]) -> list[dict[str, Any]]:
    return [r for r in rows if str(r.get(field)) in {str(v) for v in values}]
