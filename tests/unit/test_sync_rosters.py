"""sync.sync_rosters with in-memory fakes: the pure helpers, the guard, enrollment gaps,
delta semantics and the cursor. (The real SCIM server: tests/integration/test_scim_api.py.)"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from config.settings import load_settings
from services.event_manager import EventManager
from services.scim_api import ScimIntents, member_ops, scim_user_flat, user_ops
from sync.base import SyncContext
from sync.ports import BULK_REF
from sync.roster_model import RosterClass, RosterEnrollment, RosterSnapshot, RosterUser
from sync.sync_rosters import RosterSync, plan_members, user_in_scope
from utils.errors import AmbiguousWriteError, ConflictError, FatalError, RecordError
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


class FakeScim(ScimIntents):
    """Just enough of a SCIM provider: replace on simple paths, add/remove members; a
    taken userName (not case-exact) is a 409 ConflictError, an unknown id a 404 (fatal on
    a read, a RecordError on a write), as services.scim_api maps them (tests/contract).
    The intents of the ScimTarget port come from services.scim_api (``ScimIntents``): the
    fake stores the very resources and operations the real adapter would send.

    ``config`` is its ServiceProviderConfig: nothing announced by default (one request per
    change, no versions); with ``etag`` announced every resource carries ``meta.version``
    and a write naming an older one is a 412; with ``bulk`` announced it takes Bulk
    requests as scim2-server does (``post_bulk``), and ``lose_next_bulk_answer`` drops the
    answer of the next one after applying it (tests/contract/test_scim_bulk_contract.py
    holds both to the same checks)."""

    @property
    def etags(self) -> bool:
        etag = self.config.get("etag")
        return bool(isinstance(etag, Mapping) and etag.get("supported"))

    def _new_version(self, row: dict[str, Any]) -> None:
        if self.etags:
            row["meta"] = {**row.get("meta", {}), "version": f'W/"{next(self.versions)}"'}

    def _check_version(self, row: Mapping[str, Any], etag: str | None) -> None:
        """If-Match (RFC 7644 section 3.14): a write naming another version is refused."""
        if self.etags and etag is not None and etag != row.get("meta", {}).get("version"):
            raise RecordError("scim: the resource changed since that version (412)", service="scim", status=412)

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.data: dict[str, dict[str, dict[str, Any]]] = {"Users": {}, "Groups": {}}
        self.ids = itertools.count(1)
        self.writes: list[tuple[str, str, str]] = []
        self.config = copy.deepcopy(dict(config or {}))
        self.versions = itertools.count(1)
        self.lose_next_bulk_answer = False
        self.bulk_requests = self.bulk_operations = 0

    def service_provider_config(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)

    def post_bulk(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A BulkRequest as scim2-server 0.8.3 runs it (scim2_server/bulk.py, service.py):
        a body over maxPayloadSize (its bytes as the requests library sends them) or more
        operations than maxOperations is a 413; the operations run in request order, a
        POST before the first operation naming its bulkId; a reference to a create that
        failed is a 409; without failOnErrors every operation is answered, in request
        order, with its bulkId."""
        bulk = self.config.get("bulk") or {}
        if not bulk.get("supported"):
            raise RecordError("scim: Bulk is not supported", service="scim", status=501)
        sent = requests.Request("POST", "http://fake-scim/v2/Bulk", json=dict(body)).prepare().body
        assert isinstance(sent, bytes)
        ops = list(body["Operations"])
        if len(sent) > bulk["maxPayloadSize"] or len(ops) > bulk["maxOperations"]:
            raise RecordError("scim: the payload exceeds the maxPayloadSize or maxOperations", service="scim", status=413)
        self.bulk_requests += 1
        self.bulk_operations += len(ops)
        creations = {op["bulkId"]: i for i, op in enumerate(ops) if op["method"] == "POST" and op.get("bulkId")}
        created: dict[str, str] = {}
        results: dict[int, dict[str, Any]] = {}

        def refs(value: Any) -> list[str]:
            if isinstance(value, str):
                return [value[len(BULK_REF) :]] if value.startswith(BULK_REF) else []
            items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else []
            return [r for item in items for r in refs(item)]

        def resolved(value: Any) -> Any:
            if isinstance(value, str) and value.startswith(BULK_REF):
                ref = value[len(BULK_REF) :]
                if ref not in created:
                    raise ConflictError(f"No resource was created with the bulkId {ref}", service="scim", status=409)
                return created[ref]
            if isinstance(value, Mapping):
                return {k: resolved(v) for k, v in value.items()}
            return [resolved(v) for v in value] if isinstance(value, list) else value

        def run(i: int, path: frozenset[int] = frozenset()) -> None:
            op = ops[i]
            for ref in refs(op.get("data")) + refs(op["path"].split("/")):
                j = creations.get(ref)
                if j is not None and j not in results and j not in path and j != i:
                    run(j, path | {i})
            if i in results:
                return
            result: dict[str, Any] = {"method": op["method"], "bulkId": op.get("bulkId")}
            try:
                segments = [str(resolved(seg)) for seg in op["path"].strip("/").split("/")]
                resource, rid = segments[0], segments[1] if len(segments) > 1 else None
                data = resolved(op.get("data") or {})
                if op["method"] == "POST":
                    rid = str(self.create(resource, {k: v for k, v in data.items() if k != "schemas"})["id"])
                    status = 201
                    if op.get("bulkId"):
                        created[op["bulkId"]] = rid
                elif op["method"] == "PATCH":
                    self.patch(resource, str(rid), data["Operations"], op.get("version"))
                    status = 200
                else:
                    self.delete(resource, str(rid), op.get("version"))
                    status = 204
                result.update(status=str(status), location=f"http://fake-scim/v2/{resource}/{rid}")
            except RecordError as exc:
                error = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": exc.message}
                result.update(status=str(exc.status or 400), response={**error, "status": str(exc.status or 400)})
            results[i] = result

        for i in range(len(ops)):
            run(i)
        if self.lose_next_bulk_answer:  # applied, then the connection dropped (services.http's mapping)
            self.lose_next_bulk_answer = False
            raise AmbiguousWriteError("scim: POST /Bulk failed after the request was sent", service="scim")
        return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
                "Operations": [results[i] for i in range(len(ops))]}  # fmt: skip

    def list(self, resource: str) -> list[dict[str, Any]]:
        return copy.deepcopy(list(self.data[resource].values()))

    def _row(self, resource: str, rid: str) -> dict[str, Any]:
        if rid not in self.data[resource]:
            raise RecordError(f"Resource {rid} not found", service="scim", status=404)
        return self.data[resource][rid]

    def get(self, resource: str, rid: str) -> dict[str, Any]:
        if rid not in self.data[resource]:
            raise FatalError(f"Resource {rid} not found", service="scim", status=404)
        return copy.deepcopy(self.data[resource][rid])

    def find(self, resource: str, attribute: str, value: str) -> dict[str, Any] | None:
        def same(have: Any) -> bool:  # userName is not case-exact (RFC 7643 §4.1.1)
            return have == value or (attribute == "userName" and str(have).lower() == value.lower())

        return next((copy.deepcopy(r) for r in self.data[resource].values() if same(r.get(attribute))), None)

    def create(self, resource: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        name = payload.get("userName")
        if resource == "Users" and name is not None and self.find("Users", "userName", str(name)) is not None:
            raise ConflictError("userName is already taken", service="scim", status=409)
        rid = f"id{next(self.ids)}"
        self.data[resource][rid] = {**copy.deepcopy(dict(payload)), "id": rid}
        self._new_version(self.data[resource][rid])
        self.writes.append(("POST", resource, rid))
        return copy.deepcopy(self.data[resource][rid])

    def patch(self, resource: str, rid: str, ops: Sequence[Mapping[str, Any]], etag: str | None = None) -> None:
        row = self._row(resource, rid)
        self._check_version(row, etag)
        for op in ops:
            path = op["path"]
            if op["op"] == "add" and path == "members":
                have = {m["value"] for m in row.setdefault("members", [])}
                row["members"] += [m for m in op["value"] if m["value"] not in have]
            elif op["op"] == "remove":
                value = re.match(r'members\[value eq "(.*)"\]', path).group(1)  # type: ignore[union-attr]
                row["members"] = [m for m in row.get("members", []) if m["value"] != value]
            elif "." in path:
                outer, inner = path.split(".")
                row.setdefault(outer, {})[inner] = op["value"]
            else:
                row[path] = op["value"]
        self._new_version(row)
        self.writes.append(("PATCH", resource, rid))

    def delete(self, resource: str, rid: str, etag: str | None = None) -> None:
        self._check_version(self._row(resource, rid), etag)
        del self.data[resource][rid]
        self.writes.append(("DELETE", resource, rid))

    def by_ext(self, resource: str) -> dict[str, dict[str, Any]]:
        return {r["externalId"]: r for r in self.data[resource].values()}

    def members(self, class_id: str) -> set[str]:
        ext = {rid: r["externalId"] for rid, r in self.data["Users"].items()}
        return {ext[m["value"]] for m in self.by_ext("Groups")[class_id].get("members", [])}


class Source:
    supports_delta = True

    def __init__(self, snap: RosterSnapshot) -> None:
        self.snap = snap
        self.since: list[Any] = []

    def read(self, since: Any, schools: Any) -> RosterSnapshot:
        self.since.append(since)
        return self.snap


class Cursor:
    def __init__(self, state: dict[str, str] | None = None) -> None:
        self.state = state

    def load(self) -> dict[str, str] | None:
        return self.state

    def save(self, state: Mapping[str, str]) -> None:
        self.state = dict(state)


def u(sid: str, role: str = "student", status: str = "active", school: str = "s1", roles: Any = ...) -> RosterUser:
    return RosterUser(sid, status=status, username=sid, given_name="A", family_name="B", email=f"{sid}@x.org",
                      roles=((role, school),) if roles is ... else roles, primary_role=role)  # fmt: skip


def e(user: str, cls: str, status: str = "active", school: str = "s1") -> RosterEnrollment:
    return RosterEnrollment(f"{user}@{cls}", status=status, user=user, class_id=cls, school=school, role="student")


def snap(
    users: list[RosterUser], classes: list[RosterClass], enrollments: list[RosterEnrollment], full: bool = True
) -> RosterSnapshot:
    return RosterSnapshot(
        users={x.sourced_id: x for x in users}, classes={x.sourced_id: x for x in classes},
        enrollments={x.sourced_id: x for x in enrollments}, users_full=full, classes_full=full, enrollments_full=full,
    )  # fmt: skip


def ctx_for(tmp_path: Path, source: Source, scim: FakeScim, cursor: Cursor | None = None, **env: str) -> SyncContext:
    settings = load_settings({"OUTPUT_DIR": str(tmp_path), "DEACTIVATION_GUARD_PERCENT": "50", **env}, dotenv_path=None)
    return SyncContext(settings=settings, targets=None, tracker=InMemoryTracker(), events=EventManager(tmp_path, "r"),
                       metrics=Metrics(), today=date(2026, 11, 22), oneroster=source, scim=scim, roster_cursor=cursor)  # fmt: skip


def test_pure_helpers() -> None:
    assert plan_members({"a", "b"}, {"b", "c", "x"}, ours={"a", "b", "c"}) == ({"a"}, {"c"})  # x is not ours: stays
    assert plan_members(None, {"a"}, ours={"a"}, add={"b"}, remove={"a"}) == ({"b"}, {"a"})
    assert plan_members({"b"}, {"a", "b"}, ours={"a", "b"}, keep={"a"}) == (set(), set())
    assert member_ops({"2", "1"}, {'q"x'}) == [
        {"op": "add", "path": "members", "value": [{"value": "1"}, {"value": "2"}]},
        {"op": "remove", "path": 'members[value eq "q\\"x"]'},
    ]
    assert user_ops({"givenName": "Al", "email": "a@x", "role": "teacher"}) == [
        {"op": "replace", "path": "emails", "value": [{"value": "a@x", "type": "work", "primary": True}]},
        {"op": "replace", "path": "name.givenName", "value": "Al"},
        {"op": "replace", "path": "title", "value": "teacher"},
    ]
    row = {
        "userName": "a",
        "name": {"givenName": "A"},
        "emails": [{"value": "o@x"}, {"value": "p@x", "primary": True}],
        "roles": [{"value": "student"}],
    }
    assert scim_user_flat(row, "roles")["email"] == "p@x" and scim_user_flat(row, "roles")["role"] == "student"
    assert user_in_scope(u("a", school="s2"), ["student"], ["s1"]) == (False, "not in a configured school")
    assert user_in_scope(u("a", role="guardian"), ["student"], [])[0] is False
    assert user_in_scope(u("a", roles=None), ["student"], [])[0] is None


def test_guard_holds_mass_deactivation_and_their_memberships(tmp_path: Path) -> None:
    users = [u(f"u{i}") for i in range(8)]
    source = Source(snap(users, [RosterClass("c1", school="s1")], [e(x.sourced_id, "c1") for x in users]))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    assert RosterSync(ctx).run().status == "success"
    source.snap = snap(users[:2], [RosterClass("c1", school="s1")], [e("u0", "c1"), e("u1", "c1")])  # 6 of 8 vanish
    result = RosterSync(ctx).run()
    assert result.status == "failed" and result.guard_tripped and "guard" in (result.error or "")
    assert all(r["active"] for r in scim.by_ext("Users").values())
    assert scim.members("c1") == {f"u{i}" for i in range(8)}  # held users keep their classes


def test_a_held_roster_batch_of_users_and_classes_is_approved_once(tmp_path: Path) -> None:
    """One guard path for rosters and the SafetyAmp syncs: the users and the classes the
    guard refused in a run are one held batch; its approval lets exactly it through."""
    from utils.control import ControlStore

    users = [u(f"u{i}") for i in range(8)]
    classes = [RosterClass(f"c{i}", school="s1") for i in range(8)]
    source = Source(snap(users, classes, [e(x.sourced_id, f"c{i}") for i, x in enumerate(users)]))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    ctx.control = ControlStore(None, prefix="t:")
    assert RosterSync(ctx).run().status == "success"
    source.snap = snap(users[:2], classes[:2], [e("u0", "c0"), e("u1", "c1")])  # 6 of 8 users and classes vanish
    held = RosterSync(ctx).run()
    assert held.guard_tripped and held.counts["deactivated"] == 0
    hold = ctx.control.held("rosters")
    assert hold["keys"] == sorted([f"user/u{i}" for i in range(2, 8)] + [f"class/c{i}" for i in range(2, 8)])
    assert all(r["active"] for r in scim.by_ext("Users").values())
    assert "approve rosters" in (held.error or "")

    ctx.control.approve("rosters", hold["digest"], by="ann")
    done = RosterSync(ctx).run()
    assert not done.guard_tripped and done.approval is not None and done.approval["digest"] == hold["digest"]
    assert sorted(k for k, r in scim.by_ext("Users").items() if not r["active"]) == [f"u{i}" for i in range(2, 8)]
    assert all(not scim.members(f"c{i}") for i in range(2, 8))
    assert ctx.control.held("rosters") is None and ctx.control.approval("rosters") is None


def test_an_approval_of_held_users_leaves_the_classes_the_guard_allowed_alone(tmp_path: Path) -> None:
    from utils.control import ControlStore

    users = [u(f"u{i}") for i in range(8)]
    classes = [RosterClass(f"c{i}", school="s1") for i in range(8)]
    source = Source(snap(users, classes, [e(x.sourced_id, f"c{i}") for i, x in enumerate(users)]))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    ctx.control = ControlStore(None, prefix="t:")
    RosterSync(ctx).run()
    keep = [e("u0", "c0"), e("u1", "c1")]
    source.snap = snap(users[:2], classes[:7], keep)  # 6 of 8 users leave (held), 1 class closes (allowed)
    held = RosterSync(ctx).run()
    assert held.guard_tripped and ctx.control.held("rosters")["keys"] == [f"user/u{i}" for i in range(2, 8)]
    assert not scim.members("c7"), "the guard let the one closed class through"
    ctx.control.approve("rosters", ctx.control.held("rosters")["digest"], by="ann")
    source.snap = snap(users[:2], classes[:6], keep)  # and one more class closes, within the guard
    done = RosterSync(ctx).run()
    assert not done.guard_tripped and done.counts["deactivated"] == 7  # 6 users, 1 class
    assert sorted(k for k, r in scim.by_ext("Users").items() if not r["active"]) == [f"u{i}" for i in range(2, 8)]
    assert not scim.members("c6"), "a class the guard allowed is not held back by the users' approval"


def test_a_roster_approval_of_another_batch_lets_nothing_through(tmp_path: Path) -> None:
    from utils.control import ControlStore

    users = [u(f"u{i}") for i in range(8)]
    source = Source(snap(users, [RosterClass("c1", school="s1")], [e(x.sourced_id, "c1") for x in users]))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    ctx.control = ControlStore(None, prefix="t:")
    RosterSync(ctx).run()
    source.snap = snap(users[:2], [RosterClass("c1", school="s1")], [e("u0", "c1"), e("u1", "c1")])
    RosterSync(ctx).run()
    first = ctx.control.held("rosters")
    ctx.control.approve("rosters", first["digest"], by="ann")
    source.snap = snap(users[:1], [RosterClass("c1", school="s1")], [e("u0", "c1")])  # one more left
    again = RosterSync(ctx).run()
    assert again.guard_tripped and all(r["active"] for r in scim.by_ext("Users").values())
    assert ctx.control.held("rosters")["count"] == 7 and ctx.control.approval("rosters") is None


def test_empty_complete_read_deactivates_nothing(tmp_path: Path) -> None:
    source = Source(snap([u("a"), u("b")], [], []))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim, DEACTIVATION_GUARD_PERCENT="100")
    RosterSync(ctx).run()
    source.snap = snap([], [], [])
    from utils.control import ControlStore

    ctx.control = ControlStore(None, prefix="t:")
    result = RosterSync(ctx).run()
    assert result.guard_tripped and all(r["active"] for r in scim.by_ext("Users").values())
    assert ctx.control.holds() == {}, "an empty read is never approvable"


