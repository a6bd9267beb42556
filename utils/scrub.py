"""The one scrub: every text or value that leaves the process goes through here.

Output surfaces and where each calls it: logs (``utils.logger``'s filter and
formatters), change and error files (``services.event_manager``), reasons kept in Redis
(``utils.quarantine``, ``utils.failed_sync_tracker``), every HTTP response body of the
daemon, /metrics included (``main.create_app``), the CLI's summary, plan, ``failed list``
and ``diagnose`` output (``sync_batch``), error messages built from outside text
(``services.http``, ``services.graph_api``, ``services.viewpoint_api``,
``config.keyvault``) and configuration errors (``utils.errors``).

What is masked, with ``***``:

* **known secret values**: every value registered with :func:`add_secrets` (the
  entry points register ``Settings.secret_values()``, which includes the credentials
  found inside URL settings, see :func:`url_secrets`), plus their URL-encoded forms;
  values shorter than :data:`MIN_SECRET_LENGTH` are ignored;
* **credential-shaped text**, registered or not:

  - URL userinfo: the password of ``scheme://user:password@host`` and the whole
    userinfo of ``scheme://token@host`` (a lone user name in a URL is a credential:
    API tokens are passed that way);
  - query parameters whose name suggests a secret, after ``?``, ``&`` or ``;``
    (:func:`is_secret_param`: ``api_key``, ``apikey``, ``key``, ``token``,
    ``access_token``, ``secret``, ``client_secret``, ``password``, ``pwd``, ``sig``,
    ``signature``, ``code``, ...; case-insensitive, percent-decoded);
  - ``name=value`` pairs anywhere whose name is clearly secret (``password=``,
    ``client_secret=``, ``PWD={...}`` in ODBC strings); the short, ambiguous names
    (``key``, ``code``) only inside a query string, so a log's ``key=1234`` survives;
  - ``Authorization``/``X-Api-Key``/``Cookie`` headers, ``Bearer`` tokens, and quoted
    ``"password": "..."`` pairs in JSON bodies and dict reprs.

A :class:`Redactor` holds a set of values; a child (``parent=``) also applies its
parent's, so a component with secrets of its own (an HTTP client's per-request token)
still honours the process registry (:func:`default_redactor`).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from utils.data_validator import is_secret_field  # one definition of a secret field name

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "Redactor",
    "add_secrets",
    "default_redactor",
    "is_secret_param",
    "scrub",
    "scrub_value",
    "url_secrets",
]

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Registered values shorter than this are ignored: masking every "1" or "abc" in the
logs would make them useless, and real credentials are far longer."""

# ---------------------------------------------------------------------------- names

_SECRET_MARKERS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "accountkey",
    "privatekey",
    "signingkey",
    "credential",
    "signature",
    "assertion",
    "authcode",
    "authorizationcode",
    "sessionid",
)
"""A query parameter whose name (lower case, punctuation removed) contains one of these
is a secret: ``client_secret``, ``access_token``, ``$skiptoken``, ``X-Amz-Signature``."""

_SECRET_PARAMS = frozenset(
    {"key", "code", "sig", "pwd", "pw", "pass", "auth", "authorization", "jwt", "sid", "session", "otp", "hmac", "sas"}
)
"""Whole query parameter names that carry credentials: Google's ``key``, OAuth's
``code``, Azure SAS ``sig``, ODBC-style ``pwd``. Compared whole, so ``zipcode`` or
``keyword`` stay readable."""


@functools.lru_cache(maxsize=1024)
def is_secret_param(name: str) -> bool:
    """True when a URL query parameter of this name must not be shown."""
    squashed = re.sub(r"[^a-z0-9]", "", unquote_plus(name).lower())
    return squashed in _SECRET_PARAMS or any(marker in squashed for marker in _SECRET_MARKERS)


# ---------------------------------------------------------------------------- shapes

