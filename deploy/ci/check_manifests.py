#!/usr/bin/env python
"""Render every Kustomize overlay, validate it against the Kubernetes 1.30 schemas and
assert the security invariants. Used by .ci/deploy-checks and tests/integration.

    python deploy/ci/check_manifests.py [--kubectl kubectl] [--crd-node-modules DIR]
                                        [--out DIR]

1. ``kubectl kustomize k8s/overlays/<env>`` for every overlay (and the base), and every
   Kustomize component under k8s/components (the console's single sign-on) on top of
   every overlay, as an overlay that lists it under ``components:`` renders.
2. Built-in kinds: JSON schema of Kubernetes 1.30, strict (unknown fields are errors),
   from the PyPI package ``kubernetes-validate``.
3. Custom resources (ServiceMonitor, PrometheusRule; KEDA's ScaledObject in the optional
   tenant-autoscaling component): their CRD schemas from the npm packages
   ``@kubernetes-models/prometheus-operator`` and ``@kubernetes-models/keda``
   (deploy/ci/validate-crds.mjs) when --crd-node-modules is given; otherwise each one is
   listed as SKIPPED.
4. Security invariants for every container of every workload (including init
   containers): runAsNonRoot, a non-zero user, readOnlyRootFilesystem,
   allowPrivilegeEscalation false, not privileged, capabilities drop ALL, seccomp
   RuntimeDefault, no host namespaces, no hostPath volumes, memory limits set.
5. Image pins: every third-party image by tag *and* digest, never ``latest``; the product
   image by digest in the overlays of DIGEST_OVERLAYS (prod); the Dockerfile's base image
   by digest.
6. NetworkPolicies: every ingress rule names its sources (no rule open to every pod,
   namespace or address); every egress rule has ports, and only HTTPS (443) and DNS may go
   to any address; both directions restricted.
7. Redis containers: a password (``--requirepass``) taken from a Secret, protected mode
   not switched off.

Exit status 0 when everything passes; every problem is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
CRD_GROUPS = ("monitoring.coreos.com", "keda.sh")
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
PRODUCT_IMAGE = "safetyamp-sync"
DIGEST_OVERLAYS = {"prod"}  # overlays whose product image must be pinned by digest
OPEN_EGRESS_PORTS = {53, 443}  # DNS and HTTPS to SaaS endpoints may go to any address
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


# ------------------------------------------------------------------------- rendering
def overlays() -> list[Path]:
    """k8s/base plus every folder under k8s/overlays holding a kustomization."""
    found = [KUSTOMIZE_ROOT / "base"]
    found += sorted(p.parent for p in (KUSTOMIZE_ROOT / "overlays").glob("*/kustomization.yaml"))
    return found


def components() -> list[Path]:
    """Every folder under k8s/components holding a Kustomize Component."""
    return sorted(p.parent for p in (KUSTOMIZE_ROOT / "components").glob("*/kustomization.yaml"))


def render_with_component(overlay: Path, component: Path, kubectl: str = "kubectl") -> list[dict[str, Any]]:
    """``overlay`` rendered with ``component`` added to it, in the overlay's namespace: what
    an overlay that lists the component under ``components:`` gives. (kustomize refuses
    absolute paths, so the wrapper names both relative to its own folder.)"""
    namespace = (yaml.safe_load((overlay / "kustomization.yaml").read_text(encoding="utf-8")) or {}).get("namespace")
    with tempfile.TemporaryDirectory(prefix="kustomize-") as tmp:
        wrapper: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(overlay, tmp)],
            "components": [os.path.relpath(component, tmp)],
        }
        if namespace:
            wrapper["namespace"] = namespace
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(wrapper), encoding="utf-8")
        return render(Path(tmp), kubectl)


def targets(kubectl: str = "kubectl") -> list[tuple[str, str, Any]]:
    """(label, file name, render function) of everything the checks render: the base,
    every overlay, and every component on every overlay."""
    found: list[tuple[str, str, Any]] = []
    for path in overlays():
        found.append((str(path.relative_to(ROOT)), path.name, lambda path=path: render(path, kubectl)))
    for component in components():
        for path in overlays()[1:]:  # not on the base: it is not deployable on its own
            label = f"{path.relative_to(ROOT)} + {component.relative_to(ROOT)}"
            found.append(
                (label, f"{path.name}+{component.name}", lambda p=path, c=component: render_with_component(p, c, kubectl))
            )
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


# ------------------------------------------------------------------------- image pins
def is_product_image(image: str) -> bool:
    """True for this project's image (any registry, tag or digest)."""
    name = image.split("@", 1)[0]
    name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return name.rsplit("/", 1)[-1] == PRODUCT_IMAGE


