"""Viewpoint PR departments (bPRDP) -> SafetyAmp site clusters.

Key: ``external_code`` = PRDept (never the display name, so renaming a department in
Vista renames the cluster instead of creating a second one). Every department cluster
hangs under one root cluster (DEPARTMENT_ROOT_CLUSTER_CODE), created if missing.
Departments are never deactivated: bPRDP has no status column to say one is gone.
PRDept and Description follow the text policy (utils/data_validator.py): a code with a
control, invisible or separator character, or white space other than single spaces, is
refused with the reason; so is such a description (a line break in it becomes a space).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.base import BaseSync, Desired, Rejected, fingerprint
from utils.data_validator import InvalidValue, clean_code, clean_text, shown_key


class DepartmentSync(BaseSync):
    name = "departments"
    collection = "site_clusters"
    key_field = "external_code"

    def root(self) -> dict[str, Any] | None:
        code = self.settings.department_root_cluster_code
        for row in self.ctx.targets.get("site_clusters"):
            if str(row.get("external_code") or "").strip() == code:
                return row
        return None

    def prepare(self) -> list[dict[str, Any]]:
        if self.root() is not None or self.ctx.dry_run:
            return []
        code = self.settings.department_root_cluster_code
        created = self._create({"name": self.settings.department_root_cluster_name, "external_code": code}, code)
        self.ctx.targets.put("site_clusters", created)
        return [created]

    def current(self) -> dict[str, Any]:
        code = self.settings.department_root_cluster_code
        return {k: v for k, v in super().current().items() if k != code}

    def inputs(self) -> dict[str, Callable[[], Any]]:
        return {"departments": self.viewpoint.departments}

    def load(self) -> Desired:
        rows = self.ctx.source("departments", self.viewpoint.departments)
        root = self.root()
        parent_id = root.get("id") if root else None
        out = Desired(source_count=len(rows))
        for row in rows:
            raw = row.get("PRDept")
            try:
                code = clean_code(raw, "PRDept")
            except InvalidValue as exc:
                out.rejected.append(
                    Rejected(shown_key(raw.strip() if isinstance(raw, str) else raw), exc.reason, ("PRDept",), dict(row))
                )
                continue
            if not code:
                out.rejected.append(Rejected("(blank)", "bPRDP row without PRDept", ("PRDept",), dict(row)))
                continue
            if code == self.settings.department_root_cluster_code:
                out.rejected.append(Rejected(code, "PRDept equals DEPARTMENT_ROOT_CLUSTER_CODE; rename one of them", ("PRDept",)))
                continue
            try:
                desc = clean_text(row.get("Description"), 60, "Description") or ""
            except InvalidValue as exc:
                out.rejected.append(Rejected(code, exc.reason, ("Description",)))
                continue
            name = f"{code} - {desc}" if desc else code
            out.records[code] = {"name": name, "external_code": code, "parent_cluster_id": parent_id}
            out.fingerprints[code] = fingerprint(row)
        return out

    def create_payload(self, action):  # type: ignore[no-untyped-def]
        payload = dict(action.payload)
        if payload.get("parent_cluster_id") is None:
            root = self.root()
            if root is not None:
                payload["parent_cluster_id"] = root.get("id")
        payload.setdefault("osha_establishment", 0)
        return payload
