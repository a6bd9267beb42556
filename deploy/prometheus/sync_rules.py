#!/usr/bin/env python
"""Keep k8s/base/prometheusrule.yaml identical to deploy/prometheus/safetyamp-sync.rules.yml.

    python deploy/prometheus/sync_rules.py           # regenerate the PrometheusRule
    python deploy/prometheus/sync_rules.py --check   # exit 1 if they differ (CI)

The rules file is the source of truth (plain Prometheus, testable with promtool); the
PrometheusRule's ``spec`` is that file's content, unchanged. "Identical" is checked on
the parsed YAML, so comments and formatting may differ but no rule, label, annotation or
expression can.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "safetyamp-sync.rules.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/safetyamp-sync.rules.yml by
# deploy/prometheus/sync_rules.py: edit the rules file and rerun the script.
# CI (.ci/deploy-checks) fails when this spec and the rules file differ.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so PromQL stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str)


def load_rules(path: Path = RULES) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_prometheus_rule_spec(path: Path = PROMETHEUS_RULE) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if doc.get("kind") != "PrometheusRule":
        raise SystemExit(f"{path}: kind is {doc.get('kind')!r}, expected PrometheusRule")
    return doc["spec"]


def render(rules: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "safetyamp-sync",
            # kube-prometheus-stack's Prometheus selects rules by this label by default.
            "labels": {"release": "kube-prometheus-stack"},
        },
        "spec": rules,
    }
    return HEADER + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=1000, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the PrometheusRule differs from the rules file")
    args = parser.parse_args(argv)
    rules = load_rules()
    if args.check:
        spec = load_prometheus_rule_spec()
        if spec != rules:
            print(
                f"{PROMETHEUS_RULE.relative_to(ROOT)} differs from {RULES.relative_to(ROOT)}: "
                "run python deploy/prometheus/sync_rules.py",
                file=sys.stderr,
            )
            return 1
        print(f"{PROMETHEUS_RULE.relative_to(ROOT)} spec == {RULES.relative_to(ROOT)}")
        return 0
    PROMETHEUS_RULE.write_text(render(rules), encoding="utf-8")
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
