"""Helpers for end-to-end runs: the real CLI in a subprocess against a sandbox folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


class BatchRunner:
    """Runs `python sync_batch.py --sandbox --json` as a user would, in its own process."""

    def __init__(self, tmp: Path, size: int = 120) -> None:
        self.dir = tmp / "sandbox"
        self.output = tmp / "output"
        self.size = size

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "SQL_", "VIEWPOINT_"))
        }
        env.pop("SANDBOX_FAULTS", None)
        env.update({"OUTPUT_DIR": str(self.output), "LOG_FORMAT": "json", "SANDBOX_SEED": "7"})
        env.update(extra)
        return env

    def run(self, *args: str, expect: tuple[int, ...] = (0,), **env: str) -> dict[str, Any]:
        cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(self.dir),
               "--sandbox-size", str(self.size), "--json", *args]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=600)
        assert proc.returncode in expect, f"exit {proc.returncode}\nstdout:{proc.stdout[-2000:]}\nstderr:{proc.stderr[-4000:]}"
        lines = proc.stdout.strip().splitlines()
        assert lines, proc.stderr[-2000:]
        summary = json.loads(lines[-1])
        summary["_stderr"] = proc.stderr
        summary["_exit"] = proc.returncode
        return summary

    def mutate(self, percent: float, seed: int = 11) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "sandbox", "mutate", "--dir", str(self.dir), "--percent", str(percent), "--seed", str(seed)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def store(self):
        from sandbox.store import open_store

        return open_store(self.dir)

    def mark(self) -> int:
        """The id of the last request the emulators logged (count what comes after it)."""
        with self.store() as st:
            return st.last_request_id()

    def requests(self, service: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """The requests the emulators received after request id ``since``."""
        with self.store() as st:
            return st.requests(service, since_id=since)


def writes(summary: dict[str, Any], service: str = "safetyamp") -> int:
    return sum(n for m, n in summary["requests"][service].items() if m != "GET")


def run_counts(summary: dict[str, Any], key: str, syncs: tuple[str, ...] | None = None) -> int:
    return sum(r[key] for r in summary["runs"] if syncs is None or r["sync"] in syncs)


@pytest.fixture
def batch(tmp_path: Path) -> BatchRunner:
    return BatchRunner(tmp_path)
