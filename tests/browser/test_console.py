"""The operator console in a real browser, as a new operator meets it: the daemon
(``python main.py --sandbox``) with CONSOLE_TOKEN set, Debian's Chromium at 1366x768, and
every request each page makes logged and held to the daemon's origin (conftest.py).

The sandbox is seeded before the daemon starts, with two SafetyAmp users made by hand
that already hold the e-mail of two employees: SafetyAmp refuses to create those (e-mail
taken), so the first cycle leaves real entries in the failed-records queue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.support import (
    CONSOLE_TOKEN,
    ConsoleDaemon,
    RequestLog,
    accept_confirmations,
    login,
    plant_email_conflicts,
    seed,
    store,
    wait_for,
    wait_job_done,
)

SYNCS = {"departments", "jobs", "titles", "employees", "vehicles", "rosters"}
CSP = "default-src 'self'"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDaemon]:
    daemon = ConsoleDaemon(tmp_path_factory.mktemp("console"))
    seed(daemon)
    daemon.conflicts = plant_email_conflicts(daemon, 3)  # type: ignore[attr-defined]
    with daemon.running():
        yield daemon


@pytest.fixture
def operator(context: tuple[Any, RequestLog]) -> Any:
    """A signed-in operator's page."""
    ctx, _ = context
    page = ctx.new_page()
    login(page)
    accept_confirmations(page)
    return page


def sync_rows(page: Any) -> dict[str, str]:
    rows = page.get_by_test_id("sync-row")
    return {rows.nth(i).get_attribute("data-sync"): rows.nth(i).get_attribute("data-state") for i in range(rows.count())}


