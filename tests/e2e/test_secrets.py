"""No secret ever leaves the process: logs, output files, metrics, endpoints, errors.

The product runs *without* --sandbox, configured like production through the
environment, against emulators started by `python -m sandbox serve`. Every secret
setting holds a sentinel (or the sandbox's real credentials, which are secrets too);
then everything the product wrote or served is searched for them.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, wait_for

pytestmark = pytest.mark.e2e

SENTINEL = "S3NT1NEL-do-not-leak-4f9a"


@pytest.fixture
def emulators(tmp_path: Path):
    port_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(tmp_path / "sb"), "--port-file", str(port_file), "--size", "40"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(port_file.exists, 60), "sandbox serve wrote no port file"
        yield json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def production_env(tmp_path: Path, ep: dict, **extra: str) -> dict[str, str]:
    env = BatchRunner(tmp_path).env()
    env.update(
        {
            "SYNC_TYPES": "departments,jobs,titles,employees,vehicles",
            "OUTPUT_DIR": str(tmp_path / "out"),
            "VIEWPOINT_DB_URL": ep["viewpoint"]["url"],
            "SAFETYAMP_URL": ep["safetyamp"]["url"],
            "SAFETYAMP_TOKEN": ep["safetyamp"]["token"],
            "SAFETYAMP_FQDN": ep["safetyamp"]["fqdn"],
            "SAFETYAMP_RATE_LIMIT_PER_MINUTE": "60000",
            "SAMSARA_URL": ep["samsara"]["url"],
            "SAMSARA_API_KEY": ep["samsara"]["api_key"],
            "MS_GRAPH_AUTHORITY_URL": ep["graph"]["authority_url"],
            "MS_GRAPH_URL": ep["graph"]["graph_url"],
            "MS_GRAPH_TENANT_ID": ep["graph"]["tenant_id"],
            "MS_GRAPH_CLIENT_ID": ep["graph"]["client_id"],
            "MS_GRAPH_CLIENT_SECRET": ep["graph"]["client_secret"],
            "MS_GRAPH_CA_BUNDLE": ep["graph"]["ca_bundle"],
            "REDIS_URL": f"redis://:{SENTINEL}@127.0.0.1:6379/15",
            "REDIS_PREFIX": "test-secrets:",
            "LOCK_REQUIRED": "false",
            "SYNC_TRIGGER_TOKEN": SENTINEL + "-trigger",
            "SQL_PASSWORD": SENTINEL + "-sql",
            "ONEROSTER_CLIENT_SECRET": SENTINEL + "-oneroster",
            "SCIM_TOKEN": SENTINEL + "-scim",
            "SAMSARA_WEBHOOK_SECRET": base64.b64encode(SENTINEL.encode()).decode(),
            "HTTP_MAX_RETRY_SECONDS": "3",
            "LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def secrets_of(ep: dict) -> list[str]:
    return [
        SENTINEL,
        base64.b64encode(SENTINEL.encode()).decode(),
        ep["safetyamp"]["token"],
        ep["samsara"]["api_key"],
        ep["graph"]["client_secret"],
    ]


def assert_clean(texts: dict[str, str], secrets: list[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"


def output_files(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def test_no_secret_in_logs_or_output_files(tmp_path: Path, emulators: dict) -> None:
    runs = {}
    good = subprocess.run(
        [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=production_env(tmp_path, emulators),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert good.returncode in (0, 1), good.stderr[-3000:]
    summary = json.loads(good.stdout.strip().splitlines()[-1])
    assert any(r["created"] for r in summary["runs"]), "the production-style run did sync"
    runs["good"] = good.stdout + good.stderr
    # Wrong credentials everywhere: now the secrets travel through error paths too.
    bad_env = production_env(
        tmp_path,
        emulators,
        SAFETYAMP_TOKEN=SENTINEL + "-sa",
        SAMSARA_API_KEY=SENTINEL + "-sam",
        MS_GRAPH_CLIENT_SECRET=SENTINEL + "-graph",
    )
    bad = subprocess.run(
        [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=bad_env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert "401" in bad.stderr or "Unauthenticated" in bad.stderr or "invalid_client" in bad.stderr
    runs["bad"] = bad.stdout + bad.stderr
    assert_clean({**runs, **output_files(tmp_path / "out")}, secrets_of(emulators))


def test_no_secret_in_endpoints_or_metrics(tmp_path: Path, emulators: dict) -> None:
    port = free_port()
    env = production_env(tmp_path, emulators, PORT=str(port), HOST="127.0.0.1", SYNC_INTERVAL_MINUTES="60")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"

            def metrics_after_run():
                try:
                    r = requests.get(base + "/metrics", timeout=5)
                except requests.ConnectionError:
                    return None
                return r.text if "sync_runs_total{status=" in r.text and 'sync="vehicles"' in r.text else None

            assert wait_for(metrics_after_run, 120, 0.5), "no run finished"
            bodies = {path: requests.get(base + path, timeout=10).text for path in ("/live", "/ready", "/health", "/metrics")}
            bodies["/sync refused"] = requests.post(base + "/sync", headers={"Authorization": "Bearer nope"}, timeout=5).text
            bodies["/webhooks"] = requests.post(base + "/webhooks/samsara", data=b"{}", timeout=5).text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=25) == 0
    bodies["daemon log"] = log_path.read_text()
    assert_clean(bodies, secrets_of(emulators))
    assert "degraded" in bodies["/health"] or "redis" in bodies["/health"]


def test_settings_repr_and_config_errors_hide_secrets() -> None:
    from config.settings import load_settings
    from utils.errors import ConfigurationError

    s = load_settings({"SAFETYAMP_TOKEN": SENTINEL, "SQL_PASSWORD": SENTINEL}, dotenv_path=None)
    assert SENTINEL not in repr(s) and SENTINEL not in str(s.model_dump())
    with pytest.raises(ConfigurationError) as info:
        load_settings({"SAFETYAMP_TOKEN": SENTINEL, "SQL_PASSWORD": SENTINEL + "x", "SAFETYAMP_PAGE_SIZE": "0"}, dotenv_path=None)
    assert "SAFETYAMP_PAGE_SIZE" in str(info.value) and SENTINEL not in str(info.value)


def roster_env(tmp_path: Path, ep: dict, **extra: str) -> dict[str, str]:
    good = {
        "SYNC_TYPES": "rosters",
        "ONEROSTER_URL": ep["oneroster"]["url"],
        "ONEROSTER_VERSION": str(ep["oneroster"]["version"]),
        "ONEROSTER_CLIENT_ID": ep["oneroster"]["client_id"],
        "ONEROSTER_CLIENT_SECRET": ep["oneroster"]["client_secret"],
        "ONEROSTER_TOKEN_URL": ep["oneroster"]["token_url"],
        "SCIM_URL": ep["scim"]["url"],
        "SCIM_TOKEN": ep["scim"]["token"],
    }
    return production_env(tmp_path, ep, **{**good, **extra})


def test_no_roster_secret_in_logs_or_output_files(tmp_path: Path, emulators: dict) -> None:
    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    good = run(roster_env(tmp_path, emulators))
    assert good.returncode == 0, good.stderr[-3000:]
    assert json.loads(good.stdout.strip().splitlines()[-1])["runs"][0]["created"] > 0, good.stdout[-3000:]
    texts = {"good": good.stdout + good.stderr}
    # Wrong credentials, each carrying a sentinel, through the error paths: the OAuth2
    # client secret, a static OneRoster bearer token, and the SCIM token.
    cases = {
        "oauth2 secret": {"ONEROSTER_CLIENT_SECRET": SENTINEL + "-oneroster"},
        "static token": {"ONEROSTER_AUTH": "bearer", "ONEROSTER_TOKEN": SENTINEL + "-ortoken"},
        "scim token": {"SCIM_TOKEN": SENTINEL + "-scim"},
    }
    for name, extra in cases.items():
        bad = run(roster_env(tmp_path, emulators, **extra))
        assert bad.returncode == 1, (name, bad.stderr[-3000:])
        assert "401" in bad.stderr or "invalid_client" in bad.stderr or "nauthori" in bad.stderr, (name, bad.stderr[-3000:])
        texts[name] = bad.stdout + bad.stderr
    secrets = [*secrets_of(emulators), emulators["oneroster"]["client_secret"], emulators["scim"]["token"]]
    assert_clean({**texts, **output_files(tmp_path / "out")}, secrets)
