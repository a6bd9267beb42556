"""Issue 10, the operator's view, in pure pieces: trigger coalescing, the event-run hold
rule, the quarantine rule for forced runs, /health's verdict and the errors-file lookup."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from utils.health import HTTP_STATUS, assess
from utils.triggers import TriggerQueue

pytestmark = pytest.mark.unit

ENABLED = ("departments", "jobs", "titles", "employees", "vehicles", "rosters")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------- triggers
def test_all_then_one_is_all_and_forced():
    q = TriggerQueue()
    q.request(None, operator=True)
    q.request("employees", operator=True)
    got = q.take(ENABLED)
    assert got.syncs == ENABLED and got.everything and got.forced == frozenset(ENABLED)
    assert not q.take(ENABLED)  # taken once


def test_one_then_all_is_all():
    q = TriggerQueue()
    q.request("employees", operator=True)
    q.request(None, operator=True)
    assert q.take(ENABLED).syncs == ENABLED


def test_named_syncs_add_up_in_run_order_and_unknown_ones_are_dropped():
    q = TriggerQueue()
    q.request("vehicles", operator=True)
    q.request("departments", operator=True)
    q.request("nonsense", operator=True)
    got = q.take(ENABLED)
    assert got.syncs == ("departments", "vehicles") and not got.everything


def test_a_webhook_run_joins_an_operator_request_but_is_not_forced():
    clock = Clock()
    q = TriggerQueue(clock)
    assert q.request_after("vehicles", 5.0)
    assert not q.request_after("vehicles", 5.0)  # same burst
    q.request("employees", operator=True)
    first = q.take(ENABLED)
    assert first.syncs == ("employees",)  # the webhook's debounce has not passed yet
    clock.t += 5.0
    q.request("employees", operator=True)
    second = q.take(ENABLED)
    assert second.syncs == ("employees", "vehicles")
    assert second.forced == frozenset({"employees"})
    assert q.request_after("vehicles", 0.0)  # a new burst may start


def test_an_operator_request_forces_a_sync_a_webhook_also_asked_for():
    clock = Clock()
    q = TriggerQueue(clock)
    q.request_after("vehicles", 0.0)
    q.request("vehicles", operator=True)
    assert q.take(ENABLED).forced == frozenset({"vehicles"})


def test_webhook_only_is_never_forced_even_when_it_covers_every_enabled_sync():
    q = TriggerQueue(Clock())
    q.request_after("vehicles", 0.0)
    got = q.take(("vehicles",))
    assert got.syncs == ("vehicles",) and got.forced == frozenset()


def test_requests_from_many_threads_are_all_kept():
    q = TriggerQueue()
    names = ENABLED * 50
    threads = [threading.Thread(target=q.request, args=(n,), kwargs={"operator": True}) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.take(ENABLED).syncs == ENABLED


# ---------------------------------------------------------------------------- hold rule
class FakeQuarantine:
    def __init__(self, blocked: dict[str, str]) -> None:
        self.blocked = blocked
        self.recorded: list[tuple[str, str]] = []

    def blocks(self, sync: str) -> str | None:
        return self.blocked.get(sync)

    def record(self, sync: str, status: str, counts: dict[str, int], error: str | None) -> None:
        self.recorded.append((sync, status))


class FakeBreaker:
    def __init__(self, state: str, opened_at: str | None = None, recovery_seconds: float = 60.0) -> None:
        self._snap = {"state": state, "opened_at": opened_at}
        self.recovery_seconds = recovery_seconds

    def snapshot(self) -> dict[str, Any]:
        return dict(self._snap)


def test_event_hold_quarantine_and_breakers():
    from sync.runner import event_hold

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
    opened = "2026-11-28T11:59:30Z"  # 30 s ago
    assert event_hold("vehicles", FakeQuarantine({"vehicles": "quarantined after 1 failing run(s)"}), {}) is not None
    assert event_hold("vehicles", FakeQuarantine({}), {"samsara": FakeBreaker("closed")}, now=now) is None
    held = event_hold("vehicles", None, {"samsara": FakeBreaker("open", opened)}, now=now)
    assert held and "samsara" in held
    assert event_hold("vehicles", None, {"safetyamp": FakeBreaker("half_open", opened)}, now=now)
    # recovery time over: the run may go ahead as the breaker's probe
    assert event_hold("vehicles", None, {"samsara": FakeBreaker("open", opened, recovery_seconds=10)}, now=now) is None
    # a breaker of a service vehicles does not call holds nothing
    assert event_hold("vehicles", None, {"scim": FakeBreaker("open", opened)}, now=now) is None


def _ctx(quarantine: Any, forced: frozenset[str] = frozenset()) -> Any:
    from sync.base import SyncContext
    from utils.failed_sync_tracker import InMemoryTracker
    from utils.metrics import Metrics

    class Events:
        run_id = "r"

    return SyncContext(
        settings=None,
        targets=None,
        tracker=InMemoryTracker(),
        events=Events(),
        metrics=Metrics(),
        today=datetime.now(UTC).date(),
        quarantine=quarantine,
        forced=forced,
    )


def test_quarantine_holds_every_run_an_operator_did_not_force_and_forced_runs_count():
    from sync.base import RunResult
    from sync.runner import run_syncs

    class Failing:
        def __init__(self, ctx: Any) -> None:
            pass

        def run(self) -> RunResult:
            return RunResult("vehicles", status="failed", error="samsara down")

    q = FakeQuarantine({"vehicles": "quarantined after 1 failing run(s) (samsara down); next try in 3600 s"})
    held = run_syncs(_ctx(q), ["vehicles"], factories={"vehicles": Failing})
    assert held[0].status == "skipped" and "quarantined" in (held[0].error or "")
    assert q.recorded == [("vehicles", "skipped")]  # a skipped run changes nothing
    forced = run_syncs(_ctx(q, frozenset({"vehicles"})), ["vehicles"], factories={"vehicles": Failing})
    assert forced[0].status == "failed"
    assert q.recorded[-1] == ("vehicles", "failed")  # and its outcome counts


# ---------------------------------------------------------------------------- /health
BASE: dict[str, Any] = dict(
    starting=False,
    config_error=[],
    live=True,
    ready=True,
    ready_reason="ok",
    syncs=("employees", "vehicles"),
    last_runs={},
    quarantine={},
    breakers={},
    redis_degraded=False,
    now=1000.0,
)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({}, "ok"),
        ({"last_runs": {"employees": {"status": "success"}, "vehicles": {"status": "skipped"}}}, "ok"),
        ({"last_runs": {"employees": {"status": "partial", "failed": 7, "errors_file": "e.json"}}}, "degraded"),
        ({"breakers": {"samsara": "open"}}, "degraded"),
        ({"redis_degraded": True}, "degraded"),
        ({"last_runs": {"vehicles": {"status": "failed", "error": "samsara down"}}}, "failing"),
        ({"quarantine": {"vehicles": {"until": 2000.0, "bad_runs": 1, "reason": "x"}}}, "failing"),
        ({"ready": False, "ready_reason": "Viewpoint database did not answer"}, "failing"),
        ({"live": False}, "stalled"),
        ({"starting": True, "ready": False, "ready_reason": "starting up", "syncs": ()}, "starting"),
        ({"config_error": ["no sync is configured"], "ready": False, "syncs": ()}, "configuration_error"),
    ],
)
def test_health_status_vocabulary(change: dict[str, Any], status: str):
    verdict = assess(**{**BASE, **change})
    assert verdict.status == status
    assert verdict.http_status == HTTP_STATUS[status] == (200 if status in ("ok", "degraded") else 503)
    assert bool(verdict.problems) == (status != "ok")


def test_health_sync_states_say_why():
    verdict = assess(
        **{
            **BASE,
            "last_runs": {"employees": {"status": "partial", "failed": 7, "errors_file": "out/errors/e.json"}},
            "quarantine": {"vehicles": {"until": 1300.0, "bad_runs": 2, "reason": "samsara down"}},
        }
    )
    assert verdict.sync_states["employees"] == {
        "state": "partial",
        "reason": "7 record(s) failed and were recorded in out/errors/e.json",
    }
    assert verdict.sync_states["vehicles"]["state"] == "quarantined"
    assert verdict.sync_states["vehicles"]["next_try_in_seconds"] == 300
    expired = assess(**{**BASE, "quarantine": {"vehicles": {"until": 900.0, "bad_runs": 2, "reason": "x"}}})
    assert expired.sync_states["vehicles"] == {"state": "not_run_yet"}


def test_a_paused_sync_is_paused_whatever_else_and_health_is_degraded():
    pause = {"sync": "vehicles", "by": "cli:ann@h", "at": "2026-11-28T12:00:00+00:00", "reason": "fleet audit"}
    verdict = assess(
        **{
            **BASE,
            "last_runs": {"vehicles": {"status": "skipped", "error": "paused by ..."}},
            "quarantine": {"vehicles": {"until": 2000.0, "bad_runs": 1, "reason": "x"}},
            "paused": {"vehicles": pause},
        }
    )
    assert verdict.sync_states["vehicles"] == {
        "state": "paused",
        "reason": "by cli:ann@h at 2026-11-28T12:00:00+00:00: fleet audit",
        "by": "cli:ann@h",
        "since": "2026-11-28T12:00:00+00:00",
    }
    assert verdict.status == "degraded" and verdict.http_status == 200
    assert verdict.problems == ["vehicles: paused: by cli:ann@h at 2026-11-28T12:00:00+00:00: fleet audit"]


def test_pause_holds_every_run_forced_or_not_but_not_a_dry_run_and_webhooks_wait():
    from sync.base import RunResult
    from sync.runner import event_hold, run_syncs
    from utils.control import ControlStore

    ran: list[str] = []

    class Vehicles:
        def __init__(self, ctx: Any) -> None:
            pass

        def run(self) -> RunResult:
            ran.append("vehicles")
            return RunResult("vehicles")

    control = ControlStore(None, prefix="t:")
    control.pause("vehicles", by="cli:ann@h", reason="fleet audit")
    for forced in (frozenset(), frozenset({"vehicles"})):
        ctx = _ctx(None, forced)
        ctx.control = control
        [held] = run_syncs(ctx, ["vehicles"], factories={"vehicles": Vehicles})
        assert held.status == "skipped" and held.error.startswith("paused by cli:ann@h at ") and "fleet audit" in held.error
    assert ran == []
    assert [r["status"] for r in control.runs(sync="vehicles")] == ["skipped", "skipped"]
    assert "paused by" in (event_hold("vehicles", None, {}, control=control) or "")
    dry = _ctx(None)
    dry.control, dry.dry_run = control, True
    assert run_syncs(dry, ["vehicles"], factories={"vehicles": Vehicles})[0].status == "success" and ran == ["vehicles"]
    assert len(control.runs(sync="vehicles")) == 2, "a dry run is not history"
    control.resume("vehicles", by="cli:ann@h")
    ctx = _ctx(None)
    ctx.control = control
    assert run_syncs(ctx, ["vehicles"], factories={"vehicles": Vehicles})[0].status == "success"
    assert event_hold("vehicles", None, {}, control=control) is None


# ---------------------------------------------------------------------------- errors files
def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_latest_errors_is_the_last_runs_file_or_nothing(tmp_path: Path):
    from services.event_manager import latest_errors

    assert latest_errors(tmp_path, "employees") is None
    _write(tmp_path / "changes/employees-20261128T010000Z.json", {})
    _write(tmp_path / "errors/employees-20261128T010000Z.json", {"errors": [{"key": "1", "kind": "rejected"}]})
    _write(tmp_path / "changes/employees-20261128T010000Z-2.json", {})
    _write(tmp_path / "errors/employees-20261128T010000Z-2.json", {"errors": [{"key": "2", "kind": "rejected"}]})
    _write(tmp_path / "errors/employeesx-20261129T010000Z.json", {"errors": []})  # not this sync
    found = latest_errors(tmp_path, "employees")
    assert found is not None and found[0].name == "employees-20261128T010000Z-2.json"
    assert found[1]["errors"][0]["key"] == "2"
    _write(tmp_path / "changes/employees-20261128T020000Z.json", {})  # a later clean run
    assert latest_errors(tmp_path, "employees") is None
