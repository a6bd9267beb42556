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
  only assets whose code is ``samsara:`` and a valid id are ours to archive. A vehicle
  refused by validation is still in Samsara: its asset is never archived for it.
- Text policy (utils/data_validator.py): an id or name it refuses rejects the vehicle;
  a refused VIN, serial, make/model, year or plate is left out with the reason
  (``field_dropped``) and the asset still syncs; a driver whose employee field is not an
  employee number (``employee_number``) leaves the asset without a driver, with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sync.base import BaseSync, Desired, Rejected, fingerprint
from sync.ports import Row
from sync.vista import employee_key
from utils.data_validator import (
    CODE_MAX_LENGTH,
    InvalidValue,
    clean_code,
    clean_text,
    employee_number,
    shown_key,
    whole_number,
)
from utils.errors import ConfigurationError

CODE_PREFIX = "samsara:"

log = logging.getLogger("sync.vehicles")


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
        code = row.get("code")
        if not isinstance(code, str) or not code.startswith(CODE_PREFIX):
            return None
        try:
            return CODE_PREFIX + vehicle_id(code[len(CODE_PREFIX) :])
        except InvalidValue:
            return None  # not a code this sync writes: not ours

    @classmethod
    def key_from_text(cls, text: str) -> str:
        text = text.strip()
        return CODE_PREFIX + vehicle_id(text[len(CODE_PREFIX) :] if text.startswith(CODE_PREFIX) else text)

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

    def _read_samsara(self) -> tuple[list[Row], list[Row]]:
        """Every vehicle, and every driver when a vehicle has one assigned."""
        fleet = self.samsara
        vehicles = fleet.vehicles()
        drivers = fleet.drivers() if any(v.get("staticAssignedDriver") for v in vehicles) else []
        return vehicles, drivers

    def _samsara_lists(self) -> tuple[list[Row], list[Row]]:
        """Samsara's vehicles and drivers: the saved read while Samsara's webhooks say
        nothing changed (services/samsara_read.py), else a full read, saved for the next
        runs (never by a dry run or a one-record run)."""
        store = self.ctx.samsara_read
        if store is None:
            return self._read_samsara()
        saves = not self.ctx.dry_run and self.ctx.only_key is None
        # A daemon trusts no saved read before its own first full read: events sent
        # while it was down reached no one (previews and one-record runs included).
        first = self.ctx.runner_kind == "daemon" and store.runs == 0
        saved = store.load()
        why = store.unusable(saved, full=self.ctx.full, first_daemon_run=first)
        if why is None and saved is not None:
            log.info("samsara: using the saved read (no webhook event since it was taken): 0 requests")
            return saved["vehicles"], saved["drivers"]
        log.info("samsara: full read: %s", why)
        marker = store.marker(start=True) if saves else None  # before the read: an event during it makes it stale
        read_at = time.time()
        vehicles, drivers = self._read_samsara()
        if saves:
            store.runs += 1  # a full read of this process completed
        if marker is not None:
            store.save(vehicles, drivers, marker=marker, read_at=read_at)
        return vehicles, drivers

    def inputs(self) -> dict[str, Callable[[], Any]]:
        return {"samsara": self._samsara_lists}

    def release(self) -> None:
        # no other sync reads Samsara: not kept through the apply phase
        self.ctx.source_cache.pop("samsara", None)

    def load(self) -> Desired:
        vehicles, driver_rows = self.ctx.source("samsara", self._samsara_lists)
        self.release()  # the lists stay referenced here while they are mapped
        site_id, type_id = self._placement()
        drivers = {str(d.get("id")): d for d in driver_rows}
        users: dict[str, Any] = {}
        for user in self.ctx.targets.get("users"):
            emp = employee_key(user.get("emp_id"))  # not an employee number: no driver names it
            if emp:
                users[emp] = user.get("id")
        out = Desired(source_count=len(vehicles))
        refused: set[str] = set()
        for v in vehicles:
            try:
                vid = vehicle_id(v.get("id"))
            except InvalidValue as exc:
                shown = _text(v.get("id")).strip()
                out.rejected.append(Rejected(shown_key(CODE_PREFIX + shown) if shown else "(blank)", exc.reason, ("id",)))
                continue
            key = CODE_PREFIX + vid
            dropped: list[Rejected] = []

            try:
                name = clean_text(v.get("name"), 100, "name")
            except InvalidValue as exc:
                refused.add(key)  # still in Samsara: its asset must not be archived
                out.rejected.append(Rejected(key, exc.reason, ("name",), {"id": vid}))
                continue
            vin = _optional(dropped, key, "vin", clean_code, v.get("vin"), "vin", 40)
            record: dict[str, Any] = {
                "code": key,
                "name": name or vin or vid,
                "serial": _optional(dropped, key, "serial", clean_code, _serial(v), "serial", 64),
                "vin": vin,
                "model": _optional(dropped, key, "model", _make_model, v),
                "year": _optional(dropped, key, "year", whole_number, v.get("year"), "year", 1900, 2100),
                "description": _optional(dropped, key, "description", _plate, v.get("licensePlate")),
                "site_id": site_id,
                "asset_type_id": type_id,
                "status": 1,
                "current_user_id": None,
            }
            record["current_user_id"] = self._driver_user(key, v, drivers, users, dropped)
            out.rejected += dropped
            out.records[key] = record
            out.fingerprints[key] = fingerprint(v, record["current_user_id"])
        out.deactivate = set(self.current()) - set(out.records) - refused
        return out

    def _driver_user(
        self, key: str, vehicle: Row, drivers: dict[str, Any], users: dict[str, Any], dropped: list[Rejected]
    ) -> Any:
        """The SafetyAmp user id of the vehicle's assigned driver, or None (with the reason
        in ``dropped`` when a driver is assigned but cannot be linked)."""
        assigned = vehicle.get("staticAssignedDriver")
        if not (isinstance(assigned, dict) and assigned.get("id")):
            return None
        did = shown_key(_text(assigned["id"]))
        driver = drivers.get(str(assigned["id"]))
        field = self.settings.samsara_driver_employee_field
        try:
            emp_key = employee_number(dotted(driver, field), field) if driver else None
            why = None
        except InvalidValue as exc:
            emp_key, why = None, f"driver {did}: {exc.reason}"
        if emp_key and emp_key in users:
            return users[emp_key]
        if why is None:
            why = (
                f"driver {did} not found in /fleet/drivers"
                if driver is None
                else f"driver {did} has no {field}"
                if emp_key is None
                else f"employee {emp_key} of driver {did} is not a SafetyAmp user"
            )
        dropped.append(Rejected(key, f"{why}; asset synced without its driver", ("current_user_id",), kind="field_dropped"))
        return None


