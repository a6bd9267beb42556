"""Screenshots of every console page for docs/console.md, made from the sandbox.

    python -m tests.browser.screenshots [--out docs/console]

Starts the daemon (``python main.py --sandbox``, 60 employees) with CONSOLE_TOKEN, gives
it the state an operator meets on a real day (two employees SafetyAmp refuses, a third of
the staff leaving at once so the guard holds their deactivation, a paused sync, a record
changed by hand in SafetyAmp), drives the console in Debian's Chromium as an operator
would, and saves one PNG per page at 1366x768 (the viewport the console is built for)
into ``--out``. The same machinery as the browser tests (tests/browser/support.py);
tests/browser/test_screenshots.py checks the committed files match the list below.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.browser.support import (
    ConsoleDaemon,
    accept_confirmations,
    chromium,
    chromium_problem,
    login,
    new_context,
    plant_email_conflicts,
    seed,
    store,
    wait_for,
    wait_job_done,
)

ROOT = Path(__file__).resolve().parents[2]
# file name -> what it shows (docs/console.md shows each one)
PAGES = {
    "login.png": "the sign-in form",
    "overview.png": "the overview",
    "runs.png": "the runs of one sync with the chart",
    "run-changes.png": "one run's change log, field by field",
    "run-rejected.png": "one run's rejected records with reasons",
    "failed.png": "the failed-records queue",
    "lookup.png": "record lookup: the form",
    "lookup-result.png": "record lookup: source, target, verdict and what to do",
    "sync-record.png": "sync this record now: what it sent",
    "actions.png": "actions: run now, preview, pause, held deactivations",
    "preview.png": "a preview of the next run",
    "hold.png": "a held deactivation batch to approve",
    "config.png": "configuration",
    "audit.png": "the audit log",
}


def _shot(page: Any, out: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(out / name))
    print(f"  {name}: {page.url}")


def prepare(daemon: ConsoleDaemon) -> dict[str, Any]:
    """State before the daemon starts: the seed and two e-mails SafetyAmp holds already."""
    seed(daemon)
    return {"conflicts": plant_email_conflicts(daemon, 3)}


def make(out: Path, work: Path) -> None:
    from tests.browser.test_console_guard import terminate

    out.mkdir(parents=True, exist_ok=True)
    daemon = ConsoleDaemon(work, size=60)
    state = prepare(daemon)
    daemon.start()
    try:
        daemon.wait_first_cycle()
        with chromium() as browser:
            ctx, log = new_context(browser, daemon)
            page = ctx.new_page()
            accept_confirmations(page)
            page.goto("/console/login")
            _shot(page, out, "login.png")
            login(page)

            # A day's state: a third of the staff leaves (the guard holds it), a record
            # edited by hand in SafetyAmp (the preview and the lookup show it), a sync paused.
            leavers = set(terminate(daemon, 0.3, last=True))
            page.goto("/console/actions")
            page.get_by_test_id("run-sync").select_option("employees")
            page.get_by_test_id("run-now").click()
            wait_job_done(page)
            wait_for(lambda: daemon.health()["last_runs"]["employees"].get("guard_tripped"), 30)
            st = store(daemon)
            try:
                user = next(
                    u
                    for u in st.all("safetyamp", "users")
                    if u.get("system_access") == 1
                    and str(u.get("emp_id")) not in leavers
                    and u.get("email") not in {None, ""}
                    and str(u.get("emp_id")) not in state["conflicts"]
                )
                st.replace("safetyamp", "users", int(user["id"]), {**user, "mobile_phone": "+15550100199"})
            finally:
                st.close()
            page.goto("/console/actions")
            page.locator("#reason-vehicles").fill("fleet cut-over until Friday")
            page.locator("#pause-vehicles").click()

            page.goto("/console/")
            _shot(page, out, "overview.png")
            page.goto("/console/runs?sync=employees")
            _shot(page, out, "runs.png")
            page.get_by_test_id("run-link").last.click()
            _shot(page, out, "run-changes.png")
            page.get_by_test_id("tab-rejected").click()
            _shot(page, out, "run-rejected.png")
            page.goto("/console/failed?sync=employees")
            _shot(page, out, "failed.png")

            page.goto("/console/actions")
            _shot(page, out, "actions.png")
            page.get_by_test_id("run-sync").select_option("employees")
            page.get_by_test_id("preview").click()
            wait_job_done(page)
            _shot(page, out, "preview.png")

            page.goto("/console/lookup")
            page.get_by_test_id("lookup-sync").select_option("employees")
            page.get_by_test_id("lookup-record").fill(str(user["emp_id"]))
            _shot(page, out, "lookup.png")
            page.get_by_test_id("lookup-submit").click()
            wait_job_done(page)
            _shot(page, out, "lookup-result.png")
            page.get_by_test_id("sync-record").click()
            wait_job_done(page)
            _shot(page, out, "sync-record.png")
            page.goto("/console/holds/employees")
            _shot(page, out, "hold.png")
            page.goto("/console/config")
            _shot(page, out, "config.png")
            page.goto("/console/audit")
            _shot(page, out, "audit.png")
            ctx.close()
            if log.foreign():
                raise RuntimeError(f"requests to other origins: {log.foreign()}")
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.browser.screenshots", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = p.parse_args(argv)
    problem = chromium_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="console-shots-") as work:
        make(args.out, Path(work))
    missing = [name for name in PAGES if not (args.out / name).is_file()]
    if missing:
        print(f"not made: {missing}", file=sys.stderr)
        return 1
    print(f"{len(PAGES)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