_SENSITIVE_KEY = (
    r"[\w.\-]*(?:password|passwd|passphrase|secret|token|api[_\-]?key|access[_\-]?key|account[_\-]?key"
    r"|private[_\-]?key|credential|signature)[\w.\-]*|pwd|sig"
)
"""Names whose ``name=value`` or ``"name": "value"`` is masked wherever it appears."""

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#@'\"<>]+)@")
_QUERY_PAIR = re.compile(r"(?<=[?&;])([^=&;?#\s\"'<>]{1,80})=([^&;#\s\"'<>\\]*)")

# Authorization: Bearer abc / "authorization": "Basic xyz" / X-Api-Key: abc
_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|ocp-apim-subscription-key|cookie|set-cookie)"
    r"([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic|digest|token|negotiate|ntlm|sharedaccesssignature)\s+)?[^\s\"',;}&]+"
)
_HEADER_WORDS = ("authorization", "api-key", "subscription-key", "cookie")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# "client_secret": "abc" and 'password': 'abc' (JSON bodies, dict reprs)
_QUOTED = re.compile(r"(?i)([\"'](?:" + _SENSITIVE_KEY + r"|authorization)[\"']\s*:\s*)([\"'])(?:\\.|(?!\2).)*\2")
_KEY_WORDS = ("passw", "passphrase", "secret", "token", "key", "credential", "signature", "pwd", "sig", "authorization")
# password=abc, access_token=abc, sig=abc (connection strings, form bodies, k=v logs)
# (ODBC brace-quotes values with spaces or semicolons: PWD={p w;x}). The name is checked
# by a function, not inside the pattern: a pattern that searches every word for a
# secret-looking part cost 15 ms on a 37 KB /metrics page.
_PAIR = re.compile(r"(?<![\w.\-])([\w.\-]+)=(\{[^}]*\}|[^\s&\"',;)}\]]+)")
_SECRET_NAME = re.compile(r"(?i)" + _SENSITIVE_KEY)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.fullmatch(name) is not None


_MAYBE_CREDENTIAL = re.compile(r"(?i)[:=]|bearer")
"""Every shape needs a ``:`` or ``=`` (``://``, ``key: v``, ``key=v``) or the word
bearer: text without them (names, e-mails, phone numbers: most of a change log) skips
the substitutions, which cost more than the rest of a write."""


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{scheme}{user}:{MASK}@"
    return f"{scheme}{MASK}@"


def _mask_query_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if value and is_secret_param(name):
        # Closing brackets ending the value belong to the text around the URL ("(see
        # https://h/?api_key=x)"); at worst a secret's own last ")" stays visible.
        closing = len(value) - len(value.rstrip(")]"))
        return f"{name}={MASK}" + (value[-closing:] if closing and closing < len(value) else "")
    return match.group(0)


