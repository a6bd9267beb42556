"""Samsara vehicles -> SafetyAmp assets.

Key: the Samsara vehicle ``id``, stored in the asset's ``code`` as ``samsara:<id>``.
Never the gateway ``serial``: it belongs to the telematics box and changes when a
gateway is swapped, which made the predecessor create a second asset. The serial is
still copied (it is useful on the asset) and updated when it changes.

- Site: VEHICLE_SITE_ID, else the site whose external_code is VEHICLE_SITE_CODE.
  Asset type: VEHICLE_ASSET_TYPE_ID, else the asset type named VEHICLE_ASSET_TYPE_NAME
  (asset types are site-scoped; one on the vehicle site is preferred).
- Driver: ``staticAssignedDriver.id`` -> the driver from one paged /fleet/drivers read
  -> the employee number in SAMSARA_DRIVER_EMPLOYEE_FIELD (default
  externalIds.payrollId) -> the SafetyAmp user with that emp_id -> ``current_user_id``.
  No request per vehicle.
- A vehicle gone from a complete Samsara read has its asset archived (``status: 0``);
  only assets whose code starts with ``samsara:`` are ours to archive.
"""

from __future__ import annotations

from typing import Any

from sync.base import BaseSync, Desired, Rejected, fingerprint
from sync.ports import Row
from utils.data_validator import InvalidValue, clean_text
from utils.errors import ConfigurationError

CODE_PREFIX = "samsara:"


def dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


class VehicleSync(BaseSync):
    name = "vehicles"
    collection = "assets"
    key_field = "code"
    deactivation = {"status": 0}

    def key_of(self, row: Row) -> str | None:
        code = str(row.get("code") or "")
        return code if code.startswith(CODE_PREFIX) else None

    def _placement(self) -> tuple[Any, Any]:
        site_id = self.settings.vehicle_site_id
        if site_id is None:
            code = self.settings.vehicle_site_code
            matches = [s.get("id") for s in self.ctx.targets.get("sites") if str(s.get("external_code") or "").strip() == code]
            if not matches:
                raise ConfigurationError(
                    f"no SafetyAmp site has external_code {code!r} (VEHICLE_SITE_CODE); set VEHICLE_SITE_ID or create the site"
                )
            site_id = matches[0]
        type_id = self.settings.vehicle_asset_type_id
        if type_id is None:
            wanted = self.settings.vehicle_asset_type_name.casefold()
            types = [t for t in self.ctx.targets.get("asset_types") if str(t.get("name", "")).casefold() == wanted]
            types.sort(key=lambda t: (str(t.get("site_id")) != str(site_id), t.get("id")))
            if not types:
                raise ConfigurationError(
                    f"no SafetyAmp asset type named {self.settings.vehicle_asset_type_name!r} (VEHICLE_ASSET_TYPE_NAME); set VEHICLE_ASSET_TYPE_ID"
                )
            type_id = types[0].get("id")
        return site_id, type_id

    def load(self) -> Desired:
        fleet = self.samsara
        vehicles = fleet.vehicles()
        site_id, type_id = self._placement()
        drivers = {str(d.get("id")): d for d in fleet.drivers()} if any(v.get("staticAssignedDriver") for v in vehicles) else {}
        users = {}
        for user in self.ctx.targets.get("users"):
            emp = str(user.get("emp_id") or "").strip()
            if emp:
                users[str(int(emp)) if emp.isdigit() else emp] = user.get("id")
        out = Desired(source_count=len(vehicles))
        for v in vehicles:
            vid = str(v.get("id") or "").strip()
            if not vid:
                out.rejected.append(Rejected("(blank)", "Samsara vehicle without id", ("id",)))
                continue
            key = CODE_PREFIX + vid
            try:
                name = clean_text(v.get("name"), 100) or clean_text(v.get("vin"), 40) or vid
                model = clean_text(" ".join(p for p in (v.get("make"), v.get("model")) if p), 100)
                year = v.get("year")
                year_int = int(year) if year not in (None, "") and str(year).strip().isdigit() else None
            except InvalidValue as exc:
                out.rejected.append(Rejected(key, exc.reason, (), {"id": vid}))
                continue
            serial = (v.get("gateway") or {}).get("serial") or v.get("serial")
            record: dict[str, Any] = {
                "code": key,
                "name": name,
                "serial": serial,
                "vin": v.get("vin") or None,
                "model": model,
                "year": year_int,
                "description": f"Plate {v['licensePlate']}" if v.get("licensePlate") else None,
                "site_id": site_id,
                "asset_type_id": type_id,
                "status": 1,
                "current_user_id": None,
            }
            assigned = v.get("staticAssignedDriver") or {}
            if assigned.get("id"):
                driver = drivers.get(str(assigned["id"]))
                raw_emp = dotted(driver, self.settings.samsara_driver_employee_field) if driver else None
                emp_key = str(int(str(raw_emp).strip())) if raw_emp is not None and str(raw_emp).strip().isdigit() else None
                if emp_key and emp_key in users:
                    record["current_user_id"] = users[emp_key]
                else:
                    why = (
                        f"driver {assigned['id']} not found in /fleet/drivers"
                        if driver is None
                        else f"driver {assigned['id']} has no {self.settings.samsara_driver_employee_field}"
                        if emp_key is None
                        else f"employee {emp_key} of driver {assigned['id']} is not a SafetyAmp user"
                    )
                    out.rejected.append(
                        Rejected(key, f"{why}; asset synced without its driver", ("current_user_id",), kind="field_dropped")
                    )
            out.records[key] = record
            out.fingerprints[key] = fingerprint(v, record["current_user_id"])
        out.deactivate = set(self.current()) - set(out.records)
        return out
