"""The Samsara emulator over real HTTP: auth, cursor paging with short/empty pages, 429s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.server import RunningSandbox, start_sandbox
from sandbox.store import open_store
from sandbox.testing import samsara_headers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("sam"), size=60, faults={}, seed=202) as sb:
        yield sb


def _get(sb: RunningSandbox, path: str, **params: Any) -> requests.Response:
    return requests.get(sb.endpoints["samsara"]["url"] + path, headers=samsara_headers(sb.endpoints), params=params, timeout=10)


def _walk(sb: RunningSandbox, path: str, limit: int, **params: Any) -> tuple[list[dict[str, Any]], list[tuple[int, bool]]]:
    items: list[dict[str, Any]] = []
    pages: list[tuple[int, bool]] = []
    after: str | None = None
    while True:
        query = {"limit": limit, **params, **({"after": after} if after else {})}
        body = _get(sb, path, **query).json()
        items += body["data"]
        pages.append((len(body["data"]), body["pagination"]["hasNextPage"]))
        if not body["pagination"]["hasNextPage"]:
            return items, pages
        after = body["pagination"]["endCursor"]
        assert len(pages) < 500


def test_api_key_is_required(sandbox: RunningSandbox) -> None:
    url = sandbox.endpoints["samsara"]["url"] + "/fleet/vehicles"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["message"] == "Unauthorized"


def test_cursor_walk_returns_every_vehicle_once_despite_short_and_empty_pages(sandbox: RunningSandbox) -> None:
    items, pages = _walk(sandbox, "/fleet/vehicles", limit=3)
    with open_store(sandbox.directory) as st:
        expected = [v["id"] for v in st.all("samsara", "vehicles")]
    assert [v["id"] for v in items] == expected
    assert (0, True) in pages  # an empty page that still says hasNextPage (SAM-pg)
    assert any(0 < n < 3 and more for n, more in pages)  # a short page in the middle
    # The same walk gives the same page shapes: quirks follow the seed, not chance.
    assert _walk(sandbox, "/fleet/vehicles", limit=3)[1] == pages


def test_vehicle_shape(sandbox: RunningSandbox) -> None:
    vehicles = _get(sandbox, "/fleet/vehicles").json()["data"]
    assert len(vehicles) == 20  # max(5, 60 // 3), one page at the default limit of 512
    v = vehicles[0]
    assert v["id"].startswith("281474976710") and isinstance(v["year"], str)
    assert v["serial"] == v["gateway"]["serial"] and v["serial"].startswith("G") and len(v["serial"]) == 10
    assert v["createdAtTime"].endswith("Z")
    assert any("staticAssignedDriver" in x for x in vehicles)
    one = _get(sandbox, f"/fleet/vehicles/{v['id']}").json()["data"]
    assert one == v
    assert _get(sandbox, "/fleet/vehicles/1").status_code == 404


def test_limit_above_512_is_rejected(sandbox: RunningSandbox) -> None:
    assert _get(sandbox, "/fleet/vehicles", limit=512).status_code == 200
    response = _get(sandbox, "/fleet/vehicles", limit=513)
    assert response.status_code == 400 and "512" in response.json()["message"]
    assert _get(sandbox, "/fleet/vehicles", after="not-a-cursor").status_code == 400


def test_drivers_default_to_active_and_carry_payroll_ids(sandbox: RunningSandbox) -> None:
    active, _ = _walk(sandbox, "/fleet/drivers", limit=512)
    assert active and {d["driverActivationStatus"] for d in active} == {"active"}
    with_payroll = [d for d in active if "payrollId" in d.get("externalIds", {})]
    assert 0 < len(with_payroll) <= len(active)
    assert all(d["externalIds"]["payrollId"].isdigit() for d in with_payroll)
    deactivated, _ = _walk(sandbox, "/fleet/drivers", limit=512, driverActivationStatus="deactivated")
    assert {d["driverActivationStatus"] for d in deactivated} <= {"deactivated"}


def test_rate_limit_gives_429_with_fractional_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    faults = {"samsara": {"rate_limit_per_minute": 60, "burst": 2}}
    with start_sandbox(tmp_path_factory.mktemp("sam429"), size=5, faults=faults, seed=1) as sb:
        statuses = [_get(sb, "/fleet/vehicles") for _ in range(4)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    limited = statuses[2]
    assert limited.status_code == 429
    retry_after = limited.headers["Retry-After"]
    assert "." in retry_after and 0 < float(retry_after) <= 1.0  # fractional seconds, like "0.40235"
    assert "requestId" in limited.json()
