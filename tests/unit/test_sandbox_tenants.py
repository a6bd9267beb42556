"""sandbox/tenants.py's pure parts: tenant ids, the User-Agent's instance and run, the
ledger readers, the overlap proof (hand-made entries), and how an account's settings are
split into a tenant file's values and secret references."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from config.tenants import PROCESS_WIDE, SECRET_NAMES, tenant_id_problem
from sandbox.tenants import (
    COMPANY,
    DISTRICT,
    cross_tenant,
    duplicated_credentials,
    kind_of,
    overlapping_runs,
    parse_user_agent,
    read_ledger,
    run_spans,
    secret_file_name,
    tenant_ids,
    tenant_settings,
)

pytestmark = pytest.mark.unit


def entry(time: float, instance: str | None, run: str | None, path: str = "/api/users") -> dict[str, object]:
    return {"time": time, "service": "safetyamp", "method": "GET", "path": path, "status": 200, "instance": instance, "run": run}


def test_tenant_ids_mix_companies_and_districts_and_are_dns_labels() -> None:
    ids = tenant_ids(7)
    assert ids == ["co-01", "co-02", "sd-03", "co-04", "co-05", "sd-06", "co-07"]
    assert [kind_of(t) for t in ids[:3]] == [COMPANY, COMPANY, DISTRICT]
    assert all(tenant_id_problem(t) is None for t in tenant_ids(120))
    assert len(set(tenant_ids(120))) == 120 and tenant_ids(120)[-1] == "sd-120"
    with pytest.raises(ValueError):
        tenant_ids(0)


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ("safetyamp-sync (instance pod-a-7f9c; run 20261129T0400-3)", ("pod-a-7f9c", "20261129T0400-3")),
        ("safetyamp-sync (instance pod-b; run -)", ("pod-b", "-")),
        ("safetyamp-sync/1.0", (None, None)),
        (None, (None, None)),
        ("safetyamp-sync (instance two words; run x)", (None, None)),
    ],
)
def test_user_agent_names_the_instance_and_the_run(agent: str | None, expected: tuple[str | None, str | None]) -> None:
    assert parse_user_agent(agent) == expected


def test_the_products_own_user_agent_names_instance_and_run() -> None:
    # The contract with services/http.py: if its User-Agent changes shape, the ledger's proof goes blind.
    from services.http import user_agent
    from utils.logger import current_run_id, set_run_id

    previous = current_run_id()
    set_run_id("20261129-0400-abc")
    try:
        instance, run = parse_user_agent(user_agent("safetyamp-sync/1.0"))
    finally:
        set_run_id(previous)
    assert instance is not None and instance.endswith(f"-{os.getpid()}")
    assert run == "20261129-0400-abc"


def test_two_instances_running_one_tenant_at_once_are_found() -> None:
    ledger = {
        "co-01": [entry(10.0, "pod-a", "r1"), entry(12.0, "pod-b", "r2"), entry(14.0, "pod-a", "r1"), entry(15.0, "pod-b", "r2")],
        "co-02": [entry(10.0, "pod-a", "r3"), entry(11.0, "pod-a", "r3"), entry(11.5, "pod-b", "r4"), entry(13.0, "pod-b", "r4")],
    }
    found = overlapping_runs(ledger)

    assert len(found) == 1
    first, second = found[0]
    assert (first.tenant, first.instance, first.run, first.first, first.last, first.requests) == (
        "co-01",
        "pod-a",
        "r1",
        10.0,
        14.0,
        2,
    )
    assert (second.tenant, second.instance, second.run, second.first, second.last) == ("co-01", "pod-b", "r2", 12.0, 15.0)


def test_runs_one_after_the_other_or_on_one_instance_do_not_overlap() -> None:
    sequential = [entry(1.0, "pod-a", "r1"), entry(2.0, "pod-a", "r1"), entry(2.5, "pod-b", "r2"), entry(4.0, "pod-b", "r2")]
    same_instance = [entry(1.0, "pod-a", "r1"), entry(1.5, "pod-a", "r2"), entry(2.0, "pod-a", "r1")]
    unknown = [entry(1.0, "pod-a", "r1"), entry(1.5, "pod-b", "-"), entry(1.6, None, None), entry(2.0, "pod-a", "r1")]

    assert overlapping_runs({"co-01": sequential}) == []
    assert overlapping_runs({"co-01": same_instance}) == []
    assert overlapping_runs(unknown) == []  # one account's list; requests of no known run belong to no run
    # the same times on two different tenants are no overlap either
    assert overlapping_runs({"co-01": sequential[:2], "co-02": [entry(1.5, "pod-b", "r9")]}) == []
    assert [(s.tenant, s.run) for s in run_spans({"co-01": sequential})] == [("co-01", "r1"), ("co-01", "r2")]


def test_a_run_inside_another_and_a_shared_instant_overlap() -> None:
    inside = [entry(1.0, "pod-a", "r1"), entry(2.0, "pod-b", "r2"), entry(9.0, "pod-a", "r1")]
    touching = [entry(1.0, "pod-a", "r1"), entry(3.0, "pod-a", "r1"), entry(3.0, "pod-b", "r2"), entry(5.0, "pod-b", "r2")]
    assert len(overlapping_runs({"t": inside})) == 1
    assert len(overlapping_runs({"t": touching})) == 1


def test_ledger_and_cross_tenant_files_are_read_back(tmp_path: Path) -> None:
    (tmp_path / "accounts" / "co-01").mkdir(parents=True)
    (tmp_path / "accounts" / "sd-02").mkdir(parents=True)
    lines = [
        json.dumps(entry(1.0, "pod-a", "r1")),
        json.dumps(entry(2.0, "pod-a", "r1")),
        '{"time": 3.0, "serv',
    ]  # torn last line
    (tmp_path / "accounts" / "co-01" / "requests.jsonl").write_text("\n".join(lines), encoding="utf-8")
    record = {"time": 1.0, "to": "co-01", "from": "sd-02", "credential": "scim_token", "service": "scim", "path": "/v2/Users"}
    (tmp_path / "cross-tenant.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")

    ledger = read_ledger(tmp_path)
    assert sorted(ledger) == ["co-01", "sd-02"]
    assert [e["time"] for e in ledger["co-01"]] == [1.0, 2.0] and ledger["sd-02"] == []
    assert cross_tenant(tmp_path) == [record]
    assert read_ledger(tmp_path / "nowhere") == {} and cross_tenant(tmp_path / "nowhere") == []


def test_duplicated_credentials_name_the_accounts_and_the_kind() -> None:
    assert duplicated_credentials({"co-01": {"safetyamp_token": "a"}, "co-02": {"safetyamp_token": "b"}}) == []
    assert duplicated_credentials({"co-01": {"safetyamp_token": "a"}, "co-02": {"scim_token": "a"}}) == [
        ("co-02", "co-01", "scim_token")
    ]


ENDPOINTS = {
    "safetyamp": {"url": "http://127.0.0.1:1", "token": "sa-Token-1", "fqdn": "sandbox.safetyamp.com", "max_page_size": "1000"},
    "samsara": {"url": "http://127.0.0.1:2", "api_key": "samsara_api_Key-2"},
    "graph": {
        "authority_url": "https://127.0.0.1:3", "graph_url": "https://127.0.0.1:3", "tenant_id": "t-id", "client_id": "c-id",
        "client_secret": "graph-Secret-3", "ca_bundle": "/x/ca.pem",
    },
    "viewpoint": {"url": "sqlite:////x/viewpoint.sqlite"},
    "oneroster": {"url": "http://127.0.0.1:4", "version": "1.2", "client_id": "or-id", "client_secret": "or-Secret-4",
                  "token_url": "http://127.0.0.1:4/token"},
    "scim": {"url": "http://127.0.0.1:5/v2", "token": "scim-Token-5"},
}  # fmt: skip


@pytest.mark.parametrize("tenant", ["co-01", "sd-03"])
def test_an_accounts_settings_split_into_values_and_secrets(tenant: str) -> None:
    values, secrets = tenant_settings(tenant, ENDPOINTS, Path("/x"))

    assert not (set(values) | set(secrets)) & PROCESS_WIDE  # REDIS_PREFIX of sandbox_overrides left out
    assert set(secrets) <= SECRET_NAMES and not set(values) & SECRET_NAMES
    assert not {v for v in values.values()} & {"sa-Token-1", "samsara_api_Key-2", "graph-Secret-3", "or-Secret-4", "scim-Token-5"}
    if tenant == "co-01":
        assert values["SYNC_TYPES"] == "departments,jobs,titles,employees,vehicles"
        assert set(secrets) == {"SAFETYAMP_TOKEN", "SAMSARA_API_KEY", "MS_GRAPH_CLIENT_SECRET", "VIEWPOINT_DB_URL"}
        assert values["SAFETYAMP_URL"] == "http://127.0.0.1:1" and not any(n.startswith(("ONEROSTER_", "SCIM_")) for n in values)
    else:
        assert values["SYNC_TYPES"] == "rosters"
        assert secrets == {"ONEROSTER_CLIENT_SECRET": "or-Secret-4", "SCIM_TOKEN": "scim-Token-5"}
        assert values["ONEROSTER_CLIENT_ID"] == "or-id" and not any(n.startswith("SAFETYAMP_") for n in values)
    assert secret_file_name(tenant, "SCIM_TOKEN") == f"{tenant}-scim-token"
