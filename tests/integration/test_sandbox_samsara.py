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


# --------------------------------------------------------------------------------------
# Samsara's published schema (API reference "List all vehicles" / "List all drivers",
# https://developers.samsara.com/reference/listvehicles and /reference/listdrivers, the
# same tables in github.com/samsarahq/api-docs markdown/readme/listvehicles.md and
# listdrivers.md, and the types of Samsara's own SDK generated from its API definition,
# github.com/samsarahq/samsara-python src/samsara/types/). Every field is typed; none is
# nullable: an optional field that has no value is omitted ("If this tag is part a
# hierarchical tag tree, this is the ID of the parent tag, otherwise this will be
# omitted"). A null where Samsara omits the field is a fidelity bug: a client tested
# against it would never meet the absent key it gets in production.
# --------------------------------------------------------------------------------------
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
TAG: dict[str, Any] = {"id": (str, True), "name": (str, True), "parentTagId": (str, False)}
GATEWAY: dict[str, Any] = {"model": (str, True), "serial": (str, True)}
MINI_DRIVER: dict[str, Any] = {"id": (str, False), "name": (str, False)}
VEHICLE: dict[str, Any] = {
    "id": (str, True), "name": (str, False), "vin": (str, False), "licensePlate": (str, False),
    "make": (str, False), "model": (str, False), "year": (str, False), "serial": (str, False),
    "cameraSerial": (str, False), "notes": (str, False), "esn": (str, False),
    "externalIds": ("str-map", False), "gateway": (GATEWAY, False), "staticAssignedDriver": (MINI_DRIVER, False),
    "tags": ([TAG], False), "harshAccelerationSettingType": (("passengerCar", "lightTruck", "heavyDuty", "off", "automatic"), False),
    "vehicleRegulationMode": (("regulated", "unregulated"), False),
    "createdAtTime": ("rfc3339", True), "updatedAtTime": ("rfc3339", False),
    **{f"auxInputType{i}": (str, False) for i in range(1, 14)},
}  # fmt: skip
DRIVER: dict[str, Any] = {
    "id": (str, False), "name": (str, False), "username": (str, False), "phone": (str, False),
    "notes": (str, False), "email": (str, False), "licenseNumber": (str, False), "licenseState": (str, False),
    "timezone": (str, False), "externalIds": ("str-map", False), "tags": ([TAG], False),
    "driverActivationStatus": (("active", "deactivated"), False), "isDeactivated": (bool, False),
    "createdAtTime": ("rfc3339", False), "updatedAtTime": ("rfc3339", False),
}  # fmt: skip
PAGINATION: dict[str, Any] = {"endCursor": (str, True), "hasNextPage": (bool, True)}
ERROR: dict[str, Any] = {"message": (str, True), "requestId": (str, True)}


def schema_problems(value: Any, schema: Any, where: str) -> list[str]:
    """Every way ``value`` departs from ``schema`` (an object spec, a list spec, a type,
    a tuple of allowed strings, "str-map" or "rfc3339")."""
    import re

    if value is None:
        return [f"{where}: null (Samsara omits a field without a value)"]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        out = [f"{where}.{k}: not in Samsara's schema" for k in value if k not in schema]
        for key, (sub, required) in schema.items():
            if key in value:
                out += schema_problems(value[key], sub, f"{where}.{key}")
            elif required:
                out.append(f"{where}.{key}: missing (required)")
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, expected an array"]
        return [p for i, item in enumerate(value) for p in schema_problems(item, schema[0], f"{where}[{i}]")]
    if schema == "str-map":
        if not isinstance(value, dict):
            return [f"{where}: expected a map of strings"]
        return [f"{where}.{k}: {v!r} is not a string" for k, v in value.items() if not isinstance(v, str)]
    if schema == "rfc3339":
        return [] if isinstance(value, str) and re.match(RFC3339, value) else [f"{where}: {value!r} is not RFC 3339"]
    if isinstance(schema, tuple):
        return [] if value in schema else [f"{where}: {value!r} not one of {schema}"]
    if schema is bool:
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    return [] if isinstance(value, schema) else [f"{where}: {value!r} is not a {schema.__name__}"]


