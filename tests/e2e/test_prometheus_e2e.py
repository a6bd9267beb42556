"""A real Prometheus scraping the real daemon: every dashboard query and every recording
rule must have data.

Starts ``python main.py --sandbox`` (short interval) and Debian's ``prometheus`` binary
(scrape and rule evaluation every second, storage in a temporary folder, loopback only)
loaded with deploy/prometheus/safetyamp-sync.rules.yml. After the daemon has finished two
sync cycles, it asks Prometheus's HTTP API for

- every expression of every panel in deploy/grafana/safetyamp-sync.json, with the
  dashboard variables replaced the way Grafana would ($__rate_interval -> 1m,
  $__range -> 1h, $sync/$service/$namespace/$tenant -> ".*"): at least one series with a
  finite value (Grafana shows "No data" for an empty result and nothing for NaN). The
  sandbox daemon serves one tenant (no TENANTS_DIR): its series carry no tenant label,
  which `tenant=~".*"` must still match; a panel made only of the tenant engine's
  process-wide metrics must have data when the daemon exports those metrics (one tenant
  has slots and an overdue count, but no tenant files to count by state);
- every recording rule: at least one series;
- every rule's health: no evaluation error;
- the values of the dashboard's sync and service variables.

Without the prometheus binary the test skips, except under CI=true where it fails:
``.ci/deploy-checks`` installs it (Debian package ``prometheus``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "safetyamp-sync.json"
RULES = ROOT / "deploy" / "prometheus" / "safetyamp-sync.rules.yml"

# What Grafana substitutes; the values are what a person looking at the last hour sees.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "namespace": ".*",
    "sync": ".*",
    "service": ".*",
    "tenant": ".*",
}
# The tenant engine's process-wide metrics (docs/metrics.md): exported only with TENANTS_DIR.
TENANT_PROCESS_METRICS = {"sync_tenants", "sync_tenants_overdue", "sync_tenant_slots", "sync_tenant_slots_busy"}
INTERVAL_MINUTES = "0.25"  # a sync cycle every ~15 s
START_TIMEOUT = 120.0
CYCLES_TIMEOUT = 180.0


# ------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def substitute(expr: str) -> str:
    """Replace $var and ${var} (also ${var:format}) as Grafana does for a Prometheus query."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"dashboard uses an unknown variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, rows included."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr") and not target.get("hide"):
                    found.append((panel.get("title", "?"), target["expr"]))

    walk(dash["panels"])
    return found


def recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM our child, wait, then SIGKILL its own process group if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session=True: the group is ours
        proc.wait(timeout=10)


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"})
        status, body = http_get(url, timeout=15)
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise AssertionError(f"query failed ({status}): {expr}\n{payload.get('error', body[:500])}")
        return payload["data"]

    def series(self, expr: str) -> list[dict[str, Any]]:
        data = self.query(expr)
        if data["resultType"] == "vector":
            return data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        raise AssertionError(f"unexpected result type {data['resultType']} for {expr}")

    def get(self, path: str) -> Any:
        status, body = http_get(self.base + path, timeout=15)
        assert status == 200, f"{path}: {status} {body[:300]!r}"
        return json.loads(body)["data"]


