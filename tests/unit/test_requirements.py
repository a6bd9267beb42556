"""Every third-party module the repository imports is declared in a requirements file.

The README's test command installs only requirements-dev.txt (which includes
requirements.txt) into a fresh virtual environment, and so does CI. A module that is
importable here only because something else put it into this interpreter (as PyPI's
PyYAML once was, by the deploy checks) works on a developer's machine and fails on a new
one; one that arrives only as another package's dependency (PyYAML again, through
kubernetes-validate) breaks the day that package drops it. So each imported distribution
is named directly, except the few in COMES_WITH. Imports inside functions count too: they
fail only when that code path runs.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def declared(requirements: Path) -> set[str]:
    """Canonical names of the distributions a requirements file names, following -r."""
    names: set[str] = set()
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            names |= declared(requirements.parent / line.split(None, 1)[1])
        elif line and not line.startswith("-") and (name := _NAME.match(line)):
            names.add(canonical(name.group(0)))
    return names


# Imported, not named in a requirements file, on purpose: each is the declared package's own
# API (flask's requests and errors are werkzeug's, its cookie signer itsdangerous' and its
# HTML escaping markupsafe's, requests' retries urllib3's, pydantic's errors pydantic_core's),
# so its version moves with that package's pin.
COMES_WITH = {
    "werkzeug": "flask",
    "itsdangerous": "flask",
    "markupsafe": "flask",
    "urllib3": "requests",
    "pydantic-core": "pydantic",
}


def requires(dist: str) -> set[str]:
    try:
        return {canonical(m.group(0)) for r in metadata.requires(dist) or () if (m := _NAME.match(r))}
    except metadata.PackageNotFoundError:
        return set()


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
    named = declared(requirements)
    providers = metadata.packages_distributions()
    problems = []
    for where, module in third_party_imports():
        dists = {canonical(d) for d in providers.get(module, ())}
        if not dists:
            problems.append(f"{where}: imports {module}, which no installed distribution provides")
        elif not any(d in named or (COMES_WITH.get(d) in named and d in requires(COMES_WITH[d])) for d in dists):
            problems.append(f"{where}: imports {module} (from {', '.join(sorted(dists))}), not in {requirements.name}")
    return problems


def test_every_import_is_declared_in_the_requirements_files() -> None:
    assert undeclared_imports(ROOT / "requirements-dev.txt") == []


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        # kubernetes-validate still pulls PyYAML in: a declaration is missing all the same
        ("pyyaml", "tests/integration/test_manifests.py: imports yaml (from pyyaml), not in requirements-dev.txt"),
        (
            "kubernetes-validate",
            "deploy/ci/check_manifests.py: imports kubernetes_validate (from kubernetes-validate), not in requirements-dev.txt",
        ),
    ],
)
def test_a_missing_requirement_is_named(tmp_path: Path, removed: str, expected: str) -> None:
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    kept = [line for line in dev if not canonical(line).startswith(removed + "=")]
    assert len(kept) == len(dev) - 1, f"requirements-dev.txt pins {removed}"
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    (tmp_path / "requirements-dev.txt").write_text("\n".join(kept) + "\n")
    assert expected in undeclared_imports(tmp_path / "requirements-dev.txt")
