"""Many tenants: N customer accounts, each with its own emulators and credentials (issue 13).

Why: a multi-tenant daemon must never send one customer's credentials to another's
endpoints, and must never run one tenant's sync on two replicas at once. Both are proved
on the emulators' side, where the product cannot hide anything: every account is a whole
sandbox of its own (``start_sandbox`` on ``accounts/<id>/``, its own seed, so its own data
and its own random credentials), and one WSGI layer in front of every emulator of every
account

* knows the credentials of *all* accounts (a shared registry, including the access tokens
  the Entra and OneRoster token endpoints issue) and records a request that carries
  another account's credential as a **cross-tenant request**; the emulator behind it then
  refuses it exactly as it refuses any wrong credential (no two accounts share one);
* appends every request to the account's **ledger** with the instance and run the
  product names in its User-Agent, so a test can show that no two replicas ever ran one
  tenant's sync at the same time (``overlapping_runs``).

Layout of ``directory`` (docs/emulated-apis.md "Many tenants")::

    accounts/<id>/           one sandbox directory per account (seeded once, reused)
    accounts/<id>/requests.jsonl   the account's request ledger (JSON lines, appended)
    tenants/<id>.env         the tenant file the product reads (TENANTS_DIR): values and
                             ``<SECRET>_FROM_FILE`` references, never a secret's value
    secrets/<id>-<name>      one secret value per file, mode 0600 (SECRETS_DIR)
    tenants.json             per tenant: kind, folder, ledger and endpoints (0600: the
                             endpoints carry the dummy credentials)
    cross-tenant.jsonl       one line per cross-tenant request

Tenant ids are ``co-01``, ``co-02``, ``sd-03``...: every third account is a school
district (rosters: OneRoster -> SCIM), the others construction companies (Vista,
Samsara, Entra -> SafetyAmp). Every account runs every emulator (a ``start_sandbox``
starts them all); its tenant file names only those of its kind.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from config.bootstrap import sandbox_overrides
from config.tenants import PROCESS_WIDE, SECRET_NAMES, tenant_id_problem
from sandbox import graph
from sandbox.faults import parse_faults, validate_faults
from sandbox.roster_seed import CREDS_FILE as ROSTERS_FILE
from sandbox.seed import SECRETS_FILE, resolve_seed, write_private
from sandbox.server import RunningSandbox, setup_lock, start_sandbox
from sandbox.wsgi import bearer_token

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("sandbox.tenants")

COMPANY = "company"
DISTRICT = "district"
DISTRICT_EVERY = 3  # every third account is a school district
COMPANY_SYNCS = "departments,jobs,titles,employees,vehicles"
DISTRICT_SYNCS = "rosters"

ACCOUNTS_DIR = "accounts"
TENANTS_DIR = "tenants"
SECRETS_DIR = "secrets"
STATE_FILE = "tenants.json"
LEDGER_FILE = "requests.jsonl"
CROSS_TENANT_FILE = "cross-tenant.jsonl"

# Settings of the other kind's systems, left out of a tenant file (a company does not
# name the district emulators its account also runs, and the other way round).
_NOT_FOR = {
    COMPANY: ("ONEROSTER_", "SCIM_", "ROSTER_"),
    DISTRICT: ("SAFETYAMP_", "SAMSARA_", "MS_GRAPH_", "VIEWPOINT_"),
}

USER_AGENT_RUN = re.compile(r"\(instance ([^\s;()]+); run ([^\s;()]+)\)")
"""``safetyamp-sync (instance <instance-id>; run <run-id>)``: the product's User-Agent."""

_OAUTH_CONSUMER_KEY = re.compile(r'oauth_consumer_key="([^"]*)"')
_TOKEN_PATHS = re.compile(r"^/(?:token|[^/]+/oauth2/v2\.0/token)$")  # OneRoster, Entra
_MAX_FORM_BYTES = 64 * 1024

# The wall clock, but never going backwards within one process: a ledger's times are
# compared with each other, and an NTP step must not reorder two requests.
_WALL_ANCHOR = time.time() - time.monotonic()


