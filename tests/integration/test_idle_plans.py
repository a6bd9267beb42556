"""Idle cycles do not plan again (sync/idle.py): a sync whose inputs are those of its
last plan that wrote nothing reports that plan's outcome without mapping, loading the
shadow or planning; anything a plan reads that changed makes it plan. Fakes for
SafetyAmp and Vista, the real Redis for the shadow's generation."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.data_manager import TargetCache
from services.event_manager import EventManager
from sync.base import SyncContext
from sync.idle import digest
from sync.runner import run_syncs
from sync.sync_departments import DepartmentSync
from tests.fakes.ports import FakeViewpoint
from tests.integration.test_target_shadow import NAMES, Rig
from tests.integration.test_target_shadow_properties import DEPTS, JOBS, CycleLock, emp
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.integration


class IdleRig(Rig):
    """The shadow rig, counting what each cycle loaded from the shadow."""

    def __init__(self, tmp: Path, **env: str) -> None:
        super().__init__(tmp, **env)
        self.tracker = InMemoryTracker()
        self.today = date(2026, 11, 1)
        self.depts = list(DEPTS)
        self.shadow_loads: list[str] = []
        load = self.store.load

        def counted(manifest: Any, collection: str) -> Any:
            self.shadow_loads.append(collection)
            return load(manifest, collection)

        self.store.load = counted  # type: ignore[method-assign]

    def run(self, *, factories: Any = None, **kw: Any) -> dict[str, Any]:
        self.n += 1
        self.shadow_loads = []
        targets = TargetCache(self.target, self.store)
        ctx = SyncContext(
            settings=kw.pop("settings", None) or self.settings(),
            targets=targets,
            tracker=self.tracker,
            events=EventManager(self.tmp, f"run-{self.n}"),
            metrics=Metrics(),
            today=self.today,
            viewpoint=FakeViewpoint(self.depts, JOBS, self.rows),
            max_workers=2,
            **{"locks": CycleLock, **kw},
        )
        writes = self.target.writes()
        extra = {} if factories is None else {"factories": factories}
        results = {r.sync: r for r in run_syncs(ctx, list(NAMES) if factories is None else list(factories), **extra)}
        return {
            "reason": targets.reason,
            "results": results,
            "writes": self.target.writes() - writes,
            # what the cycle loaded from the shadow, less the departments sync's check
            # that its root cluster exists (before any plan; 1 small collection)
            "loaded": len([c for c in self.shadow_loads if c != "site_clusters"]),
            "counts": {n: dict(r.counts) for n, r in results.items()},
        }


def settled(tmp: Path, **env: str) -> tuple[IdleRig, dict[str, Any]]:
    """A rig after a first full cycle and one cycle that planned against the shadow and
    found nothing to write (the plan whose key the next cycles compare with)."""
    rig = IdleRig(tmp, **env)
    rig.run()
    planned = rig.run()
    assert planned["reason"] == "shadow" and planned["writes"] == 0 and planned["loaded"] > 0
    return rig, planned


def test_an_idle_cycle_reports_the_last_plan_without_planning(tmp_path: Path) -> None:
    rig, planned = settled(tmp_path)
    idle = rig.run()
    assert idle["reason"] == "shadow" and idle["writes"] == 0
    assert idle["loaded"] == 0  # no sync needed the target: nothing planned
    assert idle["counts"] == planned["counts"]
    assert {r.status for r in idle["results"].values()} == {"success"}


def test_a_source_change_plans_and_writes_in_the_same_cycle(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    rig.rows[0] = emp(1, last="Renamed")
    changed = rig.run()
    assert changed["writes"] == 1 and changed["results"]["employees"].counts["updated"] == 1
    assert [u["last_name"] for u in rig.target.rows("users") if u["emp_id"] == "1"] == ["Renamed"]
    rig.rows.append(emp(4))  # the next change too: a saved key never hides one
    assert rig.run()["results"]["employees"].counts["created"] == 1


def test_a_rejected_record_is_reported_again_by_an_idle_cycle(tmp_path: Path) -> None:
    rig = IdleRig(tmp_path)
    rig.rows.append({**emp(5), "ActiveYN": "X"})
    rig.run()
    planned = rig.run()
    idle = rig.run()
    assert idle["loaded"] == 0
    for out in (planned, idle):
        employees = out["results"]["employees"]
        assert employees.status == "partial" and employees.rejected == 1 and employees.counts["failed"] == 1

    def recorded(out: dict[str, Any]) -> list[dict[str, Any]]:
        errors = json.loads(Path(out["results"]["employees"].errors_file).read_text())["errors"]
        return [{k: v for k, v in e.items() if k != "at"} for e in errors]

    assert recorded(idle) == recorded(planned)  # the same entries, as the planned run recorded them
    text = json.dumps(recorded(idle))
    assert "ActiveYN is 'X'" in text and '"5"' in text


def test_records_waiting_in_the_tracker_make_the_sync_plan(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    rig.tracker.record_failure("employees", "2", "fp", "SafetyAmp said no", ["email"])
    rig.run()
    assert "users" in rig.shadow_loads  # employees planned (the tracker changed)
    assert rig.run()["loaded"] == 0  # the same entry, still waiting: a plan would do the same
    assert rig.tracker.retry("employees", "2") == 1  # due now: it plans
    assert rig.run()["loaded"] > 0
    assert rig.run()["loaded"] > 0  # and plans as long as a record is due
    rig.tracker.record_success("employees", "2")
    rig.run()  # plans once more with an empty tracker and saves its key
    assert rig.run()["loaded"] == 0


def test_a_new_day_a_setting_or_a_full_read_plans_again(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    rig.today = date(2026, 11, 2)
    assert rig.run()["loaded"] > 0
    assert rig.run()["loaded"] == 0
    assert rig.run(settings=rig.settings(SAFETYAMP_RATE_LIMIT_PER_MINUTE="30"))["loaded"] == 0  # not a plan's setting
    assert rig.run(settings=rig.settings(SAFETYAMP_TIMEZONE="America/Denver"))["loaded"] > 0
    full = rig.run(full=True)
    assert full["reason"] == "a full read was asked for"
    after = rig.run()  # new shadow files: the first cycle on them plans
    assert after["reason"] == "shadow" and after["loaded"] > 0


def test_an_outside_edit_is_repaired_by_the_next_full_read(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    user = next(u for u in rig.target.rows("users") if u["emp_id"] == "2")
    user["last_name"] = "Edited by an admin"
    assert rig.run()["writes"] == 0  # the shadow does not know: drift until the full read
    repaired = rig.run(full=True)
    assert repaired["writes"] == 1
    assert [u["last_name"] for u in rig.target.rows("users") if u["emp_id"] == "2"] == ["Lee"]


def test_a_write_earlier_in_the_cycle_makes_the_later_syncs_plan(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    rig.depts.append({"PRDept": "200", "Description": "Shop"})  # departments writes first
    out = rig.run()
    assert out["results"]["departments"].counts["created"] == 1
    assert out["loaded"] >= 3  # jobs, titles and employees planned against the shadow


def test_dry_runs_and_one_record_runs_always_plan(tmp_path: Path) -> None:
    rig, _ = settled(tmp_path)
    rig.rows[1] = emp(2, last="Preview")
    preview = rig.run(dry_run=True, locks=None)
    assert preview["writes"] == 0 and any(p["key"] == "2" for p in preview["results"]["employees"].plan)


class Undeclared(DepartmentSync):
    """A sync whose load reads a source its inputs() does not name."""

    def load(self) -> Any:
        self.ctx.source("extra", lambda: ["something the key does not see"])
        return super().load()


def test_a_sync_reading_an_undeclared_source_plans_every_cycle(tmp_path: Path) -> None:
    for sync, saved in ((Undeclared, False), (DepartmentSync, True)):
        rig = IdleRig(tmp_path / sync.__name__)
        for _ in range(3):
            out = rig.run(factories={"departments": sync})
        assert out["reason"] == "shadow"
        assert (rig.store.directory / "notes" / "plan-departments.json").exists() is saved


def test_digest_follows_values_not_identity() -> None:
    rows = [{"Employee": 1, "HireDate": date(2020, 1, 1), "Name": "Ana"}]
    assert digest(rows) == digest([dict(r) for r in rows])
    assert digest(rows) != digest([{**rows[0], "Name": "Ana "}])
    assert digest({1: "J1"}) != digest({1: "J2"}) and digest([]) != digest({})


def test_an_idle_cycle_clears_a_hold_its_plan_no_longer_makes(tmp_path: Path) -> None:
    """A batch held for approval, then the source change behind it undone: the cycle
    whose inputs are those of the saved quiet plan holds nothing, so the console must not
    go on offering the obsolete batch for approval (as a planned run clears it)."""
    from utils.control import ControlStore

    rig = IdleRig(tmp_path)
    rig.rows = [emp(n) for n in range(1, 9)]
    control = ControlStore(rig.redis, prefix=rig.env["REDIS_PREFIX"])
    rig.run(control=control)
    assert rig.run(control=control)["loaded"] > 0  # the quiet plan whose key is saved
    settled_rows = list(rig.rows)
    rig.rows[:4] = [emp(n, active=False) for n in range(1, 5)]  # a mistaken termination: 4 of 8
    held = rig.run(control=control)
    assert held["results"]["employees"].held == ["1", "2", "3", "4"] and control.held("employees") is not None
    rig.rows = settled_rows  # corrected in Vista: the inputs are the saved quiet plan's again
    idle = rig.run(control=control)
    assert "users" not in rig.shadow_loads  # employees did not plan (titles did: its note is the held cycle's)
    assert idle["results"]["employees"].status == "success"
    assert control.held("employees") is None


def test_a_new_python_plans_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules of a plan are the product's code and the interpreter running it: a new
    image with the same product code but another Python (its Unicode tables decide which
    names and e-mails validate, utils/data_validator.py) plans again."""
    import sys
    import unicodedata

    rig, _ = settled(tmp_path)
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    assert rig.run()["loaded"] > 0
    assert rig.run()["loaded"] == 0
    monkeypatch.setattr(unicodedata, "unidata_version", "99.0.0")
    assert rig.run()["loaded"] > 0


