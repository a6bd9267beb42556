"""Tenant declarations: one file per tenant in TENANTS_DIR (issue 13, first slice).

A tenant is one customer's sources and targets. It is declared by one file,
``<tenant-id>.env``, in the folder TENANTS_DIR names (in Kubernetes a mounted ConfigMap).
The file holds the tenant's settings under the environment names of
``config.settings``, one ``NAME=value`` a line (the ``.env`` syntax). Secrets are
**references**, never values::

    SAFETYAMP_TOKEN_FROM_ENV=ACME_SAFETYAMP_TOKEN      an environment variable of the process
    SAFETYAMP_TOKEN_FROM_FILE=acme-safetyamp-token     a file in SECRETS_DIR
    SAFETYAMP_TOKEN_FROM_KEYVAULT=acme-safetyamp-token a secret in the Azure Key Vault

and a file that writes a secret setting's value inline is refused. References are
resolved by the same readers as the process's own settings (``_read_secrets_dir``,
``KeyVaultSource``), so a secret file or vault secret means the same thing here.

Why the ``.env`` syntax and not YAML: the values are environment strings, and YAML would
retype them on the way (``NO`` and ``off`` become false, ``010`` becomes 8, ``1.10``
becomes 1.1, a bare ``:`` starts a mapping), which is a silent change of a setting;
python-dotenv is already a run-time dependency (PyYAML is not), and an operator can
paste a line between a tenant file and a pod's ``env:`` unchanged.

What a tenant's Settings are made of: the **process-wide** settings (PROCESS_WIDE:
where state lives, the HTTP port, logging, the console, where secrets are read from)
come from the process (``load_settings`` on the environment); every other setting comes
from the tenant file or its default, **never** from the process environment, so a
token set for the single-tenant deployment can never reach another tenant's target. A
tenant file naming a process-wide setting is refused.

Validation: every file is read and checked (syntax, tenant id, known names, references
resolved, values valid, the enabled syncs' required settings present) and every problem
of every file is returned at once, each naming the file and the setting; a bad file
stops only its own tenant (``load_tenant_dir`` returns the good tenants' Settings next
to the bad files' problems). ``TenantWatcher`` polls the folder (and SECRETS_DIR) by
content hash and reports added, changed and removed tenants; ``python -m config.tenants
check DIR`` prints the verdict for each file.

Without TENANTS_DIR, ``load_tenants`` returns the one tenant ``default`` built by
``load_settings`` exactly as before (``single_tenant``).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.settings import (
    _FIELD_OF,
    KeyVaultFactory,
    SecretSource,
    Settings,
    _describe,
    _is_secret,
    _read_secrets_dir,
    load_settings,
    setting_names,
)
from utils.errors import ConfigurationError

DEFAULT_TENANT = "default"
"""The one tenant of a deployment without TENANTS_DIR."""

TENANT_FILE_SUFFIX = ".env"

TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""A tenant id labels metrics, prefixes Redis keys and names an output folder: lower-case
letters, digits and inner dashes, 1-63 characters (a DNS label, as Kubernetes names
are). No leading dash (a folder ``-x`` reads as a command-line option), no dot, no
slash, no upper case (``Acme`` and ``acme`` must not be two tenants on one file system
and one in another)."""

REFERENCE_SUFFIXES: dict[str, str] = {
    "_FROM_ENV": "an environment variable",
    "_FROM_FILE": "a file in SECRETS_DIR",
    "_FROM_KEYVAULT": "a secret in the Azure Key Vault",
}
"""How a tenant file names where a secret setting's value is: ``<SETTING><suffix>=<name>``."""

PROCESS_WIDE: frozenset[str] = frozenset(
    {
        # where settings, secrets and tenants are read from
        "TENANTS_DIR",
        "TENANT_WORKERS",
        "SECRETS_DIR",
        "AZURE_KEY_VAULT_URL",
        "AZURE_KEY_VAULT_NAME",
        "KEYVAULT_TTL_SECONDS",
        # the process: its port, its logs, its metrics push
        "PORT",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "PUSHGATEWAY_URL",
        # where state lives (the per-tenant prefix and folder are the isolation slice's)
        "REDIS_URL",
        "REDIS_PREFIX",
        "OUTPUT_DIR",
        # how replicas exclude each other: one rule for every tenant (a tenant on a file
        # lock would run on two replicas at once)
        "LOCK_REQUIRED",
        "LOCK_TTL_SECONDS",
        # the operator's doors into the daemon
        "SYNC_TRIGGER_TOKEN",
        "CONSOLE_TOKEN",
        "CONSOLE_TRUSTED_PROXY",
        "CONSOLE_OPERATOR_GROUPS",
        "CONSOLE_VIEWER_GROUPS",
        "CONSOLE_SESSION_IDLE_MINUTES",
        "AUDIT_RETENTION_DAYS",
    }
)
"""Settings of the process, not of a tenant: taken from the process's own configuration
for every tenant; a tenant file naming one is refused."""

