"""Field-level validation and normalisation of source values before they reach a target.

Pure functions: no I/O, no clock unless one is injected (``iso_date(today=...)``), no
logging. Each ``normalize_*``/``clean_*`` function returns the value in the form the
target wants (``None`` for blank), or raises :class:`InvalidValue` with a reason a
human operator can act on ("phone '555-01' has 5 digits; ..."). A sync turns it into a
``sync.base.Rejected`` (the record refused, or the field left out): written to the errors
file and counted, and the run goes on with the next record.

Formats follow what SafetyAmp accepts (docs/emulated-apis.md, "SafetyAmp"): phones in E.164
``+1XXXXXXXXXX``, dates ``YYYY-MM-DD``, e-mails unique per account case-insensitively.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, date, datetime
from decimal import Decimal

__all__ = [
    "InvalidValue",
    "clean_code",
    "clean_name",
    "clean_text",
    "employee_number",
    "is_secret_field",
    "iso_date",
    "normalize_email",
    "normalize_phone",
    "refused_character",
    "shown_key",
    "whole_number",
]


class InvalidValue(ValueError):
    """A source value the target would reject. ``reason`` is for humans (errors file,
    ``failed list``); ``field`` is filled in when the caller knows it."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# --------------------------------------------------------------------------- phones
#
# Hand-written rather than the `phonenumbers` package: every number we sync is a US
# (NANP) work/cell phone from Vista or Entra, the rules below are the whole of what
# SafetyAmp needs (+1 and ten digits with valid area/exchange codes), and phonenumbers
# would add ~50 MB of metadata to the image for countries we never see. International
# numbers are accepted only when the source already wrote them in E.164.

# re.ASCII: \d would take Arabic-Indic and other Unicode digits, which SafetyAmp refuses
# (or stores as sent); a phone is written in the digits 0-9 (full-width ones are 0-9 after NFKC).
_EXTENSION = re.compile(r"\s*(?:[,;]|(?:ext|extn|extension|x|#)\.?)\s*\d{1,7}\s*$", re.IGNORECASE | re.ASCII)
_PHONE_ALLOWED = re.compile(r"^\+?[\d\s().\-/]+$", re.ASCII)
_NANP_REGIONS = frozenset({"US", "CA"})


def normalize_phone(raw: str | int | None, default_region: str = "US") -> str | None:
    """Return ``raw`` as E.164 (``+15045550101``), ``None`` when blank.

    Accepts the shapes people type: ``(504) 555-0101``, ``504.555.0101``,
    ``+1 504 555 0101``, ``5045550101``, ``1-504-555-0101``; drops an extension
    (``x12``, ``ext. 12``) and keeps the number, since the target has no extension
    field and a reachable main number beats none. Already-international numbers must be
    written ``+<country><number>`` (8 to 15 digits, as E.164 allows).

    Raises InvalidValue for anything else (too short or long, letters, NANP area or
    exchange codes starting with 0 or 1 or of the N11 service form), because sending
    them would earn a 422 or, worse, text the wrong person.
    """
    if default_region.upper() not in _NANP_REGIONS:
        raise ValueError(f"default_region {default_region!r} is not supported; only US and CA (NANP)")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidValue(f"phone is not text (a {type(raw).__name__})")
    if isinstance(raw, int) and raw.bit_length() > 64:
        raise InvalidValue("phone is a number of more than 19 digits")
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text:
        return None
    shown = text if len(text) <= 40 else text[:40] + "..."
    number = _EXTENSION.sub("", text).strip()
    if not _PHONE_ALLOWED.match(number) or number.count("+") > 1:
        raise InvalidValue(f"phone {shown!r} contains characters other than digits and separators")
    digits = re.sub(r"[^0-9]", "", number)
    if number.startswith("+"):
        if digits.startswith("1"):
            if len(digits) != 11:
                raise InvalidValue(f"phone {shown!r} has {len(digits)} digits after +; a +1 number needs 11")
            return "+1" + _check_nanp(digits[1:], shown)
        if digits.startswith("0"):
            raise InvalidValue(f"phone {shown!r}: a country code cannot start with 0")
        if not 8 <= len(digits) <= 15:
            raise InvalidValue(f"phone {shown!r} has {len(digits)} digits; E.164 allows 8 to 15")
        return "+" + digits
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        raise InvalidValue(
            f"phone {shown!r} has {len(digits)} digits; a US number needs 10 "
            "(or 11 starting with 1, or +country code for international)"
        )
    return "+1" + _check_nanp(digits, shown)


