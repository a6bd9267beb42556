"""The ScimTarget port (sync/ports.py): reads of raw SCIM resources and writes as
intents (create_user, update_user, deactivate_user, create_group, change_members,
delete_group) whose request formats belong to the adapter (services.scim_api). The fake of
tests/unit/test_sync_rosters.py and services.scim_api.ScimAPI on the sandbox's scim2-server
pass the same checks, so the fake the unit tests use cannot drift from the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import RunningSandbox
from services.http import RequestStats
from services.scim_api import build_scim
from sync.ports import ScimTarget
from tests.contract.support import no_sleep, sandbox_settings
from tests.unit.test_sync_rosters import FakeScim
from utils.errors import ConflictError, FatalError, RecordError

pytestmark = pytest.mark.integration

PAGE = 2


@dataclass
class Scim:
    """The rosters sync's intents for its target, through the port, by SCIM id."""

    target: ScimTarget

    def create_user(self, key: str, **flat: Any) -> dict[str, Any]:
        record = {"userName": f"{key}.user", "externalId": key, "givenName": "Con", "familyName": "Tract",
                  "email": f"{key}@contract.example.org", "role": "student", "active": True, **flat}  # fmt: skip
        return self.target.create_user(record)

    def update_user(self, rid: str, **changes: Any) -> None:
        self.target.update_user(self.target.get("Users", rid), changes)

    def deactivate_user(self, rid: str) -> None:
        self.target.deactivate_user(self.target.get("Users", rid))

    def create_group(self, key: str, members: set[str]) -> dict[str, Any]:
        return self.target.create_group({"displayName": f"Class {key}", "externalId": key}, sorted(members))

    def change_members(self, gid: str, add: set[str], remove: set[str]) -> None:
        self.target.change_members(self.target.get("Groups", gid), add=add, remove=remove)

    def members(self, gid: str) -> set[str]:
        return self.target.member_ids(self.target.get("Groups", gid))


@pytest.fixture(params=["fake", "sandbox"])
def scim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scim]:
    if request.param == "fake":
        yield Scim(FakeScim())
        return
    sb: RunningSandbox = request.getfixturevalue("sandbox")
    settings = sandbox_settings(sb, tmp_path, SCIM_PAGE_SIZE=str(PAGE))
    yield Scim(build_scim(settings, RequestStats(), sleep=no_sleep))


def test_create_user_returns_it_with_an_id_and_reads_find_it(scim: Scim, unique: str) -> None:
    made = scim.create_user(unique)
    assert made["id"] and made["externalId"] == unique and made["userName"] == f"{unique}.user"
    got = scim.target.get("Users", made["id"])
    assert (got["name"]["givenName"], got["emails"][0]["value"], got["title"]) == (
        "Con",
        f"{unique}@contract.example.org",
        "student",
    )
    found = scim.target.find("Users", "externalId", unique)
    assert found is not None and found["id"] == made["id"]
    assert scim.target.find("Users", "externalId", unique + "-none") is None
    by_name = scim.target.find("Users", "userName", f"{unique}.USER")  # userName is not case-exact (RFC 7643 §4.1.1)
    assert by_name is not None and by_name["id"] == made["id"]


def test_list_returns_every_resource_once_across_pages(scim: Scim, unique: str) -> None:
    made = {scim.create_user(f"{unique}-{i}")["id"] for i in range(2 * PAGE + 1)}
    listed = [u["id"] for u in scim.target.list("Users") if str(u.get("externalId", "")).startswith(unique)]
    assert sorted(listed) == sorted(made)


def test_update_user_replaces_only_what_changed(scim: Scim, unique: str) -> None:
    made = scim.create_user(unique)
    scim.update_user(made["id"], givenName="Renamed", email=f"new.{unique}@contract.example.org", role="teacher")
    got = scim.target.get("Users", made["id"])
    assert got["name"] == {**got["name"], "givenName": "Renamed", "familyName": "Tract"}
    assert [e["value"] for e in got["emails"]] == [f"new.{unique}@contract.example.org"] and got["title"] == "teacher"
    assert got["userName"] == f"{unique}.user" and got["active"] is True


def test_deactivate_user_keeps_it_inactive(scim: Scim, unique: str) -> None:
    made = scim.create_user(unique)
    scim.deactivate_user(made["id"])
    got = scim.target.get("Users", made["id"])
    assert got["active"] is False and got["externalId"] == unique


def test_change_members_adds_and_removes(scim: Scim, unique: str) -> None:
    a, b, c = (scim.create_user(f"{unique}-{n}")["id"] for n in "abc")
    group = scim.create_group(unique, {a, b})
    assert scim.members(group["id"]) == {a, b}
    scim.change_members(group["id"], add={c}, remove={a})
    assert scim.members(group["id"]) == {b, c}
    scim.change_members(group["id"], add={b}, remove=set())  # already a member: no duplicate
    assert sorted(m["value"] for m in scim.target.get("Groups", group["id"])["members"]) == sorted([b, c])
    found = scim.target.find("Groups", "externalId", unique)
    assert found is not None and found["id"] == group["id"]


def test_a_taken_user_name_is_a_conflict(scim: Scim, unique: str) -> None:
    scim.create_user(unique)
    with pytest.raises(ConflictError) as caught:
        scim.create_user(unique + "-twin", userName=f"{unique}.user")
    assert caught.value.status == 409
    assert scim.target.find("Users", "externalId", unique + "-twin") is None


def test_writes_to_a_resource_that_does_not_exist_are_record_errors(scim: Scim) -> None:
    with pytest.raises(RecordError) as patched:
        scim.target.update_user({"id": "no-such-id"}, {"givenName": "X"})  # a row read before someone removed it
    assert patched.value.status == 404 and not isinstance(patched.value, ConflictError)
    with pytest.raises(RecordError) as deleted:
        scim.target.deactivate_user({"id": "no-such-id"}, delete=True)
    assert deleted.value.status == 404


def test_reading_a_resource_that_does_not_exist_is_fatal(scim: Scim) -> None:
    with pytest.raises(FatalError) as caught:
        scim.target.get("Users", "no-such-id")
    assert caught.value.status == 404


def test_delete_removes_the_resource(scim: Scim, unique: str) -> None:
    made = scim.create_user(unique)
    scim.target.deactivate_user(made, delete=True)  # SCIM_DELETE_MODE=delete
    assert scim.target.find("Users", "externalId", unique) is None
