#!/usr/bin/env python
"""Render every Kustomize overlay, validate it against the Kubernetes 1.30 schemas and
assert the security invariants. Used by .ci/deploy-checks and tests/integration.

    python deploy/ci/check_manifests.py [--kubectl kubectl] [--crd-node-modules DIR]
                                        [--out DIR]

1. ``kubectl kustomize k8s/overlays/<env>`` for every overlay (and the base).
2. Built-in kinds: JSON schema of Kubernetes 1.30, strict (unknown fields are errors),
   from the PyPI package ``kubernetes-validate``.
3. Custom resources (ServiceMonitor, PrometheusRule): their CRD schemas from the npm
   package ``@kubernetes-models/prometheus-operator`` (deploy/ci/validate-crds.mjs) when
   --crd-node-modules is given; otherwise each one is listed as SKIPPED.
4. Security invariants for every container of every workload (including init
   containers): runAsNonRoot, a non-zero user, readOnlyRootFilesystem,
   allowPrivilegeEscalation false, not privileged, capabilities drop ALL, seccomp
   RuntimeDefault, no host namespaces, no hostPath volumes, memory limits set.

Exit status 0 when everything passes; every problem is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_ROOT = ROOT / "k8s"
K8S_VERSION = "1.30.0"
CRD_GROUPS = ("monitoring.coreos.com",)
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


# ------------------------------------------------------------------------- rendering
def overlays() -> list[Path]:
    """k8s/base plus every folder under k8s/overlays holding a kustomization."""
    found = [KUSTOMIZE_ROOT / "base"]
    found += sorted(p.parent for p in (KUSTOMIZE_ROOT / "overlays").glob("*/kustomization.yaml"))
    return found


def render(kustomization: Path, kubectl: str = "kubectl") -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def name_of(resource: dict[str, Any]) -> str:
    meta = resource.get("metadata", {})
    ns = meta.get("namespace")
    return f"{resource.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def is_custom(resource: dict[str, Any]) -> bool:
    return resource.get("apiVersion", "").split("/")[0] in CRD_GROUPS


# ------------------------------------------------------------------------ validation
def validate_schema(resource: dict[str, Any], version: str = K8S_VERSION) -> str | None:
    """None when valid against the strict Kubernetes schema, else the error."""
    import kubernetes_validate  # PyPI kubernetes-validate: ships the JSON schemas per version

    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        return f"{path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    return None


def validate_custom(resources: list[tuple[str, dict[str, Any]]], node_modules: Path) -> tuple[bool, str]:
    """Run validate-crds.mjs over the custom resources; (ok, its output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([{"source": src, "resource": res} for src, res in resources], handle)
        path = handle.name
    try:
        proc = subprocess.run(
            ["node", str(ROOT / "deploy" / "ci" / "validate-crds.mjs"), str(node_modules), path],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        Path(path).unlink(missing_ok=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


# ------------------------------------------------------------------------ invariants
def pod_specs(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = resource.get("kind")
    spec = resource.get("spec", {})
    if kind == "Pod":
        yield spec
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind in WORKLOAD_KINDS:
        yield spec.get("template", {}).get("spec", {})


def security_problems(resource: dict[str, Any]) -> list[str]:
    """Every violation of the invariants in one workload (empty list = compliant)."""
    problems: list[str] = []
    where = name_of(resource)
    for pod in pod_specs(resource):
        pod_sc = pod.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"{where}: {flag} is set")
        for volume in pod.get("volumes") or []:
            if "hostPath" in volume:
                problems.append(f"{where}: volume {volume.get('name')} is a hostPath")
        if (pod_sc.get("runAsUser") == 0) or (pod_sc.get("runAsGroup") == 0):
            problems.append(f"{where}: pod runs as user or group 0")
        containers = [("container", c) for c in pod.get("containers") or []]
        containers += [("initContainer", c) for c in pod.get("initContainers") or []]
        if not containers:
            problems.append(f"{where}: no containers")
        for kind, container in containers:
            c_where = f"{where} {kind} {container.get('name')}"
            sc = container.get("securityContext") or {}
            run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            if run_as_non_root is not True:
                problems.append(f"{c_where}: runAsNonRoot is not true")
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if user == 0:
                problems.append(f"{c_where}: runAsUser is 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{c_where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{c_where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{c_where}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{c_where}: capabilities do not drop ALL")
            if caps.get("add"):
                problems.append(f"{c_where}: adds capabilities {caps['add']}")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{c_where}: seccompProfile is not RuntimeDefault")
            limits = (container.get("resources") or {}).get("limits") or {}
            if "memory" not in limits:
                problems.append(f"{c_where}: no memory limit")
    return problems


# ------------------------------------------------------------------------------- main
def check(kubectl: str, node_modules: Path | None, out_dir: Path | None) -> int:
    failures = 0
    custom: list[tuple[str, dict[str, Any]]] = []
    for path in overlays():
        label = str(path.relative_to(ROOT))
        try:
            resources = render(path, kubectl)
        except subprocess.CalledProcessError as exc:
            print(f"FAIL {label}: kubectl kustomize failed:\n{exc.stderr}")
            failures += 1
            continue
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{path.name}.yaml").write_text(yaml.safe_dump_all(resources, sort_keys=False), encoding="utf-8")
        print(f"RENDER {label}: {len(resources)} resources")
        workloads = 0
        for resource in resources:
            if is_custom(resource):
                custom.append((label, resource))
                continue
            error = validate_schema(resource)
            if error:
                print(f"FAIL {label} {name_of(resource)}: not valid Kubernetes {K8S_VERSION}: {error}")
                failures += 1
            else:
                print(f"PASS {label} {name_of(resource)} against Kubernetes {K8S_VERSION} (strict)")
            if resource.get("kind") in WORKLOAD_KINDS:
                workloads += 1
                for problem in security_problems(resource):
                    print(f"FAIL {label} security: {problem}")
                    failures += 1
        if workloads == 0:
            print(f"FAIL {label}: no workload rendered")
            failures += 1
    if custom:
        if node_modules is None:
            for label, resource in custom:
                print(f"SKIPPED {label} {name_of(resource)}: custom resource, no CRD schema given (--crd-node-modules)")
        else:
            ok, output = validate_custom(custom, node_modules)
            print(output)
            if not ok:
                failures += 1
    print(f"{'OK' if failures == 0 else 'FAILED'}: {failures} problem(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    parser.add_argument(
        "--crd-node-modules", type=Path, default=None, help="node_modules holding @kubernetes-models/prometheus-operator"
    )
    parser.add_argument("--out", type=Path, default=None, help="write each rendered overlay to DIR/<name>.yaml")
    args = parser.parse_args(argv)
    return check(args.kubectl, args.crd_node_modules, args.out)


if __name__ == "__main__":
    sys.exit(main())
