"""The bad-configuration corpus, through the real entry points.

Every wrong value of every setting, from any source (environment, ``.env``, a mounted
secret file), must end the same way: ``sync_batch.py`` exits 2, names every bad setting on
stderr and, with ``--json``, still prints ``{"status": "failed", "error": "configuration",
"problems": [...]}``; the daemon (``main.py``) stays up, logs every problem and answers
/ready 503 with them. Never a traceback, never a secret value. A setting that only the
database can judge (a title column that does not exist) fails the syncs that read it,
by name, and the others still run.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests

from config.settings import setting_names
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

SECRET = "S3NT1NEL-config-secret"
"""A secret value (20 characters: too short for SYNC_TRIGGER_TOKEN) that must never be echoed."""

VALID: dict[str, str] = {
    # A complete vehicles configuration pointing at a closed port: the corpus cases add
    # one bad value to it, so the bad value alone is what makes the run a configuration error.
    "SAFETYAMP_TOKEN": "safetyamp-token-0123456789",
    "SAFETYAMP_FQDN": "acme.safetyamp.com",
    "SAFETYAMP_URL": "http://127.0.0.1:9",
    "SAMSARA_API_KEY": "samsara-key-0123456789",
    "SAMSARA_URL": "http://127.0.0.1:9",
    "HTTP_MAX_ATTEMPTS": "1",
    "LOCK_REQUIRED": "false",
}


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without any of the product's settings."""
    names = set(setting_names()) | {"SANDBOX_FAULTS", "PORT", "HOST"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(
        {
            "OUTPUT_DIR": str(tmp / "output"),
            "REDIS_PREFIX": f"cfg-{tmp.name}-{zlib.crc32(str(tmp).encode()):08x}:",
            "SANDBOX_SEED": "7",
        }
    )
    env.update(extra)
    return env


def run_batch(
    tmp: Path, env: dict[str, str], *args: str, sandbox: bool = False, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "sync_batch.py"), "--json", *args]
    if sandbox:
        cmd += ["--sandbox", "--sandbox-dir", str(tmp / "sandbox"), "--sandbox-size", "30"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no JSON summary on stdout (exit {proc.returncode})\nstderr: {proc.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def assert_configuration_error(proc: subprocess.CompletedProcess[str], fragments: list[str]) -> list[str]:
    """Exit 2, no traceback, the summary line, and every fragment named (on stderr too)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    summary = summary_of(proc)
    assert summary["status"] == "failed" and summary["error"] == "configuration", summary
    problems: list[str] = summary["problems"]
    text = "\n".join(problems)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not named in {problems}"
        assert fragment in proc.stderr, f"{fragment!r} not on stderr: {proc.stderr[-2000:]}"
    assert SECRET not in proc.stdout + proc.stderr
    return problems


# --------------------------------------------------------------------------- the corpus

B64_15 = base64.b64encode(b"x" * 15).decode()

CORPUS: list[tuple[str, dict[str, str], list[str]]] = [
    # general
    ("sync-types-unknown", {"SYNC_TYPES": "vehicles,payroll"}, ["SYNC_TYPES", "payroll"]),
    ("interval-zero", {"SYNC_INTERVAL_MINUTES": "0"}, ["SYNC_INTERVAL_MINUTES"]),
    ("interval-negative", {"SYNC_INTERVAL_MINUTES": "-5"}, ["SYNC_INTERVAL_MINUTES"]),
    ("interval-text", {"SYNC_INTERVAL_MINUTES": "soon"}, ["SYNC_INTERVAL_MINUTES"]),
    ("interval-nan", {"SYNC_INTERVAL_MINUTES": "nan"}, ["SYNC_INTERVAL_MINUTES"]),
    ("interval-inf", {"SYNC_INTERVAL_MINUTES": "inf"}, ["SYNC_INTERVAL_MINUTES"]),
    ("output-dir-is-a-file", {"OUTPUT_DIR": "{tmp}/a-file"}, ["OUTPUT_DIR"]),
    ("log-level", {"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL"]),
    ("log-format", {"LOG_FORMAT": "xml"}, ["LOG_FORMAT"]),
    ("port-range", {"PORT": "70000"}, ["PORT"]),
    ("port-text", {"PORT": "eighty"}, ["PORT"]),
    ("liveness-stale-zero", {"LIVENESS_STALE_SECONDS": "0"}, ["LIVENESS_STALE_SECONDS"]),
    ("liveness-stale-inf", {"LIVENESS_STALE_SECONDS": "inf"}, ["LIVENESS_STALE_SECONDS"]),
    ("host-newline", {"HOST": "127.0.0.1\nx"}, ["HOST"]),
    ("port-unicode-digit", {"PORT": "\u00b2"}, ["PORT"]),
    ("redis-url-garbage", {"REDIS_URL": "garbage"}, ["REDIS_URL"]),
    ("redis-url-http", {"REDIS_URL": "http://cache:6379/0"}, ["REDIS_URL"]),
    ("redis-url-port", {"REDIS_URL": "redis://cache:notaport/0"}, ["REDIS_URL"]),
    # the client's parser passes unknown query parameters on: a TypeError at first use
    ("redis-url-unknown-parameter", {"REDIS_URL": "redis://127.0.0.1:6379/0?api_key=S3NT1NEL"}, ["REDIS_URL", "api_key"]),
    ("trigger-token-1-char", {"SYNC_TRIGGER_TOKEN": "x"}, ["SYNC_TRIGGER_TOKEN", "32"]),
    ("trigger-token-short", {"SYNC_TRIGGER_TOKEN": SECRET}, ["SYNC_TRIGGER_TOKEN", "32"]),
    ("trigger-token-space", {"SYNC_TRIGGER_TOKEN": "a" * 20 + " " + "b" * 20}, ["SYNC_TRIGGER_TOKEN"]),
    ("guard-over-100", {"DEACTIVATION_GUARD_PERCENT": "101"}, ["DEACTIVATION_GUARD_PERCENT"]),
    ("guard-negative", {"DEACTIVATION_GUARD_PERCENT": "-1"}, ["DEACTIVATION_GUARD_PERCENT"]),
    ("guard-nan", {"DEACTIVATION_GUARD_PERCENT": "nan"}, ["DEACTIVATION_GUARD_PERCENT"]),
    ("key-vault-url-http", {"AZURE_KEY_VAULT_URL": "http://contoso.vault.azure.net"}, ["AZURE_KEY_VAULT_URL"]),
    ("key-vault-url-garbage", {"AZURE_KEY_VAULT_URL": "notaurl"}, ["AZURE_KEY_VAULT_URL"]),
    ("key-vault-name", {"AZURE_KEY_VAULT_NAME": "bad name!"}, ["AZURE_KEY_VAULT_NAME"]),
    ("keyvault-ttl-negative", {"KEYVAULT_TTL_SECONDS": "-1"}, ["KEYVAULT_TTL_SECONDS"]),
    ("secrets-dir-missing", {"SECRETS_DIR": "{tmp}/nope"}, ["SECRETS_DIR"]),
    ("secrets-dir-is-a-file", {"SECRETS_DIR": "{tmp}/a-file"}, ["SECRETS_DIR"]),
    ("http-attempts-zero", {"HTTP_MAX_ATTEMPTS": "0"}, ["HTTP_MAX_ATTEMPTS"]),
    ("http-retry-negative", {"HTTP_MAX_RETRY_SECONDS": "-1"}, ["HTTP_MAX_RETRY_SECONDS"]),
    ("error-limit-zero", {"CONSECUTIVE_ERROR_LIMIT": "0"}, ["CONSECUTIVE_ERROR_LIMIT"]),
    ("pushgateway-scheme", {"PUSHGATEWAY_URL": "ftp://gateway:9091"}, ["PUSHGATEWAY_URL"]),
    ("pushgateway-no-host", {"PUSHGATEWAY_URL": "http://"}, ["PUSHGATEWAY_URL"]),
    ("breaker-threshold-zero", {"BREAKER_FAILURE_THRESHOLD": "0"}, ["BREAKER_FAILURE_THRESHOLD"]),
    ("breaker-recovery-zero", {"BREAKER_RECOVERY_SECONDS": "0"}, ["BREAKER_RECOVERY_SECONDS"]),
    ("breaker-successes-zero", {"BREAKER_SUCCESS_THRESHOLD": "0"}, ["BREAKER_SUCCESS_THRESHOLD"]),
    ("breaker-lease-inf", {"BREAKER_PROBE_LEASE_SECONDS": "inf"}, ["BREAKER_PROBE_LEASE_SECONDS"]),
    ("lock-ttl-zero", {"LOCK_TTL_SECONDS": "0"}, ["LOCK_TTL_SECONDS"]),
    ("lock-required-maybe", {"LOCK_REQUIRED": "maybe"}, ["LOCK_REQUIRED"]),
    # Viewpoint
    ("db-url-not-a-url", {"VIEWPOINT_DB_URL": "notaurl"}, ["VIEWPOINT_DB_URL"]),
    ("db-url-unknown-dialect", {"VIEWPOINT_DB_URL": "nosuchdb://host/db"}, ["VIEWPOINT_DB_URL", "nosuchdb"]),
    ("db-url-unknown-driver", {"VIEWPOINT_DB_URL": "mssql+nosuchdriver://host/db"}, ["VIEWPOINT_DB_URL", "nosuchdriver"]),
    ("sql-auth-mode", {"SQL_AUTH_MODE": "kerberos"}, ["SQL_AUTH_MODE"]),
    ("company-too-big", {"VIEWPOINT_COMPANY": "300"}, ["VIEWPOINT_COMPANY"]),
    ("company-text", {"VIEWPOINT_COMPANY": "one"}, ["VIEWPOINT_COMPANY"]),
    ("jc-company-too-big", {"VIEWPOINT_JC_COMPANY": "256"}, ["VIEWPOINT_JC_COMPANY"]),
    ("title-column-email", {"VIEWPOINT_TITLE_COLUMN": "Email"}, ["VIEWPOINT_TITLE_COLUMN", "Email"]),
    ("title-column-email-lowercase", {"VIEWPOINT_TITLE_COLUMN": "email"}, ["VIEWPOINT_TITLE_COLUMN"]),
    ("title-column-ssn", {"VIEWPOINT_TITLE_COLUMN": "SSN"}, ["VIEWPOINT_TITLE_COLUMN"]),
    ("title-column-prdept", {"VIEWPOINT_TITLE_COLUMN": "PRDept"}, ["VIEWPOINT_TITLE_COLUMN"]),
    ("title-column-injection", {"VIEWPOINT_TITLE_COLUMN": "udTitle; DROP TABLE bPREH--"}, ["VIEWPOINT_TITLE_COLUMN"]),
    ("title-column-bracketed", {"VIEWPOINT_TITLE_COLUMN": "[udTitle]"}, ["VIEWPOINT_TITLE_COLUMN"]),
    ("job-history-zero", {"JOB_HISTORY_DAYS": "0"}, ["JOB_HISTORY_DAYS"]),
    ("closed-statuses-text", {"JOB_CLOSED_STATUSES": "closed"}, ["JOB_CLOSED_STATUSES"]),
    ("open-statuses-unicode-digit", {"JOB_OPEN_STATUSES": "\u00b2"}, ["JOB_OPEN_STATUSES"]),
    # SafetyAmp
    ("safetyamp-url-no-scheme", {"SAFETYAMP_URL": "api.safetyamp.com"}, ["SAFETYAMP_URL"]),
    ("safetyamp-url-ftp", {"SAFETYAMP_URL": "ftp://api.safetyamp.com"}, ["SAFETYAMP_URL"]),
    ("safetyamp-token-space", {"SAFETYAMP_TOKEN": SECRET + " x"}, ["SAFETYAMP_TOKEN"]),
    ("safetyamp-token-newline", {"SAFETYAMP_TOKEN": SECRET + "\n"}, ["SAFETYAMP_TOKEN"]),
    ("safetyamp-fqdn-url", {"SAFETYAMP_FQDN": "https://acme.safetyamp.com"}, ["SAFETYAMP_FQDN"]),
    ("safetyamp-fqdn-space", {"SAFETYAMP_FQDN": "acme safetyamp"}, ["SAFETYAMP_FQDN"]),
    ("user-agent-crlf", {"SAFETYAMP_USER_AGENT": "agent\r\nX-Injected: 1"}, ["SAFETYAMP_USER_AGENT"]),
    ("page-size-zero", {"SAFETYAMP_PAGE_SIZE": "0"}, ["SAFETYAMP_PAGE_SIZE"]),
    ("page-size-over", {"SAFETYAMP_PAGE_SIZE": "1001"}, ["SAFETYAMP_PAGE_SIZE"]),
    ("max-page-size-zero", {"SAFETYAMP_MAX_PAGE_SIZE": "0"}, ["SAFETYAMP_MAX_PAGE_SIZE"]),
    ("rate-zero", {"SAFETYAMP_RATE_LIMIT_PER_MINUTE": "0"}, ["SAFETYAMP_RATE_LIMIT_PER_MINUTE"]),
    ("concurrency-zero", {"SAFETYAMP_MAX_CONCURRENCY": "0"}, ["SAFETYAMP_MAX_CONCURRENCY"]),
    ("concurrency-over", {"SAFETYAMP_MAX_CONCURRENCY": "33"}, ["SAFETYAMP_MAX_CONCURRENCY"]),
    ("timeout-zero", {"SAFETYAMP_TIMEOUT_SECONDS": "0"}, ["SAFETYAMP_TIMEOUT_SECONDS"]),
    ("timezone-unknown", {"SAFETYAMP_TIMEZONE": "Mars/Phobos"}, ["SAFETYAMP_TIMEZONE"]),
    ("home-site-negative", {"DEFAULT_HOME_SITE_ID": "-1"}, ["DEFAULT_HOME_SITE_ID"]),
    ("home-site-text", {"DEFAULT_HOME_SITE_ID": "main"}, ["DEFAULT_HOME_SITE_ID"]),
    ("deactivation-mode", {"EMPLOYEE_DEACTIVATION_MODE": "delete"}, ["EMPLOYEE_DEACTIVATION_MODE"]),
    ("root-cluster-code-newline", {"DEPARTMENT_ROOT_CLUSTER_CODE": "VISTA\n"}, ["DEPARTMENT_ROOT_CLUSTER_CODE"]),
    ("root-cluster-name-bell", {"DEPARTMENT_ROOT_CLUSTER_NAME": "Viewpoint\x07"}, ["DEPARTMENT_ROOT_CLUSTER_NAME"]),
    ("default-role-tab", {"SAFETYAMP_DEFAULT_ROLE": "Field\t"}, ["SAFETYAMP_DEFAULT_ROLE"]),
    ("redis-prefix-newline", {"REDIS_PREFIX": "sync:\n"}, ["REDIS_PREFIX"]),
    ("sql-server-newline", {"SQL_SERVER": "vista\n"}, ["SQL_SERVER"]),
    # Graph
    ("graph-url-no-scheme", {"MS_GRAPH_URL": "graph.microsoft.com"}, ["MS_GRAPH_URL"]),
    ("authority-no-scheme", {"MS_GRAPH_AUTHORITY_URL": "login.microsoftonline.com"}, ["MS_GRAPH_AUTHORITY_URL"]),
    ("ca-bundle-missing", {"MS_GRAPH_CA_BUNDLE": "{tmp}/nope.pem"}, ["MS_GRAPH_CA_BUNDLE"]),
    # Samsara
    ("samsara-url-no-scheme", {"SAMSARA_URL": "api.samsara.com"}, ["SAMSARA_URL"]),
    ("samsara-key-space", {"SAMSARA_API_KEY": "samsara key"}, ["SAMSARA_API_KEY"]),
    ("webhook-secret-not-base64", {"SAMSARA_WEBHOOK_SECRET": "not base64!"}, ["SAMSARA_WEBHOOK_SECRET", "base64"]),
    ("webhook-secret-1-byte", {"SAMSARA_WEBHOOK_SECRET": "QQ=="}, ["SAMSARA_WEBHOOK_SECRET", "16"]),
    ("webhook-secret-15-bytes", {"SAMSARA_WEBHOOK_SECRET": B64_15}, ["SAMSARA_WEBHOOK_SECRET", "16"]),
    ("webhook-debounce-negative", {"WEBHOOK_DEBOUNCE_SECONDS": "-1"}, ["WEBHOOK_DEBOUNCE_SECONDS"]),
    ("samsara-page-size-over", {"SAMSARA_PAGE_SIZE": "513"}, ["SAMSARA_PAGE_SIZE"]),
    ("samsara-rate-zero", {"SAMSARA_RATE_LIMIT_PER_SECOND": "0"}, ["SAMSARA_RATE_LIMIT_PER_SECOND"]),
    ("driver-field-empty-part", {"SAMSARA_DRIVER_EMPLOYEE_FIELD": "externalIds..payrollId"}, ["SAMSARA_DRIVER_EMPLOYEE_FIELD"]),
    ("vehicle-site-zero", {"VEHICLE_SITE_ID": "0"}, ["VEHICLE_SITE_ID"]),
    ("vehicle-site-code-cr", {"VEHICLE_SITE_CODE": "FLEET\r"}, ["VEHICLE_SITE_CODE"]),
    ("asset-type-name-escape", {"VEHICLE_ASSET_TYPE_NAME": "Vehicle\x1b[31m"}, ["VEHICLE_ASSET_TYPE_NAME"]),
    ("asset-type-text", {"VEHICLE_ASSET_TYPE_ID": "truck"}, ["VEHICLE_ASSET_TYPE_ID"]),
    # OneRoster / SCIM
    ("oneroster-url-no-scheme", {"ONEROSTER_URL": "sis.example.com/ims/oneroster"}, ["ONEROSTER_URL"]),
    ("oneroster-version", {"ONEROSTER_VERSION": "2.0"}, ["ONEROSTER_VERSION"]),
    ("oneroster-auth", {"ONEROSTER_AUTH": "saml"}, ["ONEROSTER_AUTH"]),
    ("oneroster-token-url", {"ONEROSTER_TOKEN_URL": "sis/token"}, ["ONEROSTER_TOKEN_URL"]),
    ("oneroster-token-space", {"ONEROSTER_TOKEN": "roster token"}, ["ONEROSTER_TOKEN"]),
    ("oneroster-token-method", {"ONEROSTER_TOKEN_AUTH_METHOD": "jwt"}, ["ONEROSTER_TOKEN_AUTH_METHOD"]),
    ("oneroster-page-size-zero", {"ONEROSTER_PAGE_SIZE": "0"}, ["ONEROSTER_PAGE_SIZE"]),
    ("oneroster-rate-zero", {"ONEROSTER_RATE_LIMIT_PER_SECOND": "0"}, ["ONEROSTER_RATE_LIMIT_PER_SECOND"]),
    ("roster-full-hours-negative", {"ROSTER_FULL_SYNC_HOURS": "-1"}, ["ROSTER_FULL_SYNC_HOURS"]),
    ("roster-overlap-negative", {"ROSTER_DELTA_OVERLAP_SECONDS": "-1"}, ["ROSTER_DELTA_OVERLAP_SECONDS"]),
    ("roster-username-field", {"ROSTER_USERNAME_FIELD": "nickname"}, ["ROSTER_USERNAME_FIELD"]),
    ("roster-role-attribute", {"ROSTER_ROLE_ATTRIBUTE": "groups"}, ["ROSTER_ROLE_ATTRIBUTE"]),
    ("roster-schools-control", {"ROSTER_SCHOOLS": "s1,s\x012"}, ["ROSTER_SCHOOLS"]),
    ("roster-roles-control", {"ROSTER_ROLES": "student,\x07teacher"}, ["ROSTER_ROLES"]),
    ("roster-cursor-scope-newline", {"ROSTER_CURSOR_SCOPE": "district\n"}, ["ROSTER_CURSOR_SCOPE"]),
    ("oneroster-scopes-newline", {"ONEROSTER_SCOPES": "roster-core.readonly\n"}, ["ONEROSTER_SCOPES"]),
    ("oneroster-client-id-newline", {"ONEROSTER_CLIENT_ID": "client\n"}, ["ONEROSTER_CLIENT_ID"]),
    ("scim-url-no-scheme", {"SCIM_URL": "scim.example.com/v2"}, ["SCIM_URL"]),
    ("scim-token-newline", {"SCIM_TOKEN": "scim-token\n"}, ["SCIM_TOKEN"]),
    ("scim-delete-mode", {"SCIM_DELETE_MODE": "purge"}, ["SCIM_DELETE_MODE"]),
    ("scim-page-size-zero", {"SCIM_PAGE_SIZE": "0"}, ["SCIM_PAGE_SIZE"]),
    ("scim-rate-zero", {"SCIM_RATE_LIMIT_PER_SECOND": "0"}, ["SCIM_RATE_LIMIT_PER_SECOND"]),
    ("scim-concurrency-zero", {"SCIM_MAX_CONCURRENCY": "0"}, ["SCIM_MAX_CONCURRENCY"]),
]


def _fill(values: dict[str, str], tmp: Path) -> dict[str, str]:
    (tmp / "a-file").write_text("not a folder\n")
    return {k: v.replace("{tmp}", str(tmp)) for k, v in values.items()}


def test_the_valid_base_is_not_a_configuration_error(tmp_path: Path) -> None:
    """Guards the corpus: without the bad value the run gets past configuration (and
    fails only because the targets' port is closed)."""
    proc = run_batch(tmp_path, clean_env(tmp_path, **VALID))
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = summary_of(proc)
    assert summary["status"] == "failed" and [r["sync"] for r in summary["runs"]] == ["vehicles"]


THROUGH_THE_CLI = {
    # One process per case for every distinct way of checking a value (the rest are more
    # bounds of the same kind: they are run in-process below, and all in one process by
    # test_every_bad_setting_is_named_at_once).
    "interval-nan", "interval-inf", "output-dir-is-a-file", "log-level", "log-format", "port-unicode-digit",
    "redis-url-garbage", "redis-url-port", "redis-url-unknown-parameter", "trigger-token-1-char", "trigger-token-space", "guard-nan",
    "key-vault-url-garbage", "key-vault-name", "secrets-dir-missing", "secrets-dir-is-a-file", "pushgateway-no-host",
    "db-url-not-a-url", "db-url-unknown-dialect", "db-url-unknown-driver", "sql-auth-mode", "company-too-big",
    "title-column-email", "title-column-ssn", "title-column-injection", "closed-statuses-text",
    "open-statuses-unicode-digit", "safetyamp-url-no-scheme", "safetyamp-token-newline", "safetyamp-fqdn-url",
    "user-agent-crlf", "timezone-unknown", "ca-bundle-missing", "webhook-secret-not-base64", "webhook-secret-1-byte",
    "driver-field-empty-part", "oneroster-version", "scim-token-newline", "root-cluster-code-newline",
}  # fmt: skip


@pytest.mark.parametrize(("values", "fragments"), [pytest.param(v, f, id=i) for i, v, f in CORPUS if i in THROUGH_THE_CLI])
def test_every_kind_of_bad_value_is_a_clean_configuration_error(
    tmp_path: Path, values: dict[str, str], fragments: list[str]
) -> None:
    proc = run_batch(tmp_path, clean_env(tmp_path, **{**VALID, **_fill(values, tmp_path)}))
    assert_configuration_error(proc, fragments)


@pytest.mark.parametrize(("values", "fragments"), [pytest.param(v, f, id=i) for i, v, f in CORPUS])
def test_every_bad_value_is_a_configuration_error_naming_it(tmp_path: Path, values: dict[str, str], fragments: list[str]) -> None:
    """The whole corpus through the same loading and checking the entry points do."""
    from config.settings import load_settings
    from utils.errors import ConfigurationError

    env = {**VALID, "OUTPUT_DIR": str(tmp_path / "output"), **_fill(values, tmp_path)}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env, dotenv_path=None).check()
    text = "\n".join(caught.value.problems)
    for fragment in fragments:
        assert fragment in text, (fragment, caught.value.problems)
    assert SECRET not in text


def test_every_bad_setting_is_named_at_once(tmp_path: Path) -> None:
    """One value of each setting of the corpus at the same time: one message names all."""
    bad: dict[str, str] = {}
    for _, values, _ in CORPUS:
        for name, value in values.items():
            bad.setdefault(name, value)
    bad.pop("PORT")  # the daemon's listener; sync_batch validates it with the rest below
    bad.pop("OUTPUT_DIR")
    bad.pop("AZURE_KEY_VAULT_NAME")  # AZURE_KEY_VAULT_URL wins over it (and is bad here)
    proc = run_batch(tmp_path, clean_env(tmp_path, **{**VALID, **_fill(bad, tmp_path)}))
    problems = assert_configuration_error(proc, sorted(bad))
    named = {name for name in bad if any(p.startswith(name + "=") or p.startswith(name + " ") for p in problems)}
    assert named == set(bad), sorted(set(bad) - named)


# --------------------------------------------------------------------------- half-set settings

HALF_SET: list[tuple[str, dict[str, str], list[tuple[str, str]]]] = [
    (
        "viewpoint-and-token-without-fqdn",
        {"SAFETYAMP_TOKEN": "safetyamp-token-0123456789", "VIEWPOINT_DB_URL": "sqlite:///{tmp}/vp.sqlite"},
        [("employees", "SAFETYAMP_FQDN"), ("departments", "SAFETYAMP_FQDN")],
    ),
    (
        "sql-server-and-database-only",
        {"SQL_SERVER": "vista.example.com", "SQL_DATABASE": "Viewpoint"},
        [("employees", "SQL_USERNAME"), ("employees", "SQL_PASSWORD"), ("jobs", "SAFETYAMP_TOKEN")],
    ),
    (
        "entra-token-without-database",
        {**VALID, "SQL_SERVER": "vista.example.com", "SQL_AUTH_MODE": "entra_token"},
        [("employees", "SQL_DATABASE")],
    ),
    (
        "samsara-and-token-without-fqdn",
        {"SAMSARA_API_KEY": "samsara-key-0123456789", "SAFETYAMP_TOKEN": "safetyamp-token-0123456789"},
        [("vehicles", "SAFETYAMP_FQDN")],
    ),
    (
        "configured-vehicles-and-half-set-viewpoint",
        {**VALID, "SQL_SERVER": "vista.example.com"},
        [("employees", "SQL_DATABASE"), ("titles", "SQL_PASSWORD")],
    ),
    (
        "graph-tenant-only",
        {**VALID, "VIEWPOINT_DB_URL": "sqlite:///{tmp}/vp.sqlite", "MS_GRAPH_TENANT_ID": "contoso"},
        [("employees", "MS_GRAPH_CLIENT_ID"), ("employees", "MS_GRAPH_CLIENT_SECRET")],
    ),
    (
        "oneroster-url-only",
        {"ONEROSTER_URL": "https://sis.example.com/ims/oneroster/v1p2"},
        [
            ("rosters", "ONEROSTER_CLIENT_ID"),
            ("rosters", "ONEROSTER_CLIENT_SECRET"),
            ("rosters", "SCIM_URL"),
            ("rosters", "SCIM_TOKEN"),
        ],
    ),
    (
        "oneroster-bearer-without-token",
        {
            "ONEROSTER_URL": "https://sis.example.com/ims/oneroster/v1p2",
            "ONEROSTER_AUTH": "bearer",
            "SCIM_URL": "https://scim.example.com/v2",
            "SCIM_TOKEN": "scim-token-0123456789",
        },
        [("rosters", "ONEROSTER_TOKEN")],
    ),
    (
        "scim-only",
        {"SCIM_URL": "https://scim.example.com/v2", "SCIM_TOKEN": "scim-token-0123456789"},
        [("rosters", "ONEROSTER_URL or ONEROSTER_CSV_PATH")],
    ),
    (
        "csv-without-scim-token",
        {"ONEROSTER_CSV_PATH": "{tmp}", "SCIM_URL": "https://scim.example.com/v2"},
        [("rosters", "SCIM_TOKEN")],
    ),
    (
        "sync-types-names-what-is-missing",
        {"SYNC_TYPES": "vehicles", "SAFETYAMP_TOKEN": "safetyamp-token-0123456789"},
        [("vehicles", "SAFETYAMP_FQDN"), ("vehicles", "SAMSARA_API_KEY")],
    ),
]


@pytest.mark.parametrize(("values", "pairs"), [pytest.param(v, p, id=i) for i, v, p in HALF_SET])
def test_a_half_set_sync_is_named_with_what_it_lacks(
    tmp_path: Path, values: dict[str, str], pairs: list[tuple[str, str]]
) -> None:
    proc = run_batch(tmp_path, clean_env(tmp_path, **_fill(values, tmp_path)))
    problems = assert_configuration_error(proc, sorted({name for _, name in pairs}))
    for sync, name in pairs:
        assert any(sync in p.split(":")[0] and name in p and "missing" in p for p in problems), (sync, name, problems)
    assert not any(p.startswith("no sync is configured") for p in problems), problems


def test_safetyamp_alone_says_which_sources_to_add(tmp_path: Path) -> None:
    env = clean_env(tmp_path, SAFETYAMP_TOKEN="safetyamp-token-0123456789", SAFETYAMP_FQDN="acme.safetyamp.com")
    problems = assert_configuration_error(run_batch(tmp_path, env), ["VIEWPOINT_DB_URL", "SAMSARA_API_KEY"])
    assert any("SafetyAmp" in p for p in problems), problems


# --------------------------------------------------------------------------- the database driver


def test_a_bogus_odbc_driver_is_named_and_the_advice_matches_what_is_set(tmp_path: Path) -> None:
    """Whether or not unixODBC is installed here, the error names the driver the
    settings chose and never tells the operator to set a URL that is already set."""
    by_url = run_batch(
        tmp_path,
        clean_env(tmp_path, **VALID, VIEWPOINT_DB_URL="mssql+pyodbc://sync:pw@vista/Viewpoint?driver=No+Such+Driver"),
    )
    problems = assert_configuration_error(by_url, ["VIEWPOINT_DB_URL"])
    assert not any("set VIEWPOINT_DB_URL" in p for p in problems), problems
    assert "SQL_DRIVER" not in "\n".join(problems)

    by_parts = run_batch(
        tmp_path,
        clean_env(
            tmp_path,
            **VALID,
            SQL_SERVER="vista",
            SQL_DATABASE="Viewpoint",
            SQL_USERNAME="sync",
            SQL_PASSWORD=SECRET,
            SQL_DRIVER="No Such Driver",
        ),
    )
    assert_configuration_error(by_parts, ["SQL_DRIVER", "No Such Driver"])

    # the same mistake inside an ODBC connection string (odbc_connect=DRIVER={...};...)
    connect = "DRIVER%3D%7BNo+Such+Driver%7D%3BSERVER%3Dvista%3BUID%3Dsync%3BPWD%3D" + SECRET
    by_connect = run_batch(tmp_path, clean_env(tmp_path, **VALID, VIEWPOINT_DB_URL="mssql+pyodbc:///?odbc_connect=" + connect))
    problems = assert_configuration_error(by_connect, ["VIEWPOINT_DB_URL"])
    assert not any("set VIEWPOINT_DB_URL" in p for p in problems), problems
    assert SECRET not in by_connect.stdout + by_connect.stderr


# --------------------------------------------------------------------------- sources and the sandbox


@pytest.mark.parametrize("source", ["env", "dotenv", "secrets_dir"])
@pytest.mark.parametrize(("name", "value"), [("LOG_LEVEL", "LOUD"), ("LOG_FORMAT", "xml")])
def test_bad_logging_settings_from_every_source(tmp_path: Path, source: str, name: str, value: str) -> None:
    env = clean_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if source == "env":
        env[name] = value
    elif source == "dotenv":
        (cwd / ".env").write_text(f"{name}={value}\n")
    else:
        (tmp_path / "secrets").mkdir()
        (tmp_path / "secrets" / name.lower().replace("_", "-")).write_text(value + "\n")
        env["SECRETS_DIR"] = str(tmp_path / "secrets")
    proc = run_batch(tmp_path, env, sandbox=source == "env", cwd=cwd)  # the sandbox path once per value
    assert_configuration_error(proc, [name, value])


def test_a_wrong_title_column_is_refused_at_start_with_the_sandbox(tmp_path: Path) -> None:
    proc = run_batch(tmp_path, clean_env(tmp_path, VIEWPOINT_TITLE_COLUMN="Email"), sandbox=True)
    problems = assert_configuration_error(proc, ["VIEWPOINT_TITLE_COLUMN", "Email"])
    assert len(problems) == 1


@pytest.mark.slow  # 20-45 s: in CI's slow step, so the README's default run stays short
def test_a_title_column_the_database_lacks_fails_titles_and_employees_only(tmp_path: Path) -> None:
    env = clean_env(tmp_path, VIEWPOINT_TITLE_COLUMN="udNoSuchTitle")
    proc = run_batch(tmp_path, env, sandbox=True)
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 2, proc.stderr[-3000:]  # a configuration error, found by the run
    runs = {r["sync"]: r for r in summary_of(proc)["runs"]}
    for sync in ("titles", "employees"):
        assert runs[sync]["status"] == "failed" and runs[sync].get("configuration_error") is True
        assert "VIEWPOINT_TITLE_COLUMN" in runs[sync]["error"] and "udNoSuchTitle" in runs[sync]["error"], runs[sync]
        assert "configuration error" in runs[sync]["error"]
    assert runs["departments"]["status"] == "success" and runs["jobs"]["status"] == "success"
    assert runs["vehicles"]["status"] in ("success", "partial")
    # Fixed, the next run goes ahead at once: a setting is not the sync's fault (no back-off).
    fixed = run_batch(tmp_path, {**env, "VIEWPOINT_TITLE_COLUMN": "udEmpTitle"}, "--only", "titles,employees", sandbox=True)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert {r["sync"]: r["status"] for r in summary_of(fixed)["runs"]} == {"titles": "success", "employees": "partial"}


def test_a_title_column_that_is_not_text_fails_titles_and_employees(tmp_path: Path) -> None:
    seeded = run_batch(tmp_path, clean_env(tmp_path), "--only", "departments", sandbox=True)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    with sqlite3.connect(tmp_path / "sandbox" / "viewpoint.sqlite") as db:
        db.execute('ALTER TABLE "bPREH" ADD COLUMN "udHours" NUMERIC(10, 2)')
    proc = run_batch(tmp_path, clean_env(tmp_path, VIEWPOINT_TITLE_COLUMN="udHours"), "--only", "titles", sandbox=True)
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    (run,) = summary_of(proc)["runs"]
    assert run["status"] == "failed" and "VIEWPOINT_TITLE_COLUMN" in run["error"] and "udHours" in run["error"], run


# --------------------------------------------------------------------------- the daemon


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_daemon(tmp: Path, env: dict[str, str], *, sandbox: bool = False) -> tuple[dict[str, Any], str, int]:
    """Start main.py, wait for /ready to give its configuration error, SIGTERM it.
    Returns /ready's body, the log and the exit code."""
    port = _free_port()
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1"}
    cmd = [sys.executable, "main.py"]
    if sandbox:
        cmd += ["--sandbox", "--sandbox-dir", str(tmp / "sandbox"), "--sandbox-size", "30"]
    log_path = tmp / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        body: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                body = r.json()
                if body.get("reason") != "starting up":
                    assert r.status_code == 503, body
                    assert requests.get(f"http://127.0.0.1:{port}/live", timeout=5).status_code == 200
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}): {log_path.read_text()[-3000:]}"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return body, log_path.read_text(), code


