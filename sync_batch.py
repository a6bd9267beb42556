#!/usr/bin/env python
"""Run every enabled sync once and exit: for Kubernetes CronJobs and operators.

    python sync_batch.py [--sandbox [--sandbox-dir DIR] [--sandbox-size N] [--tenants N]]
                         [--only a,b] [--dry-run] [--json] [--force] [--full]
    python sync_batch.py [--sandbox ...] failed list [--sync S]
    python sync_batch.py [--sandbox ...] failed retry [--sync S] [--key K]
    python sync_batch.py [--sandbox ...] failed dismiss --sync S --key K
    python sync_batch.py [--sandbox ...] diagnose SYNC KEY
    python sync_batch.py [--sandbox ...] pause SYNC [--reason R] | resume SYNC
    python sync_batch.py [--sandbox ...] holds | approve SYNC DIGEST

With TENANTS_DIR (docs/tenants.md) every form takes ``--tenant ID``; a run also takes
``--tenant all`` (each tenant in turn, each under its own lock, as the daemon's).

Exit codes: 0 success or partial (failed records were recorded), 1 a sync failed as a
whole, 2 configuration error, 0 with status "skipped" when another runner holds the
lock, the sync is quarantined (``--force`` runs it anyway) or an operator paused it
(``resume`` is the way out). With --json the last line
of stdout is the run summary; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import ALL_SYNCS, DEPENDENCIES, Settings, load_settings, logging_options
from sandbox.product import SANDBOX_DIR, add_sandbox_arguments, check_sandbox_arguments
from utils.errors import ConfigurationError
from utils.logger import current_tenant, set_tenant
from utils.scrub import scrub, scrub_value

if TYPE_CHECKING:
    from config.bootstrap import Runtime
    from sync.base import RunResult

log = logging.getLogger("sync_batch")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

REQUEST_SHAPE: dict[str, tuple[str, ...]] = {
    "safetyamp": ("GET", "POST", "PATCH", "PUT", "DELETE"),
    "samsara": ("GET",),
    "graph": ("GET", "POST"),
    "oneroster": (),
    "scim": (),
}


EXIT_CODES = """exit codes:
  0  success or partial (failed records were recorded: `failed list` shows them)
  1  a sync failed as a whole (source unreachable, breaker open, guard tripped)
  2  configuration error (every bad setting is named)
  0  with status "skipped" when another runner holds the lock, a sync is
     quarantined (--force runs it anyway) or paused (`resume` it)"""

RUN_OPTIONS = ("only", "dry_run", "no_progress", "full", "force")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """One parser for the run and the operator commands: ``--help`` lists them all, and
    the global options (--sandbox..., --json) go before or after a command."""
    p = argparse.ArgumentParser(
        prog="sync_batch.py",
        description="Run every enabled sync once and exit; or, with a command, look into failed records.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sandbox_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last line of stdout")
    p.add_argument(
        "--tenant",
        default=None,
        metavar="ID",
        help="with TENANTS_DIR: the tenant to run or look into (`all`: every tenant, for a run)",
    )
    run = p.add_argument_group("run options (without a command)")
    run.add_argument("--only", default=None, help="comma list of syncs to run (dependencies are not added)")
    run.add_argument("--dry-run", action="store_true", help="plan only: print and write the plan, send no write")
    run.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    run.add_argument(
        "--full",
        action="store_true",
        help=(
            "read completely: OneRoster instead of a delta (rosters), a full Graph delta round (employees), "
            "SafetyAmp instead of the target shadow"
        ),
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="run syncs even while they are quarantined (after you fixed the cause; the outcome still counts)",
    )
    # The global options are accepted after the command too ("failed list --json").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sandbox", action="store_true", default=argparse.SUPPRESS, help="use the built-in sandbox")
    common.add_argument("--sandbox-dir", default=argparse.SUPPRESS, help="sandbox state folder")
    common.add_argument("--sandbox-size", type=int, default=argparse.SUPPRESS, help="employees in a newly seeded sandbox")
    common.add_argument("--tenants", type=int, default=argparse.SUPPRESS, metavar="N", help="with --sandbox: N tenant accounts")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    common.add_argument("--tenant", default=argparse.SUPPRESS, metavar="ID", help="with TENANTS_DIR: the tenant")
    sub = p.add_subparsers(dest="command", title="operator commands", metavar="COMMAND")
    failed = sub.add_parser(
        "failed",
        parents=[common],
        help="records that failed: tracked by the failed-record tracker, or refused in the last run",
        description="Records that failed: those the failed-record tracker holds back (with their next "
        "retry) and those the last run of each sync refused or could not write (its errors file).",
    )
    fsub = failed.add_subparsers(dest="action", required=True, metavar="ACTION")
    flist = fsub.add_parser("list", parents=[common], help="list every failed record with its reason")
    flist.add_argument("--sync", default=None, choices=ALL_SYNCS, metavar="SYNC", help="only this sync")
    fretry = fsub.add_parser("retry", parents=[common], help="make tracked records due at the next run")
    fretry.add_argument("--sync", default=None, choices=ALL_SYNCS, metavar="SYNC", help="only this sync")
    fretry.add_argument("--key", default=None, help="only this record")
    fdismiss = fsub.add_parser(
        "dismiss",
        parents=[common],
        help="forget one tracked record (if it still fails, the next run tracks it again from its first attempt)",
    )
    fdismiss.add_argument("--sync", required=True, choices=ALL_SYNCS, help="the record's sync")
    fdismiss.add_argument("--key", required=True, help="the record's key (as `failed list` shows it)")
    diag = sub.add_parser(
        "diagnose",
        parents=[common],
        help="why one record is (not) in sync, and what to do",
        description="Source vs target vs last error for one record, a verdict and what to do. Nothing is written.",
    )
    diag.add_argument("sync", metavar="SYNC", help=", ".join(ALL_SYNCS))
    diag.add_argument(
        "key",
        metavar="KEY",
        help="the record's key: employee number, department or job code, title, Samsara vehicle id; "
        "rosters: a OneRoster sourcedId (user/<id> or class/<id> to choose)",
    )
    pause = sub.add_parser(
        "pause",
        parents=[common],
        help="pause a sync: every runner (daemon, CronJob, this CLI) skips it, --force or not, until resumed",
        description="Pause a sync for every runner sharing this Redis (REDIS_URL, REDIS_PREFIX): the daemon, "
        "CronJobs and sync_batch.py skip it (status skipped, --force included) until `resume`. Audited.",
    )
    pause.add_argument("sync", metavar="SYNC", choices=ALL_SYNCS, help=", ".join(ALL_SYNCS))
    pause.add_argument("--reason", default="", help="why (shown in /health, the console and the skipped runs)")
    resume = sub.add_parser("resume", parents=[common], help="resume a paused sync (audited)")
    resume.add_argument("sync", metavar="SYNC", choices=ALL_SYNCS, help=", ".join(ALL_SYNCS))
    sub.add_parser(
        "holds",
        parents=[common],
        help="deactivation batches the guard held, with the digest to approve each",
        description="Batches of deactivations the guard (DEACTIVATION_GUARD_PERCENT) refused, each with "
        "exactly the records it would deactivate and the digest `approve` takes.",
    )
    approve = sub.add_parser(
        "approve",
        parents=[common],
        help="let the next run deactivate exactly one held batch, once",
        description="Approve the held deactivation batch of SYNC whose digest is DIGEST (see `holds`): the "
        "next run deactivates exactly those records, once. The approval expires after "
        "CONSOLE_APPROVAL_TTL_MINUTES; if the list changes, a new approval is needed. Audited.",
    )
    approve.add_argument("sync", metavar="SYNC", choices=ALL_SYNCS, help=", ".join(ALL_SYNCS))
    approve.add_argument("digest", metavar="DIGEST", help="the held batch's digest, as `holds` shows it")
    args = p.parse_args(argv)
    check_sandbox_arguments(p, args)
    if args.command:
        given = [f"--{o.replace('_', '-')}" for o in RUN_OPTIONS if getattr(args, o)]
        if given:
            p.error(f"{', '.join(given)} belong(s) to a run, not to the {args.command} command")
    return args


def choose_syncs(settings: Settings, only: str | None) -> tuple[tuple[str, ...], list[str]]:
    """The syncs to run, in run order, and warnings about dependencies left out."""
    if only is None:
        return settings.enabled_syncs(), []
    wanted = [s.strip().lower() for s in only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ALL_SYNCS]
    if unknown or not wanted:
        raise ConfigurationError(f"--only: unknown sync(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ALL_SYNCS)}")
    chosen = tuple(s for s in ALL_SYNCS if s in wanted)
    notes = []
    for s in chosen:
        missing = [d for d in DEPENDENCIES[s] if d not in chosen]
        if missing:
            notes.append(f"--only {s}: not running {', '.join(missing)} it depends on; it will use what SafetyAmp already holds")
    return chosen, notes


def request_summary(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for service, shape in REQUEST_SHAPE.items():
        out[service] = dict.fromkeys(shape, 0)
    for service, sent in counts.items():
        out.setdefault(service, {})
        for method, n in sent.items():
            out[service][method] = out[service].get(method, 0) + n
    return out


class Progress:
    """tqdm bars on a terminal, nothing otherwise (CronJob logs stay clean)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, Any] = {}

    def __call__(self, sync: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(sync)
        if bar is None:
            bar = self._bars[sync] = tqdm(total=total, desc=f"{sync:<12}", unit="write", file=sys.stderr, leave=True)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()


def print_plan(results: list[Any], out: Any) -> None:
    for r in results:
        print(f"== {r.sync}: {len(r.plan)} write(s) planned", file=out)
        for step in r.plan:
            changes = ", ".join(f"{f}: {c['before']!r} -> {c['after']!r}" for f, c in step["changes"].items())
            print(scrub(f"  {step['action']:<10} {step['key']}  {changes}"), file=out)


def operator_main(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from utils.logger import configure_logging

    configure_logging(*logging_options(environ, "WARNING", "text"))
    with ExitStack() as stack:
        overrides: dict[str, str] = {}
        if args.sandbox:
            overrides = start_sandbox_for(args, environ, stack)
        try:
            settings = load_settings(environ, overrides=overrides)
            if settings.tenants_dir is not None or args.tenant not in (None, "default"):
                if args.tenant == "all":
                    raise ConfigurationError("--tenant all is for a run; an operator command names one tenant")
                ((tenant, settings),), _problems = select_tenants(settings, args.tenant, environ)
                set_tenant(tenant)  # its logs, and the commands the output suggests, name it
            if args.command == "diagnose":
                settings.check((args.sync,))
        except ConfigurationError as exc:
            for problem in exc.problems:
                print(f"configuration error: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        configure_logging(settings.log_level if "LOG_LEVEL" in environ else "WARNING", "text", secrets=settings.secret_values())
        from config.bootstrap import build_runtime

        syncs = (args.sync,) if args.command == "diagnose" else ()
        try:
            rt = build_runtime(settings, syncs)
        except ConfigurationError as exc:
            for problem in exc.problems:
                print(f"configuration error: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            if args.command == "failed":
                return _failed(rt, args)
            if args.command in ("pause", "resume", "holds", "approve"):
                return _control(rt, args)
            return _diagnose(rt, args)
        finally:
            rt.close()


def failed_records(rt: Any, sync: str | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every record that failed: the tracker's entries (target refusals, with their retry
    schedule) and the records the last run of each sync refused or could not write,
    from its errors file (validation rejections never reach the tracker: only a change
    in the source fixes them). Returns the rows and {sync: errors file read}."""
    from services.event_manager import latest_errors

    rows: list[dict[str, Any]] = [{**r, "source": "tracker"} for r in rt.tracker.list(sync)]
    seen = {(r["sync"], str(r["key"])) for r in rows}
    files: dict[str, str] = {}
    for name in [sync] if sync else ALL_SYNCS:
        found = latest_errors(rt.settings.output_dir, name)
        if found is None:
            continue
        path, document = found
        for entry in document.get("errors") or []:
            if not isinstance(entry, dict) or entry.get("kind") not in ("rejected", "failed"):
                continue  # field_dropped: the record synced without one value
            key = str(entry.get("key"))
            if (name, key) in seen:
                continue
            seen.add((name, key))
            files[name] = str(path)
            rows.append({
                "sync": name,
                "key": key,
                "status": entry["kind"],
                "reason": entry.get("reason", ""),
                "fields": entry.get("fields"),
                "last_failed": entry.get("at"),
                "source": "errors_file",
                "errors_file": str(path),
            })  # fmt: skip
    return rows, files


def _failed(rt: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        rows, files = failed_records(rt, args.sync)
        rows = scrub_value(rows)
        if args.json:
            print(json.dumps(rows, default=str))
            return EXIT_OK
        where = f" for {args.sync}" if args.sync else ""
        if not rows:
            print(f"no failed records{where}: none tracked, and the last run of each sync refused none")
            return EXIT_OK
        print(f"{'sync':<12} {'key':<14} {'status':<12} {'attempts':>8}  {'next retry':<26} reason")
        for r in rows:
            attempts = r.get("attempts", "-") if r["source"] == "tracker" else "-"
            print(
                f"{r['sync']:<12} {r['key']:<14} {r.get('status', ''):<12} {attempts:>8}  "
                f"{r.get('next_retry') or '-':<26} {r.get('reason', '')}"
            )
        print()
        print("status waiting/due/quarantined: held by the failed-record tracker, retried on a schedule")
        if files:
            print("status rejected/failed: refused or not written in the last run (details in its errors file):")
            for name, path in files.items():
                print(f"  {name}: {path}")
        print(f"one record: {command_prefix(args)} diagnose <sync> <key>")
        return EXIT_OK
    if args.action == "dismiss":
        found = rt.tracker.dismiss(args.sync, args.key)
        audit(rt, "dismiss", f"record/{args.sync}/{args.key}", "ok" if found else "not tracked")
        if args.json:
            print(json.dumps({"dismissed": 1 if found else 0}))
        elif found:
            print(f"{args.sync} {args.key}: forgotten (if it still fails, the next run tracks it again)")
        else:
            print(f"{args.sync} {args.key}: not tracked, nothing to dismiss")
        return EXIT_OK
    n = rt.tracker.retry(args.sync, args.key)
    target = f"record/{args.sync}/{args.key}" if args.sync and args.key else f"sync/{args.sync or 'all'}"
    audit(rt, "retry", target, f"{n} released")
    msg = {"released": n}
    print(json.dumps(msg) if args.json else f"{n} record(s) will be retried at the next run")
    return EXIT_OK


def cli_actor() -> str:
    """Who runs this command, for the audit log: cli:<user>@<host>."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # a container user without a passwd entry
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def audit(rt: Any, action: str, target: str, result: str, detail: dict[str, Any] | None = None) -> None:
    control = getattr(rt, "control", None)
    if control is not None:
        control.audit(actor=cli_actor(), role="operator", action=action, target=target, result=result, detail=detail)


def _control(rt: Any, args: argparse.Namespace) -> int:
    """pause, resume, holds, approve: operator state shared through Redis (utils/control.py)."""
    control = rt.control
    if args.command == "holds":
        holds = scrub_value(control.holds())
        if args.json:
            print(json.dumps(holds, default=str))
            return EXIT_OK
        if not holds:
            print("no deactivation batch is held")
            return EXIT_OK
        cmd = command_prefix(args)
        for sync, hold in sorted(holds.items()):
            approval = control.approval(sync)
            print(f"{sync}: {hold['count']} deactivation(s) held since {hold['at']} (run {hold['run_id']})")
            print(f"  why:    {hold['reason']}")
            print(f"  digest: {hold['digest']}")
            if approval is not None and approval.get("digest") == hold["digest"]:
                print(f"  approved by {approval['by']} at {approval['at']}, valid until {approval['expires_at']}")
            else:
                print(f"  approve: {cmd} approve {sync} {hold['digest']}")
            for key in hold["keys"]:
                print(f"    {key}")
        return EXIT_OK
    if not control.reachable():
        # A pause or approval kept only in this process's memory would end with it.
        print("error: Redis (REDIS_URL) does not answer: nothing was changed", file=sys.stderr)
        return EXIT_FAILED
    actor = cli_actor()
    if args.command == "pause":
        control.pause(args.sync, by=actor, reason=args.reason)
        entry = control.paused(args.sync)
        audit(rt, "pause", f"sync/{args.sync}", "ok", {"reason": args.reason} if args.reason else None)
        print(json.dumps({"paused": entry}) if args.json else f"{args.sync} paused: {control.pause_reason(entry or {})}")
        return EXIT_OK
    if args.command == "resume":
        was = control.paused(args.sync)
        control.resume(args.sync, by=actor)
        audit(rt, "resume", f"sync/{args.sync}", "ok" if was else "was not paused")
        if args.json:
            print(json.dumps({"resumed": args.sync, "was_paused": was is not None}))
        else:
            print(f"{args.sync} resumed" if was else f"{args.sync} was not paused")
        return EXIT_OK
    try:
        approval = control.approve(args.sync, args.digest, by=actor)
    except ValueError as exc:
        audit(rt, "approve", f"sync/{args.sync}", f"refused: {exc}", {"digest": args.digest})
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    audit(rt, "approve", f"sync/{args.sync}", "ok", approval)
    if args.json:
        print(json.dumps({"approval": approval}))
    else:
        print(
            f"approved: the next {args.sync} run deactivates exactly these {approval['count']} record(s), once; "
            f"the approval expires at {approval['expires_at']}"
        )
    return EXIT_OK


def _diagnose(rt: Any, args: argparse.Namespace) -> int:
    from sync.diagnose import diagnose, format_report

    try:
        report = scrub_value(diagnose(rt, args.sync, args.key))
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(report, default=str) if args.json else format_report(report))
    return EXIT_OK


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if environ is None else environ)
    args = parse_args(argv)
    if args.command:
        return operator_main(args, environ)
    from utils.logger import configure_logging

    # Only valid values before the settings are validated: a bad LOG_LEVEL is then named
    # with every other problem (exit 2), from the environment as from .env or a secret file.
    configure_logging(*logging_options(environ, "INFO", "text" if sys.stderr.isatty() else "json"))
    with ExitStack() as stack:
        overrides: dict[str, str] = {}
        if args.sandbox:
            log.info("starting sandbox in %s", args.sandbox_dir)
            overrides = start_sandbox_for(args, environ, stack)
        try:
            settings = load_settings(environ, overrides=overrides)
            if settings.tenants_dir is not None or args.tenant not in (None, "default"):
                chosen, problems = select_tenants(settings, args.tenant, environ)
                configure_logging(settings.log_level, _log_format(settings, environ), secrets=settings.secret_values())
                return run_tenants(chosen, problems, args)
            syncs, notes = choose_syncs(settings, args.only)
            settings.check(syncs)
        except ConfigurationError as exc:
            return report_configuration_error(exc.problems, args.json)
        configure_logging(settings.log_level, _log_format(settings, environ), secrets=settings.secret_values())
        for note in notes:
            log.warning(note)
        return run_once(settings, syncs, args)[0]


def _log_format(settings: Settings, environ: dict[str, str]) -> str:
    """JSON lines for machines (CronJob logs); plain text when a person watches a terminal."""
    return settings.log_format if "LOG_FORMAT" in environ else ("text" if sys.stderr.isatty() else "json")


def select_tenants(base: Settings, wanted: str | None, environ: dict[str, str]) -> tuple[list[tuple[str, Settings]], list[str]]:
    """The tenants ``--tenant`` names, with their scoped settings (own Redis prefix and
    output folder), and the problems of the tenant files left out (``all``). Raises
    ConfigurationError when ``--tenant`` is missing or names no valid tenant."""
    from config.tenants import load_tenant_dir, scoped

    if base.tenants_dir is None:
        raise ConfigurationError(f"--tenant {wanted}: TENANTS_DIR is not set (this configuration is the one tenant 'default')")
    load = load_tenant_dir(base.tenants_dir, environ, base=base)
    names = ", ".join(sorted(load.tenants)) or "none valid"
    if not wanted:
        raise ConfigurationError(f"TENANTS_DIR is set: name the tenant with --tenant ID, or --tenant all (tenants: {names})")
    if wanted == "all":
        if not load.tenants and load.problems:
            raise ConfigurationError([str(p) for p in load.all_problems()])
        chosen = sorted(load.tenants.items())
        return [(t, scoped(t, s)) for t, s in chosen], [str(p) for p in load.all_problems()]
    if wanted not in load.tenants:
        own = load.problems.get(f"{wanted}.env")
        if own:
            raise ConfigurationError([str(p) for p in own])
        raise ConfigurationError(f"--tenant {wanted}: no such tenant in {base.tenants_dir} (tenants: {names})")
    return [(wanted, scoped(wanted, load.tenants[wanted]))], []


def run_tenants(chosen: list[tuple[str, Settings]], problems: list[str], args: argparse.Namespace) -> int:
    """A run of each tenant in turn, each under its own cycle lock (the daemon's, so a
    tenant a replica is running is skipped, not run twice). One summary per tenant;
    with --json, the last line holds them all. Exit: the worst of the tenants (2 when a
    tenant file had problems, after the good tenants ran)."""
    from utils.metrics import Metrics

    metrics = Metrics(tenants=True)
    for problem in problems:
        log.error("tenant configuration: %s", problem)
    codes: list[int] = [EXIT_CONFIG] if problems else []
    summaries: dict[str, Any] = {}
    for tenant, settings in chosen:
        set_tenant(tenant)
        try:
            syncs, notes = choose_syncs(settings, args.only)
            if args.only and args.tenant == "all":
                # A fleet mixes kinds: --only departments concerns the companies, not the districts.
                syncs = tuple(s for s in syncs if s in settings.enabled_syncs())
                if not syncs:
                    summaries[tenant] = {"status": "skipped", "error": f"--only {args.only}: not enabled for this tenant"}
                    continue
            settings.check(syncs)
        except ConfigurationError as exc:
            for problem in exc.problems:
                log.error("tenant %s: configuration error: %s", tenant, problem)
            codes.append(EXIT_CONFIG)
            summaries[tenant] = {"status": "failed", "error": "configuration", "problems": exc.problems}
            continue
        for note in notes:
            log.warning(note)
        if not args.json:
            print(f"tenant {tenant}:")
        code, summary = run_once(settings, syncs, args, metrics=metrics.for_tenant(tenant), quiet_json=True)
        codes.append(code)
        summaries[tenant] = summary
    set_tenant(None)
    base = chosen[0][1] if chosen else None
    if base is not None and base.pushgateway_url and not args.dry_run:
        push_metrics(base.pushgateway_url, metrics.registry)
    if args.json:
        print(json.dumps(scrub_value({"tenants": summaries, "problems": problems}), default=str))
    return max(codes, default=EXIT_OK)


def start_sandbox_for(args: argparse.Namespace, environ: dict[str, str], stack: ExitStack) -> dict[str, str]:
    """``--sandbox`` (``--tenants N``: N accounts, and ``--tenant all`` unless one is named)."""
    from sandbox.product import start_for_product

    tenants = getattr(args, "tenants", None)
    if tenants and not getattr(args, "tenant", None) and not args.command:
        args.tenant = "all"
    return start_for_product(stack, Path(args.sandbox_dir), size=args.sandbox_size, tenants=tenants, environ=environ)


def report_configuration_error(problems: list[str], as_json: bool) -> int:
    """Every problem on stderr and, with --json, the summary line on stdout; exit 2."""
    print("configuration error:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    if as_json:
        print(json.dumps({"status": "failed", "error": "configuration", "problems": problems}))
    return EXIT_CONFIG


def push_metrics(url: str, registry: Any, job: str = "safetyamp_sync_batch") -> bool:
    """Push-add (POST) so a failed run does not erase the last success recorded by an
    earlier run (prometheus.io "When to use the Pushgateway"). A push failure is logged,
    not fatal: the sync itself already happened."""
    from prometheus_client import pushadd_to_gateway

    try:
        pushadd_to_gateway(url, job=job, registry=registry, timeout=10)
        return True
    except Exception as exc:
        log.warning("could not push metrics to the Pushgateway: %s", type(exc).__name__)
        return False


def run_once(
    settings: Settings, syncs: tuple[str, ...], args: argparse.Namespace, *, metrics: Any = None, quiet_json: bool = False
) -> tuple[int, dict[str, Any]]:
    """One run of ``syncs``: its exit code and summary (``quiet_json``: the JSON line is
    left to the caller, and the metrics push too)."""
    from config.bootstrap import build_runtime, new_context, new_run_id
    from sync.runner import run_syncs

    try:
        rt = build_runtime(settings, syncs, metrics=metrics)
    except ConfigurationError as exc:
        failed = {"status": "failed", "error": "configuration", "problems": exc.problems}
        if quiet_json:
            for problem in exc.problems:
                log.error("configuration error: %s", problem)
            return EXIT_CONFIG, failed
        return report_configuration_error(exc.problems, args.json), failed
    run_id = new_run_id()
    cpu = time.process_time()
    try:
        progress = Progress(sys.stderr.isatty() and not args.no_progress)
        ctx = new_context(
            rt,
            run_id=run_id,
            dry_run=args.dry_run,
            progress=progress,
            full=getattr(args, "full", False),
            force=syncs if getattr(args, "force", False) else (),
        )
        results = run_syncs(ctx, syncs)
        if not args.dry_run:
            ctx.events.prune(settings.output_retention_days, settings.output_retention_runs)
    except Exception as exc:  # the summary still goes out (stdout needs no disk): every sync failed
        log.exception("run crashed")
        results = _crashed_results(rt, syncs, args, run_id, exc)
    finally:
        rt.close()
    cpu = time.process_time() - cpu
    return _report(settings, args, rt, run_id, results, quiet_json=quiet_json, cpu_seconds=cpu)


def _crashed_results(
    rt: Runtime, syncs: tuple[str, ...], args: argparse.Namespace, run_id: str, exc: Exception
) -> list[RunResult]:
    """Every sync failed with the crash's error, each recorded in the run history."""
    from types import SimpleNamespace

    from sync.base import RunResult
    from sync.runner import record_history

    results = [RunResult(name, status="failed", error=f"internal error: {type(exc).__name__}: {exc}") for name in syncs]
    recorder = SimpleNamespace(
        control=rt.control,
        dry_run=args.dry_run,
        events=SimpleNamespace(run_id=run_id),
        runner_kind="cli",
        forced=frozenset(syncs if getattr(args, "force", False) else ()),
        only_key=None,
    )
    for result in results:  # the run history shows the crash too
        record_history(recorder, result)  # type: ignore[arg-type]
    return results


def _report(
    settings: Settings,
    args: argparse.Namespace,
    rt: Runtime,
    run_id: str,
    results: list[RunResult],
    *,
    quiet_json: bool = False,
    cpu_seconds: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """Push the metrics, print the summary (and a dry run's plan); returns the exit code
    and the summary (``quiet_json``: no push, no JSON line). ``cpu_seconds``: the CPU the
    process spent on the cycle (every thread; not its start-up), as a daemon's cycle
    would cost it."""
    from sync.runner import overall_status

    status = overall_status(results)
    if settings.pushgateway_url and not args.dry_run and not quiet_json:
        push_metrics(settings.pushgateway_url, rt.metrics.registry)
    summary: dict[str, Any] = {
        "status": status,
        "dry_run": bool(args.dry_run),
        "run_id": run_id,
        "runs": [r.summary() for r in results],
        "requests": request_summary(rt.stats.counts()),
        "breakers": {name: b.state for name, b in rt.breakers.items()},
    }
    if cpu_seconds is not None:
        summary["cpu_seconds"] = round(cpu_seconds, 3)
    summary = scrub_value(summary)  # both forms below print it: one scrub for both
    out = sys.stdout
    if args.dry_run:
        print_plan(results, sys.stderr if args.json else out)
    if args.json and not quiet_json:
        print(json.dumps(summary, default=str))
    elif not args.json:
        runs: list[dict[str, Any]] = summary["runs"]  # type: ignore[assignment]
        print_summary(run_id, status, runs, settings, args, out)
    if any(r.configuration_error for r in results):
        code = EXIT_CONFIG  # a setting only the run could check: the same exit as any other
    else:
        code = EXIT_FAILED if status == "failed" else EXIT_OK
    return code, summary


def command_prefix(args: argparse.Namespace) -> str:
    """How this run was started, for the follow-up commands the summary suggests."""
    words = ["python", "sync_batch.py"]
    if getattr(args, "sandbox", False):
        words.append("--sandbox")
        if args.sandbox_dir != SANDBOX_DIR:
            words += ["--sandbox-dir", shlex.quote(str(args.sandbox_dir))]
        if getattr(args, "tenants", None):
            words += ["--tenants", str(args.tenants)]
    tenant = current_tenant()
    if tenant:
        words += ["--tenant", tenant]
    return " ".join(words)


def print_summary(
    run_id: str, status: str, runs: list[dict[str, Any]], settings: Settings, args: argparse.Namespace, out: Any
) -> None:
    """The text summary: one line per sync, then where to look and what to run next."""
    if args.dry_run:
        print(f"dry run {run_id}: {status} (plan only: nothing was sent)", file=out)
    else:
        print(f"run {run_id}: {status}", file=out)
    for r in runs:
        counts = " ".join(f"{k}={r[k]}" for k in ("created", "updated", "deactivated", "unchanged", "skipped", "failed"))
        extra = f"  ({r['error']})" if r.get("error") else ""
        print(f"  {r['sync']:<12} {r['status']:<8} {counts}  {r['duration_seconds']:.1f}s{extra}", file=out)
    print(f"  output: {settings.output_dir}/changes, {settings.output_dir}/errors", file=out)
    cmd = command_prefix(args)
    for r in runs:
        if r.get("errors_file") and r["failed"]:
            print(f"  {r['sync']}: {r['failed']} record(s) failed, each with its reason in {r['errors_file']}", file=out)
            print(f"    list them:  {cmd} failed list --sync {r['sync']}", file=out)
            print(f"    one record: {cmd} diagnose {r['sync']} <key>", file=out)
        if r["status"] == "skipped" and "quarantined" in (r.get("error") or ""):
            print(
                f"  {r['sync']} is quarantined (backing off after failing runs): fix the cause, then "
                f"{cmd} --only {r['sync']} --force",
                file=out,
            )


if __name__ == "__main__":
    sys.exit(main())
