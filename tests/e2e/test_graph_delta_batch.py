"""Issue 14, Graph delta query, through the real CLI: the employees sync gives the same
SafetyAmp users with GRAPH_DELTA on and off (first run, idle run, after mutations), and an
idle run with delta sends Graph one request."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BatchRunner, writes
from tests.support.redis_server import delete_prefix, require_real_redis, shared_server

pytestmark = pytest.mark.e2e

SYNCS = "departments,jobs,titles,employees"


def users(batch: BatchRunner) -> dict[str, tuple[Any, ...]]:
    with batch.store() as st:
        return {
            str(u["emp_id"]): (u.get("email"), u.get("system_access"), u.get("first_name"), u.get("last_name"))
            for u in st.all("safetyamp", "users")
        }


def graph_calls(batch: BatchRunner, since: int) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in batch.requests("graph", since=since)]


def test_delta_and_full_reads_give_the_same_users(tmp_path: Path) -> None:
    url = require_real_redis()  # the batch runs are other processes: fakeredis cannot serve them
    prefix = f"test-graph-delta-{uuid.uuid4().hex}:"
    runners = {mode: BatchRunner(tmp_path / mode) for mode in ("delta", "full")}
    env = {"SYNC_TYPES": SYNCS, "REDIS_URL": url}
    try:

        def run(mode: str) -> dict[str, Any]:
            summary = runners[mode].run(GRAPH_DELTA=str(mode == "delta").lower(), REDIS_PREFIX=prefix + mode + ":", **env)
            assert summary["status"] in ("success", "partial"), summary
            return summary

        for mode in runners:
            run(mode)
        assert users(runners["delta"]) == users(runners["full"])
        assert len(users(runners["delta"])) > 50

        # An idle run: one Graph request with delta, a full read without.
        marks = {mode: runners[mode].mark() for mode in runners}
        idle = {mode: run(mode) for mode in runners}
        assert graph_calls(runners["delta"], marks["delta"]) == ["GET /v1.0/users/delta"]
        assert len(graph_calls(runners["full"], marks["full"])) >= 1
        assert all(c.startswith("GET /v1.0/users") and "delta" not in c for c in graph_calls(runners["full"], marks["full"]))
        assert writes(idle["delta"]) == writes(idle["full"]) == 0

        # Entra and Vista change (mail moves, accounts disabled and enabled, new hires):
        # one run later both modes agree again.
        for mode in runners:
            counts = runners[mode].mutate(8, seed=21)
            assert counts.get("graph_mail_changes", 0) + counts.get("graph_users_disabled", 0) > 0, counts
        marks = {mode: runners[mode].mark() for mode in runners}
        after = {mode: run(mode) for mode in runners}
        assert graph_calls(runners["delta"], marks["delta"]) == ["GET /v1.0/users/delta"]
        assert users(runners["delta"]) == users(runners["full"])
        assert writes(after["delta"]) == writes(after["full"]) > 0
    finally:
        delete_prefix(url, prefix)


def test_the_daemon_keeps_the_users_in_memory_and_an_idle_cycle_asks_graph_once(tmp_path: Path) -> None:
    from sandbox.store import open_store
    from services.graph_delta import DeltaUserDirectory
    from tests.e2e.conftest import console_daemon

    require_real_redis()
    server = next(shared_server())
    with console_daemon(tmp_path, server, {"SYNC_TYPES": SYNCS}, size=120) as d:
        assert isinstance(d.runtime.graph, DeltaUserDirectory)
        assert d.runtime.graph.last_reason.startswith("full")
        with open_store(d.dir) as st:
            since = st.last_request_id()
            rid, user = next(
                (rid, u) for rid, u in st.page("graph", "users", limit=500) if u.get("accountEnabled") and u.get("employeeId")
            )
            user["accountEnabled"] = False  # IT disables the account: its mail no longer counts
            st.replace("graph", "users", rid, user)
        results = d.daemon.run_cycle(d.syncs)
        assert {r.status for r in results} <= {"success", "partial"}
        with open_store(d.dir) as st:
            calls = [f"{r['method']} {r['path']}" for r in st.requests("graph", since_id=since)]
        assert calls == ["GET /v1.0/users/delta"]
        assert d.runtime.graph.last_reason == "delta"
        assert d.runtime.graph.last_round is not None
        assert d.runtime.graph.last_round.changed_ids == [user["id"]]
        from config.bootstrap import new_context
        from services.graph_delta import FullRoundDirectory

        assert isinstance(new_context(d.runtime, run_id="t-full", full=True).graph, FullRoundDirectory)
        assert new_context(d.runtime, run_id="t-delta").graph is d.runtime.graph