SECRET_NAMES: frozenset[str] = frozenset(
    str(info.alias) for info in Settings.model_fields.values() if info.alias and _is_secret(info)
)
"""Settings whose values are secrets (``SecretStr``): by reference only in a tenant file."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_VAULT_SECRET_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")


@dataclass(frozen=True)
class Problem:
    """One problem of one tenant file (``file`` is its name in TENANTS_DIR) or of the
    folder itself (``file`` is the folder). ``setting`` is the setting it concerns, if
    one; ``message`` starts with that setting's name. Never holds a secret value."""

    file: str
    message: str
    setting: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class TenantLoad:
    """What a load of the tenant declarations found: the good tenants' Settings (by id),
    the file each came from, and every problem by file name (a file with problems
    starts no tenant)."""

    tenants: dict[str, Settings]
    files: dict[str, str] = field(default_factory=dict)
    problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    directory: Path | None = None
    base: Settings | None = None
    """The process's own Settings (process-wide settings, SECRETS_DIR, the vault)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def all_problems(self) -> list[Problem]:
        return [p for name in sorted(self.problems) for p in self.problems[name]]


# --------------------------------------------------------------------------- reading


def tenant_id_problem(tenant_id: str) -> str | None:
    """Why ``tenant_id`` cannot be a tenant id, or None."""
    if TENANT_ID.fullmatch(tenant_id):
        return None
    return (
        f"tenant id {tenant_id!r} (the file name without {TENANT_FILE_SUFFIX}) must be 1-63 lower-case letters, "
        "digits or dashes, starting and ending with a letter or digit (it labels metrics, prefixes Redis keys "
        "and names a folder)"
    )


def tenant_files(directory: Path) -> list[Path]:
    """The entries of TENANTS_DIR that declare something: every non-hidden file. Hidden
    entries are skipped (a mounted ConfigMap keeps its own ``..data`` links there)."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file())


def read_tenant_file(path: Path) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """``{NAME: (value, line)}`` of one tenant file and its syntax problems. Lines are
    parsed as ``.env`` lines (``NAME=value``, ``export NAME=value``, quotes, ``#``
    comments) without variable expansion. A line that does not parse is named by its
    number only: it may hold a secret."""
    from dotenv.parser import parse_stream

    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [Problem(path.name, f"cannot be read as UTF-8 text ({type(exc).__name__})")]
    values: dict[str, tuple[str, int]] = {}
    for binding in parse_stream(io.StringIO(text)):
        # The parser counts blank lines before a binding as part of it: skip them.
        raw = binding.original.string
        line = binding.original.line + raw[: len(raw) - len(raw.lstrip())].count("\n")
        if binding.error:
            problems.append(
                Problem(path.name, f"line {line}: not a NAME=value line (the line is not shown: it may hold a secret)")
            )
            continue
        if binding.key is None:
            continue  # a comment or a blank line
        if binding.value is None:
            if binding.key in _FIELD_OF or _reference(binding.key):
                problems.append(Problem(path.name, f"{binding.key}: line {line}: no '=' (write {binding.key}=value)", binding.key))
            else:  # not a setting's name: a value pasted alone on a line, perhaps a secret
                problems.append(Problem(path.name, f"line {line}: no '=' (the line is not shown: it may hold a secret)"))
            continue
        if binding.key in values:
            first = values[binding.key][1]
            problems.append(Problem(path.name, f"{binding.key}: set twice (lines {first} and {line}); keep one", binding.key))
            continue
        values[binding.key] = (binding.value, line)
    return values, problems


# --------------------------------------------------------------------------- resolving


