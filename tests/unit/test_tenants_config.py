"""config.tenants: tenant files in TENANTS_DIR, secrets by reference, every problem of
every file at once, the folder watcher, the check command, the single-tenant fallback.
Everything from explicit mappings and tmp folders: no os.environ."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from config.settings import load_settings
from config.tenants import (
    DEFAULT_TENANT,
    PROCESS_WIDE,
    SECRET_NAMES,
    TenantLoad,
    TenantWatcher,
    check_main,
    load_tenants,
    single_tenant,
    tenant_id_problem,
)
from utils.errors import ConfigurationError
from utils.scrub import scrub

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

ACME_TOKEN = "acme-Safetyamp-Token-1111"
ACME_SAMSARA = "acme-Samsara-Key-2222"
D7_SCIM = "d7-Scim-Token-3333"
LEAKED = "inline-Secret-Never-Shown-9999"

ACME = """\
# Vista company 1 -> SafetyAmp account acme, Samsara org X
SAFETYAMP_FQDN=acme.safetyamp.com
SAFETYAMP_TOKEN_FROM_ENV=ACME_SAFETYAMP_TOKEN
SAMSARA_API_KEY_FROM_FILE=acme-samsara-api-key
SYNC_INTERVAL_MINUTES=15
"""

DISTRICT = """\
ONEROSTER_URL=https://sis.d7.example.org/ims/oneroster/v1p2
ONEROSTER_AUTH=bearer
ONEROSTER_TOKEN_FROM_ENV=D7_ONEROSTER_TOKEN
SCIM_URL=https://scim.d7.example.org/scim/v2
SCIM_TOKEN_FROM_KEYVAULT=d7-scim-token
"""


class FakeVault:
    """The one method load_settings and the tenant loader use of a KeyVaultSource."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets  # vault secret name -> value

    def values(self, names: Iterable[str]) -> dict[str, str]:
        by_env = {k.replace("-", "_").upper(): v for k, v in self.secrets.items()}
        return {n: by_env[n] for n in names if n in by_env}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    secrets = write(tmp_path / "secrets", {"acme-samsara-api-key": ACME_SAMSARA + "\n"})
    return {
        "TENANTS_DIR": str(tmp_path / "tenants"),
        "SECRETS_DIR": str(secrets),
        "AZURE_KEY_VAULT_NAME": "contoso-kv",
        "REDIS_PREFIX": "test-tenants:",
        "ACME_SAFETYAMP_TOKEN": ACME_TOKEN,
        "D7_ONEROSTER_TOKEN": "d7-Oneroster-Token-4444",
    }


VAULT = FakeVault({"d7-scim-token": D7_SCIM})


def load(env: dict[str, str], files: dict[str, str] | None = None, vault: FakeVault = VAULT) -> TenantLoad:
    if files is not None:
        write(Path(env["TENANTS_DIR"]), files)
    return load_tenants(env, dotenv_path=None, keyvault_factory=lambda url: vault)


def texts(result: TenantLoad) -> list[str]:
    return [str(p) for p in result.all_problems()]


# --------------------------------------------------------------------------- good files


def test_good_tenants_resolve_every_kind_of_reference(env: dict[str, str]) -> None:
    result = load(env, {"acme.env": ACME, "district-7.env": DISTRICT})

    assert texts(result) == []
    assert sorted(result.tenants) == ["acme", "district-7"]
    assert result.files == {"acme": "acme.env", "district-7": "district-7.env"}
    acme, d7 = result.tenants["acme"], result.tenants["district-7"]
    assert acme.safetyamp_token is not None and acme.safetyamp_token.get_secret_value() == ACME_TOKEN  # _FROM_ENV
    assert acme.samsara_api_key is not None and acme.samsara_api_key.get_secret_value() == ACME_SAMSARA  # _FROM_FILE
    assert d7.scim_token is not None and d7.scim_token.get_secret_value() == D7_SCIM  # _FROM_KEYVAULT
    assert acme.enabled_syncs() == ("vehicles",) and d7.enabled_syncs() == ("rosters",)
    assert acme.sync_interval_minutes == 15 and d7.sync_interval_minutes == 60  # its own, or the default
    # process-wide settings come from the process, for every tenant
    assert acme.redis_prefix == d7.redis_prefix == "test-tenants:"


