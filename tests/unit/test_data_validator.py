"""utils.data_validator: literal tables of what the sources really contain."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data_validator import (
    InvalidValue,
    clean_code,
    clean_name,
    clean_text,
    employee_number,
    is_secret_field,
    iso_date,
    normalize_email,
    normalize_phone,
    shown_key,
    whole_number,
)

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 22)


# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(504) 555-0101", "+15045550101"),
        ("504.555.0101", "+15045550101"),
        ("+1 504 555 0101", "+15045550101"),
        ("5045550101", "+15045550101"),
        ("1-504-555-0101", "+15045550101"),
        ("1 (504) 555-0101", "+15045550101"),
        ("504-555-0101", "+15045550101"),
        ("504/555-0101", "+15045550101"),
        ("  504 555 0101  ", "+15045550101"),
        ("+15045550101", "+15045550101"),
        (5045550101, "+15045550101"),
        ("504-555-0101 x12", "+15045550101"),
        ("504-555-0101x12", "+15045550101"),
        ("504-555-0101 ext. 12", "+15045550101"),
        ("504-555-0101 ext 1234", "+15045550101"),
        ("504-555-0101 Extension 7", "+15045550101"),
        ("(504) 555-0101 #3", "+15045550101"),
        ("\uff15\uff10\uff14\uff15\uff15\uff15\uff10\uff11\uff10\uff11", "+15045550101"),  # full-width digits
        ("+44 20 7946 0958", "+442079460958"),
        ("+442079460958", "+442079460958"),
        ("+52 55 1234 5678", "+525512345678"),
        ("+4930123456", "+4930123456"),
    ],
)
def test_phone_shapes_become_e164(raw: object, expected: str) -> None:
    assert normalize_phone(raw) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [None, "", "   ", "\t"])
def test_blank_phone_is_none(raw: str | None) -> None:
    assert normalize_phone(raw) is None


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("555-01", "5 digits"),
        ("n/a", "characters other than digits"),
        ("N/A", "characters other than digits"),
        ("none", "characters other than digits"),
        ("1-800-FLOWERS", "characters other than digits"),
        ("504-555-O101", "characters other than digits"),  # letter O
        ("504555010", "9 digits"),
        ("504555010112", "12 digits"),
        ("25045550101", "11 digits"),  # 11 digits not starting with 1
        ("(004) 555-0101", "area code 004 cannot start with 0"),
        ("(104) 555-0101", "area code 104 cannot start with 1"),
        ("(504) 055-0101", "exchange 055 cannot start with 0"),
        ("(504) 155-0101", "exchange 155 cannot start with 1"),
        ("(911) 555-0101", "service code"),
        ("(504) 911-0101", "service code"),
        ("+1 504 555 010", "a +1 number needs 11"),
        ("+0 123 456 7890", "country code cannot start with 0"),
        ("+12", "a +1 number needs 11"),
        ("+4412345", "7 digits"),
        ("+44 1234 5678 9012 34", "16 digits"),
        ("++15045550101", "characters other than digits"),
        ("504+5550101", "characters other than digits"),
        ("0", "1 digits"),
        ("504-555-0101 / 504-555-0102", "20 digits"),
        (True, "not text"),
        (5.5, "not text"),
    ],
)
def test_garbage_phones_are_rejected_with_a_reason(raw: object, reason_part: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_phone(raw)  # type: ignore[arg-type]
    assert reason_part in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_phone_region_other_than_nanp_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="only US and CA") as caught:
        normalize_phone("5045550101", default_region="GB")
    assert not isinstance(caught.value, InvalidValue)
    assert normalize_phone("416 555 0199", default_region="CA") == "+14165550199"


@given(st.from_regex(r"[2-9][02-9][0-9][2-9][02-9][0-9][0-9]{4}", fullmatch=True))
def test_any_valid_nanp_number_round_trips(ten: str) -> None:
    assert normalize_phone(ten) == "+1" + ten
    assert normalize_phone(f"({ten[:3]}) {ten[3:6]}-{ten[6:]}") == "+1" + ten
    assert normalize_phone("+1" + ten) == "+1" + ten


@given(st.text(max_size=30))
def test_phone_never_raises_anything_but_invalid_value(raw: str) -> None:
    try:
        result = normalize_phone(raw)
    except InvalidValue:
        return
    assert result is None or (result.startswith("+") and result[1:].isdigit() and 8 <= len(result) - 1 <= 15)


# --------------------------------------------------------------------------- e-mail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane.doe@example.com", "jane.doe@example.com"),
        ("  Jane.Doe@Example.COM  ", "jane.doe@example.com"),
        ("JDOE@CONTOSO.ONMICROSOFT.COM", "jdoe@contoso.onmicrosoft.com"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("first+tag@sub.example.co.uk", "first+tag@sub.example.co.uk"),
        ("a_b-c@my-company.com", "a_b-c@my-company.com"),
        ("mailto:Jane@Example.com", "jane@example.com"),
        ("x@xn--mller-kva.de", "x@xn--mller-kva.de"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_valid_emails_are_trimmed_and_lowercased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_blank_email_is_none(raw: str | None) -> None:
    assert normalize_email(raw) is None


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        ("jane.doe", "no @"),
        ("jane@doe@example.com", "2 @ signs"),
        ("a@x.com; b@x.com", "spaces"),
        ("a@x.com,b@x.com", "2 @ signs"),
        ("jane doe@example.com", "spaces"),
        ("jane@example", "has no dot"),
        ("jane@localhost", "has no dot"),
        ("@example.com", "nothing before the @"),
        ("jane@", "has no dot"),
        ("jane@.example.com", "not a valid host name"),
        ("jane@example..com", "not a valid host name"),
        ("jane@-example.com", "not a valid host name"),
        ("jane@example.com.", "not a valid host name"),
        ("jane@example.c", "top-level domain"),
        ("jane@example.123", "top-level domain"),
        (".jane@example.com", "invalid characters or dots"),
        ("jane.@example.com", "invalid characters or dots"),
        ("ja..ne@example.com", "invalid characters or dots"),
        ('"jane"@example.com', "invalid characters or dots"),
        ("jane(comment)@example.com", "invalid characters or dots"),
        ("jané@example.com", "non-ASCII"),
        ("jane@exämple.com", "non-ASCII"),
        ("jane\x00@example.com", "contains a control character (U+0000)"),
        ("jane@exa\u200bmple.com", "invisible formatting character (U+200B)"),
        ("a" * 65 + "@example.com", "65 characters; the limit is 64"),
        ("a@" + ("b" * 60 + ".") * 5 + "com", "the limit is 254"),
        ("Jane Doe <jane@example.com>", "spaces"),
        (12345, "not text"),
    ],
)
def test_bad_emails_are_rejected_with_a_reason(raw: object, reason_part: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_email(raw)  # type: ignore[arg-type]
    assert reason_part in caught.value.reason


# --------------------------------------------------------------------------- names and text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane", "Jane"),
        ("  Jane  ", "Jane"),
        ("Mary   Ann", "Mary Ann"),
        ("Mary\tAnn", "Mary Ann"),
        ("Mary\nAnn", "Mary Ann"),
        ("Mary\u00a0Ann", "Mary Ann"),  # no-break space
        ("O'Brien", "O'Brien"),
        ("O\u2019Brien", "O\u2019Brien"),  # typographic apostrophe kept
        ("Smith-Jones", "Smith-Jones"),
        ("José", "José"),
        ("Jose\u0301", "José"),  # decomposed accent -> NFC
        ("Nguyễn", "Nguyễn"),
        ("Łukasz Żółć", "Łukasz Żółć"),
        ("Ærøskøbing", "Ærøskøbing"),
        ("محمد", "محمد"),
        ("李小龍", "李小龍"),
        ("Ёлка", "Ёлка"),
        ("Jane 🚀", "Jane 🚀"),
        ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # zero-width joiners inside an emoji are kept
        ("Dr. J. R. R. Tolkien, Jr.", "Dr. J. R. R. Tolkien, Jr."),
        ("a" * 100, "a" * 100),
    ],
)
def test_names_are_kept_as_people_write_them(raw: str, expected: str) -> None:
    assert clean_name(raw, "first_name") == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "\n\t "])
def test_blank_name_is_none(raw: str | None) -> None:
    assert clean_name(raw, "first_name") is None


def test_long_name_reason_names_the_field_and_limit() -> None:
    with pytest.raises(InvalidValue) as caught:
        clean_name("x" * 143, "first_name")
    assert caught.value.reason == "first_name is 143 characters; the limit is 100"
    assert caught.value.field == "first_name"


def test_thousand_character_name_and_custom_limit() -> None:
    with pytest.raises(InvalidValue, match="last_name is 1000 characters; the limit is 100"):
        clean_name("é" * 1000, "last_name")
    with pytest.raises(InvalidValue, match="the limit is 5"):
        clean_name("Jonathan", "first_name", max_len=5)
    # the limit applies after collapsing whitespace
    assert clean_name("  " + "a" * 50 + "     " + "b" * 49 + "  ", "name") == "a" * 50 + " " + "b" * 49


@pytest.mark.parametrize(
    "raw",
    ["Jane\x00", "Ja\x07ne", "Jane\x1b[31m", "Jane\x7f", "Ja\x9bne", "Jane\u202eenaJ", "Ja\u2066ne", "Mary\x85Ann"],
)
def test_control_characters_in_names_are_rejected(raw: str) -> None:
    # NEL (U+0085) included: in Vista data it is a mis-decoded "..." (cp1252 0x85), not a line break
    with pytest.raises(InvalidValue, match="first_name contains a control character"):
        clean_name(raw, "first_name")


def test_non_text_name_is_rejected() -> None:
    with pytest.raises(InvalidValue, match="not text"):
        clean_name(42, "first_name")  # type: ignore[arg-type]


def test_clean_text_is_one_line_and_keeps_inner_spaces() -> None:
    # every target field is one line: a line break or tab (and the blanks around it) is one space
    assert clean_text("  Line 1\r\n  Line 2\t(x)  ", 100) == "Line 1 Line 2 (x)"
    assert clean_text("Main  St", 100) == "Main  St"
    assert clean_text("   ", 10) is None
    assert clean_text(None, 10) is None
    with pytest.raises(InvalidValue, match="description is 11 characters; the limit is 10"):
        clean_text("x" * 11, 10, field="description")
    with pytest.raises(InvalidValue, match="control character"):
        clean_text("bad\x00", 10)


# --------------------------------------------------------------------------- the text policy

TAG_A = "\U000e0041"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("Ann\x07", "a control character (U+0007)"),  # BEL
        ("\x1b[2JAnn", "a control character (U+001B)"),  # ESC
        ("An\x1cn", "a control character (U+001C)"),  # str.split() would swallow it as white space
        ("Ann\u2028Lee", "a line or paragraph separator (U+2028)"),
        ("Ann\u2029Lee", "a line or paragraph separator (U+2029)"),
        ("A\u200bnn", "an invisible formatting character (U+200B)"),  # zero-width space
        ("Ann\u200f", "an invisible formatting character (U+200F)"),  # right-to-left mark
        ("Ann\u200e", "an invisible formatting character (U+200E)"),
        ("An\u00adn", "an invisible formatting character (U+00AD)"),  # soft hyphen
        ("\ufeffAnn", "an invisible formatting character (U+FEFF)"),  # BOM / zero-width no-break space
        ("Ann\u2060", "an invisible formatting character (U+2060)"),  # word joiner
        ("Ann\u202e", "a control character (U+202E)"),  # bidi override
        ("Ann" + TAG_A, "a Unicode tag character (U+E0041)"),
        ("Ann\U000e007f", "a Unicode tag character (U+E007F)"),
        ("Ann\ue000", "a private-use character (U+E000)"),
        ("Ann\U000f0000", "a private-use character (U+F0000)"),
        ("Ann\ud800", "an unpaired surrogate (U+D800)"),
        ("Ann\ufdd0", "a noncharacter (U+FDD0)"),
        ("Ann\uffff", "a noncharacter (U+FFFF)"),
        ("\u200dAnn", "an invisible formatting character (U+200D)"),  # a joiner joining nothing
        ("Ann\u200d", "an invisible formatting character (U+200D)"),
        ("Ann \u200c Lee", "an invisible formatting character (U+200C)"),
        ("A\u200d\u200dnn", "an invisible formatting character (U+200D)"),
    ],
)
def test_the_text_policy_refuses_invisible_and_control_characters(raw: str, why: str) -> None:
    for clean in (lambda v: clean_name(v, "name"), lambda v: clean_text(v, 100, "name"), lambda v: clean_code(v, "name")):
        with pytest.raises(InvalidValue) as caught:
            clean(raw)
        assert caught.value.reason == f"name contains {why}", caught.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        "José 👷\u200d♀️",  # ZWJ inside an emoji sequence
        "👨\u200d👩\u200d👧",
        "نیک\u200cنام",  # ZWNJ inside a Persian name
        "क्\u200dष",  # ZWJ inside a Devanagari conjunct
        "🇺🇸 Ann",  # regional indicators (So), not tags
        "Zoë \U0001fae8",  # an emoji newer than some Unicode tables: unassigned is allowed in names
    ],
)
def test_names_keep_what_real_names_need(raw: str) -> None:
    assert clean_name(raw, "name") == raw
    assert clean_text(raw, 100, "name") == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" 100 ", "100"), ("J-1001-00", "J-1001-00"), ("10 01", "10 01"), (1234, "1234"), ("Ärzte-7", "Ärzte-7"), ("", None)],
)
def test_codes_are_trimmed_and_otherwise_kept(raw: object, expected: str | None) -> None:
    assert clean_code(raw, "PRDept") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("10  01", "has two spaces in a row"),
        ("10\t01", "a control character (U+0009)"),
        ("10\r\n01", "a control character (U+000D)"),
        ("10\xa001", "white space other than a plain space (U+00A0)"),
        ("10\u300001", "white space other than a plain space (U+3000)"),
        ("10\u0378", "an unassigned character (U+0378)"),
        ("x" * 65, "is 65 characters; the limit is 64"),
        (["1"], "is not text (a list)"),
        pytest.param(10**5000, "more than 60 digits", id="5000-digit-int"),
    ],
)
def test_codes_are_stricter_than_names(raw: object, why: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        clean_code(raw, "PRDept")  # type: ignore[arg-type]
    assert why in caught.value.reason


def test_line_breaks_in_names_collapse_other_separators_are_refused() -> None:
    assert clean_name("Ann\r\n\tMarie", "name") == "Ann Marie"
    assert clean_text("Suite 4\r\nMain  St", 100) == "Suite 4 Main  St"
    for raw in ("Ann\x0bMarie", "Ann\x0cMarie", "Ann\x85Marie", "Ann\u2028Marie"):
        with pytest.raises(InvalidValue):
            clean_name(raw, "name")


@given(st.text())
def test_the_text_policy_never_raises_anything_but_invalid_value_and_never_lets_a_refused_character_through(raw: str) -> None:
    for clean in (lambda v: clean_name(v, "n"), lambda v: clean_text(v, 100, "n"), lambda v: clean_code(v, "n")):
        try:
            out = clean(raw)
        except InvalidValue:
            continue
        if out is None:
            continue
        assert out == out.strip() and "\n" not in out and "\t" not in out and "\r" not in out
        for ch in out:
            cp = ord(ch)
            assert not (0xE0000 <= cp <= 0xE007F)
            assert unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Zl", "Zp")
            if unicodedata.category(ch) == "Cf":
                assert ch in "\u200c\u200d"


def test_printable_ascii_takes_the_fast_path_unchanged() -> None:
    assert clean_name("O'Brien-Smith Jr.", "name") == "O'Brien-Smith Jr."
    assert clean_text("12 Main St. #4", 100) == "12 Main St. #4"


def test_shown_key_escapes_what_a_terminal_would_act_on() -> None:
    assert shown_key("1001") == "1001"
    assert shown_key("D\x07\u200b²") == "D\\x07\\u200b²"
    assert shown_key("\x1b[2J") == "\\x1b[2J"
    assert len(shown_key("9" * 5000)) == 103
    assert shown_key(10**5000) == "(a number of more than 60 digits)"


# --------------------------------------------------------------------------- employee numbers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1234, "1234"), ("1234", "1234"), ("001234", "1234"), (" 1234 ", "1234"), ("0", "0"), ("000", "0"),
     (1234.0, "1234"), ("9" * 16, "9" * 16), (None, None), ("", None), ("  ", None)],
)  # fmt: skip
def test_employee_numbers_have_one_canonical_form(raw: object, expected: str | None) -> None:
    assert employee_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("²", "'²' is not an employee number (only the digits 0-9)"),  # isdigit() says yes, int() says no
        ("١٢٣", "is not an employee number (only the digits 0-9)"),  # Arabic-Indic digits: int() accepts them
        ("１２３", "is not an employee number (only the digits 0-9)"),  # full-width digits
        pytest.param("1" * 5000, "(5000 characters) is not an employee number (at most 16 digits)", id="5000-digits"),
        ("9" * 17, "is not an employee number (at most 16 digits)"),
        ("12a", "is not an employee number"),
        ("-5", "is not an employee number"),
        ("1 2", "is not an employee number"),
        (-5, "is not an employee number"),
        pytest.param(10**5000, "is not an employee number", id="5000-digit-int"),
        (True, "(a boolean)"),
        (1.5, "(not a whole number)"),
        (float("nan"), "(not a whole number)"),
        (["1"], "(a list)"),
    ],
)
def test_anything_else_is_not_an_employee_number(raw: object, why: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        employee_number(raw, "bPREH.Employee")
    assert caught.value.reason.startswith("bPREH.Employee") and why in caught.value.reason, caught.value.reason


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans()))
def test_employee_number_is_invalid_value_or_ascii_digits(raw: object) -> None:
    try:
        out = employee_number(raw)
    except InvalidValue:
        return
    assert out is None or (out.isascii() and out.isdigit() and len(out) <= 16 and (out == "0" or out[0] != "0"))


def test_whole_number_is_bounded_and_ascii() -> None:
    assert whole_number(" 2019 ", "year", 1900, 2100) == 2019
    assert whole_number(None, "year", 1900, 2100) is None
    for raw in ("²", "1" * 5000, "20.5", "1899", True, [2019]):
        with pytest.raises(InvalidValue, match="year"):
            whole_number(raw, "year", 1900, 2100)


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date(2024, 3, 1), "2024-03-01"),
        (datetime(2024, 3, 1, 0, 0), "2024-03-01"),  # naive, as SQL drivers return it
        (datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-6))), "2024-03-01"),  # no tz shift
        ("2024-03-01", "2024-03-01"),
        (" 2024-03-01 ", "2024-03-01"),
        ("2024-03-01 00:00:00", "2024-03-01"),
        ("2024-03-01 00:00:00.000", "2024-03-01"),
        ("2024-03-01T08:15:00Z", "2024-03-01"),
        ("3/1/2024", "2024-03-01"),
        ("03/01/2024", "2024-03-01"),
        ("2027-11-22", "2027-11-22"),  # exactly a year ahead: allowed
        (None, None),
        ("", None),
    ],
)
def test_iso_date_accepts_source_shapes(value: object, expected: str | None) -> None:
    assert iso_date(value, today=TODAY) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "reason_part"),
    [
        ("2027-11-23", "more than a year in the future"),
        (date(2206, 1, 1), "more than a year in the future"),
        ("1900-01-01", "placeholder"),
        ("2024-02-30", "is not a date"),
        ("13/01/2024", "is not a date"),
        ("yesterday", "is not a date"),
        ("2024-3-1", "is not a date"),
        (20240301, "is not a date"),
    ],
)
def test_iso_date_rejects(value: object, reason_part: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        iso_date(value, field="current_hire_date", today=TODAY)  # type: ignore[arg-type]
    assert reason_part in caught.value.reason
    assert caught.value.reason.startswith("current_hire_date")


def test_iso_date_leap_day_today_and_default_clock() -> None:
    assert iso_date("2029-02-28", today=date(2028, 2, 29)) == "2029-02-28"
    with pytest.raises(InvalidValue):
        iso_date("2029-03-01", today=date(2028, 2, 29))
    assert iso_date(datetime.now(UTC).date()) == datetime.now(UTC).date().isoformat()


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("SQL_PASSWORD", True),
        ("client_secret", True),
        ("SAFETYAMP_TOKEN", True),
        ("access_token", True),
        ("Authorization", True),
        ("api_key", True),
        ("X-Api-Key", True),
        ("SSN", True),
        ("employee_ssn", True),
        ("employeeSSN", True),
        ("date_of_birth", True),
        ("BirthDate", True),
        ("dob", True),
        ("business_name", False),
        ("email", False),
        ("mobile_phone", False),
        ("key", False),
        ("first_name", False),
        ("emp_id", False),
    ],
)
def test_is_secret_field(name: str, secret: bool) -> None:
    assert is_secret_field(name) is secret


@pytest.mark.parametrize("raw", ["٣٣٧٩١١١٣٤٤", "+٩٦٦٥٠١٢٣٤٥٦٧", "+٤٤٢٠٧٩٤٦٠٠٠٠", "५०४५५५०१०१", "504 555 0101 x١٢"])
def test_phones_in_other_scripts_digits_are_refused(raw):
    """\\d takes Arabic-Indic and Devanagari digits; SafetyAmp stored them as sent (or
    refused the whole user with a 422): only the digits 0-9 make a phone."""
    with pytest.raises(InvalidValue):
        normalize_phone(raw)


def test_full_width_digits_are_digits_after_nfkc():
    assert normalize_phone("５０４-５５５-０１０１") == "+15045550101"


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_a_normalised_phone_is_always_plain_e164(raw):
    try:
        out = normalize_phone(raw)
    except InvalidValue:
        return
    assert out is None or re.fullmatch(r"\+[0-9]{8,15}", out, re.ASCII), out


@pytest.mark.parametrize("ch", ["\u3164", "\uffa0", "\u115f", "\u1160", "\u2800", "\u034f", "\u180b", "\u17b4"])
def test_printable_characters_that_show_nothing_are_refused(ch):
    """Printable by category (Lo, So, Mn), invisible on screen: a name or code made of
    them looks empty or like another (the reviewer created a site cluster named U+3164)."""
    for value in (ch, f"Ann{ch}", f"{ch}Ann"):
        with pytest.raises(InvalidValue, match="invisible character"):
            clean_name(value, "first_name")
        with pytest.raises(InvalidValue, match="invisible character"):
            clean_code(value, "PRDept")


def test_variation_selectors_only_after_a_visible_character():
    assert clean_name("Ann \u2764\ufe0f", "first_name") == "Ann \u2764\ufe0f"  # emoji with VS16
    for value in ("\ufe0fAnn", "Ann \ufe0f"):
        with pytest.raises(InvalidValue, match="invisible character"):
            clean_name(value, "first_name")
    with pytest.raises(InvalidValue):
        clean_code("A\u2764\ufe0f", "PRDept")  # codes take no variation selector
