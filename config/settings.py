"""Typed, frozen settings built once from explicit sources.

Why one typed object: every module reads the same validated values, a missing or bad
setting is reported once (all of them together, exit code 2) instead of failing deep
in a run, and secrets travel as ``SecretStr`` so no repr, log line or error shows them.

Sources, highest precedence first (``load_settings``)::

    1. overrides            passed by the caller (the sandbox's endpoints, tests)
    2. process environment  the mapping passed in (usually ``os.environ``)
    3. SECRETS_DIR files    one file per setting, named like the variable
                            (``SAFETYAMP_TOKEN`` or ``safetyamp-token``), as Kubernetes
                            mounts a Secret; the value is the file's stripped text
    4. Azure Key Vault      only when AZURE_KEY_VAULT_URL or AZURE_KEY_VAULT_NAME is set;
                            secret ``SAFETYAMP-TOKEN`` feeds ``SAFETYAMP_TOKEN``
                            (Key Vault names allow only letters, digits and dashes)
    5. ``.env`` file        developer convenience
    6. defaults             declared below

Why Key Vault sits under the mounted files and the environment: an operator must be
able to override a vault value for one deployment without editing the vault (a
Secret or an env entry in the manifest wins), while the vault still beats a ``.env``
that may have been baked into an image by mistake. An empty value (``FOO=``) counts
as unset at every level, so it falls through to the next source. The settings that
locate the sources (SECRETS_DIR, AZURE_KEY_VAULT_*, KEYVAULT_TTL_SECONDS) are read
from levels 1-3 and 5 only, never from the vault itself.

Only the settings of the enabled syncs are required. Nothing here reads the
environment or touches the network at import time. ``python -m config.settings
--markdown`` prints the reference table of docs/configuration.md from this model.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from utils.errors import ConfigurationError

ALL_SYNCS: tuple[str, ...] = ("departments", "jobs", "titles", "employees", "vehicles", "rosters")
"""Every sync, in dependency (run) order."""

DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "departments": (),
    "jobs": ("departments",),
    "titles": (),
    "employees": ("jobs", "titles", "departments"),
    "vehicles": ("employees",),
    "rosters": (),
}
"""What each sync reads that another sync writes (used to warn on --only)."""

MIN_TRIGGER_TOKEN_CHARS = 32
"""SYNC_TRIGGER_TOKEN guards POST /sync and GET /diagnose: at least this long (what
``secrets.token_urlsafe(24)`` or ``openssl rand -hex 16`` gives)."""

MIN_WEBHOOK_SECRET_BYTES = 16
"""SAMSARA_WEBHOOK_SECRET is the base64 text of an HMAC-SHA256 key; decoded, it must be
at least this long (128 bits). Samsara generates the key; a shorter one is a paste error."""

SOURCE_SETTINGS: dict[str, tuple[str, ...]] = {
    "viewpoint": ("VIEWPOINT_DB_URL", "SQL_SERVER", "SQL_DATABASE", "SQL_USERNAME", "SQL_PASSWORD"),
    "graph": ("MS_GRAPH_TENANT_ID", "MS_GRAPH_CLIENT_ID", "MS_GRAPH_CLIENT_SECRET"),
    "samsara": ("SAMSARA_API_KEY",),
    "oneroster": (
        "ONEROSTER_URL",
        "ONEROSTER_CSV_PATH",
        "ONEROSTER_CLIENT_ID",
        "ONEROSTER_CLIENT_SECRET",
        "ONEROSTER_TOKEN",
        "ONEROSTER_TOKEN_URL",
    ),
    "scim": ("SCIM_URL", "SCIM_TOKEN"),
}
"""The connection settings of each source system. Any one of them set means the
operator meant to run the syncs reading that source (SYNC_SOURCES), so such a sync
with settings missing is a configuration error naming them, not silently left out.
Tuning settings (SQL_AUTH_MODE, VIEWPOINT_COMPANY...) have defaults and say nothing."""

SYNC_SOURCES: dict[str, tuple[str, ...]] = {
    "departments": ("viewpoint",),
    "jobs": ("viewpoint",),
    "titles": ("viewpoint",),
    "employees": ("viewpoint", "graph"),
    "vehicles": ("samsara",),
    "rosters": ("oneroster", "scim"),
}
"""Which sources' settings show that a sync is wanted (see SOURCE_SETTINGS)."""

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def http_url_problem(text: str, *, scheme_optional: bool = False, base: bool = False) -> str | None:
    """Why ``text`` is not an http(s) URL with a host, or None. ``scheme_optional``: a
    bare ``host:port`` means http (as the Prometheus client reads PUSHGATEWAY_URL).
    ``base``: the adapter appends API paths to it, so a query string or fragment (which
    would end up before the path) is refused."""
    if any(c.isspace() or not c.isprintable() for c in text):
        return "contains a space or a control character"
    if scheme_optional and "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        return "is not a valid URL (check the host and port)"
    if parts.scheme not in ("http", "https"):
        return "must be an https:// URL (http:// only for a local test server), such as https://api.example.com"
    if not parts.hostname:
        return "has no host name"
    if base and (parts.query or parts.fragment or text.endswith(("?", "#"))):
        return "is a base URL: API paths are added to it, so it takes no ?query or #fragment"
    return None


def _unit(unit: str) -> dict[str, Any]:
    """``json_schema_extra`` carrying a unit for the generated reference table."""
    return {"unit": unit}


def _redis_url_parameters(connection_class: Any) -> set[str]:
    """Names a REDIS_URL may carry: what redis.Redis.from_url hands to the pool and the
    connection class the scheme chose."""
    import inspect

    from redis.connection import AbstractConnection, Connection

    names = {"connection_class", "host", "port", "db", "username", "password", "path", "max_connections"}
    for cls in (connection_class or Connection, AbstractConnection):
        for klass in inspect.getmro(cls):
            init = klass.__dict__.get("__init__")
            if init is not None:
                names |= {
                    n
                    for n, p in inspect.signature(init).parameters.items()
                    if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
                }
    names.discard("self")
    return names