def test_a_class_whose_enrollments_were_not_read_keeps_its_members(tmp_path: Path) -> None:
    users = [u("a"), u("b", school="s2")]
    classes = [RosterClass("c1", school="s1"), RosterClass("c2", school="s2")]
    source = Source(snap(users, classes, [e("a", "c1"), e("b", "c2", school="s2")]))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    RosterSync(ctx).run()
    broken = snap(users, classes, [])
    broken.enrollment_gaps = {"s2"}
    source.snap = broken
    result = RosterSync(ctx).run()
    assert result.status == "partial"
    assert scim.members("c2") == {"b"}  # unread: kept
    assert scim.members("c1") == set()  # read, and empty: emptied


def test_delta_uses_the_cursor_and_never_deactivates_by_absence(tmp_path: Path) -> None:
    users = [u("a"), u("b"), u("w")]
    source = Source(snap(users, [RosterClass("c1", school="s1")], [e("a", "c1"), e("w", "c1")]))
    scim, cursor = FakeScim(), Cursor()
    ctx = ctx_for(tmp_path, source, scim, cursor)
    RosterSync(ctx, now=lambda: NOW).run()
    assert cursor.state == {"cursor": "2026-11-22T08:00:00Z", "last_full": "2026-11-22T08:00:00Z"}
    # an hour later: a delta where w withdraws and b joins c1; a is simply not in it
    source.snap = snap([u("w", status="tobedeleted")], [], [e("w", "c1", status="tobedeleted"), e("b", "c1")], full=False)
    later = NOW + timedelta(hours=1)
    result = RosterSync(ctx, now=lambda: later).run()
    assert source.since[-1] == NOW - timedelta(seconds=300)
    assert (result.counts["updated"], result.counts["deactivated"]) == (1, 1)
    got = scim.by_ext("Users")
    assert got["a"]["active"] is True and got["w"]["active"] is False
    assert scim.members("c1") == {"a", "b"}
    assert cursor.state == {"cursor": "2026-11-22T09:00:00Z", "last_full": "2026-11-22T08:00:00Z"}
    # a day after the last full read: full again
    RosterSync(ctx, now=lambda: NOW + timedelta(hours=25)).run()
    assert source.since[-1] is None


