"""The target shadow's rules, one at a time (services/target_shadow.py,
services/data_manager.py, sync/base.py), over fakes and the real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from services.data_manager import TargetCache
from services.event_manager import EventManager
from services.target_shadow import DIRTY, build_shadow_store, shadow_scope
from sync.base import SyncContext
from sync.runner import run_syncs
from tests.fakes.ports import FakeSafetyAmp, FakeViewpoint
from tests.integration.test_target_shadow_properties import DEPTS, JOBS, CycleLock, emp
from tests.support.redis_server import REDIS_URL
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics
from utils.redis_client import make_redis

pytestmark = pytest.mark.integration
NAMES = ("departments", "jobs", "titles", "employees")


class Rig:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.env = {"REDIS_PREFIX": f"test-shadow-{uuid.uuid4().hex[:8]}:", **env}
        self.redis = make_redis(REDIS_URL)
        self.target = FakeSafetyAmp({"roles": [{"id": 1, "name": "Field"}]})
        self.rows = [emp(1), emp(2), emp(3)]
        self.store = build_shadow_store(self.settings(), self.redis)
        self.n = 0

    def settings(self, **env: str) -> Any:
        base = {
            "OUTPUT_DIR": str(self.tmp), "VIEWPOINT_DB_URL": "sqlite://", "SAFETYAMP_TOKEN": "t",
            "SAFETYAMP_FQDN": "f", "REDIS_URL": REDIS_URL, **self.env, **env,
        }  # fmt: skip
        return load_settings(base, dotenv_path=None)

    def cycle(self, *, store: Any = "same", locks: Any = CycleLock, **kw: Any) -> tuple[TargetCache, dict[str, Any]]:
        self.n += 1
        targets = TargetCache(self.target, self.store if store == "same" else store)
        ctx = SyncContext(
            settings=self.settings(),
            targets=targets,
            tracker=InMemoryTracker(),
            events=EventManager(self.tmp, f"run-{self.n}"),
            metrics=Metrics(),
            today=date(2026, 11, 1),
            viewpoint=FakeViewpoint(DEPTS, JOBS, self.rows),
            max_workers=2,
            locks=locks,
            **kw,
        )
        reads = sum(n for k, n in self.target.calls.items() if k.startswith("GET"))
        results = {r.sync: r for r in run_syncs(ctx, NAMES)}
        return targets, {"results": results, "reads": sum(n for k, n in self.target.calls.items() if k.startswith("GET")) - reads}


def test_second_cycle_plans_against_the_shadow_and_reads_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first, out = rig.cycle()
    assert first.reason == "no shadow saved" and out["reads"] >= 4
    written = rig.target.writes()
    again, out = rig.cycle()
    assert again.reason == "shadow" and out["reads"] == 0 and rig.target.writes() == written
    manifest = json.loads((rig.store.directory / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"users", "sites", "site_clusters", "user_titles", "roles"}
    assert manifest["scope"] == shadow_scope(rig.settings())
    assert len(manifest["scope"]) == 16  # a hash of the account: never the token


def test_a_write_publishes_a_new_generation_and_the_shadow_holds_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    gen = rig.store.generation()
    rig.rows.append(emp(4))
    targets, out = rig.cycle()
    assert targets.reason == "shadow" and out["results"]["employees"].counts["created"] == 1
    assert out["reads"] == 0  # the create's lookup by key is a FIND, not a list read
    assert rig.target.calls["FIND users"] == 1
    assert rig.store.generation() != gen and not rig.store.generation().startswith(DIRTY)
    users = rig.store.load(rig.store.manifest(), "users")
    assert {u["emp_id"] for u in users} == {"1", "2", "3", "4"}
    again, out = rig.cycle()
    assert again.reason == "shadow" and out["reads"] == 0 and out["results"]["employees"].counts["created"] == 0


def test_shadow_of_another_account_or_prefix_is_not_used(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    other_token = build_shadow_store(rig.settings(SAFETYAMP_TOKEN="another"), rig.redis)
    other_prefix = build_shadow_store(rig.settings(REDIS_PREFIX=rig.env["REDIS_PREFIX"] + "x:"), rig.redis)
    for store in (other_token, other_prefix):
        assert store.scope != rig.store.scope
        targets, out = rig.cycle(store=store)
        assert targets.reason == "no shadow saved" and out["reads"] >= 4
    # a manifest copied under another scope's directory is refused by its scope field
    stranger = build_shadow_store(rig.settings(SAFETYAMP_FQDN="elsewhere"), rig.redis)
    assert (
        stranger.unusable(rig.store.manifest(), rig.store.generation()) == "the shadow belongs to another account or REDIS_PREFIX"
    )


def test_without_redis_every_cycle_reads_fully(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    rig.store.redis = make_redis("redis://127.0.0.1:1/0", socket_timeout=0.2)
    targets, out = rig.cycle()
    assert targets.reason.startswith("the write generation cannot be read") and out["reads"] >= 4


def test_old_shadow_full_flag_and_daemon_start_read_fully(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TARGET_FULL_READ_HOURS="1")
    rig.cycle()
    targets, _ = rig.cycle(full=True)
    assert targets.reason == "a full read was asked for"
    rig.store.clock = lambda: __import__("time").time() + 3700
    targets, _ = rig.cycle()
    assert targets.reason.startswith("the last full read is 1.0 h old")
    rig.store.clock = __import__("time").time
    fresh = build_shadow_store(rig.settings(), rig.redis)  # a restarted daemon
    targets, _ = rig.cycle(store=fresh, runner_kind="daemon")
    assert targets.reason == "first cycle of this process"
    targets, _ = rig.cycle(store=fresh, runner_kind="daemon")
    assert targets.reason == "shadow"


def test_dry_runs_and_runs_without_the_cycle_lock_never_use_or_publish_a_shadow(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    gen = rig.store.generation()
    targets, out = rig.cycle(dry_run=True, locks=None)
    assert targets.reason == "no target shadow" and out["reads"] >= 4
    assert rig.store.generation() == gen
    # a one-record run writes without the cycle lock: it leaves a dirty mark, so the
    # next cycle reads fully
    rig.rows[0] = emp(1, last="Renamed")
    targets, _ = rig.cycle(only_key="1")
    assert rig.store.generation().startswith(DIRTY)
    targets, _ = rig.cycle()
    assert targets.reason.startswith("a runner wrote to SafetyAmp")


def test_update_of_a_record_deleted_outside_recreates_it_and_marks_the_shadow_stale(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    gone = next(u for u in rig.target.rows("users") if u["emp_id"] == "2")
    del rig.target.data["users"][gone["id"]]  # an administrator deleted it
    rig.rows[1] = emp(2, last="Changed")  # and the source changes it
    targets, out = rig.cycle()
    employees = out["results"]["employees"]
    assert targets.reason == "shadow"
    assert employees.counts["created"] == 1 and employees.counts["failed"] == 0, employees.error
    users = [u for u in rig.target.rows("users") if u["emp_id"] == "2"]
    assert len(users) == 1 and users[0]["last_name"] == "Changed"
    targets, out = rig.cycle()
    assert targets.reason.startswith("a runner wrote to SafetyAmp without publishing")  # stale: full read


def test_deactivation_from_the_shadow_is_checked_against_safetyamp(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    mine = next(u for u in rig.target.rows("users") if u["emp_id"] == "3")
    mine["system_access"] = 0  # an administrator already deactivated it
    rig.rows[2] = emp(3, active=False)
    targets, out = rig.cycle()
    assert targets.reason == "shadow"
    assert rig.target.calls["FIND users"] == 1
    assert rig.target.calls["UPDATE users"] == 0  # nothing left to send
    assert out["results"]["employees"].counts["deactivated"] == 0


def test_corrupt_shadow_file_is_read_from_safetyamp(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    manifest = rig.store.manifest()
    (rig.store.directory / manifest["files"]["users"]).write_bytes(b"not gzip")
    targets, out = rig.cycle()
    assert targets.reason == "shadow" and rig.target.calls["GET users"] == 2
    assert out["results"]["employees"].counts["created"] == 0


def test_many_checks_cost_one_read_of_the_collection_not_one_lookup_each(tmp_path: Path) -> None:
    rig = Rig(tmp_path, SAFETYAMP_PAGE_SIZE="2")  # 3 users: a full read is 3 pages (with the empty one)
    rig.cycle()
    rig.rows += [emp(n) for n in range(4, 9)]  # 5 hires: 5 lookups would cost more than the 3 pages
    targets, out = rig.cycle()
    assert targets.reason == "shadow" and out["results"]["employees"].counts["created"] == 5
    assert rig.target.calls["FIND users"] == 0 and rig.target.calls["GET users"] == 2
    rig.rows.append(emp(9))  # one hire: one lookup
    targets, out = rig.cycle()
    assert targets.reason == "shadow" and rig.target.calls["FIND users"] == 1 and rig.target.calls["GET users"] == 2


def test_collections_a_narrower_cycle_did_not_read_are_added_without_a_write(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = TargetCache(rig.target, rig.store)
    assert first.begin_cycle() == "no shadow saved"
    first.get("roles")
    assert first.end_cycle(publish=True) == "published"  # a full read of one collection
    wider = TargetCache(rig.target, rig.store)
    assert wider.begin_cycle() == "shadow"
    wider.get("roles")
    wider.get("users")  # not in the shadow: read
    assert rig.target.calls["GET roles"] == 1 and rig.target.calls["GET users"] == 1
    assert wider.end_cycle(publish=True) == "added"
    third = TargetCache(rig.target, rig.store)
    assert third.begin_cycle() == "shadow"
    third.get("roles")
    third.get("users")
    assert rig.target.calls["GET roles"] == 1 and rig.target.calls["GET users"] == 1
    assert third.end_cycle(publish=True) == "unchanged"


def test_create_refused_because_the_key_exists_adopts_the_record(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    rig.rows.append(emp(5))
    hidden = rig.target.find_by  # SafetyAmp's filter misses it (say, another spelling): the lookup finds nothing

    def lookup(collection: str, field: str, value: Any) -> Any:
        lookup.calls += 1
        return None if lookup.calls == 1 else hidden(collection, field, value)

    lookup.calls = 0
    rig.target.find_by = lookup  # type: ignore[method-assign]
    rig.target.create("users", {"emp_id": "5", "first_name": "Hand", "last_name": "Made", "email": "h5@x.com"})
    targets, out = rig.cycle()
    employees = out["results"]["employees"]
    assert targets.reason == "shadow" and employees.counts["failed"] == 0, employees.error
    users = [u for u in rig.target.rows("users") if u["emp_id"] == "5"]
    assert len(users) == 1 and users[0]["last_name"] == "Lee" and users[0]["email"] == "e5@co.com"  # adopted, re-planned
    assert lookup.calls == 2
    targets, _ = rig.cycle()
    assert targets.reason != "shadow"  # marked stale: a full read


def test_an_invalidated_collection_is_read_from_safetyamp(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cycle()
    targets = TargetCache(rig.target, rig.store)
    assert targets.begin_cycle() == "shadow"
    targets.get("users")
    assert rig.target.calls["GET users"] == 1 and targets.shadowed("users")
    targets.invalidate("users")
    targets.get("users")
    assert rig.target.calls["GET users"] == 2 and not targets.shadowed("users")
    targets.invalidate()
    targets.get("roles")
    assert rig.target.calls["GET roles"] == 2