DAEMON_CASES: list[tuple[str, dict[str, str], list[str]]] = [
    ("log-level", {"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL"]),
    ("log-format", {"LOG_FORMAT": "xml"}, ["LOG_FORMAT"]),
    ("webhook-secret-not-base64", {"SAMSARA_WEBHOOK_SECRET": "not base64!"}, ["SAMSARA_WEBHOOK_SECRET"]),
    ("webhook-secret-1-byte", {"SAMSARA_WEBHOOK_SECRET": "QQ=="}, ["SAMSARA_WEBHOOK_SECRET"]),
    ("trigger-token-1-char", {"SYNC_TRIGGER_TOKEN": "x"}, ["SYNC_TRIGGER_TOKEN"]),
    ("db-url-not-a-url", {"VIEWPOINT_DB_URL": "notaurl"}, ["VIEWPOINT_DB_URL"]),
    ("redis-url-garbage", {"REDIS_URL": "garbage"}, ["REDIS_URL"]),
    ("half-set", {"SQL_SERVER": "vista.example.com"}, ["SQL_DATABASE", "employees"]),
]


@pytest.mark.parametrize(("values", "fragments"), [pytest.param(v, f, id=i) for i, v, f in DAEMON_CASES])
def test_the_daemon_stays_up_and_names_the_problem(tmp_path: Path, values: dict[str, str], fragments: list[str]) -> None:
    body, log, code = run_daemon(tmp_path, clean_env(tmp_path, **VALID, **values))
    assert "Traceback" not in log, log[-4000:]
    assert code == 0, log[-3000:]
    assert body.get("status") == "not_ready" and "configuration error" in body.get("reason", ""), body
    for fragment in fragments:
        assert fragment in body["reason"], body
        assert fragment in log, log[-3000:]


