"""config.settings: sources, precedence, validation messages, secret hiding, the
generated reference. Everything from explicit mappings and tmp files: no os.environ."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import ALL_SYNCS, Settings, load_settings, main, setting_names, settings_markdown
from utils.errors import ConfigurationError

pytestmark = pytest.mark.unit

SECRET = "sentinel-Secret-Value-42"


def load(env: dict[str, str], **kwargs: object) -> Settings:
    kwargs.setdefault("dotenv_path", None)
    return load_settings(env, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


def test_every_bad_setting_is_named_at_once() -> None:
    env = {
        "PORT": "70000",
        "SYNC_INTERVAL_MINUTES": "soon",
        "LOG_FORMAT": "xml",
        "SYNC_TYPES": "jobs,payroll",
        "LOCK_REQUIRED": "maybe",
    }
    with pytest.raises(ConfigurationError) as caught:
        load(env)
    problems = caught.value.problems
    assert len(problems) == 5
    for name in ("PORT=", "SYNC_INTERVAL_MINUTES=", "LOG_FORMAT=", "SYNC_TYPES=", "LOCK_REQUIRED="):
        assert sum(p.startswith(name) for p in problems) == 1, name
    assert "configuration error: " in str(caught.value)


def test_every_missing_setting_is_named_at_once() -> None:
    settings = load({"SYNC_TYPES": "employees,vehicles,rosters"})
    with pytest.raises(ConfigurationError) as caught:
        settings.check()
    text = str(caught.value)
    for name in (
        "SQL_SERVER",
        "SQL_PASSWORD",
        "SAFETYAMP_TOKEN",
        "SAFETYAMP_FQDN",
        "SAMSARA_API_KEY",
        "SCIM_URL",
        "SCIM_TOKEN",
        "ONEROSTER_URL",
    ):
        assert name in text
    problems = caught.value.problems
    assert problems[0].startswith("employees: VIEWPOINT_DB_URL (or SQL_SERVER, SQL_DATABASE, SQL_USERNAME, SQL_PASSWORD), ")
    assert problems[1] == "vehicles: SAFETYAMP_TOKEN, SAFETYAMP_FQDN, SAMSARA_API_KEY are missing"
    assert problems[2] == "rosters: ONEROSTER_URL or ONEROSTER_CSV_PATH, SCIM_URL, SCIM_TOKEN are missing"
    assert text.count("SAFETYAMP_TOKEN") == 2  # once per sync, each line saying all that sync lacks


def test_nothing_configured_says_how_to_start() -> None:
    with pytest.raises(ConfigurationError, match=r"no sync is configured.*--sandbox"):
        load({}).check()


def test_bad_values_are_shown_but_secret_ones_never() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"SCIM_TOKEN": SECRET, "PORT": "eighty", "VIEWPOINT_COMPANY": "300"})
    text = str(caught.value)
    assert "PORT='eighty'" in text and "VIEWPOINT_COMPANY='300'" in text  # not secrets: shown to help the operator
    assert SECRET not in text


def test_a_problem_with_a_secret_setting_shows_hidden_not_the_value() -> None:
    from config import settings as module

    # errors located by field name (as here) and by alias (as from load_settings) alike
    problems = module._describe(_validation_error_for("sql_password"), {"SQL_PASSWORD": SECRET})
    assert problems == ["SQL_PASSWORD (secret, not shown): boom"]


def _validation_error_for(field: str):  # type: ignore[no-untyped-def]
    from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

    detail = InitErrorDetails(type=PydanticCustomError("boom", "boom"), loc=(field,), input="x")
    return ValidationError.from_exception_data("Settings", [detail])


# --------------------------------------------------------------------------- secrets


def test_secrets_are_hidden_in_repr_and_dumps() -> None:
    settings = load({"SAFETYAMP_TOKEN": SECRET, "REDIS_URL": f"redis://:{SECRET}@cache:6379/0"})
    assert isinstance(settings.safetyamp_token, SecretStr)
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.safetyamp_token)):
        assert SECRET not in text
    assert settings.safetyamp_token.get_secret_value() == SECRET
    assert SECRET in settings.secret_values() and f"redis://:{SECRET}@cache:6379/0" in settings.secret_values()


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- SYNC_TYPES


def test_sync_types_are_split_trimmed_lowercased_and_run_in_order() -> None:
    settings = load({"SYNC_TYPES": " Vehicles , departments,,JOBS "})
    assert settings.sync_types == ("vehicles", "departments", "jobs")
    assert settings.enabled_syncs() == ("departments", "jobs", "vehicles")


def test_unknown_sync_types_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"SYNC_TYPES": "jobs,payroll,hr"})
    text = str(caught.value)
    assert "unknown sync(s) payroll, hr" in text and "known: " + ", ".join(ALL_SYNCS) in text


def test_without_sync_types_the_configured_syncs_are_enabled() -> None:
    settings = load({"SAMSARA_API_KEY": "k", "SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "acme.safetyamp.com"})
    assert settings.enabled_syncs() == ("vehicles",)
    settings.check()
    assert load({"SYNC_TYPES": " , "}).sync_types is None


# --------------------------------------------------------------------------- sources


def test_secrets_dir_files_feed_settings(tmp_path: Path) -> None:
    (tmp_path / "SAFETYAMP_TOKEN").write_text(SECRET + "\n")
    (tmp_path / "samsara-api-key").write_text("  samsara-key  ")
    (tmp_path / ".hidden").write_text("ignored")
    (tmp_path / "sub").mkdir()
    settings = load({"SECRETS_DIR": str(tmp_path)})
    assert settings.safetyamp_token is not None and settings.safetyamp_token.get_secret_value() == SECRET
    assert settings.samsara_api_key is not None and settings.samsara_api_key.get_secret_value() == "samsara-key"
    assert settings.secrets_dir == tmp_path


def test_missing_secrets_dir_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"SECRETS_DIR='.*nope': no such folder"):
        load({"SECRETS_DIR": str(tmp_path / "nope")})
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigurationError) as caught:  # named together with the other problems
        load({"SECRETS_DIR": str(tmp_path / "a-file"), "PORT": "0"})
    assert [p.split("=")[0] for p in caught.value.problems] == ["SECRETS_DIR", "PORT"]


def test_dotenv_is_the_lowest_source(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SAFETYAMP_FQDN").write_text("file.safetyamp.com")
    dotenv.write_text(
        f"SAFETYAMP_TOKEN={SECRET}\nSAFETYAMP_FQDN=dotenv.safetyamp.com\nPORT=9000\nLOG_LEVEL=DEBUG\nSECRETS_DIR={secrets}\n"
    )
    settings = load({"PORT": "9100"}, dotenv_path=dotenv, overrides={"LOG_LEVEL": "ERROR"})
    assert settings.safetyamp_token is not None and settings.safetyamp_token.get_secret_value() == SECRET
    assert settings.port == 9100  # environment beats .env
    assert settings.safetyamp_fqdn == "file.safetyamp.com"  # SECRETS_DIR (named in .env) beats .env
    assert settings.log_level == "ERROR"  # overrides beat everything
    assert load({}, dotenv_path=tmp_path / "absent.env").port == 8080


def test_empty_string_means_unset_at_every_level(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9000\nSAFETYAMP_FQDN=\n")
    settings = load({"PORT": "", "SAFETYAMP_TOKEN": "", "VIEWPOINT_JC_COMPANY": ""}, dotenv_path=dotenv)
    assert settings.port == 9000  # the empty env value falls through to .env
    assert settings.safetyamp_token is None and settings.safetyamp_fqdn is None
    assert settings.viewpoint_jc_company is None and settings.jc_company == 1
    assert load({"SQL_PASSWORD": ""}).sql_password is None


def test_lowercase_environment_names_are_ignored() -> None:
    assert load({"port": "1234"}).port == 8080


def test_new_resilience_settings_and_their_defaults() -> None:
    s = load({})
    assert (s.breaker_failure_threshold, s.breaker_recovery_seconds, s.breaker_success_threshold) == (5, 60, 2)
    assert (s.breaker_probe_lease_seconds, s.lock_ttl_seconds, s.lock_required, s.keyvault_ttl_seconds) == (30, 60, True, 300)
    s = load({"LOCK_REQUIRED": "false", "LOCK_TTL_SECONDS": "120", "BREAKER_FAILURE_THRESHOLD": "3", "KEYVAULT_TTL_SECONDS": "0"})
    assert (s.lock_required, s.lock_ttl_seconds, s.breaker_failure_threshold, s.keyvault_ttl_seconds) == (False, 120, 3, 0)
    with pytest.raises(ConfigurationError, match="BREAKER_SUCCESS_THRESHOLD"):
        load({"BREAKER_SUCCESS_THRESHOLD": "0"})


def test_key_vault_url_from_name() -> None:
    assert load({"AZURE_KEY_VAULT_NAME": "contoso-kv"}, keyvault_factory=lambda url: _Empty()).key_vault_url == (
        "https://contoso-kv.vault.azure.net"
    )


class _Empty:
    def values(self, names: object) -> dict[str, str]:
        return {}


# --------------------------------------------------------------------------- reference table


def test_markdown_lists_every_setting_with_default_and_unit(capsys: pytest.CaptureFixture[str]) -> None:
    table = settings_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == setting_names()
    assert len(rows) == len(Settings.model_fields)
    assert "| `BREAKER_RECOVERY_SECONDS` | `60` | seconds |" in table
    assert "| `LOCK_REQUIRED` | `true` |" in table
    assert "| `SAFETYAMP_TOKEN` | (unset) |  | yes |" in table
    assert "| `SAFETYAMP_RATE_LIMIT_PER_MINUTE` | `60` | requests/minute |" in table
    assert all(row.rstrip().endswith("|") and row.split("|")[5].strip() for row in rows)  # every setting has a meaning
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == table


def test_docs_configuration_md_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert settings_markdown() in doc.read_text(encoding="utf-8"), "regenerate: python -m config.settings --markdown"


# --------------------------------------------------------------------------- issue 10: bad values, weak secrets, half-set groups


def _problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load(env).check()
    return caught.value.problems


def test_logging_options_take_only_valid_values_from_the_environment() -> None:
    from config.settings import logging_options

    assert logging_options({"LOG_LEVEL": "LOUD", "LOG_FORMAT": "xml"}, "INFO", "json") == ("INFO", "json")
    assert logging_options({"LOG_LEVEL": " debug ", "LOG_FORMAT": "TEXT"}, "INFO", "json") == ("DEBUG", "text")
    assert logging_options({}, "WARNING", "text") == ("WARNING", "text")
    assert (load({"LOG_LEVEL": "debug", "LOG_FORMAT": "Text"}).log_level, load({"LOG_FORMAT": "Text"}).log_format) == (
        "DEBUG",
        "text",
    )


@pytest.mark.parametrize("token", ["x", "a" * 31, "a" * 20 + " " + "b" * 20, "a" * 40 + "\n", "é" * 40])
def test_a_weak_or_unsendable_trigger_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"SYNC_TRIGGER_TOKEN": token})
    (problem,) = caught.value.problems
    assert problem.startswith("SYNC_TRIGGER_TOKEN (secret, not shown): ") and token.strip() not in problem


def test_a_trigger_token_of_32_visible_characters_is_accepted() -> None:
    token = "0123456789abcdef0123456789ABCDEF"
    settings = load({"SYNC_TRIGGER_TOKEN": token})
    assert settings.sync_trigger_token is not None and settings.sync_trigger_token.get_secret_value() == token


@pytest.mark.parametrize(
    ("secret", "reason"),
    [("not base64!", "not base64"), ("QQ==", "fewer than 16 bytes"), ("c2hvcnQ", "not base64"), ("x" * 40 + "\n", "not base64")],
)
def test_a_webhook_secret_must_be_base64_of_at_least_16_bytes(secret: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        load({"SAMSARA_WEBHOOK_SECRET": secret})
    import base64

    assert load({"SAMSARA_WEBHOOK_SECRET": base64.b64encode(b"k" * 16).decode()}).samsara_webhook_secret is not None


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"SYNC_INTERVAL_MINUTES": "inf", "DEACTIVATION_GUARD_PERCENT": "nan", "LOCK_TTL_SECONDS": "Infinity"})
    assert [p.split("=")[0] for p in caught.value.problems] == [
        "SYNC_INTERVAL_MINUTES",
        "DEACTIVATION_GUARD_PERCENT",
        "LOCK_TTL_SECONDS",
    ]


def test_url_settings_need_an_http_scheme_and_a_host() -> None:
    from config.settings import http_url_problem

    assert http_url_problem("https://api.safetyamp.com") is None
    assert http_url_problem("http://127.0.0.1:8443/api") is None
    for bad in ("api.safetyamp.com", "ftp://x", "https://", "https://host:99999", "https://ho st", "https://[::1"):
        assert http_url_problem(bad), bad
    assert http_url_problem("gateway:9091", scheme_optional=True) is None


def test_a_credential_in_a_shown_url_is_masked() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"SAFETYAMP_URL": f"api.safetyamp.com/?api_key={SECRET}"})
    assert SECRET not in str(caught.value) and "SAFETYAMP_URL=" in str(caught.value)


def test_every_secret_setting_that_fails_shows_hidden() -> None:
    env = {
        "REDIS_URL": f"http://:{SECRET}@cache",
        "VIEWPOINT_DB_URL": f"nosuchdb://sa:{SECRET}@h/db",
        "SAFETYAMP_TOKEN": SECRET + " ",
        "SCIM_TOKEN": SECRET + "\n",
        "SYNC_TRIGGER_TOKEN": SECRET,
        "SAMSARA_WEBHOOK_SECRET": SECRET,
    }
    with pytest.raises(ConfigurationError) as caught:
        load(env)
    assert len(caught.value.problems) == len(env)
    assert all(" (secret, not shown): " in p for p in caught.value.problems)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("Email", "not a job title"),
        ("email", "not a job title"),
        ("SSN", "not a job title"),
        ("udTitle; DROP TABLE bPREH", "plain column name"),
        ("[udTitle]", "plain column name"),
        ("x" * 129, "plain column name"),
    ],
)
def test_a_title_column_that_cannot_be_a_title_is_refused(column: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        load({"VIEWPOINT_TITLE_COLUMN": column})
    assert load({"VIEWPOINT_TITLE_COLUMN": "udJobTitle"}).viewpoint_title_column == "udJobTitle"


def test_syncs_whose_sources_are_partly_set_are_named_with_what_they_lack() -> None:
    problems = _problems({"SAFETYAMP_TOKEN": "t", "VIEWPOINT_DB_URL": "sqlite://", "ONEROSTER_CSV_PATH": "/drop"})
    assert problems == [
        "departments, jobs, titles, employees: SAFETYAMP_FQDN is missing",
        "rosters: SCIM_URL, SCIM_TOKEN are missing",
    ]
    assert _problems({"SQL_SERVER": "h", "SQL_AUTH_MODE": "entra_token", "SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "a.b"}) == [
        "departments, jobs, titles, employees: SQL_DATABASE is missing"
    ]


def test_enabled_syncs_are_those_whose_source_settings_are_present() -> None:
    s = load({"SAMSARA_API_KEY": "k", "SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "a.b", "SQL_AUTH_MODE": "entra_token"})
    assert s.enabled_syncs() == ("vehicles",)  # a tuning setting (SQL_AUTH_MODE) is no sign of intent
    assert load({"MS_GRAPH_TENANT_ID": "t"}).enabled_syncs() == ("employees",)
    assert load({"SCIM_URL": "https://scim.example.com"}).enabled_syncs() == ("rosters",)


def test_safetyamp_without_a_source_says_what_to_add() -> None:
    (problem,) = _problems({"SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "a.safetyamp.com"})
    assert problem.startswith("no sync is configured: SafetyAmp is set") and "SAMSARA_API_KEY" in problem


class _FakePyodbc:
    """Stands in for the pyodbc module where unixODBC is not installed."""

    @staticmethod
    def drivers() -> list[str]:
        return ["ODBC Driver 18 for SQL Server"]


def test_an_odbc_driver_that_is_not_installed_is_named_by_the_setting_that_chose_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from services.viewpoint_api import connection_problems

    monkeypatch.setitem(sys.modules, "pyodbc", _FakePyodbc)
    base = {"SAFETYAMP_TOKEN": "t", "SAFETYAMP_FQDN": "a.safetyamp.com"}
    by_parts = load({**base, "SQL_SERVER": "h", "SQL_DATABASE": "d", "SQL_USERNAME": "u", "SQL_PASSWORD": "p"})
    assert connection_problems(by_parts) == []
    (problem,) = connection_problems(
        load({**base, "SQL_SERVER": "h", "SQL_DATABASE": "d", "SQL_AUTH_MODE": "entra_token", "SQL_DRIVER": "Nope"})
    )
    assert problem.startswith("SQL_DRIVER='Nope' is not an installed ODBC driver")
    assert "ODBC Driver 18 for SQL Server" in problem
    by_url = load({**base, "VIEWPOINT_DB_URL": f"mssql+pyodbc://u:{SECRET}@h/db?driver=Nope"})
    (problem,) = connection_problems(by_url)
    assert problem.startswith("VIEWPOINT_DB_URL: its driver='Nope'") and "set VIEWPOINT_DB_URL" not in problem
    assert SECRET not in problem
    assert connection_problems(load({**base, "VIEWPOINT_DB_URL": "mssql+pyodbc://u:p@my_dsn"})) == []  # a DSN: nothing to judge


@pytest.mark.parametrize(
    "url", ["https://api.safetyamp.test/?api_key=x", "https://api.safetyamp.test/#top", "https://api.safetyamp.test/?"]
)
def test_a_base_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    """The adapter appends API paths: https://h/?api_key=x became
    https://h/?api_key=x/api/site_clusters, every request to the wrong place."""
    problems = _problems({"SAFETYAMP_URL": url, "SAFETYAMP_TOKEN": "t" * 20, "SAFETYAMP_FQDN": "acme.safetyamp.com"})
    assert any(p.startswith("SAFETYAMP_URL") and "base URL" in p for p in problems), problems


def test_console_sign_out_url_defaults_to_the_proxys_sign_out_behind_single_sign_on() -> None:
    assert load({"CONSOLE_TOKEN": "t" * 40}).console_sign_out_url is None  # the console's own sign-in form
    sso = load({"CONSOLE_TRUSTED_PROXY": "127.0.0.1/32"})
    assert sso.console_sign_out_url == "/oauth2/sign_out"  # oauth2-proxy's: ends its sign-in too
    chosen = "/oauth2/sign_out?rd=%2Fconsole%2F"
    assert load({"CONSOLE_TRUSTED_PROXY": "127.0.0.1/32", "CONSOLE_SIGN_OUT_URL": chosen}).console_sign_out_url == chosen
    for bad in ("https://evil.example/x", "//evil.example/x", "oauth2/sign_out", "/x\\y"):
        with pytest.raises(ConfigurationError, match="CONSOLE_SIGN_OUT_URL"):
            load({"CONSOLE_TRUSTED_PROXY": "127.0.0.1/32", "CONSOLE_SIGN_OUT_URL": bad})