def test_unknown_roles_neither_provision_nor_deprovision(tmp_path: Path) -> None:
    source = Source(snap([u("a")], [], []))
    scim = FakeScim()
    ctx = ctx_for(tmp_path, source, scim)
    RosterSync(ctx).run()
    source.snap = snap([u("a", roles=None), u("new", roles=None)], [], [], full=False)
    result = RosterSync(ctx).run()
    assert scim.by_ext("Users")["a"]["active"] is True and "new" not in scim.by_ext("Users")
    assert result.counts["failed"] == 1  # "new" rejected with a reason


def test_dry_run_writes_nothing_and_plans_members_of_new_users(tmp_path: Path) -> None:
    source = Source(snap([u("a")], [RosterClass("c1", title="Math", school="s1")], [e("a", "c1")]))
    scim, cursor = FakeScim(), Cursor()
    ctx = ctx_for(tmp_path, source, scim, cursor)
    ctx.dry_run = True
    result = RosterSync(ctx).run()
    assert scim.writes == [] and cursor.state is None
    assert result.counts["created"] == 2
    group = next(p for p in result.plan if p["key"] == "class/c1")
    assert group["changes"]["members_added"]["after"] == ["(new)a"]


def test_an_empty_delta_does_not_read_the_scim_service(tmp_path: Path) -> None:
    """Nothing changed in the SIS since the cursor: no plan can hold a write (a delta plans
    only what changed), so the run reads neither Users nor Groups; drift made by others
    in the SCIM service waits for the next full run (ROSTER_FULL_SYNC_HOURS), as with
    any delta."""
    users = [u("a"), u("b")]
    source = Source(snap(users, [RosterClass("c1", school="s1")], [e("a", "c1")]))
    scim, cursor = FakeScim(), Cursor()
    ctx = ctx_for(tmp_path, source, scim, cursor)
    RosterSync(ctx, now=lambda: NOW).run()
    lists: list[str] = []
    plain = scim.list

    def counted(resource: str) -> list[dict[str, Any]]:
        lists.append(resource)
        return plain(resource)

    scim.list = counted  # type: ignore[method-assign]
    source.snap = snap([], [], [], full=False)
    later = NOW + timedelta(hours=1)
    result = RosterSync(ctx, now=lambda: later).run()
    assert result.status == "success" and lists == []
    assert cursor.state == {"cursor": "2026-11-22T09:00:00Z", "last_full": "2026-11-22T08:00:00Z"}
    # a delta with one change reads the service as before
    source.snap = snap([dataclasses.replace(u("b"), given_name="Bea")], [], [], full=False)
    result = RosterSync(ctx, now=lambda: later + timedelta(hours=1)).run()
    assert result.counts["updated"] == 1 and "Users" in lists
    # and a full run (a day after the last one) reads it whatever the SIS says
    lists.clear()
    source.snap = snap(users, [RosterClass("c1", school="s1")], [e("a", "c1")])
    RosterSync(ctx, now=lambda: NOW + timedelta(hours=25)).run()
    assert "Users" in lists and "Groups" in lists


