"""The target shadow: SafetyAmp as the last full read left it, plus every write SafetyAmp
acknowledged since, persisted so the next cycle (and a restarted process) can plan
against it instead of reading the whole account (docs/performance.md, "Target shadow").

Where it lives: ``OUTPUT_DIR/state/target-shadow/<scope>/``, one gzip'd JSON file per
collection (named by a random id, so a file is never rewritten in place) and a small
``manifest.json`` naming them, written last and atomically (temporary file, fsync,
rename): a crash leaves the previous shadow or the new one, never a mix.

When it may be used, decided once per cycle under the cycle lock (``TargetCache.begin_cycle``):

- its scope (``shadow_scope``: SafetyAmp URL, FQDN, a hash of the token, REDIS_PREFIX)
  is this runner's;
- its generation equals the write generation in Redis (``{REDIS_PREFIX}safetyamp:shadow:
  generation``). Every runner that writes to SafetyAmp replaces that value with a fresh
  "dirty" one before its first write request, and once more when its run ends; only a
  cycle holding the cycle lock publishes a new clean generation, with a compare-and-set
  from the value it saw (or set) itself, after saving its shadow under that generation.
  Any other writer's mark in between makes the compare-and-set fail. Redis unreachable:
  no shadow is trusted (nothing can vouch for it);
- its last full read is younger than TARGET_FULL_READ_HOURS.

Everything here degrades to "read the target fully": a missing, corrupt or foreign
shadow, an unreadable directory, Redis trouble.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from config.settings import Settings
from sync.ports import Row

log = logging.getLogger("sync.targets")

SHADOW_DIR = Path("state") / "target-shadow"
MANIFEST = "manifest.json"
NOTES = "notes"
FORMAT = 1
DIRTY = "dirty:"
"""Prefix of a generation a writer set: no shadow is ever saved under it."""

_CAS = """
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def shadow_scope(settings: Settings) -> str:
    """What a shadow is valid for: one SafetyAmp account as this runner reaches it (URL,
    or TARGET_SHADOW_SCOPE when set; FQDN; a hash of the token, never the token) and one
    REDIS_PREFIX (the generation that vouches for it lives there)."""
    token = settings.safetyamp_token.get_secret_value() if settings.safetyamp_token else ""
    parts = {
        "url": settings.target_shadow_scope or str(settings.safetyamp_url).rstrip("/").lower(),
        "fqdn": (settings.safetyamp_fqdn or "").strip().lower(),
        "token": hashlib.sha256(token.encode()).hexdigest(),
        "prefix": settings.redis_prefix,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class GenerationUnknown(Exception):
    """Redis could not be asked: no shadow can be vouched for."""


class ShadowStore:
    """One runner's shadow of one SafetyAmp account, and the shared write generation.

    Long-lived (one per process and tenant, on the Runtime): it remembers whether this
    process has completed a cycle (the daemon's first cycle reads fully)."""

    def __init__(
        self,
        directory: Path,
        *,
        scope: str,
        redis: Any,
        prefix: str,
        max_age_seconds: float,
        clock: Any = time.time,
    ) -> None:
        self.directory = Path(directory) / scope
        self.scope = scope
        self.redis = redis
        self.key = f"{prefix}safetyamp:shadow:generation"
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.cycles = 0
        """Cycles this process ran with this store (the daemon reads fully on its first)."""

    # -- the generation (Redis) ---------------------------------------------------
    def generation(self) -> str | None:
        """The current write generation (None: never set); GenerationUnknown when Redis
        cannot be asked."""
        if self.redis is None:
            raise GenerationUnknown("no Redis")
        try:
            raw = self.redis.get(self.key)
        except Exception as exc:  # redis.RedisError and socket errors alike
            raise GenerationUnknown(type(exc).__name__) from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def mark_dirty(self) -> str | None:
        """Replace the generation with a fresh dirty value (before a writer's first write,
        and when its run ends); returns it, or None when Redis did not take it."""
        value = DIRTY + uuid.uuid4().hex
        if self.redis is None:
            return None
        try:
            self.redis.set(self.key, value)
        except Exception as exc:
            log.warning(
                "could not mark the target shadow's generation (%s); shadows vouched for before stay valid until Redis answers",
                type(exc).__name__,
            )
            return None
        return value

    def publish(self, expected: str | None, new: str) -> bool:
        """Set the generation to ``new`` only if it still is ``expected`` (None: unset)."""
        if self.redis is None:
            return False
        try:
            return bool(self.redis.eval(_CAS, 1, self.key, expected or "", new))
        except Exception as exc:
            log.warning("could not publish the target shadow's generation (%s); the next cycle reads fully", type(exc).__name__)
            return False

    # -- the files ----------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The saved shadow's manifest, or None (missing, unreadable, another format)."""
        try:
            raw = (self.directory / MANIFEST).read_text(encoding="utf-8")
            data = json.loads(raw)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
            return None
        return data

    def unusable(self, manifest: Mapping[str, Any] | None, generation: str | None) -> str | None:
        """Why ``manifest`` may not be planned against now (None: it may)."""
        if manifest is None:
            return "no shadow saved"
        if manifest.get("scope") != self.scope:
            return "the shadow belongs to another account or REDIS_PREFIX"
        if generation is None or generation.startswith(DIRTY):
            return "a runner wrote to SafetyAmp without publishing a shadow (or none was ever published)"
        if manifest.get("generation") != generation:
            return "another runner wrote to SafetyAmp since this shadow was saved"
        return too_old(
            manifest.get("full_read_at"),
            self.clock(),
            self.max_age_seconds,
            what="the last full read",
            setting="TARGET_FULL_READ_HOURS",
        )

    def load(self, manifest: Mapping[str, Any], collection: str) -> list[Row] | None:
        """The rows of ``collection`` in the shadow, or None (not in it, or unreadable)."""
        name = manifest.get("files", {}).get(collection)
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            return None
        try:
            rows = json.loads(gzip.decompress((self.directory / name).read_bytes()))
        except (OSError, ValueError, EOFError) as exc:
            log.warning("target shadow file for %s unreadable (%s); reading it from SafetyAmp", collection, type(exc).__name__)
            return None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return None
        return rows

    def save(
        self,
        collections: Mapping[str, Iterable[Row]],
        *,
        keep: Mapping[str, str],
        generation: str,
        full_read_at: float,
    ) -> dict[str, Any]:
        """Write ``collections`` (new files) and a manifest naming them and ``keep``
        (collection -> an existing file of the previous shadow); returns the manifest.
        Raises OSError when the disk refuses (the caller then publishes nothing)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        files = dict(keep)
        for name, rows in collections.items():
            fname = f"{name}-{uuid.uuid4().hex[:12]}.json.gz"
            _atomic_write_gz(self.directory / fname, rows)
            files[name] = fname
        manifest = {
            "format": FORMAT,
            "scope": self.scope,
            "generation": generation,
            "full_read_at": full_read_at,
            "saved_at": self.clock(),
            "files": files,
        }
        _atomic_write(self.directory / MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        self._prune(set(files.values()))
        return manifest

    # -- small notes kept with this shadow (valid only with it) -------------------
    def note(self, name: str) -> dict[str, Any] | None:
        """A small JSON record saved with ``save_note`` (None: none, unreadable)."""
        try:
            data = json.loads((self.directory / NOTES / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save_note(self, name: str, record: Mapping[str, Any]) -> None:
        """Save ``record`` as ``name`` (atomically; best effort: a note is an optimisation)."""
        try:
            folder = self.directory / NOTES
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / f"{name}.json", _ENCODER.encode(record).encode("utf-8", "surrogatepass"))
        except OSError as exc:
            log.warning("target shadow note %s not saved (%s)", name, type(exc).__name__)

    def _prune(self, live: set[str]) -> None:
        """Delete the files no manifest names any more (best effort)."""
        try:
            for path in self.directory.iterdir():
                if path.name.endswith(".json.gz") and path.name not in live:
                    path.unlink(missing_ok=True)
                elif path.name.startswith(".tmp-") and self.clock() - path.stat().st_mtime > 3600:
                    path.unlink(missing_ok=True)
        except OSError:
            pass


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
_CHUNK_ROWS = 1000


def too_old(read_at: Any, now: float, max_age_seconds: float, *, what: str, setting: str) -> str | None:
    """Why a saved read taken at ``read_at`` (Unix time) may not stand in for a fresh one
    now: missing, older than ``max_age_seconds``, or from the future (a clock set back by
    more than 5 minutes). None: young enough. Shared by the SafetyAmp shadow and the
    saved Samsara read."""
    if not isinstance(read_at, (int, float)):
        return f"{what} has no time"
    age = now - float(read_at)
    if age > max_age_seconds or age < -300:
        return f"{what} is {age / 3600:.1f} h old ({setting}={max_age_seconds / 3600:g})"
    return None


def _gz_chunks(rows: Iterable[Row]) -> Iterator[bytes]:
    """The JSON array of ``rows``, a thousand rows at a time: the whole array as one
    string (and its bytes) held about 100 MB at the end of a 50,000-employee first run,
    over the memory goal (docs/performance.md)."""
    yield b"["
    sep, batch = b"", []
    for row in rows:
        batch.append(_ENCODER.encode(row))
        if len(batch) >= _CHUNK_ROWS:
            yield sep + ",".join(batch).encode()
            sep, batch = b",", []
    if batch:
        yield sep + ",".join(batch).encode()
    yield b"]"


def _atomic_write_gz(path: Path, rows: Iterable[Row]) -> None:
    """``rows`` as gzip'd JSON, streamed into a temporary file, then renamed. Level 1: the
    shadow is rewritten on every cycle with writes; 6x smaller than the JSON at a tenth
    of level 9's time (docs/performance.md, "Target shadow")."""

    def write(fh: BinaryIO) -> None:
        with gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=1, mtime=0) as gz:
            for chunk in _gz_chunks(rows):
                gz.write(chunk)

    _atomic_write(path, write)


def _atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """``data`` (bytes, or a function writing to the file) into a temporary file in the
    same folder, flushed to disk, then renamed over ``path``: a reader sees the old file
    or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def build_shadow_store(settings: Settings, redis: Any) -> ShadowStore | None:
    """The shadow of this runner's SafetyAmp account, or None when TARGET_SHADOW is off."""
    if not settings.target_shadow:
        return None
    return ShadowStore(
        Path(settings.output_dir) / SHADOW_DIR,
        scope=shadow_scope(settings),
        redis=redis,
        prefix=settings.redis_prefix,
        max_age_seconds=settings.target_full_read_hours * 3600,
    )