def _mask_pair(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={MASK}" if _is_secret_name(name) else match.group(0)


def _mask_shapes(text: str) -> str:
    if _MAYBE_CREDENTIAL.search(text) is None:
        return text
    lowered = text.lower()  # cheap look-ups decide which patterns can match at all
    if "://" in text:
        text = _URL_USERINFO.sub(_mask_userinfo, text)
    if any(word in lowered for word in _HEADER_WORDS):
        text = _HEADER.sub(r"\1\2" + MASK, text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1 " + MASK, text)
    if ('"' in text or "'" in text) and any(word in lowered for word in _KEY_WORDS):
        text = _QUOTED.sub(r"\1\2" + MASK + r"\2", text)
    if "=" in text:
        text = _PAIR.sub(_mask_pair, text)
        # after the pairs above, which know ODBC's PWD={...} braces
        text = _QUERY_PAIR.sub(_mask_query_pair, text)
    return text


def url_secrets(url: str) -> list[str]:
    """The credentials inside one URL: its userinfo password (or the whole userinfo when
    there is no password) and the values of its secret-named query parameters, decoded
    and as written. Registered with the other secret values, they are masked even where
    they appear without their URL (an exception quoting only the path and query)."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # a malformed port or bracket: fall back to the shapes
        return []
    out: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        user, _, password = userinfo.partition(":")
        credential = password or user
        out.extend({credential, unquote(credential)})
    for pair in re.split(r"[&;]", parts.query):
        name, eq, value = pair.partition("=")
        if eq and value and is_secret_param(name):
            out.extend({value, unquote_plus(value), unquote(value)})
    return [value for value in out if value]


# ---------------------------------------------------------------------------- values


class Redactor:
    """Replaces secret values and credential-shaped text with ``***``.

    Thread-safe: registering a value swaps in a new compiled pattern, readers use
    whichever snapshot they grabbed.
    """

    def __init__(self, secrets: Iterable[Any] = (), *, parent: Redactor | None = None) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._parent = parent
        self.add(secrets)

    def add(self, values: Iterable[Any]) -> None:
        """Register secret values (str, or objects with ``get_secret_value()`` such as
        pydantic's SecretStr); None, blanks and values shorter than MIN_SECRET_LENGTH
        are ignored."""
        if isinstance(values, str):  # a lone string is one secret, not its characters
            values = (values,)
        fresh: set[str] = set()
        for value in values:
            if value is not None and hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if not isinstance(value, str):
                continue
            value = value.strip()
            if len(value) < MIN_SECRET_LENGTH:
                continue
            fresh.update({value, quote(value, safe=""), quote_plus(value)})
        with self._lock:
            if fresh <= self._values:
                return
            self._values |= fresh
            ordered = sorted(self._values, key=len, reverse=True)  # longest first: no partial leaks
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def text(self, text: str) -> str:
        """``text`` with every known secret value and credential shape masked."""
        if not text:
            return text
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if self._parent is not None:
            text = self._parent._values_only(text)
        return _mask_shapes(text)

    def _values_only(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if self._parent is not None:
            text = self._parent._values_only(text)
        return text

    def value(self, obj: Any, *, sensitive_keys: Literal["mask", "drop"] = "mask") -> Any:
        """Scrub a JSON-like structure. Strings are masked; mappings, lists and tuples
        are copied recursively; numbers, booleans and None pass; dates become ISO
        strings; anything else becomes its (masked) ``str``. An entry whose key looks
        secret (``is_secret_field``: token, password, ssn, date_of_birth, ...) has its
        value replaced by ``***`` (logs: the key itself is useful evidence) or is
        removed entirely with ``sensitive_keys="drop"`` (payloads in output files)."""
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for key, item in obj.items():
                name = str(key)
                if is_secret_field(name):
                    if sensitive_keys == "drop":
                        continue
                    out[name] = MASK if item not in (None, "") else item
                    continue
                out[self.text(name)] = self.value(item, sensitive_keys=sensitive_keys)
            return out
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [self.value(item, sensitive_keys=sensitive_keys) for item in obj]
        if isinstance(obj, (datetime, date)):
            return obj.isoformat()
        if isinstance(obj, bytes):
            return self.text(obj.decode("utf-8", "replace"))
        return self.text(str(obj))


_DEFAULT: Redactor | None = None
_DEFAULT_LOCK = threading.Lock()


def default_redactor() -> Redactor:
    """The process-wide registry fed by ``configure_logging(secrets=...)`` and
    :func:`add_secrets`."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = Redactor()
    return _DEFAULT


def add_secrets(values: Iterable[Any]) -> None:
    """Register more secret values at run time (e.g. an access token just obtained)."""
    default_redactor().add(values)


@functools.lru_cache(maxsize=64)
def _with_extra(extra: frozenset[str]) -> Redactor:
    return Redactor(extra, parent=default_redactor())


def _redactor(extra: Iterable[Any]) -> Redactor:
    values = frozenset(v.get_secret_value() if hasattr(v, "get_secret_value") else v for v in extra if v is not None)
    values = frozenset(v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH)
    return _with_extra(values) if values else default_redactor()


def scrub(text: str, extra: Iterable[Any] = ()) -> str:
    """``text`` scrubbed with the process-wide registry, plus ``extra`` secret values
    known only to the caller (an HTTP client's per-request token)."""
    return _redactor(extra).text(text)


def scrub_value(obj: Any, extra: Iterable[Any] = (), *, sensitive_keys: Literal["mask", "drop"] = "mask") -> Any:
    """A JSON-like structure scrubbed (see :meth:`Redactor.value`)."""
    return _redactor(extra).value(obj, sensitive_keys=sensitive_keys)