def _check_nanp(ten: str, shown: str) -> str:
    area, exchange = ten[:3], ten[3:6]
    if area[0] in "01":
        raise InvalidValue(f"phone {shown!r}: area code {area} cannot start with {area[0]}")
    if area[1:] == "11":
        raise InvalidValue(f"phone {shown!r}: {area} is a service code, not an area code")
    if exchange[0] in "01":
        raise InvalidValue(f"phone {shown!r}: exchange {exchange} cannot start with {exchange[0]}")
    if exchange[1:] == "11":
        raise InvalidValue(f"phone {shown!r}: exchange {exchange} is a service code")
    return ten


# --------------------------------------------------------------------------- e-mail

_LOCAL_ATOM = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")


def normalize_email(raw: str | None) -> str | None:
    """Return the address trimmed and lower-cased, ``None`` when blank.

    The whole address is lower-cased, not just the domain: SafetyAmp treats e-mails as
    unique case-insensitively, Exchange/Entra mailboxes are case-insensitive, and one
    canonical form is what makes change detection and duplicate detection stable.

    Validation is a pragmatic subset of RFC 5322 (what a mailbox really looks like, not
    what the grammar allows): one ``@``; dot-atom local part of at most 64 characters;
    an ASCII domain with a dot, labels of letters/digits/hyphens and an alphabetic TLD;
    at most 254 characters in all. Quoted local parts, IP-literal domains, display names
    and lists (``a@x.com; b@x.com``) are rejected with a reason.
    """
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidValue(f"email is not text (a {type(raw).__name__})")
    text = raw.strip()
    if not text:
        return None
    shown = text if len(text) <= 60 else text[:60] + "..."
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :].strip()
    # Fast path (C speed, 50 000 addresses a run): printable ASCII has no control
    # character and no white space but " "; anything else gets the per-character scans.
    plain = text.isascii() and text.isprintable()
    if not plain:
        for ch in text:
            why = refused_character(ch)
            if why is not None:
                raise InvalidValue(f"email {shown!r} contains {why} (U+{ord(ch):04X})")
    if (" " in text) if plain else any(ch.isspace() for ch in text):
        raise InvalidValue(f"email {shown!r} contains spaces")
    if text.count("@") != 1:
        if text.count("@") == 0:
            raise InvalidValue(f"email {shown!r} has no @")
        raise InvalidValue(f"email {shown!r} has {text.count('@')} @ signs; only one address is allowed")
    if not text.isascii():
        raise InvalidValue(f"email {shown!r} contains non-ASCII characters")
    email = text.lower()
    if len(email) > 254:
        raise InvalidValue(f"email is {len(email)} characters; the limit is 254")
    local, domain = email.split("@")
    if not local:
        raise InvalidValue(f"email {shown!r} has nothing before the @")
    if len(local) > 64:
        raise InvalidValue(f"email {shown!r}: the part before @ is {len(local)} characters; the limit is 64")
    if not _LOCAL_ATOM.match(local):
        raise InvalidValue(f"email {shown!r}: the part before @ has invalid characters or dots")
    if "." not in domain:
        raise InvalidValue(f"email {shown!r}: domain {domain!r} has no dot")
    labels = domain.split(".")
    if not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise InvalidValue(f"email {shown!r}: domain {domain!r} is not a valid host name")
    if not _TLD.match(labels[-1]):
        raise InvalidValue(f"email {shown!r}: domain {domain!r} does not end in a valid top-level domain")
    return email