# ------------------------------------------------------------------------------- sign-in
def test_sign_in_with_the_token_and_see_every_sync(context: tuple[Any, RequestLog], console: ConsoleDaemon) -> None:
    ctx, _ = context
    page = ctx.new_page()
    page.goto("/console/")
    assert "/console/login" in page.url, "without a session the console sends you to the sign-in page"
    assert "employees" not in page.content(), "no data before sign-in"

    page.get_by_label("Console password").fill("not-the-token-" + "x" * 30)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_test_id("login-error").is_visible()
    assert page.get_by_test_id("who").count() == 0 and "employees" not in page.content(), "a wrong token gets nothing"

    page.get_by_label("Console password").fill(CONSOLE_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")
    assert set(sync_rows(page)) == SYNCS
    for name in SYNCS:
        assert page.locator(f"#sync-{name}").get_by_text("not run yet").count() == 0, f"{name} shows no last run"
    assert page.get_by_test_id("who").get_attribute("data-role") == "operator"
    session = [c for c in ctx.cookies() if c["httpOnly"]]
    assert session and all(c["sameSite"] == "Strict" for c in session), ctx.cookies()
    assert CONSOLE_TOKEN not in json.dumps(ctx.cookies()) and CONSOLE_TOKEN not in page.content()


# ---------------------------------------------------------------------------- run history
def test_open_a_runs_change_log_and_its_rejected_records(operator: Any, console: ConsoleDaemon) -> None:
    page = operator
    page.get_by_test_id("nav-runs").click()
    page.locator("#runs-tab-employees").click()
    first = page.get_by_test_id("run-row").last  # the first cycle: every employee created
    assert first.count() == 1, "the employees run of the first cycle is in the history"
    first.get_by_test_id("run-link").click()
    changes = page.get_by_test_id("change")
    assert changes.count() > 0
    table = page.get_by_test_id("changes-table")
    assert table.get_by_text("email", exact=True).count() > 0, "field-level detail: the e-mail field"
    assert table.get_by_role("columnheader", name="Before").count() == 1
    assert table.get_by_role("columnheader", name="After").count() == 1

    page.get_by_test_id("tab-rejected").click()
    rejected = page.get_by_test_id("rejected")
    assert rejected.count() > 0
    for i in range(rejected.count()):
        cells = rejected.nth(i).locator("td")
        assert cells.nth(0).inner_text().strip() and cells.nth(1).inner_text().strip(), "each has a kind and a reason"
    reasons = page.get_by_test_id("rejected-table").inner_text()
    assert "rejected" in reasons, "records the validation refused"
    refused = [k for k in console.conflicts if page.locator(f"[data-testid=rejected][data-key='{k}']").count()]  # type: ignore[attr-defined]
    assert refused, "an employee whose e-mail SafetyAmp holds already is listed"
    for key in refused:
        row = page.locator(f"[data-testid=rejected][data-key='{key}']")
        assert "already been taken" in row.inner_text(), f"SafetyAmp's answer for {key}"


# ------------------------------------------------------------------------------- run now
def test_run_one_sync_now_and_watch_it_finish(operator: Any, console: ConsoleDaemon) -> None:
    before = console.health()["last_runs"]["departments"]["run_id"]
    page = operator
    page.get_by_test_id("nav-actions").click()
    page.get_by_test_id("run-sync").select_option("departments")
    page.get_by_test_id("run-now").click()
    assert wait_job_done(page) == "done", page.get_by_test_id("job-state").inner_text()
    after = wait_for(lambda: (r := console.health()["last_runs"]["departments"]["run_id"]) != before and r, 30)
    assert after, "the departments sync did not run again"
    page.get_by_test_id("nav-overview").click()
    assert page.locator("#sync-departments").get_by_text("success").count() > 0


# ------------------------------------------------------------------------- failed records
def test_retry_a_failed_record(operator: Any, console: ConsoleDaemon) -> None:
    page = operator
    page.goto("/console/failed?sync=employees")
    rows = page.get_by_test_id("failed-row")
    keys = [rows.nth(i).get_attribute("data-key") for i in range(rows.count())]
    assert set(console.conflicts) & set(keys), f"planted conflicts {console.conflicts} not in the queue {keys}"  # type: ignore[attr-defined]
    key = next(k for k in keys if k in console.conflicts)  # type: ignore[attr-defined]
    row = page.locator(f"[data-testid=failed-row][data-key='{key}']")
    assert row.get_attribute("data-status") != "due"
    assert "taken" in row.inner_text().lower() or "email" in row.inner_text().lower(), row.inner_text()
    row.get_by_role("button", name=f"Retry employees {key}").click()
    assert "next run" in page.get_by_test_id("notice").inner_text()
    assert page.locator(f"[data-testid=failed-row][data-key='{key}']").get_attribute("data-status") == "due"
    page.get_by_test_id("nav-audit").click()
    assert page.get_by_text(f"record/employees/{key}").count() > 0, "the retry is in the audit log"


# ------------------------------------------------------------------------ pause / resume
def test_pause_a_sync_and_a_batch_run_skips_it(operator: Any, console: ConsoleDaemon) -> None:
    page = operator
    page.get_by_test_id("nav-actions").click()
    page.locator("#reason-vehicles").fill("fleet cut-over this week")
    page.locator("#pause-vehicles").click()
    row = page.locator("[data-testid=pause-row][data-sync=vehicles]")
    assert row.get_attribute("data-paused") == "yes"
    assert (console.health().get("paused") or {}).get("vehicles"), "/health shows the pause"

    proc = console.cli("--only", "vehicles", "--json")
    run = json.loads(proc.stdout.strip().splitlines()[-1])["runs"][0]
    assert run["sync"] == "vehicles" and run["status"] == "skipped", run
    assert "paused by" in json.dumps(run) and "fleet cut-over" in json.dumps(run), run

    page.reload()
    page.locator("#resume-vehicles").click()
    assert page.locator("[data-testid=pause-row][data-sync=vehicles]").get_attribute("data-paused") == "no"
    proc = console.cli("--only", "vehicles", "--json")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["runs"][0]["status"] in ("success", "partial")


# ------------------------------------------------------------------------------- preview
def test_preview_shows_the_plan_and_sends_nothing(operator: Any, console: ConsoleDaemon) -> None:
    st = store(console)
    try:
        user = next(u for u in st.all("safetyamp", "users") if u.get("emp_id") and u.get("system_access") == 1)
        st.replace("safetyamp", "users", int(user["id"]), {**user, "last_name": "Changed-By-Hand"})
        mark = st.last_request_id()
    finally:
        st.close()
    page = operator
    page.get_by_test_id("nav-actions").click()
    page.get_by_test_id("run-sync").select_option("employees")
    page.get_by_test_id("preview").click()
    assert wait_job_done(page) == "done", page.get_by_test_id("job-state").inner_text()
    result = page.get_by_test_id("preview-result").inner_text()
    assert "Changed-By-Hand" in result and user["last_name"] in result, result[:1500]
    st = store(console)
    try:
        sent = [r for r in st.requests("safetyamp", since_id=mark) if r["method"] != "GET"]
    finally:
        st.close()
    assert sent == [], f"a preview sent writes: {sent}"


# ----------------------------------------------------------------------------- security
def test_a_post_without_the_csrf_token_is_refused(operator: Any, console: ConsoleDaemon) -> None:
    page = operator
    page.get_by_test_id("nav-actions").click()
    status = page.evaluate(
        """async () => (await fetch('/console/actions/pause', {method: 'POST', credentials: 'same-origin',
              body: new URLSearchParams({sync: 'jobs', reason: 'no token'})})).status"""
    )
    assert status in (400, 403), status
    forged = page.evaluate(
        """async () => (await fetch('/console/actions/pause', {method: 'POST', credentials: 'same-origin',
              body: new URLSearchParams({sync: 'jobs', csrf_token: 'forged', reason: 'bad token'})})).status"""
    )
    assert forged in (400, 403), forged
    assert not (console.health().get("paused") or {}).get("jobs")
    page.reload()
    assert page.locator("[data-testid=pause-row][data-sync=jobs]").get_attribute("data-paused") == "no"


def test_no_request_leaves_the_origin_on_any_page(context: tuple[Any, RequestLog], console: ConsoleDaemon) -> None:
    ctx, log = context
    page = ctx.new_page()
    documents: list[Any] = []
    page.on("response", lambda r: documents.append(r) if r.request.resource_type == "document" else None)
    login(page)
    for nav in ("overview", "runs", "failed", "lookup", "actions", "config", "audit"):
        page.get_by_test_id(f"nav-{nav}").click()
        page.wait_for_load_state("networkidle")
    page.goto("/console/runs?sync=employees")
    page.get_by_test_id("run-link").first.click()
    page.wait_for_timeout(6000)  # the overview's auto-refresh and any late loads happen meanwhile
    assert len(documents) >= 9
    for response in documents:
        if "/console" in response.url:
            assert CSP in (response.headers.get("content-security-policy") or ""), response.url
    assert log.requests and not log.foreign(), log.foreign()
    kinds = {re.sub(r"\?.*", "", u).rsplit(".", 1)[-1] for _, u in log.requests if "/static/" in u}
    assert {"css", "js"} <= kinds, "the console's own assets load from the daemon"


# ------------------------------------------------------------------------------ keyboard
def test_tab_through_the_overview_and_run_a_sync_with_the_keyboard_only(
    context: tuple[Any, RequestLog], console: ConsoleDaemon
) -> None:
    ctx, _ = context
    page = ctx.new_page()
    login(page)
    before = console.health()["last_runs"]["titles"]["run_id"]

    def focused() -> dict[str, Any]:
        return dict(
            page.evaluate(
                """() => { const e = document.activeElement; const s = getComputedStyle(e);
                   return {tag: e.tagName, id: e.id, text: (e.innerText || e.value || '').trim(),
                           label: e.getAttribute('aria-label') || (e.labels && e.labels[0] ? e.labels[0].innerText : ''),
                           outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0 || s.boxShadow !== 'none'}; }"""
            )
        )

    page.bring_to_front()
    seen = []
    for _ in range(60):  # through every control of the page, until the focus leaves it
        page.keyboard.press("Tab")
        now = focused()
        if now["tag"] == "BODY":
            break
        seen.append(now)
        assert now["text"] or now["label"], f"a control without a name has the focus: {now}"
        assert now["outline"], f"the focus is not visible on {now}"
    assert seen and now["tag"] == "BODY", "Tab went through the whole page"
    names = [f["text"] for f in seen]
    assert names[0].startswith("Skip to"), names[:3]
    for label in ("Overview", "Runs", "Failed records", "Record lookup", "Actions", "Configuration", "Audit log"):
        assert label in names, f"{label} is not reachable by Tab: {names}"
    assert names.index("Runs") < names.index("Actions") < names.index("Audit log"), "focus follows the reading order"
    assert any(n in SYNCS for n in names), "the sync rows' links are reachable by Tab"

    # Now act with the keyboard only: to Actions, choose titles, Run now.
    page.goto("/console/")
    for _ in range(20):
        page.keyboard.press("Tab")
        if focused()["text"] == "Actions":
            break
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/actions")
    for _ in range(40):
        page.keyboard.press("Tab")
        if focused()["id"] == "run-sync":
            break
    assert focused()["id"] == "run-sync"
    for _ in range(10):
        if page.get_by_test_id("run-sync").input_value() == "titles":
            break
        page.keyboard.press("ArrowDown")
    assert page.get_by_test_id("run-sync").input_value() == "titles"
    page.keyboard.press("Tab")
    assert focused()["id"] == "run-now"
    page.keyboard.press("Enter")
    assert wait_job_done(page) == "done"
    assert wait_for(lambda: console.health()["last_runs"]["titles"]["run_id"] != before, 30), "titles did not run"
