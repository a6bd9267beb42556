"""Every third-party module the repository imports is declared in a requirements file.

The README's test command installs only requirements-dev.txt (which includes
requirements.txt) into a fresh virtual environment, and so does CI. A module that is
importable here only because something else put it into this interpreter (as PyPI's
PyYAML once was, by the deploy checks) works on a developer's machine and fails on a new
one. Imports inside functions count too: they fail only when that code path runs.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"output", "node_modules", "__pycache__"}  # and every hidden folder (.venv, .git...)


def python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts[:-1]
        if not any(p.startswith(".") or p in SKIP_DIRS for p in parts):
            yield path


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path``, wherever they stand, except
    under ``if TYPE_CHECKING:`` (never executed)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def is_local(module: str, importer: Path) -> bool:
    """The project's own packages and modules, and scripts' siblings (bench/run.py imports
    bench/harness.py by its bare name)."""
    return any((base / module).is_dir() or (base / f"{module}.py").is_file() for base in (ROOT, importer.parent))


def declared(requirements: Path) -> set[str]:
    """Canonical names of the distributions a requirements file names, following -r."""
    names: set[str] = set()
    for raw in requirements.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            names |= declared(requirements.parent / line.split(None, 1)[1])
            continue
        if line.startswith("-"):
            continue
        names.add(canonicalize_name(Requirement(line).name))
    return names


def with_dependencies(names: set[str]) -> set[str]:
    """``names`` and, transitively, what their installed metadata requires here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # reported by the test below if anything imports from it
        for text in requires:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


@functools.cache
def third_party_imports() -> tuple[tuple[str, str], ...]:
    """(file relative to the root, module) for every import that is neither the standard
    library nor the project's own."""
    return tuple(
        (str(path.relative_to(ROOT)), module)
        for path in python_files()
        for module in sorted(imported_modules(path))
        if module not in sys.stdlib_module_names and module != "__future__" and not is_local(module, path)
    )


def undeclared_imports(requirements: Path) -> list[str]:
    allowed = with_dependencies(declared(requirements))
    providers = metadata.packages_distributions()
    problems = []
    for where, module in third_party_imports():
        dists = {canonicalize_name(d) for d in providers.get(module, ())}
        if not dists:
            problems.append(f"{where}: imports {module}, which no installed distribution provides")
        elif not dists & allowed:
            problems.append(f"{where}: imports {module} (from {', '.join(sorted(dists))}), not in {requirements.name}")
    return problems


def test_every_import_is_declared_in_the_requirements_files() -> None:
    assert undeclared_imports(ROOT / "requirements-dev.txt") == []


def test_a_missing_requirement_is_found(tmp_path: Path) -> None:
    # requirements-dev.txt without PyYAML (and without kubernetes-validate, which needs it):
    # the manifest tests and deploy/ci import yaml, so the check must name them.
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    kept = [line for line in dev if not line.lower().startswith(("pyyaml", "kubernetes-validate"))]
    assert len(kept) == len(dev) - 2, "requirements-dev.txt pins PyYAML and kubernetes-validate"
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    (tmp_path / "requirements-dev.txt").write_text("\n".join(kept) + "\n")
    problems = undeclared_imports(tmp_path / "requirements-dev.txt")
    assert "tests/integration/test_manifests.py: imports yaml (from pyyaml), not in requirements-dev.txt" in problems
    assert any(p.startswith("deploy/ci/check_manifests.py: imports kubernetes_validate") for p in problems)