def test_schema_checker_flags_nulls_types_and_unknown_fields() -> None:
    good = {"id": "1", "name": "Fleet"}
    assert schema_problems(good, TAG, "t") == []
    assert schema_problems({**good, "parentTagId": None}, TAG, "t") == [
        "t.parentTagId: null (Samsara omits a field without a value)"
    ]
    assert schema_problems({**good, "parentTagId": 3914}, TAG, "t") == ["t.parentTagId: 3914 is not a str"]
    assert schema_problems({"id": "1"}, TAG, "t") == ["t.name: missing (required)"]
    assert schema_problems({**good, "colour": "red"}, TAG, "t") == ["t.colour: not in Samsara's schema"]
    assert schema_problems({"id": "1", "createdAtTime": "2026-01-01", "year": 2020}, VEHICLE, "v") == [
        "v.year: 2020 is not a str", "v.createdAtTime: '2026-01-01' is not RFC 3339",
    ]  # fmt: skip


def test_every_vehicle_and_driver_matches_samsaras_published_schema(sandbox: RunningSandbox) -> None:
    problems: list[str] = []
    pages: list[dict[str, Any]] = []
    for path, limit, params in (
        ("/fleet/vehicles", 4, {}),
        ("/fleet/drivers", 7, {}),
        ("/fleet/drivers", 7, {"driverActivationStatus": "deactivated"}),
    ):
        after: str | None = None
        while True:
            body = _get(sandbox, path, limit=limit, **params, **({"after": after} if after else {})).json()
            pages.append(body)
            problems += schema_problems(body, {"data": ([VEHICLE if "vehicles" in path else DRIVER], True),
                                               "pagination": (PAGINATION, True)}, path)  # fmt: skip
            if not body["pagination"]["hasNextPage"]:
                break
            after = body["pagination"]["endCursor"]
    vehicles = [v for b in pages for v in b["data"] if "gateway" in v]
    drivers = [d for b in pages for d in b["data"] if "driverActivationStatus" in d]
    assert vehicles and drivers
    for v in vehicles[:3]:
        problems += schema_problems(_get(sandbox, f"/fleet/vehicles/{v['id']}").json(), {"data": (VEHICLE, True)}, "one vehicle")
    problems += schema_problems(
        _get(sandbox, f"/fleet/drivers/{drivers[0]['id']}").json(), {"data": (DRIVER, True)}, "one driver"
    )
    for bad in (_get(sandbox, "/fleet/vehicles/1"), _get(sandbox, "/fleet/vehicles", limit=0)):
        problems += schema_problems(bad.json(), ERROR, f"error {bad.status_code}")
    assert problems == [], problems
    # the case that started this: a root tag has no parentTagId at all; a child tag's is a string
    tags = [t for v in vehicles for t in v.get("tags", [])]
    assert any("parentTagId" not in t for t in tags), "the seed should tag some vehicle with a root tag"
    assert all(isinstance(t["parentTagId"], str) for t in tags if "parentTagId" in t)


def test_a_folder_seeded_with_nulls_is_served_without_them(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Sandbox folders seeded before the generator was fixed hold ``parentTagId: null``;
    the emulator answers as Samsara would all the same."""
    folder = tmp_path_factory.mktemp("samnull")
    with start_sandbox(folder, size=5, faults={}, seed=3):
        pass  # seeds the folder
    with open_store(folder) as st:
        rid, vehicle = st.page("samsara", "vehicles", limit=1)[0]
        vehicle["tags"] = [{"id": "3914", "name": "Fleet", "parentTagId": None}]
        vehicle["notes"] = None
        st.replace("samsara", "vehicles", rid, vehicle)
    with start_sandbox(folder, size=5, faults={}, seed=3) as sb:
        listed = _get(sb, "/fleet/vehicles").json()["data"]
        one = _get(sb, f"/fleet/vehicles/{vehicle['id']}").json()["data"]
    served = next(v for v in listed if v["id"] == vehicle["id"])
    for v in (served, one):
        assert v["tags"] == [{"id": "3914", "name": "Fleet"}] and "notes" not in v
