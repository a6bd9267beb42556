"""services.scim_api and the rosters sync against the REAL scim2-server (not a fake).

The server is the third-party package's own bearer-token WSGI application (the one
``sandbox/scim.py`` serves), on a loopback port, behind the sandbox's request-logging
middleware so writes are counted on the server's side. The OneRoster side is an
in-memory ``RosterSource`` built by each test, so every case states its source data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from config.settings import load_settings
from sandbox import scim as sandbox_scim
from sandbox.faults import FaultInjector
from sandbox.store import Store, open_store
from sandbox.wsgi import EmulatorMiddleware, QuietRequestHandler
from services.event_manager import EventManager
from services.http import RequestStats
from services.scim_api import ScimAPI, build_scim
from sync.base import SyncContext
from sync.roster_model import RosterClass, RosterEnrollment, RosterSnapshot, RosterUser
from sync.sync_rosters import RosterSync
from utils.errors import ConflictError, RecordError
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.integration

TOKEN = "scim-test-token"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@dataclass
class Server:
    url: str
    store: Store
    storage: Any

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.store.requests("scim", since_id=since) if r["method"] in WRITES]

    def mark(self) -> int:
        return self.store.last_request_id()


def serve(tmp_path: Path, faults: dict[str, float] | None = None, *, case_exact_filter: bool = False) -> Iterator[Server]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = open_store(tmp_path)
    app, storage = sandbox_scim.create_app(tmp_path, token=TOKEN, username_filter_case_exact=case_exact_filter)
    wrapped = EmulatorMiddleware(
        app, service="scim", store=store, injector=FaultInjector("scim", faults, 1), errors=sandbox_scim.ScimErrors()
    )
    server = make_server("127.0.0.1", 0, wrapped, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_port}/v2", store, storage)
    finally:
        server.shutdown()
        server.server_close()
        storage.close()
        store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path / "scim")


class Source:
    """An in-memory RosterSource: ``snap`` is what the next read returns."""

    supports_delta = False

    def __init__(self, snap: RosterSnapshot) -> None:
        self.snap = snap

    def read(self, since: Any, schools: Any) -> RosterSnapshot:
        return self.snap


def user(
    sid: str, role: str = "student", *, status: str = "active", email: str | None = None, school: str = "sch-1"
) -> RosterUser:
    return RosterUser(sid, status=status, username=f"{sid}.name", given_name=sid.title(), family_name="Doe",
                      email=email or f"{sid}@x.org", roles=((role, school),), primary_role=role)  # fmt: skip


def enr(user_id: str, class_id: str, role: str = "student", status: str = "active") -> RosterEnrollment:
    return RosterEnrollment(f"e-{user_id}-{class_id}", status=status, user=user_id, class_id=class_id, school="sch-1", role=role)


def snapshot(users: list[RosterUser], classes: list[RosterClass], enrollments: list[RosterEnrollment]) -> RosterSnapshot:
    return RosterSnapshot(
        users={u.sourced_id: u for u in users},
        classes={c.sourced_id: c for c in classes},
        enrollments={e.sourced_id: e for e in enrollments},
    )


def make_ctx(tmp_path: Path, server: Server, source: Source, tracker: Any = None, **env: str) -> tuple[SyncContext, ScimAPI]:
    settings = load_settings(
        {"OUTPUT_DIR": str(tmp_path / "out"), "SCIM_URL": server.url, "SCIM_TOKEN": TOKEN, "ONEROSTER_CSV_PATH": "x", **env},
        dotenv_path=None,
    )
    scim = build_scim(settings, RequestStats(), sleep=lambda _s: None)
    ctx = SyncContext(settings=settings, targets=None, tracker=tracker or InMemoryTracker(), events=EventManager(tmp_path / "out", "run"),
                      metrics=Metrics(), today=date(2026, 11, 22), oneroster=source, scim=scim)  # fmt: skip
    return ctx, scim


def by_ext(scim: ScimAPI, resource: str) -> dict[str, dict[str, Any]]:
    return {r["externalId"]: r for r in scim.list(resource) if r.get("externalId")}


def members(group: dict[str, Any], users: dict[str, dict[str, Any]]) -> set[str]:
    ids = {u["id"]: ext for ext, u in users.items()}
    return {ids.get(m["value"], m["value"]) for m in group.get("members") or []}


C1, C2 = RosterClass("{cls:1}", title="Math 1", school="sch-1"), RosterClass("cls:2", title="Art", school="sch-1")


@pytest.mark.parametrize("bulk", ["true", "false"])
def test_create_update_membership_deactivate_and_rerun_sends_nothing(tmp_path: Path, server: Server, bulk: str) -> None:
    users = [user("u1"), user("u2"), user("t1", "teacher"), user("a1", "administrator")]
    enrollments = [
        enr("u1", C1.sourced_id),
        enr("u2", C1.sourced_id),
        enr("t1", C1.sourced_id, "teacher"),
        enr("u1", C2.sourced_id),
    ]
    source = Source(snapshot(users, [C1, C2], enrollments))
    ctx, scim = make_ctx(tmp_path, server, source, SCIM_BULK=bulk)

    mark = server.mark()
    first = RosterSync(ctx).run()
    # with Bulk: the five creates in one POST /Bulk, the groups naming the new users by bulkId
    assert [w["path"] for w in server.writes(mark)] == (
        ["/v2/Bulk"] if bulk == "true" else ["/v2/Users"] * 3 + ["/v2/Groups"] * 2
    )
    assert first.status == "success", first.error
    assert first.counts["created"] == 5  # 3 users (no administrator) + 2 groups
    u = by_ext(scim, "Users")
    assert set(u) == {"u1", "u2", "t1"}
    assert u["t1"]["title"] == "teacher" and u["u1"]["emails"][0]["value"] == "u1@x.org" and u["u1"]["active"] is True
    g = by_ext(scim, "Groups")
    assert g["{cls:1}"]["displayName"] == "Math 1"
    assert members(g["{cls:1}"], u) == {"u1", "u2", "t1"} and members(g["cls:2"], u) == {"u1"}

    mark = server.mark()
    again = RosterSync(ctx).run()
    assert again.counts["unchanged"] == 5 and not any(again.counts[k] for k in ("created", "updated", "deactivated"))
    assert server.writes(mark) == []

    # u1's e-mail changes, u2 withdraws, u1 leaves Art, Math 1 is renamed
    users2 = [user("u1", email="u1.new@x.org"), user("u2", status="tobedeleted"), user("t1", "teacher")]
    enrollments2 = [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id, status="tobedeleted"), enr("t1", C1.sourced_id, "teacher")]
    source.snap = snapshot(users2, [RosterClass("{cls:1}", title="Math 1 (honors)", school="sch-1"), C2], enrollments2)
    mark = server.mark()
    third = RosterSync(ctx).run()
    assert third.status == "success", third.error
    assert (third.counts["updated"], third.counts["deactivated"]) == (3, 1)  # u1, Math 1, Art; u2
    if bulk == "true":
        assert [(w["method"], w["path"]) for w in server.writes(mark)] == [("POST", "/v2/Bulk")]
    else:
        assert len(server.writes(mark)) == 4 and {w["method"] for w in server.writes(mark)} == {"PATCH"}
    u = by_ext(scim, "Users")
    assert u["u2"]["active"] is False and u["u1"]["emails"][0]["value"] == "u1.new@x.org"
    g = by_ext(scim, "Groups")
    assert g["{cls:1}"]["displayName"] == "Math 1 (honors)"
    assert members(g["{cls:1}"], u) == {"u1", "t1"} and members(g["cls:2"], u) == set()
    assert not any(u["u2"]["id"] in {m["value"] for m in grp.get("members") or []} for grp in g.values())

    mark = server.mark()
    assert RosterSync(ctx).run().counts["unchanged"] == 5
    assert server.writes(mark) == []


def test_409_userName_taken_is_recorded_and_a_userless_account_is_adopted(tmp_path: Path, server: Server) -> None:
    ctx, scim = make_ctx(tmp_path, server, Source(snapshot([], [], [])))
    scim.create("Users", {"userName": "clash.name", "externalId": "someone-else", "active": True})
    scim.create("Users", {"userName": "u8.name", "active": True})  # made by hand, no externalId
    with pytest.raises(ConflictError):
        scim.create("Users", {"userName": "CLASH.NAME"})  # userName is case-insensitive (RFC 7643 §4.1.1)
    clash = RosterUser(
        "u9", username="clash.name", given_name="C", family_name="L", roles=(("student", "sch-1"),), primary_role="student"
    )
    ctx.oneroster = Source(snapshot([clash, user("u8"), user("u7")], [], []))
    result = RosterSync(ctx).run()
    assert result.status == "partial"
    assert (result.counts["created"], result.counts["updated"], result.counts["failed"]) == (1, 1, 1)
    u = by_ext(scim, "Users")
    assert u["u8"]["userName"] == "u8.name" and len(scim.list("Users")) == 3  # adopted, not duplicated
    assert "u9" not in u
    errors = list((tmp_path / "out" / "errors").glob("rosters-*.json"))
    assert errors and "409" in errors[0].read_text()
    # the tracker holds the failed record back on the next run instead of hammering it
    assert RosterSync(ctx).run().counts["skipped"] == 1


def test_409_on_a_server_whose_userName_filter_is_case_sensitive_adopts_the_case_variant(tmp_path: Path) -> None:
    """Some SCIM services compare ``filter=userName eq`` case-sensitively although
    userName is caseExact false (RFC 7643 section 4.1.1) and their uniqueness check
    ignores case: the 409 lookup then finds nothing. The sync falls back to the Users list
    it read this run and adopts the user whose userName differs only in case."""
    for srv in serve(tmp_path / "case-exact", case_exact_filter=True):
        ctx, scim = make_ctx(tmp_path, srv, Source(snapshot([], [], [])))
        hand_made = scim.create("Users", {"userName": "Pat.Lee", "active": True})  # no externalId
        scim.create("Users", {"userName": "Sam.Roe", "externalId": "someone-else", "active": True})
        assert scim.find("Users", "userName", "pat.lee") is None  # the quirk: no case-insensitive match
        with pytest.raises(ConflictError):
            scim.create("Users", {"userName": "pat.lee"})  # while uniqueness ignores case
        pat = RosterUser("u1", username="pat.lee", given_name="Pat", family_name="Lee",
                         roles=(("student", "sch-1"),), primary_role="student")  # fmt: skip
        sam = RosterUser("u2", username="sam.roe", given_name="Sam", family_name="Roe",
                         roles=(("student", "sch-1"),), primary_role="student")  # fmt: skip
        ctx.oneroster = Source(snapshot([pat, sam], [C1], [enr("u1", C1.sourced_id)]))
        result = RosterSync(ctx).run()
        # u1 adopted (counted as updated), its class created; u2's case variant belongs to
        # someone else (another externalId), so u2 fails as before: never adopted, never doubled
        assert (result.counts["created"], result.counts["updated"], result.counts["failed"]) == (1, 1, 1), result.error
        users = scim.list("Users")
        assert len(users) == 2
        adopted = by_ext(scim, "Users")["u1"]
        assert adopted["id"] == hand_made["id"] and adopted["userName"] == "pat.lee"
        assert members(by_ext(scim, "Groups")[C1.sourced_id], by_ext(scim, "Users")) == {"u1"}
        mark = srv.mark()
        again = RosterSync(ctx).run()
        assert again.counts["updated"] == 0 and again.counts["created"] == 0
        assert [w["method"] for w in srv.writes(mark)] == []


def test_etag_is_sent_and_a_412_is_answered_by_one_re_read(tmp_path: Path, server: Server) -> None:
    """One request per change (SCIM_BULK=false); the Bulk path: tests/integration/test_scim_bulk.py."""
    source = Source(snapshot([user("u1")], [C1], [enr("u1", C1.sourced_id)]))
    ctx, scim = make_ctx(tmp_path, server, source, SCIM_BULK="false")
    assert scim.etags  # scim2-server's default ServiceProviderConfig announces ETags
    RosterSync(ctx).run()
    row = by_ext(scim, "Users")["u1"]
    stale = row["meta"]["version"]
    scim.patch("Users", row["id"], [{"op": "replace", "path": "nickName", "value": "x"}])
    with pytest.raises(RecordError) as info:
        scim.patch("Users", row["id"], [{"op": "replace", "path": "nickName", "value": "y"}], etag=stale)
    assert info.value.status == 412

    class Racing(ScimAPI):
        """Someone else edits the resource between our read and our write."""

        raced = False

        def patch(self, resource: str, rid: str, ops: Any, etag: str | None = None) -> Any:
            if not Racing.raced:
                Racing.raced = True
                ScimAPI.patch(self, resource, rid, [{"op": "replace", "path": "nickName", "value": "z"}])
            return super().patch(resource, rid, ops, etag)

    ctx.scim = Racing(scim.http, bulk=False)
    source.snap = snapshot([user("u1", email="new@x.org")], [C1], [enr("u1", C1.sourced_id)])
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert result.status == "success" and result.counts["updated"] == 1
    statuses = [w["status"] for w in server.writes(mark)]
    assert statuses == [204, 412, 204]  # the race, our stale write, our write after one re-read
    assert by_ext(scim, "Users")["u1"]["emails"][0]["value"] == "new@x.org"


def test_lost_create_responses_never_duplicate(tmp_path: Path) -> None:
    for srv in serve(tmp_path / "lossy", {"lost_response_rate": 1.0}):
        source = Source(snapshot([user("u1"), user("u2")], [C1], [enr("u1", C1.sourced_id)]))
        ctx, scim = make_ctx(tmp_path, srv, source, HTTP_MAX_ATTEMPTS="2", SCIM_BULK="false")
        result = RosterSync(ctx).run()
        assert result.counts["created"] == 3, result.error
        assert len(scim.list("Users")) == 2 and len(scim.list("Groups")) == 1


def test_delete_mode_deletes_only_when_asked(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1"), user("u2")], [C1], [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id)]))
    ctx, scim = make_ctx(tmp_path, server, source, SCIM_DELETE_MODE="delete", DEACTIVATION_GUARD_PERCENT="100")
    RosterSync(ctx).run()
    source.snap = snapshot([user("u1"), user("u2", status="tobedeleted")], [RosterClass(C1.sourced_id, status="tobedeleted")], [])
    result = RosterSync(ctx).run()
    assert result.counts["deactivated"] == 2, result.error
    assert set(by_ext(scim, "Users")) == {"u1"} and scim.list("Groups") == []
