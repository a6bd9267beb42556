"""Viewpoint jobs (bJCJM + bJCCM.Department) -> SafetyAmp sites.

Key: ``external_code`` = Job, trimmed (Vista job codes carry mask padding). Rules:
- open jobs (JOB_OPEN_STATUSES, default 1) are created/updated as active sites, in the
  cluster of their contract's department (bJCCM.Department matched to a department
  cluster's external_code), else in the root cluster;
- closed jobs (JOB_CLOSED_STATUSES, default 3 = hard-closed) archive their site
  (``active: 0``) if it exists; a closed job is never created;
- other statuses (2 soft-closed, 0 pending) leave an existing site as it is.
Missing address parts are left unmanaged instead of invented ("Unknown", "00000").
Job, Description and the address follow the text policy (utils/data_validator.py): a
refused character rejects the job with the reason; a line break becomes a space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.base import BaseSync, Desired, Rejected, fingerprint
from utils.data_validator import InvalidValue, clean_code, clean_text, shown_key


class JobSync(BaseSync):
    name = "jobs"
    collection = "sites"
    key_field = "external_code"
    deactivation = {"active": 0}

    def inputs(self) -> dict[str, Callable[[], Any]]:
        return {"jobs": self.viewpoint.jobs}

    def load(self) -> Desired:
        rows = self.ctx.source("jobs", self.viewpoint.jobs)
        clusters = {
            str(c.get("external_code")).strip(): c.get("id")
            for c in self.ctx.targets.get("site_clusters")
            if c.get("external_code")
        }
        root_id = clusters.get(self.settings.department_root_cluster_code)
        out = Desired(source_count=len(rows))
        open_statuses = set(self.settings.job_open_statuses)
        closed_statuses = set(self.settings.job_closed_statuses)
        for row in rows:
            raw = row.get("Job")
            job = raw.strip() if isinstance(raw, str) else "" if raw is None else shown_key(raw)
            if not job:
                out.rejected.append(Rejected("(blank)", "bJCJM row without Job", ("Job",)))
                continue
            status = row.get("JobStatus")
            if status in closed_statuses:
                # Archiving sends no text: matched as the target holds it, whatever it is.
                out.deactivate.add(job)
                continue
            if status not in open_statuses:
                continue
            try:
                code = clean_code(raw, "Job")
                desc = clean_text(row.get("Description"), 60, "Description")
                street = clean_text(row.get("ShipAddress"), 100, "ShipAddress")
                city = clean_text(row.get("ShipCity"), 60, "ShipCity")
                state = clean_text(row.get("ShipState"), 4, "ShipState")
                zip_code = clean_text(row.get("ShipZip"), 12, "ShipZip")
            except InvalidValue as exc:
                out.rejected.append(Rejected(shown_key(job), exc.reason, (exc.field,) if exc.field else (), {"Job": job}))
                continue
            assert code is not None
            job = code
            dept = str(row.get("Department") or "").strip()
            cluster_id = clusters.get(dept) or root_id
            record: dict[str, Any] = {
                "name": f"{job} - {desc}" if desc else job,
                "external_code": job,
                "cluster_id": cluster_id,
                "street": street,
                "city": city,
                "state": state,
                "zip_code": zip_code,
                "active": 1,
            }
            out.records[job] = record
            out.fingerprints[job] = fingerprint(row)
        return out

    def create_payload(self, action):  # type: ignore[no-untyped-def]
        payload = dict(action.payload)
        payload.setdefault("timezone", self.settings.safetyamp_timezone)
        return payload