def now() -> float:
    """Seconds since the epoch, monotonic within this process."""
    return _WALL_ANCHOR + time.monotonic()


def tenant_ids(count: int) -> list[str]:
    """``co-01``, ``co-02``, ``sd-03``, ``co-04``...: every third a district."""
    if count < 1:
        raise ValueError(f"the number of tenants must be >= 1, got {count}")
    width = max(2, len(str(count)))
    return [f"{'sd' if i % DISTRICT_EVERY == 0 else 'co'}-{i:0{width}d}" for i in range(1, count + 1)]


def kind_of(tenant: str) -> str:
    """``company`` or ``district``, from the id's prefix."""
    return DISTRICT if tenant.startswith("sd-") else COMPANY


# --------------------------------------------------------------------------- credentials


def account_credentials(endpoints: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Every credential an account's emulators accept, by kind (the Graph tenant id and
    the OneRoster client id are not secrets, but name the account as surely)."""
    sa, sam, gr = endpoints["safetyamp"], endpoints["samsara"], endpoints["graph"]
    creds = {
        "safetyamp_token": sa["token"],
        "samsara_api_key": sam["api_key"],
        "graph_tenant_id": gr["tenant_id"],
        "graph_client_id": gr["client_id"],
        "graph_client_secret": gr["client_secret"],
    }
    if "oneroster" in endpoints:
        creds["oneroster_client_id"] = endpoints["oneroster"]["client_id"]
        creds["oneroster_client_secret"] = endpoints["oneroster"]["client_secret"]
    if "scim" in endpoints:
        creds["scim_token"] = endpoints["scim"]["token"]
    return creds


class CredentialRegistry:
    """Which account each credential belongs to, shared by every emulator of one
    ``RunningTenants`` (thread-safe). Values are only compared, never written anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: dict[str, tuple[str, str]] = {}

    def register(self, tenant: str, kind: str, value: str) -> None:
        if not value:
            return
        with self._lock:
            self._owner[value] = (tenant, kind)

    def owner(self, value: str) -> tuple[str, str] | None:
        """``(tenant, kind)`` of a credential, or None if no account has it."""
        if not value:
            return None
        with self._lock:
            return self._owner.get(value)


