"""sync.apply (the one applier), sync.guard (the one guard) and the pure roster plans,
with literals and in-memory fakes."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from services.event_manager import EventManager
from sync.apply import Applier, Done, Entry
from sync.base import RunResult, SyncContext
from sync.guard import guard_reason, judge
from sync.roster_model import RosterClass, RosterEnrollment, RosterSnapshot
from sync.sync_rosters import RosterPolicy, TargetView, UserState, plan_groups
from utils.errors import FatalError, RecordError, RetriableError
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.unit


def ctx_for(tmp_path: Path, **env: str) -> SyncContext:
    settings = load_settings({"OUTPUT_DIR": str(tmp_path), **env}, dotenv_path=None)
    return SyncContext(settings=settings, targets=None, tracker=InMemoryTracker(), events=EventManager(tmp_path, "r"),
                       metrics=Metrics(), today=date(2026, 11, 22), max_workers=1)  # fmt: skip


def test_guard_reason() -> None:
    empty = guard_reason(5, 10, 50, source_count=0, held=12)
    assert empty is not None and not empty.approvable
    assert empty.reason == "the source returned no records while the target holds 12"
    big = guard_reason(6, 8, 50, source_count=2, held=8, what="users")
    assert big is not None and big.approvable
    assert big.reason == "6 deactivations exceed DEACTIVATION_GUARD_PERCENT=50 of 8 active users"
    assert guard_reason(2, 8, 50, source_count=6, held=8) is None
    assert guard_reason(0, 8, 50, source_count=0, held=0) is None  # a delta with nothing in it decides nothing


def test_judge_holds_the_approvable_refusals_of_a_run_as_one_batch(tmp_path: Path) -> None:
    from utils.control import ControlStore

    ctx = ctx_for(tmp_path)
    ctx.control = ControlStore(None, prefix="t:")
    users = guard_reason(6, 8, 50, source_count=2, held=6, what="users")
    groups = guard_reason(5, 6, 50, source_count=1, held=5, what="groups")
    result = RunResult("rosters")
    verdicts = judge(ctx, result, "rosters", [(users, ["user/a"]), (groups, ["class/c"]), (None, [])])
    assert verdicts == ["refused", "refused", "free"]
    assert result.guard_tripped and result.held == ["class/c", "user/a"]
    assert ctx.control.held("rosters")["keys"] == ["class/c", "user/a"]
    assert (result.error or "").count("deactivation guard tripped") == 2 and "approve rosters" in (result.error or "")

    ctx.control.approve("rosters", ctx.control.held("rosters")["digest"], by="ann")
    again = RunResult("rosters")
    assert judge(ctx, again, "rosters", [(users, ["user/a"]), (groups, ["class/c"])]) == ["approved", "approved"]
    assert not again.guard_tripped and again.approval is not None and ctx.control.held("rosters") is None


def test_an_empty_read_is_refused_and_never_held(tmp_path: Path) -> None:
    from utils.control import ControlStore

    ctx = ctx_for(tmp_path)
    ctx.control = ControlStore(None, prefix="t:")
    result = RunResult("jobs")
    refusal = guard_reason(0, 4, 10, source_count=0, held=4)
    assert judge(ctx, result, "jobs", [(refusal, [])]) == ["refused"]
    assert result.guard_tripped and result.held == [] and ctx.control.holds() == {}


def _entry(key: str) -> Entry:
    return Entry(key, "update", "things", "1", "fp", {"x": 1}, {"x": {"before": 0, "after": 1}})


def test_applier_stops_after_the_consecutive_error_limit_and_a_refusal_resets_it(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, CONSECUTIVE_ERROR_LIMIT="3")
    result = RunResult("jobs")
    slog = ctx.events.start("jobs")
    script: dict[str, Exception | None] = {
        "a": RetriableError("503", service="t"),
        "b": RetriableError("503", service="t"),
        "c": RecordError("422 refused", status=422),  # the target answered: it is up
        "d": RetriableError("503", service="t"),
        "e": RetriableError("503", service="t"),
        "f": None,
        "g": RetriableError("503", service="t"),
        "h": RetriableError("503", service="t"),
        "i": RetriableError("503", service="t"),
        "j": None,
    }
    sent: list[str] = []

    def send(key: str) -> Done[Any]:
        sent.append(key)
        exc = script[key]
        if exc is not None:
            raise exc
        return Done("updated", value=key)

    applier: Applier[str, Any] = Applier("jobs", ctx, slog, result, workers=1)
    with pytest.raises(FatalError, match="3 consecutive requests failed"):
        applier.apply(list(script), _entry, send)
    assert sent[:9] == list("abcdefghi")  # (j may have been in flight already)
    assert result.counts["failed"] == 8
    assert ctx.tracker.count("jobs") == 1  # the refusal is tracked; give-ups are not
    assert {e["key"] for e in slog.errors} == set("abcdeghi")


def test_applier_dry_run_sends_nothing_and_records_every_write(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path)
    ctx.dry_run = True
    result = RunResult("jobs")
    slog = ctx.events.start("jobs", dry_run=True)

    def send(key: str) -> Done[Any]:
        raise AssertionError("a dry run sends nothing")

    applier: Applier[str, Any] = Applier("jobs", ctx, slog, result, workers=1)
    assert applier.apply(["a", "b"], _entry, send) == [None, None]
    assert result.counts["updated"] == 2 and [c["key"] for c in slog.changes] == ["a", "b"]


def test_applier_keeps_what_a_write_returns_not_its_done(tmp_path: Path) -> None:
    """A settled write's ``Done`` (with the before/after it carries for the change log)
    is let go once settled: a first run of 50,000 employees settles 70,000 writes, and
    holding each one's record until the end of the apply phase cost tens of MB at the
    run's peak. Only ``value`` (what the caller needs back) is kept, in item order."""
    import gc
    import weakref

    ctx = ctx_for(tmp_path)
    result = RunResult("jobs")
    slog = ctx.events.start("jobs")
    sent: list[weakref.ref[Done[Any]]] = []
    alive_while_sending: list[int] = []

    def send(key: str) -> Done[Any]:
        gc.collect()
        alive_while_sending.append(sum(1 for ref in sent if ref() is not None))
        done = Done("updated", before={"x": 0}, after={"x": 1}, value=None if key == "b" else f"id-{key}")
        sent.append(weakref.ref(done))
        return done

    applier: Applier[str, Any] = Applier("jobs", ctx, slog, result, workers=1)
    items = [chr(ord("a") + i) for i in range(20)]
    assert applier.apply(items, _entry, send) == [None if k == "b" else f"id-{k}" for k in items]
    # one worker: a window of 4 submitted writes, so at most that many Done alive at once
    assert max(alive_while_sending) <= 4
    assert result.counts["updated"] == 20


