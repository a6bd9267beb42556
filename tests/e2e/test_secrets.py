"""No secret ever leaves the process: logs, output files, metrics, endpoints, errors.

The product runs *without* --sandbox, configured like production through the
environment, against emulators started by `python -m sandbox serve`. Every secret
setting holds a sentinel (or the sandbox's real credentials, which are secrets too);
then everything the product wrote or served is searched for them.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.e2e.conftest import ROOT, BatchRunner
from tests.e2e.test_daemon import free_port, wait_for

pytestmark = pytest.mark.e2e

SENTINEL = "S3NT1NEL-do-not-leak-4f9a"
PREFIXES: list[str] = []


@pytest.fixture(autouse=True)
def own_redis_keys() -> Iterator[None]:
    """Every production-style run gets its own REDIS_PREFIX (``production_env``): a bad-
    credential run quarantines its syncs, which would hold back the next case (and the
    next session's good run) through a shared prefix. Their keys go afterwards."""
    import redis

    from tests.support.redis_server import REDIS_URL

    yield
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        while PREFIXES:
            prefix = PREFIXES.pop()
            for key in list(client.scan_iter(match=prefix + "*")):
                client.delete(key)
    except redis.exceptions.RedisError:
        pass  # no Redis here: the runs kept their state in memory
    finally:
        client.close()


@pytest.fixture
def emulators(tmp_path: Path):
    port_file = tmp_path / "ports.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--dir", str(tmp_path / "sb"), "--port-file", str(port_file), "--size", "40"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(port_file.exists, 60), "sandbox serve wrote no port file"
        yield json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def new_prefix() -> str:
    PREFIXES.append(f"test-secrets-{uuid.uuid4().hex}:")
    return PREFIXES[-1]


def production_env(tmp_path: Path, ep: dict, **extra: str) -> dict[str, str]:
    env = BatchRunner(tmp_path).env()
    env.update(
        {
            "SYNC_TYPES": "departments,jobs,titles,employees,vehicles",
            "OUTPUT_DIR": str(tmp_path / "out"),
            "VIEWPOINT_DB_URL": ep["viewpoint"]["url"],
            "SAFETYAMP_URL": ep["safetyamp"]["url"],
            "SAFETYAMP_TOKEN": ep["safetyamp"]["token"],
            "SAFETYAMP_FQDN": ep["safetyamp"]["fqdn"],
            "SAFETYAMP_RATE_LIMIT_PER_MINUTE": "60000",
            "SAMSARA_URL": ep["samsara"]["url"],
            "SAMSARA_API_KEY": ep["samsara"]["api_key"],
            "MS_GRAPH_AUTHORITY_URL": ep["graph"]["authority_url"],
            "MS_GRAPH_URL": ep["graph"]["graph_url"],
            "MS_GRAPH_TENANT_ID": ep["graph"]["tenant_id"],
            "MS_GRAPH_CLIENT_ID": ep["graph"]["client_id"],
            "MS_GRAPH_CLIENT_SECRET": ep["graph"]["client_secret"],
            "MS_GRAPH_CA_BUNDLE": ep["graph"]["ca_bundle"],
            "REDIS_URL": f"redis://:{SENTINEL}@127.0.0.1:6379/15",
            "REDIS_PREFIX": new_prefix(),
            "LOCK_REQUIRED": "false",
            "SYNC_TRIGGER_TOKEN": SENTINEL + "-trigger",
            "SQL_PASSWORD": SENTINEL + "-sql",
            "ONEROSTER_CLIENT_SECRET": SENTINEL + "-oneroster",
            "SCIM_TOKEN": SENTINEL + "-scim",
            "SAMSARA_WEBHOOK_SECRET": base64.b64encode(SENTINEL.encode()).decode(),
            "HTTP_MAX_RETRY_SECONDS": "3",
            "LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def secrets_of(ep: dict) -> list[str]:
    return [
        SENTINEL,
        base64.b64encode(SENTINEL.encode()).decode(),
        ep["safetyamp"]["token"],
        ep["samsara"]["api_key"],
        ep["graph"]["client_secret"],
    ]


def assert_clean(texts: dict[str, str], secrets: list[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"


def output_files(root: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()}


def test_no_secret_in_logs_or_output_files(tmp_path: Path, emulators: dict) -> None:
    runs = {}
    good = subprocess.run(
        [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=production_env(tmp_path, emulators),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert good.returncode in (0, 1), good.stderr[-3000:]
    summary = json.loads(good.stdout.strip().splitlines()[-1])
    assert any(r["created"] for r in summary["runs"]), "the production-style run did sync"
    runs["good"] = good.stdout + good.stderr
    # Wrong credentials everywhere: now the secrets travel through error paths too.
    bad_env = production_env(
        tmp_path,
        emulators,
        SAFETYAMP_TOKEN=SENTINEL + "-sa",
        SAMSARA_API_KEY=SENTINEL + "-sam",
        MS_GRAPH_CLIENT_SECRET=SENTINEL + "-graph",
    )
    bad = subprocess.run(
        [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=bad_env, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert "401" in bad.stderr or "Unauthenticated" in bad.stderr or "invalid_client" in bad.stderr
    runs["bad"] = bad.stdout + bad.stderr
    assert_clean({**runs, **output_files(tmp_path / "out")}, secrets_of(emulators))


def test_no_secret_in_endpoints_or_metrics(tmp_path: Path, emulators: dict) -> None:
    port = free_port()
    env = production_env(tmp_path, emulators, PORT=str(port), HOST="127.0.0.1", SYNC_INTERVAL_MINUTES="60")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"

            def metrics_after_run():
                try:
                    r = requests.get(base + "/metrics", timeout=5)
                except requests.ConnectionError:
                    return None
                return r.text if "sync_runs_total{status=" in r.text and 'sync="vehicles"' in r.text else None

            assert wait_for(metrics_after_run, 120, 0.5), "no run finished"
            bodies = {path: requests.get(base + path, timeout=10).text for path in ("/live", "/ready", "/health", "/metrics")}
            bodies["/sync refused"] = requests.post(base + "/sync", headers={"Authorization": "Bearer nope"}, timeout=5).text
            bodies["/webhooks"] = requests.post(base + "/webhooks/samsara", data=b"{}", timeout=5).text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=25) == 0
    bodies["daemon log"] = log_path.read_text()
    assert_clean(bodies, secrets_of(emulators))
    # The Redis of REDIS_URL (the sentinel as its password, which the test Redis accepts)
    # was in use, so /health described a dependency reached with a secret. ("redis" in
    # the body, the check this replaces, is always true: it names the dependency.)
    assert json.loads(bodies["/health"])["dependencies"]["redis"]["backend"] == "redis"


def test_settings_repr_and_config_errors_hide_secrets() -> None:
    from config.settings import load_settings
    from utils.errors import ConfigurationError

    s = load_settings({"SAFETYAMP_TOKEN": SENTINEL, "SQL_PASSWORD": SENTINEL}, dotenv_path=None)
    assert SENTINEL not in repr(s) and SENTINEL not in str(s.model_dump())
    with pytest.raises(ConfigurationError) as info:
        load_settings({"SAFETYAMP_TOKEN": SENTINEL, "SQL_PASSWORD": SENTINEL + "x", "SAFETYAMP_PAGE_SIZE": "0"}, dotenv_path=None)
    assert "SAFETYAMP_PAGE_SIZE" in str(info.value) and SENTINEL not in str(info.value)


def roster_env(tmp_path: Path, ep: dict, **extra: str) -> dict[str, str]:
    good = {
        "SYNC_TYPES": "rosters",
        "ONEROSTER_URL": ep["oneroster"]["url"],
        "ONEROSTER_VERSION": str(ep["oneroster"]["version"]),
        "ONEROSTER_CLIENT_ID": ep["oneroster"]["client_id"],
        "ONEROSTER_CLIENT_SECRET": ep["oneroster"]["client_secret"],
        "ONEROSTER_TOKEN_URL": ep["oneroster"]["token_url"],
        "SCIM_URL": ep["scim"]["url"],
        "SCIM_TOKEN": ep["scim"]["token"],
    }
    return production_env(tmp_path, ep, **{**good, **extra})


def test_no_roster_secret_in_logs_or_output_files(tmp_path: Path, emulators: dict) -> None:
    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    good = run(roster_env(tmp_path, emulators))
    assert good.returncode == 0, good.stderr[-3000:]
    assert json.loads(good.stdout.strip().splitlines()[-1])["runs"][0]["created"] > 0, good.stdout[-3000:]
    texts = {"good": good.stdout + good.stderr}
    # Wrong credentials, each carrying a sentinel, through the error paths: the OAuth2
    # client secret, a static OneRoster bearer token, and the SCIM token.
    cases = {
        "oauth2 secret": {"ONEROSTER_CLIENT_SECRET": SENTINEL + "-oneroster"},
        "static token": {"ONEROSTER_AUTH": "bearer", "ONEROSTER_TOKEN": SENTINEL + "-ortoken"},
        "scim token": {"SCIM_TOKEN": SENTINEL + "-scim"},
    }
    for name, extra in cases.items():
        bad = run(roster_env(tmp_path, emulators, **extra))
        assert bad.returncode == 1, (name, bad.stderr[-3000:])
        assert "401" in bad.stderr or "invalid_client" in bad.stderr or "nauthori" in bad.stderr, (name, bad.stderr[-3000:])
        texts[name] = bad.stdout + bad.stderr
    secrets = [*secrets_of(emulators), emulators["oneroster"]["client_secret"], emulators["scim"]["token"]]
    assert_clean({**texts, **output_files(tmp_path / "out")}, secrets)


# --------------------------------------------------------------------------- URL settings
# Credentials written into a URL setting (a query parameter, the userinfo) are secrets
# even though the URL is not: they must be masked in every output, whatever quotes the
# URL (a connection error, a redirect, a quarantine reason kept in Redis).

BASE_URL_SETTINGS = ("SAFETYAMP_URL", "SAMSARA_URL", "MS_GRAPH_URL", "MS_GRAPH_AUTHORITY_URL", "ONEROSTER_URL", "SCIM_URL")
"""URLs the adapters append API paths to (a query string there is refused at start)."""

URL_SETTINGS = (
    "SAFETYAMP_URL",
    "SAMSARA_URL",
    "MS_GRAPH_URL",
    "MS_GRAPH_AUTHORITY_URL",
    "ONEROSTER_URL",
    "ONEROSTER_TOKEN_URL",
    "SCIM_URL",
    "PUSHGATEWAY_URL",
)


def url_sentinel(kind: str, name: str) -> str:
    return f"{SENTINEL}-{kind}-{name.lower().replace('_', '')}"


@pytest.fixture
def private_redis(tmp_path: Path):
    """A redis-server of our own with a password (the sentinel), so REDIS_URL carries
    a credential in its userinfo and the product can still store what it keeps."""
    from tests.support.redis_server import free_port as redis_port

    port, password = redis_port(), url_sentinel("pw", "REDIS_URL")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
    try:
        assert wait_for(lambda: _pings(client), 10, 0.05), "redis-server did not start"
        yield f"redis://:{password}@127.0.0.1:{port}/0", client
    finally:
        client.close()
        proc.kill()
        proc.wait(timeout=10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


def redis_values(client) -> dict[str, str]:
    """Every value the product keeps in Redis, by key, as text."""
    out: dict[str, str] = {}
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":  # the run history and the audit log
            value = client.xrange(key, "-", "+")
        else:
            value = kind
        out[f"redis {key.decode(errors='replace')}"] = repr(value)
    return out


def poisoned_urls(ep: dict, *, dead: int) -> dict[str, dict[str, str]]:
    """Three ways a credential rides in a URL, for every URL setting:

    - query: ``?api_key=...&code=...`` on a URL whose host is dead, so the connection
      error (which quotes path and query) is what the run reports;
    - userinfo: ``user:password@`` and ``token@`` on the live emulators, whose 401 fails the run;
    - the database URL both ways (a dead PostgreSQL with a password and a query secret).
    """
    live = {
        "SAFETYAMP_URL": ep["safetyamp"]["url"],
        "SAMSARA_URL": ep["samsara"]["url"],
        "MS_GRAPH_URL": ep["graph"]["graph_url"],
        "MS_GRAPH_AUTHORITY_URL": ep["graph"]["authority_url"],
        "ONEROSTER_URL": ep["oneroster"]["url"],
        "ONEROSTER_TOKEN_URL": ep["oneroster"]["token_url"],
        "SCIM_URL": ep["scim"]["url"],
        "PUSHGATEWAY_URL": f"http://127.0.0.1:{dead}",
    }
    query: dict[str, str] = {}
    base_query: dict[str, str] = {}
    userinfo: dict[str, str] = {}
    for i, name in enumerate(URL_SETTINGS):
        parts = urlsplit(live[name])
        path = parts.path or "/"
        with_query = f"http://127.0.0.1:{dead}{path}?page=1&api_key={url_sentinel('q', name)}&code={url_sentinel('c', name)}"
        if name in BASE_URL_SETTINGS:
            # API paths are appended to a base URL: one with a query is a configuration
            # error (exit 2), whose message must not show the credential either
            base_query[name] = with_query
            query[name] = f"http://127.0.0.1:{dead}{path}"
        else:
            query[name] = with_query
        cred = f"svc:{url_sentinel('p', name)}" if i % 2 else url_sentinel("u", name)
        userinfo[name] = urlunsplit((parts.scheme, f"{cred}@{parts.netloc}", parts.path, parts.query, ""))
    db = (
        f"postgresql+psycopg2://svc:{url_sentinel('p', 'VIEWPOINT_DB_URL')}@127.0.0.1:{dead}/test"
        f"?connect_timeout=2&password={url_sentinel('q', 'VIEWPOINT_DB_URL')}"
    )
    query["VIEWPOINT_DB_URL"] = db
    userinfo["VIEWPOINT_DB_URL"] = ep["viewpoint"]["url"]
    return {"query": query, "userinfo": userinfo, "base query": {**query, **base_query}}


def all_url_sentinels() -> list[str]:
    names = (*URL_SETTINGS, "VIEWPOINT_DB_URL", "REDIS_URL", "old")
    return [url_sentinel(kind, name) for name in names for kind in ("q", "c", "u", "p", "pw")]


def url_env(tmp_path: Path, ep: dict, redis_url: str, urls: dict[str, str], **extra: str) -> dict[str, str]:
    settings = {"SYNC_TYPES": "departments,jobs,titles,employees,vehicles,rosters", "REDIS_URL": redis_url}
    settings["REDIS_PREFIX"] = "test-url-secrets:"
    return roster_env(tmp_path, ep, **{**settings, **urls, **extra})


def daemon_bodies(env: dict[str, str], log_path: Path, until) -> dict[str, str]:
    """Start the daemon, wait until ``until(health)`` holds, collect every endpoint body."""
    port = free_port()
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "SYNC_INTERVAL_MINUTES": "60"}
    base = f"http://127.0.0.1:{port}"
    trigger = {"Authorization": "Bearer " + env["SYNC_TRIGGER_TOKEN"]}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:

            def health():
                try:
                    body = requests.get(base + "/health", timeout=10).json()
                except (requests.ConnectionError, ValueError):
                    return None
                return body if until(body) else None

            assert wait_for(health, 180, 0.5), log_path.read_text()[-3000:]
            bodies = {path: requests.get(base + path, timeout=10).text for path in ("/live", "/ready", "/health", "/metrics")}
            bodies["/diagnose"] = requests.get(base + "/diagnose/employees/1001", headers=trigger, timeout=60).text
            bodies["/sync refused"] = requests.post(base + "/sync", headers={"Authorization": "Bearer nope"}, timeout=5).text
            bodies["/webhooks"] = requests.post(base + "/webhooks/samsara", data=b"{}", timeout=5).text
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=25) == 0
    bodies["daemon log"] = log_path.read_text()
    return bodies


@pytest.mark.slow  # 25-90 s: in CI's slow step, so the README's default run stays short
def test_no_credential_from_a_url_setting_in_any_output(tmp_path: Path, emulators: dict, private_redis) -> None:
    redis_url, client = private_redis
    urls = poisoned_urls(emulators, dead=free_port())
    texts: dict[str, str] = {}
    quoted = ""
    for case, poison in urls.items():
        # a prefix per case: the breaker the first case opened must not hide the second's errors
        env = url_env(tmp_path, emulators, redis_url, poison, HTTP_MAX_RETRY_SECONDS="2", REDIS_PREFIX=f"test-url-{case}:")
        run = subprocess.run(
            [sys.executable, "sync_batch.py", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["status"] == "failed", (case, summary)
        if case == "base query":
            assert run.returncode == 2, (case, run.stdout[-2000:], run.stderr[-3000:])
            named = "\n".join(summary["problems"])
            assert all(name in named for name in BASE_URL_SETTINGS), named
        else:
            assert run.returncode == 1, (case, run.stdout[-2000:], run.stderr[-3000:])
            print(case, {r["sync"]: (r["status"], r.get("error", "")[:150]) for r in summary["runs"]})
        texts[f"{case}: stdout"], texts[f"{case}: stderr"] = run.stdout, run.stderr
        quoted += run.stdout + run.stderr
        # the text form of the summary as well
        text_run = subprocess.run(
            [sys.executable, "sync_batch.py"], cwd=ROOT, env={**env, "LOG_FORMAT": "text"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        texts[f"{case}: text output"] = text_run.stdout + text_run.stderr
    # REDIS_URL itself: a secret-named query parameter and a lone user name (a token)
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for case, bad_redis in {
        "redis query": f"{redis_url}?api_key={url_sentinel('q', 'REDIS_URL')}",
        "redis user": f"redis://{url_sentinel('u', 'REDIS_URL')}@127.0.0.1:{port}/0",
    }.items():
        env = url_env(tmp_path, emulators, bad_redis, {}, LOCK_REQUIRED="true", HTTP_MAX_RETRY_SECONDS="2")
        run = subprocess.run(
            [sys.executable, "sync_batch.py", "--json", "--only", "departments"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        texts[f"{case}: output"] = run.stdout + run.stderr
        quoted += run.stdout + run.stderr
    assert_clean(texts, all_url_sentinels())
    # The credentials did travel through the error paths (masked): this test is not vacuous.
    assert "api_key=***" in quoted and "***@" in quoted, quoted[-3000:]

    # The daemon, configured with the same poisoned URLs: a cycle fails, its reasons go
    # to /health and to the quarantine in Redis.
    env = url_env(tmp_path, emulators, redis_url, urls["query"], HTTP_MAX_RETRY_SECONDS="2")
    texts.update(
        {
            f"daemon: {k}": v
            for k, v in daemon_bodies(env, tmp_path / "daemon-1.log", lambda h: len(h.get("last_runs") or {}) == 6).items()
        }
    )
    stored = client.hgetall("test-url-secrets:quarantine")
    assert stored, "the failed cycle quarantined nothing: the reason never reached Redis"
    texts.update(redis_values(client))

    # A later daemon run, configured correctly (it does not know the old credentials):
    # what the earlier runs left in Redis is served by /health. One reason is planted as
    # a version without the scrub would have stored it: served, it must be masked too.
    planted = json.loads(stored[b"vehicles"])
    planted["reason"] = f"samsara GET https://{url_sentinel('u', 'old')}@h/x?token={url_sentinel('q', 'old')}: refused"
    client.hset("test-url-secrets:quarantine", "vehicles", json.dumps(planted))
    env = url_env(tmp_path, emulators, redis_url, {})
    later = daemon_bodies(env, tmp_path / "daemon-2.log", lambda h: len(h.get("last_runs") or {}) == 6)
    health = json.loads(later["/health"])
    assert health["quarantine"]["vehicles"]["reason"].startswith("samsara GET https://***@h/x?token=***"), health
    assert "quarantined" in health["last_runs"]["vehicles"].get("error", ""), health["last_runs"]
    texts.update({f"later daemon: {k}": v for k, v in later.items()})
    client.hdel("test-url-secrets:quarantine", "vehicles")  # the planted value: not the product's
    texts.update({f"after: {k}": v for k, v in redis_values(client).items()})
    texts.update(output_files(tmp_path / "out"))
    assert_clean(texts, all_url_sentinels())
