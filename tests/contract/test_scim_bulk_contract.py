"""The ScimTarget port's batch methods (SCIM Bulk, RFC 7644 section 3.7):
``bulk_max_operations``, ``bulk_take`` and ``send_batch``. The fake of the unit tests
(``FakeScim`` announcing Bulk as scim2-server does) and services.scim_api.ScimAPI on the
sandbox's scim2-server pass the same checks; so do both with Bulk not announced (the fake
without a ServiceProviderConfig, the real client with SCIM_BULK=false).

What the rosters sync relies on (sync/sync_rosters.py ``_apply_bulk``, docs/rosters.md
"SCIM Bulk"): the limits the provider announces; a cut that the provider accepts (at most
maxOperations, the request body as sent within maxPayloadSize); one outcome per write, in
order, an operation's refusal its own; a user named by ``bulkId:`` in the request that
creates it; and, when the answer is lost, an unknown outcome per operation (settled by
reading each create by its externalId: the ambiguous-create rule).

No test here skips: scim2-server is a runtime requirement (requirements.txt), so a
missing one fails at import, locally and under CI=true alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from config.settings import load_settings
from sandbox.server import RunningSandbox
from services.event_manager import EventManager
from services.http import RequestStats
from services.scim_api import BULK_PAYLOAD_MARGIN, BULK_REQUEST, ScimIntents, build_scim
from sync.base import SyncContext
from sync.ports import BULK_REF, ScimOutcome, ScimWrite
from sync.roster_model import RosterUser
from sync.sync_rosters import RosterSync
from tests.contract.support import no_sleep, sandbox_settings
from tests.fakes.transport import LosingAdapter
from tests.integration.test_scim_api import C1, TOKEN, Source, enr, serve, snapshot, user
from tests.unit.test_sync_rosters import FakeScim
from utils.errors import AmbiguousWriteError, ConflictError, RecordError, RetriableError
from utils.failed_sync_tracker import InMemoryTracker
from utils.metrics import Metrics

pytestmark = pytest.mark.integration

MAX_OPERATIONS, MAX_PAYLOAD = 1000, 1_048_576
"""What scim2-server 0.8.3's default ServiceProviderConfig announces (issue 14)."""
SCIM2_SERVER_BULK = {
    "bulk": {"supported": True, "maxOperations": MAX_OPERATIONS, "maxPayloadSize": MAX_PAYLOAD},
    "etag": {"supported": True},
}
"""The ServiceProviderConfig the fake announces: the sandbox's (the first test holds both to it)."""


@dataclass
class Bulk:
    """One implementation of the port, with Bulk announced (``target``) and without
    (``off``), the provider's own announcement (read without the adapter) and a way to
    lose the answer of the next Bulk request after the provider applied it."""

    target: ScimIntents
    off: ScimIntents
    announced: dict[str, Any]
    """The provider's ServiceProviderConfig."""
    lose_next_answer: Callable[[], None]

    def user(self, key: str, **flat: Any) -> dict[str, Any]:
        return self.target.create_user(fields(key, **flat))

    def key_id(self, resource: str, key: str) -> str | None:
        found = self.target.find(resource, "externalId", key)
        return str(found["id"]) if found else None

    def members(self, gid: str) -> set[str]:
        return self.target.member_ids(self.target.get("Groups", gid))


def fields(key: str, **flat: Any) -> dict[str, Any]:
    return {"userName": f"{key}.user", "externalId": key, "givenName": "Bulk", "familyName": "Contract",
            "email": f"{key}@contract.example.org", "role": "student", "active": True, **flat}  # fmt: skip


def create(ref: str, key: str, **flat: Any) -> ScimWrite:
    return ScimWrite("create_user", ref, None, fields(key, **flat))


def wire_size(operations: list[dict[str, Any]]) -> int:
    """The bytes of a BulkRequest body as the requests library sends a ``json=`` body
    (what the provider counts against maxPayloadSize), measured by requests itself."""
    body: dict[str, Any] = {"schemas": [BULK_REQUEST], "Operations": operations}
    prepared = requests.Request("POST", "http://bulk.invalid/Bulk", json=dict(body)).prepare()
    assert isinstance(prepared.body, bytes)
    return len(prepared.body)