def _snap(enrollments: list[RosterEnrollment], full: bool = True) -> RosterSnapshot:
    classes = {"c1": RosterClass("c1", title="Math", school="s1"), "c2": RosterClass("c2", title="Art", school="s1")}
    return RosterSnapshot(classes=classes, enrollments={e.sourced_id: e for e in enrollments},
                          classes_full=full, enrollments_full=full, users_full=full)  # fmt: skip


def test_plan_groups_from_the_snapshot_and_the_new_ids() -> None:
    """Pure: members follow a complete enrollments read, with the SCIM ids of users
    created in this run; a deactivated user leaves; a held one stays; others' members stay."""
    view = TargetView(
        groups={"c1": {"id": "g1", "externalId": "c1", "displayName": "Math"}},
        members={"c1": {"s-old", "s-held", "someone-else"}},
    )
    users = UserState(
        ids={"new": "s-new", "old": "s-old", "held": "s-held"},
        active={"new": True, "old": False, "held": True},
        deactivated_ids={"s-old"},
        held_ids={"s-held"},
    )
    enrol = [RosterEnrollment(f"{u}@{c}", user=u, class_id=c, role="student") for u, c in [("new", "c1"), ("new", "c2")]]
    planned = plan_groups(_snap(enrol), view, users, {"c1": "Math", "c2": "Art"}, RosterPolicy())
    by_key = {w.key: w for w in planned.writes}
    assert (by_key["c1"].kind, by_key["c1"].add, by_key["c1"].remove) == ("update", {"s-new"}, {"s-old"})
    assert (by_key["c2"].kind, by_key["c2"].add, by_key["c2"].desired) == (
        "create",
        {"s-new"},
        {"displayName": "Art", "externalId": "c2"},
    )
    assert planned.unchanged == 0

    # a delta: only what changed; nobody is removed by absence (c2 is still to create)
    delta = [RosterEnrollment("new@c1", user="new", class_id="c1", role="student", status="tobedeleted")]
    view.members["c1"] = {"s-new", "s-held"}
    planned = plan_groups(_snap(delta, full=False), view, users, {"c1": "Math", "c2": "Art"}, RosterPolicy())
    got = [(w.key, w.kind, w.add, w.remove) for w in planned.writes]
    assert got == [("c1", "update", set(), {"s-new"}), ("c2", "create", set(), set())]