class SecretReferences:
    """Resolves references for one load: the process environment, SECRETS_DIR (read
    once, by the reader ``load_settings`` uses) and the Key Vault (one source)."""

    def __init__(self, environ: Mapping[str, str], base: Settings, keyvault_factory: KeyVaultFactory | None) -> None:
        self._environ = environ
        self._base = base
        self._keyvault_factory = keyvault_factory
        self._files: dict[str, str] | None = None
        self._vault: SecretSource | None = None

    def resolve(self, kind: str, ref: str) -> str:
        """The value a reference points to; ConfigurationError (naming no value) if none."""
        if kind in ("_FROM_ENV", "_FROM_FILE"):
            _refuse_process_name(ref)
        if kind == "_FROM_ENV":
            if not _ENV_NAME.fullmatch(ref):
                raise ConfigurationError(f"{ref!r} is not an environment variable name")
            value = self._environ.get(ref)
            if not value:
                raise ConfigurationError(f"the environment variable {ref} is {'empty' if value == '' else 'not set'}")
            return value
        if kind == "_FROM_FILE":
            if not _SECRET_FILE_NAME.fullmatch(ref) or ".." in ref:
                raise ConfigurationError(f"{ref!r} is not a file name (a name in SECRETS_DIR, not a path)")
            if self._base.secrets_dir is None:
                raise ConfigurationError("SECRETS_DIR is not set, so there is no file to read it from")
            if self._files is None:
                self._files = _read_secrets_dir(self._base.secrets_dir)
            # Same naming as the process's own secret files: acme-token and ACME_TOKEN are one name.
            value = self._files.get(ref.upper().replace("-", "_"))
            if not value:
                raise ConfigurationError(f"SECRETS_DIR has no file {ref} (or it is empty)")
            return value
        if kind == "_FROM_KEYVAULT":
            if not _VAULT_SECRET_NAME.fullmatch(ref):
                raise ConfigurationError(f"{ref!r} is not a Key Vault secret name (letters, digits and dashes)")
            vault_url = self._base.key_vault_url
            if not vault_url:
                raise ConfigurationError("no Key Vault is configured (AZURE_KEY_VAULT_URL or AZURE_KEY_VAULT_NAME)")
            if self._vault is None:
                from config.keyvault import KeyVaultSource

                if self._keyvault_factory is not None:
                    self._vault = self._keyvault_factory(vault_url)
                else:
                    self._vault = KeyVaultSource(vault_url, ttl_seconds=self._base.keyvault_ttl_seconds)
            from config.keyvault import env_name_for

            env_name = env_name_for(ref)
            value = self._vault.values([env_name]).get(env_name)
            if not value:
                raise ConfigurationError(f"the Key Vault has no enabled secret {ref} (or it is empty)")
            return value
        raise AssertionError(kind)


PROCESS_NAME_PREFIXES = ("AZURE_", "KUBERNETES_", "POD_", "SANDBOX_")
"""Environment names of the process's own identity and platform (Azure's workload
identity, the pod): never a tenant's secret."""


def _refuse_process_name(ref: str) -> None:
    """A reference may not name one of the process's own settings (the console password,
    the trigger token, the Redis URL, the single-tenant SAFETYAMP_TOKEN...) as a variable
    or a secret file: the tenant file would send that value to the URL it names."""
    name = ref.upper().replace("-", "_").replace(".", "_")
    if name in _FIELD_OF or name.startswith(PROCESS_NAME_PREFIXES):
        raise ConfigurationError(
            f"{ref} belongs to the process (its own configuration), not to a tenant: "
            "give the tenant's secret a name of its own"
        )


def _reference(name: str) -> tuple[str, str] | None:
    """``("SAFETYAMP_TOKEN", "_FROM_ENV")`` for ``SAFETYAMP_TOKEN_FROM_ENV``, else None."""
    for suffix in REFERENCE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def _unknown(name: str) -> str:
    if name != name.upper() and (name.upper() in _FIELD_OF or _reference(name.upper())):
        return f"{name}: setting names are upper case ({name.upper()})"
    known = [n for n in setting_names() if n not in PROCESS_WIDE]
    known += [f"{n}{s}" for n in SECRET_NAMES - PROCESS_WIDE for s in REFERENCE_SUFFIXES]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return f"{name}: unknown setting" + (f" (did you mean {close[0]}?)" if close else "")


def _setting_of(message: str) -> str | None:
    head = re.match(r"[A-Z][A-Z0-9_]*", message)
    return head.group(0) if head and head.group(0) in _FIELD_OF else None


_Report = Callable[[str, str | None], None]  # files a problem: its message, and the setting it is about


