"""Many tenants in the sandbox (issue 13), through real HTTP: three accounts with distinct
credentials, tenant files the product's own loader and checker accept, a credential of
one account at another's emulator refused and recorded, the request ledger's instance and
run, faults on one account only, restart and the command line."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from config.settings import load_settings
from config.tenants import PROCESS_WIDE, SECRET_NAMES, load_tenant_dir
from sandbox.tenants import (
    RunningTenants,
    account_credentials,
    cross_tenant,
    duplicated_credentials,
    overlapping_runs,
    read_ledger,
    start_tenants,
)
from sandbox.testing import graph_token, safetyamp_headers, samsara_headers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAULTY = "co-02"
FAULTS = {FAULTY: '{"samsara": {"error_rate": 1.0}}'}  # the SANDBOX_FAULTS syntax, for co-02 only


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTenants]:
    running = start_tenants(tmp_path_factory.mktemp("tenants"), 3, size=10, seed=1313, faults=FAULTS)
    try:
        yield running
    finally:
        running.stop()


def agent(instance: str, run: str) -> str:
    return f"safetyamp-sync (instance {instance}; run {run})"


def records_since(directory: Path, count: int) -> list[dict[str, Any]]:
    return cross_tenant(directory)[count:]


def test_accounts_are_companies_and_districts_with_credentials_of_their_own(tenants: RunningTenants) -> None:
    assert tenants.kinds() == {"co-01": "company", "co-02": "company", "sd-03": "district"}
    creds = {t: account_credentials(tenants.endpoints(t)) for t in tenants.accounts}
    assert duplicated_credentials(creds) == []
    every = [v for c in creds.values() for v in c.values()]
    assert len(every) == len(set(every)) == 3 * 8
    # own data per account (own seed): the Viewpoint employees differ
    people = {t: (a.directory / "seed.json").read_text(encoding="utf-8") for t, a in tenants.accounts.items()}
    assert len({json.loads(p)["seed"] for p in people.values()}) == 3
    state = json.loads(tenants.state_file.read_text(encoding="utf-8"))
    assert {t: s["kind"] for t, s in state["tenants"].items()} == tenants.kinds()
    assert state["tenants"]["co-01"]["endpoints"]["safetyamp"]["url"] == tenants.endpoints("co-01")["safetyamp"]["url"]
    assert stat.S_IMODE(tenants.state_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(tenants.secrets_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tenants.secrets_dir.iterdir())


def test_tenant_files_hold_references_only_and_load_as_the_accounts_settings(tenants: RunningTenants) -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(tenants.tenants_dir.iterdir())}
    assert sorted(texts) == ["co-01.env", "co-02.env", "sd-03.env"]
    secret_values = [p.read_text(encoding="utf-8").strip() for p in tenants.secrets_dir.iterdir()]
    assert len(secret_values) == 2 * 4 + 2  # companies: 4 secrets each, the district 2
    assert tenants.endpoints("co-01")["safetyamp"]["token"] in secret_values
    for name, text in texts.items():
        assert not any(value in text for value in secret_values), name
        names = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
        assert not names & PROCESS_WIDE, name
        assert not names & SECRET_NAMES, name

    base = load_settings({"SECRETS_DIR": str(tenants.secrets_dir), "REDIS_PREFIX": "test-sbx-tenants:"}, dotenv_path=None)
    load = load_tenant_dir(tenants.tenants_dir, {}, base=base)

    assert [str(p) for p in load.all_problems()] == []
    assert sorted(load.tenants) == ["co-01", "co-02", "sd-03"]
    for tenant, settings in load.tenants.items():
        ep = tenants.endpoints(tenant)
        if tenant.startswith("co-"):
            assert settings.enabled_syncs() == ("departments", "jobs", "titles", "employees", "vehicles")
            assert (
                settings.safetyamp_token is not None and settings.safetyamp_token.get_secret_value() == ep["safetyamp"]["token"]
            )
            assert (
                settings.samsara_api_key is not None and settings.samsara_api_key.get_secret_value() == ep["samsara"]["api_key"]
            )
        else:
            assert settings.enabled_syncs() == ("rosters",)
            assert settings.scim_token is not None and settings.scim_token.get_secret_value() == ep["scim"]["token"]
        assert settings.redis_prefix == "test-sbx-tenants:"  # process-wide: the process's own


def test_the_products_checker_says_every_file_is_ok(tenants: RunningTenants, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "SECRETS_DIR": str(tenants.secrets_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "config.tenants", "check", str(tenants.tenants_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "co-01.env: ok (tenant co-01; syncs: departments, jobs, titles, employees, vehicles)" in done.stdout
    assert "sd-03.env: ok (tenant sd-03; syncs: rosters)" in done.stdout
    assert "3 tenant(s) ok, 0 file(s) with problems" in done.stdout


def test_a_safetyamp_token_of_one_account_at_another_is_refused_and_recorded(tenants: RunningTenants) -> None:
    a, b = tenants.endpoints("co-01"), tenants.endpoints("co-02")
    before = len(cross_tenant(tenants.directory))

    own = requests.get(b["safetyamp"]["url"] + "/api/users", headers=safetyamp_headers(b), timeout=10)
    leaked = requests.get(
        b["safetyamp"]["url"] + "/api/users",
        headers={**safetyamp_headers(a), "User-Agent": agent("pod-x", "r-leak")},
        timeout=10,
    )

    assert own.status_code == 200
    assert leaked.status_code == 401 and leaked.json() == {"message": "Unauthenticated."}  # as any wrong token
    [record] = records_since(tenants.directory, before)
    assert {k: record[k] for k in ("to", "from", "credential", "service", "method", "path", "status", "instance", "run")} == {
        "to": "co-02", "from": "co-01", "credential": "safetyamp_token", "service": "safetyamp", "method": "GET",
        "path": "/api/users", "status": 401, "instance": "pod-x", "run": "r-leak",
    }  # fmt: skip
    assert a["safetyamp"]["token"] not in (tenants.directory / "cross-tenant.jsonl").read_text(encoding="utf-8")
    assert read_ledger(tenants.directory)["co-02"][-1]["cross_tenant_from"] == "co-01"


def test_every_kind_of_credential_of_another_account_is_recorded(tenants: RunningTenants) -> None:
    co1, co2, sd3 = (tenants.endpoints(t) for t in ("co-01", "co-02", "sd-03"))
    before = len(cross_tenant(tenants.directory))

    samsara = requests.get(co1["samsara"]["url"] + "/fleet/vehicles", headers=samsara_headers(sd3), timeout=10)
    scim = requests.get(sd3["scim"]["url"] + "/Users", headers={"Authorization": f"Bearer {co1['scim']['token']}"}, timeout=10)
    basic = base64.b64encode(f"{co1['oneroster']['client_id']}:{co1['oneroster']['client_secret']}".encode()).decode()
    oneroster = requests.post(
        sd3["oneroster"]["token_url"], headers={"Authorization": f"Basic {basic}"}, data={"grant_type": "client_credentials"},
        timeout=10,
    )  # fmt: skip
    entra = requests.post(
        f"{co2['graph']['authority_url']}/{co2['graph']['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": co2["graph"]["client_id"],
              "client_secret": co1["graph"]["client_secret"], "scope": f"{co2['graph']['graph_url']}/.default"},
        verify=co2["graph"]["ca_bundle"], timeout=10,
    )  # fmt: skip
    # An access token co-01's Entra issued is co-01's credential too.
    token = graph_token(co1)
    users = requests.get(
        co2["graph"]["graph_url"] + "/v1.0/users", headers={"Authorization": f"Bearer {token}"},
        verify=co2["graph"]["ca_bundle"], timeout=10,
    )  # fmt: skip

    assert [samsara.status_code, scim.status_code, oneroster.status_code, entra.status_code, users.status_code] == [401] * 5
    seen = [(r["to"], r["from"], r["credential"], r["service"]) for r in records_since(tenants.directory, before)]
    assert seen == [
        ("co-01", "sd-03", "samsara_api_key", "samsara"),
        ("sd-03", "co-01", "scim_token", "scim"),
        ("sd-03", "co-01", "oneroster_client_id", "oneroster"),
        ("co-02", "co-01", "graph_client_secret", "entra"),
        ("co-02", "co-01", "graph_access_token", "graph"),
    ]


def test_the_ledger_records_instance_and_run_and_shows_overlapping_runs(tenants: RunningTenants) -> None:
    sd3 = tenants.endpoints("sd-03")
    url, headers = sd3["safetyamp"]["url"] + "/api/roles", safetyamp_headers(sd3)
    start = len(read_ledger(tenants.directory)["sd-03"])
    for instance, run in [("pod-a", "r1"), ("pod-a", "r1"), ("pod-b", "r2"), ("pod-b", "r2"), ("pod-a", "r1")]:
        assert requests.get(url, headers={**headers, "User-Agent": agent(instance, run)}, timeout=10).status_code == 200
    requests.get(url, headers=headers, timeout=10)  # the tests' own User-Agent: no instance, no run

    mine = read_ledger(tenants.directory)["sd-03"][start:]
    assert [(e["instance"], e["run"], e["service"], e["method"], e["path"], e["status"]) for e in mine] == [
        *[(i, r, "safetyamp", "GET", "/api/roles", 200) for i, r in
          [("pod-a", "r1"), ("pod-a", "r1"), ("pod-b", "r2"), ("pod-b", "r2"), ("pod-a", "r1")]],
        (None, None, "safetyamp", "GET", "/api/roles", 200),
    ]  # fmt: skip
    assert all(isinstance(e["time"], float) for e in mine) and [e["time"] for e in mine] == sorted(e["time"] for e in mine)
    # pod-b's r2 ran inside pod-a's r1 on sd-03: the overlap the replica tests must never see
    [(first, second)] = overlapping_runs({"sd-03": mine})
    assert (first.instance, first.run, second.instance, second.run) == ("pod-a", "r1", "pod-b", "r2")


def test_faults_apply_to_their_account_only(tenants: RunningTenants) -> None:
    faulty, fine = tenants.endpoints(FAULTY), tenants.endpoints("co-01")
    broken = requests.get(faulty["samsara"]["url"] + "/fleet/vehicles", headers=samsara_headers(faulty), timeout=10)
    working = requests.get(fine["samsara"]["url"] + "/fleet/vehicles", headers=samsara_headers(fine), timeout=10)
    other_service = requests.get(faulty["safetyamp"]["url"] + "/api/roles", headers=safetyamp_headers(faulty), timeout=10)

    assert broken.status_code in (500, 502, 503)
    assert working.status_code == 200 and working.json()["data"]
    assert other_service.status_code == 200


def test_restart_reuses_the_accounts_and_rewrites_the_tenant_files(tmp_path: Path) -> None:
    with start_tenants(tmp_path, 3, size=5, seed=7) as first:
        tokens = {t: first.endpoints(t)["safetyamp"]["token"] for t in first.accounts}
    with start_tenants(tmp_path, 2, size=5, seed=8) as second:
        assert {t: second.endpoints(t)["safetyamp"]["token"] for t in second.accounts} == {
            t: tokens[t] for t in ("co-01", "co-02")
        }
        text = (second.tenants_dir / "co-01.env").read_text(encoding="utf-8")
        assert f"SAFETYAMP_URL={second.endpoints('co-01')['safetyamp']['url']}\n" in text
        # sd-03 is not running now: its tenant file and secrets are gone, its account folder stays
        assert sorted(p.name for p in second.tenants_dir.iterdir()) == ["co-01.env", "co-02.env"]
        assert not any(p.name.startswith("sd-03") for p in second.secrets_dir.iterdir())
        assert (tmp_path / "accounts" / "sd-03" / "seed.json").exists()
    with pytest.raises(ValueError, match="unknown tenant"):
        start_tenants(tmp_path, 2, size=5, faults={"sd-03": "{}"})


def test_the_command_line_runs_in_the_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "ports.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "sandbox", "tenants", "--dir", str(tmp_path / "d"), "--count", "2", "--size", "5",
               "--seed", "3", "--fault", 'co-02={"safetyamp": {"error_rate": 1.0}}', "--port-file", str(port_file)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()
        assert ready.startswith("sandbox tenants ready:"), ready
        assert f"tenants={tmp_path / 'd' / 'tenants'}" in ready and f"secrets={tmp_path / 'd' / 'secrets'}" in ready
        state = json.loads(port_file.read_text(encoding="utf-8"))
        co2 = state["tenants"]["co-02"]["endpoints"]
        assert requests.get(co2["safetyamp"]["url"] + "/api/roles", headers=safetyamp_headers(co2), timeout=10).status_code >= 500
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopped; state kept" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    bad = subprocess.run(
        [sys.executable, "-m", "sandbox", "tenants", "--dir", str(tmp_path / "d"), "--count", "2", "--fault", "sd-09={}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown tenant" in bad.stderr


def test_the_products_client_built_from_a_tenant_file_is_seen_in_its_accounts_ledger(tenants: RunningTenants) -> None:
    # The whole chain: tenant file -> config.tenants -> the product's SafetyAmp adapter ->
    # its User-Agent -> the ledger of that account only, and no cross-tenant record.
    from services.http import RequestStats
    from services.safetyamp_api import build_safetyamp
    from utils.logger import current_run_id, set_run_id

    base = load_settings({"SECRETS_DIR": str(tenants.secrets_dir), "REDIS_PREFIX": "test-sbx-tenants:"}, dotenv_path=None)
    settings = load_tenant_dir(tenants.tenants_dir, {}, base=base).tenants["co-01"]
    before = {t: len(e) for t, e in read_ledger(tenants.directory).items()}
    crossed = len(cross_tenant(tenants.directory))
    previous = current_run_id()
    set_run_id("run-e2e-1")
    try:
        roles = build_safetyamp(settings, RequestStats()).list("roles")
    finally:
        set_run_id(previous)

    assert [r["name"] for r in roles] == ["Field", "Office", "Administrator"]
    after = read_ledger(tenants.directory)
    new = after["co-01"][before["co-01"] :]
    assert new and all(e["run"] == "run-e2e-1" and e["instance"].endswith(f"-{os.getpid()}") for e in new)
    assert {t: len(e) for t, e in after.items() if t != "co-01"} == {t: n for t, n in before.items() if t != "co-01"}
    assert len(cross_tenant(tenants.directory)) == crossed
