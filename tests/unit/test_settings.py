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
    assert text.count("SAFETYAMP_TOKEN is required by the employees sync") == 1


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

    # a SecretStr field cannot fail from a string; drive the error path directly
    problems = module._describe(_validation_error_for("sql_password"), {"SQL_PASSWORD": SECRET})
    assert problems == ["SQL_PASSWORD=<hidden>: boom"]


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
    with pytest.raises(ConfigurationError, match=r"SECRETS_DIR .* is not a directory"):
        load({"SECRETS_DIR": str(tmp_path / "nope")})


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
