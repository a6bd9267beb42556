"""The per-tenant pieces of issue 13 that need no outside system: scoped settings,
metrics with a tenant label, shared rate budgets, the log context across threads, the
User-Agent, and sync_batch's tenant selection."""

from __future__ import annotations

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from config.settings import load_settings
from config.tenants import scoped
from services.http import RateLimiter, SharedLimiters, user_agent
from utils.errors import ConfigurationError
from utils.logger import configure_logging, current_tenant, in_context, set_run_id, set_tenant
from utils.metrics import Metrics


def settings_with(tmp: Path | None, **extra: str):
    env = {"REDIS_PREFIX": "acme-sync:", "OUTPUT_DIR": "/data/out", **extra}
    if tmp is not None:
        env["TENANTS_DIR"] = str(tmp)
    return load_settings(env, dotenv_path=None)


def test_scoped_settings_give_each_tenant_its_own_keys_and_folder(tmp_path):
    base = settings_with(tmp_path)
    a, b = scoped("co-a", base), scoped("co-b", base)
    assert a.redis_prefix == "acme-sync:t:co-a:" and b.redis_prefix == "acme-sync:t:co-b:"
    assert a.output_dir == Path("/data/out/tenants/co-a")
    assert not a.redis_prefix.startswith(b.redis_prefix) and not b.redis_prefix.startswith(a.redis_prefix)
    # Without TENANTS_DIR the one tenant keeps today's keys and folders.
    single = settings_with(None)
    assert scoped("default", single) is single


def test_every_metric_carries_the_tenant_only_with_tenants():
    multi = Metrics(tenants=True)
    a, b = multi.for_tenant("co-a"), multi.for_tenant("sd-3")
    a.sync_runs.labels("jobs", "success").inc()
    b.observe_request("scim", "post", 201, 0.2)
    b.breaker_state.labels("scim").set(2)
    text = generate_latest(multi.registry).decode()
    assert 'sync_runs_total{status="success",sync="jobs",tenant="co-a"} 1.0' in text
    assert 'external_requests_total{method="POST",service="scim",status="201",tenant="sd-3"} 1.0' in text
    assert 'circuit_breaker_state{service="scim",tenant="sd-3"} 2.0' in text
    for line in text.splitlines():  # every per-tenant series names its tenant
        if line.startswith(("sync_runs_total{", "external_requests_total{", "circuit_breaker_state{")):
            assert 'tenant="' in line, line
    multi.forget_tenant("sd-3")
    text = generate_latest(multi.registry).decode()
    assert 'tenant="sd-3"' not in text and 'tenant="co-a"' in text
    single = Metrics()
    assert single.for_tenant("default") is single
    single.sync_runs.labels("jobs", "success").inc()
    assert 'sync_runs_total{status="success",sync="jobs"} 1.0' in generate_latest(single.registry).decode()


def test_tenants_with_one_target_token_share_one_budget():
    limiters = SharedLimiters()
    made: list[RateLimiter] = []

    def make() -> RateLimiter:
        made.append(RateLimiter(1.0))
        return made[-1]

    one = limiters.get("safetyamp", "https://api.safetyamp.com", "token-A", make)
    same = limiters.get("safetyamp", "https://api.safetyamp.com", "token-A", make)
    other_token = limiters.get("safetyamp", "https://api.safetyamp.com", "token-B", make)
    other_service = limiters.get("scim", "https://api.safetyamp.com", "token-A", make)
    assert one is same
    assert len({id(one), id(other_token), id(other_service)}) == 3
    assert len(made) == 3
    assert "token-A" not in repr(limiters.__dict__)  # keyed by a hash, never the token


@pytest.fixture
def restore_log_context():
    import utils.logger as logger_module

    before = logger_module._per_context
    yield
    logger_module._per_context = before
    set_run_id(None)


def test_log_lines_name_their_tenant_and_run_on_pool_threads_too(restore_log_context):
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("test.tenants")

    def cycle(tenant: str) -> None:
        set_tenant(tenant)
        set_run_id(f"run-{tenant}")
        with ThreadPoolExecutor(2) as pool:  # as the applier's write threads
            list(pool.map(in_context(lambda i: log.info("write %s", i)), range(3)))
        set_tenant(None)

    threads = [threading.Thread(target=cycle, args=(t,)) for t in ("co-a", "co-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if "write" in line]
    assert len(lines) == 6
    for line in lines:
        assert line["run_id"] == f"run-{line['tenant']}"
    assert current_tenant() is None


def test_user_agent_names_instance_and_run_not_secrets():
    set_run_id("20261129T000000Z-abcd1234")
    agent = user_agent("safetyamp-sync/1.0")
    assert agent.startswith("safetyamp-sync/1.0 (instance ")
    assert agent.endswith("; run 20261129T000000Z-abcd1234)")


def write_tenant(folder: Path, tenant: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{tenant}.env").write_text(body)


def test_sync_batch_tenant_selection(tmp_path):
    from sync_batch import select_tenants

    folder = tmp_path / "tenants"
    write_tenant(
        folder,
        "co-a",
        "SYNC_TYPES=vehicles\nSAFETYAMP_FQDN=a.safetyamp.com\nSAMSARA_API_KEY_FROM_ENV=A_KEY\nSAFETYAMP_TOKEN_FROM_ENV=A_TOKEN\n",
    )
    write_tenant(folder, "co-b", "SYNC_TYPES=vehicles\nSAMSARA_API_KEY=inline-secret-value\n")
    environ = {"TENANTS_DIR": str(folder), "A_KEY": "k" * 24, "A_TOKEN": "t" * 24, "REDIS_PREFIX": "p:"}
    base = load_settings(environ, dotenv_path=None)
    with pytest.raises(ConfigurationError, match="name the tenant with --tenant ID, or --tenant all"):
        select_tenants(base, None, environ)
    with pytest.raises(ConfigurationError, match="no such tenant"):
        select_tenants(base, "co-z", environ)
    with pytest.raises(ConfigurationError) as bad:
        select_tenants(base, "co-b", environ)
    assert "never written in a tenant file" in str(bad.value.problems) and "inline-secret-value" not in str(bad.value.problems)
    chosen, problems = select_tenants(base, "all", environ)
    assert [t for t, _ in chosen] == ["co-a"] and chosen[0][1].redis_prefix == "p:t:co-a:"
    assert problems and all("co-b.env" in p for p in problems)
    ((tenant, settings),), none = select_tenants(base, "co-a", environ)
    assert tenant == "co-a" and none == [] and settings.output_dir.name == "co-a"
