"""The end-state oracle shared by the fault and reliability suites, and its own checks.

Every fault scenario ends with the same question: do the emulated targets hold what the
source says, once, and nothing else? Asking the product ("a dry run plans nothing") is
necessary but not enough, because a product bug can hide in both the writer and the
planner. So the oracle reads the sandbox's SQLite files directly:

* ``target_state(dir)``: the SafetyAmp emulator's records in a canonical form, keyed by
  each collection's business key, with ids replaced by the key of what they point to
  (a user's home site is its site's ``external_code``, not 2014) and server-made fields
  (ids, timestamps) left out. Two sandboxes seeded alike and synced to the end have
  equal canonical states whatever order or retries got them there.
* ``clean_state(size)``: the canonical state a fault-free sandbox of that size reaches
  (computed once per size per session): the expected end state of a faulted run.
* ``duplicates(dir)``: business keys and unique fields held by more than one record.
* ``source_employees(dir)``: bPREH read with plain SQL, for checks against the source.

Helpers live in a ``test_faults_*`` module (the suite's naming) and are imported by the
other modules; the tests at the bottom prove the oracle sees what it must.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BatchRunner, run_counts, sandbox_sql, writes

SAFETYAMP_SYNCS = "departments,jobs,titles,employees,vehicles"
"""The syncs that write to SafetyAmp (SANDBOX_FAULTS covers safetyamp, samsara, graph)."""

VOLATILE = {"id", "created_at", "updated_at", "depth"}
UNIQUE_FIELDS = {
    "users": ("emp_id", "email", "mobile_phone"),
    "sites": ("external_code",),
    "site_clusters": ("external_code",),
    "user_titles": ("name",),
    "assets": ("code",),
}


def _norm(value: Any) -> str:
    return str(value).strip().lower()


def _raw(sandbox_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every SafetyAmp record of the sandbox, read-only, without the emulator's help."""
    conn = sqlite3.connect(f"file:{sandbox_dir / 'targets.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        out: dict[str, list[dict[str, Any]]] = {}
        for collection, data in conn.execute(
            "SELECT collection, data FROM records WHERE service = 'safetyamp' ORDER BY collection, rid"
        ):
            out.setdefault(collection, []).append(json.loads(data))
        return out
    finally:
        conn.close()


def duplicates(sandbox_dir: Path) -> dict[str, list[str]]:
    """``{"users.emp_id": ["1234"], ...}``: values held by more than one record."""
    raw = _raw(sandbox_dir)
    found: dict[str, list[str]] = {}
    for collection, fields in UNIQUE_FIELDS.items():
        for field in fields:
            values = [_norm(r[field]) for r in raw.get(collection, []) if r.get(field) not in (None, "")]
            dupes = sorted(v for v, n in Counter(values).items() if n > 1)
            if dupes:
                found[f"{collection}.{field}"] = dupes
    return found


def target_state(sandbox_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The SafetyAmp emulator's records in canonical form (see the module docstring)."""
    raw = _raw(sandbox_dir)
    by_id = {c: {r["id"]: r for r in rows} for c, rows in raw.items()}

    def ref(collection: str, rid: Any, field: str) -> Any:
        row = by_id.get(collection, {}).get(rid)
        return None if row is None else row.get(field)

    refs = {
        "home_site_id": ("sites", "external_code"),
        "site_id": ("sites", "external_code"),
        "cluster_id": ("site_clusters", "external_code"),
        "parent_cluster_id": ("site_clusters", "external_code"),
        "current_title_id": ("user_titles", "name"),
        "asset_type_id": ("asset_types", "name"),
        "current_user_id": ("users", "emp_id"),
    }
    keys = {
        "users": "emp_id",
        "sites": "external_code",
        "site_clusters": "external_code",
        "user_titles": "name",
        "assets": "code",
    }
    state: dict[str, dict[str, dict[str, Any]]] = {}
    for collection, key_field in keys.items():
        out: dict[str, dict[str, Any]] = {}
        for row in raw.get(collection, []):
            canon: dict[str, Any] = {}
            for field, value in row.items():
                if field in VOLATILE:
                    continue
                if field in refs:
                    value = ref(*refs[field][:1], value, refs[field][1]) if value is not None else None
                elif field == "roles" and isinstance(value, list):
                    value = sorted(str(ref("roles", r.get("id"), "name")) for r in value if isinstance(r, dict))
                canon[field] = value
            key = _norm(row.get(key_field)) if row.get(key_field) is not None else f"(no key) id={row.get('id')}"
            out[key] = canon
        state[collection] = out
    return state


def state_diff(got: dict[str, Any], want: dict[str, Any], limit: int = 8) -> list[str]:
    """Human-readable differences between two canonical states (empty when equal)."""
    problems: list[str] = []
    for collection in sorted(set(got) | set(want)):
        g, w = got.get(collection, {}), want.get(collection, {})
        for key in sorted(set(w) - set(g)):
            problems.append(f"{collection}: {key} missing")
        for key in sorted(set(g) - set(w)):
            problems.append(f"{collection}: {key} unexpected")
        for key in sorted(set(g) & set(w)):
            if g[key] != w[key]:
                fields = sorted(f for f in set(g[key]) | set(w[key]) if g[key].get(f) != w[key].get(f))
                problems.append(
                    f"{collection}: {key} differs in "
                    + ", ".join(f"{f}={g[key].get(f)!r} (want {w[key].get(f)!r})" for f in fields)
                )
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


def source_employees(sandbox_dir: Path, company: int = 1) -> list[dict[str, Any]]:
    """bPREH rows of ``company`` read with plain SQL (not the product's adapter)."""
    conn = sqlite3.connect(f"file:{sandbox_dir / 'viewpoint.sqlite'}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute('SELECT * FROM "bPREH" WHERE "PRCo" = ? ORDER BY "Employee"', (company,))]
    finally:
        conn.close()


def vista_active(row: dict[str, Any]) -> bool:
    """Vista's rule, restated independently of sync/sync_titles.py."""
    if str(row.get("ActiveYN") or "").strip().upper() != "Y":
        return False
    term, rehire = row.get("TermDate"), row.get("RecentRehireDate")
    return term is None or (rehire is not None and str(rehire) >= str(term))


def terminate_employees(sandbox_dir: Path, fraction: float, *, last: bool = False) -> list[str]:
    """Terminate ``fraction`` of the active employees in bPREH with plain SQL, as an HR
    system would write it (the lowest numbers, or the highest with ``last``); their numbers."""
    active = [r for r in source_employees(sandbox_dir) if vista_active(r)]
    n = int(len(active) * fraction)
    chosen = [r["Employee"] for r in (active[-n:] if last and n else active[:n])]
    sandbox_sql(
        sandbox_dir,
        'UPDATE "bPREH" SET "ActiveYN" = \'N\', "TermDate" = date(\'now\', \'-1 day\'), "RecentRehireDate" = NULL '
        'WHERE "PRCo" = 1 AND "Employee" = ?',
        [(e,) for e in chosen],
    )
    return [str(e) for e in chosen]


def pending(batch: BatchRunner, **env: str) -> int:
    """Writes a dry run would still send (0 = converged, by the product's own plan). A dry
    run that failed (breaker open, source down) proves nothing, so it fails the test."""
    plan = batch.run("--dry-run", **env)
    failed = [r for r in plan["runs"] if r["status"] == "failed"]
    assert not failed, f"the dry run itself failed: {failed}"
    return run_counts(plan, "created") + run_counts(plan, "updated") + run_counts(plan, "deactivated")


def error_entries(output: Path, sync: str) -> list[dict[str, Any]]:
    """Every entry of every errors file of ``sync`` under ``output``."""
    entries: list[dict[str, Any]] = []
    for path in sorted((output / "errors").glob(f"{sync}-*.json")):
        entries.extend(json.loads(path.read_text())["errors"])
    return entries


def log_lines(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run (text lines, e.g. warnings from libraries, skipped)."""
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


_CLEAN: dict[int, tuple[Path, dict[str, Any]]] = {}


def clean_state(tmp_factory: pytest.TempPathFactory, size: int) -> dict[str, Any]:
    """Canonical end state of a fault-free sandbox of ``size`` (same SANDBOX_SEED as
    BatchRunner, so the same source data), computed once per size per session."""
    if size not in _CLEAN:
        root = tmp_factory.mktemp(f"clean-{size}")
        twin = BatchRunner(root, size=size)
        twin.run(expect=(0,), SYNC_TYPES=SAFETYAMP_SYNCS)
        assert pending(twin, SYNC_TYPES=SAFETYAMP_SYNCS) == 0, "the fault-free twin did not converge in one run"
        _CLEAN[size] = (twin.dir, target_state(twin.dir))
    return _CLEAN[size][1]


@contextmanager
def copied_sandbox(src: Path, dst: Path) -> Iterator[Path]:
    """A copy of a sandbox folder (to damage it without touching the original)."""
    shutil.copytree(src, dst)
    yield dst


pytestmark = pytest.mark.e2e


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_oracle_sees_equal_states_equal_and_a_duplicate_as_one(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    want = clean_state(tmp_path_factory, 40)
    batch = BatchRunner(tmp_path, size=40)
    summary = batch.run(SYNC_TYPES=SAFETYAMP_SYNCS)
    assert writes(summary) > 0
    assert state_diff(target_state(batch.dir), want) == []
    assert duplicates(batch.dir) == {}
    # A second user with the same emp_id (what a lost-response bug would leave behind),
    # written straight into the emulator's store: the oracle must flag it.
    from sandbox.store import open_store

    st = open_store(batch.dir)
    try:
        user = dict(st.all("safetyamp", "users")[0])
        user.update(id=99_999, email="dupe@sandbox-co.com", mobile_phone=None)
        with st.atomic() as conn:
            conn.execute("DELETE FROM uniq WHERE service='safetyamp' AND collection='users' AND field='emp_id'")
        st.insert("safetyamp", "users", user)
    finally:
        st.close()
    assert list(duplicates(batch.dir)) == ["users.emp_id"]
    assert state_diff(target_state(batch.dir), want) != []