def vehicle_id(raw: Any) -> str:
    """A Samsara vehicle id as this sync keys it (the text after ``samsara:``)."""
    vid = clean_code(raw, "Samsara vehicle id", CODE_MAX_LENGTH - len(CODE_PREFIX))
    if vid is None:
        raise InvalidValue("Samsara vehicle without id")
    return vid


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else shown_key(value)


def _serial(v: Row) -> Any:
    gateway = v.get("gateway")
    serial = gateway.get("serial") if isinstance(gateway, dict) else None
    return serial or v.get("serial") or None


def _optional(dropped: list[Rejected], key: str, field: str, clean: Callable[..., Any], *args: Any) -> Any:
    """``clean(*args)``; on InvalidValue the field is left out and the reason kept: an
    asset without its VIN or year is better than no asset."""
    try:
        return clean(*args)
    except InvalidValue as exc:
        dropped.append(Rejected(key, f"{exc.reason}; {field} left out", (field,), kind="field_dropped"))
        return None


def _make_model(v: Row) -> str | None:
    parts = [v.get("make"), v.get("model")]
    if any(p is not None and not isinstance(p, str) for p in parts):
        raise InvalidValue("make/model is not text")
    return clean_text(" ".join(p for p in parts if p), 100, "make/model")


def _plate(raw: Any) -> str | None:
    plate = clean_code(raw, "licensePlate", 20)
    return f"Plate {plate}" if plate else None
