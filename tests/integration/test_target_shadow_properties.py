"""The target shadow under random interleavings (issue 14, "Correctness is not traded
for speed"): source changes, our cycles planning against the shadow, outside edits on
SafetyAmp (an admin editing, deleting or creating records), lost create responses,
another runner writing with its own shadow, and full reads.

Over in-memory fakes (tests/fakes) and the real Redis (the write generation), with a
SafetyAmp that does NOT enforce unique keys (as site_clusters in the real one), so a
create planned from a stale shadow would be a duplicate the test sees.

Asserted after every step: no key on two records; every deactivation sent is a leaver's;
a cycle after another runner wrote reads fully; while nothing was edited outside since
the last full read, the guard sees exactly the active count a full read gives and a
cycle leaves nothing to do; after a full read, the target matches the source (a dry run
over a fresh full read plans no write).
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from services.data_manager import TargetCache
from services.event_manager import EventManager
from services.target_shadow import build_shadow_store
from sync.base import SyncContext
from sync.registry import SYNCS
from sync.runner import run_syncs
from sync.sync_employees import EmployeeSync
from tests.fakes.ports import FakeSafetyAmp, FakeViewpoint
from tests.support.redis_server import REDIS_URL
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics
from utils.redis_client import make_redis

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 1)
NAMES = ("departments", "jobs", "titles", "employees")
DEPTS = [{"PRDept": "100", "Description": "Field Ops"}]
JOBS = [{"Job": "J1", "Description": "Bridge", "JobStatus": 1, "Department": "100"}]
POOL = range(1, 9)


class LaxSafetyAmp(FakeSafetyAmp):
    """A SafetyAmp that lets two records share a key (the sync alone must prevent it)."""

    def _check_unique(self, coll: str, row: dict[str, Any], own_id: int | None = None) -> None:
        return None


class CycleLock:
    """An in-process cycle lock (the shadow is only used and published under one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lost = threading.Event()

    def acquire(self, blocking: bool = False) -> bool:
        return True

    def release(self) -> None:
        return None

    def holder(self) -> dict[str, Any]:
        return {}


def emp(n: int, *, last: str = "Lee", active: bool = True) -> dict[str, Any]:
    return {
        "Employee": n, "FirstName": f"F{n}", "MidName": None, "LastName": last, "Email": f"e{n}@co.com",
        "Phone": None, "CellPhone": None, "PRDept": "100", "HireDate": date(2020, 1, 1),
        "TermDate": None if active else date(2026, 10, 1), "RecentRehireDate": None,
        "ActiveYN": "Y" if active else "N", "JCCo": 1, "Job": "J1", "Title": "Foreman",
    }  # fmt: skip


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"test-shadow-{uuid.uuid4().hex[:8]}:"
        self.redis = make_redis(REDIS_URL)
        self.target = LaxSafetyAmp({"roles": [{"id": 1, "name": "Field"}]})
        self.source: dict[int, dict[str, Any]] = {}
        self.drift = 0  # outside edits since our last full read
        self.runs = 0
        self.guard_saw: list[int] = []
        self.stores = {name: self._store(name) for name in ("ours", "other")}

    def settings(self, runner: str, **env: str) -> Any:
        return load_settings(
            {
                "OUTPUT_DIR": str(self.root / runner), "VIEWPOINT_DB_URL": "sqlite://", "SAFETYAMP_TOKEN": "t",
                "SAFETYAMP_FQDN": "f", "REDIS_URL": REDIS_URL, "REDIS_PREFIX": self.prefix,
                "DEACTIVATION_GUARD_PERCENT": "50", **env,
            },
            dotenv_path=None,
        )  # fmt: skip

    def _store(self, runner: str) -> Any:
        return build_shadow_store(self.settings(runner), self.redis)

    def context(self, runner: str, *, dry_run: bool = False, full: bool = False, shadow: bool = True) -> SyncContext:
        self.runs += 1
        store = self.stores[runner] if shadow else None
        return SyncContext(
            settings=self.settings(runner),
            targets=TargetCache(self.target, store),
            tracker=InMemoryTracker(),
            events=EventManager(self.root / runner, f"run-{self.runs}"),
            metrics=Metrics(),
            today=TODAY,
            viewpoint=FakeViewpoint(DEPTS, JOBS, list(self.source.values())),
            max_workers=2,
            dry_run=dry_run,
            locks=None if dry_run else CycleLock,
            full=full,
        )

    def cycle(self, runner: str = "ours", *, full: bool = False) -> tuple[SyncContext, dict[str, Any]]:
        seen = self.guard_saw

        class Watched(EmployeeSync):
            def active_count(self, current: Any) -> int:
                n = super().active_count(current)
                seen.append(n)
                return n

        ctx = self.context(runner, full=full)
        writes_before = self.target.writes()
        sent: list[tuple[str, Any]] = []
        update = self.target.update

        def recording_update(collection: str, record_id: Any, payload: dict[str, Any]) -> dict[str, Any]:
            sent.append((collection, record_id, dict(payload)))
            return update(collection, record_id, payload)

        self.target.update = recording_update  # type: ignore[method-assign]
        try:
            results = {r.sync: r for r in run_syncs(ctx, NAMES, factories={**SYNCS, "employees": Watched})}
        finally:
            del self.target.update
        return ctx, {"results": results, "writes": self.target.writes() - writes_before, "updates": sent}

    def pending(self) -> int:
        """Writes a dry run over a full read would still send."""
        ctx = self.context("probe", dry_run=True, shadow=False)
        return sum(len(r.plan) for r in run_syncs(ctx, NAMES))

    def truth_active(self) -> int:
        return sum(1 for u in self.target.rows("users") if u.get("system_access") != 0)

    def user(self, n: int) -> dict[str, Any] | None:
        for row in self.target.rows("users"):
            if str(row.get("emp_id")) == str(n):
                return row
        return None


steps = st.lists(
    st.one_of(
        st.tuples(st.just("hire"), st.sampled_from(POOL)),
        st.tuples(st.just("leave"), st.sampled_from(POOL)),
        st.tuples(st.just("rename"), st.sampled_from(POOL), st.sampled_from(("Diaz", "Ngo", "Lee"))),
        st.tuples(st.just("cycle"), st.frozensets(st.sampled_from(POOL), max_size=3)),
        st.tuples(st.just("full")),
        st.tuples(st.just("other_runner")),
        st.tuples(st.just("admin_edit"), st.sampled_from(POOL)),
        st.tuples(st.just("admin_delete"), st.sampled_from(POOL)),
        st.tuples(st.just("admin_create"), st.sampled_from(POOL)),
    ),
    min_size=1,
    max_size=14,
)


def check_cycle(world: World, ctx: SyncContext, outcome: dict[str, Any], drift_before: int) -> None:
    keys = Counter(str(u.get("emp_id")) for u in world.target.rows("users"))
    assert not [k for k, n in keys.items() if n > 1], f"duplicate emp_id: {keys}"
    leavers = {str(n) for n, row in world.source.items() if row["ActiveYN"] == "N"}
    ids = {u["id"]: str(u.get("emp_id")) for u in world.target.rows("users")}
    for collection, record_id, payload in outcome["updates"]:
        if collection == "users" and payload.get("system_access") == 0:
            assert ids[int(record_id)] in leavers, f"deactivated a non-leaver {ids[int(record_id)]}"
    employees = outcome["results"]["employees"]
    assert employees.status in ("success", "partial"), employees.error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_shadow_converges_never_duplicates_and_the_guard_sees_the_truth(program: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        for n in (1, 2, 3):
            world.source[n] = emp(n)
        ctx, out = world.cycle(full=True)  # the first cycle reads fully and saves a shadow
        assert ctx.targets.reason != "shadow"
        other_wrote = False
        for step in program:
            kind = step[0]
            if kind == "hire":
                world.source[step[1]] = emp(step[1])
            elif kind == "leave" and step[1] in world.source:
                world.source[step[1]] = emp(step[1], last=world.source[step[1]]["LastName"], active=False)
            elif kind == "rename" and step[1] in world.source:
                active = world.source[step[1]]["ActiveYN"] == "Y"
                world.source[step[1]] = emp(step[1], last=step[2], active=active)
            elif kind in ("cycle", "full"):
                lost = step[1] if kind == "cycle" else frozenset()
                world.target.lose_create_response_for = {str(n) for n in lost}
                world.guard_saw.clear()
                truth = world.truth_active()
                drift = world.drift
                ctx, out = world.cycle(full=kind == "full")
                world.target.lose_create_response_for = set()
                if other_wrote:
                    assert ctx.targets.reason != "shadow", "planned against a shadow another runner's writes made stale"
                    other_wrote = False
                check_cycle(world, ctx, out, drift)
                if ctx.targets.reason != "shadow":
                    assert world.guard_saw in ([], [truth]), (world.guard_saw, truth)
                    world.drift = 0
                elif drift == 0:
                    assert world.guard_saw in ([], [truth]), (world.guard_saw, truth)
                else:
                    assert all(abs(n - truth) <= drift for n in world.guard_saw), (world.guard_saw, truth, drift)
                if world.drift == 0 and not lost:
                    assert world.pending() == 0, "a cycle without outside drift left work behind"
            elif kind == "other_runner":
                # Another runner (own disk, same Redis prefix) runs a cycle; an outside
                # edit first, so it has something to write.
                before = world.target.writes()
                _ctx, _out = world.cycle("other", full=True)
                other_wrote = other_wrote or world.target.writes() > before
            elif kind == "admin_edit":
                row = world.user(step[1])
                if row is not None:
                    row["last_name"] = "Edited"
                    world.drift += 1
            elif kind == "admin_delete":
                row = world.user(step[1])
                if row is not None:
                    del world.target.data["users"][row["id"]]
                    world.drift += 1
            elif kind == "admin_create" and world.user(step[1]) is None:
                world.target.create(
                    "users", {"emp_id": str(step[1]), "first_name": "Hand", "last_name": "Made", "email": f"h{step[1]}@x.com"}
                )
                world.target.calls["POST users"] -= 1
                world.drift += 1
        # the next full reconciliation repairs everything
        ctx, out = world.cycle(full=True)
        check_cycle(world, ctx, out, world.drift)
        assert world.pending() == 0
        keys = Counter(str(u.get("emp_id")) for u in world.target.rows("users"))
        assert max(keys.values(), default=1) == 1