@pytest.fixture(params=["fake", "sandbox"])
def bulk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bulk]:
    if request.param == "fake":
        fake = FakeScim(config=SCIM2_SERVER_BULK)

        def lose_fake() -> None:
            fake.lose_next_bulk_answer = True

        yield Bulk(fake, FakeScim(), SCIM2_SERVER_BULK, lose_fake)
        return
    sb: RunningSandbox = request.getfixturevalue("sandbox")
    sc = sb.endpoints["scim"]
    config = requests.get(f"{sc['url']}/ServiceProviderConfig", headers={"Authorization": f"Bearer {sc['token']}"},
                          timeout=5).json()  # fmt: skip
    adapter = LosingAdapter()
    target = build_scim(sandbox_settings(sb, tmp_path), RequestStats(), adapter.session(), sleep=no_sleep)
    off = build_scim(sandbox_settings(sb, tmp_path, SCIM_BULK="false"), RequestStats(), sleep=no_sleep)
    yield Bulk(target, off, config, lambda: adapter.lose("POST", "/Bulk"))


def assert_went_through(outcomes: Any, writes: list[ScimWrite]) -> list[ScimOutcome]:
    got = list(outcomes)
    assert [o.ref for o in got] == [w.ref for w in writes]
    for o in got:
        assert o.error is None and 200 <= o.status < 300 and o.id, o
    return got


# -- the limits -----------------------------------------------------------------------
def test_the_limits_are_those_the_provider_announces(bulk: Bulk) -> None:
    announced = bulk.announced["bulk"]
    assert announced["supported"] is True
    assert (announced["maxOperations"], announced["maxPayloadSize"]) == (MAX_OPERATIONS, MAX_PAYLOAD)
    assert bulk.target.bulk_max_operations() == announced["maxOperations"]
    assert bulk.target.bulk_limits() == (announced["maxOperations"], announced["maxPayloadSize"])
    assert bulk.announced["etag"]["supported"] is True and bulk.target.etags  # operations carry ``version``


def test_without_bulk_there_are_no_limits_and_every_write_goes_alone(bulk: Bulk, unique: str) -> None:
    """Bulk not announced (or SCIM_BULK=false): the sync sends one request per change;
    a batch, were one asked for, is one write long and sends nothing (not applied)."""
    assert bulk.off.bulk_max_operations() is None and bulk.off.bulk_limits() is None
    writes = [create("u0", f"{unique}-a"), create("u1", f"{unique}-b")]
    assert bulk.off.bulk_take(writes) == 1
    outcomes = list(bulk.off.send_batch(writes))
    assert [o.ref for o in outcomes] == ["u0", "u1"]
    for o in outcomes:  # not applied: the sync sends it alone
        assert isinstance(o.error, RetriableError) and not isinstance(o.error, AmbiguousWriteError) and o.id is None
    assert bulk.key_id("Users", f"{unique}-a") is None and bulk.key_id("Users", f"{unique}-b") is None


# -- the cut --------------------------------------------------------------------------
def test_a_batch_is_cut_at_max_operations(bulk: Bulk, unique: str) -> None:
    writes = [create(f"u{i}", f"{unique}-{i}") for i in range(MAX_OPERATIONS + 5)]
    assert bulk.target.bulk_take(writes) == MAX_OPERATIONS
    assert bulk.target.bulk_take(writes[:7]) == 7
    assert bulk.target.bulk_take(writes[:1]) == 1


