"""A real small disk for tests: a tmpfs of a few KB mounted on a test folder.

A full disk is the fault that matters (ENOSPC in the middle of a run); RLIMIT_FSIZE
only imitates it per file and kills the process with SIGXFSZ unless that is ignored.
Mounting needs root (CAP_SYS_ADMIN): CI runs as root, so there a mount that fails is a
test failure; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size_kb: int, *, used_kb: int = 0) -> Iterator[Path]:
    """Mount a ``size_kb`` tmpfs on ``path`` with ``used_kb`` already taken by a filler
    file (as an almost full volume would be); unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs on {path} (needs root): {proc.stderr.strip() or proc.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        if used_kb:
            (path / "filler").write_bytes(b"\0" * (used_kb * 1024))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