# --------------------------------------------------------------------------- text
#
# One policy for every text value this product sends to a target (SafetyAmp and SCIM),
# described for operators in docs/configuration.md ("Text sent to the targets"). A value
# is *refused with a reason* when it holds a character that is invisible, changes how
# the text around it is shown, or means nothing outside the system that wrote it:
#
# - control characters (Unicode category Cc: NUL, BEL, ESC, DEL, C1 such as NEL U+0085,
#   which in Vista data is a mis-decoded "..."), except tab, CR and LF in names and text,
#   which are white space: a run of them becomes one space (a pasted address or title);
# - format characters (Cf: zero-width space U+200B, bidi marks and overrides such as
#   U+200E/U+200F/U+202E, soft hyphen, BOM/word joiner), except ZWJ U+200D and ZWNJ
#   U+200C *between two visible characters*: emoji sequences (a family, "woman
#   construction worker") and Persian/Indic spellings need them there, nowhere else;
# - line and paragraph separators (Zl/Zp: U+2028, U+2029): line breaks that break
#   JavaScript string literals and CSV exports downstream;
# - Unicode tag characters (U+E0000-U+E007F): invisible text that can smuggle content
#   past a reader (this also refuses the rare subdivision flags built from them);
# - private-use characters (Co): they mean something only on the machine that typed
#   them (vendor logos, custom fonts); surrogates (Cs) and noncharacters: not text;
# - characters that are printable by category yet show nothing: the Hangul fillers
#   (U+115F, U+1160, U+3164, U+FFA0), the braille blank U+2800, the combining grapheme
#   joiner U+034F, Khmer inherent vowels U+17B4/U+17B5, Mongolian variation selectors
#   (U+180B-U+180D, U+180F), and the variation selectors U+FE00-U+FE0F and
#   U+E0100-U+E01EF except right after a visible character (emoji need VS16 there).
#   They are the Unicode "default ignorable" characters that are not Cf, plus the braille
#   blank, a favourite for names that look empty.
#
# Unassigned code points are allowed in names and text (a newer emoji than this Python's
# Unicode tables knows is still an emoji) but not in codes. Codes (keys and external
# codes: PRDept, Job, a Samsara id, a OneRoster sourcedId, a SCIM userName) are stricter:
# letters, marks, digits, punctuation and symbols of any script and single spaces only,
# at most ``max_len`` characters.
#
# A value Python calls printable (``str.isprintable``, any script) has none of these but
# the printable invisible ones, which are never ASCII: the per-character scan is skipped
# for a printable ASCII value, and for a printable one in which one regular-expression
# search finds none of them, so the policy costs one or two C-speed tests per value for
# nearly every value of a 50 000-employee run.

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Bidirectional embedding/override/isolate controls: able to make a value render as
something else ("Trojan source"). Format characters, named "control characters" in
reasons because that is what they do."""
_JOINERS = frozenset("\u200c\u200d")
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u2800\u3164\uffa0\ufe00-\ufe0f\U000e0100-\U000e01ef]")
"""Printable by category, invisible on screen (see the policy above); never ASCII."""
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_LINE_WHITESPACE = frozenset("\t\n\r")
_WHITESPACE_RUN = re.compile(r"[ \t]*[\t\r\n][ \t\r\n]*")


def refused_character(ch: str, *, code: bool = False) -> str | None:
    """Why the text policy refuses ``ch`` anywhere in a value (a phrase for a reason,
    e.g. "a control character"), or None. Joiners and line white space are judged by
    the callers, which know their neighbours."""
    cp = ord(ch)
    if 0xE0000 <= cp <= 0xE007F:
        return "a Unicode tag character"
    category = unicodedata.category(ch)
    if category == "Cc" or ch in _BIDI_CONTROLS:
        return "a control character"
    if category == "Cf":
        return "an invisible formatting character"
    if category in ("Zl", "Zp"):
        return "a line or paragraph separator"
    if category == "Cs":
        return "an unpaired surrogate"
    if category == "Co":
        return "a private-use character"
    if _INVISIBLE.match(ch):
        return "an invisible character"
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return "a noncharacter"
    if code:
        if category == "Cn":
            return "an unassigned character"
        if category[0] == "Z" and ch != " ":
            return "white space other than a plain space"
    return None


def _joins(text: str, i: int) -> bool:
    """A ZWJ/ZWNJ at ``i`` sits between two visible characters (its only legitimate place)."""
    if i == 0 or i == len(text) - 1:
        return False
    before, after = text[i - 1], text[i + 1]
    return not (before.isspace() or after.isspace() or before in _JOINERS or after in _JOINERS)


def _selects(text: str, i: int) -> bool:
    """A variation selector at ``i`` follows a visible character (an emoji's VS16)."""
    return i > 0 and not text[i - 1].isspace() and not _INVISIBLE.match(text[i - 1]) and text[i - 1] not in _JOINERS


def _suspect(text: str) -> bool:
    """True when ``text`` may hold a refused character (else the scan is skipped)."""
    # str.isprintable() is False for every category the policy refuses (Cc, Cf, Cs, Co,
    # Cn, Zl, Zp) and for spaces other than U+0020; the few printable invisible
    # characters are never ASCII: a printable ASCII value, or a printable one without
    # them, needs no per-character look (C speed; most values of a 50 000-employee run).
    if text.isprintable():
        return not text.isascii() and _INVISIBLE.search(text) is not None
    return True


def _scan(text: str, field: str) -> None:
    """Refuse ``text`` (a name or free text, before white space is collapsed) when it
    holds a character the policy refuses."""
    if not _suspect(text):
        return
    for i, ch in enumerate(text):
        if ch in _LINE_WHITESPACE or (ch in _JOINERS and _joins(text, i)):
            continue
        if _VARIATION_SELECTORS.match(ch) and _selects(text, i):
            continue
        why = refused_character(ch)
        if why is not None:
            raise InvalidValue(f"{field} contains {why} (U+{ord(ch):04X})", field=field)


def _not_text(raw: object, field: str) -> InvalidValue:
    # type only: repr() of a 5000-digit int raises, and the value is no use to a reader
    return InvalidValue(f"{field} is not text (a {type(raw).__name__})", field=field)


def _check_length(text: str, field: str, max_len: int) -> str:
    if len(text) > max_len:
        raise InvalidValue(f"{field} is {len(text)} characters; the limit is {max_len}", field=field)
    return text


def clean_name(raw: str | None, field: str, max_len: int = 100) -> str | None:
    """Return a person's or thing's name NFC-normalised, trimmed, with runs of white
    space (spaces, tabs, line breaks, no-break spaces) collapsed to one space; ``None``
    when blank.

    Letters of any script, apostrophes, hyphens and emoji are kept as they are: people's
    names are not ours to correct. A character the text policy refuses (above: controls,
    invisible formatting, separators, tags, private use) is rejected with a reason such
    as "first_name contains an invisible formatting character (U+200B)", and so is
    anything longer than ``max_len`` characters (code points, as the target counts):
    "first_name is 143 characters; the limit is 100".
    """
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _not_text(raw, field)
    text = raw if raw.isascii() else unicodedata.normalize("NFC", raw)
    _scan(text, field)  # before collapsing: split() would also swallow NEL, U+2028, ...
    text = " ".join(text.split())
    if not text:
        return None
    return _check_length(text, field, max_len)


def clean_text(raw: str | None, max_len: int, field: str = "text") -> str | None:
    """Return one-line free text (a description, an address line) NFC-normalised and
    trimmed, ``None`` when blank. Every field the targets have is one line: a line break
    or tab (with the blanks around it) becomes one space; other inner spaces are kept as
    written. Refused characters and anything longer than ``max_len`` are rejected."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _not_text(raw, field)
    text = raw if raw.isascii() else unicodedata.normalize("NFC", raw)
    _scan(text, field)
    if not text.isprintable():
        text = _WHITESPACE_RUN.sub(" ", text)
    text = text.strip()
    if not text:
        return None
    return _check_length(text, field, max_len)


CODE_MAX_LENGTH = 64
"""Default limit of a code (Vista's PRDept and Job hold 10 characters, Samsara ids about 20)."""


def clean_code(raw: str | int | None, field: str, max_len: int = CODE_MAX_LENGTH) -> str | None:
    """Return a code (a key or external code) trimmed of surrounding blanks (Vista pads
    its codes), ``None`` when blank; otherwise unchanged: a code is compared
    character for character with what the target holds, so it is never rewritten.

    Refused, with a reason: anything the text policy refuses, any white space but single
    plain spaces (a tab, a no-break space, two spaces in a row), unassigned characters,
    and more than ``max_len`` characters. Whole numbers are accepted as their digits.
    """
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw.bit_length() > 200:
            raise InvalidValue(f"{field} is a number of more than 60 digits", field=field)
        raw = str(raw)
    if not isinstance(raw, str):
        raise _not_text(raw, field)
    text = raw.strip(" \t\r\n")
    if not text:
        return None
    if _suspect(text):  # see _scan; codes take no variation selector either
        for ch in text:
            why = refused_character(ch, code=True)
            if why is not None:
                raise InvalidValue(f"{field} contains {why} (U+{ord(ch):04X})", field=field)
    if "  " in text:
        raise InvalidValue(f"{field} {shown_key(text)!r} has two spaces in a row", field=field)
    return _check_length(text, field, max_len)


SHOWN_KEY_LENGTH = 100


def shown_key(value: object) -> str:
    """A key as it may be shown to a person (errors file, ``failed list``, a terminal):
    every character Python does not consider printable escaped (``\x07``, ``\u200b``),
    at most SHOWN_KEY_LENGTH characters. Valid keys are printable: they come back as
    they are."""
    text = value if isinstance(value, str) else _safe_str(value)
    if len(text) > SHOWN_KEY_LENGTH:
        text = text[:SHOWN_KEY_LENGTH] + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _safe_str(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "(a number of more than 60 digits)"
    return str(value)


# --------------------------------------------------------------------------- employee numbers

EMPLOYEE_NUMBER_MAX_LENGTH = 16
"""Characters of an employee number as written anywhere: Vista's bPREH.Employee is an
int (at most 10 digits); Entra ID's employeeId holds at most 16 characters, and tenants
often pad the number with zeros there."""


def employee_number(value: object, source: str = "value") -> str | None:
    """The one canonical form of a Vista employee number, wherever it is written (bPREH,
    an Entra ID employeeId, a SafetyAmp emp_id, a Samsara driver's payroll id, an
    operator's ``diagnose`` key): its digits without leading zeros, so ``1234``,
    ``"001234"`` and ``" 1234 "`` are one employee. ``None`` when blank.

    Only the ASCII digits 0-9, at most EMPLOYEE_NUMBER_MAX_LENGTH characters: anything
    else raises InvalidValue with a reason naming ``source`` ("bPREH.Employee '²' is not
    an employee number: ..."). ``str.isdigit()`` is not the test: it accepts "²" and
    other digits that ``int()`` refuses, and ``int()`` refuses text of more than 4 300
    digits, which made one odd value fail a whole sync."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidValue(f"{source} {value!r} is not an employee number (a boolean)", field=source)
    if isinstance(value, int):
        if not 0 <= value < 10**EMPLOYEE_NUMBER_MAX_LENGTH:
            raise InvalidValue(
                f"{source} {shown_key(value)} is not an employee number (at most {EMPLOYEE_NUMBER_MAX_LENGTH} digits)",
                field=source,
            )
        return str(value)
    if isinstance(value, (float, Decimal)):
        whole = value.is_integer() if isinstance(value, float) else value.is_finite() and value == value.to_integral_value()
        if not whole:
            raise InvalidValue(f"{source} {value!r} is not an employee number (not a whole number)", field=source)
        return employee_number(int(value), source)
    if not isinstance(value, str):
        raise InvalidValue(f"{source} is not an employee number (a {type(value).__name__})", field=source)
    text = value.strip()
    if not text:
        return None
    if len(text) > EMPLOYEE_NUMBER_MAX_LENGTH:
        raise InvalidValue(
            f"{source} {shown_key(text[:20])!r} ({len(text)} characters) is not an employee number "
            f"(at most {EMPLOYEE_NUMBER_MAX_LENGTH} digits)",
            field=source,
        )
    if not (text.isascii() and text.isdigit()):
        raise InvalidValue(f"{source} {shown_key(text)!r} is not an employee number (only the digits 0-9)", field=source)
    return text.lstrip("0") or "0"


def whole_number(value: object, field: str, low: int, high: int) -> int | None:
    """A whole number between ``low`` and ``high`` from an int or ASCII digits (a
    vehicle's model year arrives as text from Samsara), ``None`` when blank; otherwise
    InvalidValue. Never ``int()`` on unchecked text: see ``employee_number``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value if value.bit_length() <= 64 else None
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:
            number = int(text)
    if number is None or not low <= number <= high:
        raise InvalidValue(f"{field} {shown_key(value)!r} is not a whole number from {low} to {high}", field=field)
    return number


# --------------------------------------------------------------------------- dates

_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$", re.ASCII)
PLACEHOLDER_BEFORE = date(1901, 1, 1)
"""Dates before this are placeholders (SQL Server's default 1900-01-01), not facts."""


def iso_date(
    value: date | datetime | str | None,
    *,
    field: str = "date",
    today: date | None = None,
    min_date: date = PLACEHOLDER_BEFORE,
) -> str | None:
    """Return ``value`` as ``YYYY-MM-DD``; ``None`` when blank.

    Accepts ``date``, ``datetime`` (its own calendar date, no time-zone shift: source
    columns such as HireDate are calendar dates stored as midnight), ISO strings
    (``2024-03-01``, ``2024-03-01 00:00:00.000``, ``2024-03-01T00:00:00Z``) and the US
    ``M/D/YYYY`` form. Rejects dates more than a year after ``today`` (default: today in
    UTC) as typos, and dates before ``min_date`` as placeholders.
    """
    day = to_date(value, field=field)
    if day is None:
        return None
    if today is None:
        today = datetime.now(UTC).date()
    limit = _add_year(today)
    if day > limit:
        raise InvalidValue(f"{field} {day.isoformat()} is more than a year in the future", field=field)
    if day < min_date:
        raise InvalidValue(f"{field} {day.isoformat()} is before {min_date.isoformat()}: a placeholder, not a date", field=field)
    return day.isoformat()


def to_date(value: date | datetime | str | None, *, field: str = "date") -> date | None:
    """``value`` as a calendar date (the forms ``iso_date`` accepts), ``None`` when blank;
    InvalidValue when it is not a date. No range check: that is ``iso_date``'s."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        return _parse_date(text, field) if text else None
    raise InvalidValue(f"{field} is not a date (a {type(value).__name__})", field=field)


def _parse_date(text: str, field: str) -> date:
    us = _US_DATE.match(text)
    try:
        if us:
            month, day, year = (int(g) for g in us.groups())
            return date(year, month, day)
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text).date()
    except ValueError:
        raise InvalidValue(f"{field} {text[:40]!r} is not a date (expected YYYY-MM-DD)", field=field) from None


def _add_year(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


# --------------------------------------------------------------------------- rejections

_SECRET_SUBSTRINGS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "apikey",
    "privatekey",
    "credential",
    "cookie",
    "dateofbirth",
    "birthdate",
    "socialsecurity",
)
_SECRET_WORDS = frozenset({"ssn", "dob", "pwd", "sin", "tin"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)  # pure; asked for every key of every logged entry
def is_secret_field(name: str) -> bool:
    """True for field names whose values must never be written to logs, error files or
    Redis: credentials and the personal data we do not need to show (SSN, birth date).

    Long markers match anywhere (``client_secret``, ``SAFETYAMP_TOKEN``,
    ``BirthDate``); short ones only as a whole word, so ``ssn`` hides ``SSN`` and
    ``employee_ssn`` but not ``business_name``.
    """
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    if any(marker in squashed for marker in _SECRET_SUBSTRINGS):
        return True
    words = {w.lower() for w in _WORD_SPLIT.split(name) if w}
    return bool(words & _SECRET_WORDS)