def _split_values(values: Mapping[str, tuple[str, int]], problem: _Report) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A tenant file's values as plain settings and secret references (setting -> (suffix,
    reference)); whatever a tenant file may not say is reported and left out."""
    plain: dict[str, str] = {}
    refs: dict[str, tuple[str, str]] = {}
    for name, (value, _line) in values.items():
        parsed = _reference(name)
        target = parsed[0] if parsed else name
        if target in PROCESS_WIDE:
            problem(
                f"{name}: {target} is a setting of the whole process, not of a tenant: set it in the daemon's environment", target
            )
            continue
        if parsed is not None:
            if target not in SECRET_NAMES:
                if target in _FIELD_OF:
                    problem(f"{name}: {target} is not a secret: write its value, {target}=...", target)
                else:
                    problem(_unknown(name), name)
                continue
            if target in refs:
                problem(f"{name}: {target} has two sources ({target}{refs[target][0]} too); keep one", target)
                continue
            if value.strip():
                refs[target] = (parsed[1], value.strip())
            continue
        if name not in _FIELD_OF:
            problem(_unknown(name), name)
            continue
        if name in SECRET_NAMES:
            if value != "":
                # The value is not repeated, not even in part.
                problem(
                    f"{name}: a secret is never written in a tenant file; name where it is with "
                    f"{name}_FROM_ENV, {name}_FROM_FILE or {name}_FROM_KEYVAULT (the file is refused)",
                    name,
                )
            continue
        if "${" in value:
            problem(f"{name}: tenant files do not expand ${{...}}; write the value (or, for a secret, a _FROM_ reference)", name)
            continue
        if value != "":  # NAME= means unset, as everywhere else
            plain[name] = value
    return plain, refs


def _resolve_references(
    plain: dict[str, str], refs: dict[str, tuple[str, str]], secrets: SecretReferences, problem: _Report
) -> None:
    """Each secret reference's value into ``plain``; a reference that does not resolve is reported."""
    for target, (suffix, ref) in refs.items():
        try:
            plain[target] = secrets.resolve(suffix, ref)
        except ConfigurationError as exc:
            for text in exc.problems:
                # Not "NAME=ref": log scrubbers rightly mask whatever follows "..._TOKEN_FROM_ENV=".
                problem(f"{target}{suffix} ({ref}): {text}", target)


def _validated(plain: dict[str, str], refs: dict[str, tuple[str, str]], base: Settings, problem: _Report) -> Settings | None:
    """Settings from the process-wide values of ``base`` and the tenant's own, checked; None
    (with the problems reported) if they do not validate."""
    merged: dict[str, Any] = {}
    for name in PROCESS_WIDE:
        inherited = getattr(base, _FIELD_OF[name])
        if inherited is not None:
            merged[name] = inherited
    merged.update(plain)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        for text in _describe(exc, merged):
            setting = _setting_of(text)
            if setting in refs:
                suffix, ref = refs[setting]
                text = f"{text} (from {setting}{suffix} {ref})"
            problem(text, setting)
        return None
    try:
        settings.check()
    except ConfigurationError as exc:
        for text in exc.problems:
            problem(text, None)
        return None
    return settings


def tenant_settings(
    file_name: str,
    values: Mapping[str, tuple[str, int]],
    *,
    base: Settings,
    secrets: SecretReferences,
) -> tuple[Settings | None, list[Problem]]:
    """One tenant's Settings from its file's values, or None and every problem found."""
    problems: list[Problem] = []

    def problem(message: str, setting: str | None = None) -> None:
        problems.append(Problem(file_name, message, setting or _setting_of(message)))

    plain, refs = _split_values(values, problem)
    _resolve_references(plain, refs, secrets, problem)
    if problems:
        return None, problems
    return _validated(plain, refs, base, problem), problems


# --------------------------------------------------------------------------- loading


