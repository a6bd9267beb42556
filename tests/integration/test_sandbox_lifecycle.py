"""Sandbox lifecycle: seeding, persistence across restarts and SIGKILL, the CLI, mutate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, select

from sandbox.mutate import mutate
from sandbox.seed import ensure_seeded
from sandbox.server import start_sandbox
from sandbox.store import open_store
from sandbox.testing import safetyamp_headers
from services.viewpoint_schema import build_metadata

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _rows(directory: Path, table: str, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    metadata = build_metadata("udEmpTitle")
    engine = create_engine(f"sqlite:///{directory / 'viewpoint.sqlite'}")
    try:
        with engine.connect() as conn:
            t = metadata.tables[table]
            rows = [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings()]
    finally:
        engine.dispose()
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def test_endpoints_contract(tmp_path: Path) -> None:
    with start_sandbox(tmp_path / "sb", size=10, faults={}, seed=1) as sb:
        ep = sb.endpoints
        json.dumps(ep)
        assert set(ep) == {"safetyamp", "samsara", "graph", "viewpoint", "oneroster", "scim"}
        assert set(ep["oneroster"]) == {"url", "version", "client_id", "client_secret", "token_url"}  # issue 4
        assert set(ep["scim"]) == {"url", "token"} and ep["scim"]["url"].endswith("/v2")
        assert (
            set(ep["safetyamp"]) == {"url", "token", "fqdn", "max_page_size"}
            and ep["safetyamp"]["max_page_size"] == "1000"
            and ep["safetyamp"]["fqdn"] == "sandbox.safetyamp.com"
        )
        assert set(ep["samsara"]) == {"url", "api_key"}
        assert set(ep["graph"]) == {"authority_url", "graph_url", "tenant_id", "client_id", "client_secret", "ca_bundle"}
        assert ep["graph"]["authority_url"].startswith("https://127.0.0.1:")
        assert Path(ep["graph"]["ca_bundle"]).is_file()
        assert ep["viewpoint"]["url"] == f"sqlite:///{(tmp_path / 'sb').resolve() / 'viewpoint.sqlite'}"
        assert ep["safetyamp"]["token"] not in repr(sb)


def test_state_survives_stop_and_start(tmp_path: Path) -> None:
    directory = tmp_path / "sb"
    with start_sandbox(directory, size=10, faults={}, seed=1) as sb:
        first_token = sb.endpoints["safetyamp"]["token"]
        created = requests.post(
            sb.endpoints["safetyamp"]["url"] + "/api/user_titles",
            headers=safetyamp_headers(sb.endpoints),
            json={"name": "Persistent"},
            timeout=10,
        ).json()["data"]
    with start_sandbox(directory, size=999, faults={}) as sb:
        assert sb.endpoints["safetyamp"]["token"] == first_token  # credentials are per directory
        again = requests.get(
            sb.endpoints["safetyamp"]["url"] + f"/api/user_titles/{created['id']}",
            headers=safetyamp_headers(sb.endpoints),
            timeout=10,
        ).json()["data"]
    assert again == created
    assert len(_rows(directory, "bPREH")) == 10 + 5  # size fixed at seeding (+ decoy company)


def test_viewpoint_seed_is_deterministic_and_awkward(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ensure_seeded(a, size=200, seed=42)
    ensure_seeded(b, size=200, seed=42)
    employees = _rows(a, "bPREH")
    assert employees == _rows(b, "bPREH")
    ours = [e for e in employees if e["PRCo"] == 1]
    assert len(ours) == 200
    decoys = [e for e in employees if e["PRCo"] == 2]
    assert decoys and {d["Employee"] for d in decoys} <= {e["Employee"] for e in ours}
    emails = [e["Email"] for e in ours if e["Email"]]
    assert len(emails) < len(ours)  # some missing
    assert len(set(emails)) < len(emails)  # some shared
    assert any(len(e["LastName"]) > 100 or len(e["FirstName"] or "") > 100 for e in ours)
    assert any(not (e["FirstName"] + e["LastName"]).isascii() for e in ours)
    assert any(e["ActiveYN"] == "N" and e["TermDate"] for e in ours)
    assert any(e["ActiveYN"] == "Y" and e["RecentRehireDate"] for e in ours)
    assert any(e["Job"] is None for e in ours)
    assert any(e["CellPhone"] in ("555-01", "n/a", "(504) 555-0199 x12", "0", "TBD", "504-555-01999", "none") for e in ours)
    jobs = _rows(a, "bJCJM")
    assert len([j for j in jobs if j["JCCo"] == 1]) == 40
    assert any(j["Job"] != j["Job"].strip() for j in jobs)  # padded codes
    assert {j["JobStatus"] for j in jobs if j["JCCo"] == 1} == {1, 2, 3}
    assert len([d for d in _rows(a, "bPRDP") if d["PRCo"] == 1]) == 8
    assert _rows(a, "bPRJC")


def test_mutate_changes_sources_and_is_repeatable(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for directory in (a, b):
        ensure_seeded(directory, size=80, seed=9)
    before = _rows(a, "bPREH", drop=("LastUpdated",))
    with open_store(a) as st:
        vehicles_before = {v["id"]: v["serial"] for v in st.all("samsara", "vehicles")}
    summary_a = mutate(a, 10, seed=5)
    summary_b = mutate(b, 10, seed=5)
    assert summary_a == summary_b
    after = _rows(a, "bPREH", drop=("LastUpdated",))
    assert after == _rows(b, "bPREH", drop=("LastUpdated",))
    assert after != before
    for kind in ("hires", "terminations", "rehires", "jobs_renamed", "jobs_closed", "jobs_created",
                 "gateways_swapped", "vehicles_created", "vehicles_removed"):  # fmt: skip
        assert summary_a[kind] >= 1, kind
    assert len(after) == len(before) + summary_a["hires"]
    with open_store(a) as st:
        vehicles_after = {v["id"]: v["serial"] for v in st.all("samsara", "vehicles")}
    swapped = [vid for vid in vehicles_before if vid in vehicles_after and vehicles_after[vid] != vehicles_before[vid]]
    assert len(swapped) == summary_a["gateways_swapped"]  # same id, new gateway serial
    mutate(a, 10, seed=6)
    mutate(b, 10, seed=7)
    assert _rows(a, "bPREH", drop=("LastUpdated",)) != _rows(b, "bPREH", drop=("LastUpdated",))  # seed matters
    with pytest.raises(ValueError):
        mutate(a, 0)


def _start_cli(directory: Path, port_file: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SANDBOX_FAULTS": "", "SANDBOX_SEED": "11"}
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(directory), "--port-file", str(port_file), "--size", "10"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "sandbox did not write its port file"
        time.sleep(0.05)
    return dict(json.loads(path.read_text()))


def test_cli_serve_writes_port_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "run" / "ports.json"
    proc = _start_cli(tmp_path / "sb", port_file)
    try:
        endpoints = _wait_for(port_file, proc)
        assert oct(port_file.stat().st_mode & 0o777) == "0o600"
        ok = requests.get(endpoints["safetyamp"]["url"] + "/api/roles", headers=safetyamp_headers(endpoints), timeout=10)
        assert ok.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "ready" in stderr and endpoints["safetyamp"]["token"] not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    directory = tmp_path / "sb"
    proc = _start_cli(directory, tmp_path / "ports.json")
    try:
        endpoints = _wait_for(tmp_path / "ports.json", proc)
        created = requests.post(
            endpoints["safetyamp"]["url"] + "/api/sites",
            headers=safetyamp_headers(endpoints),
            json={"name": "Survivor", "external_code": "KILL-9"},
            timeout=10,
        )
        assert created.status_code == 201
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_store(directory) as st:
        assert "KILL-9" in {s["external_code"] for s in st.all("safetyamp", "sites")}


def test_cli_mutate_prints_summary_json(tmp_path: Path) -> None:
    ensure_seeded(tmp_path / "sb", size=20, seed=1)
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "mutate", "--dir", str(tmp_path / "sb"), "--percent", "20", "--seed", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["seed"] == 3 and summary["hires"] >= 1
