"""The import contracts of .importlinter (issue 12: the layers stay as docs/architecture.md
draws them), and the two entry points, which import-linter cannot hold (it reads packages;
main.py and sync_batch.py are modules): main.py does not import sync_batch, and nothing
in the product imports either of them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("console", "config", "sync", "services", "utils")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_import_contracts_hold() -> None:
    # A process of its own, without a cache in the tree: what CI's fresh clone sees.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout, done.stdout[-2000:]


def test_main_does_not_import_sync_batch() -> None:
    assert "sync_batch" not in imported_modules(ROOT / "main.py")


@pytest.mark.parametrize("package", PRODUCT)
def test_no_product_module_imports_an_entry_point(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in ("main", "sync_batch")
    ]
    assert offenders == []