def test_a_tenant_never_inherits_a_per_tenant_setting_from_the_environment(env: dict[str, str]) -> None:
    # The single-tenant deployment's token stays in the environment: a tenant that
    # forgets its own must be stopped, not sent to its target with someone else's.
    env |= {"SAFETYAMP_TOKEN": "default-Tenant-Token-5555", "SAFETYAMP_FQDN": "default.safetyamp.com"}
    result = load(env, {"beta.env": "SAFETYAMP_FQDN=beta.safetyamp.com\nSAMSARA_API_KEY_FROM_FILE=acme-samsara-api-key\n"})

    assert result.tenants == {}
    assert texts(result) == ["beta.env: vehicles: SAFETYAMP_TOKEN is missing"]


def test_quotes_export_comments_and_empty_values_read_as_in_a_dotenv_file(env: dict[str, str]) -> None:
    text = (
        "\n# a comment\nexport SAFETYAMP_FQDN='acme.safetyamp.com'\n\n"
        'SAFETYAMP_TOKEN_FROM_ENV="ACME_SAFETYAMP_TOKEN"  # inline comment\n'
        "SAMSARA_API_KEY_FROM_FILE=ACME_SAMSARA_API_KEY\n"  # same naming as SECRETS_DIR itself: dashes = underscores
        "VEHICLE_SITE_ID=\n"  # empty means unset, as everywhere
        "SAFETYAMP_TOKEN=\n"
    )
    result = load(env, {"acme.env": text})

    assert texts(result) == []
    acme = result.tenants["acme"]
    assert acme.safetyamp_fqdn == "acme.safetyamp.com" and acme.vehicle_site_id is None
    assert acme.safetyamp_token is not None and acme.safetyamp_token.get_secret_value() == ACME_TOKEN


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # a secret's value written in the file
            ACME + f"SCIM_TOKEN={LEAKED}\n",
            "acme.env: SCIM_TOKEN: a secret is never written in a tenant file; name where it is with "
            "SCIM_TOKEN_FROM_ENV, SCIM_TOKEN_FROM_FILE or SCIM_TOKEN_FROM_KEYVAULT (the file is refused)",
        ),
        (ACME + "SAFETYAMP_FDQN=x\n", "acme.env: SAFETYAMP_FDQN: unknown setting (did you mean SAFETYAMP_FQDN?)"),
        (
            ACME + "SAFETYAMP_TOKN_FROM_ENV=X\n",
            "acme.env: SAFETYAMP_TOKN_FROM_ENV: unknown setting (did you mean SAFETYAMP_TOKEN_FROM_ENV?)",
        ),
        (
            ACME + "SAFETYAMP_URL_FROM_ENV=X\n",
            "acme.env: SAFETYAMP_URL_FROM_ENV: SAFETYAMP_URL is not a secret: write its value, SAFETYAMP_URL=...",
        ),
        (
            ACME + "REDIS_URL_FROM_ENV=X\n",
            "acme.env: REDIS_URL_FROM_ENV: REDIS_URL is a setting of the whole process, not of a tenant: "
            "set it in the daemon's environment",
        ),
        (
            ACME + "PORT=9000\n",
            "acme.env: PORT: PORT is a setting of the whole process, not of a tenant: set it in the daemon's environment",
        ),
        (
            ACME.replace("SAFETYAMP_TOKEN_FROM_ENV=ACME_SAFETYAMP_TOKEN", "SAFETYAMP_TOKEN_FROM_ENV=NOT_SET_ANYWHERE"),
            "acme.env: SAFETYAMP_TOKEN_FROM_ENV (NOT_SET_ANYWHERE): the environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            ACME.replace("acme-samsara-api-key", "no-such-file"),
            "acme.env: SAMSARA_API_KEY_FROM_FILE (no-such-file): SECRETS_DIR has no file no-such-file (or it is empty)",
        ),
        (
            ACME.replace("acme-samsara-api-key", "../secrets/acme-samsara-api-key"),
            "acme.env: SAMSARA_API_KEY_FROM_FILE (../secrets/acme-samsara-api-key): '../secrets/acme-samsara-api-key' "
            "is not a file name (a name in SECRETS_DIR, not a path)",
        ),
        (
            ACME + "SCIM_TOKEN_FROM_KEYVAULT=not-in-the-vault\n",
            "acme.env: SCIM_TOKEN_FROM_KEYVAULT (not-in-the-vault): the Key Vault has no enabled secret not-in-the-vault "
            "(or it is empty)",
        ),
        (
            ACME + "SAFETYAMP_TOKEN_FROM_FILE=acme-samsara-api-key\n",
            "acme.env: SAFETYAMP_TOKEN_FROM_FILE: SAFETYAMP_TOKEN has two sources (SAFETYAMP_TOKEN_FROM_ENV too); keep one",
        ),
        (ACME + "SYNC_INTERVAL_MINUTES=5\n", "acme.env: SYNC_INTERVAL_MINUTES: set twice (lines 5 and 6); keep one"),
        (
            ACME + "SAFETYAMP_URL=${BASE}/api\n",
            "acme.env: SAFETYAMP_URL: tenant files do not expand ${...}; write the value (or, for a secret, a _FROM_ reference)",
        ),
        (ACME + "SYNC_INTERVAL_MINUTES\n", "acme.env: SYNC_INTERVAL_MINUTES: line 6: no '=' (write SYNC_INTERVAL_MINUTES=value)"),
        (
            ACME + f"{LEAKED} is a token\n",
            "acme.env: line 6: not a NAME=value line (the line is not shown: it may hold a secret)",
        ),
        (ACME + "SAFETYAMP_FQDN=https://acme\n", "acme.env: SAFETYAMP_FQDN: set twice (lines 2 and 6); keep one"),
        (
            ACME.replace("acme.safetyamp.com", "https://acme.safetyamp.com"),
            "acme.env: SAFETYAMP_FQDN='https://acme.safetyamp.com': must be a host name such as acme.safetyamp.com "
            "(no https://, no path)",
        ),
        (  # missing required: vehicles without SafetyAmp's host
            ACME.replace("SAFETYAMP_FQDN=acme.safetyamp.com\n", ""),
            "acme.env: vehicles: SAFETYAMP_FQDN is missing",
        ),
        (ACME + "scim_token=" + LEAKED + "\n", "acme.env: scim_token: setting names are upper case (SCIM_TOKEN)"),
        (
            "# nothing yet\n",
            "acme.env: no sync is configured: set VIEWPOINT_DB_URL (or SQL_*) and SAFETYAMP_TOKEN/SAFETYAMP_FQDN, SAMSARA_API_KEY, or ONEROSTER_*/SCIM_* (or run with --sandbox)",
        ),
    ],
    ids=[
        "inline-secret",
        "unknown-setting",
        "unknown-reference",
        "reference-to-a-non-secret",
        "process-wide-reference",
        "process-wide-setting",
        "missing-env-var",
        "missing-secret-file",
        "secret-file-path",
        "missing-vault-secret",
        "two-sources",
        "duplicate",
        "expansion",
        "no-equals",
        "syntax-error-not-shown",
        "duplicate-with-bad-value",
        "bad-value",
        "missing-required",
        "lower-case-name",
        "empty-file",
    ],
)
def test_a_bad_file_names_the_file_and_the_setting(env: dict[str, str], text: str, expected: str) -> None:
    result = load(env, {"acme.env": text})

    assert result.tenants == {}
    assert expected in texts(result)
    assert all(LEAKED not in t for t in texts(result))
    # Whole in the logs too: nothing in a problem looks like a secret to the log scrubber.
    assert [scrub(t) for t in texts(result)] == texts(result)


