"""sync_batch.py with tenants, as an operator runs it: --sandbox --tenants N, --tenant all
with --only on a fleet of companies and districts, and the commands it suggests naming
the tenant (found by the outside review of issue 13)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.redis_server import REDIS_URL, delete_prefix, require_real_redis

ROOT = Path(__file__).resolve().parents[2]


def run(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "sync_batch.py", "--sandbox", "--sandbox-dir", str(tmp / "sb"), "--sandbox-size", "20",
           "--tenants", "3", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_tenant_all_only_skips_tenants_without_that_sync_and_advice_names_the_tenant(tmp_path: Path) -> None:
    import os

    prefix = f"test-tenants-batch-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "REDIS_URL": require_real_redis(REDIS_URL), "REDIS_PREFIX": prefix,
           "OUTPUT_DIR": str(tmp_path / "out"), "LOG_LEVEL": "WARNING", "SANDBOX_SEED": "7"}  # fmt: skip
    try:
        done = run(tmp_path, env, "--only", "departments", "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        statuses = {t: v["status"] for t, v in summary["tenants"].items()}
        assert statuses == {"co-01": "success", "co-02": "success", "sd-03": "skipped"}, summary
        assert "not enabled for this tenant" in summary["tenants"]["sd-03"]["error"]

        state = json.loads((tmp_path / "sb" / "tenants" / "tenants.json").read_text())
        assert state["tenants"]["co-01"]["kind"] == "company"
        # An employee of co-01 whose name Vista lost: refused by validation, with advice.
        vista = sqlite3.connect(tmp_path / "sb" / "tenants" / "accounts" / "co-01" / "viewpoint.sqlite")
        with vista:
            active = """SELECT MIN("Employee") FROM "bPREH" WHERE "PRCo" = 1 AND "ActiveYN" = 'Y' AND "TermDate" IS NULL"""
            key = str(vista.execute(active).fetchone()[0])
            vista.execute('UPDATE "bPREH" SET "FirstName" = \'\', "LastName" = \'\' WHERE "PRCo" = 1 AND "Employee" = ?', (key,))
        vista.close()
        advice = run(tmp_path, env, "--tenant", "co-01", "diagnose", "employees", key)
        assert advice.returncode in (0, 1), advice.stderr[-2000:]
        commands = [line for line in advice.stdout.splitlines() if "python sync_batch.py" in line]
        assert commands and all("--tenant co-01" in line for line in commands), advice.stdout
    finally:
        delete_prefix(REDIS_URL, prefix)
