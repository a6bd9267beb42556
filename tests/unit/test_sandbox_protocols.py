"""Pure pieces of the emulators: Graph $filter parsing, Samsara cursors, dataset helpers."""

from __future__ import annotations

import random

import pytest

from sandbox import dataset
from sandbox.graph import GraphError, parse_filter
from sandbox.samsara import page_quirk
from sandbox.wsgi import decode_opaque, encode_opaque

pytestmark = pytest.mark.unit


def test_simple_filters_parse_without_advanced_mode() -> None:
    assert parse_filter("accountEnabled eq true", advanced=False) == [("accountEnabled", "eq", True)]
    assert parse_filter("employeeId eq '123' and accountEnabled eq false", advanced=False) == [
        ("employeeId", "eq", "123"),
        ("accountEnabled", "eq", False),
    ]
    assert parse_filter("employeeid in ('1', '2')", advanced=False) == [("employeeId", "in", ["1", "2"])]
    assert parse_filter("startsWith(mail,'o''brien')", advanced=False) == [("mail", "prefix", "o'brien")]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("employeeId ne '1'", "Request_UnsupportedQuery"),  # advanced query
        ("employeeId eq null", "Request_UnsupportedQuery"),  # advanced query
        ("shoeSize eq '9'", "Request_BadRequest"),
        ("accountEnabled eq 'yes'", "Request_BadRequest"),
        ("employeeId eq '1' or employeeId eq '2'", "Request_UnsupportedQuery"),
        ("employeeId eq", "BadRequest"),
        ("employeeId ~ '1'", "BadRequest"),
    ],
)
def test_bad_or_unsupported_filters(text: str, code: str) -> None:
    with pytest.raises(GraphError) as caught:
        parse_filter(text, advanced=False)
    assert caught.value.status == 400 and caught.value.code == code


def test_advanced_filters_parse_in_advanced_mode() -> None:
    assert parse_filter("employeeId ne null", advanced=True) == [("employeeId", "ne", None)]


def test_samsara_cursor_round_trip_and_quirks() -> None:
    cursor = encode_opaque({"c": "vehicles", "r": 12, "k": 3})
    assert decode_opaque(cursor) == {"c": "vehicles", "r": 12, "k": 3}
    assert decode_opaque("%%%") is None
    quirks = [page_quirk("42", "vehicles", "", k) for k in range(700)]
    assert quirks == [page_quirk("42", "vehicles", "", k) for k in range(700)]
    assert 50 < quirks.count("empty") < 150 and 50 < quirks.count("short") < 150


def test_dataset_helpers() -> None:
    assert dataset.ascii_fold("Nguyễn") == "nguyen"
    assert dataset.mail_local("Zoë", "O'Brien") == "zoe.obrien"
    rng = random.Random(1)
    for _ in range(50):
        code = dataset.vin(rng, 2019)
        assert len(code) == 17 and not set(code) & set("IOQ") and code[9] == "K"
    codes = {dataset.job_code(rng, 2024, n).strip(" .-") for n in range(100, 400)}
    assert len(codes) == 300  # trimmed codes stay unique
    book = dataset.PhoneBook(rng, used=["(504) 555-0101"])
    assert "5045550101" in book.used and len({book.new(("504",)) for _ in range(500)}) == 500