def test_a_bad_secret_value_behind_a_reference_names_the_reference_not_the_value(env: dict[str, str]) -> None:
    env["ACME_SAFETYAMP_TOKEN"] = "has a space " + LEAKED
    result = load(env, {"acme.env": ACME})

    [problem] = result.all_problems()
    assert problem.setting == "SAFETYAMP_TOKEN"
    assert str(problem).startswith("acme.env: SAFETYAMP_TOKEN (secret, not shown): must be printable ASCII")
    assert str(problem).endswith("(from SAFETYAMP_TOKEN_FROM_ENV ACME_SAFETYAMP_TOKEN)")
    assert LEAKED not in str(problem)


def test_references_without_their_source_configured(env: dict[str, str]) -> None:
    del env["SECRETS_DIR"], env["AZURE_KEY_VAULT_NAME"]
    result = load(env, {"acme.env": ACME, "district-7.env": DISTRICT})

    assert texts(result) == [
        "acme.env: SAMSARA_API_KEY_FROM_FILE (acme-samsara-api-key): SECRETS_DIR is not set, so there is no file to read it from",
        "district-7.env: SCIM_TOKEN_FROM_KEYVAULT (d7-scim-token): no Key Vault is configured "
        "(AZURE_KEY_VAULT_URL or AZURE_KEY_VAULT_NAME)",
    ]