@pytest.mark.parametrize("letter", ["a", "é", "王"], ids=["ascii", "latin", "cjk"])
def test_a_batch_is_cut_within_max_payload_size_as_sent(bulk: Bulk, unique: str, letter: str) -> None:
    """Big operations (a long displayName): the cut fills the request to the margin and
    the provider accepts it. The size is that of the body as sent: the requests library
    sends JSON with ASCII escapes, so an ``é`` is six bytes on the wire, not two."""
    per_op = MAX_PAYLOAD // 3 - 2_000  # three fit, four do not
    writes = [create(f"u{i}", f"{unique}-{i}", displayName=letter * (per_op // len(letter.encode("unicode_escape"))))
              for i in range(5)]  # fmt: skip
    take = bulk.target.bulk_take(writes)
    ops = [bulk.target.bulk_operation(w) for w in writes]
    assert 1 <= take < len(writes)
    assert wire_size(ops[:take]) <= MAX_PAYLOAD  # never over the limit
    assert wire_size(ops[: take + 1]) > BULK_PAYLOAD_MARGIN * MAX_PAYLOAD  # and no shorter than it must be
    assert_went_through(bulk.target.send_batch(writes[:take]), writes[:take])  # the provider accepts it
    assert bulk.target.bulk_max_operations() == MAX_OPERATIONS  # Bulk still on


def test_an_oversized_operation_goes_alone(bulk: Bulk, unique: str) -> None:
    writes = [create("u0", f"{unique}-big", displayName="x" * MAX_PAYLOAD), create("u1", f"{unique}-small")]
    assert bulk.target.bulk_take(writes) == 1


def test_a_request_over_the_limits_is_refused_whole_and_bulk_goes_off(bulk: Bulk, unique: str) -> None:
    """A body over maxPayloadSize (a batch not cut by ``bulk_take``) is refused with 413
    before any operation runs: every outcome is a retriable refusal (not applied, so the
    sync sends each alone) and the rest of the run goes one request per change."""
    writes = [create(f"u{i}", f"{unique}-{i}", displayName="x" * (MAX_PAYLOAD // 2)) for i in range(3)]
    assert wire_size([bulk.target.bulk_operation(w) for w in writes]) > MAX_PAYLOAD
    outcomes = list(bulk.target.send_batch(writes))
    assert [o.ref for o in outcomes] == [w.ref for w in writes]
    for o in outcomes:
        assert isinstance(o.error, RetriableError) and not isinstance(o.error, AmbiguousWriteError), o
        assert o.error.status == 413 and o.id is None
    assert all(bulk.key_id("Users", f"{unique}-{i}") is None for i in range(3))
    assert bulk.target.bulk_max_operations() is None and bulk.target.bulk_take(writes) == 1


# -- the outcomes ---------------------------------------------------------------------
def test_one_outcome_per_write_in_order(bulk: Bulk, unique: str) -> None:
    x, y = bulk.user(f"{unique}-x"), bulk.user(f"{unique}-y")
    group = bulk.target.create_group({"displayName": f"Class {unique}", "externalId": f"{unique}-g"}, [x["id"]])
    writes = [
        create("u0", f"{unique}-new"),
        ScimWrite("update_user", "u1", bulk.target.get("Users", x["id"]), {"givenName": "Changed"}),
        ScimWrite("deactivate_user", "u2", bulk.target.get("Users", y["id"])),
        ScimWrite("create_group", "g0", None, {"displayName": f"Class {unique} 2", "externalId": f"{unique}-g2"}, add=(x["id"],)),
        ScimWrite(
            "change_members",
            "g1",
            bulk.target.get("Groups", group["id"]),
            add=(y["id"],),
            remove=(x["id"],),
            display_name=f"Class {unique} renamed",
        ),
    ]
    outcomes = assert_went_through(bulk.target.send_batch(writes), writes)
    assert [o.id for o in outcomes] == [
        bulk.key_id("Users", f"{unique}-new"),
        x["id"],
        y["id"],
        bulk.key_id("Groups", f"{unique}-g2"),
        group["id"],
    ]
    assert bulk.target.get("Users", x["id"])["name"]["givenName"] == "Changed"
    assert bulk.target.get("Users", y["id"])["active"] is False
    assert bulk.members(str(outcomes[3].id)) == {x["id"]}
    changed = bulk.target.get("Groups", group["id"])
    assert bulk.target.member_ids(changed) == {y["id"]} and changed["displayName"] == f"Class {unique} renamed"


def test_a_user_named_by_bulk_id_is_the_user_the_same_request_creates(bulk: Bulk, unique: str) -> None:
    x = bulk.user(f"{unique}-x")
    group = bulk.target.create_group({"displayName": f"Class {unique}", "externalId": f"{unique}-g"}, [x["id"]])
    writes = [
        create("u0", f"{unique}-new"),
        ScimWrite(
            "create_group",
            "g0",
            None,
            {"displayName": f"Class {unique} 2", "externalId": f"{unique}-g2"},
            add=(f"{BULK_REF}u0", x["id"]),
        ),
        ScimWrite("change_members", "g1", bulk.target.get("Groups", group["id"]), add=(f"{BULK_REF}u0",)),
    ]
    outcomes = assert_went_through(bulk.target.send_batch(writes), writes)
    new = bulk.key_id("Users", f"{unique}-new")
    assert outcomes[0].id == new
    assert bulk.members(str(outcomes[1].id)) == {new, x["id"]}
    assert bulk.members(group["id"]) == {x["id"], new}
    for gid in (str(outcomes[1].id), group["id"]):
        assert not any(m.startswith(BULK_REF) for m in bulk.members(gid))


def test_a_refused_operation_is_its_own_outcome_and_the_others_go_through(bulk: Bulk, unique: str) -> None:
    taken = bulk.user(f"{unique}-holder")
    writes = [
        create("u0", f"{unique}-a"),
        create("u1", f"{unique}-b", userName=taken["userName"]),  # 409: userName is unique (RFC 7643 section 4.1.1)
        create("u2", f"{unique}-c"),
        ScimWrite(
            "create_group",
            "g0",
            None,
            {"displayName": f"Class {unique}", "externalId": f"{unique}-g"},
            add=(f"{BULK_REF}u0", f"{BULK_REF}u1"),
        ),  # names the refused create
        ScimWrite("update_user", "u3", {"id": "no-such-id"}, {"givenName": "X"}),  # removed since it was read
        ScimWrite("update_user", "u4", bulk.target.get("Users", taken["id"]), {"givenName": "Kept"}),
    ]
    outcomes = list(bulk.target.send_batch(writes))
    assert [o.ref for o in outcomes] == [w.ref for w in writes]
    ok = {0, 2, 5}
    for i in ok:
        assert outcomes[i].error is None and outcomes[i].id, outcomes[i]
    assert isinstance(outcomes[1].error, ConflictError) and outcomes[1].status == 409 and outcomes[1].id is None
    # the group names a user whose create failed: scim2-server refuses it with 409 (the
    # sync sends it again alone, without that user)
    assert isinstance(outcomes[3].error, RecordError) and outcomes[3].status == 409 and outcomes[3].id is None
    assert isinstance(outcomes[4].error, RecordError) and not isinstance(outcomes[4].error, ConflictError)
    assert outcomes[4].status == 404
    assert bulk.key_id("Users", f"{unique}-a") == outcomes[0].id and bulk.key_id("Users", f"{unique}-c") == outcomes[2].id
    assert bulk.key_id("Users", f"{unique}-b") is None and bulk.key_id("Groups", f"{unique}-g") is None
    assert bulk.target.get("Users", taken["id"])["name"]["givenName"] == "Kept"


def test_an_operation_on_a_resource_changed_since_it_was_read_is_a_412_of_its_own(bulk: Bulk, unique: str) -> None:
    """With ETags an operation carries the version read (RFC 7644 section 3.7): someone
    else's write in between makes that one operation a 412 (the sync re-reads it)."""
    x = bulk.user(f"{unique}-x")
    stale = bulk.target.get("Users", x["id"])
    bulk.target.update_user(stale, {"familyName": "Other"})  # another writer, after our read
    writes = [ScimWrite("update_user", "u0", stale, {"givenName": "Mine"}), create("u1", f"{unique}-new")]
    outcomes = list(bulk.target.send_batch(writes))
    assert [o.ref for o in outcomes] == ["u0", "u1"]
    assert isinstance(outcomes[0].error, RecordError) and not isinstance(outcomes[0].error, ConflictError)
    assert outcomes[0].status == 412 and outcomes[0].id is None
    assert outcomes[1].error is None and outcomes[1].id == bulk.key_id("Users", f"{unique}-new")
    now = bulk.target.get("Users", x["id"])
    assert (now["name"]["givenName"], now["name"]["familyName"]) == ("Bulk", "Other")
    fresh = ScimWrite("update_user", "u0", now, {"givenName": "Mine"})
    assert_went_through(bulk.target.send_batch([fresh]), [fresh])  # the version read again goes through
    assert bulk.target.get("Users", x["id"])["name"]["givenName"] == "Mine"


def test_a_bulk_id_named_before_its_create_in_the_request_still_resolves(bulk: Bulk, unique: str) -> None:
    """RFC 7644 section 3.7.2: the provider runs a POST before the operations naming it,
    whatever their order in the request (the sync puts users first anyway)."""
    writes = [
        ScimWrite(
            "create_group", "g0", None, {"displayName": f"Class {unique}", "externalId": f"{unique}-g"}, add=(f"{BULK_REF}u0",)
        ),
        create("u0", f"{unique}-late"),
    ]
    outcomes = assert_went_through(bulk.target.send_batch(writes), writes)
    assert bulk.members(str(outcomes[0].id)) == {bulk.key_id("Users", f"{unique}-late")}


def test_a_lost_answer_leaves_every_outcome_unknown_and_each_create_settles_by_its_key(bulk: Bulk, unique: str) -> None:
    """The ambiguous-create rule per operation (docs/rosters.md): the provider applied the
    request and its answer was lost. Every operation's outcome is unknown, not settled (the
    request may still be on its way in); each create is then looked up by its externalId:
    found, it was applied (and is not sent again); not found, it was not."""
    taken = bulk.user(f"{unique}-holder")
    x = bulk.user(f"{unique}-x")
    writes = [
        create("u0", f"{unique}-a"),
        create("u1", f"{unique}-b", userName=taken["userName"]),  # refused by the provider: never applied
        ScimWrite(
            "create_group", "g0", None, {"displayName": f"Class {unique}", "externalId": f"{unique}-g"}, add=(f"{BULK_REF}u0",)
        ),
        ScimWrite("update_user", "u2", bulk.target.get("Users", x["id"]), {"givenName": "Changed"}),
    ]
    bulk.lose_next_answer()
    outcomes = list(bulk.target.send_batch(writes))
    assert [o.ref for o in outcomes] == [w.ref for w in writes]
    for o in outcomes:
        assert isinstance(o.error, AmbiguousWriteError) and o.error.settled is False and o.id is None, o
    a, g = bulk.key_id("Users", f"{unique}-a"), bulk.key_id("Groups", f"{unique}-g")
    assert a is not None and g is not None and bulk.members(g) == {a}  # applied: found by key
    assert bulk.key_id("Users", f"{unique}-b") is None  # refused: not found, never a duplicate to fear
    assert bulk.target.get("Users", x["id"])["name"]["givenName"] == "Changed"
    assert bulk.target.bulk_max_operations() == MAX_OPERATIONS  # a lost answer does not switch Bulk off


# -- the rule, as the rosters sync applies it ----------------------------------------
@pytest.fixture(params=["fake", "scim2-server"])
def lossy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ScimIntents, Callable[[], None]]]:
    """A target of the sync's own (a run reads and plans against every User and Group):
    the fake, or the real client on a scim2-server of this test's own."""
    if request.param == "fake":
        fake = FakeScim(config=SCIM2_SERVER_BULK)

        def lose_fake() -> None:
            fake.lose_next_bulk_answer = True

        yield fake, lose_fake
        return
    adapter = LosingAdapter()
    for server in serve(tmp_path / "scim"):
        settings = load_settings({"OUTPUT_DIR": str(tmp_path / "out"), "SCIM_URL": server.url, "SCIM_TOKEN": TOKEN},
                                 dotenv_path=None)  # fmt: skip
        yield build_scim(settings, RequestStats(), adapter.session(), sleep=no_sleep), lambda: adapter.lose("POST", "/Bulk")


def test_the_sync_settles_each_create_of_a_lost_answer_by_its_key(
    lossy: tuple[ScimIntents, Callable[[], None]], tmp_path: Path
) -> None:
    """The ambiguous-create rule per operation (sync/sync_rosters.py ``_settle_bulk``): the
    request was applied, its answer lost. Each create found by its externalId counts as
    created and is not sent again; one not found (the provider refused it: its userName
    is someone else's) is not sent again in this run, since the request might still be on
    its way in. Nothing is created twice."""
    target, lose = lossy
    target.create("Users", {"userName": "clash.name", "externalId": "someone-else", "active": True})
    clash = RosterUser("u3", username="clash.name", given_name="C", family_name="L", roles=(("student", "sch-1"),),
                       primary_role="student")  # fmt: skip
    source = Source(snapshot([user("u1"), user("u2"), clash], [C1], [enr("u1", C1.sourced_id), enr("u2", C1.sourced_id)]))
    settings = load_settings({"OUTPUT_DIR": str(tmp_path / "out"), "DEACTIVATION_GUARD_PERCENT": "50"}, dotenv_path=None)
    ctx = SyncContext(settings=settings, targets=None, tracker=InMemoryTracker(), events=EventManager(tmp_path / "out", "run"),  # type: ignore[arg-type]
                      metrics=Metrics(), today=date(2026, 11, 22), oneroster=source, scim=target)  # fmt: skip
    lose()
    result = RosterSync(ctx).run()
    assert (result.counts["created"], result.counts["failed"]) == (3, 1), result.error
    assert result.status == "partial"
    users = [u for u in target.list("Users") if u.get("externalId") in ("u1", "u2", "u3")]
    assert sorted(u["externalId"] for u in users) == ["u1", "u2"]  # once each; u3 never
    groups = [g for g in target.list("Groups") if g.get("externalId") == C1.sourced_id]
    assert len(groups) == 1 and target.member_ids(groups[0]) == {u["id"] for u in users}
    assert target.bulk_requests == 1  # type: ignore[attr-defined]  # and not one write alone after it
    again = RosterSync(ctx).run()  # the next run reads the target: u3 is sent again (409, not ours: fails)
    assert (again.counts["created"], again.counts["failed"]) == (0, 1), dict(again.counts)
    assert sorted(u["externalId"] for u in target.list("Users") if u.get("externalId") in ("u1", "u2", "u3")) == ["u1", "u2"]
