"""utils.data_validator: literal tables of what the sources really contain."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from utils.data_validator import (
    InvalidValue,
    Rejection,
    ValidationReport,
    clean_name,
    clean_text,
    find_duplicates,
    is_secret_field,
    iso_date,
    normalize_email,
    normalize_phone,
)
from utils.errors import RecordError

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
        ("jane\x00@example.com", "control characters"),
        ("jane@exa\u200bmple.com", "non-ASCII"),
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
        ("Mary\x85Ann", "Mary Ann"),  # NEL is whitespace, not a control to reject
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
    ["Jane\x00", "Ja\x07ne", "Jane\x1b[31m", "Jane\x7f", "Ja\x9bne", "Jane\u202eenaJ", "Ja\u2066ne", "Jane\ud800"],
)
def test_control_characters_in_names_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidValue, match="first_name contains a control character"):
        clean_name(raw, "first_name")


def test_non_text_name_is_rejected() -> None:
    with pytest.raises(InvalidValue, match="not text"):
        clean_name(42, "first_name")  # type: ignore[arg-type]


def test_clean_text_keeps_inner_whitespace_and_line_breaks() -> None:
    assert clean_text("  Line 1\n  Line 2\t(x)  ", 100) == "Line 1\n  Line 2\t(x)"
    assert clean_text("   ", 10) is None
    assert clean_text(None, 10) is None
    with pytest.raises(InvalidValue, match="description is 11 characters; the limit is 10"):
        clean_text("x" * 11, 10, field="description")
    with pytest.raises(InvalidValue, match="control character"):
        clean_text("bad\x00", 10)


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


def test_rejection_copies_only_offending_non_secret_values() -> None:
    row = {"Employee": 7, "Email": "bad", "Phone": "n/a", "SSN": "123-45-6789", "BirthDate": "1980-01-01"}
    rejection = Rejection.from_row(
        7,
        "email 'bad' has no @",
        ["email", "ssn", "date_of_birth"],
        row,
        source_fields={"email": "Email", "ssn": "SSN", "date_of_birth": "BirthDate"},
    )
    assert rejection.source == {"Email": "bad"}
    assert rejection.fields == ("email", "ssn", "date_of_birth")
    assert rejection.to_dict() == {
        "key": 7,
        "reason": "email 'bad' has no @",
        "fields": ["email", "ssn", "date_of_birth"],
        "source": {"Email": "bad"},
    }
    with pytest.raises(AttributeError):
        rejection.reason = "x"  # type: ignore[misc]
    error = rejection.as_error(service="safetyamp")
    assert isinstance(error, RecordError)
    assert error.field_errors == {f: ["email 'bad' has no @"] for f in rejection.fields}


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


def test_validation_report_rejects_on_required_and_warns_on_optional() -> None:
    report = ValidationReport()
    rows = {
        1: {"Email": "ok@example.com", "Phone": "504-555-0101", "FirstName": "Ann"},
        2: {"Email": "broken", "Phone": "n/a", "FirstName": "x" * 120},
        3: {"Email": "", "Phone": "", "FirstName": "Bo"},
    }
    out = {}
    for key, row in rows.items():
        out[key] = {
            "email": report.check(key, "email", normalize_email, row["Email"], source_column="Email"),
            "mobile_phone": report.check(key, "mobile_phone", normalize_phone, row["Phone"], required=False),
            "first_name": report.check(key, "first_name", clean_name, row["FirstName"], "first_name"),
        }
    assert out[1] == {"email": "ok@example.com", "mobile_phone": "+15045550101", "first_name": "Ann"}
    assert not report.rejected(1)
    assert report.rejected(2) and report.rejected(3)
    assert len(report) == 2
    two = report.rejection(2)
    assert two is not None
    assert two.fields == ("email", "first_name")
    assert two.reason == "email 'broken' has no @; first_name is 120 characters; the limit is 100"
    assert two.source == {"Email": "broken", "first_name": "x" * 120}
    three = report.rejection(3)
    assert three is not None and three.reason == "email is required"
    assert [w.key for w in report.warnings] == [2]
    assert report.warnings[0].reason.endswith("(value dropped)")
    assert [r.key for r in report.rejections()] == [2, 3]
    assert report.rejection(1) is None


def test_report_reject_for_a_cross_record_reason_hides_secrets() -> None:
    report = ValidationReport()
    report.reject(5, "email shared with employee 6", ["email"], {"Email": "a@x.com", "password": "pw"})
    rejection = report.rejection(5)
    assert rejection == Rejection(5, "email shared with employee 6", ("email",), {"Email": "a@x.com"})


# --------------------------------------------------------------------------- duplicates


def test_find_duplicates_is_case_insensitive_and_ignores_blanks() -> None:
    records = {
        101: {"email": "Jane@Example.com"},
        102: {"email": "jane@example.com "},
        103: {"email": "bob@example.com"},
        104: {"email": None},
        105: {"email": ""},
        106: {"email": "JANE@EXAMPLE.COM"},
        107: {},
    }
    assert find_duplicates(records, "email") == {"jane@example.com": [101, 102, 106]}


def test_find_duplicates_over_a_list_of_rows() -> None:
    rows = [
        {"Employee": 1, "Phone": "+15045550101"},
        {"Employee": 2, "Phone": "+15045550101"},
        {"Employee": 3, "Phone": "+15045550102"},
    ]
    assert find_duplicates(rows, "Phone", key="Employee") == {"+15045550101": [1, 2]}
    assert find_duplicates([], "Phone", key="Employee") == {}
    with pytest.raises(ValueError, match="key="):
        find_duplicates(rows, "Phone")
    assert find_duplicates(rows, "Phone", key="Employee", normalize=lambda v: v[-1]) == {"1": [1, 2]}