@pytest.mark.parametrize("tenant_id", ["Acme", "-acme", "acme-", "ac_me", "ac.me", "a" * 64, "acmé"])
def test_bad_tenant_ids(tenant_id: str) -> None:
    assert tenant_id_problem(tenant_id) is not None


@pytest.mark.parametrize("tenant_id", ["a", "acme", "district-7", "7", "a" * 63, "default"])
def test_good_tenant_ids(tenant_id: str) -> None:
    assert tenant_id_problem(tenant_id) is None


def test_every_problem_of_every_file_at_once_and_the_good_tenant_still_loads(env: dict[str, str]) -> None:
    files = {
        "acme.env": ACME,
        "Beta_Corp.env": ACME,  # bad id, content fine
        "district-7.env": DISTRICT.replace("D7_ONEROSTER_TOKEN", "D7_MISSING") + f"SCIM_TOKEN={LEAKED}\nPORT=1\n",
        "notes.txt": "not a tenant",
        ".hidden": f"SCIM_TOKEN={LEAKED}\n",  # a mounted ConfigMap keeps ..data and friends here
    }
    write(Path(env["TENANTS_DIR"]) / "..2026_11_29", {"acme.env": "stale copy"})
    result = load(env, files)

    assert list(result.tenants) == ["acme"]  # one bad file stops only its own tenant
    assert sorted(result.problems) == ["Beta_Corp.env", "district-7.env", "notes.txt"]
    assert result.problems["Beta_Corp.env"][0].message.startswith("tenant id 'Beta_Corp' (the file name without .env)")
    d7 = [(p.setting, p.message.split(":")[0]) for p in result.problems["district-7.env"]]
    assert d7 == [
        ("SCIM_TOKEN", "SCIM_TOKEN"),
        ("PORT", "PORT"),
        ("ONEROSTER_TOKEN", "ONEROSTER_TOKEN_FROM_ENV (D7_MISSING)"),
    ]
    assert [str(p) for p in result.problems["notes.txt"]] == [
        "notes.txt: not a tenant file: a tenant is declared by <tenant-id>.env"
    ]
    assert all(LEAKED not in t for t in texts(result))
    assert [scrub(t) for t in texts(result)] == texts(result)