def image_reference_problems(image: str, where: str, *, digest_required: bool) -> list[str]:
    """What is loose about one image reference (empty list = pinned as required)."""
    problems: list[str] = []
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if tag is None and not digest:
        problems.append(f"{where}: image {image} has neither tag nor digest")
    if tag == "latest":
        problems.append(f"{where}: image {image} uses the tag latest")
    if digest_required and not DIGEST.search(image):
        problems.append(f"{where}: image {image} is not pinned by digest (@sha256:<64 hex>)")
    return problems


def image_problems(resources: list[dict[str, Any]], *, product_digest_required: bool) -> list[str]:
    """Third-party images need tag and digest; the product image a digest when required."""
    problems: list[str] = []
    for resource in resources:
        for pod in pod_specs(resource):
            for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                image = str(container.get("image") or "")
                where = f"{name_of(resource)} container {container.get('name')}"
                product = is_product_image(image)
                problems += image_reference_problems(image, where, digest_required=product_digest_required or not product)
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """Every base image (``FROM`` or the ``ARG`` default it names) pinned by digest."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    problems: list[str] = []
    for ref in re.findall(r"^FROM (?:--platform=\S+ )?(\S+)", text, flags=re.M):
        var = re.fullmatch(r"\$\{?(\w+)\}?", ref)
        image = args.get(var.group(1), ref) if var else ref
        if image in {"scratch"} or image.lower() in {m.lower() for m in re.findall(r" AS (\S+)$", text, flags=re.M)}:
            continue
        problems += image_reference_problems(image, f"Dockerfile FROM {ref}", digest_required=True)
    return problems


# ------------------------------------------------------------------- network policies
def _selects_something(selector: Any) -> bool:
    return isinstance(selector, dict) and bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def _open_cidr(peer: dict[str, Any]) -> bool:
    return str((peer.get("ipBlock") or {}).get("cidr")) in ("0.0.0.0/0", "::/0")


def network_policy_problems(policy: dict[str, Any]) -> list[str]:
    """Every way one NetworkPolicy admits more than it names (empty list = tight)."""
    where = name_of(policy)
    spec = policy.get("spec") or {}
    problems = [f"{where}: does not restrict {t}" for t in ("Ingress", "Egress") if t not in (spec.get("policyTypes") or [])]
    for i, rule in enumerate(spec.get("ingress") or []):
        peers = rule.get("from") or []
        if not peers:
            problems.append(f"{where}: ingress rule {i} admits every source (no from)")
        for peer in peers:
            if "ipBlock" in peer:
                if _open_cidr(peer):
                    problems.append(f"{where}: ingress rule {i} admits every address ({peer['ipBlock']['cidr']})")
                continue
            if "namespaceSelector" in peer and not _selects_something(peer["namespaceSelector"]):
                problems.append(f"{where}: ingress rule {i} admits every namespace (empty namespaceSelector)")
            if "namespaceSelector" in peer and not _selects_something(peer.get("podSelector")):
                problems.append(f"{where}: ingress rule {i} admits every pod of the namespaces it selects")
            if "namespaceSelector" not in peer and not _selects_something(peer.get("podSelector")):
                problems.append(f"{where}: ingress rule {i} admits every pod of the namespace (empty podSelector)")
    for i, rule in enumerate(spec.get("egress") or []):
        ports = {p.get("port") for p in rule.get("ports") or []}
        if not ports:
            problems.append(f"{where}: egress rule {i} has no ports (every port allowed)")
            continue
        peers = rule.get("to") or []
        anywhere = not peers or any(_open_cidr(p) for p in peers)
        if anywhere and not ports <= OPEN_EGRESS_PORTS:
            listed = ",".join(str(p) for p in sorted(ports, key=str))
            problems.append(f"{where}: egress rule {i} (ports {listed}) reaches every address; name its destinations")
    return problems


# ------------------------------------------------------------------------------ Redis
def redis_problems(resource: dict[str, Any]) -> list[str]:
    """A Redis container must require a password taken from a Secret."""
    problems: list[str] = []
    for pod in pod_specs(resource):
        for container in pod.get("containers") or []:
            argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            if "redis-server" not in argv and not str(container.get("image", "")).split("/")[-1].startswith("redis:"):
                continue
            where = f"{name_of(resource)} container {container.get('name')}"
            env = {e.get("name"): e for e in container.get("env") or []}
            if "--requirepass" not in argv:
                problems.append(f"{where}: Redis without a password (no --requirepass)")
            else:
                value = argv[argv.index("--requirepass") + 1] if argv.index("--requirepass") + 1 < len(argv) else ""
                var = re.fullmatch(r"\$\((\w+)\)", value)
                ref = ((env.get(var.group(1)) or {}).get("valueFrom") or {}).get("secretKeyRef") if var else None
                if not ref:
                    problems.append(f"{where}: the Redis password is not from a Secret (use $(VAR) with a secretKeyRef)")
            if "--protected-mode" in argv and argv[argv.index("--protected-mode") + 1 :][:1] == ["no"]:
                problems.append(f"{where}: Redis with protected mode off")
    return problems


# ------------------------------------------------------------------------------- main
def check(kubectl: str, node_modules: Path | None, out_dir: Path | None) -> int:
    failures = 0
    custom: list[tuple[str, dict[str, Any]]] = []
    for label, name, render_target in targets(kubectl):
        try:
            resources = render_target()
        except subprocess.CalledProcessError as exc:
            print(f"FAIL {label}: kubectl kustomize failed:\n{exc.stderr}")
            failures += 1
            continue
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{name}.yaml").write_text(yaml.safe_dump_all(resources, sort_keys=False), encoding="utf-8")
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
                for problem in security_problems(resource) + redis_problems(resource):
                    print(f"FAIL {label} security: {problem}")
                    failures += 1
            if resource.get("kind") == "NetworkPolicy":
                for problem in network_policy_problems(resource):
                    print(f"FAIL {label} network: {problem}")
                    failures += 1
        # The base is not deployable on its own (its product image is a bare name); the
        # overlays carry the real references.
        overlay = name.split("+", 1)[0]
        image_checks = [] if overlay == "base" else image_problems(resources, product_digest_required=overlay in DIGEST_OVERLAYS)
        for problem in image_checks:
            print(f"FAIL {label} image: {problem}")
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
    for problem in dockerfile_problems((ROOT / "Dockerfile").read_text(encoding="utf-8")):
        print(f"FAIL Dockerfile: {problem}")
        failures += 1
    print(f"{'OK' if failures == 0 else 'FAILED'}: {failures} problem(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or "kubectl")
    parser.add_argument(
        "--crd-node-modules",
        type=Path,
        default=None,
        help="node_modules holding @kubernetes-models/prometheus-operator and @kubernetes-models/keda",
    )
    parser.add_argument("--out", type=Path, default=None, help="write each rendered overlay to DIR/<name>.yaml")
    args = parser.parse_args(argv)
    return check(args.kubectl, args.crd_node_modules, args.out)


if __name__ == "__main__":
    sys.exit(main())
