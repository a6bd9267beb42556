"""SCIM Bulk (RFC 7644 section 3.7) against the REAL scim2-server: the rosters sync's writes
as POST /Bulk requests, counted on the server's side (the sandbox's request log).

scim2-server's default ServiceProviderConfig announces ``bulk.supported`` with
maxOperations 1000 and maxPayloadSize 1 MB; it runs a POST before the operations that
reference its bulkId, reports every operation when failOnErrors is absent, and answers
an operation naming a bulkId whose create failed with 409 (scim2_server/bulk.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.scim_api import ScimAPI
from sync.ports import ScimWrite
from sync.roster_model import RosterClass, RosterUser
from sync.sync_rosters import RosterSync
from tests.integration.test_scim_api import (
    C1,
    C2,
    Server,
    Source,
    by_ext,
    enr,
    make_ctx,
    members,
    serve,
    snapshot,
    user,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from serve(tmp_path / "scim")


class SmallBulk(ScimAPI):
    """The same provider with a smaller maxOperations, so a run needs several requests."""

    max_operations = 2

    def bulk_limits(self) -> tuple[int, int] | None:
        limits = super().bulk_limits()
        return None if limits is None else (self.max_operations, limits[1])


def test_bulk_is_used_when_announced_one_request_for_every_write(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1"), user("u2"), user("t1", "teacher")], [C1, C2],
                             [enr("u1", C1.sourced_id), enr("t1", C1.sourced_id, "teacher"), enr("u2", C2.sourced_id)]))  # fmt: skip
    ctx, scim = make_ctx(tmp_path, server, source)
    assert scim.bulk_limits() == (1000, 1048576)  # scim2-server's announcement
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert result.status == "success" and result.counts["created"] == 5, result.error
    assert [(w["method"], w["path"], w["status"]) for w in server.writes(mark)] == [("POST", "/v2/Bulk", 200)]
    u, g = by_ext(scim, "Users"), by_ext(scim, "Groups")
    assert members(g[C1.sourced_id], u) == {"u1", "t1"} and members(g[C2.sourced_id], u) == {"u2"}
    assert (scim.bulk_requests, scim.bulk_operations) == (1, 5)
    mark = server.mark()
    assert RosterSync(ctx).run().counts["unchanged"] == 5
    assert server.writes(mark) == []


def test_a_new_user_is_added_to_groups_by_bulk_id_in_the_same_request(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1")], [C1], [enr("u1", C1.sourced_id)]))
    ctx, scim = make_ctx(tmp_path, server, source)
    RosterSync(ctx).run()
    # a new student in the existing class and in a new one: one request, the create and the
    # two memberships together; the group operations can only name u2 by its bulkId
    source.snap = snapshot(
        [user("u1"), user("u2")], [C1, C2], [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id), enr("u2", C2.sourced_id)]
    )
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert (result.counts["created"], result.counts["updated"]) == (2, 1), result.error  # u2, C2; C1
    assert [w["path"] for w in server.writes(mark)] == ["/v2/Bulk"]
    u, g = by_ext(scim, "Users"), by_ext(scim, "Groups")
    assert members(g[C1.sourced_id], u) == {"u1", "u2"} and members(g[C2.sourced_id], u) == {"u2"}
    assert not any(m["value"].startswith("bulkId:") for grp in g.values() for m in grp.get("members") or [])


def test_batches_cut_by_max_operations_resolve_earlier_creates_to_their_ids(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1"), user("u2"), user("t1", "teacher")], [C1, C2],
                             [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id), enr("t1", C1.sourced_id, "teacher"),
                              enr("u1", C2.sourced_id)]))  # fmt: skip
    ctx, scim = make_ctx(tmp_path, server, source)
    ctx.scim = small = SmallBulk(scim.http)
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert result.status == "success" and result.counts["created"] == 5, result.error
    # [u1, u2] [t1, C1] [C2]: C1 names u1 and u2 by the ids the first request returned, t1 by bulkId
    assert [w["path"] for w in server.writes(mark)] == ["/v2/Bulk"] * 3 and small.bulk_operations == 5
    u, g = by_ext(scim, "Users"), by_ext(scim, "Groups")
    assert members(g[C1.sourced_id], u) == {"u1", "u2", "t1"} and members(g[C2.sourced_id], u) == {"u1"}


def test_an_operation_refused_fails_only_its_record(tmp_path: Path, server: Server) -> None:
    ctx, scim = make_ctx(tmp_path, server, Source(snapshot([], [], [])))
    scim.create("Users", {"userName": "clash.name", "externalId": "someone-else", "active": True})
    scim.create("Users", {"userName": "u8.name", "active": True})  # made by hand: adopted
    clash = RosterUser("u9", username="clash.name", given_name="C", family_name="L", roles=(("student", "sch-1"),),
                       primary_role="student")  # fmt: skip
    # C1 names u9 (refused, 409) and u7 (created) by bulkId: scim2-server refuses the whole
    # group operation (409, "No resource was created with the bulkId"); the sync sends C1
    # again alone without u9
    ctx.oneroster = Source(snapshot([clash, user("u8"), user("u7")], [C1], [enr("u9", C1.sourced_id), enr("u7", C1.sourced_id)]))
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert result.status == "partial"
    assert (result.counts["created"], result.counts["updated"], result.counts["failed"]) == (2, 1, 1), result.error
    writes = [(w["method"], w["path"], w["status"]) for w in server.writes(mark)]
    assert writes[0] == ("POST", "/v2/Bulk", 200) and ("POST", "/v2/Groups", 201) in writes
    u = by_ext(scim, "Users")
    assert "u9" not in u and u["u8"]["userName"] == "u8.name" and len(scim.list("Users")) == 3
    assert members(by_ext(scim, "Groups")[C1.sourced_id], u) == {"u7"}
    errors = list((tmp_path / "out" / "errors").glob("rosters-*.json"))
    assert errors and "user/u9" in errors[0].read_text() and "409" in errors[0].read_text()
    assert RosterSync(ctx).run().counts["skipped"] == 1  # the tracker holds u9 back, as on the single path


def test_a_lost_bulk_response_is_settled_by_reading_each_create_never_duplicated(tmp_path: Path) -> None:
    for srv in serve(tmp_path / "lossy", {"lost_response_rate": 1.0}):
        source = Source(snapshot([user("u1"), user("u2")], [C1], [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id)]))
        ctx, scim = make_ctx(tmp_path, srv, source, HTTP_MAX_ATTEMPTS="2")
        mark = srv.mark()
        result = RosterSync(ctx).run()
        assert result.counts["created"] == 3 and result.counts["failed"] == 0, result.error
        # the Bulk request was applied and its answer lost: every create found by its
        # externalId, none sent again (every other write would have been logged here)
        assert [(w["method"], w["path"], w["status"]) for w in srv.writes(mark)] == [("POST", "/v2/Bulk", 0)]
        reads = [r["path"] for r in srv.store.requests("scim", since_id=mark) if r["method"] == "GET"]
        assert len(reads) == 1 + 2 + 3, reads  # the config, the two lists, one look-up by key per create
        assert len(scim.list("Users")) == 2 and len(scim.list("Groups")) == 1
        assert members(by_ext(scim, "Groups")[C1.sourced_id], by_ext(scim, "Users")) == {"u1", "u2"}


def test_a_412_of_one_operation_is_re_read_and_sent_again_alone(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1"), user("u2")], [C1], [enr("u1", C1.sourced_id)]))
    ctx, scim = make_ctx(tmp_path, server, source)
    RosterSync(ctx).run()

    class Racing(ScimAPI):
        """Someone edits u1 between our read and our Bulk request."""

        def send_batch(self, writes: Any) -> Any:
            row = next(w.row for w in writes if isinstance(w, ScimWrite) and w.row and w.row.get("externalId") == "u1")
            ScimAPI.patch(self, "Users", str(row["id"]), [{"op": "replace", "path": "nickName", "value": "z"}])
            return super().send_batch(writes)

    ctx.scim = Racing(scim.http)
    source.snap = snapshot([user("u1", email="new@x.org"), user("u2", email="two@x.org")], [C1], [enr("u1", C1.sourced_id)])
    mark = server.mark()
    result = RosterSync(ctx).run()
    assert result.status == "success" and result.counts["updated"] == 2, result.error
    paths = [(w["method"], w["path"]) for w in server.writes(mark)]
    assert paths[1] == ("POST", "/v2/Bulk") and paths[2][0] == "PATCH" and len(paths) == 3  # race, bulk, u1 again
    u = by_ext(scim, "Users")
    assert u["u1"]["emails"][0]["value"] == "new@x.org" and u["u2"]["emails"][0]["value"] == "two@x.org"
    assert u["u1"].get("nickName") == "z"  # the other writer's edit kept


def test_bulk_off_sends_one_request_per_change(tmp_path: Path, server: Server) -> None:
    source = Source(snapshot([user("u1"), user("u2")], [RosterClass("c", title="T", school="sch-1")], [enr("u1", "c")]))
    ctx, _scim = make_ctx(tmp_path, server, source, SCIM_BULK="false")
    mark = server.mark()
    assert RosterSync(ctx).run().counts["created"] == 3
    assert [w["path"] for w in server.writes(mark)] == ["/v2/Users", "/v2/Users", "/v2/Groups"]