def test_a_missing_tenants_dir_is_a_problem_of_the_folder(env: dict[str, str]) -> None:
    result = load(env)  # the folder was never created

    assert result.tenants == {}
    assert texts(result) == [f"{env['TENANTS_DIR']}: TENANTS_DIR: no such folder"]


def test_a_problem_of_the_process_own_settings_stops_everything(env: dict[str, str]) -> None:
    env["REDIS_URL"] = "http://not-redis"
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        load(env, {"acme.env": ACME})


def test_every_secret_setting_can_be_referenced_and_none_is_process_wide_by_accident() -> None:
    assert {"SAFETYAMP_TOKEN", "SCIM_TOKEN", "SQL_PASSWORD", "VIEWPOINT_DB_URL", "MS_GRAPH_CLIENT_SECRET"} <= SECRET_NAMES
    # The process's own secrets are not a tenant's to set.
    assert SECRET_NAMES & PROCESS_WIDE == {"REDIS_URL", "SYNC_TRIGGER_TOKEN", "CONSOLE_TOKEN"}


# --------------------------------------------------------------------------- single tenant


def test_without_tenants_dir_the_environment_is_the_tenant_default(env: dict[str, str]) -> None:
    plain = {
        "SAFETYAMP_TOKEN": ACME_TOKEN,
        "SAFETYAMP_FQDN": "acme.safetyamp.com",
        "SAMSARA_API_KEY": ACME_SAMSARA,
        "REDIS_PREFIX": "single:",
    }
    expected = load_settings(plain, dotenv_path=None)

    result = load_tenants(plain, dotenv_path=None)
    assert result.ok and result.tenants == {DEFAULT_TENANT: expected}
    assert single_tenant(plain, dotenv_path=None) == {"default": expected}
    # and its errors are today's, unchanged
    with pytest.raises(ConfigurationError) as caught:
        single_tenant({"SAFETYAMP_FQDN": "https://x"}, dotenv_path=None)
    with pytest.raises(ConfigurationError) as before:
        load_settings({"SAFETYAMP_FQDN": "https://x"}, dotenv_path=None)
    assert caught.value.problems == before.value.problems


# --------------------------------------------------------------------------- watcher


def test_the_watcher_sees_tenants_added_changed_and_removed(env: dict[str, str]) -> None:
    folder = write(Path(env["TENANTS_DIR"]), {"acme.env": ACME})
    watcher = TenantWatcher(env, dotenv_path=None, keyvault_factory=lambda url: VAULT)

    first = watcher.poll()
    assert list(first.added) == ["acme"] and not first.changed and not first.removed and first

    assert not watcher.poll()  # nothing changed

    write(folder, {"district-7.env": DISTRICT})
    added = watcher.poll()
    assert list(added.added) == ["district-7"] and not added.changed and not added.removed
    assert sorted(added.tenants) == ["acme", "district-7"]

    write(folder, {"acme.env": ACME.replace("SYNC_INTERVAL_MINUTES=15", "SYNC_INTERVAL_MINUTES=30")})
    changed = watcher.poll()
    assert list(changed.changed) == ["acme"] and changed.changed["acme"].sync_interval_minutes == 30
    assert not changed.added and not changed.removed

    (folder / "district-7.env").unlink()
    removed = watcher.poll()
    assert removed.removed == ("district-7",) and not removed.added and not removed.changed
    assert list(removed.tenants) == ["acme"]