class Settings(BaseModel):
    """All settings. Field aliases are the environment names (the contract)."""

    # allow_inf_nan=False: "nan" fails every bound check silently and "inf" passes them
    # (an interval of inf never runs again), so neither is a number here.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore", allow_inf_nan=False)

    # --- general -------------------------------------------------------------------
    sync_types: tuple[str, ...] | None = Field(
        None, alias="SYNC_TYPES", description="Comma list of syncs to run; default: all whose settings are present."
    )
    sync_interval_minutes: float = Field(60, alias="SYNC_INTERVAL_MINUTES", gt=0, description="Minutes between daemon runs.")
    output_dir: Path = Field(Path("output"), alias="OUTPUT_DIR", description="Root of changes/, errors/, logs/.")
    output_retention_days: float = Field(
        30,
        alias="OUTPUT_RETENTION_DAYS",
        ge=0,
        description=(
            "Runs whose files under OUTPUT_DIR (changes/, errors/, logs/) are older than this are deleted "
            "at the end of each run, by the daemon and by sync_batch; 0 keeps them whatever their age."
        ),
        json_schema_extra=_unit("days"),
    )
    output_retention_runs: int = Field(
        1000,
        alias="OUTPUT_RETENTION_RUNS",
        ge=0,
        description=(
            "Runs kept per sync under OUTPUT_DIR (the newest, the one just finished included); older ones "
            "are deleted at the end of each run; 0 keeps any number. A run still being written is never deleted."
        ),
        json_schema_extra=_unit("runs per sync"),
    )
    log_format: Literal["json", "text"] = Field(
        "json", alias="LOG_FORMAT", description="Log line format: `json` (one object per line) or `text`."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL", description="Lowest level logged.")
    port: int = Field(
        8080, alias="PORT", ge=1, le=65535, description="HTTP port of the daemon (/live, /ready, /health, /metrics)."
    )
    host: str = Field(
        "0.0.0.0",  # noqa: S104 - a pod listens on all interfaces
        alias="HOST",
        min_length=1,
        description="Address the daemon listens on (all interfaces by default). Like PORT and LIVENESS_STALE_SECONDS, main.py reads it from the environment alone, before the other settings: the probes answer first.",
    )
    liveness_stale_seconds: float = Field(
        600,
        alias="LIVENESS_STALE_SECONDS",
        gt=0,
        description="`/live` fails once the worker has not shown a sign of life for this long (read from the environment alone, as PORT).",
        json_schema_extra=_unit("seconds"),
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        alias="REDIS_URL",
        description="Redis for tracker, breaker and locks (may embed a password: secret).",
    )
    redis_prefix: str = Field("safetyamp-sync:", alias="REDIS_PREFIX", description="Prefix of every Redis key.")
    sync_trigger_token: SecretStr | None = Field(
        None,
        alias="SYNC_TRIGGER_TOKEN",
        description=(
            f"Bearer token for POST /sync and GET /diagnose (at least {MIN_TRIGGER_TOKEN_CHARS} printable ASCII "
            "characters, no spaces); those endpoints are disabled when unset."
        ),
    )
    deactivation_guard_percent: float = Field(
        10,
        alias="DEACTIVATION_GUARD_PERCENT",
        ge=0,
        le=100,
        description="Refuse a run that would deactivate more than this % of active target records.",
    )
    console_approval_ttl_minutes: float = Field(
        60,
        alias="CONSOLE_APPROVAL_TTL_MINUTES",
        gt=0,
        description=(
            "How long an operator's approval of a deactivation batch held by the guard stays valid "
            "(`sync_batch.py approve`, the console); the next run after it deactivates exactly that batch, once."
        ),
        json_schema_extra=_unit("minutes"),
    )
    audit_retention_days: float = Field(
        90,
        alias="AUDIT_RETENTION_DAYS",
        gt=0,
        description="Operator actions (pause, approve, retry, dismiss, runs started) are kept this long in Redis.",
        json_schema_extra=_unit("days"),
    )
    run_history_length: int = Field(
        10000,
        alias="RUN_HISTORY_LENGTH",
        ge=1,
        description="Runs kept per sync in the run history in Redis (the console's Runs page); older ones are trimmed.",
        json_schema_extra=_unit("runs per sync"),
    )
    azure_key_vault_url: str | None = Field(
        None,
        alias="AZURE_KEY_VAULT_URL",
        description="Key Vault to read secrets from (`https://<name>.vault.azure.net`); wins over AZURE_KEY_VAULT_NAME.",
    )
    azure_key_vault_name: str | None = Field(
        None,
        alias="AZURE_KEY_VAULT_NAME",
        description="Key Vault name, short for AZURE_KEY_VAULT_URL=https://<name>.vault.azure.net.",
    )
    keyvault_ttl_seconds: float = Field(
        300,
        alias="KEYVAULT_TTL_SECONDS",
        ge=0,
        description="How long Key Vault values (and its list of names) are cached; 0 = fetch on every load.",
    )
    secrets_dir: Path | None = Field(
        None, alias="SECRETS_DIR", description="Folder of mounted secret files, one per setting (named like the variable)."
    )
    tenants_dir: Path | None = Field(
        None,
        alias="TENANTS_DIR",
        description=(
            "Folder of tenant files, one `<tenant-id>.env` per tenant, holding that tenant's settings with secrets "
            "by reference only (docs/tenants.md); `python -m config.tenants check DIR` validates them. Set: the "
            "daemon and sync_batch.py serve every tenant of the folder, watched for changes. Unset: one tenant, "
            "`default`, configured by the environment as before."
        ),
    )
    tenant_workers: int = Field(
        4,
        alias="TENANT_WORKERS",
        ge=1,
        le=64,
        description=(
            "With TENANTS_DIR: tenants this replica runs at the same time (its slots). A tenant's run occupies one "
            "slot; due tenants wait for a free slot, most overdue first (docs/tenants.md, 'Scaling rule')."
        ),
    )
    http_max_attempts: int = Field(
        5,
        alias="HTTP_MAX_ATTEMPTS",
        ge=1,
        description="Attempts per request for retriable errors.",
        json_schema_extra=_unit("attempts"),
    )
    http_max_retry_seconds: float = Field(
        120, alias="HTTP_MAX_RETRY_SECONDS", gt=0, description="Total time one request may spend retrying."
    )
    consecutive_error_limit: int = Field(
        50,
        alias="CONSECUTIVE_ERROR_LIMIT",
        ge=1,
        description="Stop a sync after this many consecutive non-record errors.",
        json_schema_extra=_unit("errors"),
    )
    pushgateway_url: str | None = Field(
        None,
        alias="PUSHGATEWAY_URL",
        description="Prometheus Pushgateway that sync_batch pushes its metrics to (push-add); unset = no push.",
    )

    # --- operator console (/console) --------------------------------------------------
    console_token: SecretStr | None = Field(
        None,
        alias="CONSOLE_TOKEN",
        description=(
            f"Password of the operator console at /console (at least {MIN_TRIGGER_TOKEN_CHARS} printable ASCII "
            "characters, no spaces); whoever signs in with it is an operator. The console is off unless this or "
            "CONSOLE_TRUSTED_PROXY is set."
        ),
    )
    console_trusted_proxy: tuple[str, ...] = Field(
        (),
        alias="CONSOLE_TRUSTED_PROXY",
        description=(
            "Comma list of addresses or networks (`127.0.0.1/32`, `10.2.0.0/16`) of the single sign-on proxy "
            "(oauth2-proxy) in front of the console: only requests from these carry trusted X-Forwarded-User, "
            "-Email and -Groups headers. Turns the console on."
        ),
    )
    console_operator_groups: tuple[str, ...] = Field(
        (),
        alias="CONSOLE_OPERATOR_GROUPS",
        description=(
            "Comma list of group names or Entra ID group object ids (from X-Forwarded-Groups) whose members may act "
            "in the console (run, pause, approve, retry)."
        ),
    )
    console_viewer_groups: tuple[str, ...] = Field(
        (),
        alias="CONSOLE_VIEWER_GROUPS",
        description=(
            "Comma list of groups whose members may look but not act; when set, a signed-in person in none of the "
            "console groups is refused. Unset: everyone the proxy lets through may look."
        ),
    )
    console_sign_out_url: str | None = Field(
        None,
        alias="CONSOLE_SIGN_OUT_URL",
        validate_default=True,
        description=(
            "Where Sign out sends someone signed in through single sign-on once the console's own session has ended: "
            "a path on the console's host, the proxy's sign-out, which ends its sign-in too. Default with "
            "CONSOLE_TRUSTED_PROXY: `/oauth2/sign_out` (oauth2-proxy; add `?rd=` and a URL-encoded address to go on "
            "to the identity provider's sign-out). Sessions signed in with CONSOLE_TOKEN go back to the sign-in form."
        ),
    )
    console_session_idle_minutes: float = Field(
        30,
        alias="CONSOLE_SESSION_IDLE_MINUTES",
        gt=0,
        le=1440,
        description=(
            "A console session signed in with CONSOLE_TOKEN ends after this long without a click (the overview's "
            "auto-refresh does not count); behind single sign-on the proxy's own session decides."
        ),
    )

    # --- resilience: circuit breakers and the single-writer lock -------------------
    breaker_failure_threshold: int = Field(
        5,
        alias="BREAKER_FAILURE_THRESHOLD",
        ge=1,
        description="Consecutive failures (5xx, timeouts, resets; never 429) that open a service's breaker, across replicas.",
        json_schema_extra=_unit("failures"),
    )
    breaker_recovery_seconds: float = Field(
        60,
        alias="BREAKER_RECOVERY_SECONDS",
        gt=0,
        description="Time an open breaker refuses calls before it lets one probe through (half-open).",
    )
    breaker_success_threshold: int = Field(
        2,
        alias="BREAKER_SUCCESS_THRESHOLD",
        ge=1,
        description="Successful probes in a row that close a half-open breaker.",
        json_schema_extra=_unit("successes"),
    )
    breaker_probe_lease_seconds: float = Field(
        30,
        alias="BREAKER_PROBE_LEASE_SECONDS",
        gt=0,
        description="Lease of the one probe allowed while half-open; if it never reports, another probe may go after this.",
    )
    lock_ttl_seconds: float = Field(
        60,
        alias="LOCK_TTL_SECONDS",
        ge=1,
        description=(
            "Expiry of a single-writer lock in Redis; confirmed before every write and every third of it. "
            "A holder that cannot reach Redis writes on for half of it, then stops."
        ),
    )
    lock_required: bool = Field(
        True,
        alias="LOCK_REQUIRED",
        description=(
            "true: refuse to run when Redis cannot be reached for the lock; "
            "false: fall back to a file lock (one machine only) with a warning."
        ),
    )

    # --- Viewpoint -----------------------------------------------------------------
    viewpoint_db_url: SecretStr | None = Field(None, alias="VIEWPOINT_DB_URL", description="Any SQLAlchemy URL; overrides SQL_*.")
    sql_server: str | None = Field(
        None, alias="SQL_SERVER", description="SQL Server host (and `,port`) of the Viewpoint database."
    )
    sql_database: str | None = Field(None, alias="SQL_DATABASE", description="Viewpoint database name (usually `Viewpoint`).")
    sql_auth_mode: Literal["sql_auth", "entra_token"] = Field(
        "sql_auth",
        alias="SQL_AUTH_MODE",
        description="`sql_auth` (SQL_USERNAME/SQL_PASSWORD) or `entra_token` (a token from azure-identity).",
    )
    sql_username: str | None = Field(None, alias="SQL_USERNAME", description="SQL login for `sql_auth`.")
    sql_password: SecretStr | None = Field(None, alias="SQL_PASSWORD", description="SQL password for `sql_auth`.")
    sql_driver: str = Field(
        "ODBC Driver 18 for SQL Server", alias="SQL_DRIVER", description="ODBC driver name used to build the connection."
    )
    viewpoint_company: int = Field(1, alias="VIEWPOINT_COMPANY", ge=0, le=255, description="PRCo (bCompany tinyint).")
    viewpoint_jc_company: int | None = Field(
        None, alias="VIEWPOINT_JC_COMPANY", ge=0, le=255, description="JCCo; defaults to VIEWPOINT_COMPANY."
    )
    viewpoint_title_column: str = Field(
        "udEmpTitle",
        alias="VIEWPOINT_TITLE_COLUMN",
        description="bPREH column holding the job title (often a ud column).",
    )
    job_history_days: int = Field(365, alias="JOB_HISTORY_DAYS", ge=1, description="Look-back for 'latest job worked' in bPRJC.")
    job_closed_statuses: tuple[int, ...] = Field(
        (3,),
        alias="JOB_CLOSED_STATUSES",
        description="JobStatus values that archive the site (1 open, 2 soft-closed, 3 hard-closed).",
    )
    job_open_statuses: tuple[int, ...] = Field(
        (1,), alias="JOB_OPEN_STATUSES", description="JobStatus values synced as active sites."
    )

    # --- SafetyAmp -----------------------------------------------------------------
    safetyamp_url: str = Field("https://api.safetyamp.com", alias="SAFETYAMP_URL", description="SafetyAmp API base URL.")
    safetyamp_token: SecretStr | None = Field(None, alias="SAFETYAMP_TOKEN", description="SafetyAmp API bearer token.")
    safetyamp_fqdn: str | None = Field(
        None, alias="SAFETYAMP_FQDN", description="<subdomain>.safetyamp.com, sent as the Fqdn header."
    )
    safetyamp_user_agent: str = Field(
        "safetyamp-sync/1.0", alias="SAFETYAMP_USER_AGENT", description="Descriptive User-Agent SafetyAmp requires."
    )
    safetyamp_page_size: int = Field(
        1000,
        alias="SAFETYAMP_PAGE_SIZE",
        ge=1,
        le=1000,
        description=(
            "Records per page when reading SafetyAmp (every page costs a request of the rate limit). "
            "A server that caps it silently is still read completely; one that refuses it with a 422 "
            "naming its maximum is read at that maximum."
        ),
        json_schema_extra=_unit("records"),
    )
    safetyamp_max_page_size: int | None = Field(
        None,
        alias="SAFETYAMP_MAX_PAGE_SIZE",
        ge=1,
        description=(
            "Largest `limit` the SafetyAmp account is known to honour (unset: unknown). With "
            "SAFETYAMP_PAGE_SIZE at or below it, a short page ends a read; unknown, a short first page "
            "costs one more request (an empty page) to rule out a silent cap."
        ),
        json_schema_extra=_unit("records"),
    )
    safetyamp_rate_limit_per_minute: float = Field(
        60,
        alias="SAFETYAMP_RATE_LIMIT_PER_MINUTE",
        gt=0,
        description="Requests per minute sent to SafetyAmp (all threads together).",
    )
    safetyamp_max_concurrency: int = Field(
        8,
        alias="SAFETYAMP_MAX_CONCURRENCY",
        ge=1,
        le=32,
        description=(
            "Parallel writes, still bounded by the rate limit: enough that slow answers (latency "
            "spikes) never leave a slot of the rate limit unused."
        ),
        json_schema_extra=_unit("threads"),
    )
    safetyamp_timeout_seconds: float = Field(
        30,
        alias="SAFETYAMP_TIMEOUT_SECONDS",
        gt=0,
        description=(
            "Timeout of one SafetyAmp request (to connect, and to answer). A runner taking over a lock "
            "that was lost waits twice this plus 1 s for the old holder's writes to land."
        ),
    )
    target_shadow: bool = Field(
        True,
        alias="TARGET_SHADOW",
        description=(
            "true: a cycle plans against the target shadow (the SafetyAmp collections of the last full read "
            "plus every write SafetyAmp acknowledged since, kept under OUTPUT_DIR/state/target-shadow and "
            "validated by a write generation in Redis) instead of reading the whole account; false: every "
            'cycle reads the whole account (docs/performance.md, "Target shadow").'
        ),
    )
    target_full_read_hours: float = Field(
        24,
        alias="TARGET_FULL_READ_HOURS",
        gt=0,
        description=(
            "A shadow older than this is not used: the cycle reads the whole SafetyAmp account (and repairs "
            "what others changed there). Also read fully: the daemon's first cycle, `sync_batch.py --full`, a "
            "cycle after another runner wrote, or after a write found the shadow stale."
        ),
        json_schema_extra=_unit("hours"),
    )
    target_shadow_scope: str | None = Field(
        None,
        alias="TARGET_SHADOW_SCOPE",
        description=(
            "Which SafetyAmp account the target shadow belongs to, in place of SAFETYAMP_URL (the FQDN, a hash "
            "of the token and REDIS_PREFIX always count): a shadow of another scope is not used. The sandbox "
            "sets it, since its emulators get new ports at every start."
        ),
    )
    safetyamp_default_role: str = Field("Field", alias="SAFETYAMP_DEFAULT_ROLE", description="Role name given to new users.")
    safetyamp_timezone: str = Field(
        "America/Chicago", alias="SAFETYAMP_TIMEZONE", description="IANA time zone given to new users and sites."
    )
    department_root_cluster_code: str = Field(
        "VISTA",
        alias="DEPARTMENT_ROOT_CLUSTER_CODE",
        description="external_code of the cluster that parents department clusters (created if missing).",
    )
    department_root_cluster_name: str = Field(
        "Viewpoint departments", alias="DEPARTMENT_ROOT_CLUSTER_NAME", description="Name of that root cluster when it is created."
    )
    default_home_site_id: int | None = Field(
        None,
        alias="DEFAULT_HOME_SITE_ID",
        ge=1,
        description="Home site for employees with neither job history nor a default job.",
    )
    employee_deactivation_mode: Literal["revoke_access", "none"] = Field(
        "revoke_access",
        alias="EMPLOYEE_DEACTIVATION_MODE",
        description="What a terminated employee gets: `revoke_access` (deactivate) or `none` (leave as is).",
    )

    # --- Graph ---------------------------------------------------------------------
    ms_graph_tenant_id: str | None = Field(
        None, alias="MS_GRAPH_TENANT_ID", description="Entra tenant of the Graph app registration."
    )
    ms_graph_client_id: str | None = Field(
        None, alias="MS_GRAPH_CLIENT_ID", description="Client (application) id of the Graph app registration."
    )
    ms_graph_client_secret: SecretStr | None = Field(
        None, alias="MS_GRAPH_CLIENT_SECRET", description="Client secret of the Graph app registration."
    )
    ms_graph_authority_url: str = Field(
        "https://login.microsoftonline.com",
        alias="MS_GRAPH_AUTHORITY_URL",
        description="Entra authority host (overridable for the sandbox).",
    )
    ms_graph_url: str = Field(
        "https://graph.microsoft.com", alias="MS_GRAPH_URL", description="Graph API base URL (overridable for the sandbox)."
    )
    ms_graph_ca_bundle: str | None = Field(
        None, alias="MS_GRAPH_CA_BUNDLE", description="CA file for a private endpoint (the sandbox)."
    )
    graph_delta: bool = Field(
        True,
        alias="GRAPH_DELTA",
        description=(
            "true: read Entra users with Graph delta query (`/users/delta`): the deltaLink and the users' "
            "employeeId, mail, userPrincipalName and accountEnabled are kept in Redis per tenant, client id "
            "and REDIS_PREFIX, so a cycle with no change in Entra costs one Graph request. false: read every "
            "user on every run."
        ),
    )
    graph_full_read_hours: float = Field(
        24,
        alias="GRAPH_FULL_READ_HOURS",
        gt=0,
        description=(
            "With GRAPH_DELTA: hours between full delta rounds (every user read again, the kept state "
            "replaced). A full round also runs when Graph refuses the deltaLink (expired after 7 days, or a "
            "reset) and when the kept state is missing or belongs to another tenant, client or prefix."
        ),
    )

    # --- Samsara -------------------------------------------------------------------
    samsara_url: str = Field("https://api.samsara.com", alias="SAMSARA_URL", description="Samsara API base URL.")
    samsara_api_key: SecretStr | None = Field(None, alias="SAMSARA_API_KEY", description="Samsara API token.")
    samsara_webhook_secret: SecretStr | None = Field(
        None,
        alias="SAMSARA_WEBHOOK_SECRET",
        description=(
            "Base64 secret key of the Samsara webhook (as Samsara shows it; it must decode to at least "
            f"{MIN_WEBHOOK_SECRET_BYTES} bytes); enables POST /webhooks/samsara."
        ),
    )
    samsara_full_read_hours: float = Field(
        24,
        alias="SAMSARA_FULL_READ_HOURS",
        gt=0,
        description=(
            "With SAMSARA_WEBHOOK_SECRET: a vehicles run reuses the saved Samsara read (kept under "
            "OUTPUT_DIR/state/samsara-read) while no signed webhook event about a vehicle or a driver (or of an "
            "unknown type) arrived since it was taken and it is younger than this; otherwise it reads every vehicle and driver again. This bounds how long a lost "
            "event or a deleted vehicle (Samsara sends no deleted event) can go unseen (docs/performance.md, "
            '"Samsara: events plus a daily read").'
        ),
        json_schema_extra=_unit("hours"),
    )
    samsara_read_scope: str | None = Field(
        None,
        alias="SAMSARA_READ_SCOPE",
        description=(
            "Which Samsara account the saved Samsara read belongs to, in place of SAMSARA_URL (a hash of the "
            "API key and REDIS_PREFIX always count): a saved read of another scope is not used. The sandbox "
            "sets it, since its emulators get new ports at every start."
        ),
    )
    webhook_debounce_seconds: float = Field(
        60,
        alias="WEBHOOK_DEBOUNCE_SECONDS",
        ge=0,
        description="Seconds a webhook-triggered vehicle sync waits to gather more events.",
    )
    samsara_page_size: int = Field(
        512,
        alias="SAMSARA_PAGE_SIZE",
        ge=1,
        le=512,
        description="Records per page when reading Samsara.",
        json_schema_extra=_unit("records"),
    )
    samsara_rate_limit_per_second: float = Field(
        25, alias="SAMSARA_RATE_LIMIT_PER_SECOND", gt=0, description="Requests per second sent to Samsara."
    )
    samsara_driver_employee_field: str = Field(
        "externalIds.payrollId",
        alias="SAMSARA_DRIVER_EMPLOYEE_FIELD",
        description="Driver field holding the Vista employee number (dotted path).",
    )
    vehicle_site_id: int | None = Field(None, alias="VEHICLE_SITE_ID", ge=1, description="SafetyAmp site id vehicles belong to.")
    vehicle_site_code: str | None = Field(
        "FLEET",
        alias="VEHICLE_SITE_CODE",
        description="external_code of the site vehicles belong to (when VEHICLE_SITE_ID is unset).",
    )
    vehicle_asset_type_id: int | None = Field(
        None, alias="VEHICLE_ASSET_TYPE_ID", ge=1, description="SafetyAmp asset type id of vehicles."
    )
    vehicle_asset_type_name: str = Field(
        "Vehicle",
        alias="VEHICLE_ASSET_TYPE_NAME",
        description="Asset type name of vehicles (when VEHICLE_ASSET_TYPE_ID is unset).",
    )

    # --- OneRoster / SCIM (issue 4) ------------------------------------------------
    oneroster_url: str | None = Field(None, alias="ONEROSTER_URL", description="OneRoster REST base URL.")
    oneroster_version: Literal["1.1", "1.2"] = Field(
        "1.2", alias="ONEROSTER_VERSION", description="OneRoster REST version: `1.1` or `1.2`."
    )
    oneroster_client_id: str | None = Field(None, alias="ONEROSTER_CLIENT_ID", description="OAuth2 client id for OneRoster.")
    oneroster_client_secret: SecretStr | None = Field(
        None, alias="ONEROSTER_CLIENT_SECRET", description="OAuth2 client secret for OneRoster."
    )
    oneroster_token_url: str | None = Field(None, alias="ONEROSTER_TOKEN_URL", description="OAuth2 token endpoint for OneRoster.")
    oneroster_csv_path: Path | None = Field(
        None, alias="ONEROSTER_CSV_PATH", description="OneRoster CSV drop (a zip or a folder), instead of ONEROSTER_URL."
    )
    scim_url: str | None = Field(None, alias="SCIM_URL", description="SCIM 2.0 base URL of the roster target.")
    scim_token: SecretStr | None = Field(None, alias="SCIM_TOKEN", description="SCIM bearer token.")
    # rosters (issue 4) additions; docs/rosters.md explains each with vendor examples
    oneroster_auth: Literal["oauth2", "oauth1", "bearer"] = Field(
        "oauth2",
        alias="ONEROSTER_AUTH",
        description="`oauth2` (client credentials at ONEROSTER_TOKEN_URL), `oauth1` (OAuth 1.0a HMAC-SHA256 request signing, OneRoster 1.1 servers) or `bearer` (a static ONEROSTER_TOKEN, e.g. ClassLink's proxy).",
    )
    oneroster_token: SecretStr | None = Field(
        None, alias="ONEROSTER_TOKEN", description="Static bearer token when ONEROSTER_AUTH=bearer."
    )
    oneroster_scopes: str | None = Field(
        None,
        alias="ONEROSTER_SCOPES",
        description="OAuth2 scopes (space or comma list); default: the version's roster-core.readonly scope.",
    )
    oneroster_token_auth_method: Literal["basic", "post"] = Field(
        "basic",
        alias="ONEROSTER_TOKEN_AUTH_METHOD",
        description="How the client authenticates at the token endpoint: HTTP Basic (`basic`) or client_id/client_secret in the body (`post`).",
    )
    oneroster_page_size: int = Field(
        1000,
        alias="ONEROSTER_PAGE_SIZE",
        ge=1,
        le=10000,
        description="`limit` per OneRoster page (servers may cap it; paging follows X-Total-Count/Link). Large: every page is a request.",
        json_schema_extra=_unit("records"),
    )
    oneroster_rate_limit_per_second: float = Field(
        10, alias="ONEROSTER_RATE_LIMIT_PER_SECOND", gt=0, description="Requests per second sent to the OneRoster server."
    )
    roster_full_sync_hours: float = Field(
        24,
        alias="ROSTER_FULL_SYNC_HOURS",
        ge=0,
        description="A full OneRoster read at least this often; delta reads (dateLastModified filter) in between; 0 = always full.",
        json_schema_extra=_unit("hours"),
    )
    roster_delta_overlap_seconds: float = Field(
        300,
        alias="ROSTER_DELTA_OVERLAP_SECONDS",
        ge=0,
        description="A delta reads from the previous run's start minus this much (clock skew between us and the SIS).",
    )
    roster_schools: tuple[str, ...] = Field(
        (), alias="ROSTER_SCHOOLS", description="Comma list of school sourcedIds to sync; empty = every school."
    )
    roster_roles: tuple[str, ...] = Field(
        ("student", "teacher"), alias="ROSTER_ROLES", description="OneRoster roles that become SCIM Users (and group members)."
    )
    roster_username_field: Literal["username", "email", "identifier", "sourcedId"] = Field(
        "username", alias="ROSTER_USERNAME_FIELD", description="OneRoster user field used as the SCIM userName."
    )
    roster_role_attribute: Literal["title", "roles", "none"] = Field(
        "title",
        alias="ROSTER_ROLE_ATTRIBUTE",
        description="Where the OneRoster role goes in SCIM: `title`, `roles` (multi-valued) or `none`.",
    )
    roster_cursor_scope: str | None = Field(
        None,
        alias="ROSTER_CURSOR_SCOPE",
        description="Which SIS and SCIM service the roster delta cursor belongs to (default: ONEROSTER_URL or ONEROSTER_CSV_PATH, and SCIM_URL). A cursor of another scope is not used: the next run reads everything. Set it to keep the cursor across a URL change that still points at the same SIS and tenant.",
    )
    scim_delete_mode: Literal["deactivate", "delete"] = Field(
        "deactivate",
        alias="SCIM_DELETE_MODE",
        description="`deactivate` (PATCH active=false; Groups lose their members) or `delete` (DELETE, explicit opt-in).",
    )
    scim_page_size: int = Field(
        1000,
        alias="SCIM_PAGE_SIZE",
        ge=1,
        le=1000,
        description="`count` per SCIM list page (a server returns at most its maxResults; paging follows totalResults).",
        json_schema_extra=_unit("records"),
    )
    scim_bulk: bool = Field(
        True,
        alias="SCIM_BULK",
        description="Send the roster's writes as SCIM Bulk requests (RFC 7644 section 3.7) when the service's /ServiceProviderConfig announces `bulk.supported`, cut to its maxOperations and maxPayloadSize; `false`: one request per change.",
    )
    scim_rate_limit_per_second: float = Field(
        20, alias="SCIM_RATE_LIMIT_PER_SECOND", gt=0, description="Requests per second sent to the SCIM service."
    )
    scim_max_concurrency: int = Field(
        4,
        alias="SCIM_MAX_CONCURRENCY",
        ge=1,
        le=32,
        description="Parallel SCIM writes, still bounded by the rate limit.",
        json_schema_extra=_unit("threads"),
    )
    scim_timeout_seconds: float = Field(
        30,
        alias="SCIM_TIMEOUT_SECONDS",
        gt=0,
        description="Timeout of one SCIM request (to connect, and to answer).",
        json_schema_extra=_unit("seconds"),
    )

    @field_validator("roster_schools", "roster_roles", mode="before")
    @classmethod
    def _split_roster_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("sync_types", mode="before")
    @classmethod
    def _split_syncs(cls, value: object) -> object:
        if isinstance(value, str):
            parts = tuple(p.strip().lower() for p in value.split(",") if p.strip())
            return parts or None
        return value

    @field_validator("sync_types")
    @classmethod
    def _known_syncs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value:
            unknown = [v for v in value if v not in ALL_SYNCS]
            if unknown:
                raise ValueError(f"unknown sync(s) {', '.join(unknown)}; known: {', '.join(ALL_SYNCS)}")
        return value

    @field_validator("job_closed_statuses", "job_open_statuses", mode="before")
    @classmethod
    def _split_ints(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            bad = [p for p in parts if not re.fullmatch(r"[0-9]{1,3}", p)]  # ASCII only: int() takes "²"
            if bad:
                raise ValueError(f"not a comma list of status numbers: {', '.join(map(repr, bad))}")
            return tuple(int(p) for p in parts)
        return value

    @field_validator("*")
    @classmethod
    def _no_control_characters(cls, value: object) -> object:
        # A line break pasted into a code, a name or a host is never meant, and would be
        # sent to a target or put in a header. Secrets have their own rules; paths are paths.
        texts = value if isinstance(value, tuple) else (value,)
        if any(isinstance(t, str) and any(unicodedata.category(c) == "Cc" for c in t) for t in texts):
            raise ValueError("contains a control character (a line break or tab copied with the value?)")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_of_choices(cls, value: object, info: Any) -> object:
        if isinstance(value, str):
            return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()
        return value

    @field_validator("output_dir")
    @classmethod
    def _folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError("exists and is not a folder")
        return value

    @field_validator(
        "safetyamp_url",
        "samsara_url",
        "ms_graph_url",
        "ms_graph_authority_url",
        "oneroster_url",
        "oneroster_token_url",
        "scim_url",
    )
    @classmethod
    def _http_url(cls, value: str | None, info: Any) -> str | None:
        base = info.field_name != "oneroster_token_url"  # the token URL is a whole endpoint
        problem = http_url_problem(value, base=base) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("pushgateway_url")
    @classmethod
    def _pushgateway_url(cls, value: str | None) -> str | None:
        problem = http_url_problem(value, scheme_optional=True) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        from redis.connection import parse_url  # the client's own parser: what it accepts, we accept

        text = value.get_secret_value()
        try:
            parsed = parse_url(text)
        except ValueError as exc:
            # redis' messages name the scheme or the port, never the password
            raise ValueError(f"not a Redis URL: {exc}") from None
        path = urlsplit(text).path.strip("/")
        if not text.startswith("unix://") and "db" not in parsed and path:
            raise ValueError("the path must be a database number, as in redis://host:6379/0")
        # parse_url passes unknown query parameters through as keyword arguments, which
        # the connection refuses later with a TypeError (a traceback at the first use).
        unknown = sorted(set(parsed) - _redis_url_parameters(parsed.get("connection_class")))
        if unknown:
            raise ValueError(f"unknown query parameter(s) {', '.join(unknown)}: the Redis client does not accept them")
        return value

    @field_validator("sync_trigger_token")
    @classmethod
    def _strong_trigger_token(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if value is not None and not _VISIBLE_ASCII.fullmatch(text):
            raise ValueError("must be printable ASCII without spaces or line breaks (it is sent in an Authorization header)")
        if value is not None and len(text) < MIN_TRIGGER_TOKEN_CHARS:
            raise ValueError(
                f"too short: use at least {MIN_TRIGGER_TOKEN_CHARS} characters, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("console_token")
    @classmethod
    def _strong_console_token(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if value is not None and not _VISIBLE_ASCII.fullmatch(text):
            raise ValueError("must be printable ASCII without spaces or line breaks (a line break copied with it?)")
        if value is not None and len(text) < MIN_TRIGGER_TOKEN_CHARS:
            raise ValueError(
                f"too short: use at least {MIN_TRIGGER_TOKEN_CHARS} characters, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("console_trusted_proxy", "console_operator_groups", "console_viewer_groups", mode="before")
    @classmethod
    def _split_console_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("console_trusted_proxy")
    @classmethod
    def _proxy_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        networks = []
        for item in value:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network such as 127.0.0.1/32 or 10.2.0.0/16") from None
            if network.prefixlen == 0:
                raise ValueError(
                    f"{item!r} trusts every address: anyone who reaches the port could sign in as anyone; "
                    "name the proxy's own address (127.0.0.1/32 for a sidecar)"
                )
            networks.append(str(network))
        return tuple(networks)

    @field_validator("console_sign_out_url")
    @classmethod
    def _sign_out_path(cls, value: str | None, info: Any) -> str | None:
        value = (value or "").strip() or None
        if value is None:
            return "/oauth2/sign_out" if info.data.get("console_trusted_proxy") else None
        if not value.startswith("/") or value.startswith("//") or "\\" in value or any(c.isspace() for c in value):
            raise ValueError(
                f"{value!r} is not a path on the console's host (such as /oauth2/sign_out): the console sends "
                "people only to its own host; the proxy's `rd` parameter goes on from there"
            )
        return value

    @field_validator("console_operator_groups", "console_viewer_groups")
    @classmethod
    def _groups_need_proxy(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        if value and "console_trusted_proxy" in info.data and not info.data["console_trusted_proxy"]:
            raise ValueError("groups come from the sign-on proxy's X-Forwarded-Groups header: set CONSOLE_TRUSTED_PROXY too")
        return value

    @field_validator("samsara_webhook_secret")
    @classmethod
    def _webhook_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        try:
            key = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64: paste the secret key exactly as Samsara shows it for the webhook") from None
        if len(key) < MIN_WEBHOOK_SECRET_BYTES:
            raise ValueError(f"decodes to fewer than {MIN_WEBHOOK_SECRET_BYTES} bytes: not a Samsara webhook secret key")
        return value

    @field_validator("safetyamp_token", "samsara_api_key", "scim_token", "oneroster_token")
    @classmethod
    def _header_credential(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _VISIBLE_ASCII.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be printable ASCII without spaces or line breaks (it is sent in an HTTP header; "
                "a stray newline or space from copying it?)"
            )
        return value

    @field_validator("safetyamp_fqdn")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_NAME.fullmatch(value):
            raise ValueError("must be a host name such as acme.safetyamp.com (no https://, no path)")
        return value

    @field_validator("safetyamp_user_agent")
    @classmethod
    def _user_agent(cls, value: str) -> str:
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise ValueError("must be printable ASCII on one line (it is sent as the User-Agent header)")
        return value

    @field_validator("safetyamp_timezone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            if available_timezones():  # without a time zone database nothing can be judged
                raise ValueError("not an IANA time zone name, such as America/Chicago") from None
        return value

    @field_validator("ms_graph_ca_bundle")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file")
        return value

    @field_validator("viewpoint_db_url")
    @classmethod
    def _db_url(cls, value: SecretStr | None) -> SecretStr | None:
        from services.viewpoint_api import db_url_problem  # the adapter owns what a usable URL is

        problem = db_url_problem(value.get_secret_value()) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("samsara_driver_employee_field")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", value):
            raise ValueError("must be a dotted path of field names, such as externalIds.payrollId")
        return value

    @field_validator("viewpoint_title_column")
    @classmethod
    def _title_column(cls, value: str) -> str:
        # A bare identifier: the name becomes a quoted column in the statement, so no
        # brackets, quotes, spaces or semicolons can reach SQL, even quoted.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value):
            raise ValueError(
                "must be a plain column name: letters, digits and _ (no brackets, quotes, spaces or semicolons), "
                "at most 128 characters"
            )
        from services.viewpoint_api import title_column_problem

        problem = title_column_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    # --- derived -------------------------------------------------------------------
    @property
    def jc_company(self) -> int:
        return self.viewpoint_company if self.viewpoint_jc_company is None else self.viewpoint_jc_company

    def _is_set(self, env_name: str) -> bool:
        field = _FIELD_OF[env_name]
        return bool(getattr(self, field))

    def wanted(self, sync: str) -> bool:
        """Whether a connection setting of a source this sync reads is set (SOURCE_SETTINGS)."""
        return any(self._is_set(n) for source in SYNC_SOURCES[sync] for n in SOURCE_SETTINGS[source])

    def missing_for(self, sync: str) -> list[str]:
        """Names of required settings that are absent for one sync (alternatives in words)."""
        need: list[str] = []
        if sync in ("departments", "jobs", "titles", "employees"):
            need += self._missing_viewpoint()
        if sync in ("departments", "jobs", "titles", "employees", "vehicles"):
            need += [n for n in ("SAFETYAMP_TOKEN", "SAFETYAMP_FQDN") if not self._is_set(n)]
        if sync == "employees":
            graph = SOURCE_SETTINGS["graph"]
            if any(self._is_set(n) for n in graph):  # optional, but all three or none
                need += [n for n in graph if not self._is_set(n)]
        if sync == "vehicles" and not self.samsara_api_key:
            need.append("SAMSARA_API_KEY")
        if sync == "rosters":
            if not (self.oneroster_url or self.oneroster_csv_path):
                need.append("ONEROSTER_URL or ONEROSTER_CSV_PATH")
            elif self.oneroster_url and self.oneroster_auth == "bearer" and not self.oneroster_token:
                need.append("ONEROSTER_TOKEN (ONEROSTER_AUTH=bearer)")
            elif self.oneroster_url and self.oneroster_auth != "bearer":
                need += [n for n in ("ONEROSTER_CLIENT_ID", "ONEROSTER_CLIENT_SECRET") if not self._is_set(n)]
            need += [n for n in ("SCIM_URL", "SCIM_TOKEN") if not self._is_set(n)]
        return need

    def _missing_viewpoint(self) -> list[str]:
        if self.viewpoint_db_url:
            return []
        parts = ["SQL_SERVER", "SQL_DATABASE"]
        if self.sql_auth_mode == "sql_auth":
            parts += ["SQL_USERNAME", "SQL_PASSWORD"]
        if not any(self._is_set(n) for n in SOURCE_SETTINGS["viewpoint"]):
            return [f"VIEWPOINT_DB_URL (or {', '.join(parts)})"]
        # Some SQL_* are set: the operator chose that way; name exactly what it lacks.
        return [n for n in parts if not self._is_set(n)]

    @property
    def graph_configured(self) -> bool:
        return bool(self.ms_graph_tenant_id and self.ms_graph_client_id and self.ms_graph_client_secret)

    def enabled_syncs(self) -> tuple[str, ...]:
        """SYNC_TYPES if given, else every sync whose source settings are (even partly)
        present, in run order; ``check`` then names whatever those lack."""
        if self.sync_types:
            return tuple(s for s in ALL_SYNCS if s in self.sync_types)
        return tuple(s for s in ALL_SYNCS if self.wanted(s))

    def check(self, syncs: tuple[str, ...] | None = None) -> None:
        """Raise ConfigurationError naming, per sync, every missing setting of the given
        syncs, and every problem loading the database driver they need."""
        syncs = syncs if syncs is not None else self.enabled_syncs()
        if not syncs:
            if self._is_set("SAFETYAMP_TOKEN") or self._is_set("SAFETYAMP_FQDN"):
                raise ConfigurationError(
                    "no sync is configured: SafetyAmp is set but no source is: add VIEWPOINT_DB_URL (or SQL_*) "
                    "for departments, jobs, titles and employees, or SAMSARA_API_KEY for vehicles"
                )
            raise ConfigurationError(
                "no sync is configured: set VIEWPOINT_DB_URL (or SQL_*) and SAFETYAMP_TOKEN/SAFETYAMP_FQDN, "
                "SAMSARA_API_KEY, or ONEROSTER_*/SCIM_* (or run with --sandbox)"
            )
        # One line per group of syncs lacking the same settings, in run order:
        # "departments, jobs, titles, employees: SAFETYAMP_FQDN is missing".
        groups: dict[tuple[str, ...], list[str]] = {}
        for sync in syncs:
            missing = tuple(self.missing_for(sync))
            if missing:
                groups.setdefault(missing, []).append(sync)
        problems = []
        for missing, names in groups.items():
            line = f"{', '.join(names)}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
            if any(m.startswith("MS_GRAPH_") for m in missing):
                line += f" (the Graph e-mail lookup needs all of {', '.join(SOURCE_SETTINGS['graph'])}, or none)"
            problems.append(line)
        if not problems and {"departments", "jobs", "titles", "employees"} & set(syncs):
            from services.viewpoint_api import connection_problems

            problems += connection_problems(self)
        if problems:
            raise ConfigurationError(problems)

    @property
    def key_vault_url(self) -> str | None:
        """AZURE_KEY_VAULT_URL, else the URL of AZURE_KEY_VAULT_NAME, else None."""
        from config.keyvault import vault_url_from

        return vault_url_from(
            {"AZURE_KEY_VAULT_URL": self.azure_key_vault_url or "", "AZURE_KEY_VAULT_NAME": self.azure_key_vault_name or ""}
        )

    def secret_values(self) -> list[str]:
        """Every secret's plain value (for scrubbing logs and output), plus the
        credentials written inside any URL setting (``SAFETYAMP_URL=...?api_key=...``,
        ``https://token@host``), which are secrets even though the URL is not."""
        from utils.scrub import url_secrets

        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
                out.extend(url_secrets(value.get_secret_value()))
            elif isinstance(value, str):
                out.extend(url_secrets(value))
        return out


_FIELD_OF: dict[str, str] = {str(f.alias): name for name, f in Settings.model_fields.items() if f.alias}
"""Environment name -> field name."""


def _read_secrets_dir(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_dir():
        raise ConfigurationError(f"SECRETS_DIR={str(path)!r}: {'not a folder' if path.exists() else 'no such folder'}")
    try:
        items = sorted(path.iterdir())
    except OSError as exc:
        raise ConfigurationError(f"SECRETS_DIR={str(path)!r}: cannot be listed ({type(exc).__name__})") from None
    problems = []
    for item in items:
        if item.is_file() and not item.name.startswith("."):
            try:
                text = item.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"SECRETS_DIR file {item.name} cannot be read ({type(exc).__name__})")
                continue
            values[item.name.upper().replace("-", "_")] = text
    if problems:
        raise ConfigurationError(problems)
    return values


def logging_options(environ: Mapping[str, str], level: str, fmt: str) -> tuple[str, str]:
    """LOG_LEVEL and LOG_FORMAT from ``environ`` where they are valid, else ``level``
    and ``fmt``. Entry points configure logging before settings are loaded (so start-up
    can log); an invalid value must then become the configuration error naming it, as
    it does from .env or a secret file, not a crash inside the logging set-up."""
    levels = get_args(Settings.model_fields["log_level"].annotation)
    formats = get_args(Settings.model_fields["log_format"].annotation)
    wanted_level = (environ.get("LOG_LEVEL") or "").strip().upper()
    wanted_fmt = (environ.get("LOG_FORMAT") or "").strip().lower()
    return (wanted_level if wanted_level in levels else level, wanted_fmt if wanted_fmt in formats else fmt)


class SecretSource(Protocol):
    """A remote store of settings (Key Vault): values for the names it holds."""

    def values(self, names: Iterable[str]) -> dict[str, str]:
        """``{ENV_NAME: value}`` for those of ``names`` the store holds (absent ones left out)."""
        ...


KeyVaultFactory = Callable[[str], SecretSource]
"""Builds the source for a vault URL. The daemon passes one that returns a long-lived
``KeyVaultSource`` so its TTL cache survives settings reloads."""

BOOTSTRAP_NAMES: frozenset[str] = frozenset(
    {"SECRETS_DIR", "AZURE_KEY_VAULT_URL", "AZURE_KEY_VAULT_NAME", "KEYVAULT_TTL_SECONDS"}
)
"""Settings that locate the sources: never read from Key Vault itself."""


def setting_names() -> list[str]:
    """Every environment name of Settings, in declaration order."""
    return [str(f.alias) for f in Settings.model_fields.values() if f.alias]


def _present(values: Mapping[str, str | None]) -> dict[str, str]:
    """Drop unset and empty values: ``FOO=`` means unset, at every level."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def load_settings(
    environ: Mapping[str, str],
    *,
    dotenv_path: str | Path | None = ".env",
    overrides: Mapping[str, str] | None = None,
    keyvault_factory: KeyVaultFactory | None = None,
) -> Settings:
    """Build Settings from an explicit mapping (usually ``os.environ``), SECRETS_DIR
    files, Azure Key Vault (when configured) and ``.env``; precedence in the module
    docstring. ``keyvault_factory(vault_url)`` replaces the default
    ``KeyVaultSource`` (tests, or a daemon keeping one cached source).

    Raises ConfigurationError naming every bad setting at once; values of secret
    settings are never shown."""
    from dotenv import dotenv_values  # local: keep import time free of file access

    dotenv: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        dotenv = _present(dotenv_values(dotenv_path))
    env = _present({k: v for k, v in environ.items() if k.isupper()})
    over = _present(overrides or {})

    problems: list[str] = []
    secrets_dir = over.get("SECRETS_DIR") or env.get("SECRETS_DIR") or dotenv.get("SECRETS_DIR")
    files: dict[str, str] = {}
    if secrets_dir:
        try:
            files = _present(_read_secrets_dir(Path(secrets_dir)))
        except ConfigurationError as exc:  # named with every other problem below
            problems += exc.problems
    above_vault = {**files, **env, **over}

    vault: dict[str, str] = {}
    bootstrap = {**dotenv, **above_vault}
    from config.keyvault import KeyVaultSource, vault_url_from  # local: no Azure import unless used

    try:
        vault_url = vault_url_from(bootstrap)
    except ConfigurationError as exc:
        problems += exc.problems
        vault_url = None
    if vault_url:
        wanted = [n for n in setting_names() if n not in above_vault and n not in BOOTSTRAP_NAMES]
        if keyvault_factory is not None:
            source: SecretSource = keyvault_factory(vault_url)
        else:
            ttl = _float_or(bootstrap.get("KEYVAULT_TTL_SECONDS"), 300.0)
            source = KeyVaultSource(vault_url, ttl_seconds=ttl)
        vault = _present(source.values(wanted))
        vault = {k: v for k, v in vault.items() if k not in BOOTSTRAP_NAMES}

    merged = {**dotenv, **vault, **above_vault}
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems += _describe(exc, merged)
        raise ConfigurationError(problems) from None
    if problems:
        raise ConfigurationError(problems)
    return settings


PROBE_NAMES = ("PORT", "HOST", "LIVENESS_STALE_SECONDS")
"""What the daemon's listener and /live need, read before everything else."""


@dataclass(frozen=True)
class ProbeSettings:
    """PORT, HOST and LIVENESS_STALE_SECONDS, validated as Settings validates them."""

    port: int
    host: str
    liveness_stale_seconds: float


def probe_settings(environ: Mapping[str, str]) -> ProbeSettings:
    """The probe settings from ``environ`` alone (no .env, secret files or Key Vault):
    main.py serves /live and /ready before it reads the rest, so a slow or broken
    configuration never looks like a hang. Raises ConfigurationError naming each bad one."""
    given = _present({name: environ.get(name) for name in PROBE_NAMES})
    try:
        s = Settings.model_validate(given)  # every other setting keeps its default here
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, given)) from None
    return ProbeSettings(port=s.port, host=s.host, liveness_stale_seconds=s.liveness_stale_seconds)


def _float_or(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default  # the model reports the bad value


def _describe(exc: ValidationError, merged: Mapping[str, str]) -> list[str]:
    from utils.scrub import scrub  # a URL setting may carry a credential in its query

    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        field = _FIELD_OF.get(field, field)  # errors are located by alias (the input's key)
        info = Settings.model_fields.get(field)
        alias = str(info.alias) if info is not None and info.alias else field
        message = str(err["msg"]).removeprefix("Value error, ")
        if info is not None and _is_secret(info):
            # No "NAME=" either: log scrubbers rightly mask whatever follows "TOKEN=".
            problems.append(f"{alias} (secret, not shown): {message}")
        else:
            problems.append(f"{alias}={scrub(str(merged.get(alias, '')))!r}: {message}")
    return problems


def _is_secret(info: FieldInfo) -> bool:
    return "SecretStr" in str(info.annotation)


# --------------------------------------------------------------------------- reference


_UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_PER_MINUTE", "requests/minute"),
    ("_PER_SECOND", "requests/second"),
    ("_SECONDS", "seconds"),
    ("_MINUTES", "minutes"),
    ("_DAYS", "days"),
    ("_PERCENT", "percent"),
)


def _unit_of(alias: str, info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("unit"), str):
        return str(extra["unit"])
    for suffix, unit in _UNIT_SUFFIXES:
        if alias.endswith(suffix):
            return unit
    return ""


def _default_text(info: FieldInfo) -> str:
    value = info.default
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()  # a default is public (it is in this file)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    """The reference table of docs/configuration.md, generated from the model."""
    lines = [
        "| env name | default | unit | secret | meaning |",
        "|---|---|---|---|---|",
    ]
    for info in Settings.model_fields.values():
        alias = str(info.alias)
        default = _default_text(info)
        shown = f"`{_cell(default)}`" if default != "(unset)" else default
        lines.append(
            f"| `{alias}` | {shown} | {_unit_of(alias, info)} | {'yes' if _is_secret(info) else ''} "
            f"| {_cell(info.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.settings", description="Settings reference.")
    parser.add_argument("--markdown", action="store_true", help="print the settings table (docs/configuration.md)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(settings_markdown())
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