def test_a_record_waiting_in_the_tracker_does_not_keep_the_sync_planning(tmp_path: Path) -> None:
    """One record SafetyAmp refuses waits in the tracker (2 h, then longer; once
    quarantined, until its inputs change or 30 days pass): every plan meanwhile holds it
    back the same way, so it does not stop the sync's idle cycles; when it falls due (or
    an operator releases it, test_records_waiting_in_the_tracker_make_the_sync_plan) the
    sync plans and retries it."""
    from datetime import UTC, datetime, timedelta

    from utils.errors import RecordError

    clock = [datetime(2026, 11, 1, 8, tzinfo=UTC)]
    rig, _ = settled(tmp_path)
    rig.tracker = InMemoryTracker(lambda: clock[0])
    rig.target.fail_with["2"] = RecordError("SafetyAmp said no", status=422)
    rig.rows[1] = emp(2, last="Refused")
    assert rig.run()["results"]["employees"].counts["failed"] == 1  # record 2 waits 2 h
    for _ in range(2):  # the full read the attempted write asks for, then a plan against it
        assert rig.run()["results"]["employees"].counts["skipped"] == 1
    idle = rig.run()
    assert "users" not in rig.shadow_loads, rig.shadow_loads
    assert idle["results"]["employees"].counts["skipped"] == 1 and idle["results"]["employees"].status == "success"
    rig.target.fail_with.clear()
    clock[0] += timedelta(hours=3)  # its retry falls due: the next cycle plans and retries it
    assert rig.run()["results"]["employees"].counts["updated"] == 1
    assert rig.tracker.count("employees") == 0