def test_the_watcher_stops_a_tenant_whose_file_turns_bad_and_starts_it_again_when_fixed(env: dict[str, str]) -> None:
    folder = write(Path(env["TENANTS_DIR"]), {"acme.env": ACME, "district-7.env": DISTRICT})
    watcher = TenantWatcher(env, dotenv_path=None, keyvault_factory=lambda url: VAULT)
    watcher.poll()

    write(folder, {"acme.env": ACME + f"SCIM_TOKEN={LEAKED}\n"})
    broken = watcher.poll()
    assert broken.removed == ("acme",) and list(broken.tenants) == ["district-7"]
    assert broken.problems_changed and [p.setting for p in broken.problems] == ["SCIM_TOKEN"]

    assert not watcher.poll()  # the same problem is not news

    write(folder, {"acme.env": ACME})
    fixed = watcher.poll()
    assert list(fixed.added) == ["acme"] and fixed.problems == () and fixed.problems_changed


def test_the_watcher_follows_a_mounted_configmap_update(env: dict[str, str]) -> None:
    # The kubelet's layout: the keys are links through ..data to a timestamped folder,
    # and an update writes a new folder and swaps ..data in one rename.
    folder = Path(env["TENANTS_DIR"])
    write(folder / "..2026_11_29_01", {"acme.env": ACME, "district-7.env": DISTRICT})
    (folder / "..data").symlink_to("..2026_11_29_01")
    for name in ("acme.env", "district-7.env"):
        (folder / name).symlink_to(f"..data/{name}")
    watcher = TenantWatcher(env, dotenv_path=None, keyvault_factory=lambda url: VAULT)
    assert sorted(watcher.poll().added) == ["acme", "district-7"]

    write(folder / "..2026_11_29_02", {"acme.env": ACME.replace("=15", "=45"), "district-7.env": DISTRICT})
    (folder / "..data_tmp").symlink_to("..2026_11_29_02")
    (folder / "..data_tmp").rename(folder / "..data")
    update = watcher.poll()
    assert list(update.changed) == ["acme"] and update.changed["acme"].sync_interval_minutes == 45
    assert not update.added and not update.removed and update.problems == ()


def test_the_watcher_sees_a_rotated_secret_file(env: dict[str, str]) -> None:
    write(Path(env["TENANTS_DIR"]), {"acme.env": ACME})
    watcher = TenantWatcher(env, dotenv_path=None, keyvault_factory=lambda url: VAULT)
    watcher.poll()

    write(Path(env["SECRETS_DIR"]), {"acme-samsara-api-key": "rotated-Samsara-Key-6666"})
    rotated = watcher.poll()
    assert list(rotated.changed) == ["acme"]
    key = rotated.changed["acme"].samsara_api_key
    assert key is not None and key.get_secret_value() == "rotated-Samsara-Key-6666"


def test_the_watcher_reloads_after_reload_seconds_for_key_vault_rotation(env: dict[str, str]) -> None:
    write(Path(env["TENANTS_DIR"]), {"district-7.env": DISTRICT})
    vault = FakeVault({"d7-scim-token": D7_SCIM})
    now = [0.0]
    watcher = TenantWatcher(env, dotenv_path=None, keyvault_factory=lambda url: vault, reload_seconds=300, clock=lambda: now[0])
    watcher.poll()

    vault.secrets["d7-scim-token"] = "rotated-Scim-Token-7777"
    now[0] = 299.0
    assert not watcher.poll()  # no file changed and not yet due
    now[0] = 300.0
    assert list(watcher.poll().changed) == ["district-7"]


def test_a_process_problem_on_reload_keeps_the_tenants_running(env: dict[str, str]) -> None:
    write(Path(env["TENANTS_DIR"]), {"acme.env": ACME})
    live = dict(env)
    watcher = TenantWatcher(live, dotenv_path=None, keyvault_factory=lambda url: VAULT)
    watcher.poll()

    live["REDIS_URL"] = "http://not-redis"
    bad = watcher.poll(force=True)
    assert bad.problems_changed and bad.problems[0].file == "environment" and bad.problems[0].setting == "REDIS_URL"
    assert not bad.removed and list(bad.tenants) == ["acme"]


# --------------------------------------------------------------------------- check command