def load_tenant_dir(
    directory: Path,
    environ: Mapping[str, str],
    *,
    base: Settings,
    keyvault_factory: KeyVaultFactory | None = None,
) -> TenantLoad:
    """Every tenant declared in ``directory``: the good ones' Settings and every
    problem of the others, all at once. ``base`` is the process's Settings (process-wide
    settings, SECRETS_DIR, Key Vault); ``environ`` resolves ``_FROM_ENV`` references."""
    directory = Path(directory)
    if not directory.is_dir():
        why = "is not a folder" if directory.exists() else "no such folder"
        problem = Problem(str(directory), f"TENANTS_DIR: {why}", "TENANTS_DIR")
        return TenantLoad({}, problems={str(directory): (problem,)}, directory=directory, base=base)
    secrets = SecretReferences(environ, base, keyvault_factory)
    tenants: dict[str, Settings] = {}
    files: dict[str, str] = {}
    problems: dict[str, tuple[Problem, ...]] = {}
    try:
        paths = tenant_files(directory)
    except OSError as exc:
        reason = f"TENANTS_DIR: cannot be listed ({type(exc).__name__})"
        problem = Problem(str(directory), reason, "TENANTS_DIR")
        return TenantLoad({}, problems={str(directory): (problem,)}, directory=directory, base=base)
    for path in paths:
        found: list[Problem] = []
        if path.suffix != TENANT_FILE_SUFFIX:
            found.append(Problem(path.name, f"not a tenant file: a tenant is declared by <tenant-id>{TENANT_FILE_SUFFIX}"))
            problems[path.name] = tuple(found)
            continue
        tenant_id = path.name[: -len(TENANT_FILE_SUFFIX)]
        bad_id = tenant_id_problem(tenant_id)
        if bad_id:
            found.append(Problem(path.name, bad_id))
        values, syntax = read_tenant_file(path)
        found += syntax
        settings, more = tenant_settings(path.name, values, base=base, secrets=secrets)
        found += more
        if found or settings is None:
            problems[path.name] = tuple(found)
        else:
            tenants[tenant_id] = settings
            files[tenant_id] = path.name
    return TenantLoad(tenants, files, problems, directory, base)


def scoped(tenant_id: str, settings: Settings) -> Settings:
    """The settings a tenant's runtime runs with: every Redis key under
    ``{REDIS_PREFIX}t:<tenant>:`` (locks, breakers, failed records, quarantine, operator
    state, roster cursor, schedule) and every output file under
    ``OUTPUT_DIR/tenants/<tenant>/``. The one tenant of a deployment without
    TENANTS_DIR keeps today's keys and folders."""
    if settings.tenants_dir is None:
        return settings
    return settings.model_copy(
        update={
            "redis_prefix": f"{settings.redis_prefix}t:{tenant_id}:",
            "output_dir": Path(settings.output_dir) / "tenants" / tenant_id,
        }
    )


def single_tenant(environ: Mapping[str, str], **kwargs: Any) -> dict[str, Settings]:
    """Today's configuration as the one tenant ``default``: ``load_settings`` unchanged
    (same sources, same precedence, same errors)."""
    return {DEFAULT_TENANT: load_settings(environ, **kwargs)}


def load_tenants(
    environ: Mapping[str, str],
    *,
    dotenv_path: str | Path | None = ".env",
    overrides: Mapping[str, str] | None = None,
    keyvault_factory: KeyVaultFactory | None = None,
) -> TenantLoad:
    """The tenants this process serves. Without TENANTS_DIR: ``default`` from the
    environment as today (the entry points check its syncs as before). With it: every
    file of the folder (``load_tenant_dir``). Raises ConfigurationError only for a
    problem of the process's own settings, which every tenant shares."""
    base = load_settings(environ, dotenv_path=dotenv_path, overrides=overrides, keyvault_factory=keyvault_factory)
    if base.tenants_dir is None:
        return TenantLoad({DEFAULT_TENANT: base}, base=base)
    return load_tenant_dir(base.tenants_dir, environ, base=base, keyvault_factory=keyvault_factory)


def ignored_environment(environ: Mapping[str, str]) -> list[str]:
    """Per-tenant settings set in the process environment although TENANTS_DIR is set:
    no tenant uses them (worth a warning: the operator may think one does)."""
    return sorted(n for n in setting_names() if n not in PROCESS_WIDE and environ.get(n))


# --------------------------------------------------------------------------- watching


@dataclass(frozen=True)
class TenantChanges:
    """What one ``TenantWatcher.poll`` saw. ``removed``: tenants to stop after their
    current run (their file is gone, or now has problems: see ``problems``). ``tenants``
    is the whole current set. True when anything (problems included) differs."""

    added: dict[str, Settings] = field(default_factory=dict)
    changed: dict[str, Settings] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    problems_changed: bool = False
    tenants: dict[str, Settings] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.problems_changed)


def folder_fingerprint(folders: Iterable[Path | None]) -> str:
    """A hash of the names and contents of the non-hidden files of ``folders`` (a
    ConfigMap or Secret update swaps a symlink: mtimes may not move, contents do)."""
    digest = hashlib.sha256()
    for folder in folders:
        digest.update(f"\0folder {folder}\0".encode())
        if folder is None:
            continue
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError:
            entries = []
        for path in entries:
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                data = f"unreadable {type(exc).__name__}".encode()
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


