"""utils.timefmt: the one writer and reader of the product's ISO 8601 UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from utils.timefmt import iso_z, parse_iso

pytestmark = pytest.mark.unit
MOMENT = datetime(2026, 11, 1, 6, 0, 0, 250_000, tzinfo=UTC)


def test_written_in_utc_with_a_z_at_the_precision_asked():
    assert iso_z(MOMENT) == "2026-11-01T06:00:00.250000Z"
    assert iso_z(MOMENT, "milliseconds") == "2026-11-01T06:00:00.250Z"
    assert iso_z(MOMENT, "seconds") == "2026-11-01T06:00:00Z"
    assert iso_z(MOMENT.replace(microsecond=0)) == "2026-11-01T06:00:00Z"
    assert iso_z(MOMENT.astimezone(timezone(timedelta(hours=-6)))) == "2026-11-01T06:00:00.250000Z"
    assert iso_z(MOMENT.timestamp()) == "2026-11-01T06:00:00.250000Z"  # seconds since the epoch


def test_read_back_from_either_form_and_none_for_anything_else():
    assert parse_iso(iso_z(MOMENT)) == MOMENT
    assert parse_iso("2026-11-01T00:00:00-06:00") == datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert parse_iso("2026-11-01T06:00:00") == datetime(2026, 11, 1, 6, tzinfo=UTC)  # naive: UTC
    for bad in (None, "", "yesterday", 17, "2026-13-01T00:00:00Z"):
        assert parse_iso(bad) is None