def test_check_prints_each_file_ok_or_its_problems_and_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    folder = write(tmp_path / "other", {"acme.env": ACME, "bad.env": f"SAFETYAMP_TOKEN={LEAKED}\n"})
    env.pop("AZURE_KEY_VAULT_NAME")
    env["SAFETYAMP_TOKEN"] = "set-for-no-tenant-8888"
    out = io.StringIO()

    assert check_main(folder, env, out) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "acme.env: ok (tenant acme; syncs: vehicles)"
    assert lines[1].startswith("bad.env: SAFETYAMP_TOKEN: a secret is never written in a tenant file")
    assert "note: set in the environment but used by no tenant: SAFETYAMP_TOKEN" in lines
    assert lines[-1] == "1 tenant(s) ok, 1 file(s) with problems"
    assert LEAKED not in out.getvalue() and "set-for-no-tenant-8888" not in out.getvalue()

    (folder / "bad.env").unlink()
    assert check_main(folder, env, io.StringIO()) == 0


def test_check_runs_as_a_module(env: dict[str, str]) -> None:
    folder = write(Path(env["TENANTS_DIR"]), {"acme.env": ACME, "b.env": "SAFETYAMP_FQDN=b.safetyamp.com\n"})
    run_env = {k: v for k, v in env.items() if k not in ("TENANTS_DIR", "AZURE_KEY_VAULT_NAME")}
    run_env |= {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "config.tenants", "check", str(folder)],
        cwd=folder,  # no .env of the repository
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "acme.env: ok (tenant acme; syncs: vehicles)" in done.stdout
    assert "b.env: no sync is configured: SafetyAmp is set but no source is" in done.stdout
    assert ACME_TOKEN not in done.stdout + done.stderr


# --------------------------------------------------------------------------- found by the outside review


@pytest.mark.parametrize(
    ("reference", "where"),
    [
        ("SCIM_TOKEN_FROM_ENV=CONSOLE_TOKEN", "env"),
        ("SCIM_TOKEN_FROM_ENV=SYNC_TRIGGER_TOKEN", "env"),
        ("SCIM_TOKEN_FROM_ENV=REDIS_URL", "env"),
        ("SCIM_TOKEN_FROM_ENV=SAFETYAMP_TOKEN", "env"),
        ("SCIM_TOKEN_FROM_ENV=AZURE_CLIENT_SECRET", "env"),
        ("SCIM_TOKEN_FROM_FILE=console-token", "file"),
        ("SCIM_TOKEN_FROM_FILE=SYNC_TRIGGER_TOKEN", "file"),
    ],
)
def test_a_tenant_cannot_borrow_the_process_own_secrets(env: dict[str, str], reference: str, where: str) -> None:
    """A reference to the console password, the trigger token, the Redis URL or the
    process's Azure identity would send it to whatever URL the tenant file names."""
    process_secret = "Process-Own-Secret-0123456789abcdef"
    for name in ("CONSOLE_TOKEN", "SYNC_TRIGGER_TOKEN", "SAFETYAMP_TOKEN", "AZURE_CLIENT_SECRET"):
        env[name] = process_secret
    env["REDIS_URL"] = "redis://:" + process_secret + "@127.0.0.1:6379/0"
    write(Path(env["SECRETS_DIR"]), {"console-token": process_secret, "SYNC_TRIGGER_TOKEN": process_secret})
    text = "SCIM_URL=https://evil.example.org/scim/v2\nONEROSTER_CSV_PATH=/tmp/x\n" + reference + "\n"
    result = load(env, {"evil.env": text})
    assert result.tenants == {}
    found = " ".join(texts(result))
    assert "belongs to the process" in found, found
    assert process_secret not in found


def test_a_line_without_equals_is_not_repeated(env: dict[str, str]) -> None:
    """A token pasted alone on a line must not be published by /health or the logs."""
    result = load(env, {"acme.env": ACME + LEAKED + "\n"})
    found = " ".join(texts(result))
    assert "no '='" in found and LEAKED not in found
