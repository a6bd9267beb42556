"""RosterSource and CursorStore (sync/roster_model.py): the fakes of
tests/unit/test_sync_rosters.py (Source, Cursor) and the real adapters (OneRosterAPI on
the OneRoster emulator, RedisCursorStore on real Redis) pass the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox.server import RunningSandbox
from services.http import RequestStats
from services.oneroster_api import RedisCursorStore, build_oneroster
from sync.roster_model import RosterClass, RosterEnrollment, RosterSnapshot, RosterUser
from tests.contract.support import no_sleep, sandbox_settings
from tests.support.redis_server import connect, key_prefix, shared_server
from tests.unit.test_sync_rosters import Cursor, Source, e, snap, u

pytestmark = pytest.mark.integration


@pytest.fixture(params=["fake", "sandbox"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fake":  # as the unit tests build it
        users = [u("s1"), u("s2"), u("t1", "teacher")]
        return Source(snap(users, [RosterClass("c1", title="Math", school="s1")], [e("s1", "c1"), e("s2", "c1")]))
    sb: RunningSandbox = request.getfixturevalue("sandbox")
    ors = sb.endpoints["oneroster"]
    settings = sandbox_settings(sb, tmp_path, ONEROSTER_URL=ors["url"], ONEROSTER_CLIENT_ID=ors["client_id"],
                                ONEROSTER_CLIENT_SECRET=ors["client_secret"], ONEROSTER_TOKEN_URL=ors["token_url"])  # fmt: skip
    return build_oneroster(settings, RequestStats(), sleep=no_sleep)


def test_a_full_read_is_complete_and_keyed_by_sourced_id(source: Any) -> None:
    assert isinstance(source.supports_delta, bool)
    got = source.read(None, ())
    assert isinstance(got, RosterSnapshot) and not got.is_delta
    assert got.users and got.classes and got.enrollments
    for table, kind in ((got.users, RosterUser), (got.classes, RosterClass), (got.enrollments, RosterEnrollment)):
        assert all(isinstance(v, kind) and k == v.sourced_id for k, v in table.items())
    for user in got.users.values():
        assert user.status in ("active", "tobedeleted"), user
        assert isinstance(user.roles, tuple) and all(isinstance(r, tuple) and len(r) == 2 for r in user.roles), user
        assert user.primary_role is None or user.primary_role in {role for role, _ in user.roles}, user
    for enrollment in got.enrollments.values():
        assert isinstance(enrollment.user, str) and isinstance(enrollment.class_id, str), enrollment


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    yield from shared_server()


@pytest.fixture(params=["fake", "redis"])
def cursor(request: pytest.FixtureRequest, redis_server: tuple[str, Any]) -> Iterator[Any]:
    if request.param == "fake":
        yield Cursor()
        return
    client: redis.Redis = connect(redis_server, decode=True)
    for prefix in key_prefix(client, "cursor"):
        yield RedisCursorStore(client, prefix, scope="contract")
    client.close()


def test_cursor_store_is_empty_until_saved_then_returns_what_was_saved(cursor: Any) -> None:
    assert cursor.load() is None  # unknown: a full run
    state = {"cursor": "2026-11-22T08:00:00Z", "last_full": "2026-11-20T02:00:00Z"}
    cursor.save(state)
    assert cursor.load() == state
    cursor.save({**state, "cursor": "2026-11-23T08:00:00Z"})
    assert cursor.load() == {**state, "cursor": "2026-11-23T08:00:00Z"}