def test_the_daemon_names_every_bad_setting_with_the_sandbox(tmp_path: Path) -> None:
    bad = {
        "LOG_LEVEL": "LOUD",
        "LOG_FORMAT": "xml",
        "VIEWPOINT_TITLE_COLUMN": "Email",
        "SAMSARA_WEBHOOK_SECRET": "not base64!",
        "SYNC_TRIGGER_TOKEN": SECRET,
        "SYNC_INTERVAL_MINUTES": "nan",
    }
    body, log, code = run_daemon(tmp_path, clean_env(tmp_path, **bad), sandbox=True)
    assert "Traceback" not in log, log[-4000:]
    assert code == 0
    for name in bad:
        assert name in body.get("reason", ""), body
        assert name in log
    assert SECRET not in log and SECRET not in json.dumps(body)


@pytest.mark.parametrize("command", [["failed", "list"], ["diagnose", "employees", "1001"]])
def test_operator_commands_name_bad_settings_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    env = clean_env(tmp_path, **VALID, LOG_FORMAT="xml", VIEWPOINT_DB_URL="notaurl")
    proc = subprocess.run(
        [sys.executable, "sync_batch.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2
    assert "LOG_FORMAT='xml'" in proc.stderr and "VIEWPOINT_DB_URL (secret, not shown)" in proc.stderr


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        pytest.param({"PORT": "\u00b2"}, "PORT", id="port-unicode-digit"),
        pytest.param({"PORT": "70000"}, "PORT", id="port-range"),
        pytest.param({"LIVENESS_STALE_SECONDS": "soon"}, "LIVENESS_STALE_SECONDS", id="liveness-text"),
        pytest.param({"LIVENESS_STALE_SECONDS": "nan"}, "LIVENESS_STALE_SECONDS", id="liveness-nan"),
        pytest.param({"HOST": "no.such.host.invalid"}, "cannot listen on no.such.host.invalid", id="host"),
    ],
)
def test_the_daemon_exits_2_when_it_cannot_serve_its_probes(tmp_path: Path, values: dict[str, str], fragment: str) -> None:
    """What the listener needs is read before the settings (the probes answer first): a
    daemon that cannot serve /live cannot stay up to explain, so it says why and exits 2."""
    env = {**clean_env(tmp_path, **VALID), "PORT": str(_free_port()), **values}
    proc = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert fragment in proc.stderr