@pytest.mark.xfail(strict=True, reason="pre-existing: a delta run's cursor moves past a record the tracker holds back")
def test_a_user_the_tracker_holds_back_is_retried_when_due(tmp_path: Path) -> None:
    """A SCIM write that failed is retried when its time comes (2 h), not only at the next
    full run (ROSTER_FULL_SYNC_HOURS): a delta run that skips the record while it waits
    must not move the cursor past the change that brought it (the next deltas, empty,
    would never name it again)."""

    class Refusing(FakeScim):
        refuse = True

        def patch(self, resource: str, rid: str, ops: Sequence[Mapping[str, Any]], etag: str | None = None) -> None:
            if self.refuse and resource == "Users":
                raise RecordError("scim: refused (500)", service="scim", status=500)
            super().patch(resource, rid, ops, etag)

    clock = [NOW]
    users = [u("a"), u("b")]
    source = Source(snap(users, [RosterClass("c1", school="s1")], [e("a", "c1")]))
    scim, cursor = Refusing(), Cursor()
    ctx = ctx_for(tmp_path, source, scim, cursor)
    ctx.tracker = InMemoryTracker(lambda: clock[0])

    def run(at: datetime) -> Any:
        clock[0] = at
        return RosterSync(ctx, now=lambda: at).run()

    run(NOW)
    source.snap = snap([dataclasses.replace(u("b"), given_name="Bea")], [], [], full=False)
    assert run(NOW + timedelta(minutes=15)).counts["failed"] == 1  # the write fails: queued for 2 h
    assert run(NOW + timedelta(minutes=30)).counts["skipped"] == 1  # the same delta: held back, waiting
    scim.refuse = False
    source.snap = snap([], [], [], full=False)  # nothing new in the SIS since
    run(NOW + timedelta(hours=3))  # the record is due
    assert scim.by_ext("Users")["b"]["name"]["givenName"] == "Bea"
