"""services/graph_delta.py against the Graph emulator over HTTPS and real Redis: the kept
state, an idle round of one request, changes and deletions in one round, and the full
rounds (expired or reset token, another scope, GRAPH_FULL_READ_HOURS, missing state)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from sandbox import graph as graph_emulator
from sandbox.server import RunningSandbox, start_sandbox
from sandbox.store import open_store
from services.graph_api import build_graph
from services.graph_delta import (
    KEPT_FIELDS,
    DeltaUserDirectory,
    RedisGraphDeltaStore,
    build_graph_directory,
    decode_users,
    graph_scope,
)
from services.http import RequestStats
from sync.sync_employees import mail_by_employee_id
from tests.support.redis_server import connect, key_prefix, shared_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with start_sandbox(tmp_path_factory.mktemp("graph-delta-adapter"), size=80, faults={}, seed=505) as sb:
        yield sb


@pytest.fixture(scope="module")
def redis_server() -> Iterator[tuple[str, Any]]:
    yield from shared_server()


@pytest.fixture
def client(redis_server: tuple[str, Any]) -> Any:
    return connect(redis_server, decode=True)


@pytest.fixture
def prefix(client: Any) -> Iterator[str]:
    yield from key_prefix(client, "graph-delta")


def settings_for(sb: RunningSandbox, prefix: str, **extra: str) -> Settings:
    g = sb.endpoints["graph"]
    env = {
        "MS_GRAPH_AUTHORITY_URL": g["authority_url"],
        "MS_GRAPH_URL": g["graph_url"],
        "MS_GRAPH_TENANT_ID": g["tenant_id"],
        "MS_GRAPH_CLIENT_ID": g["client_id"],
        "MS_GRAPH_CLIENT_SECRET": g["client_secret"],
        "MS_GRAPH_CA_BUNDLE": g["ca_bundle"],
        "REDIS_PREFIX": prefix,
        **extra,
    }
    return load_settings(env, dotenv_path=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def directory(sb: RunningSandbox, client: Any, prefix: str, clock: Clock | None = None) -> DeltaUserDirectory:
    settings = settings_for(sb, prefix)
    graph = build_graph(settings, RequestStats())
    out = build_graph_directory(settings, graph, client)
    if clock is not None:
        out.clock = clock
    return out


def graph_requests(sb: RunningSandbox, since: int) -> list[str]:
    with open_store(sb.directory) as st:
        return [f"{r['method']} {r['path']}" for r in st.requests("graph", since_id=since)]


def mark(sb: RunningSandbox) -> int:
    with open_store(sb.directory) as st:
        return st.last_request_id()


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: {f: r.get(f) for f in ("id", *KEPT_FIELDS)} for r in rows}


def test_first_round_keeps_every_user_and_the_mail_map_is_the_full_reads(
    sandbox: RunningSandbox, client: Any, prefix: str
) -> None:
    d = directory(sandbox, client, prefix)
    rows = d.users()
    assert d.last_reason == "full (no kept state)"
    full = d.graph.users()
    assert by_id(rows) == by_id(full)
    assert mail_by_employee_id(rows) == mail_by_employee_id(full)
    meta = json.loads(client.hget(f"{prefix}graph:delta", "meta"))
    assert meta["delta_link"].startswith("/v1.0/users/delta?$deltatoken=")  # relative to MS_GRAPH_URL
    assert meta["scope"] == graph_scope(settings_for(sandbox, prefix))
    assert len(decode_users(client.hget(f"{prefix}graph:delta", "users"))) == len(full)


def test_an_idle_round_is_one_request_and_a_change_arrives_in_one_round(
    sandbox: RunningSandbox, client: Any, prefix: str
) -> None:
    d = directory(sandbox, client, prefix)
    d.users()
    d.users()  # MSAL's token is cached from here on
    since = mark(sandbox)
    before = d.users()
    assert graph_requests(sandbox, since) == ["GET /v1.0/users/delta"]
    assert d.last_reason == "delta" and d.last_round is not None and d.last_round.changed_ids == []

    with open_store(sandbox.directory) as st:
        (rid_a, a), (rid_b, b), (rid_c, c) = [
            (rid, u) for rid, u in st.page("graph", "users", limit=200) if u.get("employeeId") and u.get("accountEnabled")
        ][:3]
        a["mail"] = "moved.mailbox@contoso.test"
        st.replace("graph", "users", rid_a, a)
        b["accountEnabled"] = False
        st.replace("graph", "users", rid_b, b)
        st.delete("graph", "users", rid_c)
    since = mark(sandbox)
    # Another process (a second replica, the next batch run) reads the same kept state.
    other = directory(sandbox, client, prefix)
    after = by_id(other.users())
    assert other.last_reason == "delta"
    assert [r for r in graph_requests(sandbox, since) if "/v1.0/" in r] == ["GET /v1.0/users/delta"]
    assert after[a["id"]]["mail"] == "moved.mailbox@contoso.test"
    assert after[b["id"]]["accountEnabled"] is False
    assert c["id"] not in after and c["id"] in by_id(before)
    assert after == by_id(other.graph.users())
    mails, _dups = mail_by_employee_id(list(after.values()))
    assert mails.get(str(int(a["employeeId"]))) == "moved.mailbox@contoso.test"
    assert str(int(b["employeeId"])) not in mails


@pytest.mark.parametrize("how", ["expired", "reset"])
def test_a_refused_token_means_a_full_round(sandbox: RunningSandbox, client: Any, prefix: str, how: str) -> None:
    d = directory(sandbox, client, prefix)
    d.users()
    with open_store(sandbox.directory) as st:
        if how == "expired":
            st.meta_set("graph.delta_token_lifetime_s", "0")
        else:
            graph_emulator.reset_delta_tracking(st)
    try:
        rows = d.users()
    finally:
        with open_store(sandbox.directory) as st:
            st.meta_set("graph.delta_token_lifetime_s", str(graph_emulator.DELTA_TOKEN_LIFETIME_S))
    assert d.last_reason == "full (token refused)"
    assert by_id(rows) == by_id(d.graph.users())
    d.users()
    assert d.last_reason == "delta"  # the new deltaLink works


def test_state_of_another_scope_or_too_old_means_a_full_round(sandbox: RunningSandbox, client: Any, prefix: str) -> None:
    clock = Clock()
    d = directory(sandbox, client, prefix, clock)
    d.users()
    other_scope = DeltaUserDirectory(d.graph, RedisGraphDeltaStore(client, prefix, scope="another-tenant"))
    other_scope.users()
    assert other_scope.last_reason == "full (no kept state)"
    d.store._cached = None
    d.users()  # the key now holds the other scope's state
    assert d.last_reason == "full (no kept state)"
    d.users()
    assert d.last_reason == "delta"
    clock.now += 24 * 3600
    d.users()
    assert d.last_reason == "full (GRAPH_FULL_READ_HOURS elapsed)"


def test_unreadable_or_unreachable_state_means_a_full_round(sandbox: RunningSandbox, client: Any, prefix: str) -> None:
    d = directory(sandbox, client, prefix)
    d.users()
    client.hset(f"{prefix}graph:delta", "users", "not base64 zlib")
    d.store._cached = None
    d.users()
    assert d.last_reason == "full (no kept state)"
    settings = settings_for(sandbox, prefix)
    from utils.redis_client import make_redis

    down = make_redis("redis://127.0.0.1:1/0", socket_timeout=0.2)
    blind = build_graph_directory(settings, d.graph, down)
    since = mark(sandbox)
    rows = blind.users()  # Redis down: the plain read (pages of 999), and no failure
    assert blind.last_reason == "full read (Redis unavailable)"
    assert graph_requests(sandbox, since) == ["GET /v1.0/users"]
    assert by_id(rows) == by_id(d.graph.users())


def test_the_state_of_50000_users_fits_one_value(tmp_path: Path) -> None:
    from services.graph_delta import encode_users

    users = {
        f"{i:08x}-1c2d-4e5f-8a9b-{i:012x}": [
            str(100000 + i),
            f"first{i}.last{i}@contoso.com",
            f"first{i}.last{i}@contoso.com",
            i % 17 != 0,
        ]
        for i in range(50_000)
    }
    text = encode_users(users)
    raw = len(json.dumps(users, separators=(",", ":")))
    assert decode_users(text) == users
    assert len(text) < raw / 2 and len(text) < 8 * 1024 * 1024
    (tmp_path / "size.txt").write_text(f"raw={raw} stored={len(text)}\n")


def test_a_run_asked_to_read_everything_gets_a_full_round(sandbox: RunningSandbox, client: Any, prefix: str) -> None:
    d = directory(sandbox, client, prefix)
    d.users()
    d.users()
    assert d.last_reason == "delta"
    rows = d.forced_full().users()  # what config.bootstrap.new_context(full=True) hands the sync
    assert d.last_reason == "full (requested)"
    assert by_id(rows) == by_id(d.graph.users())