def duplicated_credentials(by_tenant: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """``(tenant, other_tenant, kind)`` for every credential value two accounts share."""
    seen: dict[str, tuple[str, str]] = {}
    found = []
    for tenant, creds in by_tenant.items():
        for kind, value in creds.items():
            if value in seen and seen[value][0] != tenant:
                found.append((tenant, seen[value][0], kind))
            seen.setdefault(value, (tenant, kind))
    return found


def _request_credentials(environ: WSGIEnvironment, path: str) -> tuple[list[str], bytes | None]:
    """The credential-like values a request carries (Authorization bearer / Basic / OAuth 1
    consumer key, the first path segment (an Entra tenant id), the client id and secret of
    a token request's form body) and the body it read (to be put back), if any."""
    values: list[str] = []
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    token = bearer_token(authorization)
    if token:
        values.append(token)
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(rest.strip()).decode().partition(":")
            values += [user, password]
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    elif scheme.lower() == "oauth":
        values += _OAUTH_CONSUMER_KEY.findall(rest)
    first = path.lstrip("/").split("/", 1)[0]
    if first:
        values.append(first)
    body = None
    if environ.get("REQUEST_METHOD") == "POST" and _TOKEN_PATHS.match(path):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if 0 < length <= _MAX_FORM_BYTES:
            body = environ["wsgi.input"].read(length)
            form = parse_qs(body.decode("utf-8", "replace"))
            for name in ("client_id", "client_secret"):
                values += form.get(name, [])
    return values, body


# --------------------------------------------------------------------------- ledger


class JsonLines:
    """An append-only JSON lines file, one write per line under a lock (thread-safe; the
    O_APPEND write keeps lines whole between processes too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: Any = open(path, "a", encoding="utf-8")  # closed by close()

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            if self._handle is not None:
                self._handle.write(line)
                self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def parse_user_agent(user_agent: str | None) -> tuple[str | None, str | None]:
    """``(instance, run)`` from ``... (instance <id>; run <id>)``; None where absent."""
    match = USER_AGENT_RUN.search(user_agent or "")
    return (match.group(1), match.group(2)) if match else (None, None)


class TenantGuard:
    """Wraps one emulator of one account (outside its EmulatorMiddleware): records every
    request in the account's ledger, and a request carrying another account's credential
    in the cross-tenant file. It refuses nothing itself: the emulator behind it checks the
    credential and refuses it as any wrong credential (no two accounts share one)."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        tenant: str,
        service: str,
        registry: CredentialRegistry,
        ledger: JsonLines,
        cross: JsonLines,
    ) -> None:
        self.app = app
        self.tenant = tenant
        self.service = service
        self.registry = registry
        self.ledger = ledger
        self.cross = cross

    def _service(self, path: str) -> str:
        return graph.route(path)[0] if self.service == "graph" else self.service

    def _foreign(self, values: Iterable[str]) -> tuple[str, str] | None:
        for value in values:
            owner = self.registry.owner(value)
            if owner is not None and owner[0] != self.tenant:
                return owner
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = now()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        service = self._service(path)
        values, body = _request_credentials(environ, path)
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        foreign = self._foreign(values)
        status = [0]

        def seen_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        try:
            result = self.app(environ, seen_start_response)
            if body is not None and status[0] == 200:
                # An access token the account's token endpoint just issued is its credential too.
                data = b"".join(result)
                self._register_issued(data)
                return [data]
            return result
        except ConnectionError:
            status[0] = 0  # a dropped connection (fault injection): the client saw no status
            raise
        finally:
            instance, run = parse_user_agent(environ.get("HTTP_USER_AGENT"))
            entry: dict[str, Any] = {
                "time": started, "service": service, "method": method, "path": path, "status": status[0],
                "instance": instance, "run": run,
            }  # fmt: skip
            if foreign is not None:
                entry["cross_tenant_from"] = foreign[0]
                self.cross.append({
                    "time": started, "to": self.tenant, "from": foreign[0], "credential": foreign[1],
                    "service": service, "method": method, "path": path, "status": status[0],
                    "instance": instance, "run": run,
                })  # fmt: skip
                log.warning("cross-tenant request: %s %s to %s with a credential of %s", method, path, self.tenant, foreign[0])
            self.ledger.append(entry)

    def _register_issued(self, data: bytes) -> None:
        try:
            token = json.loads(data).get("access_token")
        except (ValueError, AttributeError):
            return
        if isinstance(token, str):
            self.registry.register(self.tenant, f"{self.service}_access_token", token)


# --------------------------------------------------------------------------- running


@dataclass
class TenantAccount:
    """One customer account: its kind, its sandbox and where it writes."""

    tenant: str
    kind: str
    sandbox: RunningSandbox
    ledger: JsonLines = field(repr=False)

    @property
    def endpoints(self) -> dict[str, dict[str, str]]:
        return self.sandbox.endpoints

    @property
    def directory(self) -> Path:
        return self.sandbox.directory