class TenantWatcher:
    """Polls TENANTS_DIR (and SECRETS_DIR, where ``_FROM_FILE`` secrets rotate) and
    reports what changed since the last poll. The daemon calls ``poll()`` on its tick;
    the first call reports every tenant as added. Nothing is reloaded while the files'
    contents stay the same, unless ``reload_seconds`` passed (Key Vault secrets rotate
    without a file changing) or ``force``.

    A problem of the process's own settings (a bad REDIS_URL...) is reported in
    ``problems`` and changes no tenant: the tenants keep their last good Settings."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        dotenv_path: str | Path | None = ".env",
        keyvault_factory: KeyVaultFactory | None = None,
        reload_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._environ = environ
        self._dotenv_path = dotenv_path
        self._keyvault_factory = keyvault_factory
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._folders: tuple[Path | None, ...] | None = None
        self._fingerprint: str | None = None
        self._loaded_at = 0.0
        self.tenants: dict[str, Settings] = {}
        self.problems: tuple[Problem, ...] = ()

    def poll(self, *, force: bool = False) -> TenantChanges:
        due = self._reload_seconds is not None and self._clock() - self._loaded_at >= self._reload_seconds
        if self._folders is not None and not force and not due:
            if folder_fingerprint(self._folders) == self._fingerprint:
                return TenantChanges(problems=self.problems, tenants=dict(self.tenants))
        try:
            load = load_tenants(self._environ, dotenv_path=self._dotenv_path, keyvault_factory=self._keyvault_factory)
        except ConfigurationError as exc:
            problems = tuple(Problem("environment", text, _setting_of(text)) for text in exc.problems)
            changed = problems != self.problems
            self.problems = problems
            self._folders = None  # retry on the next poll
            return TenantChanges(problems=problems, problems_changed=changed, tenants=dict(self.tenants))
        base_dirs = self._dirs(load)
        self._folders = base_dirs
        self._fingerprint = folder_fingerprint(base_dirs)
        self._loaded_at = self._clock()
        old, new = self.tenants, load.tenants
        problems = tuple(load.all_problems())
        changes = TenantChanges(
            added={t: s for t, s in new.items() if t not in old},
            changed={t: s for t, s in new.items() if t in old and old[t] != s},
            removed=tuple(sorted(t for t in old if t not in new)),
            problems=problems,
            problems_changed=problems != self.problems,
            tenants=dict(new),
        )
        self.tenants, self.problems = dict(new), problems
        return changes

    @staticmethod
    def _dirs(load: TenantLoad) -> tuple[Path | None, ...]:
        return (load.directory, load.base.secrets_dir if load.base is not None else None)


# --------------------------------------------------------------------------- command line


def check_main(directory: Path, environ: Mapping[str, str], out: Any = None) -> int:
    """``python -m config.tenants check DIR``: each tenant file ok or its problems; 2
    if any problem (of a file, the folder or the process's own settings), else 0."""
    out = out or sys.stdout
    try:
        load = load_tenants(environ, overrides={"TENANTS_DIR": str(directory)})
    except ConfigurationError as exc:
        for text in exc.problems:
            print(f"environment: {text}", file=out)
        return 2
    names = sorted({*load.files.values(), *load.problems})
    if not names:
        print(f"{directory}: no tenant files (<tenant-id>{TENANT_FILE_SUFFIX})", file=out)
    by_file = {name: tenant for tenant, name in load.files.items()}
    for name in names:
        if name in by_file:
            tenant = by_file[name]
            syncs = ", ".join(load.tenants[tenant].enabled_syncs())
            print(f"{name}: ok (tenant {tenant}; syncs: {syncs})", file=out)
        else:
            for problem in load.problems[name]:
                print(str(problem), file=out)
    ignored = ignored_environment(environ)
    if ignored and load.tenants:
        print(f"note: set in the environment but used by no tenant: {', '.join(ignored)}", file=out)
    bad = len(load.problems)
    print(f"{len(load.tenants)} tenant(s) ok, {bad} file(s) with problems", file=out)
    return 2 if bad else 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.tenants", description="Tenant declarations (TENANTS_DIR).")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate every tenant file of DIR; exit 2 on any problem")
    check.add_argument("directory", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    from utils.logger import configure_logging

    configure_logging("WARNING", "text")
    return check_main(args.directory, dict(environ))


if __name__ == "__main__":
    raise SystemExit(main())