def finite(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in series if math.isfinite(float(s["value"][1]))]


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "the prometheus binary is missing (Debian package `prometheus`; .ci/deploy-checks installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prometheus-e2e-daemon")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "SQL_", "VIEWPOINT_", "ONEROSTER_", "SCIM_"))
    }
    for name in ("SANDBOX_FAULTS", "SYNC_TYPES", "AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_URL", "SECRETS_DIR"):
        env.pop(name, None)
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        SYNC_INTERVAL_MINUTES=INTERVAL_MINUTES,
        OUTPUT_DIR=str(tmp / "output"),
        LOG_FORMAT="json",
        SANDBOX_SEED="7",
        PYTHONUNBUFFERED="1",
    )
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--sandbox", "--sandbox-dir", str(tmp / "sandbox"), "--sandbox-size", "40"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"main.py exited with {proc.returncode} before serving /metrics:\n{tail(log)}")
            try:
                status, body = http_get(base + "/metrics", timeout=2)
                if status == 200 and b"\nsync_runs_total{" in body:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no sync_runs_total on /metrics within {START_TIMEOUT:.0f} s:\n{tail(log)}")
            time.sleep(0.5)
        yield {"port": port, "base": base, "proc": proc, "log": log}
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def prometheus(prometheus_binary: str, daemon: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    tmp = tmp_path_factory.mktemp("prometheus-e2e-server")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "safetyamp-sync", "static_configs": [{"targets": [f"127.0.0.1:{daemon['port']}"]}]},
        ],
    }
    config_file = tmp / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp / 'data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        prom = Prometheus(port)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{tail(log)}")
            try:
                if http_get(prom.base + "/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready within 60 s:\n{tail(log)}")
            time.sleep(0.3)
        yield prom
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, daemon: dict[str, Any]) -> Prometheus:
    """Wait until Prometheus has seen two full cycles of every enabled sync, then give the
    recording rules a few evaluations (their content is checked by the tests)."""
    deadline = time.monotonic() + CYCLES_TIMEOUT
    while True:
        if daemon["proc"].poll() is not None:
            pytest.fail(f"main.py exited with {daemon['proc'].returncode}:\n{tail(daemon['log'])}")
        runs = prometheus.series("min(sum by (sync) (sync_runs_total))")
        if runs and float(runs[0]["value"][1]) >= 2:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"Prometheus did not see two sync cycles within {CYCLES_TIMEOUT:.0f} s (runs: {runs}):\n{tail(daemon['log'])}"
            )
        time.sleep(1.0)
    settle = time.monotonic() + 15.0
    while time.monotonic() < settle and not all(prometheus.series(name) for name in recording_rules()):
        time.sleep(1.0)
    time.sleep(3.0)  # a few more scrapes after the second cycle, for rate() over 1m
    return prometheus


# --------------------------------------------------------------------------- tests
def test_target_is_up(scraped: Prometheus) -> None:
    up = scraped.series('up{job="safetyamp-sync"}')
    assert up and up[0]["value"][1] == "1", up


def test_every_dashboard_expression_returns_data(scraped: Prometheus) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10, "the dashboard lost its panels"
    empty: list[str] = []
    for title, expr in queries:
        metrics = set(re.findall(r"[a-z_]+(?=\{)", expr))
        if metrics and metrics <= TENANT_PROCESS_METRICS and not all(scraped.series(m) for m in metrics):
            continue  # one tenant: no tenant files, so sync_tenants{state} has no series
        result = scraped.series(substitute(expr))
        if not finite(result):
            empty.append(f"- {title}: {expr}\n    -> {result or 'no series'}")
    assert not empty, "dashboard queries with no data (Grafana would show 'No data'):\n" + "\n".join(empty)


def test_single_tenant_series_carry_no_tenant_label_and_still_match_the_tenant_variable(scraped: Prometheus) -> None:
    runs = scraped.series("sync_runs_total")
    assert runs and all("tenant" not in s["metric"] for s in runs), runs
    assert scraped.series('sync_runs_total{tenant=~".*"}'), "All (.*) must match series without the label"


def test_every_recording_rule_returns_a_series(scraped: Prometheus) -> None:
    records = recording_rules()
    assert records
    missing = [name for name in records if not scraped.series(name)]
    assert not missing, f"recording rules without a series: {missing}"


def test_every_rule_evaluates_without_error(scraped: Prometheus) -> None:
    groups = scraped.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    in_file = [r.get("record") or r.get("alert") for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(in_file)
    broken = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not broken, broken


def test_dashboard_variables_have_values(scraped: Prometheus) -> None:
    syncs = scraped.get("/api/v1/label/sync/values?" + urllib.parse.urlencode({"match[]": "sync_runs_total"}))
    services = scraped.get("/api/v1/label/service/values?" + urllib.parse.urlencode({"match[]": "external_requests_total"}))
    assert "employees" in syncs and "departments" in syncs, syncs
    assert "safetyamp" in services, services


def test_no_alert_fires_on_a_healthy_sandbox(scraped: Prometheus) -> None:
    alerts = scraped.get("/api/v1/alerts")["alerts"]
    firing = [a for a in alerts if a["state"] == "firing"]
    assert not firing, firing
