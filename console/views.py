"""The console's pages and actions (a Flask blueprint mounted at /console by main.py).

Reading pages call ``console.data``; actions that take time (run now, preview, a record
lookup, sync one record) are handed to the daemon's job runner (``daemon.jobs``) and the
browser is sent to the job's page, which refreshes until the job is done: nothing slow
runs on a request thread, and the console never holds a lock a sync needs. Every action
an operator takes is written to the audit log (``ControlStore.audit``: Redis and the
JSON log) with who, what, on what, and how it ended.

Shape: the views are module functions (``_route`` notes each one); :func:`blueprint`
makes a new blueprint of them for each daemon and leaves that daemon on the app it is
registered on (``app.extensions["console"]``), where ``_daemon()`` finds it for a request.

Errors: anything a page raises is logged and answered with an error page of this
blueprint; the daemon and its syncs go on (the handler catches everything, and the
waitress thread that served the request is free again).
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, request, stream_with_context, url_for
from flask.blueprints import BlueprintSetupState
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from console import data, exports
from console.auth import COOKIE, COOKIE_PATH, Authenticator, Identity, Refused, Revocations, Session, shared_key_from_redis
from console.chart import runs_chart
from console.runfiles import ListFile, RunFileError, run_file
from utils.control import cursor_problem

log = logging.getLogger("console")
audit_log = logging.getLogger("audit")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
PAGE_SIZE = 50
RUN_STATUSES = ("success", "partial", "failed", "skipped")
FAILED_STATUSES = ("due", "waiting", "quarantined")
NOTICE_COOKIE = "console_notice"
TENANT_COOKIE = "console_tenant"
"""With tenants: the tenant the console shows (not a secret, not an authority: every
tenant's pages need the same sign-in; the cookie only remembers the choice)."""
FRAGMENT_HEADER = "X-Console-Fragment"
SESSION_TOUCH_SECONDS = 30.0
PUBLIC_ENDPOINTS = {"console.login", "console.login_post", "console.static"}


class _RunList(NamedTuple):
    """One of a run's two lists: which of ``_files`` holds it, its ListFile kind, what a
    run without it answers, and its CSV export."""

    file: int
    kind: str
    missing: str
    columns: tuple[str, ...]
    rows: Callable[[Iterable[dict[str, Any]]], Iterator[tuple[Any, ...]]]


_RUN_LISTS = {
    "changes": _RunList(0, "changes", "This run wrote no changes file.", exports.CHANGE_COLUMNS, exports.change_rows),
    "rejected": _RunList(1, "errors", "This run rejected no record.", exports.REJECTED_COLUMNS, exports.rejected_rows),
}


def enabled(settings: Any) -> bool:
    """The console is on when a way to sign in is configured."""
    return settings is not None and (settings.console_token is not None or bool(settings.console_trusted_proxy))


EXTENSION = "console"  # the key of this console's state in app.extensions


class _Console:
    """One app's console: its daemon, and the authenticator built from the daemon's
    current settings (built again when the settings object changes)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.lock = threading.Lock()
        self.settings: Any = None
        self.auth: Authenticator | None = None


_ROUTES: list[tuple[str, tuple[str, ...], Callable[..., Any]]] = []


def _route(rule: str, *methods: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Note a view for :func:`blueprint` (which adds every noted view to each blueprint it makes)."""

    def note(view: Callable[..., Any]) -> Callable[..., Any]:
        _ROUTES.append((rule, methods or ("GET",), view))
        return view

    return note


def blueprint(daemon: Any) -> Blueprint:
    """The console for ``daemon`` (main.Daemon). It answers 404 until settings that turn
    it on are loaded (the HTTP server starts before the settings are read). A new
    blueprint on each call: the app it is registered on keeps ``daemon`` (in
    ``app.extensions``), so apps in one process each reach their own daemon."""
    bp = Blueprint("console", __name__, template_folder="templates", static_folder="static", static_url_path="/static")

    def keep(state: BlueprintSetupState) -> None:
        state.app.extensions[EXTENSION] = _Console(daemon)

    bp.record_once(keep)
    bp.before_request(gate)
    bp.url_defaults(_tenant_in_urls)
    bp.after_request(headers)
    bp.register_error_handler(Exception, failed)
    for rule, methods, view in _ROUTES:
        bp.add_url_rule(rule, view_func=view, methods=list(methods))
    return bp


def _console() -> _Console:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def _daemon() -> Any:
    """The daemon of the app serving this request; with tenants (TENANTS_DIR), the
    chosen tenant's (``?tenant=<id>``, remembered in a cookie; the first tenant when
    none is chosen). Every page, action and export then concerns that tenant only."""
    daemon = _console().daemon
    fleet = getattr(daemon, "fleet", None)
    if fleet is None:
        return daemon
    if "console_tenant" not in g:
        names = fleet.names()
        wanted = request.args.get("tenant") or request.cookies.get(TENANT_COOKIE)
        g.console_tenant = wanted if wanted in names else (names[0] if names else None)
        g.tenant_chosen = request.args.get("tenant") in names
    entry = fleet.get(g.console_tenant) if g.console_tenant else None
    return entry.runner if entry is not None else daemon


def _tenant_context() -> dict[str, Any]:
    """The tenant selector's content: every tenant and the current one (none without tenants)."""
    fleet = getattr(_console().daemon, "fleet", None)
    if fleet is None:
        return {"tenants": [], "tenant": None}
    _daemon()
    return {"tenants": fleet.names(), "tenant": g.get("console_tenant")}


def authenticator() -> Authenticator:
    console = _console()
    settings = console.daemon.state.settings
    with console.lock:
        if console.auth is None or console.settings is not settings:
            redis_client = getattr(console.daemon.runtime, "redis", None) or getattr(
                getattr(console.daemon, "fleet", None), "redis", None
            )  # with tenants: the process's client (sessions span the tenants)
            prefix = settings.redis_prefix
            console.settings = settings
            console.auth = Authenticator(
                settings,
                shared_key=shared_key_from_redis(redis_client, prefix),
                revocations=Revocations(redis_client, prefix),
            )
        return console.auth


# ---- the gate: every console request passes here first ------------------------------
def gate() -> Any:
    state = _daemon().state
    settings = state.settings
    if settings is None:
        if state.config_error:
            return _plain("The console is unavailable: the daemon has a configuration error (see /ready).", 503)
        if state.starting:
            return _plain("The daemon is starting; the console opens in a few seconds.", 503, retry_after=5)
        return _plain("Not Found", 404)
    if not enabled(settings):
        return _plain("Not Found", 404)  # as for any unknown path: nothing says a console could be here
    if request.endpoint == "console.static":
        return None
    auth = authenticator()
    g.auth = auth
    g.request_id = secrets.token_hex(4)
    session, why = auth.load(request.cookies.get(COOKIE))
    g.session_why = why
    try:
        identity = auth.proxy_identity(request.remote_addr, request.headers)
    except Refused as exc:
        return _page("error.html", 403, title="Not allowed", message=str(exc), identity=None)
    if identity is None and session is not None:
        identity = session.identity
    if session is None or (identity is not None and identity.via == "proxy" and session.identity is not None):
        session = auth.new_session(None)
        g.session_dirty = True
    g.session = session
    g.identity = identity
    g.csrf = auth.csrf_token(session)
    g.fragment = _is_fragment()
    if identity is None and request.endpoint not in PUBLIC_ENDPOINTS:
        return _not_signed_in(auth, why)
    if request.method == "POST" and not auth.csrf_ok(
        session, request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
    ):
        log.warning("console POST refused: missing or wrong CSRF token", extra={"event": "console_csrf"})
        return _page(
            "error.html",
            403,
            title="Form out of date",
            message="This form's security token is missing or out of date (the page was open too long, or it "
            "came from another site). Go back, reload the page and try again.",
        )
    refusal = _tenant_refusal()
    if refusal is not None:
        return refusal
    if identity is not None and identity.via == "token" and not g.fragment:
        if time.time() - session.seen > SESSION_TOUCH_SECONDS:
            g.session = auth.touched(session)
            g.session_dirty = True
    return None


def _tenant_refusal() -> Any:
    """With tenants: a page for a tenant this daemon does not serve is 404, and a form
    must say which tenant it acts on (every console URL carries ``?tenant=``: a cookie
    set by another tab must never pick the tenant an action changes)."""
    fleet = getattr(_console().daemon, "fleet", None)
    if fleet is None or request.endpoint in PUBLIC_ENDPOINTS or request.endpoint == "console.logout":
        return None
    wanted = request.args.get("tenant")
    if wanted and fleet.get(wanted) is None:
        return _page("error.html", 404, title="No such tenant", message="This daemon serves no tenant of that name.")
    if request.method == "POST" and not wanted:
        return _page(
            "error.html",
            400,
            title="Which tenant?",
            message="This form does not say which tenant it is for. Reload the page and try again.",
        )
    return None


def _tenant_in_urls(endpoint: str, values: dict[str, Any]) -> None:
    """Every console URL built for a page carries the tenant that page shows."""
    if endpoint == "console.static" or "tenant" in values or getattr(_console().daemon, "fleet", None) is None:
        return
    _daemon()
    if g.get("console_tenant"):
        values["tenant"] = g.console_tenant


def _not_signed_in(auth: Authenticator, why: str | None) -> Any:
    if request.method == "POST" or g.fragment or request.path.endswith(".csv"):
        if g.fragment:
            return Response("Not signed in", status=401, mimetype="text/plain")
        return _page(
            "error.html",
            401,
            title="Sign in first",
            message=auth.why_text(why) or "Sign in to use the console.",
            signin=bool(auth.token),
        )
    if auth.token is not None:
        target = request.full_path if request.query_string else request.path
        query = {"next": target}
        if why:
            query["why"] = why
        return redirect(url_for("console.login") + "?" + urlencode(query))
    return _page(
        "error.html",
        401,
        title="Sign in through single sign-on",
        message="This request did not come through your organisation's sign-on proxy. Open the console at the "
        "address your IT team gave you.",
    )


def headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    session = g.get("session")
    if session is not None and g.get("session_dirty"):
        _set_cookie(response, COOKIE, g.auth.dump(session))
    if g.get("notice_read"):
        response.delete_cookie(NOTICE_COOKIE, path=COOKIE_PATH, secure=_secure(), httponly=True, samesite="Strict")
    if g.get("tenant_chosen") and g.get("console_tenant"):
        _set_cookie(response, TENANT_COOKIE, g.console_tenant)
    return response


def failed(exc: Exception) -> Any:
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        if code == 404:
            return _page("error.html", 404, title="Not found", message="There is nothing at this address.")
        return _page("error.html", code, title=exc.name, message=exc.description or exc.name)
    error_id = g.get("request_id") or secrets.token_hex(4)
    log.exception("console page failed (error id %s)", error_id, extra={"event": "console_error"})
    try:
        return _page(
            "error.html",
            500,
            title="Something went wrong",
            message=f"This page could not be shown. The syncs are not affected. The daemon's log has the details "
            f"under error id {error_id}.",
        )
    except Exception:
        log.exception("console error page failed too")
        return _plain(f"This page could not be shown (error id {error_id}); the syncs are not affected.", 500)


# ---- helpers ----------------------------------------------------------------------
def _secure() -> bool:
    """Whether the browser reached us over TLS: directly, or through a proxy or ingress
    that says so. X-Forwarded-Proto is believed from anyone here: a client that lies
    only makes its own cookie stricter (it then never comes back over plain http)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


def _set_cookie(response: Any, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, secure=_secure(), httponly=True, samesite="Strict")


def _notice_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(g.auth.key(), salt="console-notice")


def _notice() -> dict[str, str] | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    g.notice_read = True
    try:
        value = _notice_signer().loads(raw, max_age=120)
    except BadSignature:
        return None
    return value if isinstance(value, dict) else None


def _done(endpoint: str, message: str, *, kind: str = "ok", **values: Any) -> Any:
    """Post/redirect/get: the next page shows ``message`` once."""
    response = redirect(url_for(endpoint, **values))
    _set_cookie(response, NOTICE_COOKIE, _notice_signer().dumps({"kind": kind, "text": message}), max_age=120)
    return response


def _page(template: str, code: int = 200, **context: Any) -> Response:
    context.setdefault("identity", g.get("identity"))
    context.setdefault("csrf", g.get("csrf", ""))
    context.setdefault("notice", _notice() if code == 200 and g.get("auth") is not None else None)
    context.setdefault("syncs", list(_daemon().state.syncs))
    for key, value in _tenant_context().items():
        context.setdefault(key, value)
    html = render_template(f"console/{template}", **context, fmt=_FORMATTERS, nav=request.endpoint)
    return Response(html, status=code, mimetype="text/html")


def _is_fragment() -> bool:
    return request.headers.get(FRAGMENT_HEADER) == "1" or "/fragment/" in request.path


def operator(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Viewers read; operators act. A viewer's attempt is refused and audited."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            identity: Identity | None = g.get("identity")
            if identity is None or not identity.operator:
                audit(action, _target(kwargs.get("sync")), "refused: viewer")
                return _page(
                    "error.html",
                    403,
                    title="Operators only",
                    message="You are signed in as a viewer: you can look at everything, but only an operator can do "
                    "this. Ask an operator, or your IT team to add you to an operator group.",
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _target(sync: str | None = None) -> str:
    """What an action is about, as the audit log and the CLI name it: ``sync/<name>``
    (``sync/all``) or ``record/<sync>/<key>``."""
    sync = sync or (request.values.get("sync") or "").strip() or "all"
    record = (request.values.get("record") or "").strip()
    return f"record/{sync}/{record[:200]}" if record else f"sync/{sync[:64]}"


def audit(action: str, target: str, result: str, detail: dict[str, Any] | None = None) -> None:
    identity: Identity | None = g.get("identity")
    actor = identity.actor if identity else "anonymous"
    role = identity.role if identity else "none"
    detail = {**(detail or {}), "client": request.remote_addr}
    # With tenants, signing in and out concerns no tenant: the process's own audit stream.
    process = getattr(_console().daemon, "process_control", None) if target == "console" else None
    control = process or data.control_of(_daemon())
    if control is not None:
        try:
            control.audit(actor=actor, role=role, action=action, target=target, result=result, detail=detail)
            return
        except Exception:
            log.warning("audit entry not stored in Redis; written to the log only", exc_info=True)
    audit_log.info(
        "%s %s %s: %s",
        actor,
        action,
        target,
        result,
        extra={"event": "audit", "actor": actor, "role": role, "action": action, "target": target, "result": result},
    )


def _sync_or_all() -> str | None:
    """The sync a form or link names; None for all of them."""
    value = (request.values.get("sync") or "").strip()
    return None if value in ("", "all") else _sync_arg()


def _sync_arg() -> str:
    value = (request.values.get("sync") or "").strip()
    syncs = _daemon().state.syncs
    if value not in syncs:
        abort(400, description=f"Unknown or disabled sync {value!r}. Enabled: {', '.join(syncs) or 'none'}.")
    return value


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        abort(400, description=f"{name} must be a whole number")
    return int(raw)


def _submit(kind: str, target: str, **params: Any) -> Any:
    jobs = data.jobs_of(_daemon())
    if jobs is None:
        audit(kind, target, "refused: this daemon has no job runner")
        return _done("console.actions", "This daemon cannot run console jobs (no job runner).", kind="error")
    identity: Identity = g.identity
    try:
        job_id = jobs.submit(kind, actor=identity.actor, role=identity.role, **params)
    except Exception as exc:
        audit(kind, target, f"failed: {exc}")
        log.warning("console job %s not submitted", kind, exc_info=True)
        return _done("console.actions", f"Could not start: {exc}", kind="error")
    audit(kind, target, f"queued as job {job_id}", {k: v for k, v in params.items() if v is not None})
    return redirect(url_for("console.job", job_id=job_id))


# ---- sign-in ------------------------------------------------------------------------
@_route("/login")
def login() -> Any:
    auth: Authenticator = g.auth
    if g.identity is not None:
        return redirect(_next_url())
    if auth.token is None:
        return _page(
            "error.html",
            404,
            title="No password sign-in",
            message="This console signs people in through single sign-on only.",
        )
    g.session_dirty = True  # the anonymous session behind the form's CSRF token
    # A code, never text from the URL: a link to the real sign-in page must not be
    # able to show an attacker's sentence ("the console moved to ...").
    return _page("login.html", why=auth.why_text(request.args.get("why")), next=_next_url(), error=None)


@_route("/login", "POST")
def login_post() -> Any:
    auth: Authenticator = g.auth
    if auth.token is None:
        abort(404)
    client = request.remote_addr or "?"
    if auth.throttled(client):
        log.warning("console sign-in refused: too many wrong passwords from %s", client, extra={"event": "console_login"})
        g.session_dirty = True
        return _page(
            "login.html", 429, why=None, next=_next_url(), error="Too many wrong attempts. Wait five minutes and try again."
        )
    if not auth.check_token(client, request.form.get("password", "")):
        log.warning("console sign-in failed from %s", client, extra={"event": "console_login"})
        audit_log.info(
            "console sign-in failed",
            extra={"event": "audit", "action": "sign-in", "result": "wrong password", "actor": client},
        )
        g.session_dirty = True
        return _page("login.html", 401, why=None, next=_next_url(), error="That is not the console password.")
    g.identity = Identity(client, "operator", "token")
    g.session = auth.new_session(g.identity)  # a new id: nothing from before sign-in carries over
    g.session_dirty = True
    audit("sign-in", "console", "ok")
    return redirect(_next_url())


@_route("/logout", "POST")
def logout() -> Any:
    auth: Authenticator = g.auth
    session: Session = g.session
    audit("sign-out", "console", "ok")
    auth.revoke(session)
    g.session = auth.new_session(None)
    g.session_dirty = True
    if g.identity is not None and g.identity.via == "proxy":
        # The proxy's sign-in outlives the console's session: without its sign-out the
        # next click would sign the person in again (CONSOLE_SIGN_OUT_URL, a path on
        # this host, so form-action 'self' allows the redirect).
        settings = _daemon().state.settings
        target = getattr(settings, "console_sign_out_url", None) if settings is not None else None
        if target:
            return redirect(target)
        return _page(
            "error.html",
            200,
            title="Signed out of the console",
            message="Close the browser to sign out of single sign-on too.",
            identity=None,
        )
    return redirect(url_for("console.login", why="signed-out"))


def _next_url() -> str:
    wanted = request.values.get("next") or ""
    parts = urlsplit(wanted)
    if wanted.startswith("/console/") and not parts.scheme and not parts.netloc and "\\" not in wanted and "//" not in wanted:
        return wanted
    return url_for("console.overview")


# ---- overview ---------------------------------------------------------------------
@_route("/")
def overview() -> Any:
    return _page("overview.html", view=data.overview(_daemon()), jobs=_recent_jobs(5))


@_route("/fragment/overview")
def overview_fragment() -> Any:
    return _page("_overview.html", view=data.overview(_daemon()))


def _recent_jobs(count: int) -> list[dict[str, Any]]:
    jobs = data.jobs_of(_daemon())
    if jobs is None:
        return []
    found = data.attempt("recent jobs", lambda: jobs.recent(count))
    return found if isinstance(found, list) else []


# ---- runs -------------------------------------------------------------------------
@_route("/runs")
def runs() -> Any:
    syncs = _daemon().state.syncs
    sync = request.args.get("sync") or (syncs[0] if syncs else None)
    if sync is not None and sync not in syncs:
        abort(400, description=f"Unknown or disabled sync {sync!r}.")
    status = request.args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        abort(400, description=f"status must be one of {', '.join(RUN_STATUSES)}")
    before = _cursor_arg(runs=True)
    found = _history(sync, status, PAGE_SIZE, before)
    rows = [data.run_view(r) for r in found] if isinstance(found, list) else []
    chart = runs_chart(rows, title=f"{sync} runs: duration and records handled") if rows else None
    older = rows[-1].get("id") if len(rows) == PAGE_SIZE else None
    return _page(
        "runs.html",
        sync=sync,
        status=status,
        statuses=RUN_STATUSES,
        runs=rows,
        unknown=found if isinstance(found, data.Unknown) else None,
        chart=chart,
        older=older,
        before=before,
    )


def _cursor_arg(*, runs: bool) -> str | None:
    before = request.args.get("before") or None
    if before and data.control_of(_daemon()) is not None:
        problem = cursor_problem(before, runs=runs)
        if problem:
            abort(400, description=problem)
    return before


def _history(sync: str | None, status: str | None, count: int, before: str | None) -> list[dict[str, Any]] | data.Unknown:
    control = data.control_of(_daemon())
    if control is not None:
        return data.attempt("run history", lambda: control.runs(sync=sync, status=status, count=count, before=before))
    settings = _daemon().state.settings
    return data.runs_from_files(settings.output_dir, sync, status, count, before)


def _run_entry(sync: str, run_id: str) -> dict[str, Any]:
    daemon = _daemon()
    if sync not in daemon.state.syncs:
        abort(404)
    control = data.control_of(daemon)
    entry = None
    if control is not None:
        found = data.attempt("run", lambda: control.run(run_id, sync))
        entry = found if isinstance(found, dict) else None
    if entry is None and run_id.startswith(sync + "-"):
        entry = data.run_from_file(run_file(daemon.state.settings.output_dir / "changes", run_id + ".json"))
    if entry is None:
        abort(404, description="No such run: it may be older than the history kept (RUN_HISTORY_LENGTH, OUTPUT_RETENTION_*).")
    return entry


def _files(entry: dict[str, Any]) -> tuple[Any, Any]:
    settings = _daemon().state.settings
    changes = run_file(settings.output_dir / "changes", entry.get("changes_file"))
    errors = run_file(settings.output_dir / "errors", entry.get("errors_file"))
    return changes, errors


@_route("/runs/<sync>/<run_id>")
def run(sync: str, run_id: str) -> Any:
    entry = _run_entry(sync, run_id)
    changes_path, errors_path = _files(entry)
    show = request.args.get("show", "changes")
    if show not in _RUN_LISTS:
        abort(400, description="show must be changes or rejected")
    at, before = _int_arg("at"), _int_arg("before")
    page = None
    problem = None
    listed = _RUN_LISTS[show]
    path = (changes_path, errors_path)[listed.file]
    if path is not None:
        try:
            page = ListFile(path, listed.kind).page(offset=at, before=before, size=PAGE_SIZE)
        except RunFileError as exc:
            problem = str(exc)
    return _page(
        "run.html",
        sync=sync,
        run_id=run_id,
        run=data.run_view(entry),
        show=show,
        page=page,
        problem=problem,
        has_changes=changes_path is not None,
        has_rejected=errors_path is not None,
    )


def _csv(name: str, rows: Any) -> Response:
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@_route("/runs/<sync>/<run_id>/changes.csv")
def run_changes_csv(sync: str, run_id: str) -> Any:
    return _export_run(sync, run_id, "changes")


@_route("/runs/<sync>/<run_id>/rejected.csv")
def run_rejected_csv(sync: str, run_id: str) -> Any:
    return _export_run(sync, run_id, "rejected")


def _export_run(sync: str, run_id: str, show: str) -> Response:
    """A run's changes or rejected records (``show``, a key of ``_RUN_LISTS``) as CSV."""
    listed = _RUN_LISTS[show]
    path = _files(_run_entry(sync, run_id))[listed.file]
    if path is None:
        abort(404, description=listed.missing)
    reader = ListFile(path, listed.kind)
    reader.page(size=0)  # a missing or foreign file fails here, as a page, not half-way through the download
    audit("export", f"run/{sync}/{run_id}/{show}", "ok")
    return _csv(f"{path.stem}-{show}.csv", exports.rows_to_csv(listed.columns, listed.rows(reader.iter_items())))


# ---- failed records ----------------------------------------------------------------
def _failed_rows(sync: str | None, status: str | None) -> list[dict[str, Any]]:
    """The whole queue (the CSV export)."""
    rt = _daemon().runtime
    rows = rt.tracker.list(sync) if rt is not None else []
    return [r for r in rows if status is None or r.get("status") == status]


def _failed_page(sync: str | None, status: str | None, start: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the queue and how many match: the tracker reads only that page."""
    rt = _daemon().runtime
    if rt is None:
        return [], 0
    pager = getattr(rt.tracker, "page", None)
    if pager is None:  # a tracker without pages (an older runtime): the whole queue, cut
        rows = _failed_rows(sync, status)
        return rows[start : start + PAGE_SIZE], len(rows)
    return pager(sync, status, start, PAGE_SIZE)  # type: ignore[no-any-return]


@_route("/failed")
def failed_records() -> Any:
    sync = _sync_or_all()
    status = request.args.get("status") or None
    if status is not None and status not in FAILED_STATUSES:
        abort(400, description=f"status must be one of {', '.join(FAILED_STATUSES)}")
    start = _int_arg("start") or 0
    found = data.attempt("failed records", lambda: _failed_page(sync, status, start))
    shown, total = found if isinstance(found, tuple) else ([], 0)
    counts = {}
    daemon = _daemon()
    for name in daemon.state.syncs:
        counts[name] = (
            data.attempt("failed records", functools.partial(daemon.runtime.tracker.count, name)) if daemon.runtime else 0
        )
    return _page(
        "failed.html",
        sync=sync,
        status=status,
        statuses=FAILED_STATUSES,
        rows=[{**r, "next": data.age(r.get("next_retry")), "last": data.age(r.get("last_failed"))} for r in shown],
        unknown=found if isinstance(found, data.Unknown) else None,
        total=total,
        start=start,
        page_size=PAGE_SIZE,
        counts=counts,
    )


@_route("/failed.csv")
def failed_csv() -> Any:
    sync = _sync_or_all()
    rows = _failed_rows(sync, None)
    audit("export", f"failed/{sync or 'all'}", "ok")
    return _csv(f"failed-records-{sync or 'all'}.csv", exports.rows_to_csv(exports.FAILED_COLUMNS, exports.failed_rows(rows)))


@_route("/failed/retry", "POST")
@operator("retry")
def failed_retry() -> Any:
    sync, key = _sync_arg(), _record_arg()
    count = _daemon().runtime.tracker.retry(sync, key)
    result = f"{count} released"
    audit("retry", f"record/{sync}/{key}", result)
    message = f"{sync} {key} will be tried at the next run." if count else f"{sync} {key} is not in the queue any more."
    return _done("console.failed_records", message, sync=sync)


@_route("/failed/retry-all", "POST")
@operator("retry")
def failed_retry_all() -> Any:
    sync = _sync_arg()
    count = _daemon().runtime.tracker.retry(sync)
    audit("retry", f"sync/{sync}", f"{count} released")
    return _done("console.failed_records", f"{count} {sync} record(s) will be tried at the next run.", sync=sync)


@_route("/failed/dismiss", "POST")
@operator("dismiss")
def failed_dismiss() -> Any:
    sync, key = _sync_arg(), _record_arg()
    dismiss = getattr(_daemon().runtime.tracker, "dismiss", None)
    if dismiss is None:
        audit("dismiss", f"record/{sync}/{key}", "refused: not supported by this daemon")
        return _done("console.failed_records", "Dismissing needs a newer daemon.", kind="error", sync=sync)
    removed = dismiss(sync, key)
    audit("dismiss", f"record/{sync}/{key}", "ok" if removed else "not tracked")
    message = f"{sync} {key} was removed from the queue." if removed else f"{sync} {key} was not in the queue."
    return _done("console.failed_records", message, sync=sync)


def _record_arg() -> str:
    key = (request.values.get("record") or "").strip()
    if not key or len(key) > 200:
        abort(400, description="Give the record's key (at most 200 characters).")
    return key


# ---- record lookup ------------------------------------------------------------------
@_route("/lookup")
def lookup() -> Any:
    return _page("lookup.html", hints=data.KEY_HINTS, chosen=request.args.get("sync"), record=request.args.get("record", ""))


@_route("/lookup", "POST")
def lookup_post() -> Any:
    sync, key = _sync_arg(), _record_arg()
    return _submit("diagnose", f"record/{sync}/{key}", sync=sync, key=key)


@_route("/lookup/sync-record", "POST")
@operator("sync_record")
def sync_record() -> Any:
    sync, key = _sync_arg(), _record_arg()
    return _submit("sync_record", f"record/{sync}/{key}", sync=sync, key=key)


# ---- actions ------------------------------------------------------------------------
@_route("/actions")
def actions() -> Any:
    daemon = _daemon()
    view = data.overview(daemon)
    control = data.control_of(daemon)
    approvals: dict[str, Any] = {}
    if control is not None:
        for sync in daemon.state.syncs:
            found = data.attempt("approval", functools.partial(control.approval, sync))
            if isinstance(found, dict):
                approvals[sync] = found
    return _page("actions.html", view=view, approvals=approvals, jobs=_recent_jobs(20), has_control=control is not None)


@_route("/actions/run", "POST")
@operator("run")
def action_run() -> Any:
    sync = _sync_or_all()
    return _submit("run", f"sync/{sync or 'all'}", syncs=[sync] if sync else None)


@_route("/actions/preview", "POST")
@operator("preview")
def action_preview() -> Any:
    sync = _sync_or_all()
    return _submit("preview", f"sync/{sync or 'all'}", syncs=[sync] if sync else None)


@_route("/actions/pause", "POST")
@operator("pause")
def action_pause() -> Any:
    sync = _sync_arg()
    reason = (request.form.get("reason") or "").strip()[:300]
    control = _control_or_abort()
    control.pause(sync, by=g.identity.actor, reason=reason)
    audit("pause", f"sync/{sync}", "ok", {"reason": reason} if reason else None)
    return _done("console.actions", f"{sync} is paused: no runner starts it until it is resumed.")


@_route("/actions/resume", "POST")
@operator("resume")
def action_resume() -> Any:
    sync = _sync_arg()
    control = _control_or_abort()
    was = control.paused(sync)
    control.resume(sync, by=g.identity.actor)
    audit("resume", f"sync/{sync}", "ok" if was else "was not paused")
    return _done("console.actions", f"{sync} is resumed: it runs at the next cycle.")


def _control_or_abort() -> Any:
    control = data.control_of(_daemon())
    if control is None:
        audit((request.endpoint or "action").rpartition(".")[2], _target(), "refused: no operator state")
        abort(503, description="This daemon keeps no operator state (pause, approvals): it needs a newer version.")
    return control


@_route("/holds/<sync>")
def hold(sync: str) -> Any:
    if sync not in _daemon().state.syncs:
        abort(404)
    control = data.control_of(_daemon())
    held = control.held(sync) if control is not None else None
    approval = control.approval(sync) if control is not None else None
    start = _int_arg("start") or 0
    keys = list(held.get("keys") or []) if held else []
    return _page(
        "hold.html",
        sync=sync,
        held=held,
        approval=approval,
        keys=keys[start : start + 200],
        start=start,
        total=len(keys),
        page_size=200,
    )


@_route("/holds/<sync>/approve", "POST")
@operator("approve")
def approve(sync: str) -> Any:
    if sync not in _daemon().state.syncs:
        abort(404)
    digest = (request.form.get("digest") or "").strip()
    if request.form.get("confirm") != "yes":
        return _done("console.hold", "Tick the box to confirm you checked the list, then approve.", kind="error", sync=sync)
    control = _control_or_abort()
    try:
        approval = control.approve(sync, digest, by=g.identity.actor)
    except ValueError as exc:
        audit("approve", f"sync/{sync}", f"refused: {exc}", {"digest": digest})
        return _done("console.hold", f"Not approved: {exc}", kind="error", sync=sync)
    audit(
        "approve",
        f"sync/{sync}",
        "ok",
        {"digest": digest, "count": approval.get("count"), "expires_at": approval.get("expires_at")},
    )
    return _done(
        "console.hold",
        f"Approved: the next {sync} run may deactivate exactly these {approval.get('count')} record(s), "
        f"until {data.iso(approval.get('expires_at'))}.",
        sync=sync,
    )


# ---- jobs ---------------------------------------------------------------------------
def _job(job_id: str) -> dict[str, Any]:
    jobs = data.jobs_of(_daemon())
    if jobs is None or len(job_id) > 64:
        abort(404)
    found = jobs.get(job_id)
    if not found:
        abort(404, description="No such job (the daemon keeps the recent ones only, and forgets them when it restarts).")
    return dict(found)


@_route("/jobs/<job_id>")
def job(job_id: str) -> Any:
    return _page("job.html", job=_job(job_id), hints=data.KEY_HINTS)


@_route("/fragment/jobs/<job_id>")
def job_fragment(job_id: str) -> Any:
    return _page("_job.html", job=_job(job_id))


# ---- configuration, audit --------------------------------------------------------------
@_route("/config")
def config() -> Any:
    return _page("config.html", view=data.configuration(_daemon()))


@_route("/audit")
def audit_page() -> Any:
    control = data.control_of(_daemon())
    before = _cursor_arg(runs=False)
    entries = data.attempt("audit log", lambda: control.audit_log(count=PAGE_SIZE, before=before)) if control else []
    rows = entries if isinstance(entries, list) else []
    return _page(
        "audit.html",
        entries=rows,
        unknown=entries if isinstance(entries, data.Unknown) else None,
        older=rows[-1].get("id") if len(rows) == PAGE_SIZE else None,
        before=before,
        has_control=control is not None,
    )


def _plain(text: str, status: int, retry_after: int | None = None) -> Response:
    response = Response(text + "\n", status=status, mimetype="text/plain")
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    response.headers["Content-Security-Policy"] = CSP
    return response


def _prose(text: str) -> Markup:
    """Our own help text (setting descriptions) as HTML. The daemon scrubs every body on
    its way out, and "bearer token" in a sentence looks to it like a credential; a
    character reference for the space keeps the words readable (no value is shown)."""
    return Markup(re.sub(r"(?i)\b(bearer)\s+", r"\1&#32;", str(escape(text))))  # noqa: S704 - escaped first


_FORMATTERS = {
    "prose": _prose,
    "iso": data.iso,
    "age": data.age,
    "duration": data.duration,
    "span": data.span,
}
