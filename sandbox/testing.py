"""Small helpers for tests that talk to a running sandbox with plain ``requests``.

Why here and not in a conftest: the sandbox's own tests and the product's end-to-end tests
both need "a client that sends what the vendor requires", and the sandbox is the one place
that knows those requirements. Nothing in the product imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

USER_AGENT = "SafetyAmpSyncSandboxTests/1.0"


def safetyamp_headers(endpoints: Mapping[str, Any]) -> dict[str, str]:
    """The four headers SafetyAmp requires on every request."""
    sa = endpoints["safetyamp"]
    return {
        "Authorization": f"Bearer {sa['token']}",
        "Fqdn": sa["fqdn"],
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }


def samsara_headers(endpoints: Mapping[str, Any]) -> dict[str, str]:
    """Bearer API key for Samsara."""
    return {"Authorization": f"Bearer {endpoints['samsara']['api_key']}"}


def graph_token(endpoints: Mapping[str, Any]) -> str:
    """An access token from the emulated Entra token endpoint (client credentials).

    ``verify`` is passed per request: a session-level ``verify`` would be overridden by
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (a requests quirk), the per-request one is not.
    """
    g = endpoints["graph"]
    response = requests.post(
        f"{g['authority_url']}/{g['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": g["client_id"],
            "client_secret": g["client_secret"],
            "scope": f"{g['graph_url']}/.default",
        },
        verify=g["ca_bundle"],
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