@dataclass
class RunningTenants:
    """Started accounts: ``accounts`` by tenant id, ``stop()`` (state stays on disk).
    Also a context manager."""

    directory: Path
    accounts: dict[str, TenantAccount]
    registry: CredentialRegistry = field(repr=False)
    cross: JsonLines = field(repr=False)
    started_in_s: float = 0.0
    interval_minutes: float = 5.0
    """SYNC_INTERVAL_MINUTES written into every tenant file (the single sandbox daemon's 5 by default)."""

    def __repr__(self) -> str:  # endpoints hold credentials: keep them out of reprs
        return f"RunningTenants(directory={str(self.directory)!r}, tenants={list(self.accounts)})"

    @property
    def tenants_dir(self) -> Path:
        return self.directory / TENANTS_DIR

    @property
    def secrets_dir(self) -> Path:
        return self.directory / SECRETS_DIR

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    def endpoints(self, tenant: str) -> dict[str, dict[str, str]]:
        return self.accounts[tenant].endpoints

    def kinds(self) -> dict[str, str]:
        return {t: a.kind for t, a in self.accounts.items()}

    def stop(self) -> None:
        """Stop every account (in parallel: each server waits up to its poll interval to
        shut down, 60 of them in a row would take seconds); the state stays on disk."""
        threads = [threading.Thread(target=a.sandbox.stop, name=f"stop-{t}") for t, a in self.accounts.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for account in self.accounts.values():
            account.ledger.close()
        self.cross.close()

    def __enter__(self) -> RunningTenants:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _fault_config(spec: Any) -> dict[str, Any]:
    """A fault spec as SANDBOX_FAULTS takes it (a JSON string) or as a mapping."""
    if spec is None:
        return {}
    return parse_faults(spec) if isinstance(spec, str) else validate_faults(spec)


def _guard(account: TenantAccount, registry: CredentialRegistry, cross: JsonLines) -> None:
    """Put a TenantGuard in front of every emulator of the account (werkzeug's server
    calls ``server.app`` per request; no port is known to anyone before this returns)."""
    for server, thread in account.sandbox._servers:
        service = thread.name.removeprefix("sandbox-")
        server.app = TenantGuard(
            server.app, tenant=account.tenant, service=service, registry=registry, ledger=account.ledger, cross=cross
        )


def _rotate_credentials(account_dir: Path) -> None:
    """Forget an account's credentials: the next start generates new ones."""
    with setup_lock(account_dir):
        (account_dir / SECRETS_FILE).unlink(missing_ok=True)
        (account_dir / ROSTERS_FILE).unlink(missing_ok=True)


def start_tenants(
    directory: str | Path,
    count: int,
    *,
    size: int = 30,
    seed: int | None = None,
    faults: Mapping[str, Any] | None = None,
    interval_minutes: float = 5.0,
) -> RunningTenants:
    """Start ``count`` accounts in ``directory`` (seeded on first use, reused after) and
    write the tenant files, secret files and ``tenants.json`` for them.

    ``seed`` (else SANDBOX_SEED, else random) gives each account its own seed (data of a
    new account, fault randomness). ``faults`` maps a tenant id to a fault spec (the
    SANDBOX_FAULTS JSON, or the same as a dict) for that account only; SANDBOX_FAULTS
    itself is ignored here (every other account runs without faults).
    """
    started = time.monotonic()
    root = Path(directory).resolve()
    ids = tenant_ids(count)
    for tenant in ids:
        problem = tenant_id_problem(tenant)
        if problem:  # pragma: no cover - the ids above are valid by construction
            raise ValueError(problem)
    fault_specs = dict(faults or {})
    unknown = sorted(set(fault_specs) - set(ids))
    if unknown:
        raise ValueError(f"faults for unknown tenant(s) {', '.join(unknown)} (tenants: {', '.join(ids)})")
    fault_configs = {t: _fault_config(spec) for t, spec in fault_specs.items()}
    base_seed = resolve_seed(seed)
    registry = CredentialRegistry()
    cross = JsonLines(root / CROSS_TENANT_FILE)
    running = RunningTenants(root, {}, registry, cross, interval_minutes=interval_minutes)
    try:
        for index, tenant in enumerate(ids, start=1):
            account_dir = root / ACCOUNTS_DIR / tenant
            sandbox = start_sandbox(account_dir, size=size, faults=fault_configs.get(tenant, {}), seed=base_seed * 10_007 + index)
            running.accounts[tenant] = TenantAccount(tenant, kind_of(tenant), sandbox, JsonLines(account_dir / LEDGER_FILE))
        _make_distinct(running, base_seed, size, fault_configs)
        for account in running.accounts.values():
            for kind, value in account_credentials(account.endpoints).items():
                registry.register(account.tenant, kind, value)
            _guard(account, registry, cross)
        write_tenant_files(running)
    except BaseException:
        running.stop()
        raise
    running.started_in_s = time.monotonic() - started
    log.info("%d tenant accounts started in %.1f s in %s", len(ids), running.started_in_s, root)
    return running


def _make_distinct(running: RunningTenants, base_seed: int, size: int, fault_configs: Mapping[str, Any]) -> None:
    """Credentials are random per account folder, so they differ; a folder copied from
    another (or a seeding that reused them) would not: such an account gets new ones."""
    for _attempt in range(3):
        creds = {t: account_credentials(a.endpoints) for t, a in running.accounts.items()}
        clashes = duplicated_credentials(creds)
        if not clashes:
            return
        for tenant in sorted({c[0] for c in clashes}):
            account = running.accounts[tenant]
            log.warning("tenant %s shares credentials with another account: new ones", tenant)
            account.sandbox.stop()
            _rotate_credentials(account.directory)
            index = list(running.accounts).index(tenant) + 1
            account.sandbox = start_sandbox(
                account.directory, size=size, faults=fault_configs.get(tenant, {}), seed=base_seed * 10_007 + index
            )
    raise RuntimeError("tenant accounts still share credentials after new ones were made")


# --------------------------------------------------------------------------- files for the product


def secret_file_name(tenant: str, setting: str) -> str:
    """``co-01-safetyamp-token`` for SAFETYAMP_TOKEN of co-01 (the secrets reader takes
    dashes for underscores, so this is the name CO_01_SAFETYAMP_TOKEN too)."""
    return f"{tenant}-{setting.lower().replace('_', '-')}"


def tenant_settings(tenant: str, endpoints: Mapping[str, Any], account_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The tenant's settings from the product's own sandbox wiring, split into
    ``(values, secrets)``: process-wide settings and the other kind's systems left out."""
    kind = kind_of(tenant)
    overrides = sandbox_overrides(endpoints, account_dir, {})
    overrides["SYNC_TYPES"] = COMPANY_SYNCS if kind == COMPANY else DISTRICT_SYNCS
    values: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for name, value in overrides.items():
        if name in PROCESS_WIDE or name.startswith(_NOT_FOR[kind]):
            continue
        (secrets if name in SECRET_NAMES else values)[name] = value
    return values, secrets


def _write_public(path: Path, text: str) -> None:
    """Atomic write (hidden temp file + rename: a watcher never reads half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_tenant_files(running: RunningTenants) -> None:
    """``tenants/<id>.env``, ``secrets/<id>-<name>`` and ``tenants.json``; files of
    tenants not running now (a smaller --count than last time) are removed."""
    tenants_dir, secrets_dir = running.tenants_dir, running.secrets_dir
    tenants_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    keep_env: set[str] = set()
    keep_secrets: set[str] = set()
    state: dict[str, Any] = {}
    for tenant, account in running.accounts.items():
        values, secrets = tenant_settings(tenant, account.endpoints, account.directory)
        values["SYNC_INTERVAL_MINUTES"] = f"{running.interval_minutes:g}"
        lines = [f"# {tenant}: sandbox {account.kind} account {account.directory} (written by python -m sandbox tenants)"]
        lines += [f"{name}={value}" for name, value in sorted(values.items())]
        for name, value in sorted(secrets.items()):
            file_name = secret_file_name(tenant, name)
            write_private(secrets_dir / file_name, value + "\n")
            keep_secrets.add(file_name)
            lines.append(f"{name}_FROM_FILE={file_name}")
        _write_public(tenants_dir / f"{tenant}.env", "\n".join(lines) + "\n")
        keep_env.add(f"{tenant}.env")
        state[tenant] = {
            "kind": account.kind,
            "directory": str(account.directory),
            "ledger": str(account.ledger.path),
            "endpoints": account.endpoints,
        }
    for stale in tenants_dir.glob("*.env"):
        if stale.name not in keep_env:
            stale.unlink()
    for stale in secrets_dir.iterdir():
        if stale.is_file() and not stale.name.startswith(".") and stale.name not in keep_secrets:
            stale.unlink()
    document = {
        "tenants_dir": str(tenants_dir),
        "secrets_dir": str(secrets_dir),
        "cross_tenant": str(running.cross.path),
        "tenants": state,
    }
    write_private(running.state_file, json.dumps(document, indent=2))


# --------------------------------------------------------------------------- reading the proofs


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if isinstance(record, dict):
            yield record


def product_environ(running: RunningTenants, environ: Mapping[str, str]) -> dict[str, str]:
    """What ``main.py`` / ``sync_batch.py --sandbox --tenants N`` add to the process's
    environment: the tenants and secrets folders (forced: a real TENANTS_DIR must never
    be used by a sandbox run), and a Redis prefix of this folder and a file-lock
    fallback unless the environment says otherwise."""
    import hashlib

    digest = hashlib.sha256(str(running.directory).encode()).hexdigest()[:10]
    out = {"REDIS_PREFIX": f"sandbox-tenants-{digest}:", "LOCK_REQUIRED": "false"}
    out = {k: v for k, v in out.items() if k not in environ}
    out.update({"TENANTS_DIR": str(running.tenants_dir), "SECRETS_DIR": str(running.secrets_dir)})
    return out


def read_ledger(directory: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every account's ledger: tenant id -> its requests in the order they were logged."""
    accounts = Path(directory) / ACCOUNTS_DIR
    if not accounts.is_dir():
        return {}
    return {d.name: list(_read_lines(d / LEDGER_FILE)) for d in sorted(accounts.iterdir()) if d.is_dir()}


def cross_tenant(directory: str | Path) -> list[dict[str, Any]]:
    """Every cross-tenant request recorded: ``{to, from, credential (its kind), service,
    method, path, status, time, instance, run}``."""
    return list(_read_lines(Path(directory) / CROSS_TENANT_FILE))


@dataclass(frozen=True)
class RunSpan:
    """One run of one tenant as the emulators saw it."""

    tenant: str
    instance: str
    run: str
    first: float
    last: float
    requests: int


def run_spans(entries: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]]) -> list[RunSpan]:
    """Per tenant and (instance, run): the first and last request time. Requests without
    an instance or a run id (``-``: the product did not know it) belong to no run."""
    by_tenant: Mapping[str, Iterable[Mapping[str, Any]]] = entries if isinstance(entries, Mapping) else {"": entries}
    spans: dict[tuple[str, str, str], list[float]] = {}
    for tenant, items in by_tenant.items():
        for entry in items:
            instance, run, when = entry.get("instance"), entry.get("run"), entry.get("time")
            if not instance or not run or run == "-" or not isinstance(when, (int, float)):
                continue
            span = spans.setdefault((tenant, instance, run), [when, when, 0])
            span[0], span[1], span[2] = min(span[0], when), max(span[1], when), span[2] + 1
    return [RunSpan(t, i, r, f, la, int(n)) for (t, i, r), (f, la, n) in sorted(spans.items())]


def overlapping_runs(
    entries: Mapping[str, Iterable[Mapping[str, Any]]] | Iterable[Mapping[str, Any]],
) -> list[tuple[RunSpan, RunSpan]]:
    """Pairs of runs of one tenant, from two different instances, whose [first, last]
    request times overlap (sharing an instant counts). ``entries``: ``read_ledger``'s
    result, or one account's list. Empty: no tenant ever ran on two replicas at once."""
    found: list[tuple[RunSpan, RunSpan]] = []
    by_tenant: dict[str, list[RunSpan]] = {}
    for span in run_spans(entries):
        by_tenant.setdefault(span.tenant, []).append(span)
    for spans in by_tenant.values():
        spans.sort(key=lambda s: (s.first, s.last))
        active: list[RunSpan] = []
        for span in spans:
            active = [a for a in active if a.last >= span.first]
            found += [(a, span) for a in active if a.instance != span.instance]
            active.append(span)
    return found
