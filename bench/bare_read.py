"""The floor for load + plan: read the source rows and the target JSON, nothing else.

Run by bench/run.py in its own process, with the same settings as a sync run (cwd = the
repository under test). It runs the product's own Viewpoint statements (fetchall, no
mapping) and fetches and parses every page the five SafetyAmp syncs read (SafetyAmp
collections, Graph users, Samsara vehicles and drivers) with a plain requests session
at the largest page sizes; tokens are fetched before the clock starts. Prints one JSON
line: seconds for the SQL part and the target part, rows read, peak RSS.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, timedelta

sys.path.insert(0, os.getcwd())

import requests
from harness import vm_hwm_kb  # bench/ (this script's folder)
from sqlalchemy import create_engine

from config.settings import load_settings
from services.viewpoint_api import ViewpointQueries

SAFETYAMP_PAGE = 1000
GRAPH_PAGE = 999
SAMSARA_PAGE = 512


def main() -> None:
    s = load_settings(dict(os.environ), dotenv_path=None)
    session = requests.Session()
    sa_headers = {
        "Authorization": f"Bearer {s.safetyamp_token.get_secret_value()}",
        "Fqdn": s.safetyamp_fqdn,
        "User-Agent": s.safetyamp_user_agent,
        "Accept": "application/json",
    }
    token = session.post(
        f"{s.ms_graph_authority_url}/{s.ms_graph_tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": s.ms_graph_client_id,
            "client_secret": s.ms_graph_client_secret.get_secret_value(),
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=s.ms_graph_ca_bundle,
        timeout=60,
    ).json()["access_token"]
    engine = create_engine(
        s.viewpoint_db_url.get_secret_value() if hasattr(s.viewpoint_db_url, "get_secret_value") else s.viewpoint_db_url
    )
    q = ViewpointQueries(
        company=s.viewpoint_company,
        jc_company=s.jc_company,
        title_column=s.viewpoint_title_column,
        open_job_statuses=s.job_open_statuses,
    )
    rows: dict[str, int] = {}
    pages: dict[str, int] = {}  # Samsara: how many pages any client needs at the largest limit

    started = time.perf_counter()
    with engine.connect() as conn:
        since = date.today() - timedelta(days=s.job_history_days)
        for name, stmt in (
            ("departments", q.departments()),
            ("jobs", q.jobs()),
            ("employees", q.employees()),
            ("latest_jobs", q.latest_jobs(since)),
        ):
            rows[f"viewpoint.{name}"] = len(conn.execute(stmt).fetchall())
    sql_seconds = time.perf_counter() - started

    started = time.perf_counter()
    body = json.loads(session.get(f"{s.safetyamp_url}/api/site_clusters", headers=sa_headers, timeout=120).content)
    rows["safetyamp.site_clusters"] = len(body["data"])
    for collection in ("sites", "user_titles", "roles", "users", "asset_types", "assets"):
        n, page = 0, 0
        while True:
            resp = session.get(
                f"{s.safetyamp_url}/api/{collection}",
                params={"page": page, "limit": SAFETYAMP_PAGE},
                headers=sa_headers,
                timeout=120,
            )
            data = json.loads(resp.content)["data"]
            n += len(data)
            page += 1
            if len(data) < SAFETYAMP_PAGE:
                break
        rows[f"safetyamp.{collection}"] = n
    url: str | None = f"{s.ms_graph_url}/v1.0/users?$select=id,employeeId,mail,userPrincipalName,accountEnabled&$top={GRAPH_PAGE}"
    n = 0
    while url:
        body = json.loads(
            session.get(url, headers={"Authorization": f"Bearer {token}"}, verify=s.ms_graph_ca_bundle, timeout=120).content
        )
        n += len(body["value"])
        url = body.get("@odata.nextLink")
    rows["graph.users"] = n
    sam_headers = {"Authorization": f"Bearer {s.samsara_api_key.get_secret_value()}", "Accept": "application/json"}
    for path in ("/fleet/vehicles", "/fleet/drivers"):
        params: dict[str, object] = {"limit": SAMSARA_PAGE}
        n = 0
        while True:
            body = json.loads(session.get(f"{s.samsara_url}{path}", params=params, headers=sam_headers, timeout=120).content)
            n += len(body["data"])
            pages[f"samsara{path.replace('/fleet/', '.')}"] = pages.get(f"samsara{path.replace('/fleet/', '.')}", 0) + 1
            if not body["pagination"]["hasNextPage"]:
                break
            params = {"limit": SAMSARA_PAGE, "after": body["pagination"]["endCursor"]}
        rows[f"samsara{path.replace('/fleet/', '.')}"] = n
    target_seconds = time.perf_counter() - started

    print(
        json.dumps(
            {
                "sql_seconds": sql_seconds,
                "target_seconds": target_seconds,
                "seconds": sql_seconds + target_seconds,
                "rows": rows,
                "pages": pages,
                # its own peak: ru_maxrss would include the bench's (bench/harness.py)
                "max_rss_mb": vm_hwm_kb() / 1024.0,
            }
        )
    )


if __name__ == "__main__":
    main()
